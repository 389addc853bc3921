//! Random packed models of the exact Qwen2.5 shapes, for benchmarks and tests.
//!
//! Trits are uniform in {-1, 0, +1} (uniform bytes 0..=80); scales are chosen so a
//! projection roughly keeps the variance of its normalized input, so activations
//! stay finite through every layer. Embedding and LM head are packed too, as in the
//! published 32B model. The benchmark uploads them straight from memory; `synth`
//! writes them to files, streaming.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::gpu::weights::{ReadFuture, WeightSource};
use crate::model::checkpoint::{write_shards, CONFIG_FILE};
use crate::model::layout::Inventory;
use crate::model::safetensors::PlannedTensor;
use crate::model::{Config, DType, Layout, ModelError};
use crate::quantize::quantization_config;
use crate::ternary::{DEFAULT_GROUP_SIZE, MAX_PACKED_BYTE, TRITS_PER_BYTE};

/// The sizes that define a Qwen2 model.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub name: &'static str,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub tied: bool,
    pub max_position: usize,
}

/// The Qwen2.5 family as published, plus a tiny shape with Qwen's vocabulary for
/// tests (untied: a random model with tied embeddings greedily repeats its input).
pub const SHAPES: &[Shape] = &[
    Shape {
        name: "qwen2.5-0.5b",
        hidden: 896,
        intermediate: 4864,
        layers: 24,
        heads: 14,
        kv_heads: 2,
        vocab: 151936,
        tied: true,
        max_position: 32768,
    },
    Shape {
        name: "qwen2.5-1.5b",
        hidden: 1536,
        intermediate: 8960,
        layers: 28,
        heads: 12,
        kv_heads: 2,
        vocab: 151936,
        tied: true,
        max_position: 32768,
    },
    Shape {
        name: "qwen2.5-3b",
        hidden: 2048,
        intermediate: 11008,
        layers: 36,
        heads: 16,
        kv_heads: 2,
        vocab: 151936,
        tied: true,
        max_position: 32768,
    },
    Shape {
        name: "qwen2.5-7b",
        hidden: 3584,
        intermediate: 18944,
        layers: 28,
        heads: 28,
        kv_heads: 4,
        vocab: 152064,
        tied: false,
        max_position: 32768,
    },
    Shape {
        name: "qwen2.5-14b",
        hidden: 5120,
        intermediate: 13824,
        layers: 48,
        heads: 40,
        kv_heads: 8,
        vocab: 152064,
        tied: false,
        max_position: 32768,
    },
    Shape {
        name: "qwen2.5-32b",
        hidden: 5120,
        intermediate: 27648,
        layers: 64,
        heads: 40,
        kv_heads: 8,
        vocab: 152064,
        tied: false,
        max_position: 32768,
    },
    Shape {
        name: "tiny",
        hidden: 128,
        intermediate: 256,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        vocab: 151936,
        tied: false,
        max_position: 4096,
    },
    // One packed embedding of 136 MB: larger than a 128 MiB storage binding, so
    // loaders must split it (or have a larger limit). Tests the browser and lavapipe.
    Shape {
        name: "tiny-wide",
        hidden: 3584,
        intermediate: 256,
        layers: 1,
        heads: 28,
        kv_heads: 4,
        vocab: 151936,
        tied: true,
        max_position: 4096,
    },
];

/// Looks a shape up by name, accepting `0.5b` for `qwen2.5-0.5b`.
pub fn shape_by_name(name: &str) -> Result<&'static Shape, String> {
    let wanted = name.to_ascii_lowercase();
    SHAPES.iter().find(|s| s.name == wanted || s.name.strip_prefix("qwen2.5-") == Some(wanted.as_str())).ok_or_else(
        || {
            let names: Vec<&str> = SHAPES.iter().map(|s| s.name).collect();
            format!("unknown shape {name:?}; choose one of {}", names.join(", "))
        },
    )
}

impl Shape {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// `config.json` of this shape as Qwen2.5 ships it, plus `quantization_config`.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": self.max_position,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1_000_000.0,
            "tie_word_embeddings": self.tied,
            "use_sliding_window": false,
            "torch_dtype": "bfloat16",
            "bos_token_id": 151643,
            "eos_token_id": 151643,
            "quantization_config": quantization_config(DEFAULT_GROUP_SIZE),
        })
    }

    /// Every tensor of the model, in file order: (name, content, dtype, shape).
    fn entries(&self) -> Vec<(String, Content, Vec<usize>)> {
        let (h, i, q, kv) =
            (self.hidden, self.intermediate, self.heads * self.head_dim(), self.kv_heads * self.head_dim());
        let mut out = Vec::new();
        // A projection keeps the variance of its normalized input: uniform trits
        // have variance 2/3, so scales sit around 1 / sqrt(cols * 2/3).
        let mut matrix = |name: String, rows: usize, cols: usize, around: f32| {
            out.push((format!("{name}.scales"), Content::Scales { around }, vec![rows, cols / DEFAULT_GROUP_SIZE]));
            out.push((name, Content::Trits, vec![rows, cols / TRITS_PER_BYTE]));
        };
        let projection = |cols: usize| 1.0 / (cols as f32 * 2.0 / 3.0).sqrt();
        matrix("model.embed_tokens.weight".into(), self.vocab, h, 1.0);
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            for (name, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                matrix(format!("{p}.self_attn.{name}.weight"), rows, h, projection(h));
            }
            matrix(format!("{p}.self_attn.o_proj.weight"), h, q, projection(q));
            matrix(format!("{p}.mlp.gate_proj.weight"), i, h, projection(h));
            matrix(format!("{p}.mlp.up_proj.weight"), i, h, projection(h));
            matrix(format!("{p}.mlp.down_proj.weight"), h, i, projection(i));
        }
        if !self.tied {
            matrix("lm_head.weight".into(), self.vocab, h, projection(h));
        }
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            out.push((format!("{p}.input_layernorm.weight"), Content::Ones, vec![h]));
            out.push((format!("{p}.post_attention_layernorm.weight"), Content::Ones, vec![h]));
            for (name, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                out.push((format!("{p}.self_attn.{name}.bias"), Content::Bias, vec![rows]));
            }
        }
        out.push(("model.norm.weight".into(), Content::Ones, vec![h]));
        out
    }
}

/// What a synthetic tensor holds. Every byte is a function of the seed, the
/// tensor's name and the byte's position, so any range can be produced on its
/// own: the benchmark uploads models straight from here without writing files.
#[derive(Debug, Clone, Copy)]
enum Content {
    /// Uniform random base-3 bytes (four trits each).
    Trits,
    /// F32 group scales, uniform in `[0.75, 1.25] * around`.
    Scales { around: f32 },
    /// F32 ones (norm weights).
    Ones,
    /// F32 values uniform in `[-0.05, 0.05]` (q/k/v biases).
    Bias,
}

struct Entry {
    content: Content,
    dtype: DType,
    shape: Vec<usize>,
    /// Seed of this tensor's bytes.
    key: u64,
}

impl Entry {
    fn byte_len(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * self.dtype.size().expect("U8 or F32") as u64
    }
}

/// SplitMix64's output function: a well-mixed 64-bit value for each input.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random packed model of a [`Shape`], produced on demand.
pub struct SynthModel {
    pub shape: &'static Shape,
    pub config: Config,
    entries: BTreeMap<String, Entry>,
    /// Names in file order.
    order: Vec<String>,
}

impl SynthModel {
    pub fn new(shape: &'static Shape, seed: u64) -> Self {
        let config: Config = serde_json::from_value(shape.config_json()).expect("built-in shapes are valid configs");
        let mut entries = BTreeMap::new();
        let mut order = Vec::new();
        for (name, content, dims) in shape.entries() {
            let key =
                mix(seed
                    ^ name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)));
            let dtype = if matches!(content, Content::Trits) { DType::U8 } else { DType::F32 };
            order.push(name.clone());
            entries.insert(name, Entry { content, dtype, shape: dims, key });
        }
        SynthModel { shape, config, entries, order }
    }

    /// Which tensor plays which part, checked as for a model read from files.
    pub fn layout(&self) -> Result<Layout, ModelError> {
        Layout::from_inventory(self)
    }

    /// Bytes of all tensors.
    pub fn total_bytes(&self) -> u64 {
        self.entries.values().map(Entry::byte_len).sum()
    }

    /// Writes `out.len()` bytes of tensor `name` from byte `offset`.
    pub fn fill(&self, name: &str, offset: u64, out: &mut [u8]) -> Result<(), ModelError> {
        let e = self.entries.get(name).ok_or_else(|| ModelError::MissingTensor {
            name: name.into(),
            context: format!("not part of the synthetic {} model", self.shape.name),
        })?;
        // Every byte depends only on its position, so large reads are split
        // across the CPU's cores (a 32B model is 10 GB of them).
        for_each_piece(offset, out, |offset, piece| fill_piece(e, offset, piece));
        Ok(())
    }
}

/// Bytes `offset..` of tensor `e`: each 64-bit draw gives four bytes, 16 bits
/// each mapped onto 0..=80 (trits), or one f32 (scales, biases, norms).
fn fill_piece(e: &Entry, offset: u64, out: &mut [u8]) {
    let value = |index: u64| -> f32 {
        let unit = (mix(e.key ^ index) >> 40) as f32 / (1u64 << 24) as f32;
        match e.content {
            Content::Scales { around } => around * (0.75 + 0.5 * unit),
            Content::Bias => 0.1 * (unit - 0.5),
            _ => 1.0,
        }
    };
    let mut at = offset;
    let mut i = 0;
    while i < out.len() {
        let draw = at / 4;
        let word = match e.content {
            Content::Trits => {
                let bits = mix(e.key ^ draw);
                let byte = |k: u64| (((bits >> (16 * k)) & 0xffff) * (MAX_PACKED_BYTE as u64 + 1)) >> 16;
                u32::from_le_bytes([byte(0) as u8, byte(1) as u8, byte(2) as u8, byte(3) as u8])
            }
            _ => value(draw).to_bits(),
        };
        let bytes = word.to_le_bytes();
        // The draw's bytes from `at` on, as many as `out` still needs.
        let first = (at % 4) as usize;
        let n = (4 - first).min(out.len() - i);
        out[i..i + n].copy_from_slice(&bytes[first..first + n]);
        i += n;
        at += n as u64;
    }
}

/// Calls `fill(offset, piece)` on pieces of `out`, on several threads where
/// the platform has them and `out` is large.
fn for_each_piece(offset: u64, out: &mut [u8], fill: impl Fn(u64, &mut [u8]) + Sync) {
    const PARALLEL_MIN_BYTES: usize = 1 << 22;
    let threads =
        if cfg!(target_arch = "wasm32") { 1 } else { std::thread::available_parallelism().map_or(1, |n| n.get()) };
    if threads == 1 || out.len() <= PARALLEL_MIN_BYTES {
        fill(offset, out);
        return;
    }
    let per_thread = out.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (k, piece) in out.chunks_mut(per_thread).enumerate() {
            let fill = &fill;
            scope.spawn(move || fill(offset + (k * per_thread) as u64, piece));
        }
    });
}

impl Inventory for SynthModel {
    fn config(&self) -> &Config {
        &self.config
    }
    fn tensor(&self, name: &str) -> Option<(&DType, &[usize])> {
        self.entries.get(name).map(|e| (&e.dtype, e.shape.as_slice()))
    }
    fn location(&self) -> String {
        format!("the synthetic {} model", self.shape.name)
    }
}

impl WeightSource for SynthModel {
    fn read<'a>(&'a self, name: &'a str, offset: u64, out: &'a mut [u8]) -> ReadFuture<'a> {
        Box::pin(std::future::ready(self.fill(name, offset, out)))
    }
}

/// Writes a random packed model of `shape` to `output` (sharded at `max_shard_bytes`).
pub fn write_model(
    shape: &'static Shape,
    output: &Path,
    seed: u64,
    max_shard_bytes: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    let model = SynthModel::new(shape, seed);
    let plan: Vec<PlannedTensor> = model
        .order
        .iter()
        .map(|name| {
            let e = &model.entries[name];
            PlannedTensor::new(name, e.dtype.clone(), e.shape.clone())
        })
        .collect();
    let (total, mut done) = (model.total_bytes(), 0u64);
    let mut piece = vec![0u8; 8 << 20];
    write_shards(
        output,
        &plan,
        |t| vec![t.clone()],
        max_shard_bytes,
        |t, writer| {
            let len = t.byte_len();
            let mut at = 0;
            while at < len {
                let n = (len - at).min(piece.len() as u64) as usize;
                model.fill(&t.name, at, &mut piece[..n])?;
                writer.write(&piece[..n])?;
                at += n as u64;
                done += n as u64;
                progress(done, total);
            }
            anyhow::Ok(())
        },
    )
    .with_context(|| format!("writing {}", output.display()))?;
    std::fs::write(output.join(CONFIG_FILE), serde_json::to_string_pretty(&shape.config_json())?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large read (split across threads) gives the same bytes as small reads
    /// starting anywhere inside a draw, and packed bytes stay within 0..=80.
    #[test]
    fn large_reads_equal_small_reads_at_any_offset() {
        let model = SynthModel::new(shape_by_name("qwen2.5-0.5b").unwrap(), 7);
        for name in ["model.embed_tokens.weight", "model.embed_tokens.weight.scales"] {
            let len = (model.entries[name].byte_len() as usize).min(9 << 20);
            let mut whole = vec![0u8; len - 3];
            model.fill(name, 3, &mut whole).unwrap();
            let starts = [0usize, 1, 2, 5, 4 << 20, (4 << 20) + 3, len - 20];
            for start in starts.into_iter().filter(|&s| s + 11 <= whole.len()) {
                let mut small = vec![0u8; 11];
                model.fill(name, 3 + start as u64, &mut small).unwrap();
                assert_eq!(small, whole[start..start + 11], "{name} at {start}");
            }
            if name.ends_with(".weight") {
                assert!(whole.iter().all(|&b| b <= MAX_PACKED_BYTE));
                assert!(whole.contains(&0) && whole.contains(&MAX_PACKED_BYTE));
            }
        }
    }
}

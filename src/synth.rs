//! Random packed models of the exact Qwen2.5 shapes, for benchmarks and tests.
//!
//! Trits are uniform in {-1, 0, +1} (uniform bytes 0..=80); scales are chosen so a
//! projection roughly keeps the variance of its normalized input, so activations
//! stay finite through every layer. Embedding and LM head are packed too, as in the
//! published 32B model. Files are written streaming, a row block at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};

use crate::model::checkpoint::{shard_file_name, split_into_shards, write_index, CONFIG_FILE};
use crate::model::safetensors::{PlannedTensor, StreamingWriter};
use crate::model::DType;
use crate::quantize::quantization_config;
use crate::rng::Rng;
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

/// The Qwen2.5 family as published, plus a tiny shape with Qwen's vocabulary for tests.
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

    /// Every tensor of the model, in file order.
    pub fn tensors(&self) -> Vec<SynthTensor> {
        let (h, i, q, kv) =
            (self.hidden, self.intermediate, self.heads * self.head_dim(), self.kv_heads * self.head_dim());
        let mut out = vec![SynthTensor::packed("model.embed_tokens.weight", self.vocab, h, 1.0)];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            out.push(SynthTensor::ones(format!("{p}.input_layernorm.weight"), h));
            for (name, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                out.push(SynthTensor::projection(format!("{p}.self_attn.{name}.weight"), rows, h));
                out.push(SynthTensor::bias(format!("{p}.self_attn.{name}.bias"), rows));
            }
            out.push(SynthTensor::projection(format!("{p}.self_attn.o_proj.weight"), h, q));
            out.push(SynthTensor::ones(format!("{p}.post_attention_layernorm.weight"), h));
            out.push(SynthTensor::projection(format!("{p}.mlp.gate_proj.weight"), i, h));
            out.push(SynthTensor::projection(format!("{p}.mlp.up_proj.weight"), i, h));
            out.push(SynthTensor::projection(format!("{p}.mlp.down_proj.weight"), h, i));
        }
        out.push(SynthTensor::ones("model.norm.weight".into(), h));
        if !self.tied {
            out.push(SynthTensor::projection("lm_head.weight".into(), self.vocab, h));
        }
        out
    }
}

/// What a synthetic tensor holds.
#[derive(Debug, Clone)]
pub enum Fill {
    /// Random trits with scales around `scale`.
    Packed { rows: usize, cols: usize, scale: f32 },
    /// F32 vector of ones (norm weights).
    Ones(usize),
    /// F32 vector of small random values (biases).
    Bias(usize),
}

#[derive(Debug, Clone)]
pub struct SynthTensor {
    pub name: String,
    pub fill: Fill,
}

impl SynthTensor {
    fn packed(name: &str, rows: usize, cols: usize, scale: f32) -> Self {
        SynthTensor { name: name.into(), fill: Fill::Packed { rows, cols, scale } }
    }
    /// A projection whose output variance is about its input's: uniform trits have
    /// variance 2/3, so `scale = 1 / sqrt(cols * 2/3)`.
    fn projection(name: String, rows: usize, cols: usize) -> Self {
        let scale = 1.0 / (cols as f32 * 2.0 / 3.0).sqrt();
        SynthTensor { name, fill: Fill::Packed { rows, cols, scale } }
    }
    fn ones(name: String, len: usize) -> Self {
        SynthTensor { name, fill: Fill::Ones(len) }
    }
    fn bias(name: String, len: usize) -> Self {
        SynthTensor { name, fill: Fill::Bias(len) }
    }

    /// The safetensors entries this tensor becomes.
    pub fn planned(&self) -> Vec<PlannedTensor> {
        match self.fill {
            Fill::Packed { rows, cols, .. } => vec![
                PlannedTensor::new(&self.name, DType::U8, vec![rows, cols / TRITS_PER_BYTE]),
                PlannedTensor::new(format!("{}.scales", self.name), DType::F32, vec![rows, cols / DEFAULT_GROUP_SIZE]),
            ],
            Fill::Ones(len) | Fill::Bias(len) => vec![PlannedTensor::new(&self.name, DType::F32, vec![len])],
        }
    }

    /// Generates the bytes in pieces of at most about `chunk` bytes and hands each
    /// to `sink`, in the order of [`SynthTensor::planned`].
    pub fn generate(&self, rng: &mut Rng, chunk: usize, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        match self.fill {
            Fill::Packed { rows, cols, scale } => {
                let total = rows * cols / TRITS_PER_BYTE;
                let mut buf = vec![0u8; chunk.min(total).max(1)];
                let mut left = total;
                while left > 0 {
                    let n = left.min(buf.len());
                    rng.fill_below(&mut buf[..n], MAX_PACKED_BYTE + 1);
                    sink(&buf[..n])?;
                    left -= n;
                }
                let scales: Vec<f32> =
                    (0..rows * cols / DEFAULT_GROUP_SIZE).map(|_| scale * (0.75 + 0.5 * rng.next_f32())).collect();
                for piece in bytemuck::cast_slice::<f32, u8>(&scales).chunks(chunk.max(1)) {
                    sink(piece)?;
                }
            }
            Fill::Ones(len) => sink(bytemuck::cast_slice(&vec![1.0f32; len]))?,
            Fill::Bias(len) => {
                let bias: Vec<f32> = (0..len).map(|_| 0.1 * (rng.next_f32() - 0.5)).collect();
                sink(bytemuck::cast_slice(&bias))?;
            }
        }
        Ok(())
    }

    pub fn byte_len(&self) -> u64 {
        self.planned().iter().map(PlannedTensor::byte_len).sum()
    }
}

/// Writes a random packed model of `shape` to `output` (sharded at `max_shard_bytes`).
pub fn write_model(
    shape: &Shape,
    output: &Path,
    seed: u64,
    max_shard_bytes: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    let tensors = shape.tensors();
    let total: u64 = tensors.iter().map(SynthTensor::byte_len).sum();
    let shards = split_into_shards(&tensors, SynthTensor::byte_len, max_shard_bytes);
    let mut rng = Rng::new(seed);
    let mut done = 0u64;
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let file_name = shard_file_name(i, shards.len());
        let path = output.join(&file_name);
        let plan: Vec<PlannedTensor> = shard.iter().flat_map(|t| t.planned()).collect();
        for p in &plan {
            weight_map.insert(p.name.clone(), file_name.clone());
        }
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let mut writer = StreamingWriter::new(BufWriter::with_capacity(1 << 20, file), &plan, &metadata)?;
        for t in shard {
            t.generate(&mut rng, 8 << 20, &mut |bytes| {
                writer.write(bytes)?;
                done += bytes.len() as u64;
                progress(done, total);
                Ok(())
            })?;
        }
        writer.finish().with_context(|| format!("writing {}", path.display()))?;
    }
    write_index(output, total, &weight_map)?;
    std::fs::write(output.join(CONFIG_FILE), serde_json::to_string_pretty(&shape.config_json())?)?;
    Ok(())
}

//! Dense checkpoint → packed ternary checkpoint, streaming.
//!
//! Every linear of every layer (and, when asked, the embedding and the LM head) is
//! quantized row by row straight into the output file; other tensors are copied
//! as they are. Host memory stays near one row plus one tensor's scales, however
//! large the model. Output: shards `model-0000i-of-0000N.safetensors`, an index,
//! `config.json` with `quantization_config`, and the tokenizer files.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::model::checkpoint::{write_shards, CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
use crate::model::safetensors::{PlannedTensor, StreamingWriter};
use crate::model::tensors::to_f32;
use crate::model::{Checkpoint, DType, Layout};
use crate::ternary::{self, TRITS_PER_BYTE};

pub struct QuantizeOptions {
    pub group_size: usize,
    /// Also pack `model.embed_tokens.weight` and `lm_head.weight`.
    pub pack_embeddings: bool,
    /// Largest shard in bytes.
    pub max_shard_bytes: u64,
}

/// What becomes of one input tensor.
enum Action {
    Copy,
    Pack,
}

/// One input tensor and the output tensors it becomes (kept in one shard).
struct Item {
    name: String,
    action: Action,
    /// Output tensors: the copy, or the packed bytes then the scales.
    outputs: Vec<PlannedTensor>,
}

/// The `quantization_config` written to `config.json`.
pub fn quantization_config(group_size: usize) -> serde_json::Value {
    serde_json::json!({"quant_method": "bitnet_158", "bits": 1.58, "group_size": group_size, "packing": "base3_columns"})
}

/// Quantizes the model in `input` into `output`; `progress` gets bytes done and total.
pub fn quantize(input: &Path, output: &Path, opts: &QuantizeOptions, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    let g = opts.group_size;
    if g == 0 || !g.is_multiple_of(TRITS_PER_BYTE) {
        bail!("--group-size must be a positive multiple of 4, got {g}");
    }
    let ckpt = Checkpoint::open(input).with_context(|| format!("reading the input model {}", input.display()))?;
    let layout = Layout::from_checkpoint(&ckpt)?;
    if let Some(packed) = layout.matrices().into_iter().find(|m| m.is_packed()) {
        bail!(
            "{} is already packed ternary ({} is U8 with scales); quantize takes a dense checkpoint",
            input.display(),
            packed.name
        );
    }
    let mut to_pack: Vec<&str> =
        layout.layers.iter().flat_map(|l| l.linears().map(|lin| lin.weight.name.as_str())).collect();
    if opts.pack_embeddings {
        to_pack.push(&layout.embed_tokens.name);
        if !layout.tied {
            to_pack.push(&layout.lm_head.name);
        }
    }

    // Plan every output tensor first: names, shapes and sizes are all known.
    let mut items = Vec::new();
    for t in ckpt.tensors() {
        let name = t.name().to_string();
        if to_pack.contains(&name.as_str()) {
            let [rows, cols] = t.shape() else { unreachable!("layout checked matrices are 2-D") };
            let (rows, cols) = (*rows, *cols);
            if cols % g != 0 {
                bail!("{name} has {cols} input columns, not divisible by the group size {g}; pick a --group-size that divides it");
            }
            let outputs = vec![
                PlannedTensor::new(&name, DType::U8, vec![rows, cols / TRITS_PER_BYTE]),
                PlannedTensor::new(format!("{name}.scales"), DType::F32, vec![rows, cols / g]),
            ];
            items.push(Item { name, action: Action::Pack, outputs });
        } else {
            let outputs = vec![PlannedTensor::new(&name, t.dtype().clone(), t.shape().to_vec())];
            items.push(Item { name, action: Action::Copy, outputs });
        }
    }
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    let (total_in, mut done_in) = (ckpt.total_bytes(), 0u64);
    write_shards(
        output,
        &items,
        |item| item.outputs.clone(),
        opts.max_shard_bytes,
        |item, writer| {
            let t = ckpt.get(&item.name).expect("planned from the checkpoint");
            let bytes = ckpt.bytes(t);
            match item.action {
                Action::Copy => writer.write(bytes)?,
                Action::Pack => pack_tensor(writer, t.dtype(), bytes, t.shape()[1], g)?,
            }
            done_in += t.entry.len;
            progress(done_in, total_in);
            anyhow::Ok(())
        },
    )
    .with_context(|| format!("writing the packed model to {}", output.display()))?;
    write_config(input, output, g)?;
    copy_other_files(input, output)?;
    Ok(())
}

/// Quantizes a dense `[rows, cols]` tensor row by row: packed bytes go straight to
/// the writer, the scales (a quarter of the packed size) follow at the end.
fn pack_tensor<W: std::io::Write>(
    writer: &mut StreamingWriter<W>,
    dtype: &DType,
    bytes: &[u8],
    cols: usize,
    group_size: usize,
) -> Result<()> {
    let row_bytes = cols * dtype.size().expect("float dtype");
    let mut row = vec![0.0f32; cols];
    let mut packed = vec![0u8; cols / TRITS_PER_BYTE];
    let mut row_scales = vec![0.0f32; cols / group_size];
    let mut scales = Vec::with_capacity(bytes.len() / row_bytes * row_scales.len());
    for src in bytes.chunks_exact(row_bytes) {
        to_f32(dtype, src, &mut row);
        ternary::quantize_pack_row(&row, group_size, &mut packed, &mut row_scales);
        writer.write(&packed)?;
        scales.extend_from_slice(&row_scales);
    }
    writer.write(bytemuck::cast_slice(&scales))?;
    Ok(())
}

/// The input's `config.json` with `quantization_config` added, other fields kept.
fn write_config(input: &Path, output: &Path, group_size: usize) -> Result<()> {
    let text = std::fs::read_to_string(input.join(CONFIG_FILE))?;
    let mut config: serde_json::Value = serde_json::from_str(&text)?;
    config["quantization_config"] = quantization_config(group_size);
    std::fs::write(output.join(CONFIG_FILE), serde_json::to_string_pretty(&config)?)?;
    Ok(())
}

/// Copies the tokenizer and other side files (everything but weights and config).
fn copy_other_files(input: &Path, output: &Path) -> Result<()> {
    for entry in std::fs::read_dir(input)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let is_weights = name.ends_with(".safetensors") || name == INDEX_FILE || name == SINGLE_FILE;
        if entry.file_type()?.is_file() && !is_weights && name != CONFIG_FILE {
            std::fs::copy(entry.path(), output.join(&name)).with_context(|| format!("copying {name}"))?;
        }
    }
    Ok(())
}

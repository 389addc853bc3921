//! `quantize` and `synth`: commands that write packed checkpoints.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::progress::bytes_bar;
use crate::quantize::{quantize as quantize_model, QuantizeOptions};
use crate::synth::{shape_by_name, write_model};

#[derive(Args, Debug)]
#[command(after_help = "The output holds model-0000N-of-0000M.safetensors shards, model.safetensors.index.json,
config.json with quantization_config, and the input's tokenizer files.
Every projection of every layer is packed; norms and biases stay as they are.")]
pub struct QuantizeArgs {
    /// Folder of the dense Hugging Face checkpoint (config.json + safetensors).
    #[arg(long)]
    pub input: PathBuf,
    /// Folder to write the packed checkpoint to (created if missing).
    #[arg(long)]
    pub output: PathBuf,
    /// Weights per scale; every input dimension must be divisible by it.
    #[arg(long, default_value_t = 64)]
    pub group_size: usize,
    /// Also pack model.embed_tokens.weight and lm_head.weight (as the published 32B model does).
    #[arg(long)]
    pub pack_embeddings: bool,
    /// Largest shard, e.g. 4GB, 500MB or a byte count.
    #[arg(long, default_value = "4GB", value_parser = parse_size)]
    pub max_shard_size: u64,
}

#[derive(Args, Debug)]
#[command(after_help = "Shapes are the published Qwen2.5 sizes (hidden, layers, heads, vocab) with uniform random
trits; embedding and LM head are packed too. `tiny` is a 2-layer model for tests.")]
pub struct SynthArgs {
    /// One of qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-3b, qwen2.5-7b, qwen2.5-14b, qwen2.5-32b, tiny (or 0.5b ... 32b).
    #[arg(long, value_parser = parse_shape)]
    pub shape: &'static crate::synth::Shape,
    /// Folder to write the model to (created if missing).
    #[arg(long)]
    pub output: PathBuf,
    /// Seed of the random weights: the same seed writes the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Largest shard, e.g. 4GB, 500MB or a byte count.
    #[arg(long, default_value = "4GB", value_parser = parse_size)]
    pub max_shard_size: u64,
    /// Copy tokenizer.json and tokenizer_config.json from this folder, so text prompts work.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

fn parse_shape(name: &str) -> Result<&'static crate::synth::Shape, String> {
    shape_by_name(name)
}

/// Parses `4GB`, `512MB`, `64KiB` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a size like 4GB, 500MB or 1048576"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?}; use B, KB, MB, GB, KiB, MiB or GiB")),
    };
    let bytes = value * scale as f64;
    if bytes.is_nan() || bytes < 1.0 {
        return Err(format!("size {text:?} must be at least one byte"));
    }
    Ok(bytes as u64)
}

pub fn quantize(args: QuantizeArgs) -> Result<()> {
    let opts = QuantizeOptions {
        group_size: args.group_size,
        pack_embeddings: args.pack_embeddings,
        max_shard_bytes: args.max_shard_size,
    };
    let (bar, mut progress) = bytes_bar("quantizing");
    quantize_model(&args.input, &args.output, &opts, &mut progress)?;
    bar.finish();
    eprintln!("wrote the packed model to {}", args.output.display());
    Ok(())
}

pub fn synth(args: SynthArgs) -> Result<()> {
    let (bar, mut progress) = bytes_bar(&format!("writing {}", args.shape.name));
    write_model(args.shape, &args.output, args.seed, args.max_shard_size, &mut progress)
        .with_context(|| format!("writing the synthetic model to {}", args.output.display()))?;
    bar.finish();
    if let Some(dir) = &args.tokenizer {
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            let from = dir.join(file);
            if from.exists() || file == "tokenizer.json" {
                std::fs::copy(&from, args.output.join(file)).with_context(|| format!("copying {}", from.display()))?;
            }
        }
    }
    eprintln!("wrote a random {} model to {}", args.shape.name, args.output.display());
    Ok(())
}

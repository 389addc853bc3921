//! `inspect`: what a model folder holds, checked as the loader checks it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use crate::model::{Layout, Model, Storage};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model folder (config.json + model.safetensors or shards with an index).
    #[arg(long)]
    pub model: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// What a tensor is for, as the inventory shows it.
fn kind_of(name: &str, layout: &Layout) -> &'static str {
    let matrices = layout.matrices();
    if let Some(m) = matrices.iter().find(|m| m.name == name) {
        return if m.is_packed() { "packed ternary" } else { "dense matrix" };
    }
    if matrices.iter().any(|m| matches!(&m.storage, Storage::Packed { scales, .. } if scales == name)) {
        return "group scales";
    }
    if name.ends_with("norm.weight") {
        return "norm";
    }
    if name.ends_with(".bias") {
        return "bias";
    }
    "unused"
}

pub fn run(args: InspectArgs) -> Result<()> {
    let model = Model::open(&args.model).with_context(|| format!("inspecting {}", args.model.display()))?;
    let (ckpt, layout, c) = (&model.checkpoint, &model.layout, model.config());

    let matrices = layout.matrices();
    let packed = matrices.iter().filter(|m| m.is_packed()).count();
    let format = match packed {
        0 => "dense (F32/F16/BF16)".to_string(),
        n if n == matrices.len() => "packed ternary (base-3, 2 bits per weight), embeddings packed too".to_string(),
        n => format!("packed ternary (base-3, 2 bits per weight): {n} of {} matrices packed", matrices.len()),
    };
    let group_sizes: Vec<usize> = matrices
        .iter()
        .filter_map(|m| match m.storage {
            Storage::Packed { group_size, .. } => Some(group_size),
            _ => None,
        })
        .collect();
    let linear_norms: Vec<&str> = layout
        .layers
        .iter()
        .flat_map(|l| l.linears().into_iter().filter_map(|lin| lin.norm.as_ref().map(|n| n.name.as_str())))
        .collect();
    let norm_style = match linear_norms.first() {
        None => "none".to_string(),
        Some(name) if name.ends_with(".rms_norm.weight") => {
            format!("{} (named <proj>.rms_norm.weight)", linear_norms.len())
        }
        Some(_) => format!("{} (named <proj>.norm.weight)", linear_norms.len()),
    };

    let mut rows = Vec::new();
    let mut bytes_by_kind = std::collections::BTreeMap::<&str, u64>::new();
    for t in ckpt.tensors() {
        let kind = kind_of(t.name(), layout);
        *bytes_by_kind.entry(kind).or_default() += t.entry.len;
        rows.push((t.name().to_string(), t.dtype().to_string(), t.shape().to_vec(), t.entry.len, kind));
    }
    let shards: Vec<String> =
        ckpt.shard_paths().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();

    if args.json {
        let out = json!({
            "model": args.model.display().to_string(),
            "format": format,
            "group_size": group_sizes.first(),
            "files": shards,
            "config": c,
            "tied_embeddings": layout.tied,
            "linear_norms": linear_norms.len(),
            "bytes": bytes_by_kind,
            "total_bytes": ckpt.total_bytes(),
            "tensors": rows.iter().map(|(name, dtype, shape, bytes, kind)| json!({
                "name": name, "dtype": dtype, "shape": shape, "bytes": bytes, "kind": kind,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    println!("model      {}", args.model.display());
    println!("files      {}", shards.join(", "));
    println!("format     {format}");
    if let Some(g) = group_sizes.first() {
        println!("group size {g}");
    }
    println!(
        "config     Qwen2: hidden {}, {} layers, {} heads ({} KV, head dim {}), intermediate {}, vocab {}",
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_kv_heads(),
        c.head_dim(),
        c.intermediate_size,
        c.vocab_size
    );
    println!(
        "           rope theta {}, rms eps {}, max positions {}, embeddings {}",
        c.rope_theta(),
        c.rms_norm_eps,
        c.max_position_embeddings,
        if layout.tied { "tied" } else { "untied" }
    );
    println!("lin. norms {norm_style}");
    println!("bytes      {}", human(ckpt.total_bytes()));
    for (kind, bytes) in &bytes_by_kind {
        println!("           {kind:<16} {}", human(*bytes));
    }
    println!();
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(4);
    println!("{:<width$}  {:<5}  {:<16}  {:>10}  kind", "tensor", "dtype", "shape", "bytes");
    for (name, dtype, shape, bytes, kind) in &rows {
        println!("{name:<width$}  {dtype:<5}  {:<16}  {:>10}  {kind}", format!("{shape:?}"), human(*bytes));
    }
    Ok(())
}

/// `1.23 GB`-style sizes.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", units[unit])
    }
}

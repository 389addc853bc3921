//! The weights' trip to the GPU: every tensor of the layout uploaded as stored,
//! with projections that read the same input stacked into one matrix where
//! they can be (see [`stacked`]), and an empty KV cache per layer.

use crate::gpu::weights::{can_stack, Uploader};
use crate::gpu::{GpuContext, GpuError};
use crate::model::{Config, Layout, Linear, Matrix};

use super::forward::{GpuLayer, GpuLinear, GpuWeights};
use super::ops::KvDtype;
use super::storage;

/// Uploads the whole model and allocates a KV cache of `ctx_len` positions
/// of `kv_dtype` values per layer.
pub async fn weights(
    up: &mut Uploader<'_>,
    ctx: &GpuContext,
    c: &Config,
    layout: &Layout,
    ctx_len: usize,
    kv_dtype: KvDtype,
) -> Result<GpuWeights, GpuError> {
    // storage() counts 4-byte words.
    let cache_words = ctx_len * c.kv_dim() * kv_dtype.bytes() / 4;
    let embed_tokens = up.matrix(&layout.embed_tokens).await?;
    let mut layers = Vec::with_capacity(layout.layers.len());
    for (i, l) in layout.layers.iter().enumerate() {
        layers.push(GpuLayer {
            input_layernorm: up.vector(&l.input_layernorm).await?,
            qkv: stacked(up, format!("model.layers.{i}.self_attn.qkv_proj"), &[&l.q_proj, &l.k_proj, &l.v_proj])
                .await?,
            o_proj: linear(up, &l.o_proj).await?,
            post_attention_layernorm: up.vector(&l.post_attention_layernorm).await?,
            gate_up: stacked(up, format!("model.layers.{i}.mlp.gate_up_proj"), &[&l.gate_proj, &l.up_proj]).await?,
            down_proj: linear(up, &l.down_proj).await?,
            k_cache: storage(ctx, &format!("k cache {i}"), cache_words),
            v_cache: storage(ctx, &format!("v cache {i}"), cache_words),
        });
    }
    let norm = up.vector(&layout.norm).await?;
    let lm_head = if layout.tied { None } else { Some(up.matrix(&layout.lm_head).await?) };
    Ok(GpuWeights { embed_tokens, layers, norm, lm_head, kv_dtype })
}

/// One projection: its weight as stored, its bias and per-linear norm as f32.
async fn linear(up: &mut Uploader<'_>, l: &Linear) -> Result<GpuLinear, GpuError> {
    let weight = up.matrix(&l.weight).await?;
    let bias = match &l.bias {
        Some(b) => Some(up.vector(b).await?),
        None => None,
    };
    let norm = match &l.norm {
        Some(n) => Some(up.vector(n).await?),
        None => None,
    };
    Ok(GpuLinear { weight, bias, norm })
}

/// Projections reading the same input (q, k, v; gate, up) as one matrix
/// when their rows can share buffers and no per-linear norm tells them
/// apart: one GEMV instead of several. Each comes with the first row of
/// the shared output it writes.
async fn stacked(up: &mut Uploader<'_>, name: String, parts: &[&Linear]) -> Result<Vec<(usize, GpuLinear)>, GpuError> {
    let weights: Vec<&Matrix> = parts.iter().map(|p| &p.weight).collect();
    if parts.iter().any(|p| p.norm.is_some()) || !can_stack(&weights) {
        let mut separate = Vec::new();
        let mut row = 0;
        for p in parts {
            separate.push((row, linear(up, p).await?));
            row += p.weight.rows;
        }
        return Ok(separate);
    }
    let weight = up.stacked(&name, &weights).await?;
    let bias = if parts.iter().any(|p| p.bias.is_some()) {
        let biases: Vec<_> = parts.iter().map(|p| (p.bias.as_ref(), p.weight.rows)).collect();
        Some(up.stacked_vector(&format!("{name}.bias"), &biases).await?)
    } else {
        None
    };
    Ok(vec![(0, GpuLinear { weight, bias, norm: None })])
}

//! The Qwen2 forward pass on the GPU, in the order it runs: a step's whole work
//! as a list of dispatches, recorded once at load and replayed every step (only
//! the step uniform and the token buffer change). Two graphs are recorded: the
//! decode step (one token, through to the sampled id) and the prefill step (a
//! chunk of prompt tokens, filling the KV cache). Compare with `reference.rs`.

use crate::gpu::kernels::Dispatch;
use crate::gpu::weights::GpuMatrix;
use crate::gpu::GpuError;
use crate::model::Config;

use super::ops::{Feed, InputNorms, KvCache, KvDtype, Ops, Out};

/// A projection on the GPU: weight, optional bias, optional per-linear norm.
pub struct GpuLinear {
    pub weight: GpuMatrix,
    pub bias: Option<wgpu::Buffer>,
    pub norm: Option<wgpu::Buffer>,
}

pub struct GpuLayer {
    pub input_layernorm: wgpu::Buffer, // [hidden] f32
    /// q, k and v ([heads * head_dim | kv_dim | kv_dim, hidden]), each with the
    /// first row of the `qkv` activation it writes: one projection of all their
    /// rows where they share a format and have no per-linear norms (one dispatch
    /// instead of three), else the three.
    pub qkv: Vec<(usize, GpuLinear)>,
    pub o_proj: GpuLinear, // [hidden, heads * head_dim]
    pub post_attention_layernorm: wgpu::Buffer,
    /// gate and up ([intermediate, hidden] each), each with the first row of the
    /// `gate_up` activation it writes: stacked into one projection as q/k/v are.
    pub gate_up: Vec<(usize, GpuLinear)>,
    pub down_proj: GpuLinear, // [hidden, intermediate]
    /// This layer's KV cache: `[ctx, kv_heads, head_dim]` each, of
    /// [`GpuWeights::kv_dtype`] values.
    pub k_cache: wgpu::Buffer,
    pub v_cache: wgpu::Buffer,
}

pub struct GpuWeights {
    pub embed_tokens: GpuMatrix, // [vocab, hidden]
    pub layers: Vec<GpuLayer>,
    pub norm: wgpu::Buffer,         // [hidden]
    pub lm_head: Option<GpuMatrix>, // [vocab, hidden]; None when tied to the embedding
    /// What the layers' KV caches store their values as.
    pub kv_dtype: KvDtype,
}

impl GpuWeights {
    pub fn lm_head(&self) -> &GpuMatrix {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }
}

/// Activation buffers of one graph, allocated once (f32), each `[tokens, ...]`
/// for the graph's tokens per step.
pub struct Activations {
    pub x: wgpu::Buffer,             // [hidden] residual stream
    pub qkv: wgpu::Buffer,           // [heads * head_dim + 2 * kv_dim]: q, then k, then v
    pub attn: wgpu::Buffer,          // [heads * head_dim]
    pub gate_up: wgpu::Buffer,       // [2 * intermediate]: gate, then up
    pub mlp: wgpu::Buffer,           // [intermediate]: SwiGLU output (unused where the down GEMV applies it)
    pub attn_partials: wgpu::Buffer, // decode attention's per-split results (ops::attention_partial_floats)
    pub gemm_parts: wgpu::Buffer,    // prefill: the K parts of split GEMMs (ops::gemm_k_parts)
    pub logits: wgpu::Buffer,        // [vocab + ops::ARGMAX_SCRATCH_FLOATS] (decode): logits, then argmax scratch
    pub token: wgpu::Buffer,         // [tokens] u32: the step's tokens in; decode: the chosen token out
    pub candidates: wgpu::Buffer,    // decode: sampling's ranked candidates (ops::sample_scratch_bytes)
    /// `[2]` inverse RMS values for each place a norm is fused into a GEMV.
    pub stats_attn: wgpu::Buffer,
    pub stats_o: wgpu::Buffer,
    pub stats_mlp: wgpu::Buffer,
    pub stats_down: wgpu::Buffer,
    pub stats_final: wgpu::Buffer,
    /// `[ctx, head_dim/2]` (cos, sin) pairs.
    pub rope_table: wgpu::Buffer,
    /// Decode: the GEMVs' input in block fixed point (ops::FixedInput), for the widest input.
    pub fixed_planes: wgpu::Buffer,
    pub fixed_info: wgpu::Buffer,
    /// Decode: the input a GEMV writes for the next (ops::FedInput), for a
    /// hidden-size input, and its exact sums of squares, zeroed every step.
    pub fed_planes: wgpu::Buffer,
    pub fed_info: wgpu::Buffer,
    pub fed_sums: wgpu::Buffer,
    /// Prefill on cooperative matrices: the GEMMs' input as f16 pairs
    /// (ops::CoopInput), for the widest input.
    pub coop_pairs: wgpu::Buffer,
    pub coop_unscale: wgpu::Buffer,
}

/// The decode step: the logits, then two ways to choose the next token from
/// them on the GPU, each leaving it in `Activations::token`.
pub struct DecodeGraph {
    /// The token's embedding, every layer, the final norm and the LM head.
    pub logits: Vec<Dispatch>,
    /// Greedy choice.
    pub argmax: Vec<Dispatch>,
    /// Top-k sampling with the settings the host writes before the step.
    pub sample: Vec<Dispatch>,
}

/// Records the decode step; `sampling` is the uniform of sample.wgsl's settings.
pub async fn decode_graph(
    ops: &mut Ops<'_>,
    c: &Config,
    ctx_len: usize,
    w: &GpuWeights,
    a: &Activations,
    sampling: &wgpu::Buffer,
) -> Result<DecodeGraph, GpuError> {
    let mut graph = layers_graph(ops, c, ctx_len, w, a).await?;
    // Final norm fused into the LM head, then the choices of the next token.
    let eps = c.rms_norm_eps as f32;
    if !ops.computes_norm_stats(w.lm_head()) {
        graph.extend(ops.norm_stats(&a.x, c.hidden_size, None, eps, &a.stats_final).await?);
    }
    let norms = InputNorms { stats: &a.stats_final, norm1: Some(&w.norm), norm2: None };
    graph.extend(ops.linear(w.lm_head(), &a.x, norms, None, false, Out::all(&a.logits, c.vocab_size)).await?);
    let argmax = ops.argmax(c.vocab_size, &a.logits, &a.token).await?;
    let sample = ops.sample(c.vocab_size, &a.logits, &a.candidates, sampling, &a.token).await?;
    Ok(DecodeGraph { logits: graph, argmax, sample })
}

/// The step's embedding lookup and every layer: the residual stream of each of
/// its tokens ends in `a.x`. On its own this is the prefill step, which only
/// fills the KV cache with a chunk of prompt tokens (the prompt's last token
/// runs through the decode graph, which yields the first generated one).
pub async fn layers_graph(
    ops: &mut Ops<'_>,
    c: &Config,
    ctx_len: usize,
    w: &GpuWeights,
    a: &Activations,
) -> Result<Vec<Dispatch>, GpuError> {
    let eps = c.rms_norm_eps as f32;
    let (hidden, inter) = (c.hidden_size, c.intermediate_size);
    let (heads, kv_heads, head_dim) = (c.num_attention_heads, c.num_kv_heads(), c.head_dim());
    let qkv_width = (heads + 2 * kv_heads) * head_dim;
    let mut graph = Vec::new();

    // Embedding lookup of the step's tokens (written by the host, or the
    // token the previous decode step chose: its argmax or its draw).
    graph.extend(ops.embed(&w.embed_tokens, &a.token, &a.x).await?);

    // Exact sums of squares of fed inputs (ops::Feed): a slot a layer for the
    // o projection's feed of gate and up, then one for the down projection's
    // feed of the next layer's q/k/v.
    let layers = w.layers.len();
    // Whether the previous layer's down projection wrote this layer's q/k/v input.
    let mut qkv_fed = false;
    for (layer_index, layer) in w.layers.iter().enumerate() {
        // Attention block. One statistics pass over x serves input_layernorm and
        // any per-linear norms of q/k/v (they all normalize the same h).
        let qkv_norms = layer.qkv.iter().any(|(_, l)| l.norm.is_some());
        if !qkv_fed && !layer.qkv.iter().all(|(_, l)| ops.computes_norm_stats(&l.weight)) {
            let w = qkv_norms.then_some(&layer.input_layernorm);
            graph.extend(ops.norm_stats(&a.x, hidden, w, eps, &a.stats_attn).await?);
        }
        for (offset, proj) in &layer.qkv {
            let out = Out { buffer: &a.qkv, offset: *offset, width: qkv_width };
            if qkv_fed {
                graph.extend(ops.linear_of_fed(&proj.weight, layers + layer_index, proj.bias.as_ref(), out).await?);
                continue;
            }
            let norms =
                InputNorms { stats: &a.stats_attn, norm1: Some(&layer.input_layernorm), norm2: proj.norm.as_ref() };
            graph.extend(ops.linear(&proj.weight, &a.x, norms, proj.bias.as_ref(), false, out).await?);
        }

        // RoPE on q and k, k and v into the cache at the step's positions, and
        // causal grouped-query attention over the cache.
        // A fixed-point o projection gets its input converted by attention itself.
        let o = &layer.o_proj;
        let o_fixed = ops.attention_feeds_fixed(&o.weight, o.norm.is_some(), head_dim);
        let cache = KvCache { k: &layer.k_cache, v: &layer.v_cache, dtype: w.kv_dtype };
        let (table, partials) = (&a.rope_table, &a.attn_partials);
        graph.extend(
            ops.attention(heads, kv_heads, head_dim, ctx_len, &a.qkv, table, cache, partials, &a.attn, o_fixed).await?,
        );

        // Output projection (with its optional norm) added to the residual
        // stream. Where it can, its GEMV also leaves the residual stream,
        // times the post-attention norm, as gate and up's fixed-point input.
        let x_out = Out::all(&a.x, hidden);
        let gate_up: Vec<&GpuMatrix> = layer.gate_up.iter().map(|(_, l)| &l.weight).collect();
        let mlp_norms = layer.gate_up.iter().any(|(_, l)| l.norm.is_some());
        let mlp_fed = o_fixed && !mlp_norms && ops.feeds_next(&o.weight, &gate_up);
        if o_fixed {
            let feed = mlp_fed.then_some(Feed { norm: &layer.post_attention_layernorm, slot: layer_index });
            graph.extend(ops.linear_of_fixed(&o.weight, o.bias.as_ref(), true, x_out, feed).await?);
        } else {
            if o.norm.is_some() && !ops.computes_norm_stats(&o.weight) {
                graph.extend(ops.norm_stats(&a.attn, heads * head_dim, None, eps, &a.stats_o).await?);
            }
            let norms = InputNorms { stats: &a.stats_o, norm1: o.norm.as_ref(), norm2: None };
            graph.extend(ops.linear(&o.weight, &a.attn, norms, o.bias.as_ref(), true, x_out).await?);
        }

        // MLP block: post-attention norm fused into gate and up, SwiGLU, down + residual.
        if !mlp_fed && !layer.gate_up.iter().all(|(_, l)| ops.computes_norm_stats(&l.weight)) {
            let w = mlp_norms.then_some(&layer.post_attention_layernorm);
            graph.extend(ops.norm_stats(&a.x, hidden, w, eps, &a.stats_mlp).await?);
        }
        // Where it can, the stacked gate and up GEMV also leaves SwiGLU of its
        // output as down's fixed-point input.
        let d = &layer.down_proj;
        let down_fed = mlp_fed
            && d.norm.is_none()
            && matches!(&layer.gate_up[..], [(0, gu)] if ops.feeds_swiglu(&gu.weight, &d.weight));
        for (offset, proj) in &layer.gate_up {
            let out = Out { buffer: &a.gate_up, offset: *offset, width: 2 * inter };
            if down_fed {
                let bias = proj.bias.as_ref();
                graph.extend(ops.linear_of_fed_feeding_swiglu(&proj.weight, layer_index, bias, out, &d.weight).await?);
                continue;
            }
            if mlp_fed {
                graph.extend(ops.linear_of_fed(&proj.weight, layer_index, proj.bias.as_ref(), out).await?);
                continue;
            }
            let norms = InputNorms {
                stats: &a.stats_mlp,
                norm1: Some(&layer.post_attention_layernorm),
                norm2: proj.norm.as_ref(),
            };
            graph.extend(ops.linear(&proj.weight, &a.x, norms, proj.bias.as_ref(), false, out).await?);
        }
        // Where it can, the down GEMV also leaves the residual stream, times
        // the next layer's input norm, as that layer's q/k/v input.
        let next = w.layers.get(layer_index + 1).filter(|n| n.qkv.iter().all(|(_, l)| l.norm.is_none()));
        let feed = next.and_then(|n| {
            let qkv: Vec<&GpuMatrix> = n.qkv.iter().map(|(_, l)| &l.weight).collect();
            let slot = layers + layer_index + 1;
            ops.feeds_next(&d.weight, &qkv).then_some(Feed { norm: &n.input_layernorm, slot })
        });
        let swiglu_in_linear = ops.swiglu_in_linear(&d.weight) && d.norm.is_none();
        qkv_fed = feed.is_some() && (down_fed || swiglu_in_linear);
        if down_fed {
            graph.extend(ops.linear_of_fixed(&d.weight, d.bias.as_ref(), true, x_out, feed).await?);
        } else if swiglu_in_linear {
            // Small models' decode, and fixed-point GEMVs: SwiGLU is applied as
            // the down projection reads (or converts) its input.
            graph.extend(ops.linear_of_swiglu(&d.weight, &a.gate_up, d.bias.as_ref(), true, x_out, feed).await?);
        } else {
            graph.push(ops.swiglu(inter, &a.gate_up, &a.mlp).await?);
            if d.norm.is_some() && !ops.computes_norm_stats(&d.weight) {
                graph.extend(ops.norm_stats(&a.mlp, inter, None, eps, &a.stats_down).await?);
            }
            let norms = InputNorms { stats: &a.stats_down, norm1: d.norm.as_ref(), norm2: None };
            graph.extend(ops.linear(&d.weight, &a.mlp, norms, d.bias.as_ref(), true, x_out).await?);
        }
    }

    Ok(graph)
}

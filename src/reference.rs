//! The executable specification: a plain f32 CPU forward pass of Qwen2.
//!
//! Everything the GPU engine computes is checked against this file, and this file
//! is checked against Hugging Face `transformers` (fixtures in `tests/fixtures`).
//! It favours being obviously right over being fast: one token at a time, weights
//! read from the memory-mapped checkpoint and dequantized one row at a time while
//! multiplying (no dequantized copy of any matrix).
//!
//! One layer, with the optional per-linear RMSNorms of QAT models (`norm_P`):
//! ```text
//! h = rmsnorm(x, input_layernorm)
//! q = Wq · norm_q(h) + bq        k, v likewise      (RoPE on q and k)
//! a = causal grouped-query attention(q, k, v) over the KV cache
//! x = x + Wo · norm_o(a)
//! h = rmsnorm(x, post_attention_layernorm)
//! x = x + Wd · norm_d(silu(Wg · norm_g(h)) * (Wu · norm_u(h)))
//! ```

use crate::backend::{Backend, RunError};
use crate::model::tensors::{read_vector, verify_packed, MatrixRows};
use crate::model::{Linear, Model, ModelError};

/// A projection ready to multiply: weight rows, f32 bias, f32 per-linear norm.
struct Projection<'a> {
    weight: MatrixRows<'a>,
    bias: Option<Vec<f32>>,
    norm: Option<Vec<f32>>,
}

impl<'a> Projection<'a> {
    fn new(model: &'a Model, linear: &'a Linear) -> Self {
        let ckpt = &model.checkpoint;
        Projection {
            weight: MatrixRows::new(ckpt, &linear.weight),
            bias: linear.bias.as_ref().map(|b| read_vector(ckpt, b)),
            norm: linear.norm.as_ref().map(|n| read_vector(ckpt, n)),
        }
    }

    /// `out = W · norm(x) + b`.
    fn forward(&self, x: &[f32], eps: f32, out: &mut [f32]) -> Result<(), ModelError> {
        match &self.norm {
            Some(w) => {
                let mut normed = vec![0.0; x.len()];
                rmsnorm(&mut normed, x, w, eps);
                self.weight.matvec(&normed, out)?;
            }
            None => self.weight.matvec(x, out)?,
        }
        if let Some(b) = &self.bias {
            out.iter_mut().zip(b).for_each(|(o, b)| *o += b);
        }
        Ok(())
    }
}

struct LayerWeights<'a> {
    input_layernorm: Vec<f32>, // [hidden]
    q_proj: Projection<'a>,    // [heads * head_dim, hidden]
    k_proj: Projection<'a>,    // [kv_heads * head_dim, hidden]
    v_proj: Projection<'a>,    // [kv_heads * head_dim, hidden]
    o_proj: Projection<'a>,    // [hidden, heads * head_dim]
    post_attention_layernorm: Vec<f32>,
    gate_proj: Projection<'a>, // [intermediate, hidden]
    up_proj: Projection<'a>,   // [intermediate, hidden]
    down_proj: Projection<'a>, // [hidden, intermediate]
}

/// Every activation buffer and the KV cache, allocated once.
struct RunState {
    x: Vec<f32>,      // [hidden] the residual stream
    h: Vec<f32>,      // [hidden] normed input of a block
    q: Vec<f32>,      // [heads * head_dim]
    k: Vec<f32>,      // [kv_dim]
    v: Vec<f32>,      // [kv_dim]
    attn: Vec<f32>,   // [heads * head_dim] attention output
    scores: Vec<f32>, // [ctx] one head's attention weights
    gate: Vec<f32>,   // [intermediate]
    up: Vec<f32>,     // [intermediate]
    logits: Vec<f32>, // [vocab]
    /// `[layers, ctx, kv_dim]`: keys after RoPE, values as projected.
    key_cache: Vec<f32>,
    value_cache: Vec<f32>,
}

/// The CPU reference model with its KV cache.
pub struct Reference<'a> {
    model: &'a Model,
    embed_tokens: MatrixRows<'a>, // [vocab, hidden]
    layers: Vec<LayerWeights<'a>>,
    norm: Vec<f32>,          // [hidden]
    lm_head: MatrixRows<'a>, // [vocab, hidden]
    /// RoPE inverse frequencies, `theta^(-2i/head_dim)` for `i < head_dim/2`.
    inv_freq: Vec<f32>,
    ctx: usize,
    state: RunState,
}

impl<'a> Reference<'a> {
    /// Prepares the model for up to `ctx` positions; checks every packed byte first.
    pub fn new(model: &'a Model, ctx: usize) -> Result<Self, ModelError> {
        let (ckpt, layout, c) = (&model.checkpoint, &model.layout, model.config());
        verify_packed(ckpt, layout)?;
        let layers = layout
            .layers
            .iter()
            .map(|l| LayerWeights {
                input_layernorm: read_vector(ckpt, &l.input_layernorm),
                q_proj: Projection::new(model, &l.q_proj),
                k_proj: Projection::new(model, &l.k_proj),
                v_proj: Projection::new(model, &l.v_proj),
                o_proj: Projection::new(model, &l.o_proj),
                post_attention_layernorm: read_vector(ckpt, &l.post_attention_layernorm),
                gate_proj: Projection::new(model, &l.gate_proj),
                up_proj: Projection::new(model, &l.up_proj),
                down_proj: Projection::new(model, &l.down_proj),
            })
            .collect();
        let head_dim = c.head_dim();
        let inv_freq = c.rope_inv_freq();
        let q_dim = c.num_attention_heads * head_dim;
        let cache = c.num_hidden_layers * ctx * c.kv_dim();
        let state = RunState {
            x: vec![0.0; c.hidden_size],
            h: vec![0.0; c.hidden_size],
            q: vec![0.0; q_dim],
            k: vec![0.0; c.kv_dim()],
            v: vec![0.0; c.kv_dim()],
            attn: vec![0.0; q_dim],
            scores: vec![0.0; ctx],
            gate: vec![0.0; c.intermediate_size],
            up: vec![0.0; c.intermediate_size],
            logits: vec![0.0; c.vocab_size],
            key_cache: vec![0.0; cache],
            value_cache: vec![0.0; cache],
        };
        Ok(Reference {
            model,
            embed_tokens: MatrixRows::new(ckpt, &layout.embed_tokens),
            layers,
            norm: read_vector(ckpt, &layout.norm),
            lm_head: MatrixRows::new(ckpt, &layout.lm_head),
            inv_freq,
            ctx,
            state,
        })
    }
}

impl Backend for Reference<'_> {
    fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    fn context_len(&self) -> usize {
        self.ctx
    }

    fn forward(&mut self, token: u32, pos: usize) -> Result<&[f32], RunError> {
        let c = self.model.config();
        let vocab = c.vocab_size;
        if token as usize >= vocab {
            return Err(RunError::TokenOutOfRange { id: token, vocab });
        }
        if pos >= self.ctx {
            return Err(RunError::ContextFull { pos, ctx: self.ctx });
        }
        let eps = c.rms_norm_eps as f32;
        let (heads, head_dim, kv_dim, kv_group) = (c.num_attention_heads, c.head_dim(), c.kv_dim(), c.kv_group());
        let s = &mut self.state;

        // Embedding: one row of the (dense or packed) table.
        self.embed_tokens.row(token as usize, &mut s.x)?;

        for (l, layer) in self.layers.iter().enumerate() {
            // Attention block: norm, q/k/v projections (each with its optional norm).
            rmsnorm(&mut s.h, &s.x, &layer.input_layernorm, eps);
            layer.q_proj.forward(&s.h, eps, &mut s.q)?;
            layer.k_proj.forward(&s.h, eps, &mut s.k)?;
            layer.v_proj.forward(&s.h, eps, &mut s.v)?;

            // Rotary position embedding on every query and key head.
            for head in s.q.chunks_exact_mut(head_dim).chain(s.k.chunks_exact_mut(head_dim)) {
                rope(head, pos, &self.inv_freq);
            }

            // Append this position's key and value to the cache.
            let layer_cache = l * self.ctx * kv_dim;
            let slot = layer_cache + pos * kv_dim;
            s.key_cache[slot..slot + kv_dim].copy_from_slice(&s.k);
            s.value_cache[slot..slot + kv_dim].copy_from_slice(&s.v);

            // Causal attention: each query head reads the K/V head of its group.
            let scale = 1.0 / (head_dim as f32).sqrt();
            for h in 0..heads {
                let q = &s.q[h * head_dim..(h + 1) * head_dim];
                let kv_offset = (h / kv_group) * head_dim;
                let scores = &mut s.scores[..=pos];
                for (t, score) in scores.iter_mut().enumerate() {
                    let k = &s.key_cache[layer_cache + t * kv_dim + kv_offset..][..head_dim];
                    *score = dot(q, k) * scale;
                }
                softmax(scores);
                let out = &mut s.attn[h * head_dim..(h + 1) * head_dim];
                out.fill(0.0);
                for (t, &weight) in scores.iter().enumerate() {
                    let v = &s.value_cache[layer_cache + t * kv_dim + kv_offset..][..head_dim];
                    out.iter_mut().zip(v).for_each(|(o, v)| *o += weight * v);
                }
            }

            // Output projection and residual.
            layer.o_proj.forward(&s.attn, eps, &mut s.h)?;
            add_in_place(&mut s.x, &s.h);

            // MLP block: norm, SwiGLU, down projection, residual.
            rmsnorm(&mut s.h, &s.x, &layer.post_attention_layernorm, eps);
            layer.gate_proj.forward(&s.h, eps, &mut s.gate)?;
            layer.up_proj.forward(&s.h, eps, &mut s.up)?;
            for (g, u) in s.gate.iter_mut().zip(&s.up) {
                *g = silu(*g) * u;
            }
            layer.down_proj.forward(&s.gate, eps, &mut s.h)?;
            add_in_place(&mut s.x, &s.h);
        }

        // Final norm and the language-model head.
        rmsnorm(&mut s.h, &s.x, &self.norm, eps);
        self.lm_head.matvec(&s.h, &mut s.logits)?;
        Ok(&s.logits)
    }
}

/// `out = x * rsqrt(mean(x²) + eps) * w`.
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let mean_square = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv_rms = 1.0 / (mean_square + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv_rms * w;
    }
}

/// Qwen2's rotate-half RoPE: pairs `(i, i + d/2)` rotate by `pos * inv_freq[i]`.
pub fn rope(head: &mut [f32], pos: usize, inv_freq: &[f32]) {
    let half = head.len() / 2;
    for (i, &freq) in inv_freq.iter().enumerate() {
        let (sin, cos) = (pos as f32 * freq).sin_cos();
        let (a, b) = (head[i], head[i + half]);
        head[i] = a * cos - b * sin;
        head[i + half] = b * cos + a * sin;
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    x.iter_mut().for_each(|v| *v /= sum);
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}

//! The GPU inference engine: loads a model onto a device, runs prompts in
//! batched chunks and decodes token by token, queueing steps whose tokens the
//! GPU chooses itself. Front ends (CLI, window, browser) use only this API.

mod decode;
pub mod forward;
pub mod ops;
mod profile;
mod upload;

pub use profile::KernelTime;

use crate::backend::DECODE_CHUNK;
use crate::gpu::kernels::{Dispatch, Kernels};
use crate::gpu::weights::{matrix_bytes, Uploader, WeightSource};
use crate::gpu::{GpuCaps, GpuContext, GpuError};
use crate::model::{Config, Layout, Linear};

use decode::Step;
use forward::{decode_graph, layers_graph, Activations, DecodeGraph, GpuWeights};
use ops::Ops;

/// Default cap on the KV cache when `--ctx` is not given: the context is the
/// model's `max_position_embeddings` or whatever fits in this many bytes.
pub const DEFAULT_KV_BUDGET: u64 = 4 << 30;

/// Default prompt tokens per prefill step (`--ubatch`).
pub const DEFAULT_UBATCH: usize = 512;

#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Context length; `None` picks `max_position_embeddings` capped by [`DEFAULT_KV_BUDGET`].
    pub ctx: Option<usize>,
    /// Split weight matrices at this binding size even when the device allows more (tests).
    pub max_binding_bytes: Option<u64>,
    /// Prompt tokens per prefill step; `None` picks [`DEFAULT_UBATCH`], capped by
    /// the context and by what one storage binding holds.
    pub ubatch: Option<usize>,
    /// What the KV cache stores its values as (`--kv-cache`).
    pub kv_dtype: ops::KvDtype,
}

/// What the model needs on the GPU, computed before anything is uploaded.
#[derive(Debug, Clone)]
pub struct MemoryPlan {
    pub weight_bytes: u64,
    pub kv_cache_bytes: u64,
    pub scratch_bytes: u64,
    pub ctx: usize,
    /// What the KV cache stores its values as.
    pub kv_dtype: ops::KvDtype,
    /// Prompt tokens per prefill step.
    pub ubatch: usize,
    /// Floats of the prefill step's scratch for split GEMMs (ops::gemm_k_parts).
    pub gemm_parts: usize,
    /// Whether prefill multiplies packed matrices on cooperative matrices
    /// (with the scratch of ops::CoopInput).
    pub coop_gemm: bool,
}

impl MemoryPlan {
    pub fn total(&self) -> u64 {
        self.weight_bytes + self.kv_cache_bytes + self.scratch_bytes
    }

    /// The plan for a context of `requested_ctx` and prefill steps of
    /// `requested_ubatch` tokens, with a KV cache of `kv_dtype` values;
    /// `max_binding` bytes is the most one activation buffer may take, which
    /// caps the default step size. `caps`: whether the device runs prefill's
    /// cooperative-matrix GEMM, and on f16 values alone.
    pub fn new(
        layout: &Layout,
        c: &Config,
        requested_ctx: Option<usize>,
        requested_ubatch: Option<usize>,
        kv_dtype: ops::KvDtype,
        max_binding: u64,
        caps: &GpuCaps,
    ) -> Result<Self, GpuError> {
        let f32s = |n: usize| (n * 4) as u64;
        let kv_per_position = (2 * c.num_hidden_layers * c.kv_dim() * kv_dtype.bytes()) as u64;
        let ctx = match requested_ctx {
            Some(0) => return Err(GpuError::Limits("the context length must be positive".into())),
            Some(n) if n > c.max_position_embeddings => {
                return Err(GpuError::Limits(format!(
                    "context {n} is larger than the model's max_position_embeddings ({})",
                    c.max_position_embeddings
                )))
            }
            Some(n) => n,
            None => c.max_position_embeddings.min((DEFAULT_KV_BUDGET / kv_per_position).max(1) as usize),
        };
        let vector = |v: &crate::model::Vector| f32s(v.len);
        let linear = |l: &Linear| {
            matrix_bytes(&l.weight) + l.bias.as_ref().map_or(0, vector) + l.norm.as_ref().map_or(0, vector)
        };
        let mut weight_bytes = layout.matrices().iter().map(|m| matrix_bytes(m)).sum::<u64>() + vector(&layout.norm);
        for l in &layout.layers {
            weight_bytes += vector(&l.input_layernorm) + vector(&l.post_attention_layernorm);
            weight_bytes += l.linears().iter().map(|lin| linear(lin) - matrix_bytes(&lin.weight)).sum::<u64>();
        }
        let q_dim = c.num_attention_heads * c.head_dim();
        // The widest activation row decides how many tokens one binding holds.
        let widest = f32s(widest_row(c));
        let most_tokens = (max_binding / widest).max(1) as usize;
        let ubatch = match requested_ubatch {
            Some(0) => return Err(GpuError::Limits("the prefill step (--ubatch) must be at least 1 token".into())),
            Some(n) if n > most_tokens => {
                return Err(GpuError::Limits(format!(
                    "--ubatch {n} needs {} bytes for one activation buffer, more than one storage binding \
                     ({max_binding} bytes); use --ubatch {most_tokens} or less",
                    n as u64 * widest
                )))
            }
            Some(n) => n.min(ctx),
            None => DEFAULT_UBATCH.min(most_tokens).min(ctx),
        };
        // x, qkv, attn, gate_up, mlp, five [2] stats, and the token id.
        let per_token = f32s(c.hidden_size + 2 * q_dim + 2 * c.kv_dim() + 3 * c.intermediate_size + 10) + 4;
        let scratch_bytes = per_token * (1 + ubatch as u64)
            + f32s(ops::attention_partial_floats(c.num_attention_heads, c.head_dim(), ctx))
            + 2 * f32s(c.vocab_size)
            + f32s(ops::ARGMAX_SCRATCH_FLOATS)
            + ops::sample_scratch_bytes(c.vocab_size)
            + f32s(ctx * c.head_dim());
        let gemm_parts = if ubatch > 1 { ops::gemm_parts_floats(max_binding) } else { 1 };
        // The decode step's fixed-point GEMV inputs (allocated whichever GEMV
        // runs): the widest, and the one a GEMV writes for the next.
        let (planes, info) = ops::FixedInput::bytes(widest_row(c));
        let (fed_planes, fed_info) = ops::FixedInput::bytes(c.hidden_size);
        let fed_sums = ops::FedInput::sums_bytes(ops::FedInput::slots(c.num_hidden_layers));
        let scratch_bytes = scratch_bytes + f32s(gemm_parts) + planes + info + fed_planes + fed_info + fed_sums;
        // Prefill's GEMM input as f16 pairs, where it runs on cooperative matrices.
        let pair_bytes = ops::CoopInput::bytes(ubatch, widest_row(c), caps.coop_f16);
        let coop_gemm = caps.coop_gemm && ubatch > 1 && pair_bytes <= max_binding;
        let scratch_bytes = scratch_bytes + if coop_gemm { pair_bytes + f32s(ubatch) } else { 0 };
        let kv_cache_bytes = kv_per_position * ctx as u64;
        Ok(MemoryPlan { weight_bytes, kv_cache_bytes, scratch_bytes, ctx, kv_dtype, ubatch, gemm_parts, coop_gemm })
    }
}

/// A model loaded on the GPU, ready to run.
pub struct Engine {
    ctx: GpuContext,
    config: Config,
    plan: MemoryPlan,
    /// The decode step and its buffers.
    graph: DecodeGraph,
    act: Activations,
    step_params: wgpu::Buffer,
    /// sample.wgsl's settings, written before each sampled step.
    sampling: wgpu::Buffer,
    /// The prefill step (up to `plan.ubatch` prompt tokens) and its buffers.
    prefill_graph: Vec<Dispatch>,
    prefill_act: Activations,
    prefill_step: wgpu::Buffer,
    /// The ids decode steps chose (grown to the most asked for at once).
    ids_readback: wgpu::Buffer,
    logits_readback: wgpu::Buffer,
    logits: Vec<f32>,
    /// The decode step likely asked for next, recorded ahead: its position,
    /// what it reads back and its commands.
    next_step: Option<(usize, Step, wgpu::CommandBuffer)>,
    /// Whether the decode step's packed products run on fixed-point inputs (gemv_fixed.wgsl).
    fixed_gemv: bool,
    _weights: GpuWeights,
}

/// Values in the widest activation row (and GEMV input): hidden, q or intermediate.
fn widest_row(c: &Config) -> usize {
    c.hidden_size.max(c.num_attention_heads * c.head_dim()).max(c.intermediate_size)
}

fn storage(ctx: &GpuContext, label: &str, floats: usize) -> wgpu::Buffer {
    use wgpu::BufferUsages as U;
    ctx.buffer(label, (floats * 4) as u64, U::STORAGE | U::COPY_SRC | U::COPY_DST)
}

/// The activation buffers of a graph running `tokens` tokens per step (decode
/// attention's scratch and the logits only for the one-token graph).
fn activations(ctx: &GpuContext, c: &Config, tokens: usize, plan: &MemoryPlan, rope: &wgpu::Buffer) -> Activations {
    let q_dim = c.num_attention_heads * c.head_dim();
    let decode = tokens == 1;
    let stats = |label| storage(ctx, label, 2 * tokens);
    use wgpu::BufferUsages as U;
    let fixed = ops::FixedInput::bytes(widest_row(c));
    let fed = ops::FixedInput::bytes(c.hidden_size);
    let fed_sums = if decode { ops::FedInput::sums_bytes(ops::FedInput::slots(c.num_hidden_layers)) } else { 4 };
    let partials =
        if decode { ops::attention_partial_floats(c.num_attention_heads, c.head_dim(), plan.ctx) } else { 1 };
    let coop = !decode && plan.coop_gemm;
    Activations {
        x: storage(ctx, "x", tokens * c.hidden_size),
        qkv: storage(ctx, "qkv", tokens * (q_dim + 2 * c.kv_dim())),
        attn: storage(ctx, "attn", tokens * q_dim),
        gate_up: storage(ctx, "gate and up", tokens * 2 * c.intermediate_size),
        mlp: storage(ctx, "mlp", tokens * c.intermediate_size),
        attn_partials: storage(ctx, "attention partials", partials),
        gemm_parts: storage(ctx, "gemm parts", if decode { 1 } else { plan.gemm_parts }),
        logits: storage(ctx, "logits", if decode { c.vocab_size + ops::ARGMAX_SCRATCH_FLOATS } else { 1 }),
        token: storage(ctx, "token", tokens),
        candidates: ctx.buffer(
            "sampling candidates",
            if decode { ops::sample_scratch_bytes(c.vocab_size) } else { 4 },
            U::STORAGE,
        ),
        stats_attn: stats("stats attn"),
        stats_o: stats("stats o"),
        stats_mlp: stats("stats mlp"),
        stats_down: stats("stats down"),
        stats_final: stats("stats final"),
        rope_table: rope.clone(),
        fixed_planes: ctx.buffer("fixed-point planes", if decode { fixed.0 } else { 4 }, U::STORAGE),
        fixed_info: ctx.buffer("fixed-point word information", if decode { fixed.1 } else { 4 }, U::STORAGE),
        coop_pairs: ctx.buffer(
            "f16 pairs",
            if coop { ops::CoopInput::bytes(tokens, widest_row(c), ctx.caps.coop_f16) } else { 4 },
            U::STORAGE,
        ),
        coop_unscale: storage(ctx, "f16 pair unscale", if coop { tokens } else { 1 }),
        // Allocated last: placed before the f16 pairs, they moved those and
        // prefill (pp512) ran 2.5 % slower on an H100.
        fed_planes: ctx.buffer("fed fixed-point planes", if decode { fed.0 } else { 4 }, U::STORAGE),
        fed_info: ctx.buffer("fed fixed-point word information", if decode { fed.1 } else { 4 }, U::STORAGE),
        fed_sums: ctx.buffer("fed exact sums of squares", fed_sums, U::STORAGE | U::COPY_DST),
    }
}

/// RoPE `(cos, sin)` for every position and frequency, as `reference.rs` computes them.
fn rope_table(c: &Config, ctx: usize) -> Vec<f32> {
    let inv_freq = c.rope_inv_freq();
    let mut table = Vec::with_capacity(ctx * c.head_dim());
    for pos in 0..ctx {
        for f in &inv_freq {
            let (sin, cos) = (pos as f32 * f).sin_cos();
            table.extend([cos, sin]);
        }
    }
    table
}

impl Engine {
    /// Plans memory, refuses what the device cannot hold, streams the weights up
    /// (reporting `(bytes done, bytes total)`) and records the token graph.
    pub async fn load(
        ctx: &GpuContext,
        config: &Config,
        layout: &Layout,
        source: &dyn WeightSource,
        options: &EngineOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, GpuError> {
        let c = config;
        let limits = &ctx.caps.limits;
        let max_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let plan = MemoryPlan::new(layout, c, options.ctx, options.ubatch, options.kv_dtype, max_binding, &ctx.caps)?;
        let kv_layer_bytes = (plan.ctx * c.kv_dim() * plan.kv_dtype.bytes()) as u64;
        if kv_layer_bytes > max_binding {
            return Err(GpuError::Limits(format!(
                "a context of {} tokens needs {kv_layer_bytes} bytes of KV cache per layer, more than one storage binding \
                 of {} ({max_binding} bytes); lower --ctx",
                plan.ctx, ctx.info.name
            )));
        }
        ops::check_attention_head_dim(c.head_dim())?;
        plan.kv_dtype.check_head_dim(c.head_dim())?;
        let partials_bytes = (ops::attention_partial_floats(c.num_attention_heads, c.head_dim(), plan.ctx) * 4) as u64;
        if partials_bytes > max_binding || ((c.vocab_size + ops::ARGMAX_SCRATCH_FLOATS) * 4) as u64 > max_binding {
            return Err(GpuError::Limits(format!(
                "the attention scratch ({partials_bytes} bytes) or logits do not fit one storage binding of {max_binding} bytes; lower --ctx"
            )));
        }

        let weight_binding = options.max_binding_bytes.unwrap_or(max_binding).min(max_binding);
        let mut up = Uploader::new(ctx, source, weight_binding, plan.weight_bytes, progress);
        let weights = upload::weights(&mut up, ctx, c, layout, plan.ctx, plan.kv_dtype).await?;

        let rope =
            ctx.buffer_init("rope table", bytemuck::cast_slice(&rope_table(c, plan.ctx)), wgpu::BufferUsages::STORAGE);
        let act = activations(ctx, c, 1, &plan, &rope);
        let prefill_act = activations(ctx, c, plan.ubatch, &plan, &rope);
        // Step uniforms: {pos, tokens}. A decode step always holds one token.
        let step_usage = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let step_params = ctx.buffer_init("decode step", bytemuck::cast_slice(&[0u32, 1, 0, 0]), step_usage);
        let prefill_step = ctx.buffer("prefill step", 16, step_usage);
        let sampling = ctx.buffer("sampling settings", 32, step_usage);
        let dummy = storage(ctx, "absent", 4);
        let mut kernels = Kernels::new(ctx);
        let inline = ops::inline_norm_stats(c).then_some(c.rms_norm_eps as f32);
        let fixed_gemv = ops::fixed_gemv_wanted(ctx.caps.gemv);
        let mut ops = Ops {
            ctx,
            kernels: &mut kernels,
            dummy: &dummy,
            step: &step_params,
            tokens: 1,
            inline_norm_stats: inline,
            gemm_parts: None,
            fixed_input: fixed_gemv.then_some(ops::FixedInput {
                planes: &act.fixed_planes,
                info: &act.fixed_info,
                digits: ctx.caps.act_bits.digits(),
            }),
            fed_input: fixed_gemv.then_some(ops::FedInput {
                fixed: ops::FixedInput {
                    planes: &act.fed_planes,
                    info: &act.fed_info,
                    digits: ctx.caps.act_bits.digits(),
                },
                sums: &act.fed_sums,
            }),
            coop_input: None,
            eps: c.rms_norm_eps as f32,
        };
        let graph = decode_graph(&mut ops, c, plan.ctx, &weights, &act, &sampling).await?;
        let mut ops = Ops {
            ctx,
            kernels: &mut kernels,
            dummy: &dummy,
            step: &prefill_step,
            tokens: plan.ubatch,
            inline_norm_stats: None,
            gemm_parts: Some(&prefill_act.gemm_parts),
            fixed_input: None,
            fed_input: None,
            coop_input: plan
                .coop_gemm
                .then_some(ops::CoopInput { pairs: &prefill_act.coop_pairs, unscale: &prefill_act.coop_unscale }),
            eps: c.rms_norm_eps as f32,
        };
        let prefill_graph = layers_graph(&mut ops, c, plan.ctx, &weights, &prefill_act).await?;
        use wgpu::BufferUsages as U;
        let ids_readback = ctx.buffer("ids read back", 4 * DECODE_CHUNK as u64, U::MAP_READ | U::COPY_DST);
        let logits_readback = ctx.buffer("logits read back", (c.vocab_size * 4) as u64, U::MAP_READ | U::COPY_DST);
        ctx.queue.submit([]);
        ctx.idle().await?;
        Ok(Engine {
            ctx: ctx.clone(),
            config: c.clone(),
            plan,
            graph,
            act,
            step_params,
            sampling,
            prefill_graph,
            prefill_act,
            prefill_step,
            ids_readback,
            logits_readback,
            logits: vec![0.0; c.vocab_size],
            next_step: None,
            fixed_gemv,
            _weights: weights,
        })
    }

    pub fn memory_plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// The prefill step's GEMM for packed weights: "coop" (cooperative
    /// matrices, f16 pairs), "coop-f16" (cooperative matrices, values rounded
    /// to f16) or "float" (f32).
    pub fn prefill_gemm(&self) -> &'static str {
        match (self.plan.coop_gemm, self.ctx.caps.coop_f16) {
            (true, true) => "coop-f16",
            (true, false) => "coop",
            _ => "float",
        }
    }

    /// The decode step's GEMV for packed weights: "fixed" (24-bit fixed-point
    /// inputs, integer dot products) or "float" (f32).
    pub fn decode_gemv(&self) -> &'static str {
        if self.fixed_gemv {
            "fixed"
        } else {
            "float"
        }
    }

    /// Bits of each input value of the fixed-point decode GEMV (`--act-bits`);
    /// None where the decode step multiplies in f32.
    pub fn act_bits(&self) -> Option<u32> {
        self.fixed_gemv.then(|| self.ctx.caps.act_bits.bits())
    }

    pub fn gpu(&self) -> &GpuContext {
        &self.ctx
    }
}

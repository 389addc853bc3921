//! One builder per kernel: checks its arguments, writes the kernel's parameters
//! into a small uniform buffer and returns the dispatches to record. The order in
//! which they run is decided by `forward.rs`.
//!
//! A graph runs `Ops::tokens` tokens per step: one while decoding, a chunk of
//! the prompt in prefill. Activations are then `[tokens, n]`, and the builders
//! pick the batched kernels (a GEMM instead of a GEMV, causal attention over the
//! chunk); kernels skip the tokens past the step's count.

mod attention;
mod fixed;
mod gemm;
mod sample;

pub use attention::{
    attention_max_splits, attention_partial_floats, attention_splits, check_attention_head_dim, KvCache, KvDtype,
    ATTENTION_CHUNK, ATTENTION_WORKGROUPS,
};
pub use fixed::{
    converts_own_input, fixed_gemv_lanes, fixed_gemv_team, fixed_gemv_wanted, FedInput, Feed, FixedInput,
    LONG_ROW_MIN_WORDS,
};
pub use gemm::{
    coop_scale_exp, gemm_k_parts, gemm_parts_floats, gemm_tokens_per_thread, CoopInput, GEMM_MIN_WORKGROUPS,
    GEMM_TALL_ROWS,
};
pub use sample::{sample_scratch_bytes, sample_settings, ARGMAX_SCRATCH_FLOATS, SAMPLE_TOP};

use crate::gpu::kernels::{grid, Dispatch, Kernel, Kernels, MAX_WORKGROUPS_PER_DIM};
use crate::gpu::weights::{dtype_code, GpuMatrix, MatrixChunk};
use crate::gpu::{GemvPath, GpuContext, GpuError};
use crate::model::Storage;

/// The fused input normalization of a GEMV (see gemv.wgsl).
pub struct InputNorms<'a> {
    /// `[2]` inverse RMS values from [`Ops::norm_stats`].
    pub stats: &'a wgpu::Buffer,
    /// The block norm (multiplied with `stats[0]`).
    pub norm1: Option<&'a wgpu::Buffer>,
    /// A per-linear norm after it (multiplied with `stats[1]`).
    pub norm2: Option<&'a wgpu::Buffer>,
}

/// Where a projection writes: rows `offset..offset + rows` of each token's
/// `width` values in `buffer` (q, k and v share one activation).
#[derive(Clone, Copy)]
pub struct Out<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: usize,
    pub width: usize,
}

impl<'a> Out<'a> {
    /// All of each token's `width` values.
    pub fn all(buffer: &'a wgpu::Buffer, width: usize) -> Self {
        Out { buffer, offset: 0, width }
    }
}

/// What a projection reads: its input, fused norms and bias, and the kernel
/// flags that say which of them apply.
struct LinearInputs<'a> {
    x: &'a wgpu::Buffer,
    norms: InputNorms<'a>,
    bias: Option<&'a wgpu::Buffer>,
    flags: u32,
}

const NORM1: u32 = 1;
const NORM2: u32 = 2;
const BIAS: u32 = 4;
const RESIDUAL: u32 = 8;
const INLINE_STATS: u32 = 16;
const SPLIT_K: u32 = 16; // gemm.wgsl's flag (the GEMV's 16 is INLINE_STATS)
const SWIGLU: u32 = 32;
const EXACT_SUMS: u32 = 64; // gemv_fixed.wgsl
/// gemv_fixed.wgsl's EXACT_PARTS: each part of an exact sum takes up to 255
/// feeding workgroups' adds.
const EXACT_PARTS: usize = 4;

/// Row teams a GEMV should have at least: on an H100 (132 SMs), rows per team
/// chosen this way beat a fixed four by 4-25 % in decode (BENCHMARKS.md). Once
/// the GEMV prefetched its weights, 512 beat 1024 (7B +5 %, others equal).
pub const MIN_TEAMS: u32 = 512;

/// Row teams from which a GEMV's teams get at most 8 lanes, several teams to a
/// workgroup: only LM heads have this many rows. On an H100 that took the
/// 0.5B head from 38,000 workgroups to 4,700 and tg128 from 733 to 761 t/s
/// (16 lanes: 754; 32B's head, 320 words a row, the same speed either way).
pub const MANY_TEAMS: u32 = 32768;

/// How a GEMV workgroup of 64 threads is split: teams of `lanes` threads share
/// a row; each team computes `rows_per_team` rows, reusing every input value it
/// loads for all of them.
pub struct GemvTeams {
    pub lanes: u32,
    pub rows_per_team: u32,
}

impl GemvTeams {
    /// Enough lanes to keep every thread busy on the row's length (in 16-column
    /// words for packed rows); up to four rows per team, each input value loaded
    /// once for all of them, but never so many that the matrix gets fewer than
    /// [`MIN_TEAMS`] teams (the GPU then runs out of parallel work); at most 8
    /// lanes from [`MANY_TEAMS`] teams on.
    pub fn for_matrix(m: &GpuMatrix) -> Self {
        let units = if wide_gemv(m) {
            m.cols / 64
        } else if m.is_packed() {
            m.cols / 16
        } else {
            m.cols / 4
        } as u32;
        let rows = m.rows as u32;
        let rows_per_team = [4, 2, 1].into_iter().find(|&r| rows / r >= MIN_TEAMS).unwrap_or(1);
        // So many teams (an LM head's) would each be a short-lived workgroup of
        // their own; eight lanes put eight teams in one.
        let max_lanes = if rows / rows_per_team >= MANY_TEAMS { 8 } else { 64 };
        let lanes = units.next_power_of_two().clamp(4, max_lanes);
        GemvTeams { lanes, rows_per_team }
    }

    pub fn rows_per_workgroup(&self) -> u32 {
        64 / self.lanes * self.rows_per_team
    }
}

/// Shortest row, in 64-column groups, that the wide GEMV takes: four groups
/// per lane of a 64-thread team. On an H100 the wide kernel made the 32B
/// shape's down projection (432 groups) 21 % faster and its gate and up
/// projections (80 groups) 44 % slower (BENCHMARKS.md).
pub const WIDE_GEMV_MIN_GROUPS: usize = 256;

/// Whether `m`'s GEMV reads 64 weights per thread and row at a time
/// (gemv_ternary_wide): long packed rows of whole 64-column groups, one scale each.
pub fn wide_gemv(m: &GpuMatrix) -> bool {
    whole_groups(m) && m.cols / 64 >= WIDE_GEMV_MIN_GROUPS
}

/// Whether `m` is packed in whole 64-column groups of one scale each.
fn whole_groups(m: &GpuMatrix) -> bool {
    let groups_fit = match &m.storage {
        Storage::Packed { group_size, .. } => group_size % 64 == 0,
        Storage::Dense { .. } => false,
    };
    groups_fit && m.cols.is_multiple_of(64)
}

pub struct Ops<'a> {
    pub ctx: &'a GpuContext,
    pub kernels: &'a mut Kernels,
    /// Bound where a kernel's optional input is absent (its flag is off).
    pub dummy: &'a wgpu::Buffer,
    /// `{pos, tokens}` of the current step (uniform): the first token's position
    /// and how many tokens the step holds.
    pub step: &'a wgpu::Buffer,
    /// Most tokens per step this graph is recorded for.
    pub tokens: usize,
    /// `Some(eps)`: one-token GEMVs compute their norm statistics themselves
    /// (gemv.wgsl's INLINE_STATS), so [`Ops::norm_stats`] records nothing.
    pub inline_norm_stats: Option<f32>,
    /// Scratch for the K parts of GEMMs split along their columns
    /// ([`gemm_k_parts`]); `None`: GEMMs are never split.
    pub gemm_parts: Option<&'a wgpu::Buffer>,
    /// Scratch for a GEMV input in block fixed point: with it, one-token
    /// products of packed matrices run as [`Ops::gemv_fixed`].
    pub fixed_input: Option<FixedInput<'a>>,
    /// A second such scratch and exact sums of squares, for the input a
    /// fixed-point GEMV writes for the next while reading `fixed_input`
    /// ([`Ops::feeds_next`]).
    pub fed_input: Option<FedInput<'a>>,
    /// Scratch for a GEMM input as f16 pairs: with it, multi-token products of
    /// packed matrices run on cooperative matrices ([`Ops::gemm_coop`]).
    pub coop_input: Option<CoopInput<'a>>,
    /// The model's RMSNorm epsilon (for kernels that compute norm statistics).
    pub eps: f32,
}

/// Whether a model's decode step should compute norm statistics inside its
/// GEMVs: each GEMV workgroup then reads its input vector once more, which
/// costs less than the separate dispatch while vectors are short.
pub fn inline_norm_stats(c: &crate::model::Config) -> bool {
    c.hidden_size <= 2048 && c.intermediate_size <= 2048 * 6
}

fn words(values: &[u32]) -> Vec<u8> {
    bytemuck::cast_slice(values).to_vec()
}

impl Ops<'_> {
    fn uniform(&self, label: &str, values: &[u32]) -> wgpu::Buffer {
        self.ctx.buffer_init(label, &words(values), wgpu::BufferUsages::UNIFORM)
    }

    /// The pipeline of a GEMV or embedding over `m`: its dtype constants plus `extra`
    /// (the GEMV's team shape).
    async fn matrix_pipeline(
        &mut self,
        m: &GpuMatrix,
        ternary: Kernel,
        dense: Kernel,
        extra: &[(&'static str, u32)],
    ) -> Result<wgpu::ComputePipeline, GpuError> {
        let (kernel, mut constants) = match &m.storage {
            Storage::Packed { scale_dtype, group_size, .. } => {
                if group_size % 16 != 0 {
                    return Err(GpuError::Limits(format!(
                        "{}: group size {group_size} is not a multiple of 16, which the GPU kernels need",
                        m.name
                    )));
                }
                (ternary, vec![("GROUP_SIZE", *group_size as u32), ("SCALE_DTYPE", dtype_code(scale_dtype))])
            }
            Storage::Dense { dtype } => {
                if !m.cols.is_multiple_of(4) {
                    return Err(GpuError::Limits(format!(
                        "{}: {} columns; the GPU kernels need a multiple of 4",
                        m.name, m.cols
                    )));
                }
                (dense, vec![("WEIGHT_DTYPE", dtype_code(dtype))])
            }
        };
        constants.extend_from_slice(extra);
        self.kernels.pipeline(kernel, &constants).await
    }

    /// `y (+)= W · norms(x) (+ bias)` for every token of the step: a GEMV when
    /// decoding, a GEMM in prefill.
    pub async fn linear(
        &mut self,
        m: &GpuMatrix,
        x: &wgpu::Buffer,
        norms: InputNorms<'_>,
        bias: Option<&wgpu::Buffer>,
        residual: bool,
        y: Out<'_>,
    ) -> Result<Vec<Dispatch>, GpuError> {
        self.linear_with(m, x, norms, bias, residual, y, 0).await
    }

    /// Whether this step's down projection takes the MLP's gate and up values
    /// itself ([`Ops::linear_of_swiglu`]): decode steps of models small enough
    /// for [`inline_norm_stats`], where every GEMV workgroup can afford the SiLUs
    /// of the whole (short) input, and fixed-point GEMVs, whose input conversion
    /// applies them. That saves the SwiGLU dispatch.
    pub fn swiglu_in_linear(&self, m: &GpuMatrix) -> bool {
        self.prepares_own_input(m) || self.coop_gemm(m)
    }

    /// Whether one-token products with `m` compute their input's norm
    /// statistics themselves, so that [`Ops::norm_stats`] is not needed for them.
    pub fn computes_norm_stats(&self, m: &GpuMatrix) -> bool {
        self.prepares_own_input(m)
    }

    /// Whether a one-token product with `m` reads its raw input and prepares it
    /// itself (norms and SwiGLU): the f32 GEMV with inline statistics, or the
    /// fixed-point conversion.
    fn prepares_own_input(&self, m: &GpuMatrix) -> bool {
        self.tokens == 1 && (self.inline_norm_stats.is_some() || self.fixed_gemv(m))
    }

    /// Whether a multi-token product with `m` runs as [`Ops::gemm_coop`]: packed
    /// rows of whole steps of it (coop_step_columns).
    pub fn coop_gemm(&self, m: &GpuMatrix) -> bool {
        self.tokens > 1 && self.coop_input.is_some() && m.is_packed() && m.cols.is_multiple_of(self.coop_step_columns())
    }

    /// The columns a step of gemm_coop.wgsl takes: 32 in three products of
    /// f16 halves, 64 in one product of f16 values (`--gemm coop-f16`).
    fn coop_step_columns(&self) -> usize {
        if self.ctx.caps.coop_f16 {
            64
        } else {
            32
        }
    }

    /// Whether a one-token product with `m` runs as [`Ops::gemv_fixed`].
    pub fn fixed_gemv(&self, m: &GpuMatrix) -> bool {
        self.tokens == 1 && self.fixed_input.is_some() && m.is_packed() && m.cols.is_multiple_of(16)
    }

    /// `y (+)= W · (silu(gate) * up) (+ bias)`, with each token's row of `gate_up`
    /// holding its gate values, then its up values: [`Ops::swiglu`] followed by
    /// [`Ops::linear`] without norms, in one dispatch. Only where
    /// [`Ops::swiglu_in_linear`]. With a `feed`, the fixed-point GEMV also
    /// writes `y * feed.norm` as the next products' input, as
    /// [`Ops::linear_of_fixed`] does (where [`Ops::feeds_next`]).
    pub async fn linear_of_swiglu(
        &mut self,
        m: &GpuMatrix,
        gate_up: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        residual: bool,
        y: Out<'_>,
        feed: Option<Feed<'_>>,
    ) -> Result<Vec<Dispatch>, GpuError> {
        if !self.swiglu_in_linear(m) {
            return Err(GpuError::Limits(format!("{}: no product that applies SwiGLU itself for this matrix", m.name)));
        }
        let norms = InputNorms { stats: self.dummy, norm1: None, norm2: None };
        let Some(feed) = feed else {
            return self.linear_with(m, gate_up, norms, bias, residual, y, SWIGLU).await;
        };
        // The conversion applies SwiGLU, and the GEMV over it feeds the next.
        let Some(fixed) = self.fixed_input.filter(|_| self.fixed_gemv(m)) else {
            return Err(GpuError::Limits(format!("{}: no fixed-point GEMV for this matrix", m.name)));
        };
        let inputs = LinearInputs { x: gate_up, norms, bias, flags: SWIGLU };
        let mut out = vec![self.fixed_point_conversion(m, &inputs, fixed).await?];
        out.extend(self.linear_of_fixed(m, bias, residual, y, Some(feed)).await?);
        Ok(out)
    }

    /// [`Ops::linear`] with `input_flags` (SWIGLU) added to the kernel's flags.
    #[allow(clippy::too_many_arguments)]
    async fn linear_with(
        &mut self,
        m: &GpuMatrix,
        x: &wgpu::Buffer,
        norms: InputNorms<'_>,
        bias: Option<&wgpu::Buffer>,
        residual: bool,
        y: Out<'_>,
        input_flags: u32,
    ) -> Result<Vec<Dispatch>, GpuError> {
        if y.offset + m.rows > y.width {
            return Err(GpuError::Limits(format!(
                "{}: rows {}..{} do not fit an output of {}",
                m.name,
                y.offset,
                y.offset + m.rows,
                y.width
            )));
        }
        let flags = norms.norm1.map_or(0, |_| NORM1)
            | norms.norm2.map_or(0, |_| NORM2)
            | bias.map_or(0, |_| BIAS)
            | if residual { RESIDUAL } else { 0 }
            | input_flags;
        let inputs = LinearInputs { x, norms, bias, flags };
        if self.tokens == 1 {
            self.gemv(m, inputs, y).await
        } else {
            self.gemm(m, inputs, y).await
        }
    }

    /// The parameters of a GEMV over one row chunk of `m` (gemv.wgsl's and
    /// gemv_fixed.wgsl's `Params`; `exact_slot`: the latter's).
    fn gemv_params(
        &self,
        m: &GpuMatrix,
        chunk: &MatrixChunk,
        flags: u32,
        y_offset: usize,
        eps: f32,
        exact_slot: u32,
    ) -> wgpu::Buffer {
        let values = [chunk.rows, m.cols, chunk.first_row, flags as usize, y_offset, eps.to_bits() as usize];
        let values = values.map(|v| v as u32);
        self.uniform(&m.name, &[&values[..], &[exact_slot, 0]].concat())
    }

    /// The bindings every GEMV and GEMM dispatch takes for one row chunk.
    fn chunk_bindings<'b>(
        &'b self,
        chunk: &'b MatrixChunk,
        params: &'b wgpu::Buffer,
        inputs: &LinearInputs<'b>,
        y: &Out<'b>,
    ) -> Vec<(u32, &'b wgpu::Buffer)> {
        let mut bindings = vec![
            (0, params),
            (1, &chunk.weights),
            (3, inputs.x),
            (4, inputs.norms.stats),
            (5, inputs.norms.norm1.unwrap_or(self.dummy)),
            (6, inputs.norms.norm2.unwrap_or(self.dummy)),
            (7, inputs.bias.unwrap_or(self.dummy)),
            (8, y.buffer),
        ];
        if let Some(scales) = &chunk.scales {
            bindings.push((2, scales));
        }
        bindings
    }

    /// `y (+)= W · norms(x) (+ bias)` for one token, one dispatch per row chunk of `W`.
    async fn gemv(&mut self, m: &GpuMatrix, inputs: LinearInputs<'_>, y: Out<'_>) -> Result<Vec<Dispatch>, GpuError> {
        if let (Some(fixed), true) = (self.fixed_input, self.fixed_gemv(m)) {
            if converts_own_input(m, inputs.flags) {
                return self.gemv_staged(m, fixed, inputs, y).await;
            }
            return self.gemv_fixed(m, fixed, inputs, y).await;
        }
        let team = GemvTeams::for_matrix(m);
        let shape = [("LANES", team.lanes), ("ROWS_PER_TEAM", team.rows_per_team)];
        let wide = wide_gemv(m);
        let ternary = if wide { Kernel::GemvTernaryWide } else { Kernel::GemvTernary };
        let pipeline = self.matrix_pipeline(m, ternary, Kernel::GemvDense, &shape).await?;
        let normed = inputs.flags & (NORM1 | NORM2) != 0;
        let (flags, eps) = match self.inline_norm_stats {
            Some(eps) if normed => (inputs.flags | INLINE_STATS, eps),
            _ => (inputs.flags, 0.0),
        };
        let mut out = Vec::new();
        for chunk in &m.chunks {
            let params = self.gemv_params(m, chunk, flags, y.offset, eps, 0);
            let bindings = self.chunk_bindings(chunk, &params, &inputs, &y);
            let label = format!("gemv {} rows {}..", m.name, chunk.first_row);
            let workgroups = (chunk.rows as u32).div_ceil(team.rows_per_workgroup());
            out.push(Dispatch::new(self.ctx, label, pipeline.clone(), &bindings, grid(workgroups)));
        }
        Ok(out)
    }

    /// `x[t] = E[token[t]]` for the step's tokens: one dispatch per row chunk; the
    /// chunk holding a token writes it.
    pub async fn embed(
        &mut self,
        m: &GpuMatrix,
        token: &wgpu::Buffer,
        x: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let pipeline = self.matrix_pipeline(m, Kernel::EmbedTernary, Kernel::EmbedDense, &[]).await?;
        let threads = if m.is_packed() { m.cols / 16 } else { m.cols };
        let mut out = Vec::new();
        for chunk in &m.chunks {
            let params = self.uniform(&m.name, &[chunk.rows as u32, m.cols as u32, chunk.first_row as u32, 0]);
            let mut bindings = vec![(0, &params), (1, &chunk.weights), (3, token), (8, x), (9, self.step)];
            if let Some(scales) = &chunk.scales {
                bindings.push((2, scales));
            }
            let label = format!("embed {} rows {}..", m.name, chunk.first_row);
            out.push(Dispatch::new(
                self.ctx,
                label,
                pipeline.clone(),
                &bindings,
                [(threads as u32).div_ceil(64), self.tokens as u32, 1],
            ));
        }
        Ok(out)
    }

    /// `stats[t] = [1/rms(x[t]), 1/rms(x[t] * stats[t][0] * w)]` (the second only
    /// with `w`) for each token `t` of the step; `x` is `[tokens, n]`. Nothing
    /// when the one-token GEMVs compute it themselves (`inline_norm_stats`).
    pub async fn norm_stats(
        &mut self,
        x: &wgpu::Buffer,
        n: usize,
        w: Option<&wgpu::Buffer>,
        eps: f32,
        stats: &wgpu::Buffer,
    ) -> Result<Option<Dispatch>, GpuError> {
        if !n.is_multiple_of(4) {
            return Err(GpuError::Limits(format!("a norm over {n} values; the GPU kernels need a multiple of 4")));
        }
        if self.tokens == 1 && self.inline_norm_stats.is_some() {
            return Ok(None); // the GEMVs that read `stats` compute it themselves
        }
        let pipeline = self.kernels.pipeline(Kernel::NormStats, &[]).await?;
        let params = self.uniform("norm_stats", &[n as u32, w.map_or(0, |_| 1), eps.to_bits(), 0]);
        let bindings = [(0, &params), (1, x), (2, w.unwrap_or(self.dummy)), (3, stats), (4, self.step)];
        Ok(Some(Dispatch::new(self.ctx, "norm_stats", pipeline, &bindings, [self.tokens as u32, 1, 1])))
    }

    /// `out = silu(gate) * up` over `n` values per token, each token's row of
    /// `gate_up` holding its gate values, then its up values (every row of the
    /// graph's buffers; rows past the step's tokens hold unused values).
    pub async fn swiglu(&mut self, n: usize, gate_up: &wgpu::Buffer, out: &wgpu::Buffer) -> Result<Dispatch, GpuError> {
        let pipeline = self.kernels.pipeline(Kernel::Swiglu, &[]).await?;
        let total = n * self.tokens;
        let params = self.uniform("swiglu", &[n as u32, total as u32, 0, 0]);
        Ok(Dispatch::new(
            self.ctx,
            "swiglu",
            pipeline,
            &[(0, &params), (1, gate_up), (2, out)],
            grid((total as u32).div_ceil(64)),
        ))
    }
}

impl GpuMatrix {
    pub fn is_packed(&self) -> bool {
        matches!(self.storage, Storage::Packed { .. })
    }
}

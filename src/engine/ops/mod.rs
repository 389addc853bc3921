//! One builder per kernel: checks its arguments, writes the kernel's parameters
//! into a small uniform buffer and returns the dispatches to record. The order in
//! which they run is decided by `forward.rs`.
//!
//! A graph runs `Ops::tokens` tokens per step: one while decoding, a chunk of
//! the prompt in prefill. Activations are then `[tokens, n]`, and the builders
//! pick the batched kernels (a GEMM instead of a GEMV, causal attention over the
//! chunk); kernels skip the tokens past the step's count.

mod fixed;

pub use fixed::{
    converts_own_input, fixed_gemv_lanes, fixed_gemv_team, fixed_gemv_wanted, FedInput, Feed, FixedInput,
    LONG_ROW_MIN_WORDS,
};

use crate::gpu::kernels::{grid, Dispatch, Kernel, Kernels};
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

/// Workgroups of argmax's first pass (at most 256: one thread each in the second, argmax.wgsl).
const ARGMAX_PARTS: usize = 128;
const _: () = assert!(ARGMAX_PARTS <= 256);
/// Floats a logits buffer holds after the logits for [`Ops::argmax`]: each
/// first-pass workgroup's best value and index.
pub const ARGMAX_SCRATCH_FLOATS: usize = 2 * ARGMAX_PARTS;

/// Candidates sample.wgsl ranks in one workgroup (WINDOW), and how many of
/// them it keeps (TOP): the GPU samples with top-k up to [`SAMPLE_TOP`].
const SAMPLE_WINDOW: usize = 1024;
pub const SAMPLE_TOP: usize = 64;
/// sample.wgsl's flags.
const FROM_LOGITS: u32 = 1;
const DRAW: u32 = 2;

/// The passes of [`Ops::sample`] over `n` logits, each (entries in, where
/// they start, where its lists out start, workgroups): the first reads the
/// logits, each later one the lists of the one before, which follow them in
/// the candidates scratch; the last, one workgroup, draws.
fn sample_passes(n: usize) -> Vec<(usize, usize, usize, usize)> {
    let (mut passes, mut entries, mut in_at) = (Vec::new(), n, 0);
    loop {
        let lists = entries.div_ceil(SAMPLE_WINDOW).max(1);
        let out_at = if passes.is_empty() { 0 } else { in_at + entries };
        passes.push((entries, in_at, out_at, lists));
        if lists == 1 {
            return passes;
        }
        (entries, in_at) = (lists * SAMPLE_TOP, out_at);
    }
}

/// sample.wgsl's Settings for a step drawing with `p` and the random number
/// `random` in [0, 1), as the host writes them into the settings uniform.
pub fn sample_settings(p: &crate::sampling::SamplingParams, random: f32) -> [u32; 8] {
    [p.temperature.to_bits(), p.top_k as u32, p.top_p.to_bits(), p.min_p.to_bits(), random.to_bits(), 0, 0, 0]
}

/// Bytes of the candidates scratch [`Ops::sample`] needs for `n` logits:
/// the lists of every pass but the last.
pub fn sample_scratch_bytes(n: usize) -> u64 {
    let passes = sample_passes(n);
    let lists_end = passes[..passes.len() - 1].iter().map(|&(_, _, out_at, lists)| out_at + lists * SAMPLE_TOP).max();
    (lists_end.unwrap_or(0).max(1) * 8) as u64
}

/// Context positions per chunk of decode attention (`SPLIT` in
/// attention.wgsl): a workgroup takes one, or several past
/// [`attention_max_splits`] chunks. 32 rather than 64 doubles the workgroups
/// at long contexts: H100 tg128 after pp512 (A/B twice), 32B 118.8 -> 120.1
/// t/s, 7B 386.4 -> 389.5, 0.5B 830.9 -> 849.6; 16 was slower (32B 113.6).
pub const ATTENTION_CHUNK: usize = 32;

/// Workgroups decode attention aims at over all heads of a layer.
pub const ATTENTION_WORKGROUPS: usize = 1280;

/// Most workgroups decode attention gives a head (`p.splits` in
/// attention.wgsl): about [`ATTENTION_WORKGROUPS`] over all heads, at most
/// 48 and at least 16 a head, in multiples of 8; past that each takes
/// several chunks. Every workgroup counts itself, and the last of a head
/// merges the head's splits, so past some count more splits cost more than
/// they spread, and the best count follows the number of heads. H200 tg128
/// after pp2048, capped at 32 / 40 / 48 / 64 a head (BENCHMARKS.md, round
/// 17): 32B (40 heads) 137.8 / 135.6 / 135.6 / 133.8 t/s, 7B (28) 445.7 /
/// 461.2 / 459.5 / 447.5, 0.5B (14) 872.4 / - / 898 / 881. This rule
/// against 48 for every shape (round 18): 32B 135.6 -> 137.8, 7B 460.0 ->
/// 461.3. Shorter contexts than the cap's chunks never reach it.
pub fn attention_max_splits(heads: usize) -> usize {
    (ATTENTION_WORKGROUPS / heads.max(1) / 8 * 8).clamp(16, 48)
}

/// Workgroups each of `heads` heads' decode attention splits a context of
/// `ctx` positions into.
pub fn attention_splits(heads: usize, ctx: usize) -> usize {
    ctx.div_ceil(ATTENTION_CHUNK).min(attention_max_splits(heads))
}

/// Floats of attention scratch for `heads` heads over `ctx` positions: per split,
/// head_dim values and (max, sum) padded to a vec4 (attention.wgsl).
pub fn attention_partial_floats(heads: usize, head_dim: usize, ctx: usize) -> usize {
    heads * attention_splits(heads, ctx) * (head_dim + 4)
}

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

/// Tokens of one cooperative-matrix GEMM workgroup's tile (gemm_coop.wgsl).
const COOP_TILE_TOKENS: usize = 128;
/// Rows of one cooperative-matrix GEMM workgroup's tile (gemm_coop.wgsl).
const COOP_TILE_ROWS: u32 = 128;

/// A prefill GEMM's input as f16 pairs (f16_pairs.wgsl): hi, then lo values
/// of `[padded tokens, n]` each, and each token's power-of-two unscale factor.
#[derive(Clone, Copy)]
pub struct CoopInput<'a> {
    pub pairs: &'a wgpu::Buffer,
    /// `[tokens]` f32.
    pub unscale: &'a wgpu::Buffer,
}

impl CoopInput<'_> {
    /// Token rows the pairs hold for a graph of `tokens` tokens: whole tiles of
    /// gemm_coop.wgsl, which reads (and ignores) the rows past the step's tokens.
    pub fn padded_tokens(tokens: usize) -> usize {
        tokens.div_ceil(COOP_TILE_TOKENS) * COOP_TILE_TOKENS
    }

    /// Bytes of pairs for a graph of `tokens` tokens and inputs of up to `n` values.
    pub fn bytes(tokens: usize, n: usize) -> u64 {
        4 * (Self::padded_tokens(tokens) * n) as u64
    }

    /// Where the lo halves start (in f16 values) for a graph of `tokens`
    /// tokens and an input of `n` values: after all the hi halves.
    fn lo_offset(tokens: usize, n: usize) -> u32 {
        (Self::padded_tokens(tokens) * n) as u32
    }
}

/// The power of two E by which gemm_coop.wgsl multiplies a matrix's scales:
/// the largest then lies in [2^14, 2^15), inside f16's range (largest 65504)
/// with room for its low part. 0 where there is no finite nonzero scale.
pub fn coop_scale_exp(largest_scale: f32) -> i32 {
    if largest_scale > 0.0 && largest_scale.is_finite() {
        (14 - largest_scale.log2().floor() as i32).clamp(-126, 126)
    } else {
        0
    }
}

/// Whether a model's decode step should compute norm statistics inside its
/// GEMVs: each GEMV workgroup then reads its input vector once more, which
/// costs less than the separate dispatch while vectors are short.
pub fn inline_norm_stats(c: &crate::model::Config) -> bool {
    c.hidden_size <= 2048 && c.intermediate_size <= 2048 * 6
}

/// Rows of one GEMM workgroup's output tile (gemm.wgsl).
const GEMM_TILE_ROWS: u32 = 128;

/// Matrices with at least this many rows get GEMM tiles of 8 tokens per thread
/// instead of 4. Before split-K only the tallest matrices gained by them (on an
/// H100 the 32B shape's gate and up projections 20 %, 7B's 10 %); now that
/// split-K restores the parallelism the larger tiles cost, 4096 rows measured
/// best (BENCHMARKS.md).
pub const GEMM_TALL_ROWS: usize = 4096;

/// GEMM workgroups below which a matrix is split along its columns: about
/// eight per SM on a large GPU (an H100 has 132 SMs), so that no SM idles
/// through most of a pass. 1024 beat 512 and 256 on an H100 (BENCHMARKS.md).
pub const GEMM_MIN_WORKGROUPS: u32 = 1024;

/// Most K parts of a split GEMM, and the fewest 16-column tiles each takes.
const GEMM_MAX_K_PARTS: u32 = 8;
const GEMM_MIN_K_TILES: u32 = 32;

/// Floats of the scratch a prefill graph keeps for split GEMMs (32 MiB, or one
/// storage binding if that is less).
pub fn gemm_parts_floats(max_binding: u64) -> usize {
    ((32u64 << 20).min(max_binding) / 4) as usize
}

/// (K parts, 16-column tiles per part) for a GEMM of `workgroups` workgroups
/// over `tiles` column tiles, with room for `room` parts in the scratch.
pub fn gemm_k_parts(workgroups: u32, tiles: u32, room: u32) -> (u32, u32) {
    let wanted = GEMM_MIN_WORKGROUPS.div_ceil(workgroups.max(1));
    let parts = wanted.min(GEMM_MAX_K_PARTS).min(tiles / GEMM_MIN_K_TILES).min(room).max(1);
    let k_tiles = tiles.div_ceil(parts);
    (tiles.div_ceil(k_tiles), k_tiles)
}

/// Tokens per GEMM thread for `m` (gemm.wgsl's TOKENS_PER_THREAD).
pub fn gemm_tokens_per_thread(m: &GpuMatrix) -> u32 {
    if m.rows >= GEMM_TALL_ROWS {
        8
    } else {
        4
    }
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
    /// rows of whole 32-column steps.
    pub fn coop_gemm(&self, m: &GpuMatrix) -> bool {
        self.tokens > 1 && self.coop_input.is_some() && m.is_packed() && m.cols.is_multiple_of(32)
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

    /// The bindings every GEMV and GEMM dispatch takes for one row chunk, with
    /// the chunk's weights at binding `weights_at`.
    fn chunk_bindings<'b>(
        &'b self,
        chunk: &'b MatrixChunk,
        weights_at: u32,
        params: &'b wgpu::Buffer,
        inputs: &LinearInputs<'b>,
        y: &Out<'b>,
    ) -> Vec<(u32, &'b wgpu::Buffer)> {
        let mut bindings = vec![
            (0, params),
            (weights_at, &chunk.weights),
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
            let bindings = self.chunk_bindings(chunk, if wide { 9 } else { 1 }, &params, &inputs, &y);
            let label = format!("gemv {} rows {}..", m.name, chunk.first_row);
            let workgroups = (chunk.rows as u32).div_ceil(team.rows_per_workgroup());
            out.push(Dispatch::new(self.ctx, label, pipeline.clone(), &bindings, grid(workgroups)));
        }
        Ok(out)
    }

    /// The batched form of [`Ops::gemv`] (gemm.wgsl), one dispatch per row chunk of `W`.
    async fn gemm(&mut self, m: &GpuMatrix, inputs: LinearInputs<'_>, y: Out<'_>) -> Result<Vec<Dispatch>, GpuError> {
        if let (Some(coop), true) = (self.coop_input, self.coop_gemm(m)) {
            return self.gemm_coop(m, coop, inputs, y).await;
        }
        let tokens_per_thread = gemm_tokens_per_thread(m);
        let shape = [("TOKENS_PER_THREAD", tokens_per_thread)];
        let pipeline = self.matrix_pipeline(m, Kernel::GemmTernary, Kernel::GemmDense, &shape).await?;
        let token_tiles = (self.tokens as u32).div_ceil(16 * tokens_per_thread);
        let tiles = m.cols.div_ceil(16) as u32;
        let mut out = Vec::new();
        for chunk in &m.chunks {
            let row_tiles = (chunk.rows as u32).div_ceil(GEMM_TILE_ROWS);
            let part_stride = self.tokens * chunk.rows;
            let room = self.k_parts_room(part_stride);
            let (k_parts, k_tiles) = gemm_k_parts(row_tiles * token_tiles, tiles, room);
            let flags = inputs.flags | if k_parts > 1 { SPLIT_K } else { 0 };
            let params = self.uniform(
                &m.name,
                &[
                    chunk.rows as u32,
                    m.cols as u32,
                    chunk.first_row as u32,
                    flags,
                    y.width as u32,
                    y.offset as u32,
                    k_tiles,
                    part_stride as u32,
                ],
            );
            let mut bindings = self.chunk_bindings(chunk, 1, &params, &inputs, &y);
            bindings.push((9, self.step));
            bindings.push((10, self.gemm_parts.unwrap_or(self.dummy)));
            let label = format!("gemm {} rows {}..", m.name, chunk.first_row);
            out.push(Dispatch::new(self.ctx, label, pipeline.clone(), &bindings, [row_tiles, token_tiles, k_parts]));
            if k_parts > 1 {
                out.push(self.gemm_sum_parts(m, chunk, &params, inputs.bias, &y).await?);
            }
        }
        Ok(out)
    }

    /// Converts the step's `[tokens, n]` inputs into f16 pairs in the
    /// `coop_input` scratch (f16_pairs.wgsl): `x` with the fused `norms`, or
    /// with `swiglu` the SwiGLU of each token's gate and up values in `x`.
    pub async fn f16_pairs(
        &mut self,
        n: usize,
        x: &wgpu::Buffer,
        norms: &InputNorms<'_>,
        swiglu: bool,
    ) -> Result<Dispatch, GpuError> {
        let Some(coop) = self.coop_input else {
            return Err(GpuError::Limits("f16 pairs need their scratch (coop_input)".into()));
        };
        if coop.pairs.size() < CoopInput::bytes(self.tokens, n) || coop.unscale.size() < 4 * self.tokens as u64 {
            return Err(GpuError::Limits(format!("an input of {n} values: the f16 pair scratch is too small")));
        }
        let to_pairs = self.kernels.pipeline(Kernel::ToF16Pairs, &[]).await?;
        let flags =
            norms.norm1.map_or(0, |_| NORM1) | norms.norm2.map_or(0, |_| NORM2) | if swiglu { SWIGLU } else { 0 };
        let lo_offset = CoopInput::lo_offset(self.tokens, n);
        let params = self.uniform("to_f16_pairs", &[n as u32, flags, lo_offset, 0]);
        let bindings = [
            (0, &params),
            (1, self.step),
            (2, x),
            (3, norms.stats),
            (4, norms.norm1.unwrap_or(self.dummy)),
            (5, norms.norm2.unwrap_or(self.dummy)),
            (6, coop.pairs),
            (7, coop.unscale),
        ];
        Ok(Dispatch::new(self.ctx, "to f16 pairs", to_pairs, &bindings, [self.tokens as u32, 1, 1]))
    }

    /// How many K parts of `part_stride` floats the split-GEMM scratch holds (1
    /// without scratch: the GEMM is then never split).
    fn k_parts_room(&self, part_stride: usize) -> u32 {
        self.gemm_parts.map_or(1, |b| (b.size() / 4) as usize / part_stride) as u32
    }

    /// gemm.wgsl's second pass of a GEMM split along K, for one row chunk:
    /// adds the parts, bias and residual into `y` (`params`: the GEMM's).
    async fn gemm_sum_parts(
        &mut self,
        m: &GpuMatrix,
        chunk: &MatrixChunk,
        params: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        y: &Out<'_>,
    ) -> Result<Dispatch, GpuError> {
        let sum = self.kernels.pipeline(Kernel::GemmSumParts, &[]).await?;
        let parts = self.gemm_parts.expect("split only with scratch");
        let bindings = [(0, params), (7, bias.unwrap_or(self.dummy)), (8, y.buffer), (9, self.step), (10, parts)];
        let label = format!("gemm parts {} rows {}..", m.name, chunk.first_row);
        let floats = (self.tokens * chunk.rows) as u32;
        Ok(Dispatch::new(self.ctx, label, sum, &bindings, grid(floats.div_ceil(256))))
    }

    /// [`Ops::gemm`] of a packed matrix on cooperative matrices: one dispatch
    /// turns the (normalized, or SwiGLU'd) input into f16 pairs
    /// (f16_pairs.wgsl), then one per row chunk of `W` multiplies
    /// (gemm_coop.wgsl), each followed by the sum of its K parts where split.
    async fn gemm_coop(
        &mut self,
        m: &GpuMatrix,
        coop: CoopInput<'_>,
        inputs: LinearInputs<'_>,
        y: Out<'_>,
    ) -> Result<Vec<Dispatch>, GpuError> {
        // gemm_coop.wgsl runs without bounds checks (kernels.rs): what it
        // reads and writes must hold every index it takes.
        let f32s = |n: usize| 4 * n as u64;
        let small = coop.pairs.size() < CoopInput::bytes(self.tokens, m.cols)
            || coop.unscale.size() < f32s(self.tokens)
            || y.buffer.size() < f32s(self.tokens * y.width)
            || inputs.bias.is_some_and(|b| b.size() < f32s(m.rows));
        if small {
            let msg = format!("{}: a buffer of the tensor-core GEMM is too small for {} tokens", m.name, self.tokens);
            return Err(GpuError::Limits(msg));
        }
        let swiglu = inputs.flags & SWIGLU != 0;
        let mut out = vec![self.f16_pairs(m.cols, inputs.x, &inputs.norms, swiglu).await?];
        let lo_offset = CoopInput::lo_offset(self.tokens, m.cols);
        let pipeline = self.matrix_pipeline(m, Kernel::GemmTernaryCoop, Kernel::GemmDense, &[]).await?;
        let scale_exp = coop_scale_exp(m.largest_scale);
        let token_tiles = self.tokens.div_ceil(COOP_TILE_TOKENS) as u32;
        let words = (m.cols / 16) as u32;
        for chunk in &m.chunks {
            let row_tiles = (chunk.rows as u32).div_ceil(COOP_TILE_ROWS);
            let part_stride = self.tokens * chunk.rows;
            let room = self.k_parts_room(part_stride);
            // Each step of the kernel takes two words of a row, so parts hold whole pairs.
            let (_, k_words) = gemm_k_parts(row_tiles * token_tiles, words, room);
            let k_words = k_words.next_multiple_of(2);
            let k_parts = words.div_ceil(k_words);
            let flags = (inputs.flags & (BIAS | RESIDUAL)) | if k_parts > 1 { SPLIT_K } else { 0 };
            let values = [
                chunk.rows as u32,
                m.cols as u32,
                chunk.first_row as u32,
                flags,
                y.width as u32,
                y.offset as u32,
                k_words,
                part_stride as u32,
                lo_offset,
                scale_exp as u32,
                0,
                0,
            ];
            let params = self.uniform(&m.name, &values);
            let mut bindings = vec![
                (0, &params),
                (1, &chunk.weights),
                (3, coop.pairs),
                (4, coop.unscale),
                (7, inputs.bias.unwrap_or(self.dummy)),
                (8, y.buffer),
                (9, self.step),
                (10, self.gemm_parts.unwrap_or(self.dummy)),
            ];
            if let Some(scales) = &chunk.scales {
                bindings.push((2, scales));
            }
            let label = format!("gemm coop {} rows {}..", m.name, chunk.first_row);
            out.push(Dispatch::new(self.ctx, label, pipeline.clone(), &bindings, [row_tiles, token_tiles, k_parts]));
            if k_parts > 1 {
                out.push(self.gemm_sum_parts(m, chunk, &params, inputs.bias, &y).await?);
            }
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

    /// RoPE on q and k, and the append of k and v to the cache at the step's
    /// positions; `qkv` holds each token's q, k and v one after another.
    pub async fn rope(
        &mut self,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        qkv: &wgpu::Buffer,
        rope_table: &wgpu::Buffer,
        cache: (&wgpu::Buffer, &wgpu::Buffer),
    ) -> Result<Dispatch, GpuError> {
        let pipeline = self.kernels.pipeline(Kernel::Rope, &[]).await?;
        let params = self.uniform("rope", &[heads as u32, kv_heads as u32, head_dim as u32, 0]);
        let bindings = [(0, &params), (1, self.step), (2, qkv), (5, rope_table), (6, cache.0), (7, cache.1)];
        let threads = ((heads + kv_heads) * head_dim / 2) as u32;
        Ok(Dispatch::new(self.ctx, "rope", pipeline, &bindings, [threads.div_ceil(64), self.tokens as u32, 1]))
    }

    /// RoPE on the step's q and k, k and v appended to the cache, and causal
    /// attention of the step's queries over it (rope.wgsl, attention.wgsl).
    /// Decoding splits the context in [`ATTENTION_CHUNK`]-position chunks, at
    /// most [`attention_max_splits`] workgroups a head, which also do RoPE and
    /// the append; the last workgroup of each head to finish merges theirs: one
    /// dispatch. Prefill runs RoPE and the append, then one workgroup per head
    /// and token: two dispatches, no scratch (`partials` unused). With
    /// `fixed_out` (decoding, where [`Ops::attention_feeds_fixed`]) the merge
    /// also leaves the output in the fixed-point input scratch.
    #[allow(clippy::too_many_arguments)]
    pub async fn attention(
        &mut self,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        ctx_len: usize,
        qkv: &wgpu::Buffer,
        rope_table: &wgpu::Buffer,
        cache: (&wgpu::Buffer, &wgpu::Buffer),
        partials: &wgpu::Buffer,
        out: &wgpu::Buffer,
        fixed_out: bool,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let scale = 1.0 / (head_dim as f32).sqrt();
        let fixed = match (fixed_out, self.fixed_input) {
            (false, _) => None,
            (true, Some(fixed)) if self.tokens == 1 && head_dim.is_multiple_of(16) => Some(fixed),
            _ => return Err(GpuError::Limits("attention: no fixed-point output for this step or head size".into())),
        };
        let splits = attention_splits(heads, ctx_len) as u32;
        // q is the first part of each token's q, k and v.
        let q_stride = ((heads + 2 * kv_heads) * head_dim / 4) as u32;
        let params = self.uniform(
            "attention",
            &[heads as u32, kv_heads as u32, head_dim as u32, ctx_len as u32, scale.to_bits(), splits, q_stride, 0],
        );
        if self.tokens > 1 {
            let rope = self.rope(heads, kv_heads, head_dim, qkv, rope_table, cache).await?;
            let causal = self.kernels.pipeline(Kernel::AttentionCausal, &[]).await?;
            let bindings = [(0, &params), (1, self.step), (2, qkv), (3, cache.0), (4, cache.1), (6, out)];
            let grid = [heads as u32, self.tokens as u32, 1];
            return Ok(vec![rope, Dispatch::new(self.ctx, "attention causal", causal, &bindings, grid)]);
        }
        let pipeline = match fixed {
            Some(fixed) => self.kernels.pipeline(Kernel::AttentionDecodeFixed, &[("DIGITS", fixed.digits)]).await?,
            None => self.kernels.pipeline(Kernel::AttentionDecode, &[]).await?,
        };
        // A count per head of its splits done, zero between steps (wgpu
        // zeroes new buffers; the last workgroup of each head resets its own).
        let split_counts = self.ctx.buffer("attention split counts", (heads * 4) as u64, wgpu::BufferUsages::STORAGE);
        let mut bindings = vec![
            (0, &params),
            (1, self.step),
            (2, qkv),
            (3, cache.0),
            (4, cache.1),
            (5, partials),
            (6, out),
            (7, rope_table),
            (10, &split_counts),
        ];
        // Each entry point binds only what it uses.
        if let Some(fixed) = fixed {
            bindings.extend([(8, fixed.planes), (9, fixed.info)]);
        }
        Ok(vec![Dispatch::new(self.ctx, "attention", pipeline, &bindings, [heads as u32, splits, 1])
            .follows_position(ATTENTION_CHUNK as u32)])
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

    /// `token = argmax(logits)` over the first `n` floats of `logits`, which
    /// needs [`ARGMAX_SCRATCH_FLOATS`] more after them (argmax.wgsl): two dispatches.
    pub async fn argmax(
        &mut self,
        n: usize,
        logits: &wgpu::Buffer,
        token: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>, GpuError> {
        if logits.size() < ((n + ARGMAX_SCRATCH_FLOATS) * 4) as u64 {
            return Err(GpuError::Limits(format!(
                "argmax over {n} logits needs a buffer of {} floats (the logits, then its scratch)",
                n + ARGMAX_SCRATCH_FLOATS
            )));
        }
        let parts = self.kernels.pipeline(Kernel::ArgmaxParts, &[]).await?;
        let finish = self.kernels.pipeline(Kernel::Argmax, &[]).await?;
        let params = self.uniform("argmax", &[n as u32, ARGMAX_PARTS as u32, 0, 0]);
        Ok(vec![
            Dispatch::new(self.ctx, "argmax parts", parts, &[(0, &params), (1, logits)], [ARGMAX_PARTS as u32, 1, 1]),
            Dispatch::new(self.ctx, "argmax", finish, &[(0, &params), (1, logits), (2, token)], [1, 1, 1]),
        ])
    }

    /// `token` = a token drawn from the first `n` floats of `logits` with
    /// the top-k settings the host writes into `settings` before each step
    /// (sample.wgsl), ranking in `candidates` ([`sample_scratch_bytes`]):
    /// a pass per sixteenfold cut of the candidates, the last one drawing.
    /// The settings' top-k must be 1 to [`SAMPLE_TOP`] and below `n`, as
    /// `Engine::samples_on_gpu` checks: the host sampler draws among all
    /// tokens in another order when it is not.
    pub async fn sample(
        &mut self,
        n: usize,
        logits: &wgpu::Buffer,
        candidates: &wgpu::Buffer,
        settings: &wgpu::Buffer,
        token: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>, GpuError> {
        if candidates.size() < sample_scratch_bytes(n) {
            return Err(GpuError::Limits(format!(
                "sampling {n} logits needs {} bytes of candidates scratch",
                sample_scratch_bytes(n)
            )));
        }
        let pipeline = self.kernels.pipeline(Kernel::TopCandidates, &[]).await?;
        let passes = sample_passes(n);
        let last = passes.len() - 1;
        let mut dispatches = Vec::new();
        for (i, (entries, in_at, out_at, lists)) in passes.into_iter().enumerate() {
            let flags = if i == 0 { FROM_LOGITS } else { 0 } | if i == last { DRAW } else { 0 };
            let params = self.uniform("top candidates", &[entries as u32, in_at as u32, out_at as u32, flags]);
            let buffers = [(0, &params), (1, logits), (2, candidates), (3, token), (4, settings)];
            let label = if i == last { "sample draw" } else { "top candidates" };
            dispatches.push(Dispatch::new(self.ctx, label, pipeline.clone(), &buffers, [lists as u32, 1, 1]));
        }
        Ok(dispatches)
    }
}

impl GpuMatrix {
    pub fn is_packed(&self) -> bool {
        matches!(self.storage, Storage::Packed { .. })
    }
}

//! Prefill's builders: the tiled ternary GEMM (gemm.wgsl), its tensor-core
//! form over f16 pairs (f16_pairs.wgsl, gemm_coop.wgsl), and their split-K
//! parts (summed by gemm.wgsl's sum pass).

use super::*;

/// Tokens of one cooperative-matrix GEMM workgroup's tile (gemm_coop.wgsl).
const COOP_TILE_TOKENS: usize = 128;
/// Rows of one cooperative-matrix GEMM workgroup's tile (gemm_coop.wgsl).
const COOP_TILE_ROWS: u32 = 128;

/// A prefill GEMM's input as f16 pairs (f16_pairs.wgsl): hi, then lo values
/// of `[padded tokens, n]` each (hi alone with `--gemm coop-f16`), and each
/// token's power-of-two unscale factor.
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

    /// Bytes of pairs for a graph of `tokens` tokens and inputs of up to `n`
    /// values; `f16_only`: hi values alone (`--gemm coop-f16`).
    pub fn bytes(tokens: usize, n: usize, f16_only: bool) -> u64 {
        let halves = if f16_only { 1 } else { 2 };
        2 * halves * (Self::padded_tokens(tokens) * n) as u64
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

impl Ops<'_> {
    /// The batched form of [`Ops::gemv`] (gemm.wgsl), one dispatch per row chunk of `W`.
    pub(super) async fn gemm(
        &mut self,
        m: &GpuMatrix,
        inputs: LinearInputs<'_>,
        y: Out<'_>,
    ) -> Result<Vec<Dispatch>, GpuError> {
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
            let mut bindings = self.chunk_bindings(chunk, &params, &inputs, &y);
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
        if coop.pairs.size() < CoopInput::bytes(self.tokens, n, self.ctx.caps.coop_f16)
            || coop.unscale.size() < 4 * self.tokens as u64
        {
            return Err(GpuError::Limits(format!("an input of {n} values: the f16 pair scratch is too small")));
        }
        let f16_products = u32::from(self.ctx.caps.coop_f16);
        let to_pairs = self.kernels.pipeline(Kernel::ToF16Pairs, &[("F16_PRODUCTS", f16_products)]).await?;
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
        let small = coop.pairs.size() < CoopInput::bytes(self.tokens, m.cols, self.ctx.caps.coop_f16)
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
        let kernel = if self.ctx.caps.coop_f16 { Kernel::GemmTernaryCoopF16 } else { Kernel::GemmTernaryCoop };
        let pipeline = self.matrix_pipeline(m, kernel, Kernel::GemmDense, &[]).await?;
        let scale_exp = coop_scale_exp(m.largest_scale);
        let token_tiles = self.tokens.div_ceil(COOP_TILE_TOKENS) as u32;
        let words = (m.cols / 16) as u32;
        let step_words = (self.coop_step_columns() / 16) as u32;
        for chunk in &m.chunks {
            let row_tiles = (chunk.rows as u32).div_ceil(COOP_TILE_ROWS);
            let part_stride = self.tokens * chunk.rows;
            let room = self.k_parts_room(part_stride);
            // Each step of the kernel takes a few words of a row, so parts hold whole steps.
            let (_, k_words) = gemm_k_parts(row_tiles * token_tiles, words, room);
            let k_words = k_words.next_multiple_of(step_words);
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
}

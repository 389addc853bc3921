//! Decode and prefill attention's builders (attention.wgsl, rope.wgsl) and
//! how decode attention splits a context over workgroups.

use super::*;

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

impl Ops<'_> {
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
}

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

/// Checks that attention.wgsl takes heads of `head_dim` values: quads of
/// them, at most 64, since it indexes its workgroup arrays of a head's quads
/// unchecked (kernels.rs' UNCHECKED_INDICES).
pub fn check_attention_head_dim(head_dim: usize) -> Result<(), GpuError> {
    if head_dim == 0 || head_dim > 256 || !head_dim.is_multiple_of(4) {
        return Err(GpuError::Limits(format!(
            "head dimension {head_dim} is not supported: the attention kernel needs a multiple of 4, at most 256"
        )));
    }
    Ok(())
}

/// Floats of attention scratch for `heads` heads over `ctx` positions: per split,
/// head_dim values and (max, sum) padded to a vec4 (attention.wgsl).
pub fn attention_partial_floats(heads: usize, head_dim: usize, ctx: usize) -> usize {
    heads * attention_splits(heads, ctx) * (head_dim + 4)
}

/// What the KV cache stores its values as (`--kv-cache`): f32, as the
/// reference computes, or f16 for half the cache's memory and of what
/// attention reads (attention.wgsl's KV_HALF). Attention computes in f32
/// either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KvDtype {
    #[default]
    F32,
    F16,
}

impl KvDtype {
    /// Bytes a value.
    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }

    /// The name `--kv-cache` takes and reports.
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
        }
    }

    /// Checks that heads of `head_dim` values fit this format: quads of
    /// values (attention.wgsl), for f16 in pairs of quads.
    pub fn check_head_dim(self, head_dim: usize) -> Result<(), GpuError> {
        let multiple = 16 / self.bytes();
        if head_dim.is_multiple_of(multiple) {
            return Ok(());
        }
        Err(GpuError::Limits(format!(
            "a KV cache of {} values needs head_dim to be a multiple of {multiple}; this model's is {head_dim}{}",
            self.name(),
            if self == KvDtype::F16 { " (use --kv-cache f32)" } else { "" }
        )))
    }

    /// attention.wgsl's and rope.wgsl's override constants for this format.
    fn constants(self) -> [(&'static str, u32); 1] {
        [("KV_HALF", u32::from(self == KvDtype::F16))]
    }
}

/// A layer's KV cache, `[ctx, kv_heads, head_dim]` each, and what it stores
/// its values as.
#[derive(Clone, Copy)]
pub struct KvCache<'a> {
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    pub dtype: KvDtype,
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
        cache: KvCache<'_>,
    ) -> Result<Dispatch, GpuError> {
        cache.dtype.check_head_dim(head_dim)?;
        let pipeline = self.kernels.pipeline(Kernel::Rope, &cache.dtype.constants()).await?;
        let params = self.uniform("rope", &[heads as u32, kv_heads as u32, head_dim as u32, 0]);
        let bindings = [(0, &params), (1, self.step), (2, qkv), (5, rope_table), (6, cache.k), (7, cache.v)];
        // Each thread rotates two pairs.
        let threads = ((heads + kv_heads) * head_dim / 4) as u32;
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
        cache: KvCache<'_>,
        partials: &wgpu::Buffer,
        out: &wgpu::Buffer,
        fixed_out: bool,
    ) -> Result<Vec<Dispatch>, GpuError> {
        check_attention_head_dim(head_dim)?;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let fixed = match (fixed_out, self.fixed_input) {
            (false, _) => None,
            (true, Some(fixed))
                if self.tokens == 1 && head_dim.is_multiple_of(16) && (1..=3).contains(&fixed.digits) =>
            {
                Some(fixed)
            }
            _ => return Err(GpuError::Limits("attention: no fixed-point output for this step or head size".into())),
        };
        let splits = attention_splits(heads, ctx_len) as u32;
        // q is the first part of each token's q, k and v.
        let q_stride = ((heads + 2 * kv_heads) * head_dim / 4) as u32;
        let params =
            self.uniform("attention", &[heads as u32, kv_heads as u32, scale.to_bits(), splits, q_stride, 0, 0, 0]);
        // The pipelines are built for the cache's format and the head size.
        let [kv_half] = cache.dtype.constants();
        let head = ("HEAD_DIM", head_dim as u32);
        if self.tokens > 1 {
            let rope = self.rope(heads, kv_heads, head_dim, qkv, rope_table, cache).await?;
            let causal = self.kernels.pipeline(Kernel::AttentionCausal, &[kv_half, head]).await?;
            let bindings = [(0, &params), (1, self.step), (2, qkv), (3, cache.k), (4, cache.v), (6, out)];
            let grid = [heads as u32, self.tokens as u32, 1];
            return Ok(vec![rope, Dispatch::new(self.ctx, "attention causal", causal, &bindings, grid)]);
        }
        let pipeline = match fixed {
            Some(fixed) => {
                self.kernels.pipeline(Kernel::AttentionDecodeFixed, &[("DIGITS", fixed.digits), kv_half, head]).await?
            }
            None => self.kernels.pipeline(Kernel::AttentionDecode, &[kv_half, head]).await?,
        };
        // A count per head of its splits done, zero between steps (wgpu
        // zeroes new buffers; the last workgroup of each head resets its own).
        let split_counts = self.ctx.buffer("attention split counts", (heads * 4) as u64, wgpu::BufferUsages::STORAGE);
        let mut bindings = vec![
            (0, &params),
            (1, self.step),
            (2, qkv),
            (3, cache.k),
            (4, cache.v),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_f16_cache_needs_heads_of_whole_pairs_of_quads() {
        assert!(KvDtype::F32.check_head_dim(12).is_ok() && KvDtype::F16.check_head_dim(64).is_ok());
        let err = KvDtype::F16.check_head_dim(12).unwrap_err().to_string();
        assert!(err.contains("multiple of 8") && err.contains("is 12") && err.contains("--kv-cache f32"), "{err}");
    }
}

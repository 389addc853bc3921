//! The builders that pick the next token on the GPU: argmax (argmax.wgsl)
//! and top-k sampling (sample.wgsl), and the scratch they need.

use super::*;

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

impl Ops<'_> {
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
        if logits.size() < (n * 4) as u64 {
            return Err(GpuError::Limits(format!("sampling {n} logits needs a buffer of {n} floats")));
        }
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

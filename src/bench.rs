//! Measuring prompt processing and generation speed, in the spirit of llama-bench:
//! a warm-up, then `repetitions` runs of a `prompt_tokens` prompt followed by
//! `gen_tokens` greedy (or sampled) tokens.

use std::time::Instant;

use crate::backend::{Backend, RunError};
use crate::rng::Rng;
use crate::sampling::Sampler;

/// One repetition's timings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunTimes {
    pub prefill_s: f64,
    pub decode_s: f64,
}

/// Runs the prompt through (positions `0..p`) then decodes `n` tokens after
/// it: greedy, the argmax taken on the GPU, or with `sampler` as chat
/// samples (Backend::decode_sampled).
pub fn run_once(
    backend: &mut dyn Backend,
    p: usize,
    n: usize,
    seed: u64,
    sampler: Option<&mut Sampler>,
) -> Result<RunTimes, RunError> {
    let mut rng = Rng::new(seed);
    let vocab = backend.vocab_size() as u64;
    let prompt: Vec<u32> = (0..p).map(|_| (rng.next_u64() % vocab) as u32).collect();
    let started = Instant::now();
    let next = backend.prefill_greedy(&prompt, 0)?;
    let prefill_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    if n > 0 {
        match sampler {
            None => backend.decode_greedy(next, p, n)?,
            Some(sampler) => {
                let mut history = prompt;
                history.push(next);
                backend.decode_sampled(next, p, n, sampler, &history)?
            }
        };
    }
    Ok(RunTimes { prefill_s, decode_s: started.elapsed().as_secs_f64() })
}

/// Mean and standard deviation of `values`.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

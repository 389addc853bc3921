//! What the CPU reference and the GPU engine have in common: run one token at a
//! position, get the next token's logits (or just its argmax). Scoring and
//! generation are written once on top of it.

use crate::model::ModelError;
use crate::sampling::{argmax, Sampler};

/// Why a forward step could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
    #[error("token id {id} is out of range: the vocabulary has {vocab} tokens (ids 0..{vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error(
        "position {pos} is past the context of {ctx} tokens; shorten the prompt or the generation, or raise --ctx"
    )]
    ContextFull { pos: usize, ctx: usize },
}

pub trait Backend {
    fn vocab_size(&self) -> usize;
    fn context_len(&self) -> usize;

    /// Runs `token` at position `pos` (positions arrive in order from 0) and
    /// returns the logits of the next token.
    fn forward(&mut self, token: u32, pos: usize) -> Result<&[f32], RunError>;

    /// Like [`Backend::forward`] but returns only the most likely next token
    /// (the GPU reads back 4 bytes instead of the logits).
    fn forward_greedy(&mut self, token: u32, pos: usize) -> Result<u32, RunError> {
        Ok(argmax(self.forward(token, pos)?))
    }
}

/// Logits of every position of `ids`, row-major `[ids.len(), vocab]`.
pub fn score(backend: &mut dyn Backend, ids: &[u32]) -> Result<Vec<f32>, RunError> {
    let mut logits = Vec::with_capacity(ids.len() * backend.vocab_size());
    for (pos, &id) in ids.iter().enumerate() {
        logits.extend_from_slice(backend.forward(id, pos)?);
    }
    Ok(logits)
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    MaxTokens,
    EndOfText,
    Stopped,
}

/// Feeds `prompt` at positions from `start_pos` on (earlier positions are already
/// in the KV cache), then samples up to `max_tokens` tokens, calling `on_token`
/// with each (returning `false` from it stops). Ends after an id in `stop_ids`,
/// which is included in the output.
pub fn generate(
    backend: &mut dyn Backend,
    prompt: &[u32],
    start_pos: usize,
    max_tokens: usize,
    stop_ids: &[u32],
    sampler: &mut Sampler,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<(Vec<u32>, StopReason), RunError> {
    let greedy = sampler.is_greedy();
    let mut history = prompt.to_vec();
    let mut generated = Vec::new();
    let mut next = None;
    for (i, &id) in prompt.iter().enumerate() {
        let (pos, last) = (start_pos + i, i + 1 == prompt.len());
        if last && greedy {
            next = Some(backend.forward_greedy(id, pos)?);
        } else if last {
            next = Some(sampler.sample(backend.forward(id, pos)?, &history));
        } else {
            backend.forward(id, pos)?;
        }
    }
    let Some(mut next) = next else { return Ok((generated, StopReason::MaxTokens)) };
    loop {
        generated.push(next);
        history.push(next);
        if !on_token(next) {
            return Ok((generated, StopReason::Stopped));
        }
        if stop_ids.contains(&next) {
            return Ok((generated, StopReason::EndOfText));
        }
        if generated.len() >= max_tokens {
            return Ok((generated, StopReason::MaxTokens));
        }
        let pos = start_pos + history.len() - 1;
        next = if greedy {
            backend.forward_greedy(next, pos)?
        } else {
            let logits = backend.forward(next, pos)?;
            sampler.sample(logits, &history)
        };
    }
}

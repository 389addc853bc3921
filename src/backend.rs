//! What the CPU reference and the GPU engine have in common: run one token at a
//! position, get the next token's logits (or just the token chosen from them).
//! Scoring and generation are written once on top of it.

use web_time::{Duration, Instant};

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
    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,
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

    /// Runs `tokens` at positions from `start_pos` on, only to fill the KV cache
    /// (the GPU runs them in batched chunks and reads nothing back).
    fn prefill(&mut self, tokens: &[u32], start_pos: usize) -> Result<(), RunError> {
        for (i, &id) in tokens.iter().enumerate() {
            self.forward(id, start_pos + i)?;
        }
        Ok(())
    }

    /// Runs `prompt` at positions from `start_pos` and returns the most likely
    /// next token (the GPU queues the whole prompt and waits once).
    fn prefill_greedy(&mut self, prompt: &[u32], start_pos: usize) -> Result<u32, RunError> {
        let (last, rest) = prompt.split_last().ok_or(RunError::EmptyPrompt)?;
        self.prefill(rest, start_pos)?;
        self.forward_greedy(*last, start_pos + rest.len())
    }

    /// Feeds `last` at `pos` and greedily decodes `n` tokens, each fed back in
    /// (the GPU keeps them on the device and reads all `n` at the end).
    fn decode_greedy(&mut self, last: u32, pos: usize, n: usize) -> Result<Vec<u32>, RunError> {
        let mut ids = Vec::with_capacity(n);
        let mut token = last;
        for i in 0..n {
            token = self.forward_greedy(token, pos + i)?;
            ids.push(token);
        }
        Ok(ids)
    }

    /// Feeds `last` at `pos` and samples `n` tokens with `sampler`, each fed
    /// back in; `history` is every token up to `last` (for a repetition
    /// penalty). The GPU keeps the tokens on the device where it can sample
    /// alone, and reads all `n` at the end.
    fn decode_sampled(
        &mut self,
        last: u32,
        pos: usize,
        n: usize,
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<Vec<u32>, RunError> {
        let mut history = history.to_vec();
        let mut token = last;
        for i in 0..n {
            token = sampler.sample(self.forward(token, pos + i)?, &history);
            history.push(token);
        }
        Ok(history.split_off(history.len() - n))
    }
}

/// The most tokens decoded per GPU round trip (greedy, or sampled where the
/// GPU samples alone): at most this many minus one are computed past an
/// end-of-text token or a Stop.
pub const DECODE_CHUNK: usize = 8;

/// How long a round trip of [`generate`] aims to take: it decodes as many
/// tokens as fit, up to its chunk, so that a fast GPU queues several steps a
/// round trip (one a round trip left a 0.5B window at 810 tokens/s against
/// 925 on an H200) while the text still streams about 25 times a second and
/// Stop takes effect within about as long.
pub const ROUND_TRIP: Duration = Duration::from_millis(40);

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

impl StopReason {
    /// How a reply's summary line notes the end: nothing for a natural end.
    pub fn note(self) -> &'static str {
        match self {
            StopReason::Stopped => " (stopped)",
            StopReason::MaxTokens => " (max tokens)",
            StopReason::EndOfText => "",
        }
    }
}

/// Adds a generated token to `generated` and hands it to `on_token`; says why
/// generation ends with it, if it does. Shared by every generation loop.
pub fn take_token(
    next: u32,
    generated: &mut Vec<u32>,
    max_tokens: usize,
    stop_ids: &[u32],
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Option<StopReason> {
    generated.push(next);
    if !on_token(next) {
        Some(StopReason::Stopped)
    } else if stop_ids.contains(&next) {
        Some(StopReason::EndOfText)
    } else if generated.len() >= max_tokens {
        Some(StopReason::MaxTokens)
    } else {
        None
    }
}

/// Sizes generation's round trips: each decodes the tokens that take about
/// [`ROUND_TRIP`] at the speed of the one before, from one up to a most.
pub struct RoundTrips {
    most: usize,
    next: usize,
    started: Instant,
}

impl RoundTrips {
    /// Round trips of at most `most` tokens, the first of one.
    pub fn new(most: usize) -> Self {
        RoundTrips { most: most.max(1), next: 1, started: Instant::now() }
    }

    /// How many tokens the next round trip decodes, `left` at most; its clock starts.
    pub fn start(&mut self, left: usize) -> usize {
        self.started = Instant::now();
        self.next.min(self.most).min(left)
    }

    /// The round trip started last decoded `n` tokens.
    pub fn end(&mut self, n: usize) {
        let per_token = self.started.elapsed().as_secs_f64() / n.max(1) as f64;
        self.next = ((ROUND_TRIP.as_secs_f64() / per_token.max(1e-9)) as usize).max(1);
    }
}

/// Feeds `prompt` at positions from `start_pos` on (earlier positions are already
/// in the KV cache), then samples up to `max_tokens` tokens, calling `on_token`
/// with each (returning `false` from it stops). Ends after an id in `stop_ids`,
/// which is included in the output. Each round trip decodes the tokens that
/// take about [`ROUND_TRIP`] at the speed of the one before, at most
/// `decode_chunk` (see [`DECODE_CHUNK`]).
#[allow(clippy::too_many_arguments)]
pub fn generate(
    backend: &mut dyn Backend,
    prompt: &[u32],
    start_pos: usize,
    max_tokens: usize,
    stop_ids: &[u32],
    sampler: &mut Sampler,
    decode_chunk: usize,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<(Vec<u32>, StopReason), RunError> {
    let mut history = prompt.to_vec();
    let mut generated = Vec::new();
    if prompt.is_empty() || max_tokens == 0 {
        return Ok((generated, StopReason::MaxTokens));
    }
    // Position of the next token to feed.
    let mut pos = start_pos + prompt.len();
    let mut pending: std::collections::VecDeque<u32> = if sampler.is_greedy() {
        [backend.prefill_greedy(prompt, start_pos)?].into()
    } else {
        backend.prefill(&prompt[..prompt.len() - 1], start_pos)?;
        backend.decode_sampled(prompt[prompt.len() - 1], pos - 1, 1, sampler, &history)?.into()
    };
    let mut round_trips = RoundTrips::new(decode_chunk);
    loop {
        let next = pending.pop_front().expect("refilled below");
        history.push(next);
        if let Some(reason) = take_token(next, &mut generated, max_tokens, stop_ids, on_token) {
            return Ok((generated, reason));
        }
        if pending.is_empty() {
            let n = round_trips.start(max_tokens - generated.len());
            if sampler.is_greedy() {
                pending.extend(backend.decode_greedy(next, pos, n)?);
            } else {
                pending.extend(backend.decode_sampled(next, pos, n, sampler, &history)?);
            }
            round_trips.end(n);
            pos += pending.len();
        }
    }
}

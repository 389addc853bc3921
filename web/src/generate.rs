//! Generation in the browser: the same steps as `tritium::backend::generate`,
//! awaiting the engine instead of blocking (the browser's event loop must keep
//! running while the GPU works).

use tritium::backend::{take_token, RoundTrips, RunError, StopReason, DECODE_CHUNK};
use tritium::engine::Engine;
use tritium::sampling::Sampler;

/// Feeds `prompt` from position `start_pos`, then samples up to `max_tokens`
/// tokens, calling `on_token` with each (`false` stops). Ends after a stop id,
/// which is included.
pub async fn generate(
    engine: &mut Engine,
    prompt: &[u32],
    start_pos: usize,
    max_tokens: usize,
    stop_ids: &[u32],
    sampler: &mut Sampler,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<(Vec<u32>, StopReason), RunError> {
    let mut history = prompt.to_vec();
    let mut generated = Vec::new();
    let Some((&last, rest)) = prompt.split_last().filter(|_| max_tokens > 0) else {
        return Ok((generated, StopReason::MaxTokens));
    };
    let mut pos = start_pos + prompt.len();
    let mut pending = if sampler.is_greedy() {
        vec![engine.prefill_greedy(prompt, start_pos).await?]
    } else {
        engine.prefill(rest, start_pos)?;
        engine.decode_sampled(last, pos - 1, 1, sampler, &history).await?
    };
    let mut round_trips = RoundTrips::new(DECODE_CHUNK);
    loop {
        for next in std::mem::take(&mut pending) {
            history.push(next);
            if let Some(reason) = take_token(next, &mut generated, max_tokens, stop_ids, on_token) {
                return Ok((generated, reason));
            }
        }
        let next = *generated.last().expect("one token at least");
        let n = round_trips.start(max_tokens - generated.len());
        if sampler.is_greedy() {
            pending = engine.decode_greedy(next, pos, n).await?;
        } else {
            pending = engine.decode_sampled(next, pos, n, sampler, &history).await?;
        }
        round_trips.end(n);
        pos += pending.len();
    }
}

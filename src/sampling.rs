//! Choosing the next token from logits: greedy, or temperature sampling with
//! top-k, top-p and min-p filters and a repetition penalty, reproducible by seed.

use crate::rng::Rng;

/// The top-k of every front end unless told otherwise, as llama.cpp's and
/// Ollama's: with it the GPU draws each token itself (sample.wgsl).
pub const DEFAULT_TOP_K: usize = 40;

/// Sampling settings; the defaults are greedy decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the best one's (0 = none).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of already seen tokens (1 = off).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplingParams {
    /// Checks the ranges, with a message that says which value is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature must be 0 (greedy) or positive, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min-p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(format!("repetition penalty must be positive, got {}", self.repetition_penalty));
        }
        Ok(())
    }
}

/// Index of the largest logit (the first one on ties, as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// A sampler with its own random stream.
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng::new(params.seed);
        Sampler { params, rng }
    }

    /// Greedy choice: the argmax of the raw logits, which the GPU can do alone.
    pub fn is_greedy(&self) -> bool {
        self.params.temperature == 0.0 && self.params.repetition_penalty == 1.0
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token; `history` is every token so far (for the penalty).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let r = if self.params.temperature == 0.0 { 0.0 } else { self.next_random() };
        sample_with(&self.params, logits, history, r)
    }

    /// The random number in [0, 1) that the next sampled token draws with
    /// (the GPU samples with the numbers the host would, sample.wgsl).
    pub fn next_random(&mut self) -> f32 {
        self.rng.next_f32()
    }
}

/// The token `p` picks from `logits` for the random number `r` in [0, 1)
/// (unused when greedy); `history` is every token so far (for the penalty).
pub fn sample_with(p: &SamplingParams, logits: &[f32], history: &[u32], mut r: f32) -> u32 {
    let mut logits = logits.to_vec();
    if p.repetition_penalty != 1.0 {
        for &t in history {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
            }
        }
    }
    if p.temperature == 0.0 {
        return argmax(&logits);
    }
    // Candidates best first, ranked only as far as the filters and the
    // draw reach: sorting all of a 152k vocabulary cost 7.7 ms a sampled
    // token on an H200's host, more than a 32B decode step.
    let limit = if p.top_k > 0 { p.top_k.min(logits.len()) } else { logits.len() };
    let mut ranking = Ranking::new(&logits, limit);
    let max = logits[ranking.at(0) as usize];
    let weight_of_logit = |l: f32| ((l - max) / p.temperature).exp();
    let weight = |t: u32| weight_of_logit(logits[t as usize]);
    // The probabilities' denominator, over the top k or all: sums over
    // the whole vocabulary go in id order (it is never sorted), others
    // best first.
    let every_weight: Option<Vec<f32>> =
        (limit == logits.len()).then(|| logits.iter().map(|&l| weight_of_logit(l)).collect());
    let total: f32 = match &every_weight {
        Some(weights) => weights.iter().sum(),
        None => (0..limit).map(|i| weight(ranking.at(i))).sum(),
    };
    // min-p (relative to the most likely token, whose probability is
    // 1 / total) and top-p (the smallest prefix whose mass reaches p; 1
    // keeps all) keep the first `keep` candidates.
    let keep = if p.min_p == 0.0 && p.top_p >= 1.0 {
        limit
    } else {
        let floor = p.min_p * (1.0 / total);
        let (mut keep, mut mass) = (0, 0.0);
        while keep < limit {
            let q = weight(ranking.at(keep)) / total;
            if keep > 0 && q < floor {
                break;
            }
            keep += 1;
            mass += q;
            if p.top_p < 1.0 && mass >= p.top_p {
                break;
            }
        }
        keep
    };
    if let Some(weights) = every_weight.filter(|_| keep == logits.len()) {
        // Every token is kept: the draw walks them in id order, which
        // needs no ranking and samples the same distribution.
        let probs = weights.iter().map(|w| w / total);
        r *= probs.clone().sum::<f32>();
        for (id, q) in probs.enumerate() {
            if r < q {
                return id as u32;
            }
            r -= q;
        }
        return ranking.at(0); // only where rounding left r past the last
    }
    r *= (0..keep).map(|i| weight(ranking.at(i)) / total).sum::<f32>();
    for i in 0..keep {
        let q = weight(ranking.at(i)) / total;
        if r < q {
            return ranking.at(i);
        }
        r -= q;
    }
    ranking.at(keep - 1)
}

/// Token ids ranked best first (the higher logit, and on ties the lower id:
/// the order a stable sort by logit gives), ranked only as far as asked for.
struct Ranking<'a> {
    logits: &'a [f32],
    ranked: Vec<u32>,
    /// Ranks past this are never asked for (top-k).
    limit: usize,
}

impl<'a> Ranking<'a> {
    fn new(logits: &'a [f32], limit: usize) -> Self {
        Ranking { logits, ranked: Vec::new(), limit }
    }

    /// The id of rank `i` (below the limit). Ranks the best 64, then four
    /// times as many each time more are asked for, sorting those alone: one
    /// pass over the logits keeps the candidates at or above the worst of
    /// the best so far, and most fall below it at the first comparison.
    fn at(&mut self, i: usize) -> u32 {
        if i >= self.ranked.len() {
            let n = (4 * (i + 1)).max(64).min(self.limit);
            let better = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
            let mut best: Vec<(f32, u32)> = Vec::with_capacity(4 * n);
            let mut floor = None;
            for (id, &logit) in self.logits.iter().enumerate() {
                if floor.is_none_or(|f| logit.total_cmp(&f).is_ge()) {
                    best.push((logit, id as u32));
                    if best.len() == 4 * n {
                        best.select_nth_unstable_by(n - 1, better);
                        best.truncate(n);
                        floor = Some(best[n - 1].0); // the n-th best: the selection puts it there
                    }
                }
            }
            if best.len() > n {
                best.select_nth_unstable_by(n - 1, better);
                best.truncate(n);
            }
            best.sort_unstable_by(better);
            self.ranked = best.into_iter().map(|(_, id)| id).collect();
        }
        self.ranked[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&[0.0, 3.0, 1.0, 3.0], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_reproduce() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let params = SamplingParams { temperature: 1.0, top_k: 1, ..Default::default() };
        assert_eq!(Sampler::new(params).sample(&logits, &[]), argmax(&logits));
        let params = SamplingParams { temperature: 0.8, top_p: 0.9, seed: 7, ..Default::default() };
        let run = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..20).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(&params), run(&params));
    }

    /// The sampler's definition, written plainly: every candidate sorted by
    /// logit, the filters applied to the sorted probabilities, then one draw.
    /// Sums over the whole vocabulary go in id order (the sampler never sorts
    /// it), the others best first; top-p 1 keeps every candidate, and a draw
    /// among all of them walks them in id order.
    fn sample_by_full_sort(p: &SamplingParams, rng: &mut Rng, logits: &[f32]) -> u32 {
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let max = logits[order[0] as usize];
        let weights: Vec<f32> = logits.iter().map(|&l| ((l - max) / p.temperature).exp()).collect();
        let sum = |ids: &[u32]| -> f32 {
            match ids.len() == logits.len() {
                true => weights.iter().sum(),
                false => ids.iter().map(|&t| weights[t as usize]).sum(),
            }
        };
        let total = sum(&order);
        let probs: Vec<f32> = order.iter().map(|&t| weights[t as usize] / total).collect();
        let floor = p.min_p * probs[0];
        let mut keep = probs.iter().take_while(|&&q| q >= floor).count().max(1);
        let mut mass = 0.0;
        for (i, q) in probs[..keep].iter().enumerate() {
            mass += q;
            if mass >= p.top_p && p.top_p < 1.0 {
                keep = i + 1;
                break;
            }
        }
        let mut r = rng.next_f32();
        if keep == logits.len() {
            // Every token kept: drawn in id order.
            let probs: Vec<f32> = weights.iter().map(|w| w / total).collect();
            r *= probs.iter().sum::<f32>();
            for (id, q) in probs.iter().enumerate() {
                if r < *q {
                    return id as u32;
                }
                r -= q;
            }
            return order[0];
        }
        r *= probs[..keep].iter().sum::<f32>();
        for (i, q) in probs[..keep].iter().enumerate() {
            if r < *q {
                return order[i];
            }
            r -= q;
        }
        order[keep - 1]
    }

    #[test]
    fn ranking_only_what_it_needs_samples_as_a_full_sort_does() {
        // A vocabulary-sized spread of logits with ties, and a small one.
        let mut rng = Rng::new(3);
        let wide: Vec<f32> = (0..20_000).map(|_| (rng.next_f32() * 400.0).round() * 0.05 - 10.0).collect();
        let small: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let settings = [
            (0.7, 40, 0.8, 0.0), // the chat window's defaults
            (1.0, 0, 1.0, 0.0),  // temperature alone
            (0.8, 0, 0.95, 0.0),
            (1.2, 0, 1.0, 0.05),
            (0.5, 2_000, 0.99, 0.01),
            (2.0, 7, 1.0, 0.0),
        ];
        for logits in [&wide, &small] {
            for (temperature, top_k, top_p, min_p) in settings {
                let params = SamplingParams { temperature, top_k, top_p, min_p, seed: 11, ..Default::default() };
                let mut sampler = Sampler::new(params.clone());
                let mut reference = Rng::new(params.seed);
                for draw in 0..200 {
                    let want = sample_by_full_sort(&params, &mut reference, logits);
                    assert_eq!(sampler.sample(logits, &[]), want, "{params:?}, draw {draw} of {} logits", logits.len());
                }
            }
        }
    }

    #[test]
    fn repetition_penalty_lowers_seen_tokens() {
        let mut s = Sampler::new(SamplingParams { repetition_penalty: 2.0, ..Default::default() });
        assert_eq!(s.sample(&[1.0, 1.5, 0.2], &[1]), 0);
    }

    #[test]
    fn bad_values_are_named() {
        let bad = SamplingParams { top_p: 0.0, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("top-p"));
        let bad = SamplingParams { temperature: -1.0, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("temperature"));
    }
}

//! Running the decode step: queueing steps whose token the GPU chooses
//! (argmax, or a draw with the host's settings and random numbers), the step
//! after a round trip recorded while the GPU runs, and reading back ids or
//! logits; batched prefill of the prompt.

#[cfg(not(target_arch = "wasm32"))]
use crate::backend::Backend;
use crate::backend::RunError;
use crate::gpu::kernels::Dispatch;
use crate::sampling::{Sampler, SamplingParams};

use super::{ops, Engine};

impl Engine {
    /// Refuses a token past the vocabulary and a position past the context.
    pub(super) fn check(&self, token: Option<u32>, pos: usize) -> Result<(), RunError> {
        let vocab = self.config.vocab_size;
        if let Some(id) = token.filter(|&id| id as usize >= vocab) {
            return Err(RunError::TokenOutOfRange { id, vocab });
        }
        if pos >= self.plan.ctx {
            return Err(RunError::ContextFull { pos, ctx: self.plan.ctx });
        }
        Ok(())
    }

    /// Queues one decode step without waiting: writes `token` (or keeps the
    /// token the previous step chose) and the position, then submits the
    /// step's commands, recorded ahead where they were.
    fn queue_step(&mut self, token: Option<u32>, pos: usize, step: Step) -> Result<(), RunError> {
        self.check(token, pos)?;
        let commands = match self.next_step.take() {
            Some((at, ahead, commands)) if at == pos && ahead == step => commands,
            _ => self.step_commands(pos, step),
        };
        if let Some(id) = token {
            self.ctx.queue.write_buffer(&self.act.token, 0, bytemuck::bytes_of(&id));
        }
        self.ctx.queue.write_buffer(&self.step_params, 0, bytemuck::bytes_of(&(pos as u32)));
        self.ctx.queue.submit([commands]);
        Ok(())
    }

    /// Records the step at `pos` while the GPU runs the ones queued, for the
    /// next call to queue: recording and submitting a 32B step's 390
    /// dispatches takes 1.6 ms of host time, which the GPU would otherwise
    /// wait for between round trips (an H200: a sampled token took 1.1 ms
    /// less, BENCHMARKS.md round 15).
    fn record_ahead(&mut self, pos: usize, step: Step) {
        self.next_step = (pos < self.plan.ctx).then(|| (pos, step, self.step_commands(pos, step)));
    }

    /// The commands of a decode step at `pos`: the logits, then what `step`
    /// reads back. The token, the position and the sampling settings are read
    /// from buffers, so they can be recorded before any is known.
    fn step_commands(&self, pos: usize, step: Step) -> wgpu::CommandBuffer {
        let mut encoder =
            self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("token") });
        // GEMVs feeding the next add their sums of squares up into these.
        encoder.clear_buffer(&self.act.fed_sums, 0, None);
        {
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("token"), timestamp_writes: None });
            let choose: &[Dispatch] = match step {
                Step::Token { choice: Choice::Greedy, .. } => &self.graph.argmax,
                Step::Token { choice: Choice::Sampled, .. } => &self.graph.sample,
                Step::Logits => &[],
            };
            for d in self.graph.logits.iter().chain(choose) {
                d.encode_at(&mut pass, pos);
            }
        }
        match step {
            Step::Token { slot, .. } => {
                encoder.copy_buffer_to_buffer(&self.act.token, 0, &self.ids_readback, slot as u64 * 4, 4)
            }
            Step::Logits => {
                let bytes = (self.config.vocab_size * 4) as u64;
                encoder.copy_buffer_to_buffer(&self.act.logits, 0, &self.logits_readback, 0, bytes)
            }
        }
        encoder.finish()
    }
}

/// How a decode step chooses its token on the GPU.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Choice {
    Greedy,
    /// Drawn with the settings written before the step (sample.wgsl).
    Sampled,
}

/// What a decode step reads back.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Step {
    /// The token it chose, into slot `slot` of the ids read back.
    Token { choice: Choice, slot: usize },
    /// The logits (no token is chosen).
    Logits,
}

impl Engine {
    /// Runs `token` at `pos`; resolves to the next token's logits.
    pub async fn logits(&mut self, token: u32, pos: usize) -> Result<&[f32], RunError> {
        self.queue_step(Some(token), pos, Step::Logits)?;
        // The step sampling on the host asks for next.
        self.record_ahead(pos + 1, Step::Logits);
        let bytes = self.ctx.read_mapped(&self.logits_readback).await?;
        for (l, b) in self.logits.iter_mut().zip(bytes.chunks_exact(4)) {
            *l = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(&self.logits)
    }

    /// Queues `tokens` at positions from `start_pos` on in prefill steps of up to
    /// `ubatch` tokens, filling the KV cache; nothing is read back.
    pub fn prefill(&mut self, tokens: &[u32], start_pos: usize) -> Result<(), RunError> {
        // Every token and position is checked before anything is queued.
        for (i, &id) in tokens.iter().enumerate() {
            self.check(Some(id), start_pos + i)?;
        }
        for (i, chunk) in tokens.chunks(self.plan.ubatch).enumerate() {
            let pos = start_pos + i * self.plan.ubatch;
            self.ctx.queue.write_buffer(&self.prefill_act.token, 0, bytemuck::cast_slice(chunk));
            let step = [pos as u32, chunk.len() as u32];
            self.ctx.queue.write_buffer(&self.prefill_step, 0, bytemuck::cast_slice(&step));
            let mut encoder =
                self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("prefill") });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("prefill"),
                    timestamp_writes: None,
                });
                for d in &self.prefill_graph {
                    d.encode(&mut pass);
                }
            }
            self.ctx.queue.submit([encoder.finish()]);
        }
        Ok(())
    }

    /// Prefills all prompt tokens but the last, runs the last as a decode step
    /// and waits once, for its argmax.
    pub async fn prefill_greedy(&mut self, prompt: &[u32], start_pos: usize) -> Result<u32, RunError> {
        let Some((&last, head)) = prompt.split_last() else {
            return Err(RunError::EmptyPrompt);
        };
        self.prefill(head, start_pos)?;
        Ok(self.decode_on_gpu(last, start_pos + head.len(), 1, None).await?[0])
    }

    /// Queues `n` steps whose tokens come from the previous step's argmax on the
    /// GPU, and reads all `n` ids back at the end.
    pub async fn decode_greedy(&mut self, last: u32, pos: usize, n: usize) -> Result<Vec<u32>, RunError> {
        self.decode_on_gpu(last, pos, n, None).await
    }

    /// Feeds `last` at `pos` and samples `n` tokens with `sampler`, each fed
    /// back in; `history` is every token up to `last` (for a repetition
    /// penalty). Where the GPU can sample alone ([`Engine::samples_on_gpu`])
    /// the steps queue like greedy ones and the ids are read back at the end;
    /// otherwise each step's logits come back to the host's sampler.
    pub async fn decode_sampled(
        &mut self,
        last: u32,
        pos: usize,
        n: usize,
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<Vec<u32>, RunError> {
        if self.samples_on_gpu(sampler.params()) {
            return self.decode_on_gpu(last, pos, n, Some(sampler)).await;
        }
        let mut history = history.to_vec();
        let mut token = last;
        for i in 0..n {
            let logits = self.logits(token, pos + i).await?;
            token = sampler.sample(logits, &history);
            history.push(token);
        }
        Ok(history.split_off(history.len() - n))
    }

    /// Whether the GPU draws tokens with these settings alone (sample.wgsl):
    /// temperature with a top-k of at most [`ops::SAMPLE_TOP`] tokens, less
    /// than the vocabulary, and no repetition penalty (the GPU keeps no
    /// history). Chat's defaults (top-k 40) qualify.
    pub fn samples_on_gpu(&self, p: &SamplingParams) -> bool {
        p.temperature > 0.0
            && p.repetition_penalty == 1.0
            && (1..=ops::SAMPLE_TOP).contains(&p.top_k)
            && p.top_k < self.config.vocab_size
    }

    /// Queues `n` steps from `last` at `pos`, each fed the token the one
    /// before chose on the GPU: the argmax, or with `sampler` a draw with its
    /// settings and its next random number (written before each step), and
    /// reads all `n` ids back at the end, while the step after them is
    /// recorded.
    async fn decode_on_gpu(
        &mut self,
        last: u32,
        pos: usize,
        n: usize,
        mut sampler: Option<&mut Sampler>,
    ) -> Result<Vec<u32>, RunError> {
        // Checked before any random number is drawn.
        self.check(Some(last), pos)?;
        self.check(None, pos + n.saturating_sub(1))?;
        if (n * 4) as u64 > self.ids_readback.size() {
            use wgpu::BufferUsages as U;
            self.ids_readback = self.ctx.buffer("ids read back", (n * 4) as u64, U::MAP_READ | U::COPY_DST);
            self.next_step = None; // it copies into the old buffer
        }
        let choice = if sampler.is_some() { Choice::Sampled } else { Choice::Greedy };
        for i in 0..n {
            if let Some(sampler) = sampler.as_deref_mut() {
                let random = sampler.next_random();
                let settings = ops::sample_settings(sampler.params(), random);
                self.ctx.queue.write_buffer(&self.sampling, 0, bytemuck::cast_slice(&settings));
            }
            let token = if i == 0 { Some(last) } else { None };
            self.queue_step(token, pos + i, Step::Token { choice, slot: i })?;
        }
        self.record_ahead(pos + n, Step::Token { choice, slot: 0 });
        let bytes = self.ctx.read_mapped(&self.ids_readback).await?;
        Ok(bytes.chunks_exact(4).take(n).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

/// Native front ends drive the engine synchronously; the browser awaits the
/// async methods above instead (blocking there would stall its event loop).
#[cfg(not(target_arch = "wasm32"))]
impl Backend for Engine {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn context_len(&self) -> usize {
        self.plan.ctx
    }

    fn forward(&mut self, token: u32, pos: usize) -> Result<&[f32], RunError> {
        pollster::block_on(self.logits(token, pos))
    }

    fn prefill(&mut self, tokens: &[u32], start_pos: usize) -> Result<(), RunError> {
        Engine::prefill(self, tokens, start_pos)
    }

    fn prefill_greedy(&mut self, prompt: &[u32], start_pos: usize) -> Result<u32, RunError> {
        pollster::block_on(Engine::prefill_greedy(self, prompt, start_pos))
    }

    fn decode_greedy(&mut self, last: u32, pos: usize, n: usize) -> Result<Vec<u32>, RunError> {
        pollster::block_on(Engine::decode_greedy(self, last, pos, n))
    }

    fn decode_sampled(
        &mut self,
        last: u32,
        pos: usize,
        n: usize,
        sampler: &mut Sampler,
        history: &[u32],
    ) -> Result<Vec<u32>, RunError> {
        pollster::block_on(Engine::decode_sampled(self, last, pos, n, sampler, history))
    }
}

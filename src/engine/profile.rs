//! GPU time per dispatch of one step, read from timestamps written between the
//! dispatches (`bench --profile`): where a token's time goes, kernel by kernel.

use super::Engine;
use crate::backend::RunError;
use crate::gpu::kernels::Dispatch;
use crate::gpu::GpuError;

/// Timestamps one query set holds (wgpu's limit).
const MAX_QUERIES: usize = 4096;

/// The time one kind of dispatch took in a step.
#[derive(Debug, Clone)]
pub struct KernelTime {
    /// The dispatch label with layer and row numbers replaced by `N`, so that
    /// the same projection of every layer adds up in one line.
    pub kind: String,
    pub calls: usize,
    pub seconds: f64,
}

/// `label` with every run of digits replaced by `N`.
fn kind_of(label: &str) -> String {
    let mut kind = String::with_capacity(label.len());
    let mut in_number = false;
    for ch in label.chars() {
        if ch.is_ascii_digit() {
            if !in_number {
                kind.push('N');
            }
            in_number = true;
        } else {
            kind.push(ch);
            in_number = false;
        }
    }
    kind
}

impl Engine {
    /// Runs one step with a timestamp after every dispatch and returns the GPU
    /// time of each kind of dispatch, largest first: a decode step at position
    /// `pos`, or with `prefill` a prefill step of `ubatch` tokens from position 0.
    pub async fn profile_step(&mut self, prefill: bool, pos: usize) -> Result<Vec<KernelTime>, RunError> {
        if !self.ctx.caps.timestamps {
            return Err(GpuError::Limits(format!(
                "{} cannot time dispatches (no timestamp queries)",
                self.ctx.info.name
            ))
            .into());
        }
        self.check(None, pos)?;
        let graph: Vec<&Dispatch> = if prefill {
            let tokens = vec![0u32; self.plan.ubatch];
            self.ctx.queue.write_buffer(&self.prefill_act.token, 0, bytemuck::cast_slice(&tokens));
            let step = [0u32, self.plan.ubatch as u32];
            self.ctx.queue.write_buffer(&self.prefill_step, 0, bytemuck::cast_slice(&step));
            self.prefill_graph.iter().collect()
        } else {
            self.ctx.queue.write_buffer(&self.act.token, 0, bytemuck::bytes_of(&0u32));
            self.ctx.queue.write_buffer(&self.step_params, 0, bytemuck::bytes_of(&(pos as u32)));
            // The greedy step (bench times it unless --temperature).
            self.graph.logits.iter().chain(&self.graph.argmax).collect()
        };
        let count = graph.len().min(MAX_QUERIES - 1);
        let queries = self.ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: count as u32 + 1,
        });
        use wgpu::BufferUsages as U;
        let bytes = ((count + 1) * 8) as u64;
        let resolved = self.ctx.buffer("profile timestamps", bytes, U::QUERY_RESOLVE | U::COPY_SRC);
        let readback = self.ctx.buffer("profile read back", bytes, U::MAP_READ | U::COPY_DST);
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.clear_buffer(&self.act.fed_sums, 0, None); // as queue_step
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.write_timestamp(&queries, 0);
            for (i, d) in graph.iter().take(count).enumerate() {
                d.encode_at(&mut pass, pos);
                pass.write_timestamp(&queries, i as u32 + 1);
            }
        }
        encoder.resolve_query_set(&queries, 0..count as u32 + 1, &resolved, 0);
        encoder.copy_buffer_to_buffer(&resolved, 0, &readback, 0, bytes);
        self.ctx.queue.submit([encoder.finish()]);
        let raw = self.ctx.read_mapped(&readback).await?;
        let ticks: Vec<u64> = raw.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
        let period_s = self.ctx.queue.get_timestamp_period() as f64 * 1e-9;
        let mut times: Vec<KernelTime> = Vec::new();
        for (i, d) in graph.iter().take(count).enumerate() {
            let seconds = ticks[i + 1].saturating_sub(ticks[i]) as f64 * period_s;
            let kind = kind_of(&d.label);
            match times.iter_mut().find(|t| t.kind == kind) {
                Some(t) => {
                    t.calls += 1;
                    t.seconds += seconds;
                }
                None => times.push(KernelTime { kind, calls: 1, seconds }),
            }
        }
        times.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        Ok(times)
    }
}

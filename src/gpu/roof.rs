//! The device's measured memory-bandwidth roof: how fast a plain streaming-read
//! kernel reads a large buffer. Decode speed is reported as a fraction of it.

use std::time::Instant;

use super::kernels::{Dispatch, Kernel, Kernels};
use super::{GpuContext, GpuError};

/// Reads a buffer of up to 1 GiB `passes` times and returns bytes read per second.
pub async fn measure_read_bandwidth(ctx: &GpuContext, passes: u32) -> Result<f64, GpuError> {
    let limits = &ctx.caps.limits;
    let bytes = (1u64 << 30).min(limits.max_storage_buffer_binding_size).min(limits.max_buffer_size) / 16 * 16;
    let data = ctx.buffer("roof data", bytes, wgpu::BufferUsages::STORAGE);
    let workgroups = 65_535u32.min(limits.max_compute_workgroups_per_dimension);
    let threads = workgroups * 256;
    let params = ctx.buffer_init(
        "roof params",
        bytemuck::cast_slice(&[(bytes / 16) as u32, threads, 0, 0]),
        wgpu::BufferUsages::UNIFORM,
    );
    let sink = ctx.buffer("roof sink", workgroups as u64 * 4, wgpu::BufferUsages::STORAGE);
    let pipeline = Kernels::new(ctx).pipeline(Kernel::StreamRead, &[]).await?;
    let dispatch =
        Dispatch::new(ctx, "stream read", pipeline, &[(0, &params), (1, &data), (2, &sink)], [workgroups, 1, 1]);
    let run = async |passes: u32| -> Result<f64, GpuError> {
        let started = Instant::now();
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for _ in 0..passes {
                dispatch.encode(&mut pass);
            }
        }
        ctx.queue.submit([encoder.finish()]);
        ctx.idle().await?;
        Ok(started.elapsed().as_secs_f64())
    };
    run(1).await?; // compile and warm up
    let seconds = run(passes).await?;
    Ok(bytes as f64 * passes as f64 / seconds)
}

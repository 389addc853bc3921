//! The WGSL kernels, listed once, and their compiled pipelines.
//!
//! Each kernel family is one file in `shaders/`; variants (scale dtype, group
//! size, dense weight dtype) are WGSL `override` constants, so the file you read
//! is the file that runs. Pipelines are compiled once per variant and cached.

use std::collections::HashMap;

use super::{GpuContext, GpuError};

/// Decode helpers prepended to the kernels that read weights.
const DECODE: &str = include_str!("../../shaders/decode.wgsl");

/// A kernel: its source file and entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    GemvTernary,
    GemvDense,
    EmbedTernary,
    EmbedDense,
    NormStats,
    Rope,
    Attention,
    Swiglu,
    Argmax,
    StreamRead,
}

impl Kernel {
    /// (file name, source, entry point, needs the decode helpers)
    fn source(self) -> (&'static str, &'static str, &'static str, bool) {
        const GEMV: &str = include_str!("../../shaders/gemv.wgsl");
        const EMBED: &str = include_str!("../../shaders/embed.wgsl");
        match self {
            Kernel::GemvTernary => ("gemv.wgsl", GEMV, "gemv_ternary", true),
            Kernel::GemvDense => ("gemv.wgsl", GEMV, "gemv_dense", true),
            Kernel::EmbedTernary => ("embed.wgsl", EMBED, "embed_ternary", true),
            Kernel::EmbedDense => ("embed.wgsl", EMBED, "embed_dense", true),
            Kernel::NormStats => ("norm.wgsl", include_str!("../../shaders/norm.wgsl"), "norm_stats", false),
            Kernel::Rope => ("rope.wgsl", include_str!("../../shaders/rope.wgsl"), "rope", false),
            Kernel::Attention => ("attention.wgsl", include_str!("../../shaders/attention.wgsl"), "attention", false),
            Kernel::Swiglu => ("swiglu.wgsl", include_str!("../../shaders/swiglu.wgsl"), "swiglu", false),
            Kernel::Argmax => ("argmax.wgsl", include_str!("../../shaders/argmax.wgsl"), "argmax", false),
            Kernel::StreamRead => {
                ("stream_read.wgsl", include_str!("../../shaders/stream_read.wgsl"), "stream_read", false)
            }
        }
    }
}

/// Compiled pipelines, keyed by kernel and override constants.
pub struct Kernels {
    ctx: GpuContext,
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    pipelines: HashMap<String, wgpu::ComputePipeline>,
}

impl Kernels {
    pub fn new(ctx: &GpuContext) -> Self {
        Kernels { ctx: ctx.clone(), modules: HashMap::new(), pipelines: HashMap::new() }
    }

    /// The pipeline of `kernel` with the given override constants.
    pub fn pipeline(&mut self, kernel: Kernel, constants: &[(&str, u32)]) -> Result<wgpu::ComputePipeline, GpuError> {
        let (file, source, entry, needs_decode) = kernel.source();
        let label = format!("{entry}{}", constants.iter().map(|(k, v)| format!(" {k}={v}")).collect::<String>());
        if let Some(p) = self.pipelines.get(&label) {
            return Ok(p.clone());
        }
        let device = &self.ctx.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.modules.entry(file).or_insert_with(|| {
            let text = if needs_decode { format!("{DECODE}\n{source}") } else { source.to_string() };
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(file),
                source: wgpu::ShaderSource::Wgsl(text.into()),
            })
        });
        let constants: Vec<(&str, f64)> = constants.iter().map(|(k, v)| (*k, *v as f64)).collect();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, ..Default::default() },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Shader { name: label, msg: e.to_string() });
        }
        self.pipelines.insert(label, pipeline.clone());
        Ok(pipeline)
    }
}

/// One recorded kernel launch: everything needed to encode it again each token.
#[derive(Clone)]
pub struct Dispatch {
    pub label: String,
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
}

/// Most workgroups in one dimension that every WebGPU device accepts.
pub const MAX_WORKGROUPS_PER_DIM: u32 = 65535;

/// Lays `n` workgroups out in 2-D so no dimension exceeds the limit; kernels
/// recover the index as `wg.x + wg.y * num_workgroups.x` and skip the overhang.
pub fn grid(n: u32) -> [u32; 3] {
    let x = n.clamp(1, MAX_WORKGROUPS_PER_DIM);
    [x, n.div_ceil(x), 1]
}

impl Dispatch {
    /// Builds a dispatch binding `buffers` as (binding index, buffer) pairs.
    pub fn new(
        ctx: &GpuContext,
        label: impl Into<String>,
        pipeline: wgpu::ComputePipeline,
        buffers: &[(u32, &wgpu::Buffer)],
        workgroups: [u32; 3],
    ) -> Self {
        let label = label.into();
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .map(|(binding, b)| wgpu::BindGroupEntry { binding: *binding, resource: b.as_entire_binding() })
            .collect();
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &layout,
            entries: &entries,
        });
        Dispatch { label, pipeline, bind_group, workgroups }
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

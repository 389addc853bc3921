//! The WGSL kernels, listed once, and their compiled pipelines.
//!
//! Each kernel family is one file in `shaders/`; variants (scale dtype, group
//! size, dense weight dtype) are WGSL `override` constants, so the file you read
//! is the file that runs. What depends on the device's optional features lives in
//! small helper files, one per path, prepended to the kernels that need them:
//! `reduce_subgroup.wgsl` (with `--subgroups`) or `reduce_portable.wgsl`
//! (workgroup reductions; the default, which measured faster on an H100).
//! Arithmetic stays f32 on every path (F16/BF16 data is widened on load), so the
//! paths differ in speed, not in results beyond float summation order. Two
//! products are the exceptions: the decode GEMV's choice (`--gemv`):
//! gemv_fixed.wgsl multiplies in integers, over inputs converted to 24-bit fixed
//! point (fixed_word.wgsl), which rounds them about as finely as f32 does; and
//! prefill's (`--gemm`): gemm_coop.wgsl multiplies on cooperative-matrix units,
//! over inputs and weights split into two f16 halves (f16_pairs.wgsl), good to
//! 21 bits. Helper files other kernels need (decode.wgsl, reduce.wgsl,
//! fixed_word.wgsl) are prepended to their source too, after the kernel's own
//! `enable` lines. Pipelines are compiled once per variant and cached.

use std::collections::HashMap;

use super::{GpuContext, GpuError};

/// Decode helpers prepended to the kernels that read weights.
const DECODE: &str = include_str!("../../shaders/decode.wgsl");
/// Reduction helpers prepended to the kernels that reduce across a workgroup.
const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../../shaders/reduce_subgroup.wgsl");
const REDUCE_PORTABLE: &str = include_str!("../../shaders/reduce_portable.wgsl");

/// Block fixed-point helpers prepended to the kernels that write GEMV inputs in it.
const FIXED_WORD: &str = include_str!("../../shaders/fixed_word.wgsl");

/// Kernel files built without wgpu's bounds checks, each index in them shown
/// to stay within its array:
/// - gemm_coop.wgsl: its workgroup tiles are indexed by thread and step
///   within their sizes (the largest staged or loaded element is 5,111 of
///   5,120, and 9,207 of 9,216 in gemm_ternary_coop_f16's; c_tile's 2,047
///   of 2,048); its weights and scales only for rows below `rows` and words
///   below `cols / 16`, its inputs within the f16 pairs buffer padded to
///   whole tiles of tokens (ops::CoopInput), and Y, bias and the K parts only
///   for tokens below the step's count and rows below `rows`; Ops::gemm_coop
///   checks that those buffers hold them, and splits K only where the parts
///   fit.
///
/// - gemv_fixed.wgsl (T = 256 / LANES teams, LANES a power of two from 4 to
///   256): `partial` [1280] at (team row) * (LANES + 1) + lane, at most
///   4T(LANES + 1) - 2 = 1278; `block_y` [256] at rows of the workgroup,
///   4T <= 256 of them, its feeding tail's quads whole (block rows a
///   multiple of 16, which Ops::fixed_gemv_dispatches checks);
///   `swiglu_values` [128] at gate rows, block_gates = 512 / LANES <= 128,
///   whole words of them (a multiple of 16, checked there too);
///   `staged_planes` [384] at k * 128 + v and `staged_info` [128] at v, k <
///   DIGITS <= 3 and v < cols / 16 <= 128 (cols at most 2,048, checked
///   there); `reduce_scratch` [256] at threads and pairs below 256; every
///   private array and vector at indices below 3 or 4 (DIGITS <= 3, checked
///   there, ROWS_PER_TEAM 4).
/// - attention.wgsl (heads of at most 256 values, 64 quads, which
///   Ops::attention checks): `q_head`, `k_new` and `v_new` [64] at quads of
///   the head; `weights` [64] at positions within a chunk (SPLIT 32 or
///   CHUNK 64); `slices` [128] at k * quads + column below
///   floor(128 / quads) * quads; `dots` [128] at threads, at 4 * position +
///   part for the 32 positions, and at MERGE_GROUPS (64) + group for fewer
///   than 64 merge groups; `reduce_scratch` [256] at threads below 128; the
///   merge's four records and the fixed-point word's arrays at indices
///   below 4 (DIGITS <= 3, checked there).
///
/// Both files' storage accesses stay within their buffers for every dispatch
/// the engine builds (threads past the end clamp or skip their loads), which
/// the Vulkan driver checks again with robust buffer access; on other native
/// backends nothing does.
///
/// The checks clamp every index: in gemm_coop.wgsl's tiles they took about a
/// third of the tensor-core prefill's time on an H100 (without them pp512
/// went 766 -> 1,108 t/s (32B), 3,248 -> 4,493 (7B) and about 21,700 ->
/// 26,500 (0.5B)); in the decode kernels' workgroup arrays, 3 % of 0.5B's
/// decode and 1 % of 7B's on an H200 (BENCHMARKS.md, round 29).
const UNCHECKED_INDICES: &[&str] = &["gemm_coop.wgsl", "gemv_fixed.wgsl", "attention.wgsl"];

/// Kernel files whose pipelines skip WebGPU's zeroing of workgroup memory,
/// because every entry point writes each element it reads before reading it:
/// - gemv_fixed.wgsl: `partial` is written for every team row and lane
///   (share_sums) before row_sum reads it (never a row's padding slot:
///   LANES is a multiple of 4); `block_y` for each row the workgroup
///   writes, the only rows its feeding tails read; `swiglu_values` for each
///   gate row, whose words are whole (block_gates is a multiple of 16);
///   `staged_planes` and `staged_info` for every word below `cols / 16`,
///   the only ones read; `reduce_scratch` by every invocation of a reduction.
/// - attention.wgsl: `q_head` for all of a head's quads before any is read;
///   `k_new` and `v_new` in the workgroup holding `pos`, the only one that
///   reads or stores them; `dots`, `weights` (every slot below SPLIT or
///   CHUNK, zeros past the scored positions) and `slices` by every thread
///   before the barrier ahead of their reads; the merge's maxima and sums
///   for each of its groups, the only slots it reads; `last_split` by the
///   thread that reads the count, before the uniform load.
///
/// The zeroing costs each workgroup stores and a barrier before its first
/// load: with it left out of every pipeline an H200 decoded the 32B and 7B
/// shapes 0.2-0.4 % faster (BENCHMARKS.md, round 28).
const UNZEROED_WORKGROUP_MEMORY: &[&str] = &["gemv_fixed.wgsl", "attention.wgsl"];

/// What a kernel's source needs prepended.
struct Needs {
    decode: bool,
    reduce: bool,
    fixed_word: bool,
}

const DECODE_REDUCE: Needs = Needs { decode: true, reduce: true, fixed_word: false };
const DECODE_ONLY: Needs = Needs { decode: true, reduce: false, fixed_word: false };
const REDUCE_ONLY: Needs = Needs { decode: false, reduce: true, fixed_word: false };
const REDUCE_FIXED_WORD: Needs = Needs { decode: false, reduce: true, fixed_word: true };
const DECODE_REDUCE_FIXED_WORD: Needs = Needs { decode: true, reduce: true, fixed_word: true };
const NOTHING: Needs = Needs { decode: false, reduce: false, fixed_word: false };

/// A kernel: its source file and entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    GemvTernary,
    GemvTernaryWide,
    GemvDense,
    GemvTernaryFixed,
    GemvTernaryFixedStaged,
    GemvTernaryFixedFeeding,
    GemvTernaryFixedSwigluFeeding,
    ToFixedPoint,
    GemmTernary,
    GemmDense,
    GemmSumParts,
    ToF16Pairs,
    GemmTernaryCoop,
    GemmTernaryCoopF16,
    EmbedTernary,
    EmbedDense,
    NormStats,
    Rope,
    AttentionDecode,
    AttentionDecodeFixed,
    AttentionCausal,
    Swiglu,
    ArgmaxParts,
    Argmax,
    TopCandidates,
    StreamRead,
}

impl Kernel {
    /// (file name, source, entry point, helpers it needs)
    fn source(self) -> (&'static str, &'static str, &'static str, Needs) {
        const GEMV: &str = include_str!("../../shaders/gemv.wgsl");
        const GEMM: &str = include_str!("../../shaders/gemm.wgsl");
        const GEMM_COOP: &str = include_str!("../../shaders/gemm_coop.wgsl");
        const EMBED: &str = include_str!("../../shaders/embed.wgsl");
        const ATTENTION: &str = include_str!("../../shaders/attention.wgsl");
        const ARGMAX: &str = include_str!("../../shaders/argmax.wgsl");
        const SAMPLE: &str = include_str!("../../shaders/sample.wgsl");
        const GEMV_FIXED_FILE: &str = "gemv_fixed.wgsl";
        const GEMV_FIXED: &str = include_str!("../../shaders/gemv_fixed.wgsl");
        match self {
            Kernel::GemvTernary => ("gemv.wgsl", GEMV, "gemv_ternary", DECODE_REDUCE),
            Kernel::GemvTernaryWide => ("gemv.wgsl", GEMV, "gemv_ternary_wide", DECODE_REDUCE),
            Kernel::GemvDense => ("gemv.wgsl", GEMV, "gemv_dense", DECODE_REDUCE),
            Kernel::GemvTernaryFixed => (GEMV_FIXED_FILE, GEMV_FIXED, "gemv_ternary_fixed", DECODE_REDUCE_FIXED_WORD),
            Kernel::GemvTernaryFixedStaged => {
                (GEMV_FIXED_FILE, GEMV_FIXED, "gemv_ternary_fixed_staged", DECODE_REDUCE_FIXED_WORD)
            }
            Kernel::GemvTernaryFixedFeeding => {
                (GEMV_FIXED_FILE, GEMV_FIXED, "gemv_ternary_fixed_feeding", DECODE_REDUCE_FIXED_WORD)
            }
            Kernel::GemvTernaryFixedSwigluFeeding => {
                (GEMV_FIXED_FILE, GEMV_FIXED, "gemv_ternary_fixed_swiglu_feeding", DECODE_REDUCE_FIXED_WORD)
            }
            Kernel::ToFixedPoint => (
                "fixed_point.wgsl",
                include_str!("../../shaders/fixed_point.wgsl"),
                "to_fixed_point",
                REDUCE_FIXED_WORD,
            ),
            Kernel::GemmTernary => ("gemm.wgsl", GEMM, "gemm_ternary", DECODE_ONLY),
            Kernel::GemmDense => ("gemm.wgsl", GEMM, "gemm_dense", DECODE_ONLY),
            Kernel::GemmSumParts => ("gemm.wgsl", GEMM, "gemm_sum_parts", DECODE_ONLY),
            Kernel::ToF16Pairs => {
                ("f16_pairs.wgsl", include_str!("../../shaders/f16_pairs.wgsl"), "to_f16_pairs", REDUCE_ONLY)
            }
            Kernel::GemmTernaryCoop => ("gemm_coop.wgsl", GEMM_COOP, "gemm_ternary_coop", DECODE_ONLY),
            Kernel::GemmTernaryCoopF16 => ("gemm_coop.wgsl", GEMM_COOP, "gemm_ternary_coop_f16", DECODE_ONLY),
            Kernel::EmbedTernary => ("embed.wgsl", EMBED, "embed_ternary", DECODE_ONLY),
            Kernel::EmbedDense => ("embed.wgsl", EMBED, "embed_dense", DECODE_ONLY),
            Kernel::NormStats => ("norm.wgsl", include_str!("../../shaders/norm.wgsl"), "norm_stats", REDUCE_ONLY),
            Kernel::Rope => ("rope.wgsl", include_str!("../../shaders/rope.wgsl"), "rope", NOTHING),
            Kernel::AttentionDecode => ("attention.wgsl", ATTENTION, "attention_decode", REDUCE_FIXED_WORD),
            Kernel::AttentionDecodeFixed => ("attention.wgsl", ATTENTION, "attention_decode_fixed", REDUCE_FIXED_WORD),
            Kernel::AttentionCausal => ("attention.wgsl", ATTENTION, "attention_causal", REDUCE_FIXED_WORD),
            Kernel::Swiglu => ("swiglu.wgsl", include_str!("../../shaders/swiglu.wgsl"), "swiglu", NOTHING),
            Kernel::ArgmaxParts => ("argmax.wgsl", ARGMAX, "argmax_parts", NOTHING),
            Kernel::Argmax => ("argmax.wgsl", ARGMAX, "argmax", NOTHING),
            Kernel::TopCandidates => ("sample.wgsl", SAMPLE, "top_candidates", NOTHING),
            Kernel::StreamRead => {
                ("stream_read.wgsl", include_str!("../../shaders/stream_read.wgsl"), "stream_read", NOTHING)
            }
        }
    }
}

/// Splits a kernel's source into its leading `enable` lines and the rest.
fn split_enables(source: &str) -> (&str, &str) {
    let mut end = 0;
    for line in source.split_inclusive('\n') {
        if !line.starts_with("enable ") {
            break;
        }
        end += line.len();
    }
    source.split_at(end)
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
    pub async fn pipeline(
        &mut self,
        kernel: Kernel,
        constants: &[(&str, u32)],
    ) -> Result<wgpu::ComputePipeline, GpuError> {
        let (file, source, entry, needs) = kernel.source();
        let label = format!("{entry}{}", constants.iter().map(|(k, v)| format!(" {k}={v}")).collect::<String>());
        if let Some(p) = self.pipelines.get(&label) {
            return Ok(p.clone());
        }
        let device = &self.ctx.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let caps = &self.ctx.caps;
        let module = self.modules.entry(file).or_insert_with(|| {
            // The kernel's `enable` lines (they must open the module), helpers,
            // then the rest of the kernel. (wgpu's shader compiler takes subgroup
            // operations without an `enable` line once the device has the feature.)
            let (enables, source) = split_enables(source);
            let mut text = enables.to_string();
            if needs.reduce {
                text.push_str(REDUCE);
                text.push_str(if caps.subgroups { REDUCE_SUBGROUP } else { REDUCE_PORTABLE });
            }
            if needs.decode {
                text.push_str(DECODE);
            }
            if needs.fixed_word {
                text.push_str(FIXED_WORD);
            }
            text.push_str(source);
            let desc =
                wgpu::ShaderModuleDescriptor { label: Some(file), source: wgpu::ShaderSource::Wgsl(text.into()) };
            // wgpu's default checks add a counter to every loop so that an
            // untrusted shader cannot hang the GPU; that cost 6-22 % of decode
            // and prefill speed on an H100. Bounds checks stay on, except in
            // the files listed in UNCHECKED_INDICES.
            let checks = wgpu::ShaderRuntimeChecks {
                force_loop_bounding: false,
                bounds_checks: !UNCHECKED_INDICES.contains(&file),
                ..wgpu::ShaderRuntimeChecks::checked()
            };
            // SAFETY: these are the project's own shaders, and every loop in them
            // ends: each runs up to a bound taken from the kernel's parameters or
            // a constant, with a step that moves towards it. The files in
            // UNCHECKED_INDICES index only within their arrays (see there).
            unsafe { device.create_shader_module_trusted(desc, checks) }
        });
        let constants: Vec<(&str, f64)> = constants.iter().map(|(k, v)| (*k, *v as f64)).collect();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: !UNZEROED_WORKGROUP_MEMORY.contains(&file),
            },
            cache: None,
        });
        if let Some(e) = scope.pop().await {
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
    /// Every workgroup it may launch.
    pub workgroups: [u32; 3],
    /// Decode attention: each row (y) of workgroups takes a chunk of this many
    /// context positions (several chunks once there are more than rows), and a
    /// step at position `pos` launches only the rows it needs (see
    /// `workgroups_at`).
    pub positions_per_row: Option<u32>,
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
        Dispatch { label, pipeline, bind_group, workgroups, positions_per_row: None }
    }

    /// Launches only the rows of workgroups that hold positions 0..=pos at a
    /// step at `pos`, `positions` positions a row. Rows past it would return
    /// at once, but launching them is not free: with the 8,192-position cache
    /// chat gives 32B, they were 9,440 of a layer's 10,240 attention workgroups
    /// at position 639 (3 % of its decode time; BENCHMARKS.md, round 15).
    pub fn follows_position(mut self, positions: u32) -> Self {
        self.positions_per_row = Some(positions);
        self
    }

    /// The workgroups a step at position `pos` launches.
    pub fn workgroups_at(&self, pos: usize) -> [u32; 3] {
        let [x, y, z] = self.workgroups;
        match self.positions_per_row {
            Some(positions) => [x, y.min(pos as u32 / positions + 1), z],
            None => self.workgroups,
        }
    }

    /// Encodes every workgroup it may launch.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.encode_grid(pass, self.workgroups);
    }

    /// Encodes it for a step at position `pos` (`workgroups_at`).
    pub fn encode_at(&self, pass: &mut wgpu::ComputePass<'_>, pos: usize) {
        self.encode_grid(pass, self.workgroups_at(pos));
    }

    fn encode_grid(&self, pass: &mut wgpu::ComputePass<'_>, [x, y, z]: [u32; 3]) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

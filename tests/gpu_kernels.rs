//! Every GPU kernel against the CPU reference on random inputs, at awkward sizes
//! (rows not a multiple of the workgroup, K not a multiple of 256) and with
//! tensors split across several storage bindings.

use std::collections::HashMap;

use half::{bf16, f16};
use pollster::block_on;
use tritium::engine::ops::{Feed, KvCache, KvDtype, Out};
use tritium::gpu::kernels::{Dispatch, Kernels};
use tritium::gpu::weights::{GpuMatrix, ReadFuture, Uploader, WeightSource};
use tritium::gpu::{DeviceOptions, GpuContext};
use tritium::model::{DType, Matrix, ModelError, Storage};
use tritium::reference;
use tritium::rng::Rng;
use tritium::ternary;

/// Tensors held in memory, as the upload path reads them.
#[derive(Default)]
struct MemorySource(HashMap<String, Vec<u8>>);

impl WeightSource for MemorySource {
    fn read<'a>(&'a self, name: &'a str, offset: u64, out: &'a mut [u8]) -> ReadFuture<'a> {
        out.copy_from_slice(&self.0[name][offset as usize..offset as usize + out.len()]);
        Box::pin(std::future::ready(Ok::<(), ModelError>(())))
    }
}

/// What the packed products of a test's builders read: f32 inputs as they
/// are, block fixed point of so many digit planes (decode) or f16 pairs
/// (tensor-core prefill).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    F32,
    FixedPoint { digits: u32 },
    F16Pairs,
}

struct Gpu {
    ctx: GpuContext,
    kernels: Kernels,
    dummy: wgpu::Buffer,
    step: wgpu::Buffer,
    /// Scratch for split GEMMs (4 MiB).
    gemm_parts: wgpu::Buffer,
    /// Scratch for fixed-point GEMV inputs of up to 16384 values, and for
    /// those a GEMV writes for the next.
    fixed_planes: wgpu::Buffer,
    fixed_info: wgpu::Buffer,
    fed_planes: wgpu::Buffer,
    fed_info: wgpu::Buffer,
    fed_sums: wgpu::Buffer,
    /// Scratch for f16-pair GEMM inputs of up to 128 tokens of 16384 values.
    coop_pairs: wgpu::Buffer,
    coop_unscale: wgpu::Buffer,
}

/// The device twice: with the optional features it has (subgroup reductions),
/// and forced onto the portable path that needs none.
fn gpus() -> Vec<Gpu> {
    let gpus = vec![Gpu::new(false), Gpu::new(true)];
    assert!(gpus[0].ctx.caps.subgroups, "the subgroup path needs an adapter with subgroups (lavapipe has them)");
    assert!(!gpus[1].ctx.caps.subgroups && !gpus[1].ctx.caps.shader_f16, "the portable path uses no optional feature");
    gpus
}

impl Gpu {
    fn new(portable: bool) -> Self {
        Self::with_options(DeviceOptions { portable, subgroups: !portable, ..Default::default() })
    }

    fn with_options(options: DeviceOptions) -> Self {
        let mut ctx = pollster::block_on(GpuContext::new(&options))
            .expect("a GPU adapter (on a machine without one, install mesa-vulkan-drivers)");
        // The GEMVs take a GPU's teams, whose widths the tests below go through
        // one by one, also on a CPU-emulated adapter (which gives its threads
        // more of a row: the engine tests decode with those teams there).
        ctx.caps.cpu_emulated = false;
        let kernels = Kernels::new(&ctx);
        let dummy = ctx.buffer("dummy", 16, wgpu::BufferUsages::STORAGE);
        let usage = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let step = ctx.buffer_init("step", bytemuck::cast_slice(&[0u32, 1, 0, 0]), usage);
        let gemm_parts = ctx.buffer("gemm parts", 4 << 20, wgpu::BufferUsages::STORAGE);
        let (planes, info) = tritium::engine::ops::FixedInput::bytes(16384);
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let fixed_planes = ctx.buffer("fixed planes", planes, usage);
        let fixed_info = ctx.buffer("fixed info", info, usage);
        let fed_planes = ctx.buffer("fed planes", planes, usage);
        let fed_info = ctx.buffer("fed info", info, usage);
        let sums_usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let fed_sums = ctx.buffer("fed sums", tritium::engine::ops::FedInput::sums_bytes(4), sums_usage);
        // Room for both halves, whichever path a test takes.
        let pair_bytes = tritium::engine::ops::CoopInput::bytes(128, 16384, false);
        let coop_pairs = ctx.buffer("f16 pairs", pair_bytes, usage);
        let coop_unscale = ctx.buffer("f16 pair unscale", 4 * 256, usage);
        Gpu {
            ctx,
            kernels,
            dummy,
            step,
            gemm_parts,
            fixed_planes,
            fixed_info,
            fed_planes,
            fed_info,
            fed_sums,
            coop_pairs,
            coop_unscale,
        }
    }

    /// Builders for one token per step (decode).
    fn ops(&mut self) -> tritium::engine::ops::Ops<'_> {
        self.batch_ops(1)
    }

    /// Builders for up to `tokens` tokens per step (prefill).
    fn batch_ops(&mut self, tokens: usize) -> tritium::engine::ops::Ops<'_> {
        self.ops_with(tokens, false)
    }

    fn ops_with(&mut self, tokens: usize, split: bool) -> tritium::engine::ops::Ops<'_> {
        self.builders(tokens, split, Input::F32, 1e-6)
    }

    /// Builders for one token per step whose packed GEMVs run on 24-bit fixed-point inputs.
    fn fixed_ops(&mut self, eps: f32) -> tritium::engine::ops::Ops<'_> {
        self.builders(1, false, Input::FixedPoint { digits: 3 }, eps)
    }

    /// Builders for `tokens` tokens per step whose packed GEMMs run on
    /// cooperative matrices, split along K where `split`.
    fn coop_ops(&mut self, tokens: usize, split: bool) -> tritium::engine::ops::Ops<'_> {
        self.builders(tokens, split, Input::F16Pairs, 1e-6)
    }

    /// Builders for `tokens` tokens per step, split along K where `split`,
    /// their packed products reading `input`.
    fn builders(&mut self, tokens: usize, split: bool, input: Input, eps: f32) -> tritium::engine::ops::Ops<'_> {
        use tritium::engine::ops::{CoopInput, FedInput, FixedInput};
        let fixed = |digits| FixedInput { planes: &self.fixed_planes, info: &self.fixed_info, digits };
        let fed = |digits| FedInput {
            fixed: FixedInput { planes: &self.fed_planes, info: &self.fed_info, digits },
            sums: &self.fed_sums,
        };
        let coop = CoopInput { pairs: &self.coop_pairs, unscale: &self.coop_unscale };
        tritium::engine::ops::Ops {
            ctx: &self.ctx,
            kernels: &mut self.kernels,
            dummy: &self.dummy,
            step: &self.step,
            tokens,
            inline_norm_stats: None,
            gemm_parts: split.then_some(&self.gemm_parts),
            fixed_input: match input {
                Input::FixedPoint { digits } => Some(fixed(digits)),
                _ => None,
            },
            fed_input: match input {
                Input::FixedPoint { digits } => Some(fed(digits)),
                _ => None,
            },
            coop_input: (input == Input::F16Pairs).then_some(coop),
            eps,
        }
    }

    /// The f16 pairs of `tokens` rows of `n` values left in the pair scratch
    /// by a graph of `graph_tokens`, as (hi + lo) * unscale, and the largest |hi| of each row.
    fn read_f16_pairs(&self, graph_tokens: usize, tokens: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let padded = tritium::engine::ops::CoopInput::padded_tokens(graph_tokens);
        let bytes = block_on(self.ctx.read_buffer(&self.coop_pairs, (4 * padded * n) as u64)).unwrap();
        let halves: Vec<f32> = bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
        let unscale = self.read(&self.coop_unscale, tokens);
        let mut values = vec![0.0; tokens * n];
        let mut largest = vec![0.0f32; tokens];
        for t in 0..tokens {
            for c in 0..n {
                let (hi, lo) = (halves[t * n + c], halves[padded * n + t * n + c]);
                values[t * n + c] = (hi + lo) * unscale[t];
                largest[t] = largest[t].max(hi.abs());
            }
        }
        (values, largest)
    }

    /// Builders for one token per step whose GEMVs compute norm statistics themselves.
    fn inline_ops(&mut self, eps: f32) -> tritium::engine::ops::Ops<'_> {
        tritium::engine::ops::Ops { inline_norm_stats: Some(eps), ..self.batch_ops(1) }
    }

    /// Sets the step uniform: the first token's position and the step's tokens.
    fn set_step(&self, pos: u32, tokens: u32) {
        self.ctx.queue.write_buffer(&self.step, 0, bytemuck::cast_slice(&[pos, tokens]));
    }

    fn f32s(&self, values: &[f32]) -> wgpu::Buffer {
        self.data(bytemuck::cast_slice(values))
    }

    /// A storage buffer holding `bytes`, which tests can write and read back.
    fn data(&self, bytes: &[u8]) -> wgpu::Buffer {
        use wgpu::BufferUsages as U;
        self.ctx.buffer_init("test data", bytes, U::STORAGE | U::COPY_SRC | U::COPY_DST)
    }

    fn set_pos(&self, pos: u32) {
        self.ctx.queue.write_buffer(&self.step, 0, bytemuck::bytes_of(&pos));
    }

    fn run(&self, dispatches: &[Dispatch]) {
        self.run_grids(dispatches, |d, pass| d.encode(pass));
    }

    /// Runs `dispatches` as the engine runs a step at `pos`: decode
    /// attention launches only the workgroups that hold positions 0..=pos.
    fn run_at(&self, dispatches: &[Dispatch], pos: usize) {
        self.run_grids(dispatches, |d, pass| d.encode_at(pass, pos));
    }

    fn run_grids(&self, dispatches: &[Dispatch], encode: impl Fn(&Dispatch, &mut wgpu::ComputePass<'_>)) {
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            dispatches.iter().for_each(|d| encode(d, &mut pass));
        }
        self.ctx.queue.submit([encoder.finish()]);
        block_on(self.ctx.idle()).unwrap();
    }

    /// A KV cache holding `values` as `dtype` stores them (f16: each rounded
    /// to nearest, in order).
    fn kv_cache(&self, values: &[f32], dtype: KvDtype) -> wgpu::Buffer {
        match dtype {
            KvDtype::F32 => self.f32s(values),
            KvDtype::F16 => {
                let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
                self.data(bytemuck::cast_slice(&halves))
            }
        }
    }

    /// The first `n` values of a KV cache of `dtype`.
    fn read_kv_cache(&self, buffer: &wgpu::Buffer, n: usize, dtype: KvDtype) -> Vec<f32> {
        match dtype {
            KvDtype::F32 => self.read(buffer, n),
            KvDtype::F16 => {
                let bytes = block_on(self.ctx.read_buffer(buffer, (n * 2) as u64)).unwrap();
                bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
        }
    }

    fn read(&self, buffer: &wgpu::Buffer, n: usize) -> Vec<f32> {
        let bytes = block_on(self.ctx.read_buffer(buffer, (n * 4) as u64)).unwrap();
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }

    /// The first `n` values held in the fixed-point input scratch, decoded as
    /// fixed_word.wgsl lays them out.
    fn read_fixed_point(&self, n: usize) -> Vec<f32> {
        let words = n / 16;
        let u32s =
            |b: Vec<u8>| -> Vec<u32> { b.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect() };
        let planes = u32s(block_on(self.ctx.read_buffer(&self.fixed_planes, (3 * words * 16) as u64)).unwrap());
        let info = u32s(block_on(self.ctx.read_buffer(&self.fixed_info, (words * 8) as u64)).unwrap());
        let mut values = vec![0.0; n];
        for w in 0..words {
            let scale = f32::from_bits(info[2 * w]);
            for (c, value) in values[16 * w..16 * (w + 1)].iter_mut().enumerate() {
                // Input 16w + 4i + j is byte i of component j of each digit plane.
                let (i, j) = (c / 4, c % 4);
                let digit = |k: usize| (planes[(k * words + w) * 4 + j] >> (8 * i)) as u8 as i8 as i32;
                *value = scale * (digit(2) * 65536 + digit(1) * 256 + digit(0)) as f32;
            }
        }
        values
    }

    /// Uploads `m` from `source`, split into bindings of at most `max_binding` bytes.
    fn matrix(&self, m: &Matrix, source: &MemorySource, max_binding: u64) -> GpuMatrix {
        let mut progress = |_, _| {};
        block_on(Uploader::new(&self.ctx, source, max_binding, 0, &mut progress).matrix(m)).unwrap()
    }
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

fn encode(values: &[f32], dtype: &DType) -> Vec<u8> {
    match dtype {
        DType::F32 => bytemuck::cast_slice(values).to_vec(),
        DType::F16 => values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        DType::BF16 => values.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
        _ => unreachable!(),
    }
}

/// What the file would hold after storing in `dtype`.
fn round_trip(values: &[f32], dtype: &DType) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    tritium::model::tensors::to_f32(dtype, &encode(values, dtype), &mut out);
    out
}

/// A random packed matrix in `source`; returns its layout and dequantized rows.
fn packed_matrix(
    rng: &mut Rng,
    source: &mut MemorySource,
    rows: usize,
    cols: usize,
    scale_dtype: DType,
) -> (Matrix, Vec<f32>) {
    let mut packed = vec![0u8; rows * cols / 4];
    rng.fill_below(&mut packed, 81);
    let scales = round_trip(&(0..rows * cols / 64).map(|_| 0.01 + rng.next_f32()).collect::<Vec<_>>(), &scale_dtype);
    let mut dense = vec![0.0; rows * cols];
    for r in 0..rows {
        ternary::dequantize_row(
            &packed[r * cols / 4..(r + 1) * cols / 4],
            &scales[r * cols / 64..(r + 1) * cols / 64],
            64,
            &mut dense[r * cols..(r + 1) * cols],
        )
        .unwrap();
    }
    let name = format!("w{rows}x{cols}{scale_dtype}");
    source.0.insert(name.clone(), packed);
    source.0.insert(format!("{name}.scales"), encode(&scales, &scale_dtype));
    let storage = Storage::Packed { scales: format!("{name}.scales"), scale_dtype, group_size: 64 };
    (Matrix { name, rows, cols, storage }, dense)
}

fn dense_matrix(
    rng: &mut Rng,
    source: &mut MemorySource,
    rows: usize,
    cols: usize,
    dtype: DType,
) -> (Matrix, Vec<f32>) {
    let values = round_trip(&random(rng, rows * cols), &dtype);
    let name = format!("d{rows}x{cols}{dtype}");
    source.0.insert(name.clone(), encode(&values, &dtype));
    (Matrix { name, rows, cols, storage: Storage::Dense { dtype } }, values)
}

fn assert_close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{name}: element {i} is {g}, expected {w} (tolerance {tol} x {scale})");
    }
}

fn matvec(w: &[f32], cols: usize, x: &[f32]) -> Vec<f32> {
    w.chunks(cols).map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
}

/// What the GEMV tests expect on the CPU: `W x` into rows 3.. of an output 5
/// rows longer, and `W rmsnorm(rmsnorm(x, n1), n2) + bias + residual`.
struct Products {
    plain: Vec<f32>,
    fused: Vec<f32>,
}

impl Products {
    #[allow(clippy::too_many_arguments)]
    fn new(
        w: &[f32],
        cols: usize,
        x: &[f32],
        n1: &[f32],
        n2: &[f32],
        bias: &[f32],
        residual: &[f32],
        eps: f32,
    ) -> Self {
        let rows = bias.len();
        let mut plain = vec![0.0; rows + 5];
        plain[3..3 + rows].copy_from_slice(&matvec(w, cols, x));
        let mut h = vec![0.0; cols];
        reference::rmsnorm(&mut h, x, n1, eps);
        let mut input = vec![0.0; cols];
        reference::rmsnorm(&mut input, &h, n2, eps);
        let fused = matvec(w, cols, &input).iter().zip(bias).zip(residual).map(|((a, b), r)| a + b + r).collect();
        Products { plain, fused }
    }
}

/// A GEMM test's case: `W rmsnorm(rmsnorm(x, n1), n2) + bias` (both fused
/// norms, as the GEMV does) added to `residual`, for the first `tokens` of a
/// graph recorded for `graph_tokens` (`x` is `[graph_tokens, cols]`).
struct NormedProduct {
    x: Vec<f32>,
    n1: Vec<f32>,
    n2: Vec<f32>,
    bias: Vec<f32>,
    residual: Vec<f32>,
    graph_tokens: usize,
    tokens: usize,
}

impl NormedProduct {
    /// A case over inputs `x`, with random norm weights, bias and residual.
    fn random(rng: &mut Rng, x: Vec<f32>, rows: usize, graph_tokens: usize, tokens: usize) -> Self {
        let cols = x.len() / graph_tokens;
        let (n1, n2) = (random(rng, cols), random(rng, cols));
        let (bias, residual) = (random(rng, rows), random(rng, graph_tokens * rows));
        NormedProduct { x, n1, n2, bias, residual, graph_tokens, tokens }
    }

    fn cols(&self) -> usize {
        self.n1.len()
    }

    /// What the CPU gives for it with weights `w`; rows of later tokens keep their residual.
    fn expected(&self, w: &[f32], eps: f32) -> Vec<f32> {
        let (rows, cols) = (self.bias.len(), self.cols());
        let mut want = self.residual.clone();
        for t in 0..self.tokens {
            let mut h = vec![0.0; cols];
            reference::rmsnorm(&mut h, &self.x[t * cols..(t + 1) * cols], &self.n1, eps);
            let mut input = vec![0.0; cols];
            reference::rmsnorm(&mut input, &h, &self.n2, eps);
            for (r, v) in matvec(w, cols, &input).iter().enumerate() {
                want[t * rows + r] += v + self.bias[r];
            }
        }
        want
    }

    /// Runs it on the GPU with `gm` (norm statistics, then the product, its
    /// packed products reading `input`, split along K where `split`); returns
    /// the output and the labels of the dispatches that ran.
    fn run(&self, gpu: &mut Gpu, gm: &GpuMatrix, input: Input, split: bool, eps: f32) -> (Vec<f32>, Vec<String>) {
        let (rows, cols) = (self.bias.len(), self.cols());
        let (xb, n1b, n2b) = (gpu.f32s(&self.x), gpu.f32s(&self.n1), gpu.f32s(&self.n2));
        let (biasb, yb) = (gpu.f32s(&self.bias), gpu.f32s(&self.residual));
        let stats = gpu.f32s(&vec![0.0; 2 * self.graph_tokens]);
        let mut ops = gpu.builders(self.graph_tokens, split, input, eps);
        let mut d: Vec<_> = block_on(ops.norm_stats(&xb, cols, Some(&n1b), eps, &stats)).unwrap().into_iter().collect();
        let norms = tritium::engine::ops::InputNorms { stats: &stats, norm1: Some(&n1b), norm2: Some(&n2b) };
        d.extend(block_on(ops.linear(gm, &xb, norms, Some(&biasb), true, Out::all(&yb, rows))).unwrap());
        gpu.set_step(0, self.tokens as u32);
        gpu.run(&d);
        gpu.set_step(0, 1);
        (gpu.read(&yb, self.graph_tokens * rows), d.into_iter().map(|d| d.label).collect())
    }
}

/// Small models' decode folds SwiGLU into the down GEMV: the product of its
/// inputs computed inside (both ternary GEMVs and the dense one) against the CPU.
#[test]
fn gemv_of_swiglu_inputs_matches_the_cpu() {
    for mut gpu in gpus() {
        let mut rng = Rng::new(9);
        for (rows, cols, dense) in [(37, 320, false), (9, 16384, false), (21, 192, true)] {
            let mut source = MemorySource::default();
            let (m, w) = if dense {
                dense_matrix(&mut rng, &mut source, rows, cols, DType::F32)
            } else {
                packed_matrix(&mut rng, &mut source, rows, cols, DType::F32)
            };
            let gm = gpu.matrix(&m, &source, 1 << 20);
            let gate_up: Vec<f32> = random(&mut rng, 2 * cols).iter().map(|v| 4.0 * v).collect();
            let residual = random(&mut rng, rows);
            let input: Vec<f32> =
                gate_up[..cols].iter().zip(&gate_up[cols..]).map(|(g, u)| reference::silu(*g) * u).collect();
            let want: Vec<f32> = matvec(&w, cols, &input).iter().zip(&residual).map(|(a, r)| a + r).collect();
            let (gub, yb) = (gpu.f32s(&gate_up), gpu.f32s(&residual));
            let mut ops = gpu.inline_ops(1e-6);
            assert!(ops.swiglu_in_linear(&gm));
            let d = block_on(ops.linear_of_swiglu(&gm, &gub, None, true, Out::all(&yb, rows), None)).unwrap();
            gpu.run(&d);
            assert_close(&format!("gemv of swiglu {}", m.name), &gpu.read(&yb, rows), &want, 1e-4);
            // Prefill keeps the separate SwiGLU pass.
            assert!(!gpu.batch_ops(4).swiglu_in_linear(&gm));
        }
    }
}

#[test]
fn gemv_matches_the_cpu_for_packed_and_dense_weights_split_or_whole() {
    for mut gpu in gpus() {
        let mut rng = Rng::new(1);
        let eps = 1e-6;
        let mut team_sizes = std::collections::BTreeSet::new();
        let mut kernels = std::collections::BTreeSet::new();
        // (rows, cols, split bytes): rows not a multiple of 64, cols not a multiple of 256,
        // and a long row (4160 columns, 260 words: several per lane).
        for (rows, cols, max_binding) in [
            (1, 64, 1 << 20),
            (37, 320, 1 << 20),
            (203, 1088, 4096),
            (130, 192, 256),
            (19, 4160, 1 << 20),
            // Rows of 256 groups and more take the wide kernel (ops::WIDE_GEMV_MIN_GROUPS).
            (37, 16384, 1 << 20),
            (9, 16448, 4112 * 4),
            // Tall matrices get two or four rows per team (ops::MIN_TEAMS).
            (1030, 1024, 1 << 20),
            (4100, 64, 4096),
            // So many teams that they get 8 lanes each (ops::MANY_TEAMS), split.
            (131_100, 256, 1 << 22),
        ] {
            for (k, dtype) in [DType::F32, DType::F16, DType::BF16].into_iter().enumerate() {
                let mut source = MemorySource::default();
                let (m, w) = if k == 1 && rows == 37 {
                    dense_matrix(&mut rng, &mut source, rows, cols, dtype.clone())
                } else {
                    packed_matrix(&mut rng, &mut source, rows, cols, dtype.clone())
                };
                let gm = gpu.matrix(&m, &source, max_binding);
                assert!(max_binding > 1 << 19 || gm.chunks.len() > 1, "the test means to split {}", m.name);
                let team = tritium::engine::ops::GemvTeams::for_matrix(&gm);
                team_sizes.insert(team.rows_per_team);
                assert_eq!(team.lanes == 8, rows == 131_100, "lanes {} for {rows} rows", team.lanes);
                kernels.insert(tritium::engine::ops::wide_gemv(&gm));
                let x = random(&mut rng, cols);
                let (n1, n2) = (random(&mut rng, cols), random(&mut rng, cols));
                let (bias, residual) = (random(&mut rng, rows), random(&mut rng, rows));

                // Plain product, into rows 3.. of a wider output (as k after q).
                let (xb, y) = (gpu.f32s(&x), gpu.f32s(&vec![0.0; rows + 5]));
                let stats = gpu.f32s(&[0.0, 0.0]);
                let none = tritium::engine::ops::InputNorms { stats: &stats, norm1: None, norm2: None };
                let out = Out { buffer: &y, offset: 3, width: rows + 5 };
                let d = block_on(gpu.ops().linear(&gm, &xb, none, None, false, out)).unwrap();
                gpu.run(&d);
                let want = Products::new(&w, cols, &x, &n1, &n2, &bias, &residual, eps);
                assert_close(&format!("gemv {}", m.name), &gpu.read(&y, rows + 5), &want.plain, 1e-4);

                // Both fused norms, bias and residual.
                let want = want.fused;
                let (n1b, n2b, biasb, yb) = (gpu.f32s(&n1), gpu.f32s(&n2), gpu.f32s(&bias), gpu.f32s(&residual));
                let mut d: Vec<_> =
                    block_on(gpu.ops().norm_stats(&xb, cols, Some(&n1b), eps, &stats)).unwrap().into_iter().collect();
                let norms = tritium::engine::ops::InputNorms { stats: &stats, norm1: Some(&n1b), norm2: Some(&n2b) };
                d.extend(block_on(gpu.ops().linear(&gm, &xb, norms, Some(&biasb), true, Out::all(&yb, rows))).unwrap());
                gpu.run(&d);
                assert_close(&format!("fused gemv {}", m.name), &gpu.read(&yb, rows), &want, 1e-4);

                // The same with the statistics computed inside the GEMV: no norm dispatch.
                let (yb, unused) = (gpu.f32s(&residual), gpu.f32s(&[f32::NAN, f32::NAN]));
                let mut ops = gpu.inline_ops(eps);
                assert!(block_on(ops.norm_stats(&xb, cols, Some(&n1b), eps, &unused)).unwrap().is_none());
                let norms = tritium::engine::ops::InputNorms { stats: &unused, norm1: Some(&n1b), norm2: Some(&n2b) };
                let d = block_on(ops.linear(&gm, &xb, norms, Some(&biasb), true, Out::all(&yb, rows))).unwrap();
                gpu.run(&d);
                assert_close(&format!("gemv {} with inline statistics", m.name), &gpu.read(&yb, rows), &want, 1e-4);
            }
        }
        assert_eq!(team_sizes.into_iter().collect::<Vec<_>>(), [1, 2, 4], "every rows-per-team choice is tested");
        assert_eq!(kernels.into_iter().collect::<Vec<_>>(), [false, true], "both ternary GEMVs are tested");
    }
}

/// The fixed-point GEMV (fixed_point.wgsl, then gemv_fixed.wgsl) against the
/// CPU's f32 product: its integer sums are exact and its inputs as fine as
/// f32's rounding, so it is held to ten times the f32 GEMV's tolerance.
#[test]
fn fixed_point_gemv_matches_the_cpu() {
    for mut gpu in gpus() {
        let mut rng = Rng::new(12);
        let eps = 1e-6;
        let mut lanes = std::collections::BTreeSet::new();
        let mut words_per_step = std::collections::BTreeSet::new();
        let mut own_conversion = std::collections::BTreeSet::new();
        let mut teams = std::collections::BTreeSet::new();
        // (rows, cols, split bytes): every team width from 4 to 256 threads
        // reading a word of a row per step and 64 and 128 threads reading two
        // (ops::fixed_gemv_team), a team wider than its rows' words (896
        // columns), rows not a multiple of a workgroup's, split matrices;
        // inputs the GEMV converts itself (up to 2048 columns) and inputs a
        // conversion dispatch converts.
        for (rows, cols, max_binding) in [
            (1, 64, 1 << 20),
            (37, 128, 1 << 20),
            (203, 256, 4608),
            (130, 512, 1 << 20),
            (19, 896, 1 << 20),
            (11, 3072, 1 << 20),
            (37, 6144, 1 << 20),
            (19, 8960, 1 << 20),
            (9, 12352, 3088 * 4),
            (21, 16384, 4096 * 8),
        ] {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let mut source = MemorySource::default();
                let (m, w) = packed_matrix(&mut rng, &mut source, rows, cols, dtype.clone());
                let gm = gpu.matrix(&m, &source, max_binding);
                assert!(max_binding > 1 << 19 || gm.chunks.len() > 1, "the test means to split {}", m.name);
                let (team_lanes, team_words) = tritium::engine::ops::fixed_gemv_team(&gm, false);
                lanes.insert(team_lanes);
                words_per_step.insert(team_words);
                teams.insert((team_lanes, team_words));
                own_conversion.insert(tritium::engine::ops::converts_own_input(&gm, 0));
                // Inputs of very different sizes, so that each word's scale matters.
                let x: Vec<f32> =
                    random(&mut rng, cols).iter().enumerate().map(|(i, v)| v * (1 + i % 7) as f32).collect();
                let (n1, n2) = (random(&mut rng, cols), random(&mut rng, cols));
                let (bias, residual) = (random(&mut rng, rows), random(&mut rng, rows));
                let unused = gpu.f32s(&[f32::NAN, f32::NAN]);

                // Plain product, into rows 3.. of a wider output (as k after q).
                let (xb, y) = (gpu.f32s(&x), gpu.f32s(&vec![0.0; rows + 5]));
                let mut ops = gpu.fixed_ops(eps);
                assert!(ops.fixed_gemv(&gm) && ops.computes_norm_stats(&gm));
                let none = tritium::engine::ops::InputNorms { stats: &unused, norm1: None, norm2: None };
                let out = Out { buffer: &y, offset: 3, width: rows + 5 };
                let d = block_on(ops.linear(&gm, &xb, none, None, false, out)).unwrap();
                gpu.run(&d);
                let want = Products::new(&w, cols, &x, &n1, &n2, &bias, &residual, eps);
                assert_close(&format!("fixed gemv {}", m.name), &gpu.read(&y, rows + 5), &want.plain, 1e-5);

                // Both norms (statistics computed by the conversion), bias and residual.
                let want = want.fused;
                let (n1b, n2b, biasb, yb) = (gpu.f32s(&n1), gpu.f32s(&n2), gpu.f32s(&bias), gpu.f32s(&residual));
                let norms = tritium::engine::ops::InputNorms { stats: &unused, norm1: Some(&n1b), norm2: Some(&n2b) };
                let mut ops = gpu.fixed_ops(eps);
                let d = block_on(ops.linear(&gm, &xb, norms, Some(&biasb), true, Out::all(&yb, rows))).unwrap();
                gpu.run(&d);
                assert_close(&format!("fused fixed gemv {}", m.name), &gpu.read(&yb, rows), &want, 1e-5);

                // SwiGLU of gate and up values as the input.
                let gate_up: Vec<f32> = random(&mut rng, 2 * cols).iter().map(|v| 4.0 * v).collect();
                let input: Vec<f32> =
                    gate_up[..cols].iter().zip(&gate_up[cols..]).map(|(g, u)| reference::silu(*g) * u).collect();
                let want: Vec<f32> = matvec(&w, cols, &input).iter().zip(&residual).map(|(a, r)| a + r).collect();
                let (gub, yb) = (gpu.f32s(&gate_up), gpu.f32s(&residual));
                let mut ops = gpu.fixed_ops(eps);
                assert!(ops.swiglu_in_linear(&gm));
                let d = block_on(ops.linear_of_swiglu(&gm, &gub, None, true, Out::all(&yb, rows), None)).unwrap();
                gpu.run(&d);
                assert_close(&format!("fixed gemv of swiglu {}", m.name), &gpu.read(&yb, rows), &want, 1e-5);
            }
        }
        assert_eq!(lanes.into_iter().collect::<Vec<_>>(), [4, 8, 16, 32, 64, 128, 256], "every team width");
        assert_eq!(words_per_step.into_iter().collect::<Vec<_>>(), [1, 2], "one and two words a step");
        assert!(teams.contains(&(128, 2)), "128 threads a row in pair steps");
        assert_eq!(own_conversion.into_iter().collect::<Vec<_>>(), [false, true], "both input conversions");
    }
}

/// A fixed-point GEMV that also writes its output, times the next norm, as
/// the next GEMV's fixed-point input (gemv_ternary_fixed_feeding, as the o
/// projection feeds gate and up) with an exact sum of squares, and the next
/// GEMV over it, against the CPU: `y = W x + bias + residual` and
/// `z = W2 rmsnorm(y, g) + bias2`.
#[test]
fn gemv_feeding_the_next_matches_the_cpu() {
    for mut gpu in gpus() {
        let mut rng = Rng::new(14);
        let eps = 1e-6;
        let mut lanes = std::collections::BTreeSet::new();
        let mut words_per_step = std::collections::BTreeSet::new();
        // (rows, cols, next rows): every team width that feeds (4 to 64
        // threads a row: 256 to 16 rows a workgroup; the last case's threads
        // read two words a step, as 32B's down projection's do), rows not a
        // multiple of a workgroup's (the first two).
        // The residual's size varies, so that the exact sums of squares span
        // their three words (and carry between them).
        let cases = [
            (128, 64, 37, 1.0),
            (320, 128, 64, 1e3),
            (192, 256, 203, 1e-3),
            (448, 512, 5, 30.0),
            (64, 3072, 130, 1.0),
            (64, 16384, 21, 3.0),
        ];
        for (case, (rows, cols, next_rows, size)) in cases.into_iter().enumerate() {
            let mut source = MemorySource::default();
            let (m, w) = packed_matrix(&mut rng, &mut source, rows, cols, DType::F16);
            let (m2, w2) = packed_matrix(&mut rng, &mut source, next_rows, rows, DType::BF16);
            let (gm, gm2) = (gpu.matrix(&m, &source, 1 << 20), gpu.matrix(&m2, &source, 1 << 20));
            let (team_lanes, team_words) = tritium::engine::ops::fixed_gemv_team(&gm, false);
            lanes.insert(team_lanes);
            words_per_step.insert(team_words);
            // The input as SwiGLU of gate and up values, of very different sizes.
            let gate_up: Vec<f32> =
                random(&mut rng, 2 * cols).iter().enumerate().map(|(i, v)| v * (1 + i % 5) as f32).collect();
            let x: Vec<f32> =
                gate_up[..cols].iter().zip(&gate_up[cols..]).map(|(g, u)| reference::silu(*g) * u).collect();
            let residual: Vec<f32> = random(&mut rng, rows).iter().map(|v| v * size).collect();
            let (bias, g) = (random(&mut rng, rows), random(&mut rng, rows));
            let bias2 = random(&mut rng, next_rows);
            let (gub, scratch) = (gpu.f32s(&gate_up), gpu.f32s(&vec![0.0; rows]));
            let (biasb, yb, gb) = (gpu.f32s(&bias), gpu.f32s(&residual), gpu.f32s(&g));
            let (bias2b, zb) = (gpu.f32s(&bias2), gpu.f32s(&vec![0.0; next_rows]));

            let mut ops = gpu.fixed_ops(eps);
            assert!(ops.feeds_next(&gm, &[&gm2]), "{} feeds {}", m.name, m2.name);
            // Each case in its own sum slot, as each layer has one.
            let (slot, feed) = (case % 4, Some(Feed { norm: &gb, slot: case % 4 }));
            let mut d = if case % 2 == 0 {
                // A product of SwiGLU's output leaves x in the fixed-point scratch
                // (its conversion dispatch), as attention leaves the o
                // projection's input; the feeding GEMV then reads it.
                let scratch_out = Out::all(&scratch, rows);
                let mut d = block_on(ops.linear_of_swiglu(&gm, &gub, None, false, scratch_out, None)).unwrap();
                d.extend(block_on(ops.linear_of_fixed(&gm, Some(&biasb), true, Out::all(&yb, rows), feed)).unwrap());
                d
            } else {
                // Both in one call, as the down projection feeds the next layer.
                block_on(ops.linear_of_swiglu(&gm, &gub, Some(&biasb), true, Out::all(&yb, rows), feed)).unwrap()
            };
            d.extend(block_on(ops.linear_of_fed(&gm2, slot, Some(&bias2b), Out::all(&zb, next_rows))).unwrap());
            assert!(block_on(ops.linear_of_fed(&gm2, 4, None, Out::all(&zb, next_rows))).is_err(), "4 slots");
            // Zero at the step's start, as the engine does.
            gpu.ctx.queue.write_buffer(&gpu.fed_sums, 0, &vec![0; gpu.fed_sums.size() as usize]);
            gpu.run(&d);

            let y: Vec<f32> =
                matvec(&w, cols, &x).iter().zip(&bias).zip(&residual).map(|((a, b), r)| a + b + r).collect();
            assert_close(&format!("feeding gemv {}", m.name), &gpu.read(&yb, rows), &y, 1e-5);
            let mut normed = vec![0.0; rows];
            reference::rmsnorm(&mut normed, &y, &g, eps);
            let z: Vec<f32> = matvec(&w2, rows, &normed).iter().zip(&bias2).map(|(a, b)| a + b).collect();
            assert_close(&format!("gemv over the fed input {}", m2.name), &gpu.read(&zb, next_rows), &z, 1e-5);
        }
        assert_eq!(lanes.into_iter().collect::<Vec<_>>(), [4, 8, 16, 32, 64], "every team width that feeds");
        assert_eq!(words_per_step.into_iter().collect::<Vec<_>>(), [1, 2], "one and two words a step");

        // What cannot feed: teams of 128 threads (8 rows a workgroup, half a
        // word), rows that are not whole words, or a next product of another width.
        let mut source = MemorySource::default();
        let wide = gpu.matrix(&packed_matrix(&mut rng, &mut source, 64, 6144, DType::F16).0, &source, 1 << 20);
        let ragged = gpu.matrix(&packed_matrix(&mut rng, &mut source, 40, 768, DType::F16).0, &source, 1 << 20);
        let next = gpu.matrix(&packed_matrix(&mut rng, &mut source, 16, 64, DType::F16).0, &source, 1 << 20);
        let ops = gpu.fixed_ops(eps);
        assert!(!ops.feeds_next(&wide, &[]) && !ops.feeds_next(&ragged, &[]));
        assert!(ops.feeds_next(&next, &[]) && !ops.feeds_next(&next, &[&wide]));
    }
}

/// The stacked gate and up GEMV over a fed input that also writes SwiGLU of
/// its halves as the down projection's fixed-point input
/// (gemv_ternary_fixed_swiglu_feeding), and down's GEMV over it, against the
/// CPU: `x` fed as in gemv_feeding_the_next_matches_the_cpu, `gu = Wgu
/// rmsnorm(x, g) + bias`, `out = Wd (silu(gate) * up) + residual`.
#[test]
fn gemv_feeding_swiglu_matches_the_cpu() {
    for mut gpu in gpus() {
        let mut rng = Rng::new(15);
        let eps = 1e-6;
        let mut gate_rows_seen = std::collections::BTreeSet::new();
        // (hidden, first product's columns, intermediate, down's rows): gate
        // and up teams of 4, 8 and 32 threads (128, 64 and 16 gate rows a
        // workgroup), the last two with 64 threads elsewhere; from hidden
        // size 2048 on gate and up's rows are long enough that each thread
        // reads two words a step (ops::fixed_gemv_team). Hidden sizes 320 and
        // 4096 give gate and up's threads a ragged step and four whole pair
        // steps, which build their pipeline for its input length; the others
        // three whole steps or fewer.
        for (hidden, cols, inter, out_rows) in [
            (64, 64, 128, 37),
            (320, 64, 128, 9),
            (128, 64, 128, 5),
            (1536, 384, 64, 21),
            (2048, 64, 64, 21),
            (3072, 64, 320, 130),
            (4096, 64, 64, 21),
        ] {
            let mut source = MemorySource::default();
            let (m, w) = packed_matrix(&mut rng, &mut source, hidden, cols, DType::F16);
            let (m_gu, w_gu) = packed_matrix(&mut rng, &mut source, 2 * inter, hidden, DType::BF16);
            let (m_d, w_d) = packed_matrix(&mut rng, &mut source, out_rows, inter, DType::F32);
            let gm = gpu.matrix(&m, &source, 1 << 20);
            let (gm_gu, gm_d) = (gpu.matrix(&m_gu, &source, 1 << 20), gpu.matrix(&m_d, &source, 1 << 20));
            // The first product's input as SwiGLU of gate and up values (its conversion dispatch).
            let x_gate_up = random(&mut rng, 2 * cols);
            let x: Vec<f32> =
                x_gate_up[..cols].iter().zip(&x_gate_up[cols..]).map(|(g, u)| reference::silu(*g) * u).collect();
            let (g, bias_gu) = (random(&mut rng, hidden), random(&mut rng, 2 * inter));
            let residual = random(&mut rng, out_rows);
            let (xb, yb, gb) = (gpu.f32s(&x_gate_up), gpu.f32s(&vec![0.0; hidden]), gpu.f32s(&g));
            let (bias_gub, gub) = (gpu.f32s(&bias_gu), gpu.f32s(&vec![0.0; 2 * inter]));
            let outb = gpu.f32s(&residual);

            let mut ops = gpu.fixed_ops(eps);
            assert!(ops.feeds_next(&gm, &[&gm_gu]) && ops.feeds_swiglu(&gm_gu, &gm_d), "{} feeds {}", m.name, m_d.name);
            let feed = Some(Feed { norm: &gb, slot: 1 });
            let mut d = block_on(ops.linear_of_swiglu(&gm, &xb, None, false, Out::all(&yb, hidden), feed)).unwrap();
            let gu_out = Out::all(&gub, 2 * inter);
            let gu_d = block_on(ops.linear_of_fed_feeding_swiglu(&gm_gu, 1, Some(&bias_gub), gu_out, &gm_d)).unwrap();
            // Workgroups hold whole words of gate rows, and as many up rows.
            let gate_rows = inter / gu_d[0].workgroups.iter().product::<u32>() as usize;
            assert!(gate_rows.is_multiple_of(16), "{gate_rows} gate rows a workgroup");
            gate_rows_seen.insert(gate_rows);
            d.extend(gu_d);
            d.extend(block_on(ops.linear_of_fixed(&gm_d, None, true, Out::all(&outb, out_rows), None)).unwrap());
            gpu.ctx.queue.write_buffer(&gpu.fed_sums, 0, &vec![0; gpu.fed_sums.size() as usize]);
            gpu.run(&d);

            let y = matvec(&w, cols, &x);
            let mut normed = vec![0.0; hidden];
            reference::rmsnorm(&mut normed, &y, &g, eps);
            let gu: Vec<f32> = matvec(&w_gu, hidden, &normed).iter().zip(&bias_gu).map(|(a, b)| a + b).collect();
            assert_close(&format!("gate and up feeding down {}", m_gu.name), &gpu.read(&gub, 2 * inter), &gu, 1e-5);
            let h: Vec<f32> = gu[..inter].iter().zip(&gu[inter..]).map(|(g, u)| reference::silu(*g) * u).collect();
            let want: Vec<f32> = matvec(&w_d, inter, &h).iter().zip(&residual).map(|(a, r)| a + r).collect();
            assert_close(
                &format!("down over SwiGLU fed by gate and up {}", m_d.name),
                &gpu.read(&outb, out_rows),
                &want,
                1e-5,
            );
        }
        assert_eq!(gate_rows_seen.into_iter().collect::<Vec<_>>(), [16, 64, 128], "team widths 32, 8 and 4");

        // What cannot feed SwiGLU on: gate rows that are not whole workgroups'
        // (teams of 4 threads: 128 gate rows), or a down of another width.
        let mut source = MemorySource::default();
        let gate_up = gpu.matrix(&packed_matrix(&mut rng, &mut source, 128, 64, DType::F16).0, &source, 1 << 20);
        let down = gpu.matrix(&packed_matrix(&mut rng, &mut source, 16, 64, DType::F16).0, &source, 1 << 20);
        let wide_gate_up = gpu.matrix(&packed_matrix(&mut rng, &mut source, 256, 1536, DType::F16).0, &source, 1 << 20);
        let ops = gpu.fixed_ops(eps);
        assert!(!ops.feeds_swiglu(&gate_up, &down) && !ops.feeds_swiglu(&wide_gate_up, &down));
    }
}

/// The fixed-point GEMV on 16- and 8-bit inputs (`--act-bits`) against the
/// CPU's f32 product: each input is off by at most half a step, its word's
/// largest |value| / 32512 or / 127, so row r is off by at most
/// sum_c |w[r, c]| * half a step of c's word (and f32 rounding). The error
/// must also exceed what 24 bits leave, so the test knows the option acts.
#[test]
fn reduced_precision_fixed_point_gemv_stays_within_its_rounding() {
    for mut gpu in gpus() {
        let mut rng = Rng::new(21);
        for (digits, amax) in [(2, 32512.0f64), (1, 127.0)] {
            for (rows, cols) in [(37, 384), (130, 1536), (37, 6144)] {
                let mut source = MemorySource::default();
                let (m, w) = packed_matrix(&mut rng, &mut source, rows, cols, DType::F32);
                let gm = gpu.matrix(&m, &source, 1 << 20);
                let x: Vec<f32> =
                    random(&mut rng, cols).iter().enumerate().map(|(i, v)| v * (1 + i % 7) as f32).collect();
                let half_steps: Vec<f64> = x
                    .chunks(16)
                    .flat_map(|word| {
                        let largest = word.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
                        [0.5 * largest / amax; 16]
                    })
                    .collect();
                let (xb, y) = (gpu.f32s(&x), gpu.f32s(&vec![0.0; rows]));
                let unused = gpu.f32s(&[f32::NAN, f32::NAN]);
                let mut ops = gpu.builders(1, false, Input::FixedPoint { digits }, 1e-6);
                let none = tritium::engine::ops::InputNorms { stats: &unused, norm1: None, norm2: None };
                let d = block_on(ops.linear(&gm, &xb, none, None, false, Out::all(&y, rows))).unwrap();
                gpu.run(&d);
                let got = gpu.read(&y, rows);
                let want = matvec(&w, cols, &x);
                let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                let mut largest_error = 0f32;
                for (r, (g, v)) in got.iter().zip(&want).enumerate() {
                    let row = &w[r * cols..(r + 1) * cols];
                    let bound: f64 = row.iter().zip(&half_steps).map(|(a, h)| a.abs() as f64 * h).sum();
                    let error = (g - v).abs();
                    let allowed = bound as f32 * 1.001 + 1e-5 * scale;
                    assert!(
                        error <= allowed,
                        "{digits} digits, {}: row {r} is {g}, expected {v} (bound {allowed})",
                        m.name
                    );
                    largest_error = largest_error.max(error / scale);
                }
                assert!(largest_error > 1e-5, "{digits} digits, {}: as exact as 24 bits ({largest_error})", m.name);
            }
        }
    }
}

#[test]
fn gemm_matches_the_cpu_for_every_token_of_a_step() {
    for mut gpu in gpus() {
        let mut rng = Rng::new(7);
        let mut tokens_per_thread = std::collections::BTreeSet::new();
        let mut k_parts = std::collections::BTreeSet::new();
        let eps = 1e-6;
        // (rows, cols, split bytes, tokens recorded for, tokens in the step): partial
        // row and token tiles, several tiles of each, split matrices, and a step
        // shorter than the graph (the rows past it must stay untouched).
        for (rows, cols, max_binding, graph_tokens, tokens) in [
            (37, 320, 1 << 20, 5, 5),
            (203, 1088, 4096, 70, 67),
            (130, 192, 256, 3, 2),
            (300, 64, 1 << 20, 130, 130),
            // Tall: 8 tokens per thread (ops::GEMM_TALL_ROWS), two token tiles, the second partial.
            (4100, 64, 1 << 20, 140, 131),
            // Long rows: split into 8 K parts, the last one shorter (260 tiles).
            (70, 4160, 1 << 20, 9, 7),
        ] {
            for (k, dtype) in [DType::F32, DType::F16, DType::BF16].into_iter().enumerate() {
                let mut source = MemorySource::default();
                let (m, w) = if (k == 1 && max_binding > 4096) || rows == 300 {
                    // Dense, with columns not a multiple of the 16-column tile.
                    let cols = if rows == 300 {
                        36
                    } else if rows == 70 {
                        4100
                    } else {
                        cols
                    };
                    dense_matrix(&mut rng, &mut source, rows, cols, dtype.clone())
                } else {
                    packed_matrix(&mut rng, &mut source, rows, cols, dtype.clone())
                };
                let cols = m.cols;
                let gm = gpu.matrix(&m, &source, max_binding);
                tokens_per_thread.insert(tritium::engine::ops::gemm_tokens_per_thread(&gm));
                let x = random(&mut rng, graph_tokens * cols);
                let case = NormedProduct::random(&mut rng, x, rows, graph_tokens, tokens);
                let want = case.expected(&w, eps);
                // Whole, and split along K where the matrix is long and small enough.
                for split in [false, true] {
                    let (got, labels) = case.run(&mut gpu, &gm, Input::F32, split, eps);
                    let split_here = labels.iter().any(|l| l.starts_with("gemm parts"));
                    assert!(split || !split_here, "no scratch, no split");
                    k_parts.insert(if split_here { "split" } else { "whole" });
                    assert_close(&format!("gemm {} x {tokens} tokens (split {split})", m.name), &got, &want, 1e-4);
                }
            }
        }
        assert_eq!(tokens_per_thread.into_iter().collect::<Vec<_>>(), [4, 8], "both GEMM tiles are tested");
        assert_eq!(k_parts.into_iter().collect::<Vec<_>>(), ["split", "whole"], "split and whole GEMMs are tested");
    }
}

/// The tensor-core GEMM's input conversion (it needs no optional feature, so
/// it runs here on both paths): each token's normalized or SwiGLU'd input,
/// scaled by a power of two and split into two f16 halves, holds the input to
/// 2^-21 of the row's largest value, whatever its magnitude.
#[test]
fn f16_pairs_hold_each_token_s_input_to_21_bits() {
    use tritium::engine::ops::InputNorms;
    for mut gpu in gpus() {
        let mut rng = Rng::new(21);
        let eps = 1e-6;
        let (graph_tokens, tokens, n) = (70, 67, 1000);
        // Rows of very different magnitudes (one far beyond f16's range, one
        // tiny, one all zeros), and values spread within each row.
        let magnitude = |t: usize| [1.0, 3e6, 1e-5, 0.0, 250.0][t % 5];
        let x: Vec<f32> = (0..graph_tokens * n)
            .map(|i| (rng.next_f32() * 2.0 - 1.0) * magnitude(i / n) * (1 + i % 9) as f32)
            .collect();
        let (n1, n2) = (random(&mut rng, n), random(&mut rng, n));
        // `slack`: what f32 arithmetic before the split (norms, SiLU) may round differently from the CPU.
        let check = |gpu: &Gpu, what: &str, want: &[f32], slack: f32| {
            let (got, largest) = gpu.read_f16_pairs(graph_tokens, tokens, n);
            for t in 0..tokens {
                let row = &want[t * n..(t + 1) * n];
                let top = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (c, (g, w)) in got[t * n..(t + 1) * n].iter().zip(row).enumerate() {
                    let tol = top * (2f32.powi(-21) + slack);
                    assert!((g - w).abs() <= tol, "{what}: token {t}, value {c} is {g}, expected {w}");
                }
                let scaled = largest[t];
                assert!(top == 0.0 || (16384.0..=32768.0).contains(&scaled), "{what}: token {t} scaled to {scaled}");
            }
        };

        // Both norms, as a block norm and a per-linear norm.
        let (xb, n1b, n2b) = (gpu.f32s(&x), gpu.f32s(&n1), gpu.f32s(&n2));
        let stats = gpu.f32s(&vec![0.0; 2 * graph_tokens]);
        let mut ops = gpu.coop_ops(graph_tokens, false);
        let mut d: Vec<_> = block_on(ops.norm_stats(&xb, n, Some(&n1b), eps, &stats)).unwrap().into_iter().collect();
        let norms = InputNorms { stats: &stats, norm1: Some(&n1b), norm2: Some(&n2b) };
        d.push(block_on(ops.f16_pairs(n, &xb, &norms, false)).unwrap());
        gpu.set_step(0, tokens as u32);
        gpu.run(&d);
        let mut want = vec![0.0; tokens * n];
        for t in 0..tokens {
            let mut h = vec![0.0; n];
            reference::rmsnorm(&mut h, &x[t * n..(t + 1) * n], &n1, eps);
            reference::rmsnorm(&mut want[t * n..(t + 1) * n], &h, &n2, eps);
        }
        check(&gpu, "normalized", &want, 1e-6);

        // Plain inputs, and SwiGLU of gate and up values.
        let unused = gpu.f32s(&[f32::NAN, f32::NAN]);
        let none = InputNorms { stats: &unused, norm1: None, norm2: None };
        let mut ops = gpu.coop_ops(graph_tokens, false);
        let d = block_on(ops.f16_pairs(n, &xb, &none, false)).unwrap();
        gpu.run(&[d]);
        check(&gpu, "plain", &x[..tokens * n], 0.0);
        let gate_up: Vec<f32> = random(&mut rng, graph_tokens * 2 * n).iter().map(|v| 4.0 * v).collect();
        let want: Vec<f32> = (0..tokens * n)
            .map(|i| {
                let (t, c) = (i / n, i % n);
                reference::silu(gate_up[t * 2 * n + c]) * gate_up[t * 2 * n + n + c]
            })
            .collect();
        let gub = gpu.f32s(&gate_up);
        let mut ops = gpu.coop_ops(graph_tokens, false);
        let d = block_on(ops.f16_pairs(n, &gub, &none, true)).unwrap();
        gpu.run(&[d]);
        gpu.set_step(0, 1);
        check(&gpu, "swiglu", &want, 1e-6);
    }
}

/// The same conversion for `--gemm coop-f16` (it too runs here on both
/// paths): each token's input, scaled by a power of two, converted to f16
/// (either rounding: WGSL allows both) and no low half written. Coarser than
/// the split, so the check fails if the split ran instead.
#[test]
fn f16_pairs_for_coop_f16_hold_each_token_s_input_to_f16() {
    use tritium::engine::ops::InputNorms;
    for mut gpu in gpus() {
        gpu.ctx.caps.coop_f16 = true;
        let mut rng = Rng::new(22);
        let (graph_tokens, tokens, n) = (9, 7, 1000);
        let magnitude = |t: usize| [1.0, 3e6, 1e-5, 0.0, 250.0][t % 5];
        let x: Vec<f32> = (0..graph_tokens * n)
            .map(|i| (rng.next_f32() * 2.0 - 1.0) * magnitude(i / n) * (1 + i % 9) as f32)
            .collect();
        let unused = gpu.f32s(&[f32::NAN, f32::NAN]);
        let none = InputNorms { stats: &unused, norm1: None, norm2: None };
        let xb = gpu.f32s(&x);
        let mut ops = gpu.coop_ops(graph_tokens, false);
        let d = block_on(ops.f16_pairs(n, &xb, &none, false)).unwrap();
        gpu.set_step(0, tokens as u32);
        gpu.run(&[d]);
        // The scratch starts zeroed, so hi + lo is hi where no lo was written.
        let (got, largest) = gpu.read_f16_pairs(graph_tokens, tokens, n);
        let mut coarsest = 0.0f32;
        for t in 0..tokens {
            let row = &x[t * n..(t + 1) * n];
            let top = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (c, (g, w)) in got[t * n..(t + 1) * n].iter().zip(row).enumerate() {
                // One f16 step of |w| (2^-10 of it), and f16's subnormal step
                // below 2^-14 of the scaled row's largest value (in [2^14, 2^15)).
                let tol = w.abs() * 2f32.powi(-10) + top * 2f32.powi(-38);
                assert!((g - w).abs() <= tol, "token {t}, value {c} is {g}, expected {w}");
                if top > 0.0 {
                    coarsest = coarsest.max((g - w).abs() / top);
                }
            }
            let scaled = largest[t];
            assert!(top == 0.0 || (16384.0..=32768.0).contains(&scaled), "token {t} scaled to {scaled}");
        }
        assert!(coarsest > 2f32.powi(-16), "values held to {coarsest:e} of their row's largest: not rounded to f16");
    }
}

/// The prefill GEMM on cooperative matrices (tensor cores) against the CPU:
/// inputs and weights as f16 halves good to 21 bits, products accumulated in
/// f32 by the units, held to the f32 GEMM's tolerance. (An H100's units
/// truncate as they accumulate: on rows of 4160 values the error reached
/// about 1e-5 of the largest output, BENCHMARKS.md.) Software Vulkan has no
/// cooperative matrices, so this runs where a GPU has them: `cargo test
/// --release --test gpu_kernels -- --ignored coop --nocapture` prints the
/// largest error found.
#[test]
#[ignore = "needs a GPU with cooperative matrices (f16 16x16x16, f32 accumulation); run with --ignored there"]
fn coop_gemm_matches_the_cpu_on_a_gpu_with_cooperative_matrices() {
    let worst = coop_gemm_against_the_cpu(tritium::gpu::GemmPath::Coop, 1e-4);
    println!("cooperative-matrix GEMM: largest error {worst:.2e} of the largest output");
}

/// The same for `--gemm coop-f16` (gemm_ternary_coop_f16, 64 columns a
/// step, split along K too), whose inputs and scales are rounded to f16:
/// held to the engine tests' tolerance, 2e-3 of the largest output, and
/// coarser than the split kernel, so that a switch which ran the split
/// kernel instead would fail.
#[test]
#[ignore = "needs a GPU with cooperative matrices (f16 16x16x16, f32 accumulation); run with --ignored there"]
fn coop_f16_gemm_stays_near_the_cpu_on_a_gpu_with_cooperative_matrices() {
    let worst = coop_gemm_against_the_cpu(tritium::gpu::GemmPath::CoopF16, 2e-3);
    println!("cooperative-matrix GEMM on f16 values: largest error {worst:.2e} of the largest output");
    assert!(worst > 1e-4, "errors up to {worst:e} of the largest output: the values were not rounded to f16");
}

/// Runs the cooperative-matrix GEMM of `path` (`Coop` or `CoopF16`) on
/// random packed matrices, plain and of SwiGLU's output, whole and split
/// along K, against the CPU within `tolerance` of the largest output;
/// returns the largest error found, relative to the largest output.
fn coop_gemm_against_the_cpu(path: tritium::gpu::GemmPath, tolerance: f32) -> f32 {
    let options = DeviceOptions { gemm: path, ..Default::default() };
    let mut gpu = Gpu::with_options(options);
    assert!(gpu.ctx.caps.coop_gemm);
    assert_eq!(gpu.ctx.caps.coop_f16, path == tritium::gpu::GemmPath::CoopF16);
    let mut rng = Rng::new(17);
    let eps = 1e-6;
    let mut k_parts = std::collections::BTreeSet::new();
    let mut worst = 0.0f32;
    let mut check = |what: &str, got: &[f32], want: &[f32]| {
        assert_close(what, got, want, tolerance);
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        worst = got.iter().zip(want).fold(worst, |m, (g, w)| m.max((g - w).abs() / scale));
    };
    // (rows, cols, split bytes, tokens recorded for, tokens in the step): as
    // the f32 GEMM's test, with whole 64-column steps.
    for (rows, cols, max_binding, graph_tokens, tokens) in [
        (37, 320, 1 << 20, 5, 5),
        (203, 1088, 4096, 130, 129),
        (130, 192, 256 * 3, 3, 2),
        (4100, 64, 1 << 20, 60, 57),
        (70, 4160, 1 << 20, 9, 7),
        (300, 16384, 1 << 22, 33, 33),
    ] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let mut source = MemorySource::default();
            let (m, w) = packed_matrix(&mut rng, &mut source, rows, cols, dtype.clone());
            let gm = gpu.matrix(&m, &source, max_binding);
            assert!(max_binding > 4096 || gm.chunks.len() > 1, "the test means to split {}", m.name);
            let x =
                random(&mut rng, graph_tokens * cols).iter().enumerate().map(|(i, v)| v * (1 + i % 7) as f32).collect();
            let case = NormedProduct::random(&mut rng, x, rows, graph_tokens, tokens);
            let want = case.expected(&w, eps);
            for split in [false, true] {
                {
                    let ops = gpu.coop_ops(graph_tokens, split);
                    assert!(ops.coop_gemm(&gm) && ops.swiglu_in_linear(&gm));
                }
                let (got, labels) = case.run(&mut gpu, &gm, Input::F16Pairs, split, eps);
                assert!(labels.iter().any(|l| l.starts_with("gemm coop")), "the cooperative-matrix GEMM ran");
                k_parts.insert(if labels.iter().any(|l| l.starts_with("gemm parts")) { "split" } else { "whole" });
                check(&format!("coop gemm {} x {tokens} tokens (split {split})", m.name), &got, &want);
            }

            // SwiGLU of gate and up values as the input, no bias.
            let gate_up: Vec<f32> = random(&mut rng, graph_tokens * 2 * cols).iter().map(|v| 4.0 * v).collect();
            let mut want = case.residual.clone();
            for t in 0..tokens {
                let row = &gate_up[t * 2 * cols..(t + 1) * 2 * cols];
                let input: Vec<f32> =
                    row[..cols].iter().zip(&row[cols..]).map(|(g, u)| reference::silu(*g) * u).collect();
                for (r, v) in matvec(&w, cols, &input).iter().enumerate() {
                    want[t * rows + r] += v;
                }
            }
            let (gub, yb) = (gpu.f32s(&gate_up), gpu.f32s(&case.residual));
            let mut ops = gpu.coop_ops(graph_tokens, true);
            let d = block_on(ops.linear_of_swiglu(&gm, &gub, None, true, Out::all(&yb, rows), None)).unwrap();
            gpu.set_step(0, tokens as u32);
            gpu.run(&d);
            gpu.set_step(0, 1);
            let got = gpu.read(&yb, graph_tokens * rows);
            check(&format!("coop gemm of swiglu {}", m.name), &got, &want);
        }
    }
    assert_eq!(k_parts.into_iter().collect::<Vec<_>>(), ["split", "whole"], "split and whole GEMMs are tested");
    worst
}

#[test]
fn embedding_rows_come_out_of_split_tables() {
    for mut gpu in gpus() {
        let mut rng = Rng::new(2);
        let (vocab, hidden) = (301, 192);
        for packed in [true, false] {
            let mut source = MemorySource::default();
            let (m, table) = if packed {
                packed_matrix(&mut rng, &mut source, vocab, hidden, DType::BF16)
            } else {
                dense_matrix(&mut rng, &mut source, vocab, hidden, DType::F16)
            };
            // 100 rows per binding: chunk boundaries at ids 100, 200 and 300.
            let row_bytes = if packed { hidden / 4 } else { hidden * 2 };
            let gm = gpu.matrix(&m, &source, (100 * row_bytes) as u64);
            assert_eq!(gm.chunks.len(), 4);
            let x = gpu.f32s(&vec![0.0; hidden]);
            let token_buffer = gpu.f32s(&[0.0]);
            let d = block_on(gpu.ops().embed(&gm, &token_buffer, &x)).unwrap();
            for token in [0u32, 1, 99, 100, 199, 200, 300] {
                gpu.ctx.queue.write_buffer(&token_buffer, 0, bytemuck::bytes_of(&token));
                gpu.run(&d);
                let t = token as usize;
                assert_close(
                    &format!("embed {} row {token}", m.name),
                    &gpu.read(&x, hidden),
                    &table[t * hidden..(t + 1) * hidden],
                    1e-6,
                );
            }
        }
    }
}

#[test]
fn norm_stats_are_inverse_rms_values() {
    for mut gpu in gpus() {
        let mut rng = Rng::new(3);
        // One quad, partial and whole passes of 4 x 256 quads.
        for n in [4, 100, 1000, 4100, 20480] {
            let (x, w) = (random(&mut rng, n), random(&mut rng, n));
            let (xb, wb, stats) = (gpu.f32s(&x), gpu.f32s(&w), gpu.f32s(&[0.0, 0.0]));
            let d = block_on(gpu.ops().norm_stats(&xb, n, Some(&wb), 1e-6, &stats)).unwrap().expect("a dispatch");
            gpu.run(&[d]);
            let inv_rms = |v: &[f32]| 1.0 / (v.iter().map(|a| a * a).sum::<f32>() / n as f32 + 1e-6).sqrt();
            let s0 = inv_rms(&x);
            let h: Vec<f32> = x.iter().zip(&w).map(|(a, b)| a * s0 * b).collect();
            assert_close(&format!("norm stats n={n}"), &gpu.read(&stats, 2), &[s0, inv_rms(&h)], 1e-5);
        }
        let xb = gpu.f32s(&[1.0; 7]);
        let err = block_on(gpu.ops().norm_stats(&xb, 7, None, 1e-6, &xb)).err().expect("7 values").to_string();
        assert!(err.contains("multiple of 4"), "{err}");
    }
}

/// Tolerance of a value rounded to f16 (half its step, 2^-11 of it, with a
/// margin for f32's own rounding), relative to the largest value compared.
const F16_ROUNDING: f32 = 5e-4;

/// How closely a KV cache of `dtype` holds the values written to it.
fn cache_tolerance(dtype: KvDtype, f32_tolerance: f32) -> f32 {
    match dtype {
        KvDtype::F32 => f32_tolerance,
        KvDtype::F16 => F16_ROUNDING,
    }
}

#[test]
fn rope_rotates_q_and_k_and_fills_the_cache() {
    for mut gpu in gpus() {
        let mut rng = Rng::new(4);
        let (heads, kv_heads, head_dim, ctx, pos) = (6, 2, 64, 40, 33usize);
        let (table, inv_freq) = rope_table(head_dim, ctx);
        // Two tokens at positions pos and pos + 1, each row q, then k, then v.
        let kv = kv_heads * head_dim;
        let width = heads * head_dim + 2 * kv;
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let qkv = random(&mut rng, 2 * width);
            let (qkvb, tb) = (gpu.f32s(&qkv), gpu.f32s(&table));
            let (k, v) = (gpu.kv_cache(&vec![0.0; ctx * kv], dtype), gpu.kv_cache(&vec![0.0; ctx * kv], dtype));
            let cache = KvCache { k: &k, v: &v, dtype };
            let d = block_on(gpu.batch_ops(2).rope(heads, kv_heads, head_dim, &qkvb, &tb, cache)).unwrap();
            gpu.set_step(pos as u32, 2);
            gpu.run(&[d]);
            gpu.set_step(0, 1);
            let got = gpu.read(&qkvb, 2 * width);
            let (k_cache, v_cache) = (gpu.read_kv_cache(&k, ctx * kv, dtype), gpu.read_kv_cache(&v, ctx * kv, dtype));
            for t in 0..2 {
                let row = &qkv[t * width..(t + 1) * width];
                let (q, k, v) = (&row[..heads * head_dim], &row[heads * head_dim..width - kv], &row[width - kv..]);
                let (mut q_want, mut k_want) = (q.to_vec(), k.to_vec());
                let p = pos + t;
                q_want
                    .chunks_mut(head_dim)
                    .chain(k_want.chunks_mut(head_dim))
                    .for_each(|h| reference::rope(h, p, &inv_freq));
                assert_close("rope q", &got[t * width..t * width + heads * head_dim], &q_want, 1e-5);
                assert_close(
                    "k and v stay in place",
                    &got[t * width + heads * head_dim..(t + 1) * width],
                    &row[heads * head_dim..],
                    0.0,
                );
                let name = dtype.name();
                assert_close(
                    &format!("rope k in {name} cache"),
                    &k_cache[p * kv..(p + 1) * kv],
                    &k_want,
                    cache_tolerance(dtype, 1e-5),
                );
                assert_close(
                    &format!("v in {name} cache"),
                    &v_cache[p * kv..(p + 1) * kv],
                    v,
                    cache_tolerance(dtype, 0.0),
                );
            }
            assert!(k_cache[..pos * kv].iter().all(|&x| x == 0.0), "other positions untouched");
        }
    }
}

/// RoPE's (cos, sin) table for `ctx` positions and its inverse frequencies, as
/// the engine builds them.
fn rope_table(head_dim: usize, ctx: usize) -> (Vec<f32>, Vec<f32>) {
    let theta = 1e6f32;
    let inv_freq: Vec<f32> = (0..head_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect();
    let table = (0..ctx)
        .flat_map(|p| {
            inv_freq.iter().flat_map(move |f| {
                let (s, c) = (p as f32 * f).sin_cos();
                [c, s]
            })
        })
        .collect();
    (table, inv_freq)
}

/// Attention over a KV cache of f32 and of f16 values: for f16 the cache
/// must hold what was written to within f16's rounding, and attention must
/// compute over what it holds as the CPU does.
#[test]
fn attention_matches_the_cpu_loop() {
    for mut gpu in gpus() {
        let mut rng = Rng::new(5);
        // Contexts of one split and of several (ops::ATTENTION_CHUNK positions each), the last one partly used.
        for (heads, kv_heads, head_dim, ctx, pos) in [
            (4, 2, 32, 50, 37usize),
            (3, 3, 64, 130, 129),
            (2, 1, 16, 5, 0),
            (2, 2, 128, 300, 200),
            (14, 2, 64, 700, 640),
            (4, 2, 32, 200, 64),     // the step's position opens a split
            (2, 1, 256, 100, 70),    // the largest head_dim: two slices of values a partial workgroup
            (4, 2, 32, 2200, 2150),  // more chunks than ops::attention_max_splits(4): workgroups take several
            (40, 8, 16, 1100, 1050), // 32B's heads: a cap of 32 workgroups a head, 33 chunks
        ] {
            for dtype in [KvDtype::F32, KvDtype::F16] {
                attention_case(&mut gpu, &mut rng, (heads, kv_heads, head_dim, ctx, pos), dtype);
            }
        }
    }
}

/// One case of attention_matches_the_cpu_loop: a decode step at `pos`, then
/// a prefill step of up to five tokens ending there, each over a cache of
/// random earlier positions.
fn attention_case(
    gpu: &mut Gpu,
    rng: &mut Rng,
    (heads, kv_heads, head_dim, ctx, pos): (usize, usize, usize, usize, usize),
    dtype: KvDtype,
) {
    let kv = kv_heads * head_dim;
    let width = (heads + 2 * kv_heads) * head_dim; // a token's q, k and v
    let (table, inv_freq) = rope_table(head_dim, ctx);
    // The earlier positions as the cache holds them.
    let held = |v: Vec<f32>| match dtype {
        KvDtype::F32 => v,
        KvDtype::F16 => v.into_iter().map(|x| f16::from_f32(x).to_f32()).collect(),
    };
    let (k_cache, v_cache) = (held(random(rng, ctx * kv)), held(random(rng, ctx * kv)));
    // What the step does on the CPU, for rows of q, k and v at positions
    // first, first + 1, ...: RoPE, k and v into the cache, then each query
    // over positions 0 ..= its own. Attention reads the step's own k and v
    // from `stored` where given (the caches as the GPU left them: prefill
    // reads them back from the cache), else as computed (decode takes its
    // own from the qkv row); the caches returned hold them as computed.
    let cpu = |qkv: &[f32], first: usize, stored: Option<(&[f32], &[f32])>| {
        let (mut k_cache, mut v_cache) = (k_cache.clone(), v_cache.clone());
        let (mut k_read, mut v_read) = (k_cache.clone(), v_cache.clone());
        let mut outs = Vec::new();
        for (t, row) in qkv.chunks(width).enumerate() {
            let p = first + t;
            let at = p * kv..(p + 1) * kv;
            let mut row = row.to_vec();
            row[..heads * head_dim + kv].chunks_mut(head_dim).for_each(|h| reference::rope(h, p, &inv_freq));
            k_cache[at.clone()].copy_from_slice(&row[heads * head_dim..width - kv]);
            v_cache[at.clone()].copy_from_slice(&row[width - kv..]);
            let (k_src, v_src) = stored.unwrap_or((&k_cache, &v_cache));
            k_read[at.clone()].copy_from_slice(&k_src[at.clone()]);
            v_read[at.clone()].copy_from_slice(&v_src[at]);
            let mut out = vec![0.0; heads * head_dim];
            for h in 0..heads {
                let g = h / (heads / kv_heads);
                let qh = &row[h * head_dim..(h + 1) * head_dim];
                let mut s: Vec<f32> = (0..=p)
                    .map(|t| {
                        qh.iter().zip(&k_read[t * kv + g * head_dim..]).map(|(a, b)| a * b).sum::<f32>()
                            / (head_dim as f32).sqrt()
                    })
                    .collect();
                reference::softmax(&mut s);
                for (t, w) in s.iter().enumerate() {
                    for d in 0..head_dim {
                        out[h * head_dim + d] += w * v_read[t * kv + g * head_dim + d];
                    }
                }
            }
            outs.extend(out);
        }
        (outs, k_cache, v_cache)
    };
    // The caches as the GPU left them, checked against what was written;
    // what attention over them should give.
    let check_caches = |gpu: &Gpu, step: &str, kb: &wgpu::Buffer, vb: &wgpu::Buffer, k_want: &[f32], v_want: &[f32]| {
        let (k_got, v_got) = (gpu.read_kv_cache(kb, ctx * kv, dtype), gpu.read_kv_cache(vb, ctx * kv, dtype));
        let name = dtype.name();
        assert_close(&format!("{step}: k in {name} cache"), &k_got, k_want, cache_tolerance(dtype, 1e-5));
        assert_close(&format!("{step}: v in {name} cache"), &v_got, v_want, cache_tolerance(dtype, 0.0));
        (k_got, v_got)
    };
    let case = format!("heads={heads} pos={pos} {} cache", dtype.name());

    // Decode: one token at `pos`.
    let qkv = random(rng, width);
    let (want, k_want, v_want) = cpu(&qkv, pos, None);
    let (qkvb, tb) = (gpu.f32s(&qkv), gpu.f32s(&table));
    let (kb, vb) = (gpu.kv_cache(&k_cache, dtype), gpu.kv_cache(&v_cache, dtype));
    let partials = gpu.f32s(&vec![0.0; tritium::engine::ops::attention_partial_floats(heads, head_dim, ctx)]);
    let out = gpu.f32s(&vec![0.0; heads * head_dim]);
    // Most cases also leave the output in block fixed point (heads of
    // whole 16-value words), one does not: both forms are tested.
    let fixed = heads % 2 == 0;
    let mut ops = if fixed { gpu.fixed_ops(1e-6) } else { gpu.ops() };
    let cache = KvCache { k: &kb, v: &vb, dtype };
    let d = block_on(ops.attention(heads, kv_heads, head_dim, ctx, &qkvb, &tb, cache, &partials, &out, fixed)).unwrap();
    gpu.set_pos(pos as u32);
    gpu.run_at(&d, pos);
    check_caches(gpu, "decode", &kb, &vb, &k_want, &v_want);
    assert_close(&format!("attention {case}"), &gpu.read(&out, heads * head_dim), &want, 1e-5);
    // The last split of each head to finish merges them and resets the
    // head's count: the same step again, over a cleared output, merges
    // again (its own k and v are already in the cache).
    gpu.ctx.queue.write_buffer(&out, 0, &vec![0u8; heads * head_dim * 4]);
    gpu.run_at(&d, pos);
    assert_close(&format!("attention again {case}"), &gpu.read(&out, heads * head_dim), &want, 1e-5);
    if fixed {
        let got = gpu.read_fixed_point(heads * head_dim);
        assert_close(&format!("attention {case} in fixed point"), &got, &want, 1e-5);
    }

    // Prefill: a step of queries at positions first..=pos, recorded for two more.
    let tokens = (pos + 1).min(5);
    let first = pos + 1 - tokens;
    let qkv = random(rng, (tokens + 2) * width);
    let (want, k_want, v_want) = cpu(&qkv[..tokens * width], first, None);
    let qkvb = gpu.f32s(&qkv);
    let (kb, vb) = (gpu.kv_cache(&k_cache, dtype), gpu.kv_cache(&v_cache, dtype));
    let out = gpu.f32s(&vec![0.0; (tokens + 2) * heads * head_dim]);
    let mut ops = gpu.batch_ops(tokens + 2);
    let cache = KvCache { k: &kb, v: &vb, dtype };
    let d = block_on(ops.attention(heads, kv_heads, head_dim, ctx, &qkvb, &tb, cache, &partials, &out, false)).unwrap();
    gpu.set_step(first as u32, tokens as u32);
    gpu.run(&d);
    gpu.set_step(0, 1);
    let (k_got, v_got) = check_caches(gpu, "prefill", &kb, &vb, &k_want, &v_want);
    let want = if dtype == KvDtype::F32 { want } else { cpu(&qkv[..tokens * width], first, Some((&k_got, &v_got))).0 };
    let got = gpu.read(&out, (tokens + 2) * heads * head_dim);
    let row = heads * head_dim;
    for (t, got) in got.chunks(row).enumerate() {
        // Rows past the step stay untouched.
        let want = if t < tokens { want[t * row..(t + 1) * row].to_vec() } else { vec![0.0; row] };
        assert_close(&format!("causal attention {case} position {}", first + t), got, &want, 1e-5);
    }
}

#[test]
fn swiglu_and_argmax() {
    for mut gpu in gpus() {
        let mut rng = Rng::new(6);
        // Three tokens, each row n gate values then n up values.
        let (n, tokens) = (1003, 3);
        let gate_up = random(&mut rng, tokens * 2 * n);
        let (gub, out) = (gpu.f32s(&gate_up), gpu.f32s(&vec![0.0; tokens * n]));
        let d = block_on(gpu.batch_ops(tokens).swiglu(n, &gub, &out)).unwrap();
        gpu.run(&[d]);
        let want: Vec<f32> =
            gate_up.chunks(2 * n).flat_map(|row| (0..n).map(move |i| reference::silu(row[i]) * row[n + i])).collect();
        assert_close("swiglu", &gpu.read(&out, tokens * n), &want, 1e-6);

        for (n, best) in [(1usize, 0usize), (151_937, 150_001), (1000, 3), (5000, 1200), (300, 299)] {
            let mut logits = random(&mut rng, n);
            logits[best] = 5.0;
            // Ties: the first index wins, as in torch.argmax, whether the later
            // one falls to another thread or to the same one (256 threads).
            for later in [best + 7, best + 256, best + 768, best + 1024] {
                if later < n {
                    logits[later] = 5.0;
                }
            }
            let scratch = vec![f32::NAN; tritium::engine::ops::ARGMAX_SCRATCH_FLOATS];
            let (lb, tb) = (gpu.f32s(&[&logits[..], &scratch].concat()), gpu.f32s(&[0.0]));
            let d = block_on(gpu.ops().argmax(n, &lb, &tb)).unwrap();
            gpu.run(&d);
            let token = block_on(gpu.ctx.read_buffer(&tb, 4)).unwrap();
            assert_eq!(u32::from_le_bytes(token[..4].try_into().unwrap()) as usize, best, "argmax of {n}");
        }
        // A logits buffer without room for the scratch is refused, not half-used.
        let (lb, tb) = (gpu.f32s(&[0.0; 1000]), gpu.f32s(&[0.0]));
        let err = block_on(gpu.ops().argmax(1000, &lb, &tb)).err().expect("too small a buffer").to_string();
        assert!(err.contains("argmax over 1000 logits needs a buffer of"), "{err}");
    }
}

#[test]
fn sampling_on_the_gpu_draws_what_the_host_sampler_draws() {
    use tritium::engine::ops::{sample_scratch_bytes, sample_settings};
    use tritium::sampling::{sample_with, SamplingParams};
    let mut gpu = Gpu::new(false);
    let mut rng = Rng::new(9);
    // A vocabulary-sized spread with many ties (three passes), one pass's
    // worth, two passes, barely more logits than a list (64), and all equal.
    let spread = |rng: &mut Rng, n: usize| -> Vec<f32> {
        (0..n).map(|_| (rng.next_f32() * 400.0).round() * 0.05 - 10.0).collect()
    };
    let cases = [
        spread(&mut rng, 151_937),
        spread(&mut rng, 1000),
        spread(&mut rng, 5000),
        spread(&mut rng, 70),
        vec![0.5; 3000],
    ];
    // (temperature, top-k, top-p, min-p): chat's defaults, top-1, the most
    // the GPU takes, min-p, and a temperature so high that every kept
    // candidate is about as likely, so that r sweeps the ranking in order.
    let settings = [
        (0.7, 40, 0.8, 0.0),
        (1.5, 1, 1.0, 0.0),
        (1.0, 64, 1.0, 0.0),
        (0.5, 10, 0.95, 0.05),
        (2.0, 64, 0.5, 0.1),
        (1e4, 64, 1.0, 0.0),
    ];
    use wgpu::BufferUsages as U;
    let settings_buffer = gpu.ctx.buffer("settings", 32, U::UNIFORM | U::COPY_DST);
    for logits in &cases {
        let n = logits.len();
        let (lb, tb) = (gpu.f32s(logits), gpu.f32s(&[0.0]));
        let candidates = gpu.ctx.buffer("candidates", sample_scratch_bytes(n), U::STORAGE);
        let d = block_on(gpu.ops().sample(n, &lb, &candidates, &settings_buffer, &tb)).unwrap();
        // Every pass once, then for each draw the last pass alone, which
        // reads the lists the others left and draws with the settings.
        let (rank, draw) = d.split_at(d.len() - 1);
        gpu.run(rank);
        for (temperature, top_k, top_p, min_p) in settings {
            let params = SamplingParams { temperature, top_k, top_p, min_p, ..Default::default() };
            let sweep = (0..top_k).map(|i| (i as f32 + 0.5) / top_k as f32);
            // (Not r just below 1, which walks to candidates whose
            // probabilities are within rounding of the remainder: there the
            // GPU's exp may pick a neighbour of the host's choice.)
            let randoms: Vec<f32> = (0..8).map(|_| rng.next_f32()).chain([0.0]).chain(sweep).collect();
            for r in randoms {
                gpu.ctx.queue.write_buffer(&settings_buffer, 0, bytemuck::cast_slice(&sample_settings(&params, r)));
                gpu.run(draw);
                let token = block_on(gpu.ctx.read_buffer(&tb, 4)).unwrap();
                let got = u32::from_le_bytes(token[..4].try_into().unwrap());
                assert_eq!(got, sample_with(&params, logits, &[], r), "{n} logits, {params:?}, r {r}");
            }
        }
    }
    // A scratch too small for the candidates is refused, not overrun.
    let (lb, tb) = (gpu.f32s(&[0.0; 5000]), gpu.f32s(&[0.0]));
    let small = gpu.ctx.buffer("candidates", 64, U::STORAGE);
    let err =
        block_on(gpu.ops().sample(5000, &lb, &small, &settings_buffer, &tb)).err().expect("too small").to_string();
    assert!(err.contains("sampling 5000 logits needs"), "{err}");
}

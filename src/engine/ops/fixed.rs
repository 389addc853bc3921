//! The decode step's fixed-point GEMVs (gemv_fixed.wgsl over block
//! fixed-point inputs from fixed_point.wgsl, attention's merge or another
//! GEMV): when they run, their team shapes, and the builders for each way
//! their input arrives, including the GEMVs that write the next one's input
//! (the o projection for gate and up, gate and up for down, down for the
//! next layer's q/k/v).

use super::*;

/// Whether the decode step uses the fixed-point GEMV for its packed matrices
/// (those whose rows are whole packed words: Ops::fixed_gemv): for every
/// model unless `--gemv float` asks otherwise. `auto` reaches here only where
/// the shader language has its integer dot product (GpuContext makes it
/// `float` elsewhere). `auto` once kept models below hidden size 1024 on the
/// f32 GEMV, when the fixed-point one took a conversion dispatch more (an
/// H100's 0.5B: 838 t/s in f32, 753 in fixed point); since GEMVs and
/// attention write each other's fixed-point inputs, the 0.5B (hidden 896)
/// decodes faster in fixed point too (H200, tg128: 952 -> 1,054 t/s after
/// pp512, 852 -> 933 after pp4096).
pub fn fixed_gemv_wanted(path: GemvPath) -> bool {
    path != GemvPath::Float
}

/// Threads sharing a row in the fixed-point GEMV (gemv_fixed.wgsl's LANES) for
/// rows of `words` packed words: a thread a word up to 64 threads, and past
/// that the largest power of two up to 256 that gives each thread at least
/// three words. On an H100 (tg128): up to 256 threads rather than 64 for long
/// rows, 32B 115.0 -> 116.0 t/s and 7B 365.8 -> 376.3; three words a thread
/// rather than six, 1.5B 515 -> 553. A thread a word for short rows, where
/// three words a thread left a matrix few workgroups (the 0.5B's q/k/v, 56
/// words and 1,152 rows: 18): H200, tg128 after pp512, 0.5B 1,053 -> 1,164
/// t/s, 1.5B 821 -> 831, 3B 577 -> 592 (BENCHMARKS.md, round 20). Rows of
/// 320 words keep 64: 32B's q/k/v with 128 threads a row decoded slower
/// (162.3 -> 160.6 t/s, round 26).
/// A CPU-emulated adapter (`cpu_emulated`) keeps three words a thread:
/// lavapipe's 0.5B decoded 1.4 t/s with a thread a word and 2.4 with three
/// (BENCHMARKS.md, round 22), likely because it runs a thread's fixed costs
/// (its rows' offsets, the input's norm, its share of the row sums) one
/// thread after another where a GPU runs them side by side.
pub fn fixed_gemv_lanes(words: u32, cpu_emulated: bool) -> u32 {
    let three_words_a_thread = 1 << (words / 3).max(4).ilog2();
    if cpu_emulated {
        return three_words_a_thread.min(256);
    }
    let a_thread_a_word = words.next_power_of_two().clamp(4, 64);
    a_thread_a_word.max(three_words_a_thread).min(256)
}

/// Shortest row, in packed words, whose fixed-point GEMV runs in teams of 64
/// threads (then reading two words of a row per step, PAIR_STEP_MIN_STEPS)
/// rather than [`fixed_gemv_lanes`]' 128 or 256: workgroups then hold 16
/// rows, whole words of the next input, so the down projection's GEMV of
/// 7B and 32B can write the next layer's q/k/v input (Ops::feeds_next). On
/// an H100 (tg128 after pp512) that feed took 7B from 429 to 446 t/s, with
/// each thread reading a 64-weight group of a row per step. On an H200 the
/// pair steps that replaced those group steps (A/B in one session) took
/// 32B from 146.3 to 150.4 t/s and 7B from 484.5 to 497.8; the same team
/// for 3B's and 1.5B's down projection (688 and 560 words: feeding q/k/v
/// instead of a conversion dispatch) left them equal (550.6 / 550.7, 783.5
/// / 782.6), so shorter rows keep their wider teams.
pub const LONG_ROW_MIN_WORDS: usize = 1024;

/// The fixed-point GEMV's team for `m` over an input in storage: threads a
/// row (LANES) and packed words each reads of a row per step
/// (WORDS_PER_STEP), on a CPU-emulated adapter where `cpu_emulated`.
pub fn fixed_gemv_team(m: &GpuMatrix, cpu_emulated: bool) -> (u32, u32) {
    let words = m.cols / 16;
    let lanes = if words >= LONG_ROW_MIN_WORDS { 64 } else { fixed_gemv_lanes(words as u32, cpu_emulated) };
    (lanes, words_per_step(m, lanes, pair_step_min_steps(lanes)))
}

/// Most threads a row of the GEMV that writes SwiGLU's output as the down
/// projection's input (gemv_ternary_fixed_swiglu_feeding): 32 give its
/// workgroups 16 gate rows and 16 up rows, one word of that input. Saving
/// down's conversion dispatch this way took tg128 after pp512 on an H100
/// from 694 to 728 t/s (1.5B), 494 to 520 (3B) and 443 to 455 (7B); 32B,
/// whose gate and up rows other GEMVs read with 64 threads, stayed at 130.
const SWIGLU_FEEDING_LANES: u32 = 32;

/// Rows a gemv_fixed.wgsl workgroup computes with teams of `lanes` threads:
/// four a team, 256 threads a workgroup. Eight rows a team, or workgroups
/// of 512 threads with twice the threads a row, ran slower on an H200
/// (tg128 after pp512): 32B's down projection 161.3 -> 154.5 and 159.4 t/s,
/// its o projection in 512 threads 158.4 (BENCHMARKS.md, round 24). One
/// workgroup a block of rows: fewer workgroups looping over the blocks
/// (32B's gate/up capped at 1,320 down to 528 of its 1,728) were as fast or
/// slower, so no tail of workgroups holds the big GEMVs up (round 25).
fn block_rows(lanes: u32) -> u32 {
    256 / lanes * 4
}

/// Fewest steps of two words each thread of a GEMV over an input in storage
/// must take for its team to read two packed words of a row per step under
/// one scale (gemv_fixed.wgsl's WORDS_PER_STEP 2), instead of one: the
/// addresses and the scales of a step then serve twice the weights. On an
/// H200 (tg128 after pp512, A/B in one session) the gate/up GEMV took 32B
/// from 141.0 to 147.2 t/s (5 steps a thread) and 7B from 477.5 to 481.6
/// (3.5), left 3B equal (553.1 / 552.7, 2 steps) and 1.5B slower (769.8 ->
/// 755.6, 1.5); 32B's q/k/v and o (2.5 steps) gained nothing (140.8).
pub const PAIR_STEP_MIN_STEPS: usize = 3;

/// [`PAIR_STEP_MIN_STEPS`], or two steps for teams of more than 64 threads
/// (and for the GEMV feeding SwiGLU's output, kernel_team). Since four rows'
/// words load in one vector (BENCHMARKS.md, round 23), two steps pay there:
/// on an H200, tg128 after pp512, 1.5B's down projection in pair steps
/// (128 threads, 2.2 steps) took it from 870.5 to 883.1 t/s, and 3B's down
/// (128 threads, 2.7) with its gate/up (32 threads, 2) from 609.1 to 619.7;
/// while two steps for 32B's q/k/v, o and LM head (64 threads, 2.5) took it
/// from 162.2 to 159.2, one step for 7B's q/k/v and o (64 threads, 1.75)
/// from 541.7 to 532.8, and one step for 1.5B's gate/up too (32 threads,
/// 1.5; with its down in pair steps) from 883.1 to 838.5.
fn pair_step_min_steps(lanes: u32) -> usize {
    if lanes > 64 {
        2
    } else {
        PAIR_STEP_MIN_STEPS
    }
}

/// Packed words a thread of a team of `lanes` reads of a row of `m` per
/// step: two where each thread takes `min_pair_steps` steps of two or more.
fn words_per_step(m: &GpuMatrix, lanes: u32, min_pair_steps: usize) -> u32 {
    let pairs_a_thread = m.cols / 32 / lanes as usize;
    if whole_pairs(m) && pairs_a_thread >= min_pair_steps {
        2
    } else {
        1
    }
}

/// The team of gemv_fixed.wgsl's entry point `kernel` for `m`:
/// [`fixed_gemv_team`], with at most [`SWIGLU_FEEDING_LANES`] threads a row
/// for the GEMV that feeds SwiGLU's output on (pair steps from two steps a
/// thread: pair_step_min_steps), and a word a step for the GEMV that
/// converts its input itself (whose input is in workgroup memory).
fn kernel_team(kernel: Kernel, m: &GpuMatrix, cpu_emulated: bool) -> (u32, u32) {
    let (lanes, words) = fixed_gemv_team(m, cpu_emulated);
    match kernel {
        Kernel::GemvTernaryFixedStaged => (lanes, 1),
        Kernel::GemvTernaryFixedSwigluFeeding => {
            let lanes = lanes.min(SWIGLU_FEEDING_LANES);
            (lanes, words_per_step(m, lanes, 2))
        }
        _ => (lanes, words),
    }
}

/// Whether the pipeline of gemv_fixed.wgsl's entry point `kernel` for `m`,
/// in teams of `lanes` threads reading `words_per_step` packed words a step,
/// is built for `m`'s input length (its override COLS), so that the driver
/// compiles the loops knowing their counts. On an H200 (tg128 after pp512,
/// one matrix at a time against none, BENCHMARKS.md round 22) that gained
/// up to 1.3 % a matrix, except in two cases, which keep the length a
/// runtime value:
/// - the GEMV that feeds the next input (o, and down of 0.5B, 7B and 32B)
///   lost 1.5-2 % on the 0.5B (its o one step a thread, its down 4.75),
///   gained nothing on 7B's and 32B's o (3.5 and 5) and gained only on the
///   longest rows, 7B's down (9.25 steps, 0.5 %): it needs
///   [`FEEDING_KNOWN_LENGTH_MIN_STEPS`];
/// - 1.5B's gate/up, three steps a thread for every thread, lost 2 %: a
///   loop of at most three steps taken whole by every thread keeps the
///   runtime length (3B's gate/up, four, gained 1 %; ragged loops of one or
///   two steps gained).
fn builds_for_input_length(kernel: Kernel, m: &GpuMatrix, lanes: u32, words_per_step: u32) -> bool {
    let words = m.cols / 16;
    let words_a_step = (lanes * words_per_step) as usize;
    let steps = words.div_ceil(words_a_step);
    match kernel {
        Kernel::GemvTernaryFixedFeeding => steps >= FEEDING_KNOWN_LENGTH_MIN_STEPS,
        _ => !(words.is_multiple_of(words_a_step) && steps <= 3),
    }
}

/// Fewest steps a thread of the GEMV that feeds the next input
/// (gemv_ternary_fixed_feeding) takes where its pipeline is built for its
/// input length ([`builds_for_input_length`]).
const FEEDING_KNOWN_LENGTH_MIN_STEPS: usize = 8;

/// Whether `m`'s rows are whole pairs of packed words under one scale each.
fn whole_pairs(m: &GpuMatrix) -> bool {
    matches!(&m.storage, Storage::Packed { group_size, .. } if group_size % 32 == 0) && m.cols.is_multiple_of(32)
}

/// Checks that `fixed` holds an input of `m`, where every fixed-point product
/// passes, whoever wrote the input.
fn check_fixed_input(m: &GpuMatrix, fixed: FixedInput<'_>) -> Result<(), GpuError> {
    let (plane_bytes, info_bytes) = FixedInput::bytes(m.cols);
    if fixed.planes.size() < plane_bytes || fixed.info.size() < info_bytes {
        return Err(GpuError::Limits(format!("{}: the fixed-point input scratch is too small", m.name)));
    }
    Ok(())
}

/// What one gemv_fixed.wgsl dispatch reads besides the matrix, bias and
/// output: its entry point, label and input (for the feeding GEMV, also what
/// it writes for the next).
struct FixedGemv<'b> {
    kernel: Kernel,
    label: &'static str,
    /// The input's digit planes (fixed_word.wgsl's DIGITS).
    digits: u32,
    bindings: Vec<(u32, &'b wgpu::Buffer)>,
    /// The slot of the exact sum of squares read (EXACT_SUMS) or written (feeding).
    exact_slot: u32,
}

/// The input a fixed-point GEMV writes for the next ([`Ops::feeds_next`]):
/// block fixed point for a hidden-size input, and a slot a layer of exact
/// sums of squares (gemv_fixed.wgsl's add_exact_sum), which must be zero when
/// a step starts.
#[derive(Clone, Copy)]
pub struct FedInput<'a> {
    pub fixed: FixedInput<'a>,
    pub sums: &'a wgpu::Buffer,
}

impl FedInput<'_> {
    /// Bytes of `slots` exact sums: EXACT_PARTS parts of four u32 a slot.
    pub fn sums_bytes(slots: usize) -> u64 {
        16 * EXACT_PARTS as u64 * slots as u64
    }

    /// Sum slots the decode step of a model of `layers` layers uses: two a
    /// layer (forward.rs).
    pub fn slots(layers: usize) -> usize {
        2 * layers
    }
}

/// `fed`, where it has a sum slot `slot` (else an error about `m`).
fn fed_slot<'b>(fed: Option<FedInput<'b>>, m: &GpuMatrix, slot: usize) -> Result<FedInput<'b>, GpuError> {
    match fed {
        Some(fed) if fed.sums.size() >= FedInput::sums_bytes(slot + 1) => Ok(fed),
        _ => Err(GpuError::Limits(format!("{}: no fed input with a sum slot {slot}", m.name))),
    }
}

/// The dispatch inputs of gemv_fixed.wgsl's entry point `kernel` over the
/// input a feeding GEMV wrote into `fed` with its sum in slot `slot`, for `m`.
fn over_fed<'b>(
    fed: Option<FedInput<'b>>,
    m: &GpuMatrix,
    slot: usize,
    kernel: Kernel,
    label: &'static str,
) -> Result<FixedGemv<'b>, GpuError> {
    let fed = fed_slot(fed, m, slot)?;
    check_fixed_input(m, fed.fixed)?;
    Ok(FixedGemv {
        kernel,
        label,
        digits: fed.fixed.digits,
        bindings: vec![(3, fed.fixed.planes), (4, fed.fixed.info), (17, fed.sums)],
        exact_slot: slot as u32,
    })
}

/// Where a feeding GEMV's output goes as the next GEMV's input: the norm it
/// is multiplied with, and the slot (the layer) of its exact sum of squares.
#[derive(Clone, Copy)]
pub struct Feed<'b> {
    pub norm: &'b wgpu::Buffer,
    pub slot: usize,
}

/// Longest input of a fixed-point GEMV that converts its input itself
/// (gemv_fixed.wgsl's gemv_ternary_fixed_staged: 16 * STAGED_WORDS values).
const STAGED_MAX_COLS: usize = 2048;

/// Most rows of a matrix whose fixed-point GEMV converts its input itself: each
/// workgroup repeats the conversion, which beats a conversion dispatch only
/// while there are few workgroups and the input is short. H100, tg128 after
/// pp512, with the q/k/v projection converting its own input: 1.5B 616 -> 653
/// t/s, 3B 448 -> 471, but 7B (hidden 3584) 410 -> 404 and 32B 123.5 ->
/// 119.8; gate/up (17,920 rows) as well on 1.5B: 620 (BENCHMARKS.md).
const STAGED_MAX_ROWS: usize = 8192;

/// Whether the fixed-point GEMV of `m` converts its own input in every
/// workgroup instead of after a conversion dispatch: short inputs (without
/// SwiGLU, which only the conversion applies) of matrices of few rows.
pub fn converts_own_input(m: &GpuMatrix, input_flags: u32) -> bool {
    m.cols <= STAGED_MAX_COLS && m.rows <= STAGED_MAX_ROWS && input_flags & SWIGLU == 0
}

/// A GEMV input in block fixed point (fixed_word.wgsl): three digit planes of
/// `[n / 16]` vec4<u32> each, and `[n / 16]` (scale, sum) pairs followed by
/// the sums of squares of the input's writer, one pair per workgroup.
#[derive(Clone, Copy)]
pub struct FixedInput<'a> {
    pub planes: &'a wgpu::Buffer,
    pub info: &'a wgpu::Buffer,
    /// Digit planes written and read (fixed_word.wgsl's DIGITS): 3 for
    /// 24-bit inputs, 2 or 1 for the reduced precision of `--act-bits`.
    pub digits: u32,
}

impl FixedInput<'_> {
    /// Bytes of digit planes and of word information for an input of `n`
    /// values written by fixed_point.wgsl (a workgroup per 256 words).
    pub fn bytes(n: usize) -> (u64, u64) {
        let words = n as u64 / 16;
        (3 * n as u64, 8 * (words + words.div_ceil(256)))
    }
}

impl Ops<'_> {
    /// [`Ops::gemv`] of a packed matrix over its input in block fixed point:
    /// one dispatch turns the (normalized) input into `fixed`
    /// (fixed_point.wgsl), then [`Ops::gemv_over_fixed`].
    pub(super) async fn gemv_fixed(
        &mut self,
        m: &GpuMatrix,
        fixed: FixedInput<'_>,
        inputs: LinearInputs<'_>,
        y: Out<'_>,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let mut out = vec![self.fixed_point_conversion(m, &inputs, fixed).await?];
        let flags = inputs.flags & (NORM1 | NORM2 | BIAS | RESIDUAL);
        out.extend(self.gemv_over_fixed(m, fixed, inputs.bias, flags, y).await?);
        Ok(out)
    }

    /// The dispatch that writes `m`'s input, with the norms or SwiGLU its
    /// flags say, into `fixed` (fixed_point.wgsl).
    pub(super) async fn fixed_point_conversion(
        &mut self,
        m: &GpuMatrix,
        inputs: &LinearInputs<'_>,
        fixed: FixedInput<'_>,
    ) -> Result<Dispatch, GpuError> {
        let to_fixed = self.kernels.pipeline(Kernel::ToFixedPoint, &[("DIGITS", fixed.digits)]).await?;
        let input_flags = inputs.flags & (NORM1 | NORM2 | SWIGLU);
        let params = self.uniform("to_fixed_point", &[m.cols as u32, input_flags, 0, 0]);
        let bindings = [
            (0, &params),
            (1, inputs.x),
            (2, inputs.norms.norm1.unwrap_or(self.dummy)),
            (3, inputs.norms.norm2.unwrap_or(self.dummy)),
            (4, fixed.planes),
            (5, fixed.info),
        ];
        // fixed_point.wgsl numbers its workgroups along x alone.
        let workgroups = (m.cols / 16).div_ceil(256) as u32;
        if workgroups > MAX_WORKGROUPS_PER_DIM {
            return Err(GpuError::Limits(format!("{}: {} input values are too many to convert", m.name, m.cols)));
        }
        let label = format!("to fixed point {}", m.name);
        Ok(Dispatch::new(self.ctx, label, to_fixed, &bindings, [workgroups, 1, 1]))
    }

    /// [`Ops::gemv_fixed`] in one dispatch per row chunk, each workgroup
    /// converting the input itself (gemv_ternary_fixed_staged), where
    /// [`converts_own_input`].
    pub(super) async fn gemv_staged(
        &mut self,
        m: &GpuMatrix,
        fixed: FixedInput<'_>,
        inputs: LinearInputs<'_>,
        y: Out<'_>,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let input = FixedGemv {
            kernel: Kernel::GemvTernaryFixedStaged,
            label: "gemv converting its input",
            digits: fixed.digits,
            bindings: vec![
                (11, inputs.x),
                (12, inputs.norms.norm1.unwrap_or(self.dummy)),
                (13, inputs.norms.norm2.unwrap_or(self.dummy)),
            ],
            exact_slot: 0,
        };
        let flags = inputs.flags & (NORM1 | NORM2 | BIAS | RESIDUAL);
        self.fixed_gemv_dispatches(m, input, inputs.bias, flags, y).await
    }

    /// `y (+)= W · in (+ bias)` for one token, the input already in `fixed`
    /// (gemv_fixed.wgsl; `flags`: its NORM1, NORM2, BIAS and RESIDUAL): one
    /// dispatch per row chunk of `W`.
    async fn gemv_over_fixed(
        &mut self,
        m: &GpuMatrix,
        fixed: FixedInput<'_>,
        bias: Option<&wgpu::Buffer>,
        flags: u32,
        y: Out<'_>,
    ) -> Result<Vec<Dispatch>, GpuError> {
        check_fixed_input(m, fixed)?;
        let input = FixedGemv {
            kernel: Kernel::GemvTernaryFixed,
            label: "gemv",
            digits: fixed.digits,
            bindings: vec![(3, fixed.planes), (4, fixed.info), (17, self.dummy)],
            exact_slot: 0,
        };
        self.fixed_gemv_dispatches(m, input, bias, flags, y).await
    }

    /// One dispatch of a gemv_fixed.wgsl entry point per row chunk of `m`,
    /// with `input` bound beside the weights, bias and output.
    async fn fixed_gemv_dispatches(
        &mut self,
        m: &GpuMatrix,
        input: FixedGemv<'_>,
        bias: Option<&wgpu::Buffer>,
        flags: u32,
        y: Out<'_>,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let (lanes, words_per_step) = kernel_team(input.kernel, m, self.ctx.caps.cpu_emulated);
        // gemv_fixed.wgsl indexes its workgroup arrays unchecked (kernels.rs'
        // UNCHECKED_INDICES), within their sizes for these shapes only.
        let block = block_rows(lanes);
        let fits = (1..=3).contains(&input.digits)
            && match input.kernel {
                Kernel::GemvTernaryFixedStaged => m.cols <= STAGED_MAX_COLS,
                Kernel::GemvTernaryFixedFeeding => block.is_multiple_of(16),
                Kernel::GemvTernaryFixedSwigluFeeding => (block / 2).is_multiple_of(16),
                _ => true,
            };
        if !fits {
            return Err(GpuError::Limits(format!("{}: no {} for this shape", m.name, input.label)));
        }
        let mut constants = vec![("LANES", lanes), ("DIGITS", input.digits), ("WORDS_PER_STEP", words_per_step)];
        if builds_for_input_length(input.kernel, m, lanes, words_per_step) {
            constants.push(("COLS", m.cols as u32));
        }
        let pipeline = self.matrix_pipeline(m, input.kernel, Kernel::GemvDense, &constants).await?;
        let mut out = Vec::new();
        for chunk in &m.chunks {
            let params = self.gemv_params(m, chunk, flags, y.offset, self.eps, input.exact_slot);
            let mut bindings = vec![(0, &params), (1, &chunk.weights), (7, bias.unwrap_or(self.dummy)), (8, y.buffer)];
            bindings.extend_from_slice(&input.bindings);
            // Pair steps read the input's info two words at a time, through a
            // second binding of the same buffer (gemv_fixed.wgsl's info_pairs),
            // bound wherever `info` is: the entry points that read `info` all
            // declare it, whatever their WORDS_PER_STEP.
            if let Some(&(_, info)) = input.bindings.iter().find(|(b, _)| *b == 4) {
                bindings.push((5, info));
            }
            if let Some(scales) = &chunk.scales {
                bindings.push((2, scales));
            }
            let label = format!("{} {} rows {}..", input.label, m.name, chunk.first_row);
            let workgroups = (chunk.rows as u32).div_ceil(block);
            out.push(Dispatch::new(self.ctx, label, pipeline.clone(), &bindings, grid(workgroups)));
        }
        Ok(out)
    }

    /// Whether [`Ops::attention`] can leave its output as `m`'s fixed-point
    /// input, for [`Ops::linear_of_fixed`]: `m` runs as a fixed-point GEMV
    /// without a norm of its own, and heads are whole words.
    pub fn attention_feeds_fixed(&self, m: &GpuMatrix, has_norm: bool, head_dim: usize) -> bool {
        !has_norm && self.fixed_gemv(m) && head_dim.is_multiple_of(16)
    }

    /// Whether the fixed-point GEMV of `m` can also write its output, normed,
    /// as the fixed-point input of the products `next` (which then run as
    /// [`Ops::linear_of_fed`]): a workgroup's rows are whole words of it, the
    /// matrix is one chunk, each next product reads all of its rows, and the
    /// device binds the kernel's eleven storage buffers. That saves the next
    /// products' conversion dispatch.
    pub fn feeds_next(&self, m: &GpuMatrix, next: &[&GpuMatrix]) -> bool {
        let (plane_bytes, info_bytes) = FixedInput::bytes(m.rows);
        self.fed_input.is_some_and(|fed| fed.fixed.planes.size() >= plane_bytes && fed.fixed.info.size() >= info_bytes)
            && self.fixed_gemv(m)
            && m.chunks.len() == 1
            && m.rows.is_multiple_of(16)
            && block_rows(fixed_gemv_team(m, self.ctx.caps.cpu_emulated).0).is_multiple_of(16)
            && m.rows / 16 <= 255 * EXACT_PARTS // workgroups of 16 rows or more
            && self.ctx.caps.limits.max_storage_buffers_per_shader_stage >= 11
            && next.iter().all(|n| self.fixed_gemv(n) && n.cols == m.rows)
    }

    /// `y (+)= W · in (+ bias)` for one token, over the fixed-point input that
    /// [`Ops::attention`] left (where [`Ops::attention_feeds_fixed`]). With a
    /// `feed`, the GEMV also writes `y * feed.norm` as the next products'
    /// input (where [`Ops::feeds_next`]), for [`Ops::linear_of_fed`].
    pub async fn linear_of_fixed(
        &mut self,
        m: &GpuMatrix,
        bias: Option<&wgpu::Buffer>,
        residual: bool,
        y: Out<'_>,
        feed: Option<Feed<'_>>,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let Some(fixed) = self.fixed_input.filter(|_| self.fixed_gemv(m)) else {
            return Err(GpuError::Limits(format!("{}: no fixed-point GEMV for this matrix", m.name)));
        };
        let flags = bias.map_or(0, |_| BIAS) | if residual { RESIDUAL } else { 0 };
        let Some(feed) = feed else {
            return self.gemv_over_fixed(m, fixed, bias, flags, y).await;
        };
        let fed = fed_slot(self.fed_input, m, feed.slot)?;
        if y.offset != 0 || !self.feeds_next(m, &[]) {
            return Err(GpuError::Limits(format!("{}: this GEMV cannot write the next input", m.name)));
        }
        check_fixed_input(m, fixed)?;
        let input = FixedGemv {
            kernel: Kernel::GemvTernaryFixedFeeding,
            label: "gemv feeding the next",
            digits: fixed.digits,
            bindings: vec![
                (3, fixed.planes),
                (4, fixed.info),
                (14, fed.fixed.planes),
                (15, fed.fixed.info),
                (16, feed.norm),
                (18, fed.sums),
            ],
            exact_slot: feed.slot as u32,
        };
        self.fixed_gemv_dispatches(m, input, bias, flags, y).await
    }

    /// `y (+)= W · in (+ bias)` for one token, over the input that a feeding
    /// GEMV wrote with its norm into slot `slot` ([`Ops::linear_of_fixed`]
    /// with a feed), whose inverse RMS this GEMV applies.
    pub async fn linear_of_fed(
        &mut self,
        m: &GpuMatrix,
        slot: usize,
        bias: Option<&wgpu::Buffer>,
        y: Out<'_>,
    ) -> Result<Vec<Dispatch>, GpuError> {
        if !self.fixed_gemv(m) {
            return Err(GpuError::Limits(format!("{}: no fixed-point GEMV for this matrix", m.name)));
        }
        let input = over_fed(self.fed_input, m, slot, Kernel::GemvTernaryFixed, "gemv over the fed input")?;
        let flags = NORM1 | EXACT_SUMS | bias.map_or(0, |_| BIAS);
        self.fixed_gemv_dispatches(m, input, bias, flags, y).await
    }

    /// Whether the GEMV of the stacked gate and up projection `gate_up`, over
    /// the fed input ([`Ops::linear_of_fed`]), can also write SwiGLU of its
    /// two halves as `down`'s fixed-point input, for
    /// [`Ops::linear_of_fed_feeding_swiglu`]: both run as fixed-point GEMVs,
    /// `gate_up` is one chunk, and each of its workgroups holds whole words
    /// of gate rows (gemv_ternary_fixed_swiglu_feeding). That saves down's
    /// conversion dispatch.
    pub fn feeds_swiglu(&self, gate_up: &GpuMatrix, down: &GpuMatrix) -> bool {
        let (lanes, _) = kernel_team(Kernel::GemvTernaryFixedSwigluFeeding, gate_up, self.ctx.caps.cpu_emulated);
        let block_gates = block_rows(lanes) / 2;
        let half = gate_up.rows / 2;
        self.fed_input.is_some()
            && self.fixed_input.is_some_and(|fixed| check_fixed_input(down, fixed).is_ok())
            && self.fixed_gemv(gate_up)
            && self.fixed_gemv(down)
            && gate_up.chunks.len() == 1
            && gate_up.rows.is_multiple_of(2)
            && half.is_multiple_of(block_gates as usize)
            && half / block_gates as usize <= MAX_WORKGROUPS_PER_DIM as usize // one row of workgroups: no overhang
            && block_gates.is_multiple_of(16)
            && down.cols == half
            && self.ctx.caps.limits.max_storage_buffers_per_shader_stage >= 10
    }

    /// [`Ops::linear_of_fed`] of the stacked gate and up projection `m`
    /// whose GEMV also writes silu(gate) * up into the fixed-point scratch as
    /// `down`'s input (where [`Ops::feeds_swiglu`]); down then runs as
    /// [`Ops::linear_of_fixed`].
    pub async fn linear_of_fed_feeding_swiglu(
        &mut self,
        m: &GpuMatrix,
        slot: usize,
        bias: Option<&wgpu::Buffer>,
        y: Out<'_>,
        down: &GpuMatrix,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let Some(fixed) = self.fixed_input.filter(|_| self.feeds_swiglu(m, down)) else {
            return Err(GpuError::Limits(format!("{}: this GEMV cannot write {}'s input", m.name, down.name)));
        };
        let kernel = Kernel::GemvTernaryFixedSwigluFeeding;
        let mut input = over_fed(self.fed_input, m, slot, kernel, "gemv over the fed input feeding down")?;
        input.bindings.extend([(14, fixed.planes), (15, fixed.info)]);
        let flags = NORM1 | EXACT_SUMS | bias.map_or(0, |_| BIAS);
        self.fixed_gemv_dispatches(m, input, bias, flags, y).await
    }
}

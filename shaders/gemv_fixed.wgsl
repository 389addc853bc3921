// Ternary matrix-vector product over a block fixed-point input (fixed_point.wgsl):
//
//   y[y_offset + r] = (RESIDUAL ? y[y_offset + r] : 0) + (BIAS ? bias[r] : 0)
//                     + norm * sum_w scale(r, w) * in_scale[w] * sum_c trit[r, 16w + c] * A[16w + c]
//
// where `norm` is 1, or with NORM1 / NORM2 the product of the input's inverse
// RMS values, which the input's writer leaves out of it and which this kernel
// computes from the sums of squares the writer left: one per fixed_point.wgsl
// workgroup (256 words) after the words' info, or with EXACT_SUMS one exact
// sum (NORM1 only) in `exact_sums` (below).
//
// The inner sums are exact integer arithmetic: a packed word's digits (trit + 1)
// at one position of its four bytes are one shift and mask away (digit_bytes,
// decode.wgsl), and dot4I8Packed multiplies them with one digit byte of four
// inputs at a time. A word of 16 weights costs four such extractions and four
// 4-wide integer dot products per digit plane (three for 24-bit inputs, the
// default), and the +1 of the digits is taken off once per word with the
// word's sum of A. gemv.wgsl's float path spends an int-to-float conversion
// on every weight instead.
//
// `gemv_ternary_fixed_staged` computes the same for inputs of up to
// 16 * STAGED_WORDS values: each workgroup converts the whole input itself, as
// fixed_point.wgsl would (norms, block fixed point, sums of squares), into
// workgroup memory, so that no conversion dispatch runs before it. That pays
// where a matrix has few workgroups to repeat the conversion (the engine
// picks it by shape: ops::converts_own_input).
//
// `gemv_ternary_fixed_feeding` computes the same (over an input in storage,
// without norms) and also writes its output y, times `next_norm`, as the next
// GEMV's fixed-point input: the residual stream, as the o projection leaves
// it for gate and up (under the post-attention norm) and the down projection
// for the next layer's q/k/v (under its input norm). Each workgroup's rows
// are whole words of it, so no conversion dispatch runs between the two. Like
// fixed_point.wgsl it leaves the inverse RMS out; the sum of y^2 it needs is
// added up exactly by atomic adds of every workgroup into slot `exact_slot`
// of `exact_sums_out` (zeroed before the step; see add_exact_sum), so that
// the next GEMV reads one sum (EXACT_SUMS) instead of adding up one per
// workgroup. Needs rows % 16 == 0, LANES up to 64, one chunk, y_offset 0 and
// at most 255 * EXACT_PARTS workgroups.
//
// `gemv_ternary_fixed_swiglu_feeding` computes the same for the stacked
// gate and up projection (rows 0..rows/2 gate, then up) and also writes
// silu(gate) * up as the down projection's fixed-point input: the first half
// of each workgroup's teams computes its gate rows and the second half the
// matching up rows, so that each workgroup holds whole words of SwiGLU's
// output and no conversion dispatch runs before down. Needs LANES up to 32
// (16 gate rows a workgroup or more), rows / 2 a multiple of a workgroup's
// gate rows, and one chunk.
//
// Dispatch: workgroups of 256 threads in teams of LANES threads; each team
// computes four consecutive rows, the four that the GPU layout stores side
// by side (packed_index, decode.wgsl), each thread reading one packed word of
// each row per step, the four rows' words in one 16-byte load and their
// scales in one more (neighbouring threads read neighbouring words), and
// the input's word once for all four rows. With WORDS_PER_STEP 2 (rows long
// enough for several such steps a thread: the gate/up and down projections
// of 7B and 32B), each thread reads two neighbouring words of each row per
// step under one scale, so that a step's addresses and scales serve twice
// the weights.
// Workgroups are laid out 2-D (x up to 65535): index = wg.x + wg.y *
// num_wg.x. Teams past the last row read the last four rows' weights (a
// team's offsets are worked out once, before its loop) and write nothing.
// Needs cols % 16 == 0 and GROUP_SIZE % 16 == 0; WORDS_PER_STEP 2
// needs cols % 32 == 0 and GROUP_SIZE % 32 == 0.

struct Params {
    rows: u32,       // rows in this chunk
    cols: u32,       // input length
    row_offset: u32, // first row of this chunk in the matrix (and its bias)
    flags: u32,      // NORM1 | NORM2 | BIAS | RESIDUAL
    y_offset: u32,   // where the matrix's row 0 goes in y
    eps: f32,        // RMSNorm epsilon (NORM1, NORM2)
    exact_slot: u32, // EXACT_SUMS: the input's sum in exact_sums; the feeding GEMV's in exact_sums_out
    _pad: u32,
}

const NORM1: u32 = 1u;
const NORM2: u32 = 2u;
const BIAS: u32 = 4u;
const RESIDUAL: u32 = 8u;
const EXACT_SUMS: u32 = 64u;

override GROUP_SIZE: u32 = 64u; // weights per scale
override SCALE_DTYPE: u32 = 0u; // DTYPE_* of the scales
override LANES: u32 = 64u;      // threads per row team: a power of two dividing 256
override WORDS_PER_STEP: u32 = 1u; // packed words of a row a thread reads per step: 1 or 2
override COLS: u32 = 0u; // the input length where the pipeline is built for one (else p.cols)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> weights: array<vec4<u32>>; // [rows / 4, cols / 16] words of four rows
@group(0) @binding(2) var<storage, read> scales: array<vec4<u32>>;  // [rows / 4, cols / GROUP_SIZE] scales of four rows
@group(0) @binding(3) var<storage, read> planes: array<vec4<u32>>; // [DIGITS, cols / 16] (fixed_point.wgsl)
@group(0) @binding(4) var<storage, read> info: array<vec2<u32>>;   // [cols / 16] scale, sum of A; then sums of squares
// The same buffer as `info`, two words' info a vec4, so that a pair step
// (WORDS_PER_STEP 2) loads both at once: one load fewer.
@group(0) @binding(5) var<storage, read> info_pairs: array<vec4<u32>>; // [cols / 32], then the sums
@group(0) @binding(7) var<storage, read> bias: array<f32>;         // [all rows of the matrix]
@group(0) @binding(8) var<storage, read_write> y: array<f32>;      // [y_offset + all rows, ...]
// gemv_ternary_fixed_staged: the input as it is, and its norm weights.
@group(0) @binding(11) var<storage, read> x: array<vec4<f32>>;     // [cols / 4]
@group(0) @binding(12) var<storage, read> norm1: array<vec4<f32>>; // [cols / 4] (NORM1)
@group(0) @binding(13) var<storage, read> norm2: array<vec4<f32>>; // [cols / 4] (NORM2)
// gemv_ternary_fixed_feeding: the next GEMV's input and its norm weights.
@group(0) @binding(14) var<storage, read_write> next_planes: array<vec4<u32>>; // [DIGITS, rows / 16]
@group(0) @binding(15) var<storage, read_write> next_info: array<vec2<u32>>;   // [rows / 16]
@group(0) @binding(16) var<storage, read> next_norm: array<f32>;               // [rows]
// Exact sums of squares (add_exact_sum): EXACT_PARTS parts a slot, each four
// u32 (EXACT_SUMS; written through `exact_sums_out` by
// gemv_ternary_fixed_feeding).
@group(0) @binding(17) var<storage, read> exact_sums: array<vec4<u32>>;
@group(0) @binding(18) var<storage, read_write> exact_sums_out: array<atomic<u32>>;
const EXACT_PARTS: u32 = 4u;

const WG: u32 = 256u;
const ROWS_PER_TEAM: u32 = 4u;

// Each row's per-thread sums, padded to LANES + 1 so that the threads adding
// up different rows read different banks. The workgroup memory of an entry
// point stays small: with this array and block_y sized for workgroups of 512
// threads (12 KB instead of 7), 32B decoded 3 % slower on an H200.
var<workgroup> partial: array<f32, 1280>; // [(WG / LANES) * ROWS_PER_TEAM rows, LANES + 1]

// gemv_ternary_fixed_feeding: the workgroup's rows of y, and of y * next_norm;
// gemv_ternary_fixed_swiglu_feeding: its gate rows, then its up rows (x).
var<workgroup> block_y: array<vec2<f32>, WG>;

// gemv_ternary_fixed_staged: the workgroup's own fixed-point input.
const STAGED_WORDS: u32 = 128u;
var<workgroup> staged_planes: array<vec4<u32>, 384>; // [3, STAGED_WORDS] (fixed_word.wgsl)
var<workgroup> staged_info: array<vec2<u32>, STAGED_WORDS>;

// sum_c digit * A - offset over the 16 weights of `word`; the input word's
// digit planes are `a0` (lowest), `a1`, `a2` (those past DIGITS are not
// read). Each plane's products start from the higher planes' sum times 256
// (the lowest also from -offset), so that the adds ride in the integer dot
// products' own accumulation instead of taking instructions of their own.
// Below 2^28 in size: no overflow.
fn word_dot(word: u32, a0: vec4<u32>, a1: vec4<u32>, a2: vec4<u32>, offset: i32) -> i32 {
    let d = vec4<u32>(digit_bytes(word, 0u), digit_bytes(word, 1u), digit_bytes(word, 2u), digit_bytes(word, 3u));
    var higher = 0;
    if (DIGITS == 3u) {
        higher = plane_dot(d, a2, 0);
    }
    if (DIGITS >= 2u) {
        higher = plane_dot(d, a1, higher * 256);
    }
    return plane_dot(d, a0, higher * 256 - offset);
}

// start + the products of a word's digits `d` (digit_bytes 0..3) with one
// digit plane `a` of its inputs.
fn plane_dot(d: vec4<u32>, a: vec4<u32>, start: i32) -> i32 {
    return start + dot4I8Packed(d.x, a.x) + dot4I8Packed(d.y, a.y) + dot4I8Packed(d.z, a.z) + dot4I8Packed(d.w, a.w);
}

// Digit plane k of input word w (zeros past DIGITS, which are not read).
fn plane(k: u32, words: u32, w: u32) -> vec4<u32> {
    if (k >= DIGITS) {
        return vec4<u32>(0u);
    }
    return planes[k * words + w];
}

// Where the team's four rows start in the weights (in vectors of the four
// rows' words) and in the scales (in the four rows' scales). Teams past the
// end of the matrix read its last four rows: their sums are computed but
// never written.
struct TeamRows {
    words: u32,
    scales: u32,
}

fn team_rows(first_row: u32) -> TeamRows {
    let quad = min(first_row, p.rows - 1u) / 4u;
    return TeamRows(quad * (cols() / 16u), quad * (cols() / GROUP_SIZE));
}

// The input length: the pipeline's COLS where it has one, so that the driver
// compiles the loops knowing their counts.
fn cols() -> u32 {
    if (COLS != 0u) {
        return COLS;
    }
    return p.cols;
}

// The four rows' scales at `at` (in four rows' scales): one vec4 of f32, or
// half of one of 16-bit values.
fn scale_quad(at: u32) -> vec4<f32> {
    if (SCALE_DTYPE == DTYPE_F32) {
        return bitcast<vec4<f32>>(scales[at]);
    }
    let both = scales[at / 2u];
    let pair = select(both.xy, both.zw, (at & 1u) == 1u);
    return vec4<f32>(
        float_in_word(pair.x, 0u, SCALE_DTYPE),
        float_in_word(pair.x, 1u, SCALE_DTYPE),
        float_in_word(pair.y, 0u, SCALE_DTYPE),
        float_in_word(pair.y, 1u, SCALE_DTYPE),
    );
}

// Word `w` of the team's four rows, and their scales.
struct TeamWords {
    words: vec4<u32>,
    scales: vec4<f32>,
}

fn team_words(t: TeamRows, w: u32) -> TeamWords {
    return TeamWords(weights[t.words + w], team_scales(t, w));
}

// The scales of word `w` of the team's four rows.
fn team_scales(t: TeamRows, w: u32) -> vec4<f32> {
    return scale_quad(t.scales + (16u * w) / GROUP_SIZE);
}

// The factor the input's norms leave to this kernel (norm_from_sums), from
// the sums of squares of the input's writer: one exact sum (EXACT_SUMS), or
// the few fixed_point.wgsl wrote.
fn norm_factor() -> f32 {
    if ((p.flags & NORM1) == 0u) {
        return 1.0;
    }
    if ((p.flags & EXACT_SUMS) != 0u) {
        // Word k of a part holds bits 24k.. of the sum times 2^40.
        let weights = vec4<f32>(1.0 / 1099511627776.0, 1.0 / 65536.0, 256.0, 4294967296.0); // 2^-40, 2^-16, 2^8, 2^32
        var sum = 0.0;
        for (var part = 0u; part < EXACT_PARTS; part = part + 1u) {
            sum = sum + dot(vec4<f32>(exact_sums[EXACT_PARTS * p.exact_slot + part]), weights);
        }
        return norm_from_sums(vec2<f32>(sum, 0.0));
    }
    let words = cols() / 16u;
    var sums = vec2<f32>(0.0);
    for (var k = 0u; k < (words + 255u) / 256u; k = k + 1u) {
        sums = sums + bitcast<vec2<f32>>(info[words + k]);
    }
    return norm_from_sums(sums);
}

// Adds `value` (>= 0), times 2^40 and rounded down to an integer, to part
// `part` of slot exact_slot of exact_sums_out: 24-bit pieces of it go to the
// part's four u32 (bits 24k.. to word k), which hold the sums of up to 255
// such pieces without overflow, so no add waits for another (no carries) and
// the sum does not depend on the order of the adds. Sums below 2^56.
fn add_exact_sum(value: f32, part: u32) {
    if (!(value > 0.0)) {
        return;
    }
    // value * 2^40 = mantissa * 2^shift with a 24-bit integer mantissa.
    let e = frexp(value);
    let mantissa = u32(e.fract * 16777216.0); // 2^24
    let shift = e.exp - 24 + 40;
    let at = 4u * (EXACT_PARTS * p.exact_slot + part);
    if (shift < 0) {
        atomicAdd(&exact_sums_out[at], mantissa >> u32(min(-shift, 31)));
        return;
    }
    let word = u32(shift) / 24u;
    let bit = u32(shift) % 24u;
    if (word < 4u) {
        atomicAdd(&exact_sums_out[at + word], (mantissa << bit) & 0xffffffu);
    }
    if (bit > 0u && word + 1u < 4u) {
        atomicAdd(&exact_sums_out[at + word + 1u], mantissa >> (24u - bit));
    }
}

// With NORM1, 1 / rms(x), times the per-linear norm's 1 / rms(x / rms(x) *
// norm1) with NORM2 (as norm.wgsl computes them), from `sums`: the input's
// sum of x^2 and of (x * norm1)^2. Without NORM1, 1.
fn norm_from_sums(sums: vec2<f32>) -> f32 {
    if ((p.flags & NORM1) == 0u) {
        return 1.0;
    }
    let n = f32(cols());
    let inv_rms = inverseSqrt(sums.x / n + p.eps);
    if ((p.flags & NORM2) == 0u) {
        return inv_rms;
    }
    return inv_rms * inverseSqrt(inv_rms * inv_rms * sums.y / n + p.eps);
}

// What row `row` (of this chunk) of y adds to its product: its bias and the
// residual already in y, as the flags say; 0 where this thread writes no row
// (`writes_row` false). Loaded after the sums, it holds the workgroup up by
// one more memory round trip at its end, so the entry points load it with
// their first weights.
fn row_addend(row: u32, writes_row: bool) -> f32 {
    var addend = 0.0;
    if (!writes_row) {
        return addend;
    }
    let r = p.row_offset + row;
    if ((p.flags & BIAS) != 0u) {
        addend = addend + bias[r];
    }
    if ((p.flags & RESIDUAL) != 0u) {
        addend = addend + y[p.y_offset + r];
    }
    return addend;
}

// Writes row `row` (of this chunk) of y: `sum` times the norm factor `norm`,
// plus `addend` (row_addend); returns what it wrote.
fn write_row(row: u32, sum: f32, norm: f32, addend: f32) -> f32 {
    let out = sum * norm + addend;
    y[p.y_offset + p.row_offset + row] = out;
    return out;
}

@compute @workgroup_size(256)
fn gemv_ternary_fixed(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let block_first_row = (wg.x + wg.y * num_wg.x) * (WG / LANES * ROWS_PER_TEAM);
    let first_row = block_first_row + lid / LANES * ROWS_PER_TEAM;
    let t = team_rows(first_row);
    let first = first_team_words(t, lid);
    // Thread k of the block writes row k; what that adds, and the norm
    // factor, load with the first weights.
    let row = block_first_row + lid;
    let writes_row = lid < WG / LANES * ROWS_PER_TEAM && row < p.rows;
    let addend = row_addend(row, writes_row);
    let norm = norm_factor();
    let acc = team_sums(t, lid, first);
    share_sums(lid, acc);
    if (writes_row) {
        _ = write_row(row, row_sum(lid), norm, addend);
    }
}

@compute @workgroup_size(256)
fn gemv_ternary_fixed_feeding(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let block = wg.x + wg.y * num_wg.x;
    let block_rows = WG / LANES * ROWS_PER_TEAM;
    let block_first_row = block * block_rows;
    let first_row = block_first_row + lid / LANES * ROWS_PER_TEAM;
    let t = team_rows(first_row);
    let first = first_team_words(t, lid);
    // Thread k of the block writes row k of y and of the next input; its
    // norm weight, and what the row adds, load with the first weights.
    let row = block_first_row + lid;
    let writes_row = lid < block_rows && row < p.rows;
    var norm_weight = 0.0;
    if (writes_row) {
        norm_weight = next_norm[row];
    }
    let addend = row_addend(row, writes_row);
    let acc = team_sums(t, lid, first);
    share_sums(lid, acc);
    if (writes_row) {
        let out = write_row(row, row_sum(lid), 1.0, addend);
        block_y[lid] = vec2<f32>(out, out * norm_weight);
    }
    workgroupBarrier();
    // One thread turns the block's rows of y * next_norm into words of the
    // next input, as fixed_point.wgsl would with NORM1, and adds the block's
    // sum of y^2 to the exact sum. A value a thread, as swiglu_words
    // converts, cost the 0.5B 1.4 % (its workgroups hold one word: three
    // barriers cost more than one thread's conversion) and gained 32B 0.3 %
    // (BENCHMARKS.md, round 24).
    if (lid == 0u) {
        let next_words = p.rows / 16u;
        var squares = 0.0;
        let last_word = min((block_first_row + block_rows) / 16u, next_words);
        for (var w = block_first_row / 16u; w < last_word; w = w + 1u) {
            var values: array<vec4<f32>, 4>;
            for (var i = 0u; i < 4u; i = i + 1u) {
                let at = 16u * w + 4u * i - block_first_row;
                let raw = block_quad(at, 0u);
                values[i] = block_quad(at, 1u);
                squares = squares + dot(raw, raw);
            }
            store_next_word(w, next_words, fixed_word(values));
        }
        add_exact_sum(squares, block % EXACT_PARTS);
    }
}

@compute @workgroup_size(256)
fn gemv_ternary_fixed_swiglu_feeding(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let block = wg.x + wg.y * num_wg.x;
    let half = p.rows / 2u;
    let teams = WG / LANES;
    let block_gates = teams / 2u * ROWS_PER_TEAM; // gate rows (and up rows) of the workgroup
    let first_gate = block * block_gates;
    // Teams 0..teams/2 take the gate rows, the others the up rows.
    let team = lid / LANES;
    let up_team = team / (teams / 2u);
    let first_row = up_team * half + first_gate + (team % (teams / 2u)) * ROWS_PER_TEAM;
    let t = team_rows(first_row);
    let first = first_team_words(t, lid);
    // Thread k writes the workgroup's k-th row: gate rows, then up rows. What
    // that adds, and the norm factor, load with the first weights.
    let writes_row = lid < 2u * block_gates;
    let row = (lid / block_gates) * half + first_gate + lid % block_gates;
    let addend = row_addend(row, writes_row);
    let norm = norm_factor();
    let acc = team_sums(t, lid, first);
    share_sums(lid, acc);
    if (writes_row) {
        block_y[lid] = vec2<f32>(write_row(row, row_sum(lid), norm, addend), 0.0);
    }
    workgroupBarrier();
    swiglu_words(lid, block_gates, first_gate / 16u, half / 16u);
}

// gemv_ternary_fixed_swiglu_feeding: each gate row's value of down's input
// on its way into words: its magnitude, then its digits and integer.
var<workgroup> swiglu_values: array<vec4<i32>, 128>; // [block_gates]

// silu(gate) * up of the workgroup's gate and up rows (in block_y) into words
// first_word.. of down's input (of `words` words), a value a thread: each of
// the first block_gates threads converts its row as fixed_word would convert
// it within its word (its int_factor and fixed_ints, then its digits),
// then 12 threads a word each pack one component of its digit planes and
// one its info. One thread converting a whole word (fixed_word) held each
// workgroup up by that serial tail: on an H200, tg128 after pp512, 32B
// 154.5 -> 155.4 t/s, 7B 515 -> 520, 0.5B 1,170 -> 1,177 (BENCHMARKS.md,
// round 21). Every thread of the workgroup calls it (it has barriers).
fn swiglu_words(lid: u32, block_gates: u32, first_word: u32, words: u32) {
    var value = 0.0;
    if (lid < block_gates) {
        let gate = block_y[lid].x;
        let up = block_y[block_gates + lid].x;
        value = gate / (1.0 + exp(-gate)) * up; // as swiglu.wgsl
        swiglu_values[lid] = vec4<i32>(bitcast<i32>(abs(value)), 0, 0, 0);
    }
    workgroupBarrier();
    let w = lid / 16u;
    var largest = 0.0;
    var int = 0;
    var d: array<vec4<i32>, 3>;
    if (lid < block_gates) {
        for (var i = 0u; i < 16u; i = i + 1u) {
            largest = max(largest, bitcast<f32>(swiglu_values[16u * w + i].x));
        }
        let ints = fixed_ints(vec4<f32>(value, 0.0, 0.0, 0.0), int_factor(largest));
        int = ints.x;
        d = digits(ints);
    }
    workgroupBarrier(); // the magnitudes are read before the digits replace them
    if (lid < block_gates) {
        swiglu_values[lid] = vec4<i32>(d[0].x, d[1].x, d[2].x, int);
    }
    workgroupBarrier();
    if (lid < block_gates) {
        // Value 4i + j of the word is swiglu_values[16w + 4i + j]; component
        // j of digit plane k packs digit k of values j, 4 + j, 8 + j, 12 + j.
        let r = lid % 16u;
        let at = 16u * w;
        if (r < 4u * DIGITS) {
            let k = r / 4u;
            let j = r % 4u;
            let packed = pack4xI8(vec4<i32>(
                swiglu_values[at + j][k],
                swiglu_values[at + 4u + j][k],
                swiglu_values[at + 8u + j][k],
                swiglu_values[at + 12u + j][k],
            ));
            next_planes[k * words + first_word + w][j] = packed;
        }
        if (r == 15u) {
            var sum = 0;
            for (var i = 0u; i < 16u; i = i + 1u) {
                sum = sum + swiglu_values[at + i].w;
            }
            next_info[first_word + w] = vec2<u32>(bitcast<u32>(largest / amax()), bitcast<u32>(sum));
        }
    }
}

// Component k of block_y[at .. at + 4].
fn block_quad(at: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(block_y[at][k], block_y[at + 1u][k], block_y[at + 2u][k], block_y[at + 3u][k]);
}

// Stores `word` as word `w` of the next GEMV's input of `words` words.
fn store_next_word(w: u32, words: u32, word: FixedWord) {
    for (var k = 0u; k < DIGITS; k = k + 1u) {
        next_planes[k * words + w] = word.planes[k];
    }
    next_info[w] = word.info;
}

// The four rows' integer sums over one input word, digits times A minus the
// word's sum of A (digits are trit + 1): `words4` holds the rows' packed
// words, a0..a2 the word's digit planes and `word_info` its info.
fn word_ints(words4: vec4<u32>, a0: vec4<u32>, a1: vec4<u32>, a2: vec4<u32>, word_info: vec2<u32>) -> vec4<i32> {
    let sum_a = bitcast<i32>(word_info.y);
    return vec4<i32>(
        word_dot(words4.x, a0, a1, a2, sum_a),
        word_dot(words4.y, a0, a1, a2, sum_a),
        word_dot(words4.z, a0, a1, a2, sum_a),
        word_dot(words4.w, a0, a1, a2, sum_a),
    );
}

// The team's four rows' sums over one input word: `step` holds the rows'
// words and scales, a0..a2 the word's digit planes and `word_info` its info.
fn step_sums(step: TeamWords, a0: vec4<u32>, a1: vec4<u32>, a2: vec4<u32>, word_info: vec2<u32>) -> vec4<f32> {
    let ints = word_ints(step.words, a0, a1, a2, word_info);
    return vec4<f32>(ints) * (step.scales * bitcast<f32>(word_info.x));
}

// Puts each thread's four row sums `acc` where row_sum finds them.
fn share_sums(lid: u32, acc: vec4<f32>) {
    let stride = LANES + 1u;
    for (var k = 0u; k < ROWS_PER_TEAM; k = k + 1u) {
        partial[(lid / LANES * ROWS_PER_TEAM + k) * stride + lid % LANES] = acc[k];
    }
    workgroupBarrier();
}

// Row `lid` of the block's sum over its LANES threads (after share_sums).
fn row_sum(lid: u32) -> f32 {
    let at = lid * (LANES + 1u);
    var four = vec4<f32>(0.0);
    for (var i = 0u; i < LANES; i = i + 4u) {
        four = four + vec4<f32>(
            partial[at + i],
            select(0.0, partial[at + i + 1u], i + 1u < LANES),
            select(0.0, partial[at + i + 2u], i + 2u < LANES),
            select(0.0, partial[at + i + 3u], i + 3u < LANES),
        );
    }
    return four.x + four.y + four.z + four.w;
}

// Digit plane k of the workgroup's own input word w (zeros past DIGITS).
fn staged_plane(k: u32, w: u32) -> vec4<u32> {
    if (k >= DIGITS) {
        return vec4<u32>(0u);
    }
    return staged_planes[k * STAGED_WORDS + w];
}

@compute @workgroup_size(256)
fn gemv_ternary_fixed_staged(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let words = cols() / 16u;
    let block_first_row = (wg.x + wg.y * num_wg.x) * (WG / LANES * ROWS_PER_TEAM);
    let first_row = block_first_row + lid / LANES * ROWS_PER_TEAM;
    // The first weights are requested before the conversion, which runs
    // while they load.
    var w = lid % LANES;
    let t = team_rows(first_row);
    var next = first_team_words(t, lid);
    let row = block_first_row + lid;
    let writes_row = lid < WG / LANES * ROWS_PER_TEAM && row < p.rows;
    let addend = row_addend(row, writes_row);

    // The input in block fixed point, one word per thread at a time, and the
    // sums of squares its norms need (as fixed_point.wgsl).
    var squares = vec2<f32>(0.0);
    for (var v = lid; v < words; v = v + WG) {
        var values: array<vec4<f32>, 4>;
        for (var i = 0u; i < 4u; i = i + 1u) {
            let q = 4u * v + i;
            var quad = x[q];
            if ((p.flags & NORM1) != 0u) {
                squares.x = squares.x + dot(quad, quad);
                quad = quad * norm1[q];
                squares.y = squares.y + dot(quad, quad);
            }
            if ((p.flags & NORM2) != 0u) {
                quad = quad * norm2[q];
            }
            values[i] = quad;
        }
        let word = fixed_word(values);
        for (var k = 0u; k < DIGITS; k = k + 1u) {
            staged_planes[k * STAGED_WORDS + v] = word.planes[k];
        }
        staged_info[v] = word.info;
    }
    let sums = vec2<f32>(workgroup_sum(lid, WG, squares.x), workgroup_sum(lid, WG, squares.y));
    workgroupBarrier();

    var acc = vec4<f32>(0.0);
    for (; w < words; w = w + LANES) {
        let step = next;
        if (w + LANES < words) {
            next = team_words(t, w + LANES);
        }
        acc = acc + step_sums(step, staged_plane(0u, w), staged_plane(1u, w), staged_plane(2u, w), staged_info[w]);
    }
    share_sums(lid, acc);
    if (writes_row) {
        _ = write_row(row, row_sum(lid), norm_from_sums(sums), addend);
    }
}

// The first step's words of the team's rows `t`, for team_sums, requested
// as early as a kernel can.
fn first_team_words(t: TeamRows, lid: u32) -> TeamWords {
    return team_words(t, min(lid % LANES, cols() / 16u - 1u));
}

// The sums of the team's four rows `t` over the whole input in storage:
// this thread's share (words lid % LANES, + LANES, ...), from the first
// step's words `first` on. The next step's weights are requested before this
// step's are used: the GEMV waits on memory more than it computes. The loop
// takes two steps an iteration, the requests alternating between `even` and
// `odd`, so that no step's words are copied from one set of registers to
// another (with one prefetched step carried, 28 of the 323 instructions of a
// 32B pair step were such copies on an H200). With WORDS_PER_STEP 2,
// team_pair_sums, which loads its own first step.
fn team_sums(t: TeamRows, lid: u32, first: TeamWords) -> vec4<f32> {
    if (WORDS_PER_STEP == 2u) {
        return team_pair_sums(t, lid);
    }
    let words = cols() / 16u;
    var w = lid % LANES;
    var even = first;
    var acc = vec4<f32>(0.0);
    loop {
        if (w >= words) {
            break;
        }
        var odd: TeamWords;
        if (w + LANES < words) {
            odd = team_words(t, w + LANES);
        }
        acc = acc + input_step_sums(even, words, w);
        w = w + LANES;
        if (w >= words) {
            break;
        }
        if (w + LANES < words) {
            even = team_words(t, w + LANES);
        }
        acc = acc + input_step_sums(odd, words, w);
        w = w + LANES;
    }
    return acc;
}

// The team's four rows' sums over input word `w` (of `words`) in storage:
// `step` holds the rows' words and scales.
fn input_step_sums(step: TeamWords, words: u32, w: u32) -> vec4<f32> {
    return step_sums(step, plane(0u, words, w), plane(1u, words, w), plane(2u, words, w), info[w]);
}

// The four rows' sums over input word `w` (of `words`) in storage, before
// the rows' scales multiply them: `words4` holds the rows' packed words and
// `word_info` the word's info.
fn word_sums(words4: vec4<u32>, words: u32, w: u32, word_info: vec2<u32>) -> vec4<f32> {
    let ints = word_ints(words4, plane(0u, words, w), plane(1u, words, w), plane(2u, words, w), word_info);
    return vec4<f32>(ints) * bitcast<f32>(word_info.x);
}

// Words 2p and 2p + 1 of the team's four rows (`pair`: a pair of words
// under one scale), one 8-byte load a row, and the rows' scales.
struct TeamPairs {
    first: vec4<u32>,
    second: vec4<u32>,
    scales: vec4<f32>,
}

fn team_pairs(t: TeamRows, pair: u32) -> TeamPairs {
    let at = t.words + 2u * pair;
    return TeamPairs(weights[at], weights[at + 1u], team_scales(t, 2u * pair));
}

// team_sums with WORDS_PER_STEP 2: this thread's share is pairs lid % LANES,
// + LANES, ... of the four rows, the next pair's words and scales requested
// before this one's are used, alternating between two sets of registers as
// team_sums does. Both words' sums are added before one multiply by the
// rows' scales.
fn team_pair_sums(t: TeamRows, lid: u32) -> vec4<f32> {
    let words = cols() / 16u;
    let pairs = words / 2u;
    var pair = lid % LANES;
    var even = team_pairs(t, min(pair, pairs - 1u));
    var acc = vec4<f32>(0.0);
    loop {
        if (pair >= pairs) {
            break;
        }
        var odd: TeamPairs;
        if (pair + LANES < pairs) {
            odd = team_pairs(t, pair + LANES);
        }
        acc = acc + pair_sums(even, words, pair);
        pair = pair + LANES;
        if (pair >= pairs) {
            break;
        }
        if (pair + LANES < pairs) {
            even = team_pairs(t, pair + LANES);
        }
        acc = acc + pair_sums(odd, words, pair);
        pair = pair + LANES;
    }
    return acc;
}

// The four rows' sums over the words of pair `pair` (`step`), scaled; both
// words' info in one 16-byte load.
fn pair_sums(step: TeamPairs, words: u32, pair: u32) -> vec4<f32> {
    let pair_info = info_pairs[pair];
    let first = word_sums(step.first, words, 2u * pair, pair_info.xy);
    let sums = first + word_sums(step.second, words, 2u * pair + 1u, pair_info.zw);
    return sums * step.scales;
}

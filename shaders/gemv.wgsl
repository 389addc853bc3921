// Matrix-vector product with fused input RMSNorms, bias and residual add:
//
//   y[y_offset + r] = (RESIDUAL ? y[y_offset + r] : 0) + (BIAS ? bias[r] : 0) + sum_c W[r, c] * in[c]
//   in[c] = x[c] * (NORM1 ? stats[0] * norm1[c] : 1) * (NORM2 ? stats[1] * norm2[c] : 1)
// or, with SWIGLU (and no norms), in[c] = silu(x[c]) * x[cols + c]: x is the
// MLP's gate and up values, and swiglu.wgsl's pass is folded into this one.
//
// `stats` holds inverse RMS values computed by norm.wgsl, so the normalized input
// is never written out. With INLINE_STATS every workgroup computes them itself
// from x (and norm1) instead: one dispatch fewer, paid for by each workgroup
// reading its input once more, which small models gain by. Entry points: `gemv_ternary` (W packed base-3, 16 weights
// per word, per-group scales), `gemv_ternary_wide` (the same, 64 weights per
// thread and row at a time, for long rows: binds W at 9 instead of 1) and
// `gemv_dense` (W in F32/F16/BF16). A matrix larger than one storage binding is
// split by rows into chunks, one dispatch each.
//
// Needs cols % 4 == 0 (inputs are read as vec4).
//
// Dispatch: workgroups of 64 threads split into teams of LANES threads; each
// team computes ROWS_PER_TEAM consecutive rows, loading each piece of the input
// once and reusing it for all its rows. Workgroups are laid out 2-D (x up to
// 65535): index = wg.x + wg.y * num_wg.x; rows past the end are skipped.

struct Params {
    rows: u32,       // rows in this chunk
    cols: u32,       // input length
    row_offset: u32, // first row of this chunk in the matrix (and its bias)
    flags: u32,      // NORM1 | NORM2 | BIAS | RESIDUAL | INLINE_STATS | SWIGLU
    y_offset: u32,   // where the matrix's row 0 goes in y
    eps: f32,        // RMSNorm epsilon (INLINE_STATS)
    _pad1: u32,
    _pad2: u32,
}

const NORM1: u32 = 1u;
const NORM2: u32 = 2u;
const BIAS: u32 = 4u;
const RESIDUAL: u32 = 8u;
const INLINE_STATS: u32 = 16u;
const SWIGLU: u32 = 32u;

override GROUP_SIZE: u32 = 64u;        // weights per scale (ternary)
override SCALE_DTYPE: u32 = 0u;        // DTYPE_* of the scales (ternary)
override WEIGHT_DTYPE: u32 = 0u;       // DTYPE_* of W (dense)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> weights: array<u32>;  // ternary [rows, cols/16] (packed_index) | dense [rows, cols] (row-major)
@group(0) @binding(2) var<storage, read> scales: array<u32>;   // [rows, cols/GROUP_SIZE] (ternary only; packed_index)
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;     // [cols / 4] (SWIGLU: [2 cols / 4])
@group(0) @binding(4) var<storage, read> stats: array<f32>;       // [2] inverse RMS for NORM1, NORM2
@group(0) @binding(5) var<storage, read> norm1: array<vec4<f32>>; // [cols / 4]
@group(0) @binding(6) var<storage, read> norm2: array<vec4<f32>>; // [cols / 4]
@group(0) @binding(7) var<storage, read> bias: array<f32>;     // [all rows of the matrix]
@group(0) @binding(8) var<storage, read_write> y: array<f32>;  // [y_offset + all rows of the matrix, ...]

const WG: u32 = 64u;
override LANES: u32 = 64u;         // threads per row team: a power of two dividing 64
override ROWS_PER_TEAM: u32 = 1u;  // rows per team: 1, 2 or 4
var<workgroup> partial: array<f32, 260>; // [4 rows, WG] (one team: [4 rows, WG + 1])

// The inverse RMS values the norms use (stats[0], stats[1] of norm.wgsl).
var<private> inv_rms: vec2<f32>;

// Sets inv_rms: read from `stats`, or with INLINE_STATS computed as norm.wgsl
// does, from x and (for a second norm) norm1. Every invocation must call it.
fn load_stats(lid: u32) {
    if ((p.flags & INLINE_STATS) == 0u) {
        if ((p.flags & (NORM1 | NORM2)) != 0u) {
            inv_rms = vec2<f32>(stats[0], stats[1]);
        }
        return;
    }
    var sq = 0.0;
    for (var q = lid; q < p.cols / 4u; q = q + WG) {
        let v = x[q];
        sq = sq + dot(v, v);
    }
    let first = inverseSqrt(workgroup_sum(lid, WG, sq) / f32(p.cols) + p.eps);
    var second = 1.0;
    if ((p.flags & NORM2) != 0u) {
        var sq2 = 0.0;
        for (var q = lid; q < p.cols / 4u; q = q + WG) {
            let h = x[q] * first * norm1[q];
            sq2 = sq2 + dot(h, h);
        }
        second = inverseSqrt(workgroup_sum(lid, WG, sq2) / f32(p.cols) + p.eps);
    }
    inv_rms = vec2<f32>(first, second);
}

// Inputs 4q..4q+3, normalized as the flags say. Inputs are read four at a time:
// scattered 4-byte loads of them, not the weights, were what limited the GEMV.
fn input4_at(q: u32) -> vec4<f32> {
    var v = x[q];
    if ((p.flags & SWIGLU) != 0u) {
        return v / (1.0 + exp(-v)) * x[q + p.cols / 4u]; // as swiglu.wgsl
    }
    if ((p.flags & NORM1) != 0u) {
        v = v * (inv_rms.x * norm1[q]);
    }
    if ((p.flags & NORM2) != 0u) {
        v = v * (inv_rms.y * norm2[q]);
    }
    return v;
}

// The first row of this thread's team.
fn team_first_row(wg: vec3<u32>, num_wg: vec3<u32>, lid: u32) -> u32 {
    let teams = WG / LANES;
    return ((wg.x + wg.y * num_wg.x) * teams + lid / LANES) * ROWS_PER_TEAM;
}

// Sums each team's per-thread partial results (`acc[k]` for row k) and writes
// its rows' outputs.
fn finish_rows(first_row: u32, lid: u32, acc: vec4<f32>) {
    if (LANES == WG) {
        finish_one_team(first_row, lid, acc);
        return;
    }
    for (var k = 0u; k < ROWS_PER_TEAM; k = k + 1u) {
        partial[k * WG + lid] = acc[k];
    }
    workgroupBarrier();
    reduce_teams(lid);
    write_rows(first_row, lid);
}

// finish_rows for one team per workgroup: each subgroup sums every row in
// registers, one slot per subgroup and row goes through workgroup memory, and
// thread k adds up row k's slots and writes the row. A single barrier, where a
// tree of the slots took one per halving (tg128 on an H100: 32B +3 %, 0.5B
// +2.7 %). A row's slots are padded to slots + 1 floats, so that the threads
// adding up different rows read different banks.
fn finish_one_team(first_row: u32, lid: u32, acc: vec4<f32>) {
    let lanes = subgroup_lanes();
    let first = subgroup_first(lid);
    let sums = vec4<f32>(subgroup_sum(acc.x), subgroup_sum(acc.y), subgroup_sum(acc.z), subgroup_sum(acc.w));
    let slots = max(WG / lanes, 1u);
    if (lid == first) {
        for (var k = 0u; k < ROWS_PER_TEAM; k = k + 1u) {
            partial[k * (slots + 1u) + first / lanes] = sums[k];
        }
    }
    workgroupBarrier();
    let row = first_row + lid;
    if (lid < ROWS_PER_TEAM && row < p.rows) {
        // Four running sums, so the adds do not wait on each other.
        let at = lid * (slots + 1u);
        var four = vec4<f32>(0.0);
        for (var i = 0u; i < slots; i = i + 4u) {
            four = four + vec4<f32>(
                partial[at + i],
                select(0.0, partial[at + i + 1u], i + 1u < slots),
                select(0.0, partial[at + i + 2u], i + 2u < slots),
                select(0.0, partial[at + i + 3u], i + 3u < slots),
            );
        }
        write_row(row, four.x + four.y + four.z + four.w);
    }
}

// Sums each team's slots of `partial` into its first lane's slot.
fn reduce_teams(lid: u32) {
    let lane = lid % LANES;
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            for (var k = 0u; k < ROWS_PER_TEAM; k = k + 1u) {
                partial[k * WG + lid] = partial[k * WG + lid] + partial[k * WG + lid + stride];
            }
        }
        workgroupBarrier();
    }
}

// The first lane of each team writes the team's rows (sum in its `partial` slots).
fn write_rows(first_row: u32, lid: u32) {
    if (lid % LANES == 0u) {
        for (var k = 0u; k < ROWS_PER_TEAM; k = k + 1u) {
            let row = first_row + k;
            if (row < p.rows) {
                write_row(row, partial[k * WG + lid]);
            }
        }
    }
}

// Writes row `row` (of this chunk) of y: `sum` plus bias and residual as the flags say.
fn write_row(row: u32, sum: f32) {
    let r = p.row_offset + row;
    var out = sum;
    if ((p.flags & BIAS) != 0u) {
        out = out + bias[r];
    }
    if ((p.flags & RESIDUAL) != 0u) {
        out = out + y[p.y_offset + r];
    }
    y[p.y_offset + r] = out;
}

// A packed word's 16 inputs arranged by digit position: xt[j][i] is input
// 16w + 4i + j, the one weight j of byte i multiplies (digit_bytes, decode.wgsl);
// `sum` is the inputs' sum. Formed once per word and shared by the team's rows.
struct WordInputs {
    xt: mat4x4<f32>,
    sum: f32,
}

fn word_inputs(w: u32) -> WordInputs {
    let v0 = input4_at(4u * w);
    let v1 = input4_at(4u * w + 1u);
    let v2 = input4_at(4u * w + 2u);
    let v3 = input4_at(4u * w + 3u);
    let xt = transpose(mat4x4<f32>(v0, v1, v2, v3));
    return WordInputs(xt, dot(v0 + v1 + v2 + v3, vec4<f32>(1.0)));
}

// sum of digit * input over a word's 16 weights (digits: trit + 1).
fn digit_dot(word: u32, xt: mat4x4<f32>) -> f32 {
    var sum = 0.0;
    for (var j = 0u; j < 4u; j = j + 1u) {
        sum = sum + dot(vec4<f32>(unpack4xU8(digit_bytes(word, j))), xt[j]);
    }
    return sum;
}

// Packed word `w` of `row`; past the last row, a word of zero trits.
fn narrow_word(row: u32, w: u32) -> u32 {
    if (row >= p.rows) {
        return ZERO_TRITS_WORD;
    }
    return weights[packed_index(row, w, p.cols / 16u)];
}

// The scale of `row` for the group holding column `col` (zero past the last
// row). Both ternary GEMVs read whole groups' worth of a row at a time (16 or
// 64 columns, GROUP_SIZE a multiple of it), so a step needs one scale.
fn row_scale(row: u32, col: u32) -> f32 {
    if (row >= p.rows) {
        return 0.0;
    }
    let s = packed_index(row, col / GROUP_SIZE, p.cols / GROUP_SIZE);
    return float_in_word(scales[word_of(s, SCALE_DTYPE)], s, SCALE_DTYPE);
}

// Word `w` of each of the team's rows, and the rows' scales for it.
struct TeamWords {
    words: vec4<u32>,
    scales: vec4<f32>,
}

fn team_words(first_row: u32, w: u32) -> TeamWords {
    var t = TeamWords(vec4<u32>(ZERO_TRITS_WORD), vec4<f32>(0.0));
    t.words.x = narrow_word(first_row, w);
    t.scales.x = row_scale(first_row, 16u * w);
    if (ROWS_PER_TEAM >= 2u) {
        t.words.y = narrow_word(first_row + 1u, w);
        t.scales.y = row_scale(first_row + 1u, 16u * w);
    }
    if (ROWS_PER_TEAM >= 4u) {
        t.words.z = narrow_word(first_row + 2u, w);
        t.scales.z = row_scale(first_row + 2u, 16u * w);
        t.words.w = narrow_word(first_row + 3u, w);
        t.scales.w = row_scale(first_row + 3u, 16u * w);
    }
    return t;
}

@compute @workgroup_size(64)
fn gemv_ternary(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let first_row = team_first_row(wg, num_wg, lid);
    let words = p.cols / 16u;
    // The GEMV waits on memory more than it computes, so loads are issued early:
    // the first step's words are requested before the norm statistics are
    // computed, and each step requests the next step's words before using its
    // own (tg128 on an H100: 32B +29 %, 7B +18 %).
    var w = lid % LANES;
    var next = team_words(first_row, min(w, words - 1u));
    load_stats(lid);
    var acc = vec4<f32>(0.0);
    for (; w < words; w = w + LANES) {
        let step = next;
        if (w + LANES < words) {
            next = team_words(first_row, w + LANES);
        }
        acc = acc + word_sums(step.words, w) * step.scales;
    }
    finish_rows(first_row, lid, acc);
}

// Row `row`'s share of the product for inputs 4q..4q+3 (`v`).
fn dense_quad(row: u32, q: u32, v: vec4<f32>) -> f32 {
    if (row >= p.rows) {
        return 0.0;
    }
    let i = row * p.cols + 4u * q;
    let w = vec4<f32>(
        float_in_word(weights[word_of(i, WEIGHT_DTYPE)], i, WEIGHT_DTYPE),
        float_in_word(weights[word_of(i + 1u, WEIGHT_DTYPE)], i + 1u, WEIGHT_DTYPE),
        float_in_word(weights[word_of(i + 2u, WEIGHT_DTYPE)], i + 2u, WEIGHT_DTYPE),
        float_in_word(weights[word_of(i + 3u, WEIGHT_DTYPE)], i + 3u, WEIGHT_DTYPE),
    );
    return dot(w, v);
}

@compute @workgroup_size(64)
fn gemv_dense(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    load_stats(lid);
    let first_row = team_first_row(wg, num_wg, lid);
    var acc = vec4<f32>(0.0);
    for (var q = lid % LANES; q < p.cols / 4u; q = q + LANES) {
        let v = input4_at(q);
        acc.x = acc.x + dense_quad(first_row, q, v);
        if (ROWS_PER_TEAM >= 2u) {
            acc.y = acc.y + dense_quad(first_row + 1u, q, v);
        }
        if (ROWS_PER_TEAM >= 4u) {
            acc.z = acc.z + dense_quad(first_row + 2u, q, v);
            acc.w = acc.w + dense_quad(first_row + 3u, q, v);
        }
    }
    finish_rows(first_row, lid, acc);
}

// gemv_ternary_wide: each thread reads four words (64 weights) of each of its
// team's rows per step, all rows' loads issued before any arithmetic. Needs
// cols % 64 == 0 and GROUP_SIZE % 64 == 0 (one scale per row per step).

// Packed words 4g..4g+3 of `row`; past the last row, words of zero trits.
fn wide_words(row: u32, g: u32) -> vec4<u32> {
    if (row >= p.rows) {
        return vec4<u32>(ZERO_TRITS_WORD);
    }
    let words = p.cols / 16u;
    return vec4<u32>(
        weights[packed_index(row, 4u * g, words)],
        weights[packed_index(row, 4u * g + 1u, words)],
        weights[packed_index(row, 4u * g + 2u, words)],
        weights[packed_index(row, 4u * g + 3u, words)],
    );
}

// Unscaled sums over word `w` (16 inputs) for up to four rows whose words for it
// are `words`. Weights are digit - 1: the -1 folds out as one sum of the inputs,
// shared by all rows.
fn word_sums(words: vec4<u32>, w: u32) -> vec4<f32> {
    let inputs = word_inputs(w);
    var sums = vec4<f32>(0.0);
    sums.x = digit_dot(words.x, inputs.xt) - inputs.sum;
    if (ROWS_PER_TEAM >= 2u) {
        sums.y = digit_dot(words.y, inputs.xt) - inputs.sum;
    }
    if (ROWS_PER_TEAM >= 4u) {
        sums.z = digit_dot(words.z, inputs.xt) - inputs.sum;
        sums.w = digit_dot(words.w, inputs.xt) - inputs.sum;
    }
    return sums;
}

@compute @workgroup_size(64)
fn gemv_ternary_wide(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    load_stats(lid);
    let first_row = team_first_row(wg, num_wg, lid);
    var acc = vec4<f32>(0.0);
    for (var g = lid % LANES; g < p.cols / 64u; g = g + LANES) {
        let r0 = wide_words(first_row, g);
        var r1 = vec4<u32>(ZERO_TRITS_WORD);
        var r2 = vec4<u32>(ZERO_TRITS_WORD);
        var r3 = vec4<u32>(ZERO_TRITS_WORD);
        if (ROWS_PER_TEAM >= 2u) {
            r1 = wide_words(first_row + 1u, g);
        }
        if (ROWS_PER_TEAM >= 4u) {
            r2 = wide_words(first_row + 2u, g);
            r3 = wide_words(first_row + 3u, g);
        }
        let sums = word_sums(vec4<u32>(r0.x, r1.x, r2.x, r3.x), 4u * g)
            + word_sums(vec4<u32>(r0.y, r1.y, r2.y, r3.y), 4u * g + 1u)
            + word_sums(vec4<u32>(r0.z, r1.z, r2.z, r3.z), 4u * g + 2u)
            + word_sums(vec4<u32>(r0.w, r1.w, r2.w, r3.w), 4u * g + 3u);
        acc.x = acc.x + sums.x * row_scale(first_row, 64u * g);
        if (ROWS_PER_TEAM >= 2u) {
            acc.y = acc.y + sums.y * row_scale(first_row + 1u, 64u * g);
        }
        if (ROWS_PER_TEAM >= 4u) {
            acc.z = acc.z + sums.z * row_scale(first_row + 2u, 64u * g);
            acc.w = acc.w + sums.w * row_scale(first_row + 3u, 64u * g);
        }
    }
    finish_rows(first_row, lid, acc);
}

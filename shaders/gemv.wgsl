// Matrix-vector product with fused input RMSNorms, bias and residual add:
//
//   y[row_offset + r] = (RESIDUAL ? y[row_offset + r] : 0) + (BIAS ? bias[row_offset + r] : 0)
//                       + sum_c W[r, c] * in[c]
//   in[c] = x[c] * (NORM1 ? stats[0] * norm1[c] : 1) * (NORM2 ? stats[1] * norm2[c] : 1)
//
// `stats` holds inverse RMS values computed by norm.wgsl, so the normalized input
// is never written out. Entry points: `gemv_ternary` (W packed base-3, 16 weights
// per word, per-group scales) and `gemv_dense` (W in F32/F16/BF16). A matrix
// larger than one storage binding is split by rows into chunks, one dispatch each.
//
// Dispatch: one workgroup of 64 threads per row, workgroups laid out 2-D
// (x up to 65535) so a 152k-row head fits; row = wg.x + wg.y * num_wg.x.

struct Params {
    rows: u32,       // rows in this chunk
    cols: u32,       // input length
    row_offset: u32, // first output row of this chunk
    flags: u32,      // NORM1 | NORM2 | BIAS | RESIDUAL
}

const NORM1: u32 = 1u;
const NORM2: u32 = 2u;
const BIAS: u32 = 4u;
const RESIDUAL: u32 = 8u;

override GROUP_SIZE: u32 = 64u;        // weights per scale (ternary)
override SCALE_DTYPE: u32 = 0u;        // DTYPE_* of the scales (ternary)
override WEIGHT_DTYPE: u32 = 0u;       // DTYPE_* of W (dense)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> weights: array<u32>;  // ternary [rows, cols/16] | dense [rows, cols] (row-major)
@group(0) @binding(2) var<storage, read> scales: array<u32>;   // [rows, cols/GROUP_SIZE] (ternary only)
@group(0) @binding(3) var<storage, read> x: array<f32>;        // [cols]
@group(0) @binding(4) var<storage, read> stats: array<f32>;    // [2] inverse RMS for NORM1, NORM2
@group(0) @binding(5) var<storage, read> norm1: array<f32>;    // [cols]
@group(0) @binding(6) var<storage, read> norm2: array<f32>;    // [cols]
@group(0) @binding(7) var<storage, read> bias: array<f32>;     // [all rows of the matrix]
@group(0) @binding(8) var<storage, read_write> y: array<f32>;  // [all rows of the matrix]

const WG: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

fn input_at(c: u32) -> f32 {
    var v = x[c];
    if ((p.flags & NORM1) != 0u) {
        v = v * stats[0] * norm1[c];
    }
    if ((p.flags & NORM2) != 0u) {
        v = v * stats[1] * norm2[c];
    }
    return v;
}

// Sums the threads' partial results and writes the row's output.
fn finish_row(row: u32, lid: u32, acc: f32) {
    partial[lid] = acc;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] = partial[lid] + partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let r = p.row_offset + row;
        var out = partial[0];
        if ((p.flags & BIAS) != 0u) {
            out = out + bias[r];
        }
        if ((p.flags & RESIDUAL) != 0u) {
            out = out + y[r];
        }
        y[r] = out;
    }
}

@compute @workgroup_size(64)
fn gemv_ternary(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.x + wg.y * num_wg.x;
    if (row >= p.rows) {
        return;
    }
    let words = p.cols / 16u;
    let groups = p.cols / GROUP_SIZE;
    var acc = 0.0;
    for (var w = lid; w < words; w = w + WG) {
        let word = weights[row * words + w];
        let c0 = w * 16u;
        var sum = 0.0;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let c = c0 + 4u * j;
            let xs = vec4<f32>(input_at(c), input_at(c + 1u), input_at(c + 2u), input_at(c + 3u));
            sum = sum + dot(trits_of_byte(word, j), xs);
        }
        // GROUP_SIZE is a multiple of 16, so one word never straddles two groups.
        let s = row * groups + c0 / GROUP_SIZE;
        acc = acc + sum * float_in_word(scales[word_of(s, SCALE_DTYPE)], s, SCALE_DTYPE);
    }
    finish_row(row, lid, acc);
}

@compute @workgroup_size(64)
fn gemv_dense(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.x + wg.y * num_wg.x;
    if (row >= p.rows) {
        return;
    }
    var acc = 0.0;
    for (var c = lid; c < p.cols; c = c + WG) {
        let i = row * p.cols + c;
        acc = acc + float_in_word(weights[word_of(i, WEIGHT_DTYPE)], i, WEIGHT_DTYPE) * input_at(c);
    }
    finish_row(row, lid, acc);
}

// A GEMV input in block fixed point, for gemv_fixed.wgsl: the input (normalized
// as gemv.wgsl's flags say, or SwiGLU of gate and up) is cut into words of 16
// values, the inputs of one packed weight word, and each word is stored as a
// scale and sixteen integers of 24 bits:
//
//   in[16w + c] ~= scale[w] * A[16w + c],   A = A2 * 65536 + A1 * 256 + A0
//
// with scale[w] = max |in| over the word / AMAX and the digits A2, A1, A0
// signed bytes (-128..127). The error is at most half a step, max |in| * 6e-8
// for the word: as fine as f32's own rounding of its largest value.
//
// Digit k of word w is one vec4<u32> at planes[k * words + w], so that GEMV
// threads reading neighbouring words read neighbouring vec4s. Its component j
// packs (pack4xI8) the digits of inputs 16w + j, 16w + 4 + j, 16w + 8 + j and
// 16w + 12 + j: the inputs that digit j of each byte of a packed word
// multiplies (digit_bytes, decode.wgsl). info[w] holds the scale's bits and
// the sum of the word's A, which the GEMV takes off once per word because its
// digits are trit + 1.
//
// With NORM1 / NORM2 the inverse RMS values are computed here from x (as
// norm.wgsl does), by every workgroup for itself: the vectors are short.
// Needs n % 16 == 0.
//
// Dispatch: ceil(n / 16 / 256) workgroups of 256 threads, one word per thread.

struct Params {
    n: u32,     // input length
    flags: u32, // NORM1 | NORM2 | SWIGLU (the values gemv.wgsl uses)
    eps: f32,   // RMSNorm epsilon
    _pad: u32,
}

const NORM1: u32 = 1u;
const NORM2: u32 = 2u;
const SWIGLU: u32 = 32u;

// The largest digit value |A2 * 65536 + A1 * 256 + A0| written: below 2^23 by
// enough that A2 stays within -128..127 after the lower digits are balanced.
const AMAX: f32 = 8323072.0;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;     // [n / 4] (SWIGLU: gate then up, [2 n / 4])
@group(0) @binding(2) var<storage, read> norm1: array<vec4<f32>>; // [n / 4]
@group(0) @binding(3) var<storage, read> norm2: array<vec4<f32>>; // [n / 4]
@group(0) @binding(4) var<storage, read_write> planes: array<vec4<u32>>; // [3, n / 16]
@group(0) @binding(5) var<storage, read_write> info: array<vec2<u32>>;   // [n / 16]: scale (f32 bits), sum of A (i32 bits)

const WG: u32 = 256u;


// Sum of squares of the quads i, i + WG, i + 2 WG, i + 3 WG of x (each scaled
// by `inv_rms * norm1` with `weighted`): four loads in flight per thread.
fn squares(i: u32, weighted: bool, inv_rms: f32) -> f32 {
    var sum = 0.0;
    for (var k = 0u; k < 4u; k = k + 1u) {
        let q = i + k * WG;
        if (q < p.n / 4u) {
            var v = x[q];
            if (weighted) {
                v = v * inv_rms * norm1[q];
            }
            sum = sum + dot(v, v);
        }
    }
    return sum;
}

// Inverse RMS values for NORM1 and NORM2 (1 where a flag is off). Every
// invocation must call it (workgroup reductions).
fn input_stats(lid: u32) -> vec2<f32> {
    var inv_rms = vec2<f32>(1.0);
    if ((p.flags & (NORM1 | NORM2)) == 0u) {
        return inv_rms;
    }
    var sq = 0.0;
    for (var i = lid; i < p.n / 4u; i = i + 4u * WG) {
        sq = sq + squares(i, false, 1.0);
    }
    inv_rms.x = inverseSqrt(workgroup_sum(lid, WG, sq) / f32(p.n) + p.eps);
    if ((p.flags & NORM2) != 0u) {
        var sq2 = 0.0;
        for (var i = lid; i < p.n / 4u; i = i + 4u * WG) {
            sq2 = sq2 + squares(i, true, inv_rms.x);
        }
        inv_rms.y = inverseSqrt(workgroup_sum(lid, WG, sq2) / f32(p.n) + p.eps);
    }
    return inv_rms;
}

// Inputs 4q..4q+3 as the GEMV would see them.
fn input4_at(q: u32, inv_rms: vec2<f32>) -> vec4<f32> {
    var v = x[q];
    if ((p.flags & SWIGLU) != 0u) {
        return v / (1.0 + exp(-v)) * x[q + p.n / 4u]; // as swiglu.wgsl
    }
    if ((p.flags & NORM1) != 0u) {
        v = v * (inv_rms.x * norm1[q]);
    }
    if ((p.flags & NORM2) != 0u) {
        v = v * (inv_rms.y * norm2[q]);
    }
    return v;
}

// The three signed-byte digits of each of four integers below AMAX in size,
// lowest first: v = d2 * 65536 + d1 * 256 + d0, each d in -128..127.
fn digits(v: vec4<i32>) -> array<vec4<i32>, 3> {
    let d0 = ((v + 128) & vec4<i32>(255)) - 128;
    let rest = (v - d0) >> vec4<u32>(8u); // exact: v - d0 is a multiple of 256
    let d1 = ((rest + 128) & vec4<i32>(255)) - 128;
    let d2 = (rest - d1) >> vec4<u32>(8u);
    return array<vec4<i32>, 3>(d0, d1, d2);
}

@compute @workgroup_size(256)
fn to_fixed_point(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let inv_rms = input_stats(lid);
    let words = p.n / 16u;
    let w = wg.x * WG + lid;
    if (w >= words) {
        return;
    }
    let v = array<vec4<f32>, 4>(
        input4_at(4u * w, inv_rms),
        input4_at(4u * w + 1u, inv_rms),
        input4_at(4u * w + 2u, inv_rms),
        input4_at(4u * w + 3u, inv_rms),
    );
    let m4 = max(max(abs(v[0]), abs(v[1])), max(abs(v[2]), abs(v[3])));
    let largest = max(max(m4.x, m4.y), max(m4.z, m4.w));
    // A word of zeros gets scale 0 and zero digits.
    let to_int = select(0.0, AMAX / largest, largest > 0.0);
    // d[i][k]: digit k of inputs 16w + 4i .. 16w + 4i + 3.
    var d: array<array<vec4<i32>, 3>, 4>;
    var sum = vec4<i32>(0);
    for (var i = 0u; i < 4u; i = i + 1u) {
        let ints = vec4<i32>(clamp(round(v[i] * to_int), vec4<f32>(-AMAX), vec4<f32>(AMAX)));
        sum = sum + ints;
        d[i] = digits(ints);
    }
    for (var k = 0u; k < 3u; k = k + 1u) {
        var plane: vec4<u32>;
        for (var j = 0u; j < 4u; j = j + 1u) {
            plane[j] = pack4xI8(vec4<i32>(d[0][k][j], d[1][k][j], d[2][k][j], d[3][k][j]));
        }
        planes[k * words + w] = plane;
    }
    info[w] = vec2<u32>(bitcast<u32>(largest / AMAX), bitcast<u32>(sum.x + sum.y + sum.z + sum.w));
}

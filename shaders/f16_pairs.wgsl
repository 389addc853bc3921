// Converts a prefill GEMM's input into the f16 pairs that gemm_coop.wgsl
// multiplies on cooperative-matrix (tensor core) units. For each token t < step.tokens:
//
//   in[t, c] = X[t, c] * (NORM1 ? stats[2t] * norm1[c] : 1) * (NORM2 ? stats[2t + 1] * norm2[c] : 1)
// or, with SWIGLU, in[t, c] = silu(X[t, c]) * X[t, n + c] (each row of X: gate, then up);
//
//   v = in[t, c] * 2^e[t],  hi[t, c] = v with only its 11 leading significant
//   bits,  lo[t, c] = f16(v - hi[t, c]),  unscale[t] = 2^-e[t].
//
// hi + lo holds v to 21 significant bits or better (f32 has 24). The power of
// two e[t] puts the token's largest |v| in [2^14, 2^15): nothing overflows f16
// (largest 65504), and values down to 2^-28 of the largest are split exactly
// (hi is exact in f16 from 2^-14 on). hi comes from clearing bits, not from a
// conversion to f16 and back, which a shader compiler may fold into nothing
// (leaving lo zero).
//
// With F16_PRODUCTS (for gemm_coop.wgsl's gemm_ternary_coop_f16, `--gemm
// coop-f16`) hi[t, c] is v converted to f16 and no lo is written (nor is
// there room for it). WGSL lets the conversion round either way; on an H200
// it gave half the logit error of cutting v to its 11 leading bits
// (BENCHMARKS.md, round 25).
//
// Layout (f16, viewed here as pairs packed in u32): hi[t, c] at element
// t * n + c, lo[t, c] at element lo_offset + t * n + c, where lo_offset is the
// graph's (padded) token count times n. Needs n % 4 == 0.
//
// Dispatch: one workgroup of 256 threads per token of the graph; those past
// the step's tokens return at once.

struct Params {
    n: u32,         // input length
    flags: u32,     // NORM1 | NORM2 | SWIGLU (the values gemm.wgsl uses)
    lo_offset: u32, // f16 elements before the lo values
    _pad: u32,
}

struct Step {
    pos: u32,
    tokens: u32,
}

const NORM1: u32 = 1u;
const NORM2: u32 = 2u;
const SWIGLU: u32 = 32u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;     // [tokens, n / 4] (SWIGLU: [tokens, 2 n / 4])
@group(0) @binding(3) var<storage, read> stats: array<f32>;       // [tokens, 2] inverse RMS for NORM1, NORM2
@group(0) @binding(4) var<storage, read> norm1: array<vec4<f32>>; // [n / 4]
@group(0) @binding(5) var<storage, read> norm2: array<vec4<f32>>; // [n / 4]
@group(0) @binding(6) var<storage, read_write> pairs: array<vec2<u32>>; // 4 f16 each: hi, then lo (F16_PRODUCTS: hi)
@group(0) @binding(7) var<storage, read_write> unscale: array<f32>;     // [tokens]

const WG: u32 = 256u;

override F16_PRODUCTS: bool = false; // hi rounded to f16, no lo

// in[t, 4q .. 4q + 3].
fn input_quad(t: u32, q: u32) -> vec4<f32> {
    let quads = p.n / 4u;
    if ((p.flags & SWIGLU) != 0u) {
        let gate = x[t * 2u * quads + q];
        return gate / (1.0 + exp(-gate)) * x[t * 2u * quads + quads + q]; // as swiglu.wgsl
    }
    var v = x[t * quads + q];
    if ((p.flags & NORM1) != 0u) {
        v = v * (stats[2u * t] * norm1[q]);
    }
    if ((p.flags & NORM2) != 0u) {
        v = v * (stats[2u * t + 1u] * norm2[q]);
    }
    return v;
}

@compute @workgroup_size(256)
fn to_f16_pairs(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wg.x;
    if (t >= step.tokens) {
        return; // the whole workgroup
    }
    let quads = p.n / 4u;
    var largest = 0.0;
    for (var q = lid; q < quads; q = q + WG) {
        let v = abs(input_quad(t, q));
        largest = max(largest, max(max(v.x, v.y), max(v.z, v.w)));
    }
    largest = workgroup_max(lid, WG, largest);
    // 2^e * largest in [2^14, 2^15), from largest's binary exponent; e = 0 for
    // a row of zeros, or one holding inf or NaN (which then stay so).
    var e = 0;
    if (largest > 0.0 && largest <= 3.4028235e38) {
        let exponent = i32((bitcast<u32>(largest) >> 23u) & 0xffu) - 127;
        e = clamp(14 - exponent, -126, 126);
    }
    for (var q = lid; q < quads; q = q + WG) {
        let v = ldexp(input_quad(t, q), vec4<i32>(e));
        if (F16_PRODUCTS) {
            pairs[t * quads + q] = vec2<u32>(pack2x16float(v.xy), pack2x16float(v.zw));
            continue;
        }
        let hi = bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) & vec4<u32>(0xffffe000u));
        let lo = v - hi;
        pairs[t * quads + q] = vec2<u32>(pack2x16float(hi.xy), pack2x16float(hi.zw));
        pairs[p.lo_offset / 4u + t * quads + q] = vec2<u32>(pack2x16float(lo.xy), pack2x16float(lo.zw));
    }
    if (lid == 0u) {
        unscale[t] = ldexp(1.0, -e);
    }
}

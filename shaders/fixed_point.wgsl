// Converts a GEMV input to block fixed point (the format: fixed_word.wgsl) for
// gemv_fixed.wgsl, one 16-value word per thread, in a single pass:
//
//   in[c] = x[c] * (NORM1 ? norm1[c] : 1) * (NORM2 ? norm2[c] : 1)
// or, with SWIGLU, in[c] = silu(x[c]) * x[n + c] (x holds gate, then up).
//
// RMSNorm's inverse RMS values are left out of `in`: a common factor changes
// no word's digits, only its scale, so the GEMV multiplies them into its sums
// instead. What they need is written here: after the n / 16 words' info, each
// workgroup's sums of x^2 and (x * norm1)^2 over its words,
//   info[n / 16 + workgroup] = (f32 bits of both),
// from which the GEMV computes the statistics norm.wgsl would. So no pass
// over the whole input has to finish before the conversion starts.
// Needs n % 16 == 0.
//
// Dispatch: ceil(n / 16 / 256) workgroups of 256 threads, one word per thread.

struct Params {
    n: u32,     // input length
    flags: u32, // NORM1 | NORM2 | SWIGLU (the values gemv.wgsl uses)
    _pad0: u32,
    _pad1: u32,
}

const NORM1: u32 = 1u;
const NORM2: u32 = 2u;
const SWIGLU: u32 = 32u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;     // [n / 4] (SWIGLU: gate then up, [2 n / 4])
@group(0) @binding(2) var<storage, read> norm1: array<vec4<f32>>; // [n / 4]
@group(0) @binding(3) var<storage, read> norm2: array<vec4<f32>>; // [n / 4]
@group(0) @binding(4) var<storage, read_write> planes: array<vec4<u32>>; // [DIGITS, n / 16]
@group(0) @binding(5) var<storage, read_write> info: array<vec2<u32>>;   // [n / 16 + workgroups]

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn to_fixed_point(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let words = p.n / 16u;
    let w = wg.x * WG + lid;
    let normed = (p.flags & (NORM1 | NORM2)) != 0u;
    // Threads past the last word take part in the sums with zeros.
    var squares = vec2<f32>(0.0);
    if (w < words) {
        var v: array<vec4<f32>, 4>;
        for (var i = 0u; i < 4u; i = i + 1u) {
            let q = 4u * w + i;
            var quad = x[q];
            if ((p.flags & SWIGLU) != 0u) {
                quad = quad / (1.0 + exp(-quad)) * x[q + p.n / 4u]; // as swiglu.wgsl
            }
            if ((p.flags & NORM1) != 0u) {
                squares.x = squares.x + dot(quad, quad);
                quad = quad * norm1[q];
                squares.y = squares.y + dot(quad, quad);
            }
            if ((p.flags & NORM2) != 0u) {
                quad = quad * norm2[q];
            }
            v[i] = quad;
        }
        let word = fixed_word(v);
        for (var k = 0u; k < DIGITS; k = k + 1u) {
            planes[k * words + w] = word.planes[k];
        }
        info[w] = word.info;
    }
    if (normed) {
        // The flags are uniform, so the whole workgroup takes this branch or none.
        let sums = vec2<f32>(workgroup_sum(lid, WG, squares.x), workgroup_sum(lid, WG, squares.y));
        if (lid == 0u) {
            info[words + wg.x] = bitcast<vec2<u32>>(sums);
        }
    }
}

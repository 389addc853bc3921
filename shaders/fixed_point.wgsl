// Converts a GEMV input to block fixed point (the format: fixed_word.wgsl) for
// gemv_fixed.wgsl: the input, normalized as gemv.wgsl's flags say or SwiGLU of
// gate and up, one 16-value word per thread.
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
    let word = fixed_word(v);
    planes[w] = word.planes[0];
    planes[words + w] = word.planes[1];
    planes[2u * words + w] = word.planes[2];
    info[w] = word.info;
}

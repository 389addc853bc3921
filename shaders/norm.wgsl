// RMSNorm statistics: the inverse RMS values that gemv.wgsl multiplies into its
// input, so normalized vectors are never written out.
//
//   stats[0] = 1 / sqrt(mean(x^2) + eps)
//   stats[1] = 1 / sqrt(mean((x * stats[0] * w)^2) + eps)   (SECOND: a per-linear
//              norm follows the block norm w; both share this one pass)
//
// Dispatch: one workgroup of 256 threads. Reductions come from reduce*.wgsl.

struct Params {
    n: u32,
    flags: u32, // SECOND
    eps: f32,
    _pad: u32,
}

const SECOND: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [n]
@group(0) @binding(2) var<storage, read> w: array<f32>;          // [n] block norm weight (SECOND only)
@group(0) @binding(3) var<storage, read_write> stats: array<f32>; // [2]

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn norm_stats(@builtin(local_invocation_index) lid: u32) {
    var sq = 0.0;
    for (var i = lid; i < p.n; i = i + WG) {
        sq = sq + x[i] * x[i];
    }
    let inv_rms = inverseSqrt(workgroup_sum(lid, WG, sq) / f32(p.n) + p.eps);
    var inv_rms2 = 1.0;
    if ((p.flags & SECOND) != 0u) {
        var sq2 = 0.0;
        for (var i = lid; i < p.n; i = i + WG) {
            let h = x[i] * inv_rms * w[i];
            sq2 = sq2 + h * h;
        }
        inv_rms2 = inverseSqrt(workgroup_sum(lid, WG, sq2) / f32(p.n) + p.eps);
    }
    if (lid == 0u) {
        stats[0] = inv_rms;
        stats[1] = inv_rms2;
    }
}

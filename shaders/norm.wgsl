// RMSNorm statistics: the inverse RMS values that gemv.wgsl multiplies into its
// input, so normalized vectors are never written out.
//
//   stats[0] = 1 / sqrt(mean(x^2) + eps)
//   stats[1] = 1 / sqrt(mean((x * stats[0] * w)^2) + eps)   (SECOND: a per-linear
//              norm follows the block norm w; both share this one pass)
//
// One row per step token: x is [tokens, n] and stats [tokens, 2].
// Dispatch: one workgroup of 256 threads per token; tokens past step.tokens return. Reductions come from reduce*.wgsl.

struct Params {
    n: u32,
    flags: u32, // SECOND
    eps: f32,
    _pad: u32,
}

struct Step {
    pos: u32,    // position of the step's first token (unused)
    tokens: u32, // tokens in this step
}

const SECOND: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [tokens, n]
@group(0) @binding(2) var<storage, read> w: array<f32>;          // [n] block norm weight (SECOND only)
@group(0) @binding(3) var<storage, read_write> stats: array<f32>; // [tokens, 2]
@group(0) @binding(4) var<uniform> step: Step;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn norm_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let token = wg.x;
    if (token >= step.tokens) {
        return; // the whole workgroup
    }
    let row = token * p.n;
    var sq = 0.0;
    for (var i = lid; i < p.n; i = i + WG) {
        sq = sq + x[row + i] * x[row + i];
    }
    let inv_rms = inverseSqrt(workgroup_sum(lid, WG, sq) / f32(p.n) + p.eps);
    var inv_rms2 = 1.0;
    if ((p.flags & SECOND) != 0u) {
        var sq2 = 0.0;
        for (var i = lid; i < p.n; i = i + WG) {
            let h = x[row + i] * inv_rms * w[i];
            sq2 = sq2 + h * h;
        }
        inv_rms2 = inverseSqrt(workgroup_sum(lid, WG, sq2) / f32(p.n) + p.eps);
    }
    if (lid == 0u) {
        stats[2u * token] = inv_rms;
        stats[2u * token + 1u] = inv_rms2;
    }
}

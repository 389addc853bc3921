// RMSNorm statistics: the inverse RMS values that gemv.wgsl multiplies into its
// input, so normalized vectors are never written out.
//
//   stats[0] = 1 / sqrt(mean(x^2) + eps)
//   stats[1] = 1 / sqrt(mean((x * stats[0] * w)^2) + eps)   (SECOND: a per-linear
//              norm follows the block norm w; both share this one pass)
//
// One row per step token: x is [tokens, n] and stats [tokens, 2]. Needs n % 4 == 0.
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
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;    // [tokens, n / 4]
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;    // [n / 4] block norm weight (SECOND only)
@group(0) @binding(3) var<storage, read_write> stats: array<f32>; // [tokens, 2]
@group(0) @binding(4) var<uniform> step: Step;

const WG: u32 = 256u;

// Sum of squares of the quads i, i + WG, i + 2 WG, i + 3 WG of the token's row
// (each scaled by `inv_rms * w` with `weighted`): four loads in flight per thread.
fn squares(row: u32, i: u32, weighted: bool, inv_rms: f32) -> f32 {
    var sum = 0.0;
    for (var k = 0u; k < 4u; k = k + 1u) {
        let q = i + k * WG;
        if (q < p.n / 4u) {
            var v = x[row + q];
            if (weighted) {
                v = v * inv_rms * w[q];
            }
            sum = sum + dot(v, v);
        }
    }
    return sum;
}

@compute @workgroup_size(256)
fn norm_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let token = wg.x;
    if (token >= step.tokens) {
        return; // the whole workgroup
    }
    let row = token * (p.n / 4u);
    var sq = 0.0;
    for (var i = lid; i < p.n / 4u; i = i + 4u * WG) {
        sq = sq + squares(row, i, false, 1.0);
    }
    let inv_rms = inverseSqrt(workgroup_sum(lid, WG, sq) / f32(p.n) + p.eps);
    var inv_rms2 = 1.0;
    if ((p.flags & SECOND) != 0u) {
        var sq2 = 0.0;
        for (var i = lid; i < p.n / 4u; i = i + 4u * WG) {
            sq2 = sq2 + squares(row, i, true, inv_rms);
        }
        inv_rms2 = inverseSqrt(workgroup_sum(lid, WG, sq2) / f32(p.n) + p.eps);
    }
    if (lid == 0u) {
        stats[2u * token] = inv_rms;
        stats[2u * token + 1u] = inv_rms2;
    }
}

// SwiGLU: out[t, i] = silu(gate[t, i]) * up[t, i], where each token's row of
// `gate_up` holds its n gate values, then its n up values (the gate and up
// projections write one shared row, or run as one stacked projection).
//
// Dispatch: ceil(tokens * n / 64) workgroups of 64, laid out 2-D (x up to
// 65535): index = wg.x + wg.y * num_wg.x.

struct Params {
    n: u32,     // intermediate size
    total: u32, // tokens * n
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate_up: array<f32>;  // [tokens, 2 n]
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // [tokens, n]

@compute @workgroup_size(64)
fn swiglu(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * num_wg.x) * 64u + lid;
    if (i >= p.total) {
        return;
    }
    let at = (i / p.n) * 2u * p.n + i % p.n;
    let g = gate_up[at];
    out[i] = g / (1.0 + exp(-g)) * gate_up[at + p.n];
}

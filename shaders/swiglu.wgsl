// SwiGLU: gate[i] = silu(gate[i]) * up[i], in place.
//
// Dispatch: ceil(n / 64) workgroups of 64, laid out 2-D (x up to 65535):
// index = wg.x + wg.y * num_wg.x.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> gate: array<f32>; // [tokens, intermediate]
@group(0) @binding(2) var<storage, read> up: array<f32>;         // [tokens, intermediate]

@compute @workgroup_size(64)
fn swiglu(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * num_wg.x) * 64u + lid;
    if (i >= p.n) {
        return;
    }
    let g = gate[i];
    gate[i] = g / (1.0 + exp(-g)) * up[i];
}

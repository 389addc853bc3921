// Causal grouped-query attention of one new query position over the KV cache.
//
// For query head h (KV head g = h / (heads / kv_heads)) and positions t <= pos:
//   s[t] = q_h . k_cache[t, g] / sqrt(head_dim);   w = softmax(s);
//   out_h = sum_t w[t] * v_cache[t, g]
// Softmax in f32 with the running maximum subtracted. The scores go through a
// storage scratch buffer so the context is not limited by workgroup memory.
//
// Dispatch: one workgroup of 64 threads per query head.

struct Params {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    ctx: u32,
    scale: f32, // 1 / sqrt(head_dim)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Step {
    pos: u32, // position of this step's token
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> q: array<f32>;              // [heads, head_dim]
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;        // [ctx, kv_heads, head_dim]
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;        // [ctx, kv_heads, head_dim]
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;   // [heads, ctx] scratch
@group(0) @binding(6) var<storage, read_write> out: array<f32>;      // [heads, head_dim]

const WG: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

fn workgroup_reduce(lid: u32, value: f32, is_max: bool) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            if (is_max) {
                partial[lid] = max(partial[lid], partial[lid + stride]);
            } else {
                partial[lid] = partial[lid] + partial[lid + stride];
            }
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wg.x;
    let n = step.pos + 1u;
    let kv_dim = p.kv_heads * p.head_dim;
    let kv_offset = (head / (p.heads / p.kv_heads)) * p.head_dim;
    let q_offset = head * p.head_dim;
    let s_offset = head * p.ctx;

    var local_max = -3.0e38;
    for (var t = lid; t < n; t = t + WG) {
        var s = 0.0;
        for (var d = 0u; d < p.head_dim; d = d + 1u) {
            s = s + q[q_offset + d] * k_cache[t * kv_dim + kv_offset + d];
        }
        s = s * p.scale;
        scores[s_offset + t] = s;
        local_max = max(local_max, s);
    }
    let m = workgroup_reduce(lid, local_max, true);

    var local_sum = 0.0;
    for (var t = lid; t < n; t = t + WG) {
        let e = exp(scores[s_offset + t] - m);
        scores[s_offset + t] = e;
        local_sum = local_sum + e;
    }
    let total = workgroup_reduce(lid, local_sum, false);
    // Every thread reads every score below: make the writes above visible.
    storageBarrier();
    workgroupBarrier();

    for (var d = lid; d < p.head_dim; d = d + WG) {
        var acc = 0.0;
        for (var t = 0u; t < n; t = t + 1u) {
            acc = acc + scores[s_offset + t] * v_cache[t * kv_dim + kv_offset + d];
        }
        out[q_offset + d] = acc / total;
    }
}

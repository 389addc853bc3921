// Causal grouped-query attention of one new query position over the KV cache.
//
// For query head h (KV head g = h / (heads / kv_heads)) and positions t <= pos:
//   s[t] = q_h . k_cache[t, g] / sqrt(head_dim);   w = softmax(s);
//   out_h = sum_t w[t] * v_cache[t, g]
// Softmax in f32 with the maximum subtracted. Scores go through a storage
// scratch buffer so the context is not limited by workgroup memory. The
// weighted sum splits the positions into slices (one per group of head_dim/4
// threads, each thread owning four output columns) and adds the slices up at the
// end, so no thread walks the whole context alone.
//
// Dispatch: one workgroup of 256 threads per query head; head_dim % 4 == 0 and
// head_dim <= 1024. Reductions come from reduce*.wgsl.

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
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;        // [heads, head_dim / 4]
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<f32>>;  // [ctx, kv_heads, head_dim / 4]
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<f32>>;  // [ctx, kv_heads, head_dim / 4]
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;   // [heads, ctx] scratch
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>; // [heads, head_dim / 4]

const WG: u32 = 256u;
var<workgroup> slices: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wg.x;
    let n = step.pos + 1u;
    let quads = p.head_dim / 4u; // vec4 columns per head
    let kv_stride = p.kv_heads * quads;
    let kv_offset = (head / (p.heads / p.kv_heads)) * quads;
    let q_offset = head * quads;
    let s_offset = head * p.ctx;

    // Scores, one position per thread.
    var local_max = -3.0e38;
    for (var t = lid; t < n; t = t + WG) {
        var s = 0.0;
        for (var d = 0u; d < quads; d = d + 1u) {
            s = s + dot(q[q_offset + d], k_cache[t * kv_stride + kv_offset + d]);
        }
        s = s * p.scale;
        scores[s_offset + t] = s;
        local_max = max(local_max, s);
    }
    let m = workgroup_max(lid, WG, local_max);

    var local_sum = 0.0;
    for (var t = lid; t < n; t = t + WG) {
        let e = exp(scores[s_offset + t] - m);
        scores[s_offset + t] = e;
        local_sum = local_sum + e;
    }
    let total = workgroup_sum(lid, WG, local_sum);
    // Every thread reads scores other threads wrote: make them visible.
    storageBarrier();
    workgroupBarrier();

    // Weighted sum of values: thread (slice, column) sums positions slice, slice + slice_count, ...
    let slice_count = WG / quads;
    let slice = lid / quads;
    let column = lid % quads;
    var acc = vec4<f32>(0.0);
    if (slice < slice_count) {
        for (var t = slice; t < n; t = t + slice_count) {
            acc = acc + scores[s_offset + t] * v_cache[t * kv_stride + kv_offset + column];
        }
    }
    slices[lid] = acc;
    workgroupBarrier();
    if (lid < quads) {
        var sum = vec4<f32>(0.0);
        for (var s = 0u; s < slice_count; s = s + 1u) {
            sum = sum + slices[s * quads + lid];
        }
        out[q_offset + lid] = sum / total;
    }
}

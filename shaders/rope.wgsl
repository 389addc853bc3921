// Rotary position embedding (Qwen2's rotate-half layout) on q and k, and the
// append of this position's k and v to the layer's KV cache.
//
// For each head and i < head_dim/2, with (cos, sin) = rope_table[pos, i]:
//   (a, b) = (h[i], h[i + half])  ->  (a cos - b sin, b cos + a sin)
// q is rotated in place; k is rotated into k_cache[pos]; v is copied to v_cache[pos].
// The table is computed on the CPU, as the reference does, because GPU sin/cos
// lose precision on large angles.
//
// Prefill runs this before causal attention; decoding does the same inside
// attention_decode (attention.wgsl), one dispatch fewer.
//
// Layout: qkv holds, for each of the step's tokens, q [heads, head_dim], then
// k and v [kv_heads, head_dim]. Token t of the step (step.tokens of them, a
// prompt chunk) is at position step.pos + t. The cache holds f32 values, or
// with KV_HALF f16 ones in pack2x16float pairs (as attention.wgsl reads them).
// Each thread rotates two neighbouring pairs (i, i + 1), so that it writes
// whole f16 pairs. Needs head_dim % 4 == 0.
// Dispatch: [ceil((heads + kv_heads) * head_dim/4 / 64), tokens] workgroups of 64.

struct Params {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    _pad: u32,
}

struct Step {
    pos: u32,    // position of this step's (first) token
    tokens: u32, // tokens in this step
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read_write> qkv: array<f32>;       // [tokens, (heads + 2 kv_heads) * head_dim]
@group(0) @binding(5) var<storage, read> rope_table: array<vec2<f32>>; // [ctx, head_dim/2] (cos, sin)
// [ctx, kv_heads, head_dim] f32 bits; KV_HALF: [ctx, kv_heads, head_dim / 2] f16 pairs.
@group(0) @binding(6) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(7) var<storage, read_write> v_cache: array<u32>;

override KV_HALF: u32 = 0u; // 1: the KV cache holds f16 values

// Writes values `at` and `at + 1` (at even) of the k and v caches.
fn store_kv(at: u32, k: vec2<f32>, v: vec2<f32>) {
    if (KV_HALF == 1u) {
        k_cache[at / 2u] = pack2x16float(k);
        v_cache[at / 2u] = pack2x16float(v);
        return;
    }
    k_cache[at] = bitcast<u32>(k.x);
    k_cache[at + 1u] = bitcast<u32>(k.y);
    v_cache[at] = bitcast<u32>(v.x);
    v_cache[at + 1u] = bitcast<u32>(v.y);
}

@compute @workgroup_size(64)
fn rope(@builtin(global_invocation_id) id: vec3<u32>) {
    let half = p.head_dim / 2u;
    let head = id.x / (half / 2u); // q heads first, then k heads
    let i = 2u * (id.x % (half / 2u)); // this thread's pairs: (i, i + half), (i + 1, i + 1 + half)
    let token = id.y;
    if (head >= p.heads + p.kv_heads || token >= step.tokens) {
        return;
    }
    let pos = step.pos + token;
    let cs0 = rope_table[pos * half + i];
    let cs1 = rope_table[pos * half + i + 1u];
    let kv_dim = p.kv_heads * p.head_dim;
    let row = token * (p.heads * p.head_dim + 2u * kv_dim);
    let at = row + head * p.head_dim + i;
    let a = vec2<f32>(qkv[at], qkv[at + 1u]);
    let b = vec2<f32>(qkv[at + half], qkv[at + half + 1u]);
    let cosines = vec2<f32>(cs0.x, cs1.x);
    let sines = vec2<f32>(cs0.y, cs1.y);
    let ra = a * cosines - b * sines;
    let rb = b * cosines + a * sines;
    if (head < p.heads) {
        qkv[at] = ra.x;
        qkv[at + 1u] = ra.y;
        qkv[at + half] = rb.x;
        qkv[at + half + 1u] = rb.y;
    } else {
        let slot = (pos * p.kv_heads + head - p.heads) * p.head_dim + i;
        // v sits kv_dim after k in the token's row.
        store_kv(slot, ra, vec2<f32>(qkv[at + kv_dim], qkv[at + kv_dim + 1u]));
        store_kv(slot + half, rb, vec2<f32>(qkv[at + kv_dim + half], qkv[at + kv_dim + half + 1u]));
    }
}

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
// prompt chunk) is at position step.pos + t.
// Dispatch: [ceil((heads + kv_heads) * head_dim/2 / 64), tokens] workgroups of 64.

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
@group(0) @binding(6) var<storage, read_write> k_cache: array<f32>;  // [ctx, kv_heads, head_dim]
@group(0) @binding(7) var<storage, read_write> v_cache: array<f32>;  // [ctx, kv_heads, head_dim]

@compute @workgroup_size(64)
fn rope(@builtin(global_invocation_id) id: vec3<u32>) {
    let half = p.head_dim / 2u;
    let head = id.x / half; // q heads first, then k heads
    let i = id.x % half;
    let token = id.y;
    if (head >= p.heads + p.kv_heads || token >= step.tokens) {
        return;
    }
    let pos = step.pos + token;
    let cs = rope_table[pos * half + i];
    let kv_dim = p.kv_heads * p.head_dim;
    let row = token * (p.heads * p.head_dim + 2u * kv_dim);
    let at = row + head * p.head_dim + i;
    let a = qkv[at];
    let b = qkv[at + half];
    if (head < p.heads) {
        qkv[at] = a * cs.x - b * cs.y;
        qkv[at + half] = b * cs.x + a * cs.y;
    } else {
        let slot = (pos * p.kv_heads + head - p.heads) * p.head_dim + i;
        k_cache[slot] = a * cs.x - b * cs.y;
        k_cache[slot + half] = b * cs.x + a * cs.y;
        // v sits kv_dim after k in the token's row.
        v_cache[slot] = qkv[at + kv_dim];
        v_cache[slot + half] = qkv[at + kv_dim + half];
    }
}

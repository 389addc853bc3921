// Embedding lookup: x[t, c] = E[token[t], c] for the step's tokens t < step.tokens
// (one while decoding, a chunk of the prompt in prefill). The tokens are read from
// a storage buffer that the host writes for prompt tokens and that the previous
// step's argmax writes while decoding, so decoding needs no CPU round trip.
//
// E is [vocab, hidden], packed ternary (`embed_ternary`, 16 weights per word,
// per-group scales) or dense F32/F16/BF16 (`embed_dense`). A table split across
// bindings is dispatched once per chunk; only the chunk holding the token writes.
//
// Dispatch: [ceil(hidden / 16 / 64), tokens] workgroups (ternary, one word per
// thread) or [ceil(hidden / 64), tokens] (dense, one element per thread).

struct Params {
    rows: u32,       // rows in this chunk
    cols: u32,       // hidden size
    row_offset: u32, // first vocabulary id of this chunk
    flags: u32,      // unused
}

struct Step {
    pos: u32,    // position of the step's first token (unused)
    tokens: u32, // tokens in this step
}

override GROUP_SIZE: u32 = 64u;
override SCALE_DTYPE: u32 = 0u;
override WEIGHT_DTYPE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> weights: array<u32>;  // ternary [rows, cols/16] (packed_index) | dense [rows, cols]
@group(0) @binding(2) var<storage, read> scales: array<u32>;   // [rows, cols/GROUP_SIZE] (ternary only; packed_index)
@group(0) @binding(3) var<storage, read> token: array<u32>;   // [tokens]
@group(0) @binding(8) var<storage, read_write> x: array<f32>;  // [tokens, cols]
@group(0) @binding(9) var<uniform> step: Step;

@compute @workgroup_size(64)
fn embed_ternary(@builtin(global_invocation_id) id: vec3<u32>) {
    let words = p.cols / 16u;
    let w = id.x;
    if (id.y >= step.tokens) {
        return;
    }
    let vocab_id = token[id.y];
    if (vocab_id < p.row_offset || vocab_id >= p.row_offset + p.rows || w >= words) {
        return;
    }
    let row = vocab_id - p.row_offset;
    let out = id.y * p.cols;
    let word = weights[packed_index(row, w, words)];
    let c0 = w * 16u;
    let s = packed_index(row, c0 / GROUP_SIZE, p.cols / GROUP_SIZE);
    let scale = float_in_word(scales[word_of(s, SCALE_DTYPE)], s, SCALE_DTYPE);
    for (var j = 0u; j < 4u; j = j + 1u) {
        let t = trits_of_byte(word, j) * scale;
        x[out + c0 + 4u * j] = t.x;
        x[out + c0 + 4u * j + 1u] = t.y;
        x[out + c0 + 4u * j + 2u] = t.z;
        x[out + c0 + 4u * j + 3u] = t.w;
    }
}

@compute @workgroup_size(64)
fn embed_dense(@builtin(global_invocation_id) id: vec3<u32>) {
    let c = id.x;
    if (id.y >= step.tokens) {
        return;
    }
    let vocab_id = token[id.y];
    if (vocab_id < p.row_offset || vocab_id >= p.row_offset + p.rows || c >= p.cols) {
        return;
    }
    let i = (vocab_id - p.row_offset) * p.cols + c;
    x[id.y * p.cols + c] = float_in_word(weights[word_of(i, WEIGHT_DTYPE)], i, WEIGHT_DTYPE);
}

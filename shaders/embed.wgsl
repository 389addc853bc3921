// Embedding lookup: x[c] = E[token, c] for the token of this step. The token is
// read from a storage buffer that the host writes for prompt tokens and that the
// previous step's argmax writes while decoding, so decoding needs no CPU round trip.
//
// E is [vocab, hidden], packed ternary (`embed_ternary`, 16 weights per word,
// per-group scales) or dense F32/F16/BF16 (`embed_dense`). A table split across
// bindings is dispatched once per chunk; only the chunk holding the token writes.
//
// Dispatch: ceil(hidden / 16 / 64) workgroups (ternary, one word per thread) or
// ceil(hidden / 64) (dense, one element per thread).

struct Params {
    rows: u32,       // rows in this chunk
    cols: u32,       // hidden size
    row_offset: u32, // first vocabulary id of this chunk
    flags: u32,      // unused
}

override GROUP_SIZE: u32 = 64u;
override SCALE_DTYPE: u32 = 0u;
override WEIGHT_DTYPE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> weights: array<u32>;  // ternary [rows, cols/16] | dense [rows, cols]
@group(0) @binding(2) var<storage, read> scales: array<u32>;   // [rows, cols/GROUP_SIZE] (ternary only)
@group(0) @binding(3) var<storage, read> token: array<u32>;   // [1]
@group(0) @binding(8) var<storage, read_write> x: array<f32>;  // [cols]

@compute @workgroup_size(64)
fn embed_ternary(@builtin(global_invocation_id) id: vec3<u32>) {
    let words = p.cols / 16u;
    let w = id.x;
    if (token[0] < p.row_offset || token[0] >= p.row_offset + p.rows || w >= words) {
        return;
    }
    let row = token[0] - p.row_offset;
    let word = weights[row * words + w];
    let c0 = w * 16u;
    let s = row * (p.cols / GROUP_SIZE) + c0 / GROUP_SIZE;
    let scale = float_in_word(scales[word_of(s, SCALE_DTYPE)], s, SCALE_DTYPE);
    for (var j = 0u; j < 4u; j = j + 1u) {
        let t = trits_of_byte(word, j) * scale;
        x[c0 + 4u * j] = t.x;
        x[c0 + 4u * j + 1u] = t.y;
        x[c0 + 4u * j + 2u] = t.z;
        x[c0 + 4u * j + 3u] = t.w;
    }
}

@compute @workgroup_size(64)
fn embed_dense(@builtin(global_invocation_id) id: vec3<u32>) {
    let c = id.x;
    if (token[0] < p.row_offset || token[0] >= p.row_offset + p.rows || c >= p.cols) {
        return;
    }
    let i = (token[0] - p.row_offset) * p.cols + c;
    x[c] = float_in_word(weights[word_of(i, WEIGHT_DTYPE)], i, WEIGHT_DTYPE);
}

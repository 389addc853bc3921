// Token-batched matrix product for prefill: gemv.wgsl's computation for a chunk
// of prompt tokens at once, with the same fused input norms, bias and residual:
//
//   Y[t, y_offset + r] = (RESIDUAL ? Y[t, y_offset + r] : 0) + (BIAS ? bias[r] : 0) + sum_c W[r, c] * in[t, c]
//   in[t, c] = X[t, c] * (NORM1 ? stats[2t] * norm1[c] : 1) * (NORM2 ? stats[2t + 1] * norm2[c] : 1)
//
// for tokens t < step.tokens. Entry points: `gemm_ternary` (W packed base-3, 16
// weights per word, per-group scales) and `gemm_dense` (W in F32/F16/BF16). A
// matrix larger than one storage binding is split by rows into chunks, one
// dispatch each.
//
// Tiling: a workgroup of 256 threads computes a tile of TILE_ROWS rows by
// TILE_TOKENS tokens. It walks the columns 16 at a time (one packed word per
// row): the tile's weights are decoded once into workgroup memory (trit * scale)
// and reused for all the tile's tokens; the tile's inputs are normalized once and
// reused for all 128 rows. Each thread then accumulates a block of 8 rows by
// TOKENS_PER_THREAD tokens (4, or 8 for tall matrices, where the larger tile
// measured faster and still leaves enough workgroups).
// (gemm_ternary fetches the next tile into registers while it multiplies.)
//
// Split K: a matrix with too few tiles to fill the GPU (few rows, a short
// prompt) is cut into K parts along its columns, workgroup z taking columns
// 16 k_tiles z .. 16 k_tiles (z + 1) - 1. With SPLIT_K each part writes its
// partial sums to `parts` instead of Y, and `gemm_sum_parts` then adds the
// parts in order, with bias and residual, into Y.
//
// Needs cols % 16 == 0 (ternary: whole words) or cols % 4 == 0 (dense).
// Dispatch: [ceil(rows / TILE_ROWS), ceil(tokens / TILE_TOKENS), K parts]
// workgroups; gemm_sum_parts: ceil(graph tokens * rows / 256) workgroups of 256,
// laid out 2-D (x up to 65535): index = wg.x + wg.y * num_wg.x.

struct Params {
    rows: u32,       // rows in this chunk
    cols: u32,       // input length
    row_offset: u32, // first output row of this chunk
    flags: u32,      // NORM1 | NORM2 | BIAS | RESIDUAL
    y_stride: u32,   // the length of one token's row of Y
    y_offset: u32,   // where the matrix's row 0 goes in a token's row of Y
    k_tiles: u32,    // 16-column tiles per K part (all of them when not split)
    part_stride: u32, // SPLIT_K: floats per part in `parts` (graph tokens * rows)
}

struct Step {
    pos: u32,    // position of the chunk's first token
    tokens: u32, // tokens in this chunk
}

const NORM1: u32 = 1u;
const NORM2: u32 = 2u;
const BIAS: u32 = 4u;
const RESIDUAL: u32 = 8u;
const SPLIT_K: u32 = 16u;

override GROUP_SIZE: u32 = 64u;  // weights per scale (ternary)
override SCALE_DTYPE: u32 = 0u;  // DTYPE_* of the scales (ternary)
override WEIGHT_DTYPE: u32 = 0u; // DTYPE_* of W (dense)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> weights: array<u32>;     // ternary [rows, cols/16] (packed_index) | dense [rows, cols]
@group(0) @binding(2) var<storage, read> scales: array<u32>;      // [rows, cols/GROUP_SIZE] (ternary only; packed_index)
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;     // [tokens, cols / 4]
@group(0) @binding(4) var<storage, read> stats: array<f32>;       // [tokens, 2] inverse RMS for NORM1, NORM2
@group(0) @binding(5) var<storage, read> norm1: array<vec4<f32>>; // [cols / 4]
@group(0) @binding(6) var<storage, read> norm2: array<vec4<f32>>; // [cols / 4]
@group(0) @binding(7) var<storage, read> bias: array<f32>;        // [all rows of the matrix]
@group(0) @binding(8) var<storage, read_write> y: array<f32>;     // [tokens, y_stride]
@group(0) @binding(9) var<uniform> step: Step;
@group(0) @binding(10) var<storage, read_write> parts: array<f32>; // SPLIT_K: [K parts, graph tokens, rows]

override TOKENS_PER_THREAD: u32 = 4u; // 4 or 8
const TILE_ROWS: u32 = 128u;           // 16 row groups of 8
override TILE_TOKENS: u32 = 16u * TOKENS_PER_THREAD; // 16 token groups
const TILE_COLS: u32 = 16u;            // one packed word per row

// Workgroup memory is laid out so that one warp's accesses rarely fall on the
// same bank twice: each such conflict costs another pass through the banks.
// tile_w[k * 32 + 16 h + (g ^ 4h)]: the weights of rows 8g + 4h .. 8g + 4h + 3
// of the tile at column k (h = 0, 1): the 16 row groups' first halves are
// contiguous, then their second halves, so the multiply reads each half
// without conflicts; the XOR moves the second halves to other banks, halving
// the conflicts of the staging stores.
var<workgroup> tile_w: array<vec4<f32>, 512>;
// tile_x[k * TILE_TOKENS / 4 + (j ^ 2 (k / 4))]: the inputs of tokens 4j..4j+3
// of the tile at column k (sized for the larger tile); the XOR gives the
// stores of the four columns a staging thread writes four different banks.
var<workgroup> tile_x: array<vec4<f32>, 512>;

// The normalized inputs staged as element `e` of the tile (TILE_TOKENS * 4 of
// them, 256 or 512) for columns k0..k0+15: token e / 4, columns k0 + 4 (e % 4)
// .. + 3 (zero past the step's tokens). Thread lid stages elements lid and,
// for the larger tile, lid + 256.
fn fetch_inputs(first_token: u32, k0: u32, e: u32) -> vec4<f32> {
    let token = first_token + e / 4u;
    var v = vec4<f32>(0.0);
    if (token < step.tokens) {
        let q = k0 / 4u + e % 4u;
        v = x[token * (p.cols / 4u) + q];
        if ((p.flags & NORM1) != 0u) {
            v = v * (stats[2u * token] * norm1[q]);
        }
        if ((p.flags & NORM2) != 0u) {
            v = v * (stats[2u * token + 1u] * norm2[q]);
        }
    }
    return v;
}

// Stores what fetch_inputs returned for element `e` into tile_x, by column.
fn store_inputs(v: vec4<f32>, e: u32) {
    let t = e / 4u;
    let quad = e % 4u;
    for (var j = 0u; j < 4u; j = j + 1u) {
        tile_x[(4u * quad + j) * (TILE_TOKENS / 4u) + ((t / 4u) ^ (2u * quad))][t % 4u] = v[j];
    }
}

// Stores weight `value` of tile row `row`, tile column `col` into tile_w.
fn store_weight(row: u32, col: u32, value: f32) {
    let h = (row / 4u) % 2u;
    tile_w[col * 32u + 16u * h + ((row / 8u) ^ (4u * h))][row % 4u] = value;
}

// Each thread accumulates its block over the 16 columns in the tiles: acc[i]
// holds row i of its 8 rows for its first four tokens, acc[8 + i] for the next
// four (larger tile only).
fn accumulate(lid: u32, acc: ptr<function, array<vec4<f32>, 16>>) {
    let row_group = lid % 16u;
    let quads = TILE_TOKENS / 4u;
    let token_quad = (lid / 16u) * (TOKENS_PER_THREAD / 4u);
    for (var k = 0u; k < TILE_COLS; k = k + 1u) {
        let w0 = tile_w[k * 32u + row_group];
        let w1 = tile_w[k * 32u + 16u + (row_group ^ 4u)];
        let x0 = tile_x[k * quads + (token_quad ^ (2u * (k / 4u)))];
        (*acc)[0] = (*acc)[0] + w0.x * x0;
        (*acc)[1] = (*acc)[1] + w0.y * x0;
        (*acc)[2] = (*acc)[2] + w0.z * x0;
        (*acc)[3] = (*acc)[3] + w0.w * x0;
        (*acc)[4] = (*acc)[4] + w1.x * x0;
        (*acc)[5] = (*acc)[5] + w1.y * x0;
        (*acc)[6] = (*acc)[6] + w1.z * x0;
        (*acc)[7] = (*acc)[7] + w1.w * x0;
        if (TOKENS_PER_THREAD == 8u) {
            let x1 = tile_x[k * quads + ((token_quad + 1u) ^ (2u * (k / 4u)))];
            (*acc)[8] = (*acc)[8] + w0.x * x1;
            (*acc)[9] = (*acc)[9] + w0.y * x1;
            (*acc)[10] = (*acc)[10] + w0.z * x1;
            (*acc)[11] = (*acc)[11] + w0.w * x1;
            (*acc)[12] = (*acc)[12] + w1.x * x1;
            (*acc)[13] = (*acc)[13] + w1.y * x1;
            (*acc)[14] = (*acc)[14] + w1.z * x1;
            (*acc)[15] = (*acc)[15] + w1.w * x1;
        }
    }
}

// Writes row 8 (lid % 16) + i of the thread's block for its tokens
// `first` .. `first` + 3 (`v`): into Y, or with SPLIT_K into K part `part`.
fn write_row(first_row: u32, first: u32, lid: u32, i: u32, v: vec4<f32>, part: u32) {
    let row = first_row + 8u * (lid % 16u) + i;
    if (row >= p.rows) {
        return;
    }
    if ((p.flags & SPLIT_K) != 0u) {
        for (var j = 0u; j < 4u; j = j + 1u) {
            if (first + j < step.tokens) {
                parts[part * p.part_stride + (first + j) * p.rows + row] = v[j];
            }
        }
        return;
    }
    let r = p.row_offset + row;
    var b = 0.0;
    if ((p.flags & BIAS) != 0u) {
        b = bias[r];
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
        let token = first + j;
        if (token < step.tokens) {
            let at = token * p.y_stride + p.y_offset + r;
            var out = v[j] + b;
            if ((p.flags & RESIDUAL) != 0u) {
                out = out + y[at];
            }
            y[at] = out;
        }
    }
}

// Writes the thread's block. The accumulators are indexed by constants only, so
// they stay in registers (a variable index would put the array in memory).
fn write_outputs(first_row: u32, first_token: u32, lid: u32, acc: ptr<function, array<vec4<f32>, 16>>, part: u32) {
    let first = first_token + (lid / 16u) * TOKENS_PER_THREAD;
    write_row(first_row, first, lid, 0u, (*acc)[0], part);
    write_row(first_row, first, lid, 1u, (*acc)[1], part);
    write_row(first_row, first, lid, 2u, (*acc)[2], part);
    write_row(first_row, first, lid, 3u, (*acc)[3], part);
    write_row(first_row, first, lid, 4u, (*acc)[4], part);
    write_row(first_row, first, lid, 5u, (*acc)[5], part);
    write_row(first_row, first, lid, 6u, (*acc)[6], part);
    write_row(first_row, first, lid, 7u, (*acc)[7], part);
    if (TOKENS_PER_THREAD == 8u) {
        write_row(first_row, first + 4u, lid, 0u, (*acc)[8], part);
        write_row(first_row, first + 4u, lid, 1u, (*acc)[9], part);
        write_row(first_row, first + 4u, lid, 2u, (*acc)[10], part);
        write_row(first_row, first + 4u, lid, 3u, (*acc)[11], part);
        write_row(first_row, first + 4u, lid, 4u, (*acc)[12], part);
        write_row(first_row, first + 4u, lid, 5u, (*acc)[13], part);
        write_row(first_row, first + 4u, lid, 6u, (*acc)[14], part);
        write_row(first_row, first + 4u, lid, 7u, (*acc)[15], part);
    }
}

// The packed word and scale this thread stages for word `w` of tile row `row`
// (zero past the last row).
struct WeightWord {
    word: u32,
    scale: f32,
}

fn fetch_word(row: u32, w: u32) -> WeightWord {
    if (row >= p.rows) {
        return WeightWord(ZERO_TRITS_WORD, 0.0);
    }
    let s = packed_index(row, (w * 16u) / GROUP_SIZE, p.cols / GROUP_SIZE);
    let scale = float_in_word(scales[word_of(s, SCALE_DTYPE)], s, SCALE_DTYPE);
    return WeightWord(weights[packed_index(row, w, p.cols / 16u)], scale);
}

@compute @workgroup_size(256)
fn gemm_ternary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first_row = wg.x * TILE_ROWS;
    let first_token = wg.y * TILE_TOKENS;
    if (first_token >= step.tokens) {
        return; // the whole workgroup: the chunk is shorter than the dispatch
    }
    // This K part's words.
    let first_word = wg.z * p.k_tiles;
    let words = min(p.cols / 16u, first_word + p.k_tiles);
    // Weight staging: thread -> (tile row lid / 2, bytes 2 (lid % 2) and 2 (lid % 2) + 1 of its word).
    let w_row = lid / 2u;
    let w_half = lid % 2u;
    // The next tile's weights and inputs are fetched into registers before the
    // current tile is multiplied, so their loads overlap the arithmetic.
    let wide = TOKENS_PER_THREAD == 8u; // the tile stages 512 input elements, not 256
    var next_w = fetch_word(first_row + w_row, first_word);
    var next_x0 = fetch_inputs(first_token, 16u * first_word, lid);
    var next_x1 = vec4<f32>(0.0);
    if (wide) {
        next_x1 = fetch_inputs(first_token, 16u * first_word, lid + 256u);
    }
    var acc: array<vec4<f32>, 16>;
    for (var w = first_word; w < words; w = w + 1u) {
        for (var b = 0u; b < 2u; b = b + 1u) {
            let j = 2u * w_half + b; // byte of the word: tile columns 4j..4j+3
            let t = trits_of_byte(next_w.word, j) * next_w.scale;
            store_weight(w_row, 4u * j, t.x);
            store_weight(w_row, 4u * j + 1u, t.y);
            store_weight(w_row, 4u * j + 2u, t.z);
            store_weight(w_row, 4u * j + 3u, t.w);
        }
        store_inputs(next_x0, lid);
        if (wide) {
            store_inputs(next_x1, lid + 256u);
        }
        workgroupBarrier();
        if (w + 1u < words) {
            next_w = fetch_word(first_row + w_row, w + 1u);
            next_x0 = fetch_inputs(first_token, (w + 1u) * 16u, lid);
            if (wide) {
                next_x1 = fetch_inputs(first_token, (w + 1u) * 16u, lid + 256u);
            }
        }
        accumulate(lid, &acc);
        workgroupBarrier();
    }
    write_outputs(first_row, first_token, lid, &acc, wg.z);
}

@compute @workgroup_size(256)
fn gemm_dense(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first_row = wg.x * TILE_ROWS;
    let first_token = wg.y * TILE_TOKENS;
    if (first_token >= step.tokens) {
        return;
    }
    // Weight loading: thread -> (row lid / 2, columns 8 (lid % 2) .. 8 (lid % 2) + 7 of the tile).
    let w_row = lid / 2u;
    let w_col = 8u * (lid % 2u);
    var acc: array<vec4<f32>, 16>;
    let k_end = min(p.cols, (wg.z + 1u) * p.k_tiles * TILE_COLS);
    for (var k0 = wg.z * p.k_tiles * TILE_COLS; k0 < k_end; k0 = k0 + TILE_COLS) {
        let row = first_row + w_row;
        for (var c = w_col; c < w_col + 8u; c = c + 1u) {
            var v = 0.0;
            if (row < p.rows && k0 + c < p.cols) {
                let i = row * p.cols + k0 + c;
                v = float_in_word(weights[word_of(i, WEIGHT_DTYPE)], i, WEIGHT_DTYPE);
            }
            store_weight(w_row, c, v);
        }
        // Past the last column (cols % 16 != 0) the weights are zero, so the
        // inputs there do not count; keep their reads in bounds all the same.
        for (var e = lid; e < TILE_TOKENS * 4u; e = e + 256u) {
            var v = vec4<f32>(0.0);
            if (k0 + 4u * (e % 4u) < p.cols) {
                v = fetch_inputs(first_token, k0, e);
            }
            store_inputs(v, e);
        }
        workgroupBarrier();
        accumulate(lid, &acc);
        workgroupBarrier();
    }
    write_outputs(first_row, first_token, lid, &acc, wg.z);
}

// SPLIT_K's second pass: Y[t, y_offset + r] = (RESIDUAL ? Y : 0) + (BIAS ? bias : 0)
// + the K parts' partial sums for (t, r), added in part order.
@compute @workgroup_size(256)
fn gemm_sum_parts(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) num_wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * num_wg.x) * 256u + lid; // token * rows + row
    let token = i / p.rows;
    let row = i % p.rows;
    if (token >= step.tokens) {
        return;
    }
    let k_parts = ((p.cols + TILE_COLS - 1u) / TILE_COLS + p.k_tiles - 1u) / p.k_tiles;
    var sum = 0.0;
    for (var part = 0u; part < k_parts; part = part + 1u) {
        sum = sum + parts[part * p.part_stride + i];
    }
    let r = p.row_offset + row;
    if ((p.flags & BIAS) != 0u) {
        sum = sum + bias[r];
    }
    let at = token * p.y_stride + p.y_offset + r;
    if ((p.flags & RESIDUAL) != 0u) {
        sum = sum + y[at];
    }
    y[at] = sum;
}

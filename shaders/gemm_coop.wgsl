enable f16;
enable wgpu_cooperative_matrix;

// Token-batched product of a packed ternary matrix for prefill on
// cooperative-matrix units (tensor cores): gemm.wgsl's product, multiplied as
// f16 16x16x16 tiles with f32 accumulation where the adapter has them.
//
//   Y[t, y_offset + r] = (RESIDUAL ? Y[t, y_offset + r] : 0) + (BIAS ? bias[r] : 0)
//                        + unscale[t] * 2^-E * sum_c A[t, c] * B[c, r]
//
// A is the input as f16_pairs.wgsl left it (normalized, scaled by 2^e[t] and
// split into hi + lo). B[c, r] = trit[r, c] * scale[r, c / GROUP_SIZE] * 2^E,
// where 2^E (`scale_exp`, from the matrix's largest scale) puts the largest
// scale in [2^14, 2^15); B is split the same way into hi + lo as its tile is
// staged (split_f16). Each product is then A_hi B_hi + A_lo B_hi + A_hi B_lo
// (`product`): the dropped A_lo B_lo is below 2^-20 of it. Trits are exact in
// f16 and the units accumulate in f32, if more coarsely than f32 rounds (on an
// H100, rows of 16,384 values came within 7e-5 of the largest output:
// BENCHMARKS.md), which keeps the result within the f32 GEMM's test tolerance.
//
// `gemm_ternary_coop_f16` (`--gemm coop-f16`, reduced precision) computes the
// same with A and B rounded to f16 instead (A by f16_pairs.wgsl, which then
// writes no A_lo; B's scale by the staging): one tile product A B a step.
// The workgroup memory the low halves leave free holds twice the columns, so
// it walks them KT_F16 = 64 at a time, with half the steps and barriers.
// On an H200 (BENCHMARKS.md, round 26) a 512-token prompt of the 32B shape
// took 1,066 tokens/s with three products, 1,489 with one in 32-column
// steps, and 1,533 to 1,542 in 64-column steps: a third of the products left
// 72 % of the time, so the staging (stores into workgroup memory, a barrier
// a step), not the units, holds these kernels up most.
//
// Tiling: a workgroup of 256 threads (8 subgroups of 32) computes TILE_TOKENS
// tokens by TILE_ROWS rows, walking the columns KT at a time. Per step its
// threads stage the tile's inputs (A_hi, A_lo) and decode its weights (B_hi,
// B_lo) into workgroup memory, having fetched both into registers during the
// previous step; each subgroup then multiplies 64 tokens by 32 rows (4 x 2
// tiles of 16 x 16). gemm_ternary_coop_f16 tiles the same way, staging A and
// B alone, KT_F16 columns a step.
//
// Split K: as in gemm.wgsl, workgroup z takes words k_words z .. k_words (z + 1)
// of each row and, with SPLIT_K, writes its partial sums (scaled) to `parts`;
// gemm.wgsl's gemm_sum_parts adds them with bias and residual.
//
// Needs cols % 32 == 0 and k_words even (gemm_ternary_coop_f16: cols % 64 == 0
// and k_words % 4 == 0), GROUP_SIZE % 16 == 0, subgroups of 32 invocations,
// and the pairs buffer padded to whole TILE_TOKENS of tokens.
// Dispatch: [ceil(rows / TILE_ROWS), ceil(tokens / TILE_TOKENS), K parts].

struct Params {
    rows: u32,        // rows in this chunk
    cols: u32,        // input length
    row_offset: u32,  // first output row of this chunk
    flags: u32,       // BIAS | RESIDUAL | SPLIT_K
    y_stride: u32,    // the length of one token's row of Y
    y_offset: u32,    // where the matrix's row 0 goes in a token's row of Y
    k_words: u32,     // packed words per K part (all of them when not split; whole steps)
    part_stride: u32, // SPLIT_K: floats per part in `parts` (graph tokens * rows)
    lo_offset: u32,   // f16 elements of `pairs` before A_lo
    scale_exp: i32,   // E
    _pad0: u32,
    _pad1: u32,
}

struct Step {
    pos: u32,
    tokens: u32,
}

const BIAS: u32 = 4u;
const RESIDUAL: u32 = 8u;
const SPLIT_K: u32 = 16u;

override GROUP_SIZE: u32 = 64u; // weights per scale
override SCALE_DTYPE: u32 = 0u; // DTYPE_* of the scales

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> weights: array<u32>;      // [rows, cols / 16] (packed_index)
@group(0) @binding(2) var<storage, read> scales: array<u32>;       // [rows, cols / GROUP_SIZE] (packed_index)
@group(0) @binding(3) var<storage, read> pairs: array<vec4<u32>>;  // f16: A_hi [tokens, cols], then A_lo (split kernel)
@group(0) @binding(4) var<storage, read> unscale: array<f32>;      // [tokens]
@group(0) @binding(7) var<storage, read> bias: array<f32>;         // [all rows of the matrix]
@group(0) @binding(8) var<storage, read_write> y: array<f32>;      // [tokens, y_stride]
@group(0) @binding(9) var<uniform> step: Step;
@group(0) @binding(10) var<storage, read_write> parts: array<f32>; // SPLIT_K: [K parts, graph tokens, rows]

const TILE_TOKENS: u32 = 128u;
const TILE_ROWS: u32 = 128u;
const KT: u32 = 32u;     // columns per step: two packed words of each row
const STRIDE: u32 = 40u; // f16s per staged row: KT, padded so rows start on other banks
const SUBGROUP: u32 = 32u;

// The tiles are arrays of f16, staged a value a store. Arrays of f16 pairs
// (u32) would take half the stores, but the shader compiler (naga 30) types
// a tile load by the scalar its pointer points to, and refuses u32 tiles.
//
// A's tile, row-major: A[i, k] (tile token i, tile column k) at i * STRIDE + k.
var<workgroup> a_hi: array<f16, 5120>; // TILE_TOKENS * STRIDE
var<workgroup> a_lo: array<f16, 5120>;
// B's tile, column-major: B[k, n] (tile column k, tile row n) at n * STRIDE + k.
var<workgroup> b_hi: array<f16, 5120>; // TILE_ROWS * STRIDE
var<workgroup> b_lo: array<f16, 5120>;
// One 16 x 16 f32 tile per subgroup, on its way from the units to Y.
var<workgroup> c_tile: array<f32, 2048>;

// `v` as hi + lo, hi its 11 leading significant bits (exact in f16 from 2^-14
// to 65504), lo the rest rounded to f16. The split clears bits rather than
// converting to f16 and back, which a shader compiler may fold into nothing.
fn split_f16(v: f32) -> vec2<f16> {
    let hi = bitcast<f32>(bitcast<u32>(v) & 0xffffe000u);
    return vec2<f16>(f16(hi), f16(v - hi));
}

// What a thread stages per step, fetched a step ahead: one packed word and
// its scale (times 2^E; zero past the last row), and 16 inputs of one token as
// f16 pairs (two vec4<u32> of hi, two of lo).
struct Staged {
    word: u32,
    scale: f32,
    hi0: vec4<u32>,
    hi1: vec4<u32>,
    lo0: vec4<u32>,
    lo1: vec4<u32>,
}

// The tile row and the word of the step (0 or 1) whose weights thread `lid`
// stages: lid % 4 picks a row of four, so that neighbouring threads read
// neighbouring words of the GPU layout (packed_index), which keeps four
// rows' words side by side.
fn weight_row(lid: u32) -> u32 {
    return 4u * (lid / 8u) + lid % 4u;
}

fn weight_word(lid: u32) -> u32 {
    return (lid / 4u) % 2u;
}

// Thread `lid`'s share of the step at word `w`: word w + weight_word(lid) of
// tile row weight_row(lid), and columns 16 (w + lid % 2) .. + 15 of tile
// token lid / 2.
fn fetch(first_row: u32, first_token: u32, lid: u32, w: u32) -> Staged {
    var s: Staged;
    let row = first_row + weight_row(lid);
    let weight_at = w + weight_word(lid);
    s.word = ZERO_TRITS_WORD;
    s.scale = 0.0;
    if (row < p.rows) {
        let at = packed_index(row, (weight_at * 16u) / GROUP_SIZE, p.cols / GROUP_SIZE);
        s.scale = ldexp(float_in_word(scales[word_of(at, SCALE_DTYPE)], at, SCALE_DTYPE), p.scale_exp);
        s.word = weights[packed_index(row, weight_at, p.cols / 16u)];
    }
    let word = w + lid % 2u;
    let e = ((first_token + lid / 2u) * p.cols + 16u * word) / 8u; // in vec4<u32>s of 8 f16
    s.hi0 = pairs[e];
    s.hi1 = pairs[e + 1u];
    s.lo0 = pairs[p.lo_offset / 8u + e];
    s.lo1 = pairs[p.lo_offset / 8u + e + 1u];
    return s;
}

// Stores 8 f16s (packed in `v`) at `at` of a_hi (hi) or a_lo.
fn store_inputs(at: u32, v: vec4<u32>, hi: bool) {
    for (var j = 0u; j < 4u; j = j + 1u) {
        let two = vec2<f16>(unpack2x16float(v[j])); // exact: the values are f16s
        if (hi) {
            a_hi[at + 2u * j] = two.x;
            a_hi[at + 2u * j + 1u] = two.y;
        } else {
            a_lo[at + 2u * j] = two.x;
            a_lo[at + 2u * j + 1u] = two.y;
        }
    }
}

fn stage(lid: u32, s: Staged) {
    let at = (lid / 2u) * STRIDE + 16u * (lid % 2u);
    store_inputs(at, s.hi0, true);
    store_inputs(at + 8u, s.hi1, true);
    store_inputs(at, s.lo0, false);
    store_inputs(at + 8u, s.lo1, false);
    let scale = split_f16(s.scale);
    let b_at = weight_row(lid) * STRIDE + 16u * weight_word(lid);
    for (var j = 0u; j < 4u; j = j + 1u) {
        let t = vec4<f16>(trits_of_byte(s.word, j));
        let hi = t * scale.x;
        let lo = t * scale.y;
        b_hi[b_at + 4u * j] = hi.x;
        b_hi[b_at + 4u * j + 1u] = hi.y;
        b_hi[b_at + 4u * j + 2u] = hi.z;
        b_hi[b_at + 4u * j + 3u] = hi.w;
        b_lo[b_at + 4u * j] = lo.x;
        b_lo[b_at + 4u * j + 1u] = lo.y;
        b_lo[b_at + 4u * j + 2u] = lo.z;
        b_lo[b_at + 4u * j + 3u] = lo.w;
    }
}

// acc + (ah + al)(bh + bl) without al bl: three tile products.
fn product(
    ah: coop_mat16x16<f16, A>,
    al: coop_mat16x16<f16, A>,
    bh: coop_mat16x16<f16, B>,
    bl: coop_mat16x16<f16, B>,
    acc: coop_mat16x16<f32, C>,
) -> coop_mat16x16<f32, C> {
    return coopMultiplyAdd(ah, bl, coopMultiplyAdd(al, bh, coopMultiplyAdd(ah, bh, acc)));
}

// Writes one subgroup's 16 x 16 tile (tokens token0.., rows row0.. of the
// chunk) through its slot of c_tile: lane l takes token l / 2, rows
// 8 (l % 2) .. + 7. Every subgroup calls this the same number of times.
fn write_tile(tile: coop_mat16x16<f32, C>, sg: u32, lane: u32, token0: u32, row0: u32, part: u32) {
    let slot = sg * 256u;
    coopStoreT(tile, &c_tile[slot], 16u);
    workgroupBarrier();
    let i = lane / 2u;
    let t = token0 + i;
    if (t < step.tokens) {
        let factor = unscale[t] * ldexp(1.0, -p.scale_exp);
        for (var j = 8u * (lane % 2u); j < 8u * (lane % 2u) + 8u; j = j + 1u) {
            let row = row0 + j;
            if (row < p.rows) {
                var out = c_tile[slot + 16u * i + j] * factor;
                if ((p.flags & SPLIT_K) != 0u) {
                    parts[part * p.part_stride + t * p.rows + row] = out;
                } else {
                    let r = p.row_offset + row;
                    if ((p.flags & BIAS) != 0u) {
                        out = out + bias[r];
                    }
                    let at = t * p.y_stride + p.y_offset + r;
                    if ((p.flags & RESIDUAL) != 0u) {
                        out = out + y[at];
                    }
                    y[at] = out;
                }
            }
        }
    }
    workgroupBarrier();
}

// A subgroup's eight tiles, tokens t0 + 16i .. and rows r0 + 16j .. in
// tile ij, written by write_tile.
fn write_tiles(
    t00: coop_mat16x16<f32, C>,
    t01: coop_mat16x16<f32, C>,
    t10: coop_mat16x16<f32, C>,
    t11: coop_mat16x16<f32, C>,
    t20: coop_mat16x16<f32, C>,
    t21: coop_mat16x16<f32, C>,
    t30: coop_mat16x16<f32, C>,
    t31: coop_mat16x16<f32, C>,
    sg: u32,
    lane: u32,
    t0: u32,
    r0: u32,
    part: u32,
) {
    write_tile(t00, sg, lane, t0, r0, part);
    write_tile(t01, sg, lane, t0, r0 + 16u, part);
    write_tile(t10, sg, lane, t0 + 16u, r0, part);
    write_tile(t11, sg, lane, t0 + 16u, r0 + 16u, part);
    write_tile(t20, sg, lane, t0 + 32u, r0, part);
    write_tile(t21, sg, lane, t0 + 32u, r0 + 16u, part);
    write_tile(t30, sg, lane, t0 + 48u, r0, part);
    write_tile(t31, sg, lane, t0 + 48u, r0 + 16u, part);
}

// A zero accumulator tile, loaded from a zeroed slot of c_tile.
fn zero_tile(lid: u32) -> coop_mat16x16<f32, C> {
    c_tile[lid] = 0.0;
    workgroupBarrier();
    let zero = coopLoad<coop_mat16x16<f32, C>>(&c_tile[0], 16u);
    workgroupBarrier();
    return zero;
}

@compute @workgroup_size(256)
fn gemm_ternary_coop(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first_row = wg.x * TILE_ROWS;
    let first_token = wg.y * TILE_TOKENS;
    if (first_token >= step.tokens) {
        return; // the whole workgroup: the chunk is shorter than the dispatch
    }
    // Subgroup sg multiplies tile tokens 64 (sg / 4) .. + 63 by tile rows 32 (sg % 4) .. + 31.
    let sg = lid / SUBGROUP;
    let lane = lid % SUBGROUP;
    let tok = 64u * (sg / 4u);
    let row = 32u * (sg % 4u);

    var acc00 = zero_tile(lid);
    var acc01 = acc00;
    var acc10 = acc00;
    var acc11 = acc00;
    var acc20 = acc00;
    var acc21 = acc00;
    var acc30 = acc00;
    var acc31 = acc00;

    // This K part's words.
    let first_word = wg.z * p.k_words;
    let words = min(p.cols / 16u, first_word + p.k_words);
    var next = fetch(first_row, first_token, lid, first_word);
    for (var w = first_word; w < words; w = w + 2u) {
        stage(lid, next);
        workgroupBarrier();
        // The next step's data is fetched while this one is multiplied.
        if (w + 2u < words) {
            next = fetch(first_row, first_token, lid, w + 2u);
        }
        for (var kk = 0u; kk < KT; kk = kk + 16u) {
            let b0 = row * STRIDE + kk;
            let b1 = b0 + 16u * STRIDE;
            let b0_hi = coopLoad<coop_mat16x16<f16, B>>(&b_hi[b0], STRIDE);
            let b0_lo = coopLoad<coop_mat16x16<f16, B>>(&b_lo[b0], STRIDE);
            let b1_hi = coopLoad<coop_mat16x16<f16, B>>(&b_hi[b1], STRIDE);
            let b1_lo = coopLoad<coop_mat16x16<f16, B>>(&b_lo[b1], STRIDE);
            var a = tok * STRIDE + kk;
            var a_h = coopLoadT<coop_mat16x16<f16, A>>(&a_hi[a], STRIDE);
            var a_l = coopLoadT<coop_mat16x16<f16, A>>(&a_lo[a], STRIDE);
            acc00 = product(a_h, a_l, b0_hi, b0_lo, acc00);
            acc01 = product(a_h, a_l, b1_hi, b1_lo, acc01);
            a = a + 16u * STRIDE;
            a_h = coopLoadT<coop_mat16x16<f16, A>>(&a_hi[a], STRIDE);
            a_l = coopLoadT<coop_mat16x16<f16, A>>(&a_lo[a], STRIDE);
            acc10 = product(a_h, a_l, b0_hi, b0_lo, acc10);
            acc11 = product(a_h, a_l, b1_hi, b1_lo, acc11);
            a = a + 16u * STRIDE;
            a_h = coopLoadT<coop_mat16x16<f16, A>>(&a_hi[a], STRIDE);
            a_l = coopLoadT<coop_mat16x16<f16, A>>(&a_lo[a], STRIDE);
            acc20 = product(a_h, a_l, b0_hi, b0_lo, acc20);
            acc21 = product(a_h, a_l, b1_hi, b1_lo, acc21);
            a = a + 16u * STRIDE;
            a_h = coopLoadT<coop_mat16x16<f16, A>>(&a_hi[a], STRIDE);
            a_l = coopLoadT<coop_mat16x16<f16, A>>(&a_lo[a], STRIDE);
            acc30 = product(a_h, a_l, b0_hi, b0_lo, acc30);
            acc31 = product(a_h, a_l, b1_hi, b1_lo, acc31);
        }
        workgroupBarrier();
    }
    let t0 = first_token + tok;
    write_tiles(acc00, acc01, acc10, acc11, acc20, acc21, acc30, acc31, sg, lane, t0, first_row + row, wg.z);
}

// gemm_ternary_coop_f16's tiles, KT_F16 columns a step, in the room of the
// hi and lo tiles: A[i, k] at i * STRIDE_F16 + k, B[k, n] at n * STRIDE_F16 + k.
const KT_F16: u32 = 64u;     // columns per step: four packed words of each row
const STRIDE_F16: u32 = 72u; // f16s per staged row: KT_F16, padded
var<workgroup> a_f16: array<f16, 9216>; // TILE_TOKENS * STRIDE_F16
var<workgroup> b_f16: array<f16, 9216>; // TILE_ROWS * STRIDE_F16

// What a thread stages per step of gemm_ternary_coop_f16, fetched a step
// ahead: the same word of two tile rows (f16_row) with their scales (times
// 2^E; zero past the last row), and 32 inputs of one token (f16, four
// vec4<u32>).
struct StagedF16 {
    words: vec2<u32>,
    scales: vec2<f32>,
    a0: vec4<u32>,
    a1: vec4<u32>,
    a2: vec4<u32>,
    a3: vec4<u32>,
}

// The tile row of thread `lid`'s word `h` (0 or 1): as weight_row, a row of
// four by lid % 4, the second word 64 rows below the first.
fn f16_row(lid: u32, h: u32) -> u32 {
    return 4u * (lid / 16u) + lid % 4u + 64u * h;
}

// The step's word (0..3) whose weights thread `lid` stages.
fn f16_word(lid: u32) -> u32 {
    return (lid / 4u) % 4u;
}

// Thread `lid`'s share of the step at word `w`: word w + f16_word(lid) of
// tile rows f16_row(lid, 0 and 1), and columns 16 w + 32 (lid % 2) .. + 31
// of tile token lid / 2.
fn fetch_f16(first_row: u32, first_token: u32, lid: u32, w: u32) -> StagedF16 {
    var s: StagedF16;
    let weight_at = w + f16_word(lid);
    for (var h = 0u; h < 2u; h = h + 1u) {
        let row = first_row + f16_row(lid, h);
        s.words[h] = ZERO_TRITS_WORD;
        s.scales[h] = 0.0;
        if (row < p.rows) {
            let at = packed_index(row, (weight_at * 16u) / GROUP_SIZE, p.cols / GROUP_SIZE);
            s.scales[h] = ldexp(float_in_word(scales[word_of(at, SCALE_DTYPE)], at, SCALE_DTYPE), p.scale_exp);
            s.words[h] = weights[packed_index(row, weight_at, p.cols / 16u)];
        }
    }
    let e = ((first_token + lid / 2u) * p.cols + 16u * w + 32u * (lid % 2u)) / 8u; // in vec4<u32>s of 8 f16
    s.a0 = pairs[e];
    s.a1 = pairs[e + 1u];
    s.a2 = pairs[e + 2u];
    s.a3 = pairs[e + 3u];
    return s;
}

// Stores 8 f16s (packed in `v`) at `at` of a_f16.
fn store_f16_inputs(at: u32, v: vec4<u32>) {
    for (var j = 0u; j < 4u; j = j + 1u) {
        let two = vec2<f16>(unpack2x16float(v[j])); // exact: the values are f16s
        a_f16[at + 2u * j] = two.x;
        a_f16[at + 2u * j + 1u] = two.y;
    }
}

fn stage_f16(lid: u32, s: StagedF16) {
    let at = (lid / 2u) * STRIDE_F16 + 32u * (lid % 2u);
    store_f16_inputs(at, s.a0);
    store_f16_inputs(at + 8u, s.a1);
    store_f16_inputs(at + 16u, s.a2);
    store_f16_inputs(at + 24u, s.a3);
    for (var h = 0u; h < 2u; h = h + 1u) {
        let scale = f16(s.scales[h]);
        let b_at = f16_row(lid, h) * STRIDE_F16 + 16u * f16_word(lid);
        for (var j = 0u; j < 4u; j = j + 1u) {
            let b = vec4<f16>(trits_of_byte(s.words[h], j)) * scale;
            b_f16[b_at + 4u * j] = b.x;
            b_f16[b_at + 4u * j + 1u] = b.y;
            b_f16[b_at + 4u * j + 2u] = b.z;
            b_f16[b_at + 4u * j + 3u] = b.w;
        }
    }
}

@compute @workgroup_size(256)
fn gemm_ternary_coop_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first_row = wg.x * TILE_ROWS;
    let first_token = wg.y * TILE_TOKENS;
    if (first_token >= step.tokens) {
        return; // the whole workgroup: the chunk is shorter than the dispatch
    }
    // Subgroup sg multiplies tile tokens 64 (sg / 4) .. + 63 by tile rows 32 (sg % 4) .. + 31.
    let sg = lid / SUBGROUP;
    let lane = lid % SUBGROUP;
    let tok = 64u * (sg / 4u);
    let row = 32u * (sg % 4u);

    var acc00 = zero_tile(lid);
    var acc01 = acc00;
    var acc10 = acc00;
    var acc11 = acc00;
    var acc20 = acc00;
    var acc21 = acc00;
    var acc30 = acc00;
    var acc31 = acc00;

    // This K part's words.
    let first_word = wg.z * p.k_words;
    let words = min(p.cols / 16u, first_word + p.k_words);
    var next = fetch_f16(first_row, first_token, lid, first_word);
    for (var w = first_word; w < words; w = w + 4u) {
        stage_f16(lid, next);
        workgroupBarrier();
        // The next step's data is fetched while this one is multiplied.
        if (w + 4u < words) {
            next = fetch_f16(first_row, first_token, lid, w + 4u);
        }
        for (var kk = 0u; kk < KT_F16; kk = kk + 16u) {
            let b0 = row * STRIDE_F16 + kk;
            let b1 = b0 + 16u * STRIDE_F16;
            let bm0 = coopLoad<coop_mat16x16<f16, B>>(&b_f16[b0], STRIDE_F16);
            let bm1 = coopLoad<coop_mat16x16<f16, B>>(&b_f16[b1], STRIDE_F16);
            var a = tok * STRIDE_F16 + kk;
            var am = coopLoadT<coop_mat16x16<f16, A>>(&a_f16[a], STRIDE_F16);
            acc00 = coopMultiplyAdd(am, bm0, acc00);
            acc01 = coopMultiplyAdd(am, bm1, acc01);
            a = a + 16u * STRIDE_F16;
            am = coopLoadT<coop_mat16x16<f16, A>>(&a_f16[a], STRIDE_F16);
            acc10 = coopMultiplyAdd(am, bm0, acc10);
            acc11 = coopMultiplyAdd(am, bm1, acc11);
            a = a + 16u * STRIDE_F16;
            am = coopLoadT<coop_mat16x16<f16, A>>(&a_f16[a], STRIDE_F16);
            acc20 = coopMultiplyAdd(am, bm0, acc20);
            acc21 = coopMultiplyAdd(am, bm1, acc21);
            a = a + 16u * STRIDE_F16;
            am = coopLoadT<coop_mat16x16<f16, A>>(&a_f16[a], STRIDE_F16);
            acc30 = coopMultiplyAdd(am, bm0, acc30);
            acc31 = coopMultiplyAdd(am, bm1, acc31);
        }
        workgroupBarrier();
    }
    let t0 = first_token + tok;
    write_tiles(acc00, acc01, acc10, acc11, acc20, acc21, acc30, acc31, sg, lane, t0, first_row + row, wg.z);
}

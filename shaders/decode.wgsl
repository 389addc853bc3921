// Decode helpers shared by every kernel that reads weights; the engine prepends
// this file to those kernels' source.
//
// Weights and scales live on the GPU exactly as stored in the file, viewed as
// array<u32>:
// - packed ternary: 4 bytes per word, each byte four base-3 digits (trit + 1),
//   the lowest digit first: byte = (t0+1) + 3(t1+1) + 9(t2+1) + 27(t3+1);
// - F32 values: one per word; F16 / BF16 values: two per word, the lower half first.

const DTYPE_F32: u32 = 0u;
const DTYPE_F16: u32 = 1u;
const DTYPE_BF16: u32 = 2u;

// A packed word of zero trits (each byte 40: every digit 1), staged for rows
// past the end of a matrix so that they add nothing.
const ZERO_TRITS_WORD: u32 = 0x28282828u;

// Index of the word holding element `i` of a tensor of type `dtype`.
fn word_of(i: u32, dtype: u32) -> u32 {
    if (dtype == DTYPE_F32) {
        return i;
    }
    return i / 2u;
}

// Element `i` of a tensor of type `dtype`, given the word that holds it.
fn float_in_word(word: u32, i: u32, dtype: u32) -> f32 {
    if (dtype == DTYPE_F32) {
        return bitcast<f32>(word);
    }
    let half = (word >> ((i & 1u) * 16u)) & 0xffffu;
    if (dtype == DTYPE_F16) {
        return unpack2x16float(half).x;
    }
    return bitcast<f32>(half << 16u); // BF16 is the top half of an f32
}

// The four trits (-1, 0 or +1) of the byte at position `j` (0..3) of `word`.
fn trits_of_byte(word: u32, j: u32) -> vec4<f32> {
    let b = (word >> (8u * j)) & 0xffu;
    return vec4<f32>(
        f32(b % 3u),
        f32((b / 3u) % 3u),
        f32((b / 9u) % 3u),
        f32(b / 27u),
    ) - vec4<f32>(1.0);
}

// The four bytes b of `word` and their base-3 prefixes, as floats: column 0
// holds b, columns 1, 2, 3 hold floor(b / 3), floor(b / 9), floor(b / 27), one
// row per byte. With digits d_j of b (trit + 1, lowest first),
//   sum_j d_j x_j = b x0 + floor(b/3) (x1 - 3 x0) + floor(b/9) (x2 - 3 x1) + floor(b/27) (x3 - 3 x2),
// so a kernel that prepares those input combinations once needs no digit at all.
// The constants are 1/3, 1/9, 1/27 rounded up, which makes each floor exact for b <= 80.
fn base3_prefixes(word: u32) -> mat4x4<f32> {
    let b = vec4<f32>(unpack4xU8(word));
    return mat4x4<f32>(b, floor(b * 0.33333334), floor(b * 0.11111112), floor(b * 0.037037037));
}

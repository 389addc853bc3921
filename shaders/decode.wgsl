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

// The base-3 digits (trit + 1, as floats 0, 1 or 2) of the four bytes of `word`,
// digit by digit: column j of the result holds digit j of bytes 0..3, so for the
// 16 weights w[4i + j] of the word, w = m[j][i] - 1. Float arithmetic on four
// bytes at once: q = floor(b / 3) is exact for b <= 80 with 1/3 rounded up.
fn base3_digits(word: u32) -> mat4x4<f32> {
    const THIRD: f32 = 0.33333334;
    let b = vec4<f32>(unpack4xU8(word));
    let q1 = floor(b * THIRD);
    let q2 = floor(q1 * THIRD);
    let q3 = floor(q2 * THIRD);
    return mat4x4<f32>(b - 3.0 * q1, q1 - 3.0 * q2, q2 - 3.0 * q3, q3);
}

// Decode helpers shared by every kernel that reads weights; the engine prepends
// this file to those kernels' source.
//
// Weights and scales live on the GPU as stored in the file, viewed as
// array<u32>:
// - packed ternary: 4 bytes per word, each byte four trits as 2-bit digits
//   (trit + 1), the lowest first: byte = (t0+1) | (t1+1) << 2 | (t2+1) << 4 | (t3+1) << 6.
//   Files store base-3 bytes; the upload re-encodes them (ternary.rs,
//   to_gpu_codes) and interleaves rows in fours, words and scales alike
//   (interleave_rows): see packed_index;
// - F32 values: one per word; F16 / BF16 values: two per word, the lower half first.

const DTYPE_F32: u32 = 0u;
const DTYPE_F16: u32 = 1u;
const DTYPE_BF16: u32 = 2u;

// A packed word of zero trits (every digit 1), staged for rows past the end of
// a matrix so that they add nothing.
const ZERO_TRITS_WORD: u32 = 0x55555555u;

// Index of unit `u` of row `row` of a packed matrix's words (u: a word, of
// `units` a row) or scales (u: a group's scale, of `units` a row, then
// word_of): rows are stored in fours, unit u of the four rows side by side,
// so that four rows' word u is one 16-byte vector (and their scales for it
// 16 bytes of f32, or 8 of a 16-bit type).
fn packed_index(row: u32, u: u32, units: u32) -> u32 {
    return ((row / 4u) * units + u) * 4u + row % 4u;
}

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
    return vec4<f32>(vec4<u32>(b & 3u, (b >> 2u) & 3u, (b >> 4u) & 3u, b >> 6u)) - vec4<f32>(1.0);
}

// Digit `j` (trit + 1, 0..2) of each of the four bytes of `word`, one per byte
// of the result: the digits of the word's weights j, 4 + j, 8 + j and 12 + j.
fn digit_bytes(word: u32, j: u32) -> u32 {
    return (word >> (2u * j)) & 0x03030303u;
}

// Block fixed point for GEMV inputs, shared by the kernels that write it
// (fixed_point.wgsl, attention.wgsl's merge, gemv_fixed.wgsl's feeding
// entry points; its swiglu_words computes fixed_word a value a thread);
// gemv_fixed.wgsl reads it. The engine prepends this file to their source.
//
// An input is cut into words of 16 values, the inputs of one packed weight
// word, and each word is stored as a scale and sixteen integers of
// 8 * DIGITS bits:
//
//   in[16w + c] ~= scale[w] * A[16w + c],   A = A2 * 65536 + A1 * 256 + A0
//
// with scale[w] = max |in| over the word / amax() and the digits A2, A1, A0
// signed bytes (-128..127; the digits past DIGITS are 0). With three digits
// (the default) the error is at most half a step, max |in| * 6e-8 for the
// word: as fine as f32's own rounding of its largest value. Two or one digit
// (16- or 8-bit inputs, `--act-bits`) trade precision for fewer products.
//
// Digit k of word w is one vec4<u32> at planes[k * words + w], so that GEMV
// threads reading neighbouring words read neighbouring vec4s. Its component j
// packs (pack4xI8) the digits of inputs 16w + j, 16w + 4 + j, 16w + 8 + j and
// 16w + 12 + j: the inputs that digit j of each byte of a packed word
// multiplies (digit_bytes, decode.wgsl). info[w] holds the scale's bits and
// the sum of the word's A, which the GEMV takes off once per word because its
// digits are trit + 1.

// Signed-byte digits per value: 3, 2 or 1 (gemv_fixed.wgsl declares the same).
override DIGITS: u32 = 3u;

// The largest value |A| written: for three digits below 2^23 by enough that
// A2 stays within -128..127 after the lower digits are balanced (127 * 65536);
// for two, A1 within -127..127 (127 * 256); for one, 127.
fn amax() -> f32 {
    switch (DIGITS) {
        case 3u: {
            return 8323072.0;
        }
        case 2u: {
            return 32512.0;
        }
        default: {
            return 127.0;
        }
    }
}

// The three signed-byte digits of each of four integers below amax() in size,
// lowest first: v = d2 * 65536 + d1 * 256 + d0, each d in -128..127.
fn digits(v: vec4<i32>) -> array<vec4<i32>, 3> {
    let d0 = ((v + 128) & vec4<i32>(255)) - 128;
    let rest = (v - d0) >> vec4<u32>(8u); // exact: v - d0 is a multiple of 256
    let d1 = ((rest + 128) & vec4<i32>(255)) - 128;
    let d2 = (rest - d1) >> vec4<u32>(8u);
    return array<vec4<i32>, 3>(d0, d1, d2);
}

// What takes a word's values to its integers A (fixed_ints): amax() over the
// word's largest magnitude; 0 for a word of zeros, which gets scale 0 and
// zero digits.
fn int_factor(largest: f32) -> f32 {
    return select(0.0, amax() / largest, largest > 0.0);
}

// The integers A of four values of a word whose int_factor is `factor`.
fn fixed_ints(v: vec4<f32>, factor: f32) -> vec4<i32> {
    return vec4<i32>(clamp(round(v * factor), vec4<f32>(-amax()), vec4<f32>(amax())));
}

// One word in block fixed point: its three digit planes and its info.
struct FixedWord {
    planes: array<vec4<u32>, 3>,
    info: vec2<u32>,
}

// The fixed-point form of the 16 values v[i][j] = in[16w + 4i + j].
fn fixed_word(v: array<vec4<f32>, 4>) -> FixedWord {
    let m4 = max(max(abs(v[0]), abs(v[1])), max(abs(v[2]), abs(v[3])));
    let largest = max(max(m4.x, m4.y), max(m4.z, m4.w));
    let to_int = int_factor(largest);
    // d[i][k]: digit k of inputs 16w + 4i .. 16w + 4i + 3.
    var d: array<array<vec4<i32>, 3>, 4>;
    var sum = vec4<i32>(0);
    for (var i = 0u; i < 4u; i = i + 1u) {
        let ints = fixed_ints(v[i], to_int);
        sum = sum + ints;
        d[i] = digits(ints);
    }
    var word: FixedWord;
    for (var k = 0u; k < 3u; k = k + 1u) {
        for (var j = 0u; j < 4u; j = j + 1u) {
            word.planes[k][j] = pack4xI8(vec4<i32>(d[0][k][j], d[1][k][j], d[2][k][j], d[3][k][j]));
        }
    }
    word.info = vec2<u32>(bitcast<u32>(largest / amax()), bitcast<u32>(sum.x + sum.y + sum.z + sum.w));
    return word;
}

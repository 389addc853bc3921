//! The base-3 packed ternary format, in one place.
//!
//! A ternary weight matrix `W` of logical shape `[out, in]` is stored as
//!
//! * `U8 [out, in/4]`: four trits per byte, packed along `in` (row-major).
//!   `byte = (t0+1) + 3*(t1+1) + 9*(t2+1) + 27*(t3+1)` where `t0` is column `4k`,
//!   `t1` column `4k+1`, and so on. A valid byte is `0..=80`.
//! * `<name>.scales [out, in/group]` (F32, F16 or BF16): one scale per group of
//!   `group` consecutive weights of a row (64 in every published model).
//!
//! The dequantized weight is `w[r, c] = t[r, c] * scales[r, c / group]`.
//!
//! On the GPU each packed byte is re-encoded as it is uploaded ([`to_gpu_codes`]):
//! the same four trits in the same byte, as 2-bit digits,
//! `code = (t0+1) | (t1+1) << 2 | (t2+1) << 4 | (t3+1) << 6`, so that a kernel
//! gets digit `j` of every byte of a 32-bit word with one shift and one mask,
//! where base 3 needs divisions. Rows are stored in fours
//! ([`interleave_rows`]): word `w` (16 weights) of rows `4q .. 4q + 3` side by
//! side, then word `w + 1` of the same rows, and likewise their scales, so
//! that a kernel reading four rows at once loads one 16-byte vector (and one
//! vector of scales) per step. A matrix's last rows are padded to four.
//!
//! Quantization follows the BitNet b1.58 model card with the precisions that make
//! independent tools agree bit for bit: the group's sum of `|w|` accumulates in
//! f64, is divided by the group size and rounded to f32; a group whose mean is zero
//! gets scale 1.0 (its trits are all zero); `t = clamp(round_half_even(w / scale),
//! -1, 1)` with the division in f32 (`torch.round` rounds half to even).

/// Trits stored in one byte.
pub const TRITS_PER_BYTE: usize = 4;
/// The largest valid packed byte: all four trits +1 is `2 + 6 + 18 + 54`.
pub const MAX_PACKED_BYTE: u8 = 80;
/// Weights per scale in every published model.
pub const DEFAULT_GROUP_SIZE: usize = 64;

/// A packed byte above [`MAX_PACKED_BYTE`]: corrupt input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("packed byte {value} at byte offset {offset} is above {MAX_PACKED_BYTE}: not a base-3 ternary byte (the file is corrupt or not in the packed format)")]
pub struct InvalidByte {
    /// Offset of the byte from the start of the slice that was checked.
    pub offset: usize,
    pub value: u8,
}

/// Packs four trits (each -1, 0 or +1) into one byte.
pub fn pack4(trits: [i8; 4]) -> u8 {
    debug_assert!(trits.iter().all(|t| (-1..=1).contains(t)));
    let digit = |t: i8| (t + 1) as u8;
    digit(trits[0]) + 3 * digit(trits[1]) + 9 * digit(trits[2]) + 27 * digit(trits[3])
}

/// Unpacks one byte into its four trits, refusing bytes above 80.
pub fn unpack4(byte: u8) -> Option<[i8; 4]> {
    if byte > MAX_PACKED_BYTE {
        return None;
    }
    let trit = |power: u8| ((byte / power) % 3) as i8 - 1;
    Some([trit(1), trit(3), trit(9), trit(27)])
}

/// Packs a row of trits (length a multiple of 4) into `packed` (a quarter the length).
pub fn pack_row(trits: &[i8], packed: &mut [u8]) {
    assert_eq!(trits.len(), packed.len() * TRITS_PER_BYTE, "pack_row: length mismatch");
    for (byte, four) in packed.iter_mut().zip(trits.chunks_exact(TRITS_PER_BYTE)) {
        *byte = pack4([four[0], four[1], four[2], four[3]]);
    }
}

/// Unpacks a row of bytes into trits (four per byte).
pub fn unpack_row(packed: &[u8], trits: &mut [i8]) -> Result<(), InvalidByte> {
    assert_eq!(trits.len(), packed.len() * TRITS_PER_BYTE, "unpack_row: length mismatch");
    for (offset, (&byte, out)) in packed.iter().zip(trits.chunks_exact_mut(TRITS_PER_BYTE)).enumerate() {
        let four = unpack4(byte).ok_or(InvalidByte { offset, value: byte })?;
        out.copy_from_slice(&four);
    }
    Ok(())
}

/// The GPU code of a valid packed byte (see the module documentation).
pub const fn gpu_code(byte: u8) -> u8 {
    (byte % 3) | ((byte / 3 % 3) << 2) | ((byte / 9 % 3) << 4) | ((byte / 27) << 6)
}

/// [`gpu_code`] of every byte value (bytes above 80 are never looked up).
const GPU_CODES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b <= MAX_PACKED_BYTE as usize {
        table[b] = gpu_code(b as u8);
        b += 1;
    }
    table
};

/// Re-encodes checked packed bytes ([`check_packed`]) as GPU codes, in place.
pub fn to_gpu_codes(packed: &mut [u8]) {
    for byte in packed {
        *byte = GPU_CODES[*byte as usize];
    }
}

/// Rows the GPU layout interleaves ([`interleave_rows`]).
pub const GPU_ROWS_INTERLEAVED: usize = 4;

/// Lays out `rows`, row-major `units_per_row` units of `unit` bytes each, as
/// the GPU stores them: for every four rows, unit `u` of each of the four
/// side by side, then unit `u + 1`, and so on. A packed row's unit is its
/// 4-byte word, a scale row's one scale. `rows.len()` must hold whole fours
/// of rows; `out` is as long.
pub fn interleave_rows(rows: &[u8], unit: usize, units_per_row: usize, out: &mut [u8]) {
    let row = unit * units_per_row;
    let four = GPU_ROWS_INTERLEAVED * row;
    for (quad, dst) in rows.chunks_exact(four).zip(out.chunks_exact_mut(four)) {
        for (r, src_row) in quad.chunks_exact(row).enumerate() {
            for (u, value) in src_row.chunks_exact(unit).enumerate() {
                let at = (u * GPU_ROWS_INTERLEAVED + r) * unit;
                dst[at..at + unit].copy_from_slice(value);
            }
        }
    }
}

/// Finds the first byte above 80, if any.
pub fn check_packed(packed: &[u8]) -> Result<(), InvalidByte> {
    match packed.iter().position(|&b| b > MAX_PACKED_BYTE) {
        Some(offset) => Err(InvalidByte { offset, value: packed[offset] }),
        None => Ok(()),
    }
}

/// The model card's group scale: `mean(|w|)` summed in f64, rounded to f32; 1.0 for
/// an all-zero group.
pub fn group_scale(group: &[f32]) -> f32 {
    let sum: f64 = group.iter().map(|&w| (w as f64).abs()).sum();
    let mean = (sum / group.len() as f64) as f32;
    if mean == 0.0 {
        1.0
    } else {
        mean
    }
}

/// The trit of one weight: `clamp(round_half_even(w / scale), -1, 1)` in f32.
pub fn quantize_weight(w: f32, scale: f32) -> i8 {
    (w / scale).round_ties_even().clamp(-1.0, 1.0) as i8
}

/// Quantizes one row: writes `row.len()` trits and `row.len() / group` scales.
pub fn quantize_row(row: &[f32], group: usize, trits: &mut [i8], scales: &mut [f32]) {
    assert_eq!(row.len() % group, 0, "quantize_row: row length not a multiple of the group");
    assert_eq!(trits.len(), row.len());
    assert_eq!(scales.len(), row.len() / group);
    for ((weights, out), scale) in row.chunks_exact(group).zip(trits.chunks_exact_mut(group)).zip(scales.iter_mut()) {
        *scale = group_scale(weights);
        for (t, &w) in out.iter_mut().zip(weights) {
            *t = quantize_weight(w, *scale);
        }
    }
}

/// Quantizes and packs one row: `packed` holds `row.len() / 4` bytes.
pub fn quantize_pack_row(row: &[f32], group: usize, packed: &mut [u8], scales: &mut [f32]) {
    let mut trits = vec![0i8; row.len()];
    quantize_row(row, group, &mut trits, scales);
    pack_row(&trits, packed);
}

/// Dequantizes one packed row into `out` (`packed.len() * 4` values).
pub fn dequantize_row(packed: &[u8], scales: &[f32], group: usize, out: &mut [f32]) -> Result<(), InvalidByte> {
    assert_eq!(out.len(), packed.len() * TRITS_PER_BYTE);
    assert_eq!(out.len(), scales.len() * group);
    for (offset, (&byte, four)) in packed.iter().zip(out.chunks_exact_mut(TRITS_PER_BYTE)).enumerate() {
        let trits = unpack4(byte).ok_or(InvalidByte { offset, value: byte })?;
        let scale = scales[offset * TRITS_PER_BYTE / group];
        for (w, t) in four.iter_mut().zip(trits) {
            *w = t as f32 * scale;
        }
    }
    Ok(())
}

/// `sum_c W[r, c] * x[c]` for one packed row, dequantizing as it goes.
pub fn dot_packed_row(packed: &[u8], scales: &[f32], group: usize, x: &[f32]) -> Result<f32, InvalidByte> {
    assert_eq!(x.len(), packed.len() * TRITS_PER_BYTE);
    let bytes_per_group = group / TRITS_PER_BYTE;
    let mut total = 0.0f32;
    for (g, (group_bytes, xs)) in packed.chunks_exact(bytes_per_group).zip(x.chunks_exact(group)).enumerate() {
        // Sum the trit-weighted activations of the group, then scale once.
        let mut acc = 0.0f32;
        for (i, (&byte, x4)) in group_bytes.iter().zip(xs.chunks_exact(TRITS_PER_BYTE)).enumerate() {
            let offset = g * bytes_per_group + i;
            let trits = unpack4(byte).ok_or(InvalidByte { offset, value: byte })?;
            for (t, xv) in trits.iter().zip(x4) {
                acc += *t as f32 * xv;
            }
        }
        total += acc * scales[g];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn gpu_codes_hold_the_same_trits_two_bits_each() {
        for byte in 0..=MAX_PACKED_BYTE {
            let trits = unpack4(byte).unwrap();
            let mut codes = [byte, byte];
            to_gpu_codes(&mut codes);
            for (j, t) in trits.iter().enumerate() {
                assert_eq!(((codes[1] >> (2 * j)) & 3) as i8 - 1, *t, "byte {byte}, trit {j}");
            }
        }
        // Four zero trits: the kernels' ZERO_TRITS_WORD is 0x55555555.
        assert_eq!(gpu_code(pack4([0, 0, 0, 0])), 0x55);
    }

    #[test]
    fn interleaved_rows_put_four_rows_units_side_by_side() {
        // Eight rows of three 2-byte units, unit (r, u) holding [r, u].
        let rows: Vec<u8> = (0..8u8).flat_map(|r| (0..3u8).flat_map(move |u| [r, u])).collect();
        let mut out = vec![0u8; rows.len()];
        interleave_rows(&rows, 2, 3, &mut out);
        let expected: Vec<u8> =
            (0..2u8).flat_map(|q| (0..3u8).flat_map(move |u| (0..4u8).flat_map(move |r| [4 * q + r, u]))).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn byte_layout_matches_the_model_card() {
        assert_eq!(pack4([-1, -1, -1, -1]), 0);
        assert_eq!(pack4([1, 1, 1, 1]), 80);
        assert_eq!(pack4([0, 0, 0, 0]), 40);
        // t0 is the least significant base-3 digit.
        assert_eq!(pack4([1, -1, -1, -1]), 2);
        assert_eq!(pack4([-1, -1, -1, 1]), 54);
        assert_eq!(unpack4(81), None);
        assert_eq!(unpack4(255), None);
    }

    #[test]
    fn every_valid_byte_round_trips() {
        for byte in 0..=MAX_PACKED_BYTE {
            assert_eq!(pack4(unpack4(byte).unwrap()), byte);
        }
    }

    #[test]
    fn rounding_is_half_to_even_and_zero_groups_get_scale_one() {
        // A group with mean |w| = 1.0: w/scale lands exactly on the halves.
        let mut group = vec![1.0f32; 64];
        group[0] = 0.5;
        group[1] = -0.5;
        group[2] = 1.5;
        group[3] = -1.5;
        let sum: f32 = group.iter().map(|w| w.abs()).sum();
        assert_eq!(sum, 64.0);
        let mut trits = vec![0i8; 64];
        let mut scales = vec![0.0f32; 1];
        quantize_row(&group, 64, &mut trits, &mut scales);
        assert_eq!(scales[0], 1.0);
        assert_eq!(&trits[..4], &[0, 0, 1, -1]);

        let zeros = vec![0.0f32; 64];
        quantize_row(&zeros, 64, &mut trits, &mut scales);
        assert_eq!(scales[0], 1.0);
        assert!(trits.iter().all(|&t| t == 0));
    }

    #[test]
    fn bad_bytes_are_reported_with_their_offset() {
        let bytes = [0u8, 40, 80, 81, 3];
        assert_eq!(check_packed(&bytes), Err(InvalidByte { offset: 3, value: 81 }));
        let mut trits = [0i8; 20];
        assert_eq!(unpack_row(&bytes, &mut trits), Err(InvalidByte { offset: 3, value: 81 }));
    }

    proptest! {
        #[test]
        fn trits_round_trip_through_bytes(trits in proptest::collection::vec(-1i8..=1, 0..64usize).prop_map(|mut v| { v.truncate(v.len() / 4 * 4); v })) {
            let mut packed = vec![0u8; trits.len() / 4];
            pack_row(&trits, &mut packed);
            prop_assert!(check_packed(&packed).is_ok());
            let mut back = vec![0i8; trits.len()];
            unpack_row(&packed, &mut back).unwrap();
            prop_assert_eq!(back, trits);
        }

        #[test]
        fn quantized_rows_dequantize_to_trit_times_scale(row in proptest::collection::vec(-4.0f32..4.0, 128)) {
            let mut packed = vec![0u8; 32];
            let mut scales = vec![0.0f32; 2];
            quantize_pack_row(&row, 64, &mut packed, &mut scales);
            let mut deq = vec![0.0f32; 128];
            dequantize_row(&packed, &scales, 64, &mut deq).unwrap();
            for (c, (&d, &w)) in deq.iter().zip(&row).enumerate() {
                let scale = scales[c / 64];
                prop_assert!(d == 0.0 || d == scale || d == -scale);
                // The trit is the nearest of -1, 0, +1 to w / scale.
                prop_assert!((d / scale - (w / scale).clamp(-1.0, 1.0)).abs() <= 0.5 + 1e-6);
            }
            // The fused dot product equals the dot product with the dequantized row.
            let x: Vec<f32> = (0..128).map(|i| (i as f32 * 0.37).sin()).collect();
            let dot = dot_packed_row(&packed, &scales, 64, &x).unwrap();
            let expect: f32 = deq.iter().zip(&x).map(|(a, b)| a * b).sum();
            prop_assert!((dot - expect).abs() <= 1e-4 * (1.0 + expect.abs()));
        }
    }
}

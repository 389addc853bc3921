//! Reading tensor data on the CPU: dense F32/F16/BF16 to f32, and matrix rows
//! dequantized one at a time (never a whole dequantized matrix).

use super::checkpoint::Checkpoint;
use super::layout::{Layout, Matrix, Storage, Vector};
pub use super::safetensors::to_f32;
use super::ModelError;
use crate::ternary;

fn tensor_f32(ckpt: &Checkpoint, name: &str) -> Vec<f32> {
    let t = ckpt.get(name).expect("tensor checked by the layout");
    let mut out = vec![0.0; t.shape().iter().product()];
    to_f32(t.dtype(), ckpt.bytes(t), &mut out);
    out
}

/// A norm weight or bias as f32.
pub fn read_vector(ckpt: &Checkpoint, v: &Vector) -> Vec<f32> {
    tensor_f32(ckpt, &v.name)
}

/// Checks every packed byte of the model is a valid base-3 byte (0..=80).
pub fn verify_packed(ckpt: &Checkpoint, layout: &Layout) -> Result<(), ModelError> {
    for m in layout.matrices().into_iter().filter(|m| m.is_packed()) {
        let t = ckpt.get(&m.name).expect("tensor checked by the layout");
        ternary::check_packed(ckpt.bytes(t))
            .map_err(|byte| ModelError::InvalidPacked { name: m.name.clone(), byte })?;
    }
    Ok(())
}

/// Row access to a dense or packed matrix in the mapped file.
pub struct MatrixRows<'a> {
    matrix: &'a Matrix,
    data: &'a [u8],
    /// Packed matrices: every scale as f32 (`rows * cols / group` values, 1/16 of the
    /// packed bytes' size at group 64).
    scales: Vec<f32>,
}

impl<'a> MatrixRows<'a> {
    pub fn new(ckpt: &'a Checkpoint, matrix: &'a Matrix) -> Self {
        let data = ckpt.bytes(ckpt.get(&matrix.name).expect("tensor checked by the layout"));
        let scales = match &matrix.storage {
            Storage::Packed { scales, .. } => tensor_f32(ckpt, scales),
            Storage::Dense { .. } => Vec::new(),
        };
        MatrixRows { matrix, data, scales }
    }

    fn row_bytes(&self, row: usize) -> &'a [u8] {
        let width = match &self.matrix.storage {
            Storage::Dense { dtype } => self.matrix.cols * dtype.size().expect("float"),
            Storage::Packed { .. } => self.matrix.cols / ternary::TRITS_PER_BYTE,
        };
        &self.data[row * width..(row + 1) * width]
    }

    fn row_scales(&self, row: usize, group_size: usize) -> &[f32] {
        let groups = self.matrix.cols / group_size;
        &self.scales[row * groups..(row + 1) * groups]
    }

    fn invalid(&self, row: usize, e: ternary::InvalidByte) -> ModelError {
        let row_start = row * self.matrix.cols / ternary::TRITS_PER_BYTE;
        let byte = ternary::InvalidByte { offset: row_start + e.offset, value: e.value };
        ModelError::InvalidPacked { name: self.matrix.name.clone(), byte }
    }

    /// Writes row `row` as f32 into `out` (`cols` values).
    pub fn row(&self, row: usize, out: &mut [f32]) -> Result<(), ModelError> {
        match &self.matrix.storage {
            Storage::Dense { dtype } => {
                to_f32(dtype, self.row_bytes(row), out);
                Ok(())
            }
            Storage::Packed { group_size, .. } => {
                ternary::dequantize_row(self.row_bytes(row), self.row_scales(row, *group_size), *group_size, out)
                    .map_err(|e| self.invalid(row, e))
            }
        }
    }

    /// `out = W · x`: every row dotted with `x`.
    pub fn matvec(&self, x: &[f32], out: &mut [f32]) -> Result<(), ModelError> {
        assert_eq!(x.len(), self.matrix.cols);
        assert_eq!(out.len(), self.matrix.rows);
        match &self.matrix.storage {
            Storage::Dense { .. } => {
                let mut row = vec![0.0f32; self.matrix.cols];
                for (r, o) in out.iter_mut().enumerate() {
                    self.row(r, &mut row)?;
                    *o = row.iter().zip(x).map(|(w, v)| w * v).sum();
                }
            }
            Storage::Packed { group_size, .. } => {
                for (r, o) in out.iter_mut().enumerate() {
                    *o = ternary::dot_packed_row(self.row_bytes(r), self.row_scales(r, *group_size), *group_size, x)
                        .map_err(|e| self.invalid(r, e))?;
                }
            }
        }
        Ok(())
    }
}

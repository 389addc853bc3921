//! Weights on the GPU exactly as packed on disk, uploaded in bounded chunks.
//!
//! A matrix becomes one or more row chunks, each small enough for one storage
//! binding (lavapipe and many browsers allow 128 MiB; a 32B LM head is 1.5 GB).
//! Packed bytes and scales are copied byte for byte: no dequantized copy exists.
//! Norm weights and biases (small vectors) are converted to f32.

use std::future::Future;
use std::pin::Pin;

#[cfg(not(target_arch = "wasm32"))]
use crate::model::checkpoint::Checkpoint;
use crate::model::safetensors::to_f32;
use crate::model::{DType, Matrix, ModelError, Storage, Vector};
use crate::ternary::{self, TRITS_PER_BYTE};

use super::{GpuContext, GpuError};

/// A read in progress: ready at once for a mapped file, pending for a browser
/// `Blob` slice or `fetch` stream.
pub type ReadFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ModelError>> + 'a>>;

/// Where tensor bytes come from: a mapped file natively, `File`/`fetch` reads in
/// the browser. The engine asks for byte ranges of named tensors, never a whole model.
pub trait WeightSource {
    /// Copies `out.len()` bytes of tensor `name` starting at byte `offset`.
    fn read<'a>(&'a self, name: &'a str, offset: u64, out: &'a mut [u8]) -> ReadFuture<'a>;
}

#[cfg(not(target_arch = "wasm32"))]
impl WeightSource for Checkpoint {
    fn read<'a>(&'a self, name: &'a str, offset: u64, out: &'a mut [u8]) -> ReadFuture<'a> {
        let result = match self.get(name) {
            Some(t) => {
                let start = offset as usize;
                out.copy_from_slice(&self.bytes(t)[start..start + out.len()]);
                Ok(())
            }
            None => {
                Err(ModelError::MissingTensor { name: name.to_string(), context: "asked for by the GPU upload".into() })
            }
        };
        Box::pin(std::future::ready(result))
    }
}

/// Largest piece copied from the source per `write_buffer` call.
const UPLOAD_PIECE: usize = 8 << 20;
/// Submit (and so free wgpu's staging memory) after this many bytes.
const FLUSH_EVERY: u64 = 64 << 20;

/// One storage binding's worth of rows of a matrix.
pub struct MatrixChunk {
    pub first_row: usize,
    pub rows: usize,
    pub weights: wgpu::Buffer,
    /// Packed matrices only.
    pub scales: Option<wgpu::Buffer>,
}

/// A matrix on the GPU.
pub struct GpuMatrix {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub storage: Storage,
    pub chunks: Vec<MatrixChunk>,
}

/// Code of a float dtype in the shaders (`DTYPE_*` in decode.wgsl).
pub fn dtype_code(dtype: &DType) -> u32 {
    match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        other => unreachable!("dtype {other} never reaches the GPU: the layout admits only floats here"),
    }
}

/// Bytes of one row of `m` as stored.
fn row_bytes(m: &Matrix) -> u64 {
    match &m.storage {
        Storage::Dense { dtype } => (m.cols * dtype.size().expect("float")) as u64,
        Storage::Packed { .. } => (m.cols / TRITS_PER_BYTE) as u64,
    }
}

/// Bytes one matrix occupies on the GPU (as stored, padded to 4 per chunk).
pub fn matrix_bytes(m: &Matrix) -> u64 {
    let scales = match &m.storage {
        Storage::Packed { scale_dtype, group_size, .. } => {
            (m.rows * m.cols / group_size * scale_dtype.size().expect("float")) as u64
        }
        Storage::Dense { .. } => 0,
    };
    m.rows as u64 * row_bytes(m) + scales
}

/// Streams weights from a source to the GPU, reporting progress.
pub struct Uploader<'a> {
    ctx: &'a GpuContext,
    source: &'a dyn WeightSource,
    max_binding: u64,
    piece: Vec<u8>,
    since_flush: u64,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl<'a> Uploader<'a> {
    pub fn new(
        ctx: &'a GpuContext,
        source: &'a dyn WeightSource,
        max_binding: u64,
        total: u64,
        progress: &'a mut dyn FnMut(u64, u64),
    ) -> Self {
        Uploader { ctx, source, max_binding, piece: Vec::new(), since_flush: 0, done: 0, total, progress }
    }

    /// A storage buffer filled with `len` bytes of tensor `name` from `offset`;
    /// packed tensors are checked for bytes above 80 on the way.
    async fn upload(
        &mut self,
        label: &str,
        name: &str,
        offset: u64,
        len: u64,
        packed: bool,
    ) -> Result<wgpu::Buffer, GpuError> {
        let padded = len.div_ceil(4) * 4;
        let scope = self.ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: padded.max(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = scope.pop().await {
            return Err(GpuError::Limits(format!(
                "the GPU ran out of memory at {label} after {} of {} weight bytes ({e}); \
                 the model does not fit this device: use a smaller model, or a GPU with more memory",
                self.done, self.total
            )));
        }
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(UPLOAD_PIECE as u64) as usize;
            self.piece.resize(n.div_ceil(4) * 4, 0);
            self.piece[n..].fill(0);
            self.source.read(name, offset + at, &mut self.piece[..n]).await?;
            if packed {
                ternary::check_packed(&self.piece[..n]).map_err(|e| ModelError::InvalidPacked {
                    name: name.to_string(),
                    source: ternary::InvalidByte { offset: (offset + at) as usize + e.offset, value: e.value },
                })?;
            }
            self.ctx.queue.write_buffer(&buffer, at, &self.piece);
            at += n as u64;
            self.done += n as u64;
            self.since_flush += n as u64;
            if self.since_flush >= FLUSH_EVERY {
                self.ctx.queue.submit([]);
                self.ctx.idle().await?;
                self.since_flush = 0;
            }
            (self.progress)(self.done, self.total);
        }
        Ok(buffer)
    }

    /// Uploads a matrix as stored, split by rows into binding-sized chunks.
    pub async fn matrix(&mut self, m: &Matrix) -> Result<GpuMatrix, GpuError> {
        let row = row_bytes(m);
        let rows_per_chunk = (self.max_binding / row) as usize;
        if rows_per_chunk == 0 {
            return Err(GpuError::Limits(format!(
                "one row of {} is {row} bytes, more than the largest storage binding ({} bytes)",
                m.name, self.max_binding
            )));
        }
        let mut chunks = Vec::new();
        let mut first_row = 0;
        while first_row < m.rows {
            let rows = rows_per_chunk.min(m.rows - first_row);
            let label = format!("{} rows {first_row}..{}", m.name, first_row + rows);
            let packed = m.is_packed();
            let weights = self.upload(&label, &m.name, first_row as u64 * row, rows as u64 * row, packed).await?;
            let scales = match &m.storage {
                Storage::Packed { scales, scale_dtype, group_size } => {
                    let per_row = (m.cols / group_size * scale_dtype.size().expect("float")) as u64;
                    let label = format!("{scales} rows {first_row}..{}", first_row + rows);
                    Some(self.upload(&label, scales, first_row as u64 * per_row, rows as u64 * per_row, false).await?)
                }
                Storage::Dense { .. } => None,
            };
            chunks.push(MatrixChunk { first_row, rows, weights, scales });
            first_row += rows;
        }
        Ok(GpuMatrix { name: m.name.clone(), rows: m.rows, cols: m.cols, storage: m.storage.clone(), chunks })
    }

    /// Uploads a norm weight or bias, converted to f32.
    pub async fn vector(&mut self, v: &Vector) -> Result<wgpu::Buffer, GpuError> {
        let mut raw = vec![0u8; v.len * v.dtype.size().expect("float")];
        self.source.read(&v.name, 0, &mut raw).await?;
        let mut values = vec![0f32; v.len];
        to_f32(&v.dtype, &raw, &mut values);
        self.done += raw.len() as u64;
        (self.progress)(self.done, self.total);
        Ok(self.ctx.buffer_init(&v.name, bytemuck::cast_slice(&values), wgpu::BufferUsages::STORAGE))
    }
}

impl GpuContext {
    /// A buffer created with `contents` (padded to 4 bytes).
    pub fn buffer_init(&self, label: &str, contents: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        let mut padded = contents.to_vec();
        padded.resize(contents.len().div_ceil(4).max(1) * 4, 0);
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &padded,
            usage,
        })
    }

    /// A zeroed buffer of `size` bytes.
    pub fn buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.div_ceil(4).max(1) * 4,
            usage,
            mapped_at_creation: false,
        })
    }
}

//! Weights on the GPU as packed on disk, uploaded in bounded chunks.
//!
//! A matrix becomes one or more row chunks, each small enough for one storage
//! binding (lavapipe and many browsers allow 128 MiB; a 32B LM head is 1.5 GB).
//! Packed matrices keep 2 bits a weight: their bytes are re-encoded and their
//! rows interleaved in fours, scales alike (the GPU layout of `ternary`); no
//! dequantized copy exists. Dense matrices are copied byte for byte. Norm
//! weights and biases (small vectors) are converted to f32.

use std::future::Future;
use std::pin::Pin;

#[cfg(not(target_arch = "wasm32"))]
use crate::model::checkpoint::Checkpoint;
use crate::model::safetensors::to_f32;
use crate::model::{DType, Matrix, ModelError, Storage, Vector};
use crate::ternary::{self, GPU_ROWS_INTERLEAVED, TRITS_PER_BYTE};

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
    /// The largest |scale| of a packed matrix (0 for dense ones): the
    /// cooperative-matrix GEMM scales by a power of two that fits it to f16.
    pub largest_scale: f32,
}

/// What a [`Uploader::fill_packed`] copies, and what it checks or notes on the way.
enum Content<'d> {
    /// Packed trits: checked for bytes above 80, re-encoded for the kernels.
    Packed,
    /// Group scales of this dtype: their largest magnitude is noted.
    Scales(&'d DType),
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

/// Whether two matrices are stored alike (dtype; scale dtype and group size),
/// so that their rows can share one buffer.
pub fn same_format(a: &Storage, b: &Storage) -> bool {
    match (a, b) {
        (Storage::Dense { dtype: x }, Storage::Dense { dtype: y }) => x == y,
        (
            Storage::Packed { scale_dtype: x, group_size: gx, .. },
            Storage::Packed { scale_dtype: y, group_size: gy, .. },
        ) => x == y && gx == gy,
        _ => false,
    }
}

/// Whether `parts` can be uploaded as one matrix ([`Uploader::stacked`]): the
/// same width and format, and rows (and rows of scales) of whole 4-byte words,
/// so that every part starts on a word of the shared buffer.
pub fn can_stack(parts: &[&Matrix]) -> bool {
    let first = parts[0];
    let words = |bytes: u64| bytes.is_multiple_of(4);
    parts.iter().all(|m| m.cols == first.cols && same_format(&m.storage, &first.storage))
        && words(row_bytes(first))
        && scale_row_bytes(first).is_none_or(words)
}

/// The rows `from..to` of `parts` stacked in order, as runs within one part
/// each: (part, the run's first row in the stack and in the part, its rows).
fn stacked_runs<'m>(
    parts: &'m [&'m Matrix],
    from: usize,
    to: usize,
) -> impl Iterator<Item = (&'m Matrix, usize, usize, usize)> + 'm {
    let mut part_start = 0;
    parts.iter().filter_map(move |m| {
        let start = part_start;
        part_start += m.rows;
        let (lo, hi) = (from.max(start), to.min(start + m.rows));
        (lo < hi).then_some((*m, lo, lo - start, hi - lo))
    })
}

/// Bytes of one row of a packed matrix's scales.
fn scale_row_bytes(m: &Matrix) -> Option<u64> {
    match &m.storage {
        Storage::Packed { scale_dtype, group_size, .. } => {
            Some((m.cols / group_size * scale_dtype.size().expect("float")) as u64)
        }
        Storage::Dense { .. } => None,
    }
}

/// Rows `rows` of `m` occupy on the GPU: packed rows come in whole fours.
fn gpu_rows(m: &Matrix, rows: usize) -> usize {
    match &m.storage {
        Storage::Packed { .. } => rows.next_multiple_of(GPU_ROWS_INTERLEAVED),
        Storage::Dense { .. } => rows,
    }
}

/// Bytes one matrix occupies on the GPU (as stored, packed rows padded to
/// four).
pub fn matrix_bytes(m: &Matrix) -> u64 {
    gpu_rows(m, m.rows) as u64 * (row_bytes(m) + scale_row_bytes(m).unwrap_or(0))
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
    /// The largest |scale| met since the current matrix began.
    largest_scale: f32,
}

impl<'a> Uploader<'a> {
    pub fn new(
        ctx: &'a GpuContext,
        source: &'a dyn WeightSource,
        max_binding: u64,
        total: u64,
        progress: &'a mut dyn FnMut(u64, u64),
    ) -> Self {
        Uploader {
            ctx,
            source,
            max_binding,
            piece: Vec::new(),
            since_flush: 0,
            done: 0,
            total,
            progress,
            largest_scale: 0.0,
        }
    }

    /// An empty storage buffer of `len` bytes (padded to 16, so that kernels
    /// may view it as vectors of four words) for weights.
    async fn weight_buffer(&mut self, label: &str, len: u64) -> Result<wgpu::Buffer, GpuError> {
        let scope = self.ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: len.div_ceil(16).max(1) * 16,
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
        Ok(buffer)
    }

    /// Copies `len` bytes of dense tensor `name` from `offset` into `buffer`
    /// at byte `at` (a multiple of 4), as they are.
    async fn fill_dense(
        &mut self,
        buffer: &wgpu::Buffer,
        at: u64,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<(), GpuError> {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(UPLOAD_PIECE as u64) as usize;
            self.piece.resize(n.div_ceil(4) * 4, 0);
            self.piece[n..].fill(0);
            self.source.read(name, offset + done, &mut self.piece[..n]).await?;
            self.ctx.queue.write_buffer(buffer, at + done, &self.piece);
            done += n as u64;
            self.uploaded(n as u64).await?;
        }
        Ok(())
    }

    /// Copies rows `from..to` of the stacked packed `parts` into `buffer`,
    /// whose first row is `from`: their packed bytes, or with
    /// `Content::Scales` their scales, `per_row` bytes a row. Rows go in the
    /// GPU layout, interleaved in fours (`ternary::interleave_rows`), the
    /// last four padded with zeros; packed bytes are checked for bytes above
    /// 80 and re-encoded as the kernels read them (`ternary::to_gpu_codes`).
    async fn fill_packed(
        &mut self,
        buffer: &wgpu::Buffer,
        parts: &[&Matrix],
        (from, to): (usize, usize),
        per_row: usize,
        content: Content<'_>,
    ) -> Result<(), GpuError> {
        let unit = match content {
            Content::Scales(dtype) => dtype.size().expect("float"),
            _ => 4, // a packed word
        };
        let block_rows = (UPLOAD_PIECE / per_row).max(1).next_multiple_of(GPU_ROWS_INTERLEAVED);
        let end = from + (to - from).next_multiple_of(GPU_ROWS_INTERLEAVED);
        let mut rows = Vec::new(); // row-major, as read
        let mut block = from;
        while block < end {
            let block_end = (block + block_rows).min(end);
            rows.clear();
            rows.resize((block_end - block) * per_row, 0);
            for (m, at, in_part, n) in stacked_runs(parts, block, block_end.min(to)) {
                let out = &mut rows[(at - block) * per_row..(at - block + n) * per_row];
                self.read_packed(m, (in_part * per_row) as u64, out, &content).await?;
            }
            self.piece.resize(rows.len(), 0);
            ternary::interleave_rows(&rows, unit, per_row / unit, &mut self.piece);
            self.ctx.queue.write_buffer(buffer, ((block - from) * per_row) as u64, &self.piece);
            block = block_end;
        }
        // The padding rows count too, as matrix_bytes counts them.
        self.uploaded(((end - to) * per_row) as u64).await
    }

    /// Reads `out.len()` bytes from `offset` of packed matrix `m`'s packed
    /// bytes, or with `Content::Scales` of its scales: packed bytes checked
    /// and re-encoded for the GPU, the largest scale noted.
    async fn read_packed(
        &mut self,
        m: &Matrix,
        offset: u64,
        out: &mut [u8],
        content: &Content<'_>,
    ) -> Result<(), GpuError> {
        let name = match (content, &m.storage) {
            (Content::Scales(_), Storage::Packed { scales, .. }) => scales.as_str(),
            _ => m.name.as_str(),
        };
        let len = out.len();
        for done in (0..len).step_by(UPLOAD_PIECE) {
            let piece = &mut out[done..(done + UPLOAD_PIECE).min(len)];
            self.source.read(name, offset + done as u64, piece).await?;
            match content {
                Content::Scales(dtype) => {
                    let mut values = vec![0f32; piece.len() / dtype.size().expect("float")];
                    to_f32(dtype, piece, &mut values);
                    self.largest_scale = values.iter().fold(self.largest_scale, |m, v| m.max(v.abs()));
                }
                _ => {
                    ternary::check_packed(piece).map_err(|e| ModelError::InvalidPacked {
                        name: name.to_string(),
                        byte: ternary::InvalidByte { offset: offset as usize + done + e.offset, value: e.value },
                    })?;
                    ternary::to_gpu_codes(piece);
                }
            }
            self.uploaded(piece.len() as u64).await?;
        }
        Ok(())
    }

    /// Counts `n` more bytes read and queued: reports progress, and every
    /// FLUSH_EVERY bytes submits and waits, so that wgpu's staging memory
    /// stays bounded.
    async fn uploaded(&mut self, n: u64) -> Result<(), GpuError> {
        self.done += n;
        self.since_flush += n;
        if self.since_flush >= FLUSH_EVERY {
            self.ctx.queue.submit([]);
            self.ctx.idle().await?;
            self.since_flush = 0;
        }
        (self.progress)(self.done, self.total);
        Ok(())
    }

    /// Uploads a matrix, split by rows into binding-sized chunks.
    pub async fn matrix(&mut self, m: &Matrix) -> Result<GpuMatrix, GpuError> {
        self.stacked(&m.name, &[m]).await
    }

    /// Uploads `parts`, matrices of one format and width, as one matrix of all
    /// their rows in order (q, k and v as one projection), split by rows into
    /// binding-sized chunks (of whole fours of rows where packed).
    pub async fn stacked(&mut self, name: &str, parts: &[&Matrix]) -> Result<GpuMatrix, GpuError> {
        let first = parts[0];
        if parts.len() > 1 && !can_stack(parts) {
            return Err(GpuError::Limits(format!("{name}: its parts differ in width or format and cannot be stacked")));
        }
        let row = row_bytes(first);
        let rows_in_step = gpu_rows(first, 1); // a chunk holds whole fours of packed rows
        let rows_per_chunk = (self.max_binding / row) as usize / rows_in_step * rows_in_step;
        if rows_per_chunk == 0 {
            return Err(GpuError::Limits(format!(
                "{rows_in_step} row(s) of {} take {} bytes, more than the largest storage binding ({} bytes)",
                first.name,
                rows_in_step as u64 * row,
                self.max_binding
            )));
        }
        let scale_row = scale_row_bytes(first);
        let total_rows: usize = parts.iter().map(|m| m.rows).sum();
        self.largest_scale = 0.0;
        let mut chunks = Vec::new();
        let mut first_row = 0;
        while first_row < total_rows {
            let rows = rows_per_chunk.min(total_rows - first_row);
            let end = first_row + rows;
            let label = format!("{name} rows {first_row}..{end}");
            let gpu_rows = gpu_rows(first, rows) as u64;
            let weights = self.weight_buffer(&label, gpu_rows * row).await?;
            let scales = match (&first.storage, scale_row) {
                (Storage::Packed { scale_dtype, .. }, Some(per_row)) => {
                    let scales = self.weight_buffer(&format!("{label} scales"), gpu_rows * per_row).await?;
                    self.fill_packed(&weights, parts, (first_row, end), row as usize, Content::Packed).await?;
                    let content = Content::Scales(scale_dtype);
                    self.fill_packed(&scales, parts, (first_row, end), per_row as usize, content).await?;
                    Some(scales)
                }
                _ => {
                    // Each part's rows that fall in this chunk, as they are.
                    for (m, at, in_part, n) in stacked_runs(parts, first_row, end) {
                        let (in_chunk, in_part, n) = ((at - first_row) as u64, in_part as u64, n as u64);
                        self.fill_dense(&weights, in_chunk * row, &m.name, in_part * row, n * row).await?;
                    }
                    None
                }
            };
            chunks.push(MatrixChunk { first_row, rows, weights, scales });
            first_row = end;
        }
        Ok(GpuMatrix {
            name: name.to_string(),
            rows: total_rows,
            cols: first.cols,
            storage: first.storage.clone(),
            chunks,
            largest_scale: self.largest_scale,
        })
    }

    /// Uploads `parts` one after another as one f32 vector, each part either a
    /// stored vector or, where absent, that many zeros (stacked q/k/v biases).
    pub async fn stacked_vector(
        &mut self,
        label: &str,
        parts: &[(Option<&Vector>, usize)],
    ) -> Result<wgpu::Buffer, GpuError> {
        let mut values = Vec::new();
        for (v, len) in parts {
            match v {
                Some(v) => values.extend(self.vector_values(v).await?),
                None => values.extend(std::iter::repeat_n(0f32, *len)),
            }
        }
        Ok(self.ctx.buffer_init(label, bytemuck::cast_slice(&values), wgpu::BufferUsages::STORAGE))
    }

    /// A norm weight or bias, converted to f32 on the host.
    async fn vector_values(&mut self, v: &Vector) -> Result<Vec<f32>, GpuError> {
        let mut raw = vec![0u8; v.len * v.dtype.size().expect("float")];
        self.source.read(&v.name, 0, &mut raw).await?;
        let mut values = vec![0f32; v.len];
        to_f32(&v.dtype, &raw, &mut values);
        self.done += raw.len() as u64;
        (self.progress)(self.done, self.total);
        Ok(values)
    }

    /// Uploads a norm weight or bias, converted to f32.
    pub async fn vector(&mut self, v: &Vector) -> Result<wgpu::Buffer, GpuError> {
        let values = self.vector_values(v).await?;
        Ok(self.ctx.buffer_init(&v.name, bytemuck::cast_slice(&values), wgpu::BufferUsages::STORAGE))
    }
}

impl GpuContext {
    /// A buffer created with `contents` (padded to 4 bytes). Written through
    /// the queue rather than mapped at creation: where the device has lost
    /// its memory or itself, the buffer is invalid, and mapping it would
    /// panic, where a write only records the error the next wait reports.
    pub fn buffer_init(&self, label: &str, contents: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let mut padded = contents.to_vec();
        padded.resize(contents.len().div_ceil(4).max(1) * 4, 0);
        let buffer = self.buffer(label, padded.len() as u64, usage | wgpu::BufferUsages::COPY_DST);
        self.queue.write_buffer(&buffer, 0, &padded);
        buffer
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

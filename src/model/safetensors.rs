//! The safetensors container: an 8-byte little-endian header length, a JSON header
//! `{name: {dtype, shape, data_offsets: [start, end]}, "__metadata__": {...}}`, then
//! the tensor bytes. Parsing needs only the header bytes, so the same code serves a
//! memory-mapped file and a browser `File` read in slices; writing streams tensor
//! by tensor so a model never has to sit in memory.

use half::{bf16, f16};
use std::collections::BTreeMap;
use std::io::Write;

/// Element types Tritium reads; anything else is kept by name so the error that
/// refuses it can say what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    U8,
    Other(String),
}

impl DType {
    fn parse(name: &str) -> DType {
        match name {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "U8" => DType::U8,
            other => DType::Other(other.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::U8 => "U8",
            DType::Other(name) => name,
        }
    }

    /// Bytes per element, or `None` for a type Tritium does not know.
    pub fn size(&self) -> Option<usize> {
        Some(match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
            DType::Other(name) => match name.as_str() {
                "F64" | "I64" | "U64" => 8,
                "I32" | "U32" => 4,
                "I16" | "U16" => 2,
                "I8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
                _ => return None,
            },
        })
    }

    /// A floating-point type usable for dense weights, norms, biases and scales.
    pub fn is_float(&self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a safetensors file: where its bytes are, relative to the file start.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Absolute byte offset of the first element in the file.
    pub offset: u64,
    pub len: u64,
}

/// Largest header accepted; real headers are well under a megabyte.
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Reads the header length from the first 8 bytes and checks it fits the file.
pub fn header_len(prefix: &[u8], file_len: u64) -> Result<u64, String> {
    if prefix.len() < 8 || file_len < 8 {
        return Err(format!("file is {file_len} bytes: too short to be safetensors (truncated?)"));
    }
    let n = u64::from_le_bytes(prefix[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES || 8 + n > file_len {
        return Err(format!(
            "header claims {n} bytes but the file has {file_len}: truncated or not a safetensors file"
        ));
    }
    Ok(n)
}

#[derive(serde::Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// Parses and validates the JSON header: every tensor's byte range must match its
/// shape and dtype, lie inside the file and not overlap another tensor.
pub fn parse_header(header: &[u8], file_len: u64) -> Result<Vec<TensorEntry>, String> {
    let data_start = 8 + header.len() as u64;
    let data_len = file_len - data_start;
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("header is not valid JSON: {e}"))?;
    let mut entries = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        if name == "__metadata__" {
            continue;
        }
        let entry: RawEntry =
            serde_json::from_value(value).map_err(|e| format!("header entry for tensor {name} is malformed: {e}"))?;
        let dtype = DType::parse(&entry.dtype);
        let [start, end] = entry.data_offsets;
        if start > end || end > data_len {
            return Err(format!(
                "tensor {name}: data_offsets [{start}, {end}] lie outside the {data_len} data bytes of the file (truncated or corrupt)"
            ));
        }
        let elements = entry.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        let expected = match (elements, dtype.size()) {
            (Some(n), Some(size)) => n.checked_mul(size as u64),
            (_, None) => Some(end - start), // unknown dtype: refused later by name if used
            (None, _) => None,
        };
        if expected != Some(end - start) {
            return Err(format!(
                "tensor {name}: shape {:?} of {} needs {} bytes but data_offsets span {}",
                entry.shape,
                entry.dtype,
                expected.map_or("too many".to_string(), |n| n.to_string()),
                end - start
            ));
        }
        entries.push(TensorEntry { name, dtype, shape: entry.shape, offset: data_start + start, len: end - start });
    }
    let mut by_offset: Vec<&TensorEntry> = entries.iter().filter(|e| e.len > 0).collect();
    by_offset.sort_by_key(|e| e.offset);
    for pair in by_offset.windows(2) {
        if pair[1].offset < pair[0].offset + pair[0].len {
            return Err(format!("tensors {} and {} overlap in the file (corrupt header)", pair[0].name, pair[1].name));
        }
    }
    Ok(entries)
}

/// A tensor to be written: name, dtype, shape. The bytes follow in the same order.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl PlannedTensor {
    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<usize>) -> Self {
        PlannedTensor { name: name.into(), dtype, shape }
    }

    pub fn byte_len(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * self.dtype.size().expect("writable dtype") as u64
    }
}

/// Writes a safetensors file whose tensors are all known up front and whose bytes
/// then arrive one tensor at a time, in plan order, through [`StreamingWriter::write`].
pub struct StreamingWriter<W: Write> {
    out: W,
    remaining: std::collections::VecDeque<(String, u64)>,
    current_left: u64,
}

impl<W: Write> StreamingWriter<W> {
    pub fn new(mut out: W, plan: &[PlannedTensor], metadata: &BTreeMap<String, String>) -> std::io::Result<Self> {
        let mut header = serde_json::Map::new();
        if !metadata.is_empty() {
            header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
        }
        let mut offset = 0u64;
        for t in plan {
            let end = offset + t.byte_len();
            header.insert(
                t.name.clone(),
                serde_json::json!({"dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        let mut json = serde_json::to_vec(&serde_json::Value::Object(header))?;
        // Pad with spaces so the data starts 8-byte aligned, as other writers do.
        while (8 + json.len()) % 8 != 0 {
            json.push(b' ');
        }
        out.write_all(&(json.len() as u64).to_le_bytes())?;
        out.write_all(&json)?;
        let remaining = plan.iter().map(|t| (t.name.clone(), t.byte_len())).collect();
        Ok(StreamingWriter { out, remaining, current_left: 0 })
    }

    /// Appends bytes of the current tensor; a tensor may arrive in several pieces.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut bytes = bytes;
        while !bytes.is_empty() {
            if self.current_left == 0 {
                let (_, len) = self.remaining.pop_front().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "more bytes than the planned tensors hold")
                })?;
                self.current_left = len;
                continue;
            }
            let take = (self.current_left as usize).min(bytes.len());
            self.out.write_all(&bytes[..take])?;
            self.current_left -= take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// Checks every planned byte was written and flushes.
    pub fn finish(mut self) -> std::io::Result<W> {
        let missing: u64 = self.current_left + self.remaining.iter().map(|(_, len)| len).sum::<u64>();
        if missing != 0 {
            let name = self.remaining.front().map_or("the last tensor", |(n, _)| n.as_str()).to_string();
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{missing} planned bytes were never written (at {name})"),
            ));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Converts little-endian F32/F16/BF16 bytes to f32.
pub fn to_f32(dtype: &DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        other => unreachable!("to_f32 on {other}: layout validation admits only float types here"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(plan: &[PlannedTensor], data: &[u8]) -> Vec<u8> {
        let mut w = StreamingWriter::new(Vec::new(), plan, &BTreeMap::new()).unwrap();
        w.write(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn written_files_parse_back() {
        let plan = [PlannedTensor::new("a", DType::F32, vec![2, 3]), PlannedTensor::new("b", DType::U8, vec![5])];
        let data: Vec<u8> = (0..29).collect();
        let file = write_file(&plan, &data);
        let n = header_len(&file, file.len() as u64).unwrap();
        assert_eq!((8 + n) % 8, 0);
        let entries = parse_header(&file[8..8 + n as usize], file.len() as u64).unwrap();
        let b = entries.iter().find(|e| e.name == "b").unwrap();
        assert_eq!(&file[b.offset as usize..(b.offset + b.len) as usize], &data[24..]);
    }

    #[test]
    fn lies_and_truncation_are_refused() {
        let plan = [PlannedTensor::new("a", DType::F32, vec![4])];
        let file = write_file(&plan, &[0u8; 16]);
        let n = header_len(&file, file.len() as u64).unwrap() as usize;
        // Truncated data: the tensor's range no longer fits.
        let err = parse_header(&file[8..8 + n], file.len() as u64 - 4).unwrap_err();
        assert!(err.contains("tensor a: data_offsets"), "{err}");
        // Truncated inside the header.
        assert!(header_len(&file, 10).unwrap_err().contains("truncated"));
        // A shape that disagrees with the byte range.
        let lying = br#"{"a":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}"#;
        let err = parse_header(lying, 8 + lying.len() as u64 + 16).unwrap_err();
        assert!(err.contains("needs 20 bytes"), "{err}");
        let overlap = br#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}}"#;
        let err = parse_header(overlap, 8 + overlap.len() as u64 + 12).unwrap_err();
        assert!(err.contains("overlap"), "{err}");
    }
}

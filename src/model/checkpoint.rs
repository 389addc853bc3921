//! A model folder on disk: `config.json` plus a single `model.safetensors` or the
//! shards listed in `model.safetensors.index.json`, memory-mapped. Opening reads
//! only the headers; tensor bytes are touched when asked for.

use memmap2::Mmap;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::catalog::{parse_index, Catalog};
pub use super::catalog::{TensorRef, CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
use super::config::Config;
use super::safetensors::{self, PlannedTensor, StreamingWriter, TensorEntry};
use super::ModelError;

/// One opened safetensors file.
struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// An opened model folder.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: Config,
    shards: Vec<Shard>,
    catalog: Catalog,
}

impl Checkpoint {
    /// Opens `dir`, reads `config.json` and every safetensors header.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::NotAModelFolder(format!(
                "{} is not a folder; pass the folder holding config.json and model.safetensors",
                dir.display()
            )));
        }
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.exists() {
            return Err(ModelError::NotAModelFolder(format!("{} has no {CONFIG_FILE}", dir.display())));
        }
        let config = Config::from_file(&config_path)?;
        let (files, weight_map) = shard_files(dir)?;
        let mut shards = Vec::new();
        let mut headers = Vec::new();
        for file in &files {
            let path = dir.join(file);
            let (map, entries) = open_shard(&path)?;
            headers.push(entries);
            shards.push(Shard { path, map });
        }
        let location = format!("the checkpoint in {}", dir.display());
        let catalog = Catalog::new(config.clone(), files, &weight_map, headers, location)?;
        Ok(Checkpoint { dir: dir.to_path_buf(), config, shards, catalog })
    }

    pub fn get(&self, name: &str) -> Option<&TensorRef> {
        self.catalog.get(name)
    }

    /// All tensors, sorted by name.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorRef> {
        self.catalog.tensors()
    }

    /// The tensors and their files, as the layout sees them.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Names of the files holding the weights.
    pub fn shard_paths(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    /// The raw little-endian bytes of a tensor, straight from the mapped file.
    pub fn bytes(&self, tensor: &TensorRef) -> &[u8] {
        let start = tensor.entry.offset as usize;
        &self.shards[tensor.shard].map[start..start + tensor.entry.len as usize]
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.catalog.tensors().map(|t| t.entry.len).sum()
    }
}

/// The safetensors files of a folder, and the index's tensor → file map if sharded.
fn shard_files(dir: &Path) -> Result<(Vec<String>, BTreeMap<String, String>), ModelError> {
    let index_path = dir.join(INDEX_FILE);
    if index_path.exists() {
        let text = std::fs::read_to_string(&index_path).map_err(|e| ModelError::io(&index_path, e))?;
        return parse_index(&text);
    }
    if dir.join(SINGLE_FILE).exists() {
        return Ok((vec![SINGLE_FILE.to_string()], BTreeMap::new()));
    }
    Err(ModelError::NotAModelFolder(format!("{} has neither {SINGLE_FILE} nor {INDEX_FILE}", dir.display())))
}

fn open_shard(path: &Path) -> Result<(Mmap, Vec<TensorEntry>), ModelError> {
    let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the map is read-only; a model file changed underneath a running
    // process is outside what any loader can defend against.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    let bad = |msg: String| ModelError::Safetensors { file: path.to_path_buf(), msg };
    let file_len = map.len() as u64;
    let n = safetensors::header_len(&map, file_len).map_err(bad)?;
    let entries = safetensors::parse_header(&map[8..8 + n as usize], file_len).map_err(bad)?;
    Ok((map, entries))
}

/// The Hugging Face name of shard `i` (from 0) of `n`.
fn shard_file_name(i: usize, n: usize) -> String {
    format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
}

/// Groups items, in order, into shards of at most `max_bytes` (an item larger than
/// that gets a shard of its own).
fn split_into_shards<T>(items: &[T], bytes: impl Fn(&T) -> u64, max_bytes: u64) -> Vec<Vec<&T>> {
    let mut shards: Vec<Vec<&T>> = vec![Vec::new()];
    let mut size = 0u64;
    for item in items {
        let current = shards.last_mut().expect("never empty");
        if !current.is_empty() && size + bytes(item) > max_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().expect("never empty").push(item);
        size += bytes(item);
    }
    shards
}

/// The writer one shard's bytes are streamed into.
pub type ShardWriter = StreamingWriter<BufWriter<File>>;

/// Writes `items` into `dir` as shards `model-0000i-of-0000N.safetensors` of at
/// most `max_shard_bytes` each, plus `model.safetensors.index.json`. An item's
/// tensors (`outputs`) stay in one shard; `write` streams their bytes in order.
pub fn write_shards<T, E: From<std::io::Error>>(
    dir: &Path,
    items: &[T],
    outputs: impl Fn(&T) -> Vec<PlannedTensor>,
    max_shard_bytes: u64,
    mut write: impl FnMut(&T, &mut ShardWriter) -> Result<(), E>,
) -> Result<(), E> {
    let bytes = |item: &T| outputs(item).iter().map(PlannedTensor::byte_len).sum::<u64>();
    let shards = split_into_shards(items, bytes, max_shard_bytes);
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let file_name = shard_file_name(i, shards.len());
        let plan: Vec<PlannedTensor> = shard.iter().flat_map(|item| outputs(item)).collect();
        for t in &plan {
            weight_map.insert(t.name.clone(), file_name.clone());
        }
        let file = File::create(dir.join(&file_name))?;
        let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let mut writer = StreamingWriter::new(BufWriter::with_capacity(1 << 20, file), &plan, &metadata)?;
        for item in shard {
            write(item, &mut writer)?;
        }
        writer.finish()?;
    }
    let total_size: u64 = items.iter().map(bytes).sum();
    let index = serde_json::json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
    std::fs::write(dir.join(INDEX_FILE), serde_json::to_string_pretty(&index).map_err(std::io::Error::from)?)?;
    Ok(())
}

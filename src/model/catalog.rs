//! Which tensor is in which safetensors file, wherever the files live (a
//! folder on disk, files picked in a browser, a folder served over HTTP): the
//! index's tensor → file map, checked against every file's header.

use std::collections::BTreeMap;

use super::config::Config;
use super::layout::Inventory;
use super::safetensors::{DType, TensorEntry};
use super::ModelError;

pub const CONFIG_FILE: &str = "config.json";
pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A tensor and the file (index into [`Catalog::files`]) holding it.
#[derive(Debug, Clone)]
pub struct TensorRef {
    pub entry: TensorEntry,
    pub shard: usize,
}

impl TensorRef {
    pub fn name(&self) -> &str {
        &self.entry.name
    }
    pub fn dtype(&self) -> &DType {
        &self.entry.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.entry.shape
    }
}

#[derive(serde::Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

/// The files an index names (sorted, each once) and its tensor → file map.
pub fn parse_index(text: &str) -> Result<(Vec<String>, BTreeMap<String, String>), ModelError> {
    let index: Index = serde_json::from_str(text)
        .map_err(|e| ModelError::Checkpoint(format!("{INDEX_FILE}: not a valid index: {e}")))?;
    let mut files: Vec<String> = index.weight_map.values().cloned().collect();
    files.sort();
    files.dedup();
    for file in &files {
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(ModelError::Checkpoint(format!("{INDEX_FILE} names a file outside the folder: {file}")));
        }
    }
    Ok((files, index.weight_map))
}

/// The config and every tensor of a checkpoint.
pub struct Catalog {
    pub config: Config,
    /// The safetensors files, in the order of [`TensorRef::shard`].
    pub files: Vec<String>,
    tensors: BTreeMap<String, TensorRef>,
    /// Where the checkpoint is, for messages.
    location: String,
}

impl Catalog {
    /// `headers[i]` holds the entries of `files[i]`; `weight_map` is the index's
    /// map (empty for a single file). Fails on a tensor in two files or a map that
    /// disagrees with the headers.
    pub fn new(
        config: Config,
        files: Vec<String>,
        weight_map: &BTreeMap<String, String>,
        headers: Vec<Vec<TensorEntry>>,
        location: String,
    ) -> Result<Self, ModelError> {
        let mut tensors: BTreeMap<String, TensorRef> = BTreeMap::new();
        for (shard, entries) in headers.into_iter().enumerate() {
            for entry in entries {
                if let Some(previous) = tensors.get(&entry.name) {
                    return Err(ModelError::Checkpoint(format!(
                        "tensor {} appears in both {} and {}",
                        entry.name, files[previous.shard], files[shard]
                    )));
                }
                tensors.insert(entry.name.clone(), TensorRef { entry, shard });
            }
        }
        for (name, file) in weight_map {
            match tensors.get(name) {
                None => {
                    return Err(ModelError::MissingTensor {
                        name: name.clone(),
                        context: format!("{INDEX_FILE} lists it in {file}, which does not contain it"),
                    })
                }
                Some(t) if files[t.shard] != *file => {
                    return Err(ModelError::Checkpoint(format!(
                        "{INDEX_FILE} puts {name} in {file} but it is in {}",
                        files[t.shard]
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(Catalog { config, files, tensors, location })
    }

    pub fn get(&self, name: &str) -> Option<&TensorRef> {
        self.tensors.get(name)
    }

    /// All tensors, sorted by name.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorRef> {
        self.tensors.values()
    }
}

impl Inventory for Catalog {
    fn config(&self) -> &Config {
        &self.config
    }
    fn tensor(&self, name: &str) -> Option<(&DType, &[usize])> {
        self.get(name).map(|t| (t.dtype(), t.shape()))
    }
    fn location(&self) -> String {
        self.location.clone()
    }
}

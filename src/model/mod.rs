//! Loading a model folder: `config.json`, the safetensors container, and which
//! tensor plays which part (dense or packed ternary), all checked before any compute.

pub mod catalog;
#[cfg(not(target_arch = "wasm32"))]
pub mod checkpoint;
pub mod config;
pub mod layout;
pub mod safetensors;
#[cfg(not(target_arch = "wasm32"))]
pub mod tensors;

#[cfg(not(target_arch = "wasm32"))]
pub use checkpoint::Checkpoint;
pub use config::Config;
pub use layout::{Layout, Linear, Matrix, Storage, Vector};
pub use safetensors::DType;

use std::path::{Path, PathBuf};

/// Everything that can be wrong with a model folder.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    // The causes below are fields of other names than `source`, so that a
    // printed error chain (`{:#}`) does not repeat them after the message.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{0}")]
    NotAModelFolder(String),
    #[error("config.json: {0}")]
    Config(String),
    #[error("{file}: {msg}")]
    Safetensors { file: PathBuf, msg: String },
    #[error("{0}")]
    Checkpoint(String),
    #[error("missing tensor {name}: {context}")]
    MissingTensor { name: String, context: String },
    #[error("tensor {name} has shape {got:?}, expected {expected}")]
    Shape { name: String, expected: String, got: Vec<usize> },
    #[error("tensor {name} has dtype {got}, expected {expected}")]
    Dtype { name: String, expected: String, got: DType },
    #[error("tensor {name}: {byte}")]
    InvalidPacked { name: String, byte: crate::ternary::InvalidByte },
}

impl ModelError {
    pub fn io(path: &Path, error: std::io::Error) -> Self {
        ModelError::Io { path: path.to_path_buf(), error }
    }
}

/// An opened and validated model: the files, and the role of every tensor.
#[cfg(not(target_arch = "wasm32"))]
pub struct Model {
    pub checkpoint: Checkpoint,
    pub layout: Layout,
}

#[cfg(not(target_arch = "wasm32"))]
impl Model {
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let checkpoint = Checkpoint::open(dir)?;
        let layout = Layout::from_checkpoint(&checkpoint)?;
        Ok(Model { checkpoint, layout })
    }

    pub fn config(&self) -> &Config {
        &self.checkpoint.config
    }
}

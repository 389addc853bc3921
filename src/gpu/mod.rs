//! The GPU side: device and limits, WGSL kernels, and weights uploaded packed
//! as on disk (in the GPU layout of `ternary`). Nothing here knows the Qwen2
//! layer order; `engine` does.

pub mod context;
pub mod kernels;
pub mod roof;
pub mod weights;

pub use context::{ActBits, AdapterChoice, DeviceOptions, GemmPath, GemvPath, GpuCaps, GpuContext};

/// Everything that can go wrong on the GPU side.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("{0}")]
    NoAdapter(String),
    #[error("GPU: {0}")]
    Device(String),
    #[error("shader {name}: {msg}")]
    Shader { name: String, msg: String },
    #[error("{0}")]
    Limits(String),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
}

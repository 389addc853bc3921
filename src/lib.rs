//! Tritium: ternary (BitNet b1.58) Qwen2 / Qwen2.5 models on any GPU through WebGPU.
//!
//! The pieces, in the order a newcomer should read them:
//! - [`ternary`]: the base-3 packed weight format, in one place;
//! - [`model`]: `config.json`, safetensors files, which tensor is which;
//! - [`reference`]: the plain f32 CPU forward pass every other path is checked against;
//! - [`gpu`] and [`engine`]: the same forward pass as WGSL kernels on wgpu;
//! - [`backend`]: scoring and generation over either of them;
//! - [`sampling`]: choosing the next token;
//! - [`chat`]: a conversation over the chat template, with the KV cache kept between turns;
//! - [`quantize`] and [`synth`]: writing packed checkpoints.

pub mod backend;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod chat;
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod engine;
pub mod gpu;
#[cfg(not(target_arch = "wasm32"))]
pub mod gui;
pub mod model;
pub mod npy;
#[cfg(not(target_arch = "wasm32"))]
pub mod quantize;
#[cfg(not(target_arch = "wasm32"))]
pub mod reference;
pub mod rng;
pub mod sampling;
#[cfg(not(target_arch = "wasm32"))]
pub mod synth;
pub mod ternary;
pub mod tokenizer;

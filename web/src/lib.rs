//! Tritium in the browser. `worker.js` loads this module in a Web Worker and
//! drives a [`Session`]: open a model (picked files or a URL), then chat or
//! generate from ids, with tokens streamed to a JavaScript callback.
//!
//! The engine, kernels and formats are the native ones; only where bytes come
//! from ([`source`]) and the waiting ([`generate`]) differ.

mod generate;
mod source;

use std::collections::BTreeMap;

use serde::Deserialize;
use wasm_bindgen::prelude::*;

use tritium::backend::StopReason;
use tritium::chat::CachedTokens;
use tritium::engine::{Engine, EngineOptions};
use tritium::gpu::{DeviceOptions, GpuContext};
use tritium::model::Layout;
use tritium::sampling::{Sampler, SamplingParams};
use tritium::tokenizer::{ChatMessage, TextStream, Tokenizer};

use source::{Folder, WebCheckpoint};

fn error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// A model on the GPU, its tokenizer, and what its KV cache holds.
#[wasm_bindgen]
pub struct Session {
    engine: Engine,
    tokenizer: Option<Tokenizer>,
    stop_ids: Vec<u32>,
    adapter: String,
    /// Tokens whose keys and values are in the cache, to reuse between turns.
    cached: CachedTokens,
}

/// Sampling settings and limits of one reply, as the page sends them.
#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    ids: Option<Vec<u32>>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    prompt: Option<String>,
    max_tokens: usize,
    temperature: f32,
    #[serde(default = "one")]
    top_p: f32,
    #[serde(default)]
    top_k: usize,
    #[serde(default)]
    seed: u64,
}

fn one() -> f32 {
    1.0
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

async fn open(folder: Folder, ctx: Option<usize>, progress: &js_sys::Function) -> Result<Session, JsError> {
    let checkpoint = WebCheckpoint::open(folder).await.map_err(error)?;
    let layout = Layout::from_inventory(&checkpoint.catalog).map_err(error)?;
    let tokenizer = match checkpoint.folder.read_optional("tokenizer.json").await.map_err(error)? {
        Some(json) => {
            let config = checkpoint.folder.read_optional("tokenizer_config.json").await.map_err(error)?;
            Some(Tokenizer::from_bytes(&json, config.as_deref()).map_err(error)?)
        }
        None => None,
    };
    let gpu = GpuContext::new(&DeviceOptions::default()).await.map_err(error)?;
    let config = &checkpoint.catalog.config;
    let options = EngineOptions { ctx, ..Default::default() };
    let mut report = |done: u64, total: u64| {
        let _ = progress.call2(&JsValue::NULL, &JsValue::from_f64(done as f64), &JsValue::from_f64(total as f64));
    };
    let engine = Engine::load(&gpu, config, &layout, &checkpoint, &options, &mut report)
        .await
        .map_err(|e| error(format!("could not load the model onto {}: {e}", gpu.describe())))?;
    let mut stop_ids = config.eos_ids();
    if let Some(t) = &tokenizer {
        stop_ids.extend_from_slice(t.stop_ids());
    }
    Ok(Session { engine, tokenizer, stop_ids, adapter: gpu.describe(), cached: CachedTokens::default() })
}

#[wasm_bindgen]
impl Session {
    /// Opens a model folder served at `url` (read with HTTP Range requests).
    /// `progress(done, total)` is called as weight bytes reach the GPU.
    pub async fn from_url(url: String, ctx: Option<usize>, progress: js_sys::Function) -> Result<Session, JsError> {
        open(Folder::Url(url), ctx, &progress).await
    }

    /// Opens a model from picked files (a folder's `config.json`, safetensors and tokenizer files).
    pub async fn from_files(
        files: Vec<web_sys::File>,
        ctx: Option<usize>,
        progress: js_sys::Function,
    ) -> Result<Session, JsError> {
        let by_name: BTreeMap<String, web_sys::File> = files.into_iter().map(|f| (f.name(), f)).collect();
        open(Folder::Files(by_name), ctx, &progress).await
    }

    /// Adapter name, backend and features.
    pub fn adapter(&self) -> String {
        self.adapter.clone()
    }

    pub fn context_len(&self) -> usize {
        self.engine.memory_plan().ctx
    }

    pub fn has_tokenizer(&self) -> bool {
        self.tokenizer.is_some()
    }

    /// Runs one request (JSON: `ids`, `prompt` or chat `messages`, plus
    /// `max_tokens`, `temperature`, `top_p`, `top_k`, `seed`). Calls
    /// `on_token(id, text)` per token; returning `false` stops. Resolves to
    /// `{ids, text, reason, prompt_tokens, context_used}`.
    pub async fn generate(&mut self, request: String, on_token: js_sys::Function) -> Result<JsValue, JsError> {
        let request: Request = serde_json::from_str(&request).map_err(|e| error(format!("bad request: {e}")))?;
        let ids = self.prompt_ids(&request)?;
        let ctx = self.context_len();
        if ids.is_empty() {
            return Err(error("the prompt is empty"));
        }
        if ids.len() >= ctx {
            return Err(error(format!(
                "the prompt ({} tokens) does not fit the context of {ctx} tokens; shorten it or start a new chat",
                ids.len()
            )));
        }
        let params = SamplingParams {
            temperature: request.temperature,
            top_p: request.top_p,
            top_k: request.top_k,
            seed: request.seed,
            ..Default::default()
        };
        params.validate().map_err(error)?;
        let reuse = self.cached.reuse(&ids);
        let budget = request.max_tokens.min(ctx - ids.len());
        let mut sampler = Sampler::new(params);
        let mut stream = self.tokenizer.as_ref().map(TextStream::new);
        let (generated, reason) = generate::generate(
            &mut self.engine,
            &ids[reuse..],
            reuse,
            budget,
            &self.stop_ids,
            &mut sampler,
            &mut |id| {
                let piece = stream.as_mut().and_then(|s| s.push(id)).unwrap_or_default();
                let go_on = on_token.call2(&JsValue::NULL, &JsValue::from(id), &JsValue::from(piece));
                go_on.map(|v| v.as_bool() != Some(false)).unwrap_or(false)
            },
        )
        .await
        .map_err(error)?;
        self.cached.record(&ids, &generated);
        let text = stream.map(|s| s.text().trim_end().to_string()).unwrap_or_default();
        let reason = match reason {
            StopReason::MaxTokens => "max_tokens",
            StopReason::EndOfText => "end_of_text",
            StopReason::Stopped => "stopped",
        };
        let result = serde_json::json!({
            "ids": generated, "text": text, "reason": reason, "prompt_tokens": ids.len() - reuse,
            "context_used": self.cached.len(),
        });
        js_sys::JSON::parse(&result.to_string()).map_err(|_| error("internal: result JSON"))
    }
}

impl Session {
    fn prompt_ids(&self, request: &Request) -> Result<Vec<u32>, JsError> {
        if let Some(ids) = &request.ids {
            return Ok(ids.clone());
        }
        let tokenizer = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| error("this model folder has no tokenizer.json: give token ids instead of text"))?;
        let text = match (&request.messages, &request.prompt) {
            (Some(messages), _) => {
                let messages: Vec<ChatMessage> =
                    messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect();
                tokenizer.render_chat(&messages, true).map_err(error)?
            }
            (None, Some(prompt)) => prompt.clone(),
            (None, None) => return Err(error("the request has neither ids, a prompt nor messages")),
        };
        tokenizer.encode(&text).map_err(error)
    }
}

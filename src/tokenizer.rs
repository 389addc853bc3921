//! Text in and out: `tokenizer.json` through the `tokenizers` crate, and the chat
//! template from `tokenizer_config.json` rendered with minijinja the way Hugging
//! Face renders it (with a built-in Qwen2.5 ChatML template when none is given).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {msg}")]
    Load { path: String, msg: String },
    #[error("tokenizing failed: {0}")]
    Encode(String),
    #[error("chat template: {0}")]
    Template(String),
}

/// Qwen2.5's ChatML layout, used when `tokenizer_config.json` has no template.
pub const CHATML_TEMPLATE: &str = "{%- if messages[0]['role'] == 'system' %}\
{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\
{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\
{%- endif %}\
{%- for message in messages %}{%- if not (message['role'] == 'system' and loop.first) %}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\
{%- endif %}{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// Tokens that end a reply in every Qwen2 chat model.
const STOP_TOKENS: &[&str] = &["<|im_end|>", "<|endoftext|>"];

#[derive(Deserialize, Default)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<serde_json::Value>,
    #[serde(default)]
    eos_token: Option<serde_json::Value>,
    #[serde(default)]
    bos_token: Option<serde_json::Value>,
}

/// A token's text in `tokenizer_config.json`: a string or `{"content": ...}`.
fn token_text(v: &Option<serde_json::Value>) -> Option<String> {
    match v.as_ref()? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: String,
    eos_token: Option<String>,
    bos_token: Option<String>,
    /// Ids that end generation: `<|im_end|>`, `<|endoftext|>` and the eos token.
    stop_ids: Vec<u32>,
}

impl Tokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json` if present) from a
    /// model folder; `Ok(None)` when the folder has no tokenizer.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, TokenizerError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Ok(None);
        }
        let load_err = |p: &Path, msg: String| TokenizerError::Load { path: p.display().to_string(), msg };
        let json = std::fs::read(&path).map_err(|e| load_err(&path, e.to_string()))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = match std::fs::read(&config_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(load_err(&config_path, e.to_string())),
        };
        Self::from_bytes(&json, config.as_deref()).map(Some).map_err(|e| match e {
            TokenizerError::Load { msg, .. } => load_err(dir, msg),
            other => other,
        })
    }

    /// Builds a tokenizer from the bytes of `tokenizer.json` and `tokenizer_config.json`.
    pub fn from_bytes(tokenizer_json: &[u8], config_json: Option<&[u8]>) -> Result<Self, TokenizerError> {
        let bad = |msg: String| TokenizerError::Load { path: "tokenizer".into(), msg };
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| bad(format!("tokenizer.json is not a valid tokenizer: {e}")))?;
        let config: TokenizerConfig = match config_json {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| bad(format!("tokenizer_config.json is not valid JSON: {e}")))?,
            None => TokenizerConfig::default(),
        };
        // A template is a string, or a list of named templates (take "default").
        let chat_template = match &config.chat_template {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .unwrap_or(CHATML_TEMPLATE)
                .to_string(),
            _ => CHATML_TEMPLATE.to_string(),
        };
        let eos_token = token_text(&config.eos_token);
        let mut stop_ids: Vec<u32> =
            STOP_TOKENS.iter().copied().chain(eos_token.as_deref()).filter_map(|t| inner.token_to_id(t)).collect();
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Tokenizer { inner, chat_template, eos_token, bos_token: token_text(&config.bos_token), stop_ids })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self.inner.encode(text, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }

    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Renders a conversation with the chat template, ending with the assistant's
    /// turn opened when `add_generation_prompt`.
    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, TokenizerError> {
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        // Python string methods (`.strip()`, `.startswith()`) that HF templates use.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", &self.chat_template).map_err(|e| TokenizerError::Template(e.to_string()))?;
        let template = env.get_template("chat").map_err(|e| TokenizerError::Template(e.to_string()))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                eos_token => self.eos_token,
                bos_token => self.bos_token,
            })
            .map_err(|e| TokenizerError::Template(e.to_string()))
    }
}

/// Turns a stream of token ids into text pieces as they become printable: a
/// piece is released once it no longer ends in an incomplete UTF-8 sequence.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    printed: usize,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        TextStream { tokenizer, ids: Vec::new(), printed: 0 }
    }

    /// Adds a token; returns the new text it completes, if any.
    pub fn push(&mut self, id: u32) -> Option<String> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids);
        if text.ends_with('\u{FFFD}') || text.len() <= self.printed {
            return None;
        }
        let piece = text.get(self.printed..)?.to_string();
        self.printed = text.len();
        Some(piece)
    }

    /// The text not released yet (an incomplete UTF-8 sequence at the end,
    /// decoded as U+FFFD), once no more tokens will come.
    pub fn finish(&mut self) -> Option<String> {
        let text = self.tokenizer.decode(&self.ids);
        let rest = text.get(self.printed..).filter(|rest| !rest.is_empty())?.to_string();
        self.printed = text.len();
        Some(rest)
    }

    /// The whole text so far.
    pub fn text(&self) -> String {
        self.tokenizer.decode(&self.ids)
    }
}

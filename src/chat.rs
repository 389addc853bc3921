//! One conversation with a chat model: render the messages with the chat
//! template, run only what the KV cache does not hold yet, stream the reply.
//! The terminal `chat`, the desktop window and the browser demo all use it.

use web_time::Instant;

use crate::backend::{self, Backend, RunError, StopReason};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{ChatMessage, TextStream, Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(
        "the conversation ({tokens} tokens) no longer fits the context of {ctx} tokens; start a new chat \
         (or load the model with a larger context)"
    )]
    ContextFull { tokens: usize, ctx: usize },
}

/// A finished reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The reply's text, without the end-of-turn token and trailing whitespace.
    pub text: String,
    /// Every generated id, the end-of-turn token included when one ended the reply.
    pub ids: Vec<u32>,
    pub reason: StopReason,
    /// Prompt tokens that had to run (those not already in the KV cache).
    pub prompt_tokens: usize,
    /// Seconds from the start to the first generated token.
    pub prompt_s: f64,
    /// Seconds from the first generated token to the last.
    pub gen_s: f64,
}

impl Reply {
    /// Generation speed: the first token comes out of the prompt pass, the others each took a step.
    pub fn tokens_per_s(&self) -> f64 {
        let steps = self.ids.len().saturating_sub(1);
        if self.gen_s > 0.0 {
            steps as f64 / self.gen_s
        } else {
            0.0
        }
    }
}

/// What a reply needs besides the messages.
#[derive(Debug, Clone)]
pub struct ReplyOptions {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Greedy tokens per GPU round trip ([`backend::GREEDY_CHUNK`]; 1 for the quickest Stop).
    pub greedy_chunk: usize,
}

/// The tokens in the backend's KV cache, so each turn runs only what is new.
pub struct ChatSession {
    tokenizer: Tokenizer,
    stop_ids: Vec<u32>,
    cached: Vec<u32>,
}

impl ChatSession {
    /// `eos_ids` are the model's own end tokens; the tokenizer adds its end-of-turn tokens.
    pub fn new(tokenizer: Tokenizer, eos_ids: Vec<u32>) -> Self {
        let mut stop_ids = eos_ids;
        stop_ids.extend_from_slice(tokenizer.stop_ids());
        ChatSession { tokenizer, stop_ids, cached: Vec::new() }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Positions of the KV cache in use after the last reply.
    pub fn context_used(&self) -> usize {
        self.cached.len()
    }

    /// Forgets what the cache holds (e.g. after the backend was replaced).
    pub fn reset(&mut self) {
        self.cached.clear();
    }

    /// Generates the assistant's reply to `messages`, calling `on_text` after each
    /// token with the text it completed (often empty); returning `false` stops the reply.
    pub fn reply(
        &mut self,
        backend: &mut dyn Backend,
        messages: &[ChatMessage],
        options: &ReplyOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Reply, ChatError> {
        let ids = self.tokenizer.encode(&self.tokenizer.render_chat(messages, true)?)?;
        let ctx = backend.context_len();
        if ids.len() + 1 >= ctx {
            return Err(ChatError::ContextFull { tokens: ids.len(), ctx });
        }
        // Reuse the cache for the prefix this rendering shares with what ran before;
        // at least the last prompt token runs, to give the first reply token.
        let reuse = self.cached.iter().zip(&ids).take_while(|(a, b)| a == b).count().min(ids.len() - 1);
        // The cache is rewritten from `reuse` on: forget it now in case this reply fails.
        self.cached.truncate(reuse);
        let budget = options.max_tokens.min(ctx - ids.len());
        let mut sampler = Sampler::new(options.sampling.clone());
        let mut stream = TextStream::new(&self.tokenizer);
        let started = Instant::now();
        let mut first = None;
        let (reply, reason) = backend::generate(
            backend,
            &ids[reuse..],
            reuse,
            budget,
            &self.stop_ids,
            &mut sampler,
            options.greedy_chunk,
            &mut |id| {
                first.get_or_insert_with(Instant::now);
                on_text(&stream.push(id).unwrap_or_default())
            },
        )?;
        let first = first.unwrap_or_else(Instant::now);
        // The cache now holds the prompt and every reply token but the last.
        self.cached = ids.clone();
        self.cached.extend_from_slice(&reply[..reply.len().saturating_sub(1)]);
        Ok(Reply {
            text: stream.text().trim_end().to_string(),
            ids: reply,
            reason,
            prompt_tokens: ids.len() - reuse,
            prompt_s: (first - started).as_secs_f64(),
            gen_s: first.elapsed().as_secs_f64(),
        })
    }
}

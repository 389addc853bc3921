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
    /// The most tokens per GPU round trip ([`backend::DECODE_CHUNK`]; 1 for one a round trip).
    pub decode_chunk: usize,
}

/// The tokens whose keys and values a backend's KV cache holds, so a new prompt
/// runs only from where it departs from them. The chat session here and the
/// browser's session both keep one.
#[derive(Debug, Default)]
pub struct CachedTokens(Vec<u32>);

impl CachedTokens {
    /// How many leading tokens of `prompt` the cache already holds: never all of
    /// them, since the last prompt token must run to give the next token. The cache
    /// is rewritten from there on, so the rest is forgotten now (in case the run fails).
    pub fn reuse(&mut self, prompt: &[u32]) -> usize {
        let shared = self.0.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        let reuse = shared.min(prompt.len().saturating_sub(1));
        self.0.truncate(reuse);
        reuse
    }

    /// After a run: the cache holds the prompt and every generated token but the
    /// last (which was sampled, never fed back).
    pub fn record(&mut self, prompt: &[u32], generated: &[u32]) {
        self.0 = prompt.to_vec();
        self.0.extend_from_slice(&generated[..generated.len().saturating_sub(1)]);
    }

    /// Positions of the cache in use.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A conversation's tokenizer, stop tokens and KV-cache contents, so each turn
/// runs only what is new.
pub struct ChatSession {
    tokenizer: Tokenizer,
    stop_ids: Vec<u32>,
    cached: CachedTokens,
}

impl ChatSession {
    /// `eos_ids` are the model's own end tokens; the tokenizer adds its end-of-turn tokens.
    pub fn new(tokenizer: Tokenizer, eos_ids: Vec<u32>) -> Self {
        let mut stop_ids = eos_ids;
        stop_ids.extend_from_slice(tokenizer.stop_ids());
        ChatSession { tokenizer, stop_ids, cached: CachedTokens::default() }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Positions of the KV cache in use after the last reply.
    pub fn context_used(&self) -> usize {
        self.cached.len()
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
        let reuse = self.cached.reuse(&ids);
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
            options.decode_chunk,
            &mut |id| {
                first.get_or_insert_with(Instant::now);
                on_text(&stream.push(id).unwrap_or_default())
            },
        )?;
        let first = first.unwrap_or_else(Instant::now);
        self.cached.record(&ids, &reply);
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

//! `chat`: a conversation in the terminal using the model's chat template.
//!
//! The KV cache is kept between turns ([`crate::chat::ChatSession`]): only the
//! tokens after the part already in the cache run.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use super::run::{with_backend, RunnerArgs, Timing};
use crate::backend;
use crate::chat::{ChatError, ChatSession, ReplyOptions};
use crate::model::Model;
use crate::sampling::{SamplingParams, DEFAULT_TOP_K};
use crate::tokenizer::{ChatMessage, Tokenizer};

#[derive(Args, Debug)]
#[command(after_help = "Type a message and press Enter. Commands: /reset starts over, /exit quits.
Ctrl-C stops a reply; Ctrl-C at the prompt (or Ctrl-D) quits.")]
pub struct ChatArgs {
    /// Model folder with tokenizer.json (and tokenizer_config.json for its chat template).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub runner: RunnerArgs,
    /// System message (default: the chat template's own).
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens per reply.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// 0 always picks the most likely token (greedy); higher values sample more freely.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Sample only among the most likely tokens whose probabilities add up to p.
    #[arg(long, default_value_t = 0.8)]
    pub top_p: f32,
    /// Sample only among the k most likely tokens (0 = all; 1 to 64 are drawn on the GPU, others on the host).
    #[arg(long, default_value_t = DEFAULT_TOP_K)]
    pub top_k: usize,
    /// Seed for sampling: the same seed gives the same replies.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let model = Model::open(&args.model).with_context(|| format!("loading the model in {}", args.model.display()))?;
    let tokenizer = Tokenizer::from_dir(&args.model)?.with_context(|| {
        format!(
            "chat needs tokenizer.json in {}: copy tokenizer.json and tokenizer_config.json there from the \
                 model it was made from (quantize copies them), or use `tritium generate --ids` without one",
            args.model.display()
        )
    })?;
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        ..Default::default()
    };
    params.validate().map_err(anyhow::Error::msg)?;

    // Ctrl-C during a reply stops it; at the prompt it quits.
    let interrupted = Arc::new(AtomicBool::new(false));
    let replying = Arc::new(AtomicBool::new(false));
    {
        let (interrupted, replying) = (interrupted.clone(), replying.clone());
        ctrlc::set_handler(move || {
            if replying.load(Ordering::SeqCst) {
                interrupted.store(true, Ordering::SeqCst);
            } else {
                std::process::exit(0);
            }
        })
        .context("installing the Ctrl-C handler")?;
    }

    let options = ReplyOptions { sampling: params, max_tokens: args.max_tokens, decode_chunk: backend::DECODE_CHUNK };
    let mut session = ChatSession::new(tokenizer, model.config().eos_ids());
    with_backend(&model, &args.runner, args.runner.ctx, |engine| {
        let system: Vec<ChatMessage> = args.system.iter().map(|s| ChatMessage::new("system", s)).collect();
        let mut messages = system.clone();
        let stdin = std::io::stdin();
        eprintln!(
            "Chatting with {} (context {} tokens). /reset starts over, /exit quits.",
            args.model.display(),
            engine.context_len()
        );
        loop {
            eprint!("\n> ");
            let mut line = String::new();
            if stdin.lock().read_line(&mut line)? == 0 {
                return Ok(());
            }
            match line.trim() {
                "" => continue,
                "/exit" | "/quit" => return Ok(()),
                "/reset" => {
                    messages = system.clone();
                    eprintln!("(conversation cleared)");
                    continue;
                }
                _ => {}
            }
            messages.push(ChatMessage::new("user", line.trim_end_matches(['\n', '\r'])));
            let mut out = std::io::stdout();
            interrupted.store(false, Ordering::SeqCst);
            replying.store(true, Ordering::SeqCst);
            let result = session.reply(engine, &messages, &options, &mut |piece| {
                let _ = write!(out, "{piece}");
                let _ = out.flush();
                !interrupted.load(Ordering::SeqCst)
            });
            replying.store(false, Ordering::SeqCst);
            let reply = match result {
                Err(e @ ChatError::ContextFull { .. }) => {
                    eprintln!("({e})");
                    messages.pop();
                    continue;
                }
                other => other?,
            };
            println!();
            let timing = Timing {
                load_s: None,
                prompt_tokens: reply.prompt_tokens,
                prompt_s: reply.prompt_s,
                gen_s: reply.gen_s,
            };
            let note = reply.reason.note();
            eprintln!("[{}{note}]", timing.summary(reply.ids.len()));
            messages.push(ChatMessage::new("assistant", &reply.text));
        }
    })
}

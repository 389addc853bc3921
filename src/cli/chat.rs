//! `chat`: a conversation in the terminal using the model's chat template.
//!
//! The KV cache is kept between turns: each turn renders the whole conversation,
//! and only the tokens after the part already in the cache are run.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::run::{with_backend, RunnerArgs, Timing};
use crate::backend::{self, StopReason};
use crate::model::Model;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{ChatMessage, TextStream, Tokenizer};

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
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0.8)]
    pub top_p: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let model = Model::open(&args.model).with_context(|| format!("loading the model in {}", args.model.display()))?;
    let tokenizer = Tokenizer::from_dir(&args.model)?
        .with_context(|| format!("chat needs tokenizer.json in {}", args.model.display()))?;
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        ..Default::default()
    };
    params.validate().map_err(anyhow::Error::msg)?;
    let mut stop_ids = model.config().eos_ids();
    stop_ids.extend_from_slice(tokenizer.stop_ids());

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

    with_backend(&model, &args.runner, args.runner.ctx, |engine| {
        let system: Vec<ChatMessage> = args.system.iter().map(|s| ChatMessage::new("system", s)).collect();
        let mut messages = system.clone();
        let mut cached: Vec<u32> = Vec::new(); // tokens whose keys and values are in the cache
        let mut sampler = Sampler::new(params.clone());
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
                    cached.clear();
                    eprintln!("(conversation cleared)");
                    continue;
                }
                _ => {}
            }
            messages.push(ChatMessage::new("user", line.trim_end_matches(['\n', '\r'])));
            let ids = tokenizer.encode(&tokenizer.render_chat(&messages, true)?)?;
            if ids.len() + 1 >= engine.context_len() {
                eprintln!(
                    "(the conversation no longer fits the context of {} tokens; /reset to start over)",
                    engine.context_len()
                );
                messages.pop();
                continue;
            }
            // Reuse the cache for the prefix this rendering shares with what ran before.
            let reuse = cached.iter().zip(&ids).take_while(|(a, b)| a == b).count().min(ids.len() - 1);
            let budget = args.max_tokens.min(engine.context_len() - ids.len());
            let mut stream = TextStream::new(&tokenizer);
            let mut out = std::io::stdout();
            interrupted.store(false, Ordering::SeqCst);
            replying.store(true, Ordering::SeqCst);
            let started = Instant::now();
            let mut first = None;
            let result = backend::generate(engine, &ids[reuse..], reuse, budget, &stop_ids, &mut sampler, &mut |id| {
                first.get_or_insert_with(Instant::now);
                if let Some(piece) = stream.push(id) {
                    let _ = write!(out, "{piece}");
                    let _ = out.flush();
                }
                !interrupted.load(Ordering::SeqCst)
            });
            replying.store(false, Ordering::SeqCst);
            let (reply, reason) = result?;
            println!();
            let first = first.unwrap_or_else(Instant::now);
            let timing = Timing {
                load_s: None,
                prompt_tokens: ids.len() - reuse,
                prompt_s: (first - started).as_secs_f64(),
                gen_s: first.elapsed().as_secs_f64(),
            };
            let note = match reason {
                StopReason::Stopped => " (stopped)",
                StopReason::MaxTokens => " (max tokens)",
                StopReason::EndOfText => "",
            };
            eprintln!("[{}{note}]", timing.summary(reply.len()));
            // The cache now holds the prompt and every reply token but the last.
            cached = ids.clone();
            cached.extend_from_slice(&reply[..reply.len().saturating_sub(1)]);
            let text: String = stream.text();
            messages.push(ChatMessage::new("assistant", text.trim_end()));
        }
    })
}

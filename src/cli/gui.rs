//! `gui`: the desktop chat window's command-line options.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::run::DeviceArgs;
use crate::gui::{transcript::Settings, GuiOptions};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  tritium gui --model DIR                 # open a model folder (config.json, safetensors, tokenizer.json)
  tritium gui                             # open one from the window, or drop a folder on it
  tritium gui --model DIR --temperature 0 --save-transcript chat.json

In the window: Enter sends, Shift+Enter starts a new line, Ctrl+Q quits.")]
pub struct GuiArgs {
    /// Model folder to load at start.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Context length in tokens (default: max_position_embeddings, capped so the KV cache stays under 4 GiB).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// System prompt (default: the chat template's own).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub system: String,
    /// Temperature at start: 0 always picks the most likely token (every setting can be changed in the window).
    #[arg(long, default_value_t = Settings::default().temperature)]
    pub temperature: f32,
    /// Sample only among the most likely tokens whose probabilities add up to p.
    #[arg(long, default_value_t = Settings::default().top_p)]
    pub top_p: f32,
    /// Sample only among the k most likely tokens (0 = all; 1 to 64 are drawn on the GPU, others on the host).
    #[arg(long, default_value_t = Settings::default().top_k)]
    pub top_k: usize,
    /// Most tokens per reply.
    #[arg(long, default_value_t = Settings::default().max_tokens)]
    pub max_tokens: usize,
    /// Seed for sampling: the same seed gives the same reply.
    #[arg(long, default_value_t = Settings::default().seed)]
    pub seed: u64,
    /// Write the conversation to this JSON file after every reply and when the window closes.
    #[arg(long)]
    pub save_transcript: Option<PathBuf>,
}

pub fn run(args: GuiArgs) -> Result<()> {
    let settings = Settings {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_tokens: args.max_tokens,
        seed: args.seed,
    };
    settings.sampling().validate().map_err(anyhow::Error::msg)?;
    if settings.max_tokens == 0 {
        anyhow::bail!("--max-tokens must be at least 1");
    }
    crate::gui::run(GuiOptions {
        model: args.model,
        device: args.device.options(),
        ctx: args.ctx,
        system: args.system,
        settings,
        save_transcript: args.save_transcript,
    })
}

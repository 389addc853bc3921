//! The `tritium` command line: one module per group of subcommands. The front end
//! only parses arguments and prints; the work lives in the library.

mod adapters;
mod bench;
mod chat;
mod gui;
mod inspect;
mod progress;
mod run;
mod serve_web;
mod write;

use clap::{Parser, Subcommand};

const ABOUT: &str = "Run ternary (BitNet b1.58) Qwen2 / Qwen2.5 models.

Models are Hugging Face folders (config.json + safetensors). Linear weights are
base-3 packed ternary: U8 [out, in/4] with per-64 group scales in <name>.scales.

Examples:
  tritium bench                                          # GPU speed on a synthetic 0.5B model
  tritium synth --shape tiny --output /tmp/tiny          # a random packed model
  tritium inspect --model /tmp/tiny                       # what is in it
  tritium generate --model /tmp/tiny --ids 1,2,3 --max-tokens 8
  tritium generate --model DIR --prompt \"Write a haiku\" --chat  # text in, text out
  tritium chat --model DIR                                # a conversation
  tritium gui --model DIR                                 # the same in a window
  tritium serve-web --model DIR                           # the browser demo on 127.0.0.1:8080
  tritium quantize --input Qwen2.5-0.5B --output q05b     # dense -> packed";

#[derive(Parser, Debug)]
#[command(name = "tritium", version, about = ABOUT, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a model's format, config, tensors and sizes.
    Inspect(inspect::InspectArgs),
    /// Turn a dense F32/F16/BF16 Qwen2 checkpoint into the packed ternary format.
    Quantize(write::QuantizeArgs),
    /// Write a random packed model of a Qwen2.5 shape (for benchmarks and tests).
    Synth(write::SynthArgs),
    /// Write the logits of every position of a token sequence to a .npy file.
    Score(run::ScoreArgs),
    /// Generate text or token ids after a prompt (text with --prompt, ids with --ids).
    Generate(run::GenerateArgs),
    /// Measure prompt and generation speed on the GPU (synthetic Qwen2.5-0.5B by default).
    Bench(bench::BenchArgs),
    /// Talk with a chat model in the terminal.
    Chat(chat::ChatArgs),
    /// Open the desktop chat window.
    Gui(gui::GuiArgs),
    /// Serve the browser demo (and a model folder) on 127.0.0.1.
    ServeWeb(serve_web::ServeWebArgs),
    /// List the GPU adapters with their backend, limits and features.
    Adapters,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Quantize(args) => write::quantize(args),
        Command::Synth(args) => write::synth(args),
        Command::Score(args) => run::score(args),
        Command::Generate(args) => run::generate(args),
        Command::Bench(args) => bench::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Gui(args) => gui::run(args),
        Command::ServeWeb(args) => serve_web::run(args),
        Command::Adapters => adapters::run(),
    }
}

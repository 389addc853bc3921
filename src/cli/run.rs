//! `score` and `generate`: running a model on token ids.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use super::progress::bytes_bar;
use crate::backend;
use crate::engine::ops::KvDtype;
use crate::engine::{Engine, EngineOptions};
use crate::gpu::{ActBits, AdapterChoice, DeviceOptions, GemmPath, GemvPath, GpuContext};
use crate::model::Model;
use crate::reference::Reference;
use crate::sampling::{Sampler, SamplingParams, DEFAULT_TOP_K};
use crate::tokenizer::{ChatMessage, TextStream, Tokenizer};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    /// The GPU through wgpu (Vulkan, Metal, DX12 or GL).
    Gpu,
    /// The plain f32 CPU reference (slow; the specification the GPU is checked against).
    Cpu,
}

/// Arguments shared by `score` and `generate`.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Model folder (config.json + model.safetensors or shards with an index).
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt as comma-separated token ids, e.g. 151644,872,198.
    #[arg(long, value_parser = parse_ids, allow_hyphen_values = true, conflicts_with = "prompt", required_unless_present = "prompt")]
    pub ids: Option<std::vec::Vec<u32>>,
    /// Prompt as text (needs tokenizer.json in the model folder).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Wrap --prompt as a user message in the model's chat template.
    #[arg(long, requires = "prompt")]
    pub chat: bool,
    /// System message for --chat (default: the template's own).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

/// Where and how a model runs: shared by `score`, `generate` and `chat`.
#[derive(Args, Debug)]
pub struct RunnerArgs {
    /// Where to run the model.
    #[arg(long, value_enum, default_value_t = Backend::Gpu)]
    pub backend: Backend,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Context length in tokens (default: max_position_embeddings, capped so the KV cache stays under 4 GiB).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Prompt tokens per batched prefill step on the GPU (default 512, fewer
    /// when one step's activations would not fit a storage binding).
    #[arg(long)]
    pub ubatch: Option<usize>,
    #[command(flatten)]
    pub kv_cache: KvCacheArgs,
}

/// How the GPU's KV cache stores keys and values: shared by `bench` and the
/// commands that run a model.
#[derive(Args, Debug)]
pub struct KvCacheArgs {
    /// What the GPU's KV cache stores keys and values as: f32 keeps them as
    /// computed (the default, as the CPU reference); f16 rounds them to half
    /// precision (logits move by up to about 6e-4 of the largest), which halves the
    /// cache's memory (a 32B model's 8,192 positions: 2.1 GB instead of 4.3)
    /// and doubles the default context (a 4 GiB cache). Decode speed stays
    /// about the same (H200, 32B after 8,192 prompt tokens: 99.8 -> 100.7
    /// tokens/s). Attention computes in f32 either way.
    #[arg(long = "kv-cache", value_enum, default_value_t = KvCacheArg::F32)]
    pub dtype: KvCacheArg,
}

/// `--kv-cache` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvCacheArg {
    F32,
    F16,
}

impl KvCacheArgs {
    pub fn dtype(&self) -> KvDtype {
        match self.dtype {
            KvCacheArg::F32 => KvDtype::F32,
            KvCacheArg::F16 => KvDtype::F16,
        }
    }
}

/// Which GPU and which kernel path: shared by every command that uses the GPU.
#[derive(Args, Debug)]
pub struct DeviceArgs {
    /// GPU adapter: an index or part of a name from `tritium adapters` (default: the high-performance one).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Use kernels that need no optional GPU feature, even where available.
    #[arg(long, conflicts_with = "subgroups")]
    pub portable: bool,
    /// Reduce with subgroup operations where the GPU has them (default: through
    /// workgroup memory, which measured faster on an NVIDIA H100; try both on yours
    /// with `tritium bench`).
    #[arg(long)]
    pub subgroups: bool,
    /// The decode step's product of packed weights: `fixed` turns each input into
    /// 24-bit block fixed point and multiplies with integer dot products (as
    /// exact as f32, and faster); `float` multiplies in f32; `auto` picks fixed
    /// where the GPU's shader language has integer dot products, else float.
    #[arg(long, value_enum, default_value_t = GemvArg::Auto)]
    pub gemv: GemvArg,
    /// Bits of each decode GEMV input value: 24 rounds as finely as f32 (the
    /// default); 16 and 8 are reduced precision for speed (on an H100 a 32B
    /// model decodes 6 % and 9 % faster; 8 bits are the int8 activations
    /// BitNet b1.58 was trained with, here in blocks of 16 values). Uses the
    /// fixed-point GEMV (--gemv fixed).
    #[arg(long, value_enum, default_value_t = ActBitsArg::Bits24)]
    pub act_bits: ActBitsArg,
    /// The prefill step's product of packed weights: `coop` multiplies on the
    /// GPU's cooperative-matrix units (tensor cores), each input and weight
    /// split into two f16 halves (about twice as fast on an H100; results within
    /// 1e-4 of the largest output, where f32 would round finer); `float`
    /// multiplies in f32; `auto` picks coop where the GPU has f16 16x16x16
    /// cooperative matrices with f32 accumulation (`tritium adapters` shows it).
    /// `coop-f16` rounds inputs and weights to f16 instead of splitting them, one
    /// product where coop takes three: reduced precision for speed (on an H200 a
    /// 32B prompt of 512 tokens fills 1.4 times as fast; the test models' logits
    /// stay within 7.4e-4 of their largest).
    #[arg(long, value_enum, default_value_t = GemmArg::Auto)]
    pub gemm: GemmArg,
}

/// `--gemm` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmArg {
    Auto,
    Coop,
    CoopF16,
    Float,
}

/// `--act-bits` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActBitsArg {
    #[value(name = "24")]
    Bits24,
    #[value(name = "16")]
    Bits16,
    #[value(name = "8")]
    Bits8,
}

/// `--gemv` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemvArg {
    Auto,
    Fixed,
    Float,
}

#[derive(Args, Debug)]
#[command(after_help = "Example: tritium score --model DIR --ids 1,2,3 --out logits.npy
The .npy holds f32 logits of shape [n_ids, vocab]: row i scores the token after ids[..=i].")]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output .npy file.
    #[arg(long)]
    pub out: PathBuf,
}

/// How `generate` and `bench` pick each generated token: greedy unless --temperature.
#[derive(Args, Debug)]
pub struct SamplingArgs {
    /// 0 picks the most likely token every step (greedy); higher values sample more freely.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens (default 40, as chat and
    /// llama.cpp; 0 = all). With 1 to 64 (and no --repeat-penalty) the GPU draws
    /// each token itself; otherwise every token's logits come back to the host
    /// to be drawn from, which is slower.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to p.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
}

impl SamplingArgs {
    /// --top-k, or the default.
    pub fn top_k(&self) -> usize {
        self.top_k.unwrap_or(DEFAULT_TOP_K)
    }
}

#[derive(Args, Debug)]
#[command(after_help = "Example: tritium generate --model DIR --ids 1,2,3 --max-tokens 16 --temperature 0 --print-ids
Generation stops after --max-tokens or at the model's eos_token_id (which is then printed too).")]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Drop tokens less likely than min-p times the most likely one.
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalize tokens already seen (1 = off; 1.1 is a common choice). Applied on
    /// the host: every token's logits come back from the GPU, which is slower.
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Seed for sampling: the same seed gives the same tokens.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the generated ids, comma-separated, as the last line of stdout (always
    /// done for --ids prompts; --prompt prints text).
    #[arg(long)]
    pub print_ids: bool,
}

/// Parses `1,2,3` into token ids.
pub fn parse_ids(text: &str) -> Result<Vec<u32>, String> {
    let ids: Vec<u32> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>().map_err(|_| format!("{s:?} is not a token id (expected non-negative integers like 1,2,3)"))
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err("no token ids given; pass them comma-separated, e.g. --ids 1,2,3".into());
    }
    Ok(ids)
}

/// The prompt's token ids: given directly, or the tokenized (chat-wrapped) text.
fn prompt_ids(args: &ModelArgs, tokenizer: Option<&Tokenizer>) -> Result<Vec<u32>> {
    if let Some(ids) = &args.ids {
        return Ok(ids.clone());
    }
    let text = args.prompt.as_deref().expect("clap requires --ids or --prompt");
    let tokenizer = tokenizer.with_context(|| {
        format!(
            "--prompt needs tokenizer.json in {}; pass --ids instead or add the tokenizer files",
            args.model.display()
        )
    })?;
    let text = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", text));
        tokenizer.render_chat(&messages, true)?
    } else {
        text.to_string()
    };
    let ids = tokenizer.encode(&text)?;
    if ids.is_empty() {
        bail!("the prompt is empty after tokenizing");
    }
    Ok(ids)
}

/// Opens the model and checks the ids and the context before any compute.
fn open(args: &ModelArgs, ids: &[u32], positions: usize) -> Result<(Model, usize)> {
    let model = Model::open(&args.model).with_context(|| format!("loading the model in {}", args.model.display()))?;
    let c = model.config();
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
        bail!("token id {bad} is out of range: the vocabulary has {} tokens (ids 0..{})", c.vocab_size, c.vocab_size);
    }
    let ctx = match args.runner.ctx {
        Some(0) => bail!("--ctx must be positive"),
        Some(ctx) if ctx > c.max_position_embeddings => {
            bail!("--ctx {ctx} is larger than the model's max_position_embeddings ({})", c.max_position_embeddings)
        }
        Some(ctx) => ctx,
        None => c.max_position_embeddings,
    };
    if positions > ctx {
        bail!(
            "the prompt ({} tokens) and the generation need {positions} positions but the context holds {ctx}; shorten them or raise --ctx (at most max_position_embeddings = {})",
            ids.len(),
            c.max_position_embeddings
        );
    }
    Ok((model, ctx))
}

impl DeviceArgs {
    /// The device request these arguments describe.
    pub fn options(&self) -> DeviceOptions {
        let adapter = self.adapter.as_deref().map(AdapterChoice::parse).unwrap_or_default();
        let gemv = match self.gemv {
            GemvArg::Auto => GemvPath::Auto,
            GemvArg::Fixed => GemvPath::Fixed,
            GemvArg::Float => GemvPath::Float,
        };
        let gemm = match self.gemm {
            GemmArg::Auto => GemmPath::Auto,
            GemmArg::Coop => GemmPath::Coop,
            GemmArg::CoopF16 => GemmPath::CoopF16,
            GemmArg::Float => GemmPath::Float,
        };
        let act_bits = match self.act_bits {
            ActBitsArg::Bits24 => ActBits::Bits24,
            ActBitsArg::Bits16 => ActBits::Bits16,
            ActBitsArg::Bits8 => ActBits::Bits8,
        };
        DeviceOptions { adapter, portable: self.portable, subgroups: self.subgroups, gemv, gemm, act_bits }
    }
}

/// Opens the GPU device the arguments ask for.
pub fn open_gpu(args: &DeviceArgs) -> Result<GpuContext> {
    Ok(pollster::block_on(GpuContext::new(&args.options()))?)
}

/// Runs `body` on `backend` with a KV cache of `ctx` positions (default: the most that fits).
pub fn with_backend<T>(
    model: &Model,
    runner: &RunnerArgs,
    ctx: Option<usize>,
    body: impl FnOnce(&mut dyn backend::Backend) -> Result<T>,
) -> Result<T> {
    match runner.backend {
        Backend::Cpu => {
            let ctx = ctx.unwrap_or(model.config().max_position_embeddings);
            let mut reference = Reference::new(model, ctx)?;
            body(&mut reference)
        }
        Backend::Gpu => {
            let gpu = open_gpu(&runner.device)?;
            let started = Instant::now();
            let (bar, mut progress) = bytes_bar("loading");
            let options =
                EngineOptions { ctx, ubatch: runner.ubatch, kv_dtype: runner.kv_cache.dtype(), ..Default::default() };
            let mut engine = pollster::block_on(Engine::load(
                &gpu,
                model.config(),
                &model.layout,
                &model.checkpoint,
                &options,
                &mut progress,
            ))
            .with_context(|| format!("loading the model onto {}", gpu.describe()))?;
            bar.finish_and_clear();
            eprintln!(
                "loaded {} onto {} in {:.2} s ({:.1} MB on the GPU, context {}, {} KV cache)",
                model.checkpoint.dir.display(),
                gpu.describe(),
                started.elapsed().as_secs_f64(),
                engine.memory_plan().total() as f64 / 1e6,
                engine.memory_plan().ctx,
                engine.memory_plan().kv_dtype.name()
            );
            body(&mut engine)
        }
    }
}

pub fn score(args: ScoreArgs) -> Result<()> {
    let a = &args.model;
    let tokenizer = Tokenizer::from_dir(&a.model)?;
    let ids = prompt_ids(a, tokenizer.as_ref())?;
    let (model, ctx) = open(a, &ids, ids.len())?;
    let ctx = if a.runner.ctx.is_some() { ctx } else { ids.len() };
    let logits = with_backend(&model, &a.runner, Some(ctx), |backend| Ok(backend::score(backend, &ids)?))?;
    let vocab = logits.len() / ids.len();
    let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut out = BufWriter::new(file);
    crate::npy::write_f32(&mut out, &[ids.len(), vocab], &logits)?;
    out.flush()?;
    eprintln!("wrote logits [{}, {vocab}] to {}", ids.len(), args.out.display());
    Ok(())
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    let params = SamplingParams {
        temperature: args.sampling.temperature,
        top_k: args.sampling.top_k(),
        top_p: args.sampling.top_p,
        min_p: args.min_p,
        repetition_penalty: args.repeat_penalty,
        seed: args.seed,
    };
    params.validate().map_err(anyhow::Error::msg)?;
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let loading = Instant::now();
    let a = &args.model;
    let tokenizer = Tokenizer::from_dir(&a.model)?;
    let prompt = prompt_ids(a, tokenizer.as_ref())?;
    let (model, ctx) = open(a, &prompt, prompt.len() + args.max_tokens)?;
    // Size the cache for what this run needs, within the context checked above.
    let ctx = if a.runner.ctx.is_some() { ctx } else { prompt.len() + args.max_tokens };
    let mut stop_ids = model.config().eos_ids();
    if let Some(t) = &tokenizer {
        stop_ids.extend_from_slice(t.stop_ids());
    }
    // Text prompts stream text; id prompts print ids.
    let mut stream = tokenizer.as_ref().filter(|_| a.prompt.is_some()).map(TextStream::new);
    let mut stdout = std::io::stdout();
    let (generated, stats) = with_backend(&model, &a.runner, Some(ctx), |backend| {
        let mut sampler = Sampler::new(params);
        let started = Instant::now();
        let mut first_token_at = None;
        let (ids, _) = backend::generate(
            backend,
            &prompt,
            0,
            args.max_tokens,
            &stop_ids,
            &mut sampler,
            backend::DECODE_CHUNK,
            &mut |id| {
                first_token_at.get_or_insert_with(Instant::now);
                if let Some(piece) = stream.as_mut().and_then(|s| s.push(id)) {
                    let _ = write!(stdout, "{piece}");
                    let _ = stdout.flush();
                }
                true
            },
        )?;
        let first = first_token_at.unwrap_or_else(Instant::now);
        Ok((
            ids,
            Timing {
                load_s: Some((started - loading).as_secs_f64()),
                prompt_tokens: prompt.len(),
                prompt_s: (first - started).as_secs_f64(),
                gen_s: first.elapsed().as_secs_f64(),
            },
        ))
    })?;
    if let Some(stream) = &mut stream {
        println!("{}", stream.finish().unwrap_or_default());
    }
    eprintln!("{}", stats.summary(generated.len()));
    if stream.is_none() || args.print_ids {
        let line: Vec<String> = generated.iter().map(u32::to_string).collect();
        println!("{}", line.join(","));
    }
    Ok(())
}

/// Prompt and generation timings, summarized as llama.cpp does.
pub struct Timing {
    /// Opening the model and uploading it, when this run did.
    pub load_s: Option<f64>,
    pub prompt_tokens: usize,
    pub prompt_s: f64,
    /// From the first generated token to the last.
    pub gen_s: f64,
}

impl Timing {
    pub fn summary(&self, generated: usize) -> String {
        let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        // The first token comes out of the prompt pass; the others each took a step.
        let steps = generated.saturating_sub(1);
        let load = self.load_s.map(|s| format!("load: {s:.2} s | ")).unwrap_or_default();
        format!(
            "{load}prompt: {} tokens in {:.3} s ({:.1} tokens/s) | generated: {generated} tokens, {:.1} tokens/s",
            self.prompt_tokens,
            self.prompt_s,
            rate(self.prompt_tokens, self.prompt_s),
            rate(steps, self.gen_s)
        )
    }
}

//! `bench`: prompt-processing and generation speed on the GPU, like llama-bench.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::inspect::human;
use super::progress::bytes_bar;
use super::run::{open_gpu, DeviceArgs, KvCacheArgs, SamplingArgs};
use crate::bench::{mean_std, run_once};
use crate::engine::{Engine, EngineOptions, KernelTime};
use crate::gpu::roof::measure_read_bandwidth;
use crate::gpu::weights::WeightSource;
use crate::model::{Config, Layout, Model};
use crate::sampling::{Sampler, SamplingParams};
use crate::synth::{shape_by_name, Shape, SynthModel};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  tritium bench                                   # synthetic Qwen2.5-0.5B shape, pp512 + tg128, 3 repetitions
  tritium bench --synthetic qwen2.5-32b --roof    # also measure the device's read bandwidth
  tritium bench --model DIR -p 128 -n 64 -r 5 --json
  tritium bench --ctx 32768                       # decode with the KV cache chat gives 0.5B
  tritium bench --temperature 0.7 --top-k 40 --top-p 0.8   # generation sampled as chat samples
Synthetic models have random packed weights of the exact shape, made on the fly (no files).
pp = prompt tokens per second; tg = generated tokens per second (greedy unless --temperature, after the prompt).")]
pub struct BenchArgs {
    /// Benchmark the model in this folder.
    #[arg(long, conflicts_with = "synthetic")]
    pub model: Option<PathBuf>,
    /// Benchmark a random packed model of this shape (default qwen2.5-0.5b): 0.5b, 1.5b, 3b, 7b, 14b, 32b, tiny.
    #[arg(long, value_parser = shape_by_name)]
    pub synthetic: Option<&'static Shape>,
    /// Prompt tokens (default 512; 32 on a software adapter).
    #[arg(short = 'p', long = "prompt-tokens")]
    pub prompt_tokens: Option<usize>,
    /// Generated tokens (default 128; 16 on a software adapter).
    #[arg(short = 'n', long = "gen-tokens")]
    pub gen_tokens: Option<usize>,
    /// Repetitions after one warm-up run (default 3; 1 on a software adapter).
    #[arg(short = 'r', long)]
    pub repetitions: Option<usize>,
    /// Prompt tokens per batched prefill step (default 512, fewer when one
    /// step's activations would not fit a storage binding).
    #[arg(long)]
    pub ubatch: Option<usize>,
    // Generation is greedy, the argmax taken on the GPU and the steps queued
    // without waiting; with --temperature it is sampled as `chat` samples: on
    // the GPU in the same way with a top-k of 1 to 64 (the default is 40),
    // otherwise each token's logits read back and drawn from on the host.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// KV cache positions to allocate (default -p + -n). `chat`, `gui` and
    /// the browser demo allocate the model's whole context, up to a 4 GiB
    /// cache (8,192 positions for 32B, 32,768 for 0.5B): pass that to time
    /// decode as they run it.
    #[arg(long)]
    pub ctx: Option<usize>,
    #[command(flatten)]
    pub kv_cache: KvCacheArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Also measure the device's streaming-read bandwidth and report decode as a fraction of it.
    #[arg(long)]
    pub roof: bool,
    /// Also time every dispatch of one greedy decode step and one prefill step on the
    /// GPU and print where the time goes, kernel by kernel (needs timestamp queries).
    /// The timestamps add a few µs to each dispatch; the decode table says how much,
    /// against the step's time in the tg runs.
    #[arg(long)]
    pub profile: bool,
    /// Print one JSON object per repetition instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let gpu = open_gpu(&args.device)?;
    // A CPU-emulated GPU (lavapipe, SwiftShader) runs a 0.5B model at about a token
    // a second: keep the defaults short there so the default run ends in a minute or two.
    let software = gpu.caps.cpu_emulated;
    let (p, n, r) = if software { (32, 16, 1) } else { (512, 128, 3) };
    let (prompt_tokens, gen_tokens, repetitions) =
        (args.prompt_tokens.unwrap_or(p), args.gen_tokens.unwrap_or(n), args.repetitions.unwrap_or(r));
    if prompt_tokens == 0 || repetitions == 0 {
        bail!("-p and -r must be at least 1");
    }
    let (temperature, top_k, top_p) = (args.sampling.temperature, args.sampling.top_k(), args.sampling.top_p);
    let sampling = |seed| SamplingParams { temperature, top_k, top_p, seed, ..Default::default() };
    sampling(0).validate().map_err(anyhow::Error::msg)?;
    let sampled = temperature > 0.0;
    if !sampled && (args.sampling.top_k.is_some() || top_p != 1.0) {
        bail!("--top-k and --top-p apply when sampling: add --temperature (chat samples at 0.7)");
    }
    if software {
        eprintln!("{} is a software (CPU-emulated) adapter: expect CPU speeds, not GPU ones.", gpu.info.name);
    }
    let opened;
    let synth;
    let (name, config, layout, source): (String, Config, Layout, &dyn WeightSource) = match &args.model {
        Some(dir) => {
            opened = Model::open(dir).with_context(|| format!("loading the model in {}", dir.display()))?;
            (dir.display().to_string(), opened.config().clone(), opened.layout.clone(), &opened.checkpoint)
        }
        None => {
            let shape = args.synthetic.unwrap_or(shape_by_name("qwen2.5-0.5b").expect("built-in shape"));
            synth = SynthModel::new(shape, 0);
            (format!("{} (synthetic)", shape.name), synth.config.clone(), synth.layout()?, &synth)
        }
    };
    let used = prompt_tokens + gen_tokens;
    if used > config.max_position_embeddings {
        bail!("-p + -n = {used} exceeds the model's max_position_embeddings ({})", config.max_position_embeddings);
    }
    let ctx = match args.ctx {
        Some(c) if c < used => bail!("--ctx {c} is shorter than -p + -n = {used}; pass --ctx {used} or more"),
        Some(c) if c > config.max_position_embeddings => {
            bail!("--ctx {c} exceeds the model's max_position_embeddings ({})", config.max_position_embeddings)
        }
        Some(c) => c,
        None => used,
    };

    // The roof first, on an otherwise empty device.
    let roof = if args.roof { Some(pollster::block_on(measure_read_bandwidth(&gpu, 20))?) } else { None };
    let started = Instant::now();
    let (bar, mut progress) = bytes_bar("uploading weights");
    let options =
        EngineOptions { ctx: Some(ctx), ubatch: args.ubatch, kv_dtype: args.kv_cache.dtype(), ..Default::default() };
    let mut engine = pollster::block_on(Engine::load(&gpu, &config, &layout, source, &options, &mut progress))
        .with_context(|| format!("loading {name} onto {}", gpu.describe()))?;
    bar.finish_and_clear();
    let load_s = started.elapsed().as_secs_f64();
    let plan = engine.memory_plan().clone();

    // Warm-up, one untimed run of the measured size: compiles every pipeline
    // (software drivers compile at first use) and brings the GPU to its working
    // clocks. After a shorter one, the first measured repetition of 0.5B decode
    // on an H100 ran up to 20 % slower than the rest.
    let sampler = |seed| sampled.then(|| Sampler::new(sampling(seed)));
    // Where sampled tokens are drawn: chat's settings draw on the GPU.
    let sampled_on = sampled.then(|| if engine.samples_on_gpu(&sampling(0)) { "gpu" } else { "host" });
    run_once(&mut engine, prompt_tokens, gen_tokens, 1, sampler(1).as_mut())?;

    let adapter = gpu.info.name.clone();
    let backend = format!("{:?}", gpu.info.backend);
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for rep in 0..repetitions {
        let seed = 100 + rep as u64;
        let t = run_once(&mut engine, prompt_tokens, gen_tokens, seed, sampler(seed).as_mut())?;
        let (pp, tg) = (prompt_tokens as f64 / t.prefill_s, gen_tokens as f64 / t.decode_s.max(1e-12));
        prefill.push(pp);
        decode.push(tg);
        if args.json {
            let gb_s = plan.weight_bytes as f64 * tg / 1e9;
            let line = serde_json::json!({
                "model": name, "adapter": adapter, "backend": backend, "gemv": engine.decode_gemv(), "act_bits": engine.act_bits(), "gemm": engine.prefill_gemm(),
                "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "ubatch": plan.ubatch, "ctx": plan.ctx,
                "temperature": temperature, "top_k": sampled.then_some(top_k), "top_p": sampled.then_some(top_p), "sampled_on": sampled_on,
                "prefill_tok_s": pp, "decode_tok_s": tg,
                "weight_bytes": plan.weight_bytes, "decode_gb_s": gb_s,
                "gpu_memory_bytes": plan.total(), "kv_cache_bytes": plan.kv_cache_bytes, "kv_cache": plan.kv_dtype.name(),
                "load_s": load_s, "repetition": rep,
                "roof_gb_s": roof.map(|r| r / 1e9),
                "decode_roof_fraction": roof.map(|r| gb_s * 1e9 / r),
            });
            println!("{line}");
        }
    }
    let profiles = if args.profile {
        let decode = pollster::block_on(engine.profile_step(false, prompt_tokens))?;
        let prefill = pollster::block_on(engine.profile_step(true, 0))?;
        Some([("decode step", decode, true), ("prefill step", prefill, false)])
    } else {
        None
    };
    if args.json {
        return Ok(());
    }
    let (pp, pp_sd) = mean_std(&prefill);
    let (tg, tg_sd) = mean_std(&decode);
    let gb_s = plan.weight_bytes as f64 * tg / 1e9;
    println!("model    {name}");
    let inputs = match engine.act_bits() {
        Some(bits) => format!(" on {bits}-bit inputs"),
        None => String::new(),
    };
    println!(
        "adapter  {adapter} ({backend}); {}; prefill GEMM {}, decode GEMV {}{inputs}",
        gpu.describe(),
        engine.prefill_gemm(),
        engine.decode_gemv()
    );
    println!(
        "weights  {} on the GPU, {} in all with a {ctx}-token {} KV cache and {}-token prefill steps; loaded in {load_s:.2} s",
        human(plan.weight_bytes),
        human(plan.total()),
        plan.kv_dtype.name(),
        plan.ubatch
    );
    match sampled_on {
        Some("gpu") => println!(
            "sampling temperature {temperature}, top-k {top_k}, top-p {top_p}: drawn on the GPU, the steps queued without waiting"
        ),
        Some(_) => println!(
            "sampling temperature {temperature}, top-k {top_k}, top-p {top_p}: each generated token's logits read back and drawn \
             from on the host (a top-k of 1 to {} draws on the GPU)",
            crate::engine::ops::SAMPLE_TOP
        ),
        None => {}
    }
    println!();
    println!("| test   |            t/s | weights read |");
    println!("| ------ | -------------: | -----------: |");
    println!("| pp{:<4} | {pp:>8.1} ± {pp_sd:<5.1} |              |", prompt_tokens);
    println!("| tg{:<4} | {tg:>8.1} ± {tg_sd:<5.1} | {gb_s:>7.1} GB/s |", gen_tokens);
    if let Some(roof) = roof {
        println!();
        println!(
            "roof     {:.1} GB/s streaming read; decode reads weights at {:.0}% of it",
            roof / 1e9,
            100.0 * gb_s * 1e9 / roof
        );
    }
    // The decode step as the tg runs took it, without timestamps.
    let untimed_step_s = (tg.is_finite() && tg > 0.0).then(|| 1.0 / tg);
    for (what, times, is_decode) in profiles.iter().flatten() {
        print_profile(what, times, untimed_step_s.filter(|_| *is_decode));
    }
    Ok(())
}

/// The GPU time of each kind of dispatch in one step, largest first; with
/// `untimed_s`, the same step's time in the speed runs, to show what the
/// timestamps between dispatches add (each makes the GPU finish the work
/// before it, so a profiled step takes longer than a plain one).
fn print_profile(what: &str, times: &[KernelTime], untimed_s: Option<f64>) {
    let total: f64 = times.iter().map(|t| t.seconds).sum();
    let calls: usize = times.iter().map(|t| t.calls).sum();
    println!();
    println!("{what}: {calls} dispatches, {:.1} µs of GPU time", total * 1e6);
    if let Some(untimed) = untimed_s.filter(|&u| u < total && calls > 0) {
        println!(
            "  (in the tg runs a step took {:.1} µs: timestamps add about {:.1} µs a dispatch, so small dispatches read larger here)",
            untimed * 1e6,
            (total - untimed) * 1e6 / calls as f64
        );
    }
    println!("|     µs | share | calls | dispatch (N: layer or row numbers) |");
    println!("| -----: | ----: | ----: | ---------------------------------- |");
    for t in times.iter().take(20) {
        println!("| {:>6.1} | {:>4.1}% | {:>5} | {} |", t.seconds * 1e6, 100.0 * t.seconds / total, t.calls, t.kind);
    }
}

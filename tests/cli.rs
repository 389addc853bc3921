//! `synth`, `inspect` and `bench` end to end.

mod common;
use common::*;

use tritium::model::Model;

#[test]
fn synth_writes_a_valid_reproducible_packed_model() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for dir in [&a, &b] {
        tritium_ok(&[
            "synth",
            "--shape",
            "tiny",
            "--output",
            dir.path().to_str().unwrap(),
            "--seed",
            "7",
            "--max-shard-size",
            "40KB",
        ]);
    }
    let model = Model::open(a.path()).unwrap();
    let shape = tritium::synth::shape_by_name("tiny").unwrap();
    assert_eq!(model.config().hidden_size, shape.hidden);
    assert!(model.layout.matrices().iter().all(|m| m.is_packed()), "synth packs every matrix");
    assert!(model.checkpoint.shard_paths().count() > 1);
    for shard in model.checkpoint.shard_paths() {
        let name = shard.file_name().unwrap();
        assert_eq!(std::fs::read(shard).unwrap(), std::fs::read(b.path().join(name)).unwrap(), "same seed, same bytes");
    }
    // Runs, and the activations stay finite through every layer.
    let npy = a.path().join("l.npy");
    tritium_ok(&[
        "score",
        "--model",
        a.path().to_str().unwrap(),
        "--ids",
        "1,2,3,4",
        "--backend",
        "cpu",
        "--out",
        npy.to_str().unwrap(),
    ]);
    let (shape, logits) = read_npy(&npy);
    assert_eq!(shape, vec![4, 151936]);
    assert!(logits.iter().all(|v| v.is_finite()));
}

#[test]
fn inspect_reports_format_norms_and_tensors() {
    let run = tritium_ok(&["inspect", "--model", fixture("mha-untied-bf16-rmsnorm").to_str().unwrap(), "--json"]);
    let info: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(info["linear_norms"], 14, "seven per-linear norms in each of two layers");
    assert_eq!(info["files"].as_array().unwrap().len(), 2);
    assert_eq!(info["tied_embeddings"], false);
    let q = info["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(q["kind"], "packed ternary");
    assert_eq!(q["shape"], serde_json::json!([128, 32]));

    let run = tritium_ok(&["inspect", "--model", fixture("mqa-packed-norm").to_str().unwrap()]);
    assert!(run.stdout.contains("embeddings packed too"), "{}", run.stdout);
    assert!(run.stdout.contains("lin. norms 21 (named <proj>.norm.weight)"), "{}", run.stdout);
    let run = tritium_ok(&["inspect", "--model", fixture("dense-f32").to_str().unwrap()]);
    assert!(run.stdout.contains("dense (F32/F16/BF16)"), "{}", run.stdout);
    assert!(run.stdout.contains("lin. norms none"), "{}", run.stdout);
}

#[test]
fn help_teaches() {
    let run = tritium_ok(&["--help"]);
    for word in ["synth", "inspect", "quantize", "score", "generate", "Examples"] {
        assert!(run.stdout.contains(word), "--help lacks {word}");
    }
    let run = tritium_ok(&["quantize", "--help"]);
    assert!(run.stdout.contains("--group-size") && run.stdout.contains("quantization_config"));
}

#[test]
fn bench_measures_prompt_and_generation_and_profiles_each_dispatch() {
    let bench = |gemv: &str| {
        tritium_ok(&[
            "bench",
            "--synthetic",
            "tiny",
            "-p",
            "70",
            "-n",
            "4",
            "-r",
            "1",
            "--ubatch",
            "32",
            "--profile",
            gemv,
        ])
    };
    let run = bench("--gemv=float");
    let out = &run.stdout;
    assert!(out.contains("| pp70 ") && out.contains("| tg4 "), "{out}");
    assert!(out.contains("32-token prefill steps"), "{out}");
    // The tiny shape: 2 layers, q/k/v and gate/up each stacked into one
    // projection (no per-linear norms), an untied LM head in one binding, and
    // small enough that its f32 decode GEMVs compute their norm statistics
    // themselves and their down GEMVs apply SwiGLU. A decode step is the
    // embedding, 5 dispatches a layer (qkv, attention with RoPE, o, gate/up,
    // down), the head and two for the argmax.
    assert!(out.contains("decode GEMV float") && out.contains("decode step: 14 dispatches"), "{out}");
    // Software Vulkan has no cooperative matrices: prefill multiplies in f32.
    assert!(out.contains("prefill GEMM float"), "{out}");
    // A prefill step has no head, two norm dispatches a layer, and one for
    // causal attention: the embedding and 9 a layer.
    assert!(out.contains("prefill step: 19 dispatches"), "{out}");
    for kind in ["gemv model.layers.N.self_attn.qkv_proj", "gemm model.layers.N.mlp.gate_up_proj"] {
        let line = out.lines().find(|l| l.contains(kind)).unwrap_or_else(|| panic!("no {kind} in {out}"));
        assert!(line.contains("|     2 |"), "one call per layer: {line}");
    }
    // With the fixed-point GEMV, the first layer's q/k/v (a short input, few
    // rows) converts its input in every workgroup, o's comes from attention,
    // o's GEMV writes gate/up's, gate/up's writes SwiGLU's output as down's,
    // the first layer's down GEMV writes the second layer's q/k/v input, and
    // the head's (151,936 rows) is converted by a dispatch first: 5
    // dispatches a layer, and the head's conversion.
    let run = bench("--gemv=fixed");
    let out = &run.stdout;
    assert!(out.contains("decode GEMV fixed on 24-bit inputs") && out.contains("decode step: 15 dispatches"), "{out}");
    assert!(out.contains("prefill step: 19 dispatches"), "{out}");
    assert!(!out.contains("to fixed point model.layers"), "{out}");
    for (kind, calls) in [
        ("gemv converting its input model.layers.N.self_attn.qkv_proj", 1),
        ("gemv over the fed input model.layers.N.self_attn.qkv_proj", 1),
        ("gemv feeding the next model.layers.N.self_attn.o_proj", 2),
        ("gemv over the fed input feeding down model.layers.N.mlp.gate_up_proj", 2),
        ("gemv feeding the next model.layers.N.mlp.down_proj", 1),
        ("gemv model.layers.N.mlp.down_proj", 1),
    ] {
        let line = out.lines().find(|l| l.contains(kind)).unwrap_or_else(|| panic!("no {kind} in {out}"));
        assert!(line.contains(&format!("|     {calls} |")), "{calls} calls: {line}");
    }
    // Fewer input bits are the fixed-point GEMV's, which they select.
    let run = bench("--act-bits=8");
    assert!(run.stdout.contains("decode GEMV fixed on 8-bit inputs"), "{}", run.stdout);

    // --json: one object per repetition with the fields llama-bench users
    // script against; a KV cache longer than -p + -n (decode attention then
    // launches only the splits holding the positions so far).
    let bench_json =
        |more: &[&str]| tritium_ok(&[&["bench", "--synthetic", "tiny", "-p", "8", "--json"], more].concat());
    let run = bench_json(&["-n", "2", "-r", "2", "--act-bits=16", "--ctx", "200"]);
    let lines: Vec<serde_json::Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    for (rep, line) in lines.iter().enumerate() {
        assert_eq!(line["model"], "tiny (synthetic)", "{line}");
        assert_eq!(
            (&line["prompt_tokens"], &line["gen_tokens"], &line["repetition"]),
            (&8.into(), &2.into(), &rep.into())
        );
        assert_eq!(line["ctx"], 200, "{line}");
        assert_eq!((&line["gemv"], &line["act_bits"], &line["gemm"]), (&"fixed".into(), &16.into(), &"float".into()));
        for field in ["prefill_tok_s", "decode_tok_s", "weight_bytes", "decode_gb_s", "gpu_memory_bytes", "load_s"] {
            assert!(line[field].as_f64().is_some_and(|v| v > 0.0), "{field} in {line}");
        }
        assert!(line["adapter"].is_string() && line["backend"] == "Vulkan", "{line}");
    }

    // Generation sampled as chat samples, drawn on the GPU; top-k is 40
    // unless given, and settings past what the GPU draws go to the host.
    let sampled = [
        (&["--temperature", "0.7", "--top-k", "40", "--top-p", "0.8"][..], 40, 0.8, "gpu"),
        (&["--temperature", "0.7"], 40, 1.0, "gpu"),
        (&["--temperature", "0.7", "--top-k", "0"], 0, 1.0, "host"),
    ];
    for (flags, top_k, top_p, sampled_on) in sampled {
        let run = bench_json(&[&["-n", "3", "-r", "1"], flags].concat());
        let line: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
        assert_eq!((&line["top_k"], &line["gen_tokens"]), (&top_k.into(), &3.into()), "{line}");
        assert_eq!(line["sampled_on"], sampled_on, "{line}");
        for (field, want) in [("temperature", 0.7), ("top_p", top_p)] {
            assert!(line[field].as_f64().is_some_and(|v| (v - want).abs() < 1e-6), "{field} in {line}");
        }
        assert!(line["decode_tok_s"].as_f64().is_some_and(|v| v > 0.0), "{line}");
    }
}

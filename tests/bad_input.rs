//! Broken models and bad arguments: each gets an error naming the problem, a
//! non-zero exit and no panic (the `tritium` helper fails the test on a panic).

mod common;
use common::*;

use std::path::Path;

const Q: &str = "model.layers.0.self_attn.q_proj.weight";

/// Scores three tokens of the model in `dir`, expecting an error with `needles`.
fn score_fails(dir: &Path, needles: &[&str]) {
    let out = dir.join("out.npy");
    tritium_fails(
        &[
            "score",
            "--model",
            dir.to_str().unwrap(),
            "--ids",
            "1,2,3",
            "--backend",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ],
        needles,
    );
}

fn no_config_change(_: &mut serde_json::Value) {}

/// Rewrites the header of `model.safetensors` in a copy of `src`.
fn edit_header(src: &Path, edit: impl FnOnce(&mut serde_json::Value, u64)) -> tempfile::TempDir {
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header, (bytes.len() - 8 - n) as u64);
    let text = header.to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut file = (text.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(text.as_bytes());
    file.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(dir.path().join("model.safetensors"), file).unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    dir
}

#[test]
fn truncated_file() {
    let dir = rewrite(&fixture("gqa-tied"), |_| {}, no_config_change);
    let path = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 100).unwrap();
    score_fails(dir.path(), &["model.safetensors", "outside", "truncated or corrupt"]);
    file.set_len(6).unwrap();
    score_fails(dir.path(), &["too short to be safetensors"]);
}

#[test]
fn header_lying_about_offsets() {
    let dir = edit_header(&fixture("gqa-tied"), |h, data_len| {
        h[Q]["data_offsets"][1] = (data_len + 64).into();
    });
    score_fails(dir.path(), &[Q, "data_offsets", "outside"]);
    let dir = edit_header(&fixture("gqa-tied"), |h, _| {
        let start = h[Q]["data_offsets"][0].as_u64().unwrap();
        h[Q]["data_offsets"][1] = (start + 7).into();
    });
    score_fails(dir.path(), &[Q, "needs 4096 bytes but data_offsets span 7"]);
    let dir = edit_header(&fixture("gqa-tied"), |h, _| {
        h[Q] = serde_json::json!({"dtype": "U8"});
    });
    score_fails(dir.path(), &[Q, "malformed"]);
}

#[test]
fn missing_shard() {
    // An index naming a file that is not there: the error names the file
    // and the reason once (tritium_fails checks that no cause repeats).
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("gqa-tied").join("config.json"), dir.path().join("config.json")).unwrap();
    let index = serde_json::json!({ "weight_map": { Q: "model-00001-of-00002.safetensors" } });
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    score_fails(dir.path(), &["model-00001-of-00002.safetensors", "No such file or directory"]);
}

#[test]
fn missing_tensor() {
    let name = "model.layers.1.mlp.up_proj.weight";
    let dir = rewrite(&fixture("gqa-tied"), |t| t.retain(|t| !t.meta.name.starts_with(name)), no_config_change);
    score_fails(dir.path(), &["missing tensor model.layers.1.mlp.up_proj.weight"]);
}

#[test]
fn wrong_shape() {
    let dir = rewrite(
        &fixture("gqa-tied"),
        |t| {
            let q = find(t, Q);
            q.meta.shape = vec![128, 16];
            q.bytes.truncate(128 * 16);
        },
        no_config_change,
    );
    score_fails(dir.path(), &[Q, "has shape [128, 16], expected [128, 32]"]);
}

#[test]
fn wrong_dtype() {
    let norm = "model.layers.0.input_layernorm.weight";
    let dir =
        rewrite(&fixture("gqa-tied"), |t| find(t, norm).meta.dtype = DType::Other("I32".into()), no_config_change);
    score_fails(dir.path(), &[norm, "has dtype I32, expected F32, F16 or BF16"]);
    let dir = rewrite(&fixture("gqa-tied"), |t| find(t, Q).meta.dtype = DType::Other("I8".into()), no_config_change);
    score_fails(dir.path(), &[Q, "has dtype I8"]);
}

#[test]
fn packed_byte_above_80() {
    let name = "model.layers.1.self_attn.k_proj.weight";
    let dir = rewrite(&fixture("gqa-tied"), |t| find(t, name).bytes[1000] = 200, no_config_change);
    score_fails(dir.path(), &[name, "packed byte 200 at byte offset 1000 is above 80"]);
    // The packed embedding of another fixture too.
    let embed = "model.embed_tokens.weight";
    let dir = rewrite(&fixture("mqa-packed-norm"), |t| find(t, embed).bytes[7] = 81, no_config_change);
    score_fails(dir.path(), &[embed, "packed byte 81 at byte offset 7"]);
}

#[test]
fn scales_missing_or_misshaped() {
    let scales = "model.layers.0.self_attn.v_proj.weight.scales";
    let dir = rewrite(&fixture("gqa-tied"), |t| t.retain(|t| t.meta.name != scales), no_config_change);
    score_fails(
        dir.path(),
        &["missing tensor model.layers.0.self_attn.v_proj.weight.scales", "needs its group scales"],
    );
    let dir = rewrite(&fixture("gqa-tied"), |t| find(t, scales).meta.shape = vec![32, 4], no_config_change);
    score_fails(dir.path(), &[scales, "has shape [32, 4], expected [64, 2]"]);
    let dir =
        rewrite(&fixture("gqa-tied"), |t| find(t, scales).meta.dtype = DType::Other("I32".into()), no_config_change);
    score_fails(dir.path(), &[scales, "has dtype I32"]);
}

#[test]
fn inconsistent_config() {
    let dir = rewrite(&fixture("gqa-tied"), |_| {}, |c| c["num_attention_heads"] = 5.into());
    score_fails(dir.path(), &["config.json", "num_attention_heads (5) does not divide hidden_size (128)"]);
    let dir = rewrite(&fixture("gqa-tied"), |_| {}, |c| c["num_key_value_heads"] = 3.into());
    score_fails(dir.path(), &["num_key_value_heads (3) does not divide num_attention_heads (4)"]);
    let dir = rewrite(&fixture("gqa-tied"), |_| {}, |c| c["hidden_size"] = "wide".into());
    score_fails(dir.path(), &["config.json", "not a valid Qwen2 config.json"]);
    let dir = rewrite(&fixture("gqa-tied"), |_| {}, |c| c["vocab_size"] = 600.into());
    score_fails(dir.path(), &["model.embed_tokens.weight", "expected [600, 128]"]);
}

#[test]
fn bad_command_line_values() {
    let model = fixture("gqa-tied");
    let m = model.to_str().unwrap();
    tritium_fails(
        &["generate", "--model", m, "--ids", "1,512", "--max-tokens", "2"],
        &["token id 512 is out of range", "512 tokens"],
    );
    tritium_fails(&["generate", "--model", m, "--ids", "1,x", "--max-tokens", "2"], &["\"x\" is not a token id"]);
    tritium_fails(&["generate", "--model", m, "--ids", "-1", "--max-tokens", "2"], &["\"-1\" is not a token id"]);
    tritium_fails(&["chat", "--model", m], &["chat needs tokenizer.json", "generate --ids"]);
    tritium_fails(
        &["generate", "--model", m, "--ids", "1,2,3", "--ctx", "4", "--max-tokens", "2"],
        &["need 5 positions", "context holds 4"],
    );
    tritium_fails(&["generate", "--model", m, "--ids", "1", "--top-p", "0"], &["top-p"]);
    tritium_fails(&["generate", "--model", m, "--ids", "1", "--max-tokens", "0"], &["--max-tokens"]);
    // The portable path uses no optional feature, cooperative matrices included.
    tritium_fails(
        &["generate", "--model", m, "--ids", "1", "--max-tokens", "2", "--portable", "--gemm", "coop"],
        &["--gemm coop needs the tensor-core GEMM", "--portable", "use --gemm float"],
    );
    tritium_fails(
        &["generate", "--model", m, "--ids", "1", "--max-tokens", "2", "--portable", "--gemm", "coop-f16"],
        &["--gemm coop-f16 needs the tensor-core GEMM", "--portable", "use --gemm float"],
    );
    // Fewer input bits exist only in the fixed-point GEMV.
    tritium_fails(
        &["generate", "--model", m, "--ids", "1", "--max-tokens", "2", "--act-bits", "16", "--gemv", "float"],
        &["--act-bits 16 applies to the fixed-point GEMV", "--gemv float"],
    );
    tritium_fails(&["generate", "--model", m, "--ids", "1", "--act-bits", "12"], &["--act-bits", "24, 16, 8"]);
    tritium_fails(
        &["generate", "--model", "/nonexistent/model", "--ids", "1"],
        &["/nonexistent/model is not a folder"],
    );
    tritium_fails(
        &["bench", "--synthetic", "tiny", "-p", "8", "-n", "4", "--ctx", "10"],
        &["--ctx 10 is shorter than -p + -n = 12", "--ctx 12 or more"],
    );
    tritium_fails(
        &["bench", "--synthetic", "tiny", "-p", "8", "-n", "4", "--top-k", "40"],
        &["--top-k and --top-p apply when sampling", "add --temperature"],
    );
    tritium_fails(
        &["bench", "--synthetic", "tiny", "--temperature=-1"],
        &["temperature must be 0 (greedy) or positive"],
    );
    tritium_fails(
        &["synth", "--shape", "qwen9", "--output", "/tmp/never"],
        &["unknown shape \"qwen9\"", "qwen2.5-32b"],
    );
    tritium_fails(
        &["synth", "--shape", "tiny", "--output", "/tmp/never", "--max-shard-size", "4XB"],
        &["unknown size unit"],
    );
}

use tritium::model::DType;

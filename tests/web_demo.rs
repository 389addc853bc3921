//! The browser demo end to end: `tritium serve-web` serves the built demo
//! (web/pkg, from scripts/build-web.sh) and a model folder; headless Chromium
//! opens a deep link, the wasm engine runs on WebGPU (SwiftShader: no
//! shader-f16, so the f32 path), and the generated ids must equal native
//! `tritium generate --temperature 0` on the same input. Screenshots go to
//! `$TRITIUM_ARTIFACTS` (default `<target>/artifacts`).
//!
//! Needs node, Debian's chromium and `npm ci` in web/ (`scripts/test.sh` sets it all up).

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{artifacts, fixture, ids_arg, tritium_ok, KillOnDrop};

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

fn check_prerequisites() {
    let web = web_dir();
    assert!(
        web.join("pkg/tritium_web_bg.wasm").is_file(),
        "web/pkg is not built: run scripts/build-web.sh (scripts/test.sh does)"
    );
    assert!(web.join("node_modules/playwright-core").is_dir(), "run `npm ci` in web/ (scripts/build-web.sh does)");
}

/// Serves `model` with the demo; returns the server and its base address.
fn serve(model: &Path) -> (KillOnDrop, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tritium"))
        .args(["serve-web", "--port", "0", "--model", model.to_str().unwrap(), "--root"])
        .arg(web_dir())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tritium serve-web");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    // Keep reading: the server exits on a broken pipe, like any command-line tool.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let address = first.trim().rsplit(' ').next().unwrap().trim_end_matches('/').to_string();
    assert!(address.starts_with("http://127.0.0.1:"), "serve-web said: {first}");
    (KillOnDrop(child), address)
}

/// How the page gets its model in a browser run.
enum Pick<'a> {
    /// The deep link's `?model=` URL (with WebGPU, or without to see the page say so).
    Url { webgpu: bool },
    /// The files of this folder, chosen with the page's file input.
    Files(&'a Path),
}

/// Runs a script of web/tests with `args` and `envs`; returns the JSON it printed.
fn node(script: &str, args: &[&str], envs: &[(&str, &OsStr)]) -> serde_json::Value {
    let out = Command::new("node")
        .arg(web_dir().join("tests").join(script))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run node (apt-get install nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("{script} {args:?}: {result}");
    result
}

/// Runs a deep link in Chromium; returns what the page reported.
fn browser_result(url: &str, screenshot: &str, pick: Pick) -> serde_json::Value {
    let shot = artifacts().join(screenshot);
    let env = match pick {
        Pick::Url { webgpu } => ("TRITIUM_E2E_NO_WEBGPU", OsStr::new(if webgpu { "0" } else { "1" })),
        Pick::Files(dir) => ("TRITIUM_E2E_FILES", dir.as_os_str()),
    };
    node("e2e.mjs", &[url, shot.to_str().unwrap(), "900"], &[env])
}

/// Runs a deep link in Chromium; returns the page's ids and text.
fn run_in_browser(url: &str, screenshot: &str) -> (Vec<u32>, String) {
    run_with(url, screenshot, Pick::Url { webgpu: true })
}

fn run_with(url: &str, screenshot: &str, pick: Pick) -> (Vec<u32>, String) {
    let result = browser_result(url, screenshot, pick);
    let ids = result["ids"].as_str().unwrap_or_else(|| panic!("no ids from the page: {result}"));
    let ids = ids.split(',').map(|s| s.parse().unwrap()).collect();
    (ids, result["text"].as_str().unwrap_or_default().to_string())
}

/// A tiny random model with Qwen's tokenizer in `dir`.
fn synth_chat_model(dir: &Path, seed: &str) {
    let tokenizer = fixture("qwen2.5-tokenizer");
    let (m, t) = (dir.to_str().unwrap(), tokenizer.to_str().unwrap());
    tritium_ok(&["synth", "--shape", "tiny", "--output", m, "--seed", seed, "--tokenizer", t]);
}

/// Text and ids of `generate --temperature 0` for one chat message.
fn native_chat(model: &str, message: &str, max_tokens: &str) -> (String, Vec<u32>) {
    let args = ["--prompt", message, "--chat", "--max-tokens", max_tokens, "--temperature", "0", "--print-ids"];
    let run = tritium_ok(&[&["generate", "--model", model][..], &args].concat());
    let (text, ids) = run.stdout.trim_end().rsplit_once('\n').expect("text, then the ids line");
    (text.trim_end().to_string(), ids.split(',').map(|s| s.parse().unwrap()).collect())
}

fn native_ids(args: &[&str]) -> Vec<u32> {
    let run = tritium_ok(args);
    run.stdout.lines().last().unwrap().split(',').map(|s| s.parse().unwrap()).collect()
}

#[test]
fn deep_link_ids_match_native_generate() {
    check_prerequisites();
    let model = fixture("gqa-tied");
    let (_server, address) = serve(&model);
    let ids = "1,2,3,4,5";
    let url = format!("{address}/?model=/model/&ids={ids}&max_tokens=8&temperature=0");
    let (browser, _) = run_in_browser(&url, "web-ids.png");
    let m = model.to_str().unwrap();
    let native = native_ids(&["generate", "--model", m, "--ids", ids, "--max-tokens", "8", "--temperature", "0"]);
    assert_eq!(browser, native);
}

#[test]
fn chat_prompt_in_the_browser_matches_native_generate() {
    check_prerequisites();
    let dir = tempfile::tempdir().unwrap();
    synth_chat_model(dir.path(), "11");
    let (_server, address) = serve(dir.path());
    let url =
        format!("{address}/?model=/model/&prompt=Write%20a%20haiku%20about%20GPUs&chat=1&max_tokens=12&temperature=0");
    let (browser, text) = run_in_browser(&url, "web-demo.png");
    let (native_text, native) = native_chat(dir.path().to_str().unwrap(), "Write a haiku about GPUs", "12");
    assert_eq!(browser, native);
    assert_eq!(text, native_text);
}

#[test]
fn a_tensor_larger_than_128_mib_loads_in_the_browser() {
    check_prerequisites();
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().to_str().unwrap();
    tritium_ok(&["synth", "--shape", "tiny-wide", "--output", m, "--seed", "2", "--max-shard-size", "1GB"]);
    let model = tritium::model::Model::open(dir.path()).unwrap();
    let largest = model.checkpoint.tensors().map(|t| t.entry.len).max().unwrap();
    assert!(largest > 128 << 20, "the largest tensor is {largest} bytes");
    let (_server, address) = serve(dir.path());
    // With a tied random embedding the reply repeats the last prompt token; ids
    // past the middle of the vocabulary live in the second binding of the split
    // (lavapipe) tensor, so both the embedding lookup and the LM head cross it.
    let prompt = [7u32, 120_000, 151_000];
    let url = format!("{address}/?model=/model/&ids={}&max_tokens=3&temperature=0", ids_arg(&prompt));
    let (browser, _) = run_in_browser(&url, "web-wide.png");
    // Natively on lavapipe (128 MiB bindings) the same tensor is split across bindings.
    let native =
        native_ids(&["generate", "--model", m, "--ids", &ids_arg(&prompt), "--max-tokens", "3", "--temperature", "0"]);
    assert_eq!(browser, native);
}

#[test]
fn without_webgpu_the_page_says_so() {
    check_prerequisites();
    let (_server, address) = serve(&fixture("gqa-tied"));
    let url = format!("{address}/?model=/model/&ids=1,2&max_tokens=2&temperature=0");
    let result = browser_result(&url, "web-no-webgpu.png", Pick::Url { webgpu: false });
    assert!(result["ids"].is_null(), "{result}");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(error.contains("no WebGPU"), "{result}");
}

#[test]
fn picked_files_run_like_the_url() {
    check_prerequisites();
    // Sharded, so the page reads the index and several files through Blob slices.
    let model = fixture("mha-untied-bf16-rmsnorm");
    let (_server, address) = serve(&model);
    let ids = "3,1,4,1,5,9,2,6";
    let url = format!("{address}/?ids={ids}&max_tokens=6&temperature=0");
    let (browser, _) = run_with(&url, "web-files.png", Pick::Files(&model));
    let m = model.to_str().unwrap();
    let native = native_ids(&["generate", "--model", m, "--ids", ids, "--max-tokens", "6", "--temperature", "0"]);
    assert_eq!(browser, native);
}

#[test]
fn a_typed_conversation_streams_and_new_chat_clears_it() {
    check_prerequisites();
    let dir = tempfile::tempdir().unwrap();
    synth_chat_model(dir.path(), "12");
    let (_server, address) = serve(dir.path());
    let shot = artifacts().join("web-chat.png");
    let result = node("chat.mjs", &[&format!("{address}/?model=/model/"), shot.to_str().unwrap(), "6"], &[]);
    assert_eq!((result["turns_before"].as_u64(), result["turns_after"].as_u64()), (Some(4), Some(0)), "{result}");
    // The first reply is what the command line generates for the same message.
    let (_, native) = native_chat(dir.path().to_str().unwrap(), "Hi", "6");
    assert_eq!(result["replies"][0]["ids"].as_str(), Some(ids_arg(&native).as_str()), "{result}");
    assert!(result["replies"][1]["ids"].as_str().is_some_and(|ids| !ids.is_empty()), "{result}");
}

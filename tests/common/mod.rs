//! Helpers shared by the integration tests: running the `tritium` binary, reading
//! fixtures, and rewriting checkpoints to make broken ones.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use tritium::model::safetensors::{PlannedTensor, StreamingWriter};
use tritium::model::Checkpoint;

/// A child process (X server, window, web server) killed when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where end-to-end tests leave screenshots: `$TRITIUM_ARTIFACTS`, or `<target>/artifacts`.
pub fn artifacts() -> PathBuf {
    let dir = std::env::var_os("TRITIUM_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("../artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The output of one `tritium` run.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub fn tritium(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_tritium")).args(args).output().expect("run tritium");
    let run = Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!run.stderr.contains("panicked"), "tritium {args:?} panicked:\n{}", run.stderr);
    run
}

/// Runs tritium and fails the test with its output unless it succeeds.
pub fn tritium_ok(args: &[&str]) -> Run {
    let run = tritium(args);
    assert!(run.ok, "tritium {args:?} failed:\n{}", run.stderr);
    run
}

/// Runs tritium, expects failure and an error message containing every `needle`.
pub fn tritium_fails(args: &[&str], needles: &[&str]) {
    let run = tritium(args);
    assert!(!run.ok, "tritium {args:?} should have failed but printed:\n{}", run.stdout);
    for needle in needles {
        assert!(run.stderr.contains(needle), "error for {args:?} lacks {needle:?}:\n{}", run.stderr);
    }
    // An error printed with its causes says each once: no "cause: cause".
    for line in run.stderr.lines() {
        let clauses: Vec<&str> = line.split(": ").collect();
        let repeated = clauses.windows(2).any(|w| w[0] == w[1]);
        assert!(!repeated, "error for {args:?} repeats itself:\n{line}");
    }
}

/// What `scripts/make_fixtures.py` recorded from transformers.
#[derive(serde::Deserialize)]
pub struct Expected {
    pub prompt_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    pub max_new_tokens: usize,
    pub max_abs_logit: f32,
}

pub fn expected(dir: &Path) -> Expected {
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}

pub fn ids_arg(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    tritium::npy::read_f32(&mut File::open(path).unwrap()).unwrap()
}

/// One tensor of a checkpoint being rewritten.
pub struct Tensor {
    pub meta: PlannedTensor,
    pub bytes: Vec<u8>,
}

/// Copies the model in `src` to a fresh temporary folder as a single
/// `model.safetensors`, letting `edit` change the tensor list and `config.json`.
pub fn rewrite(
    src: &Path,
    edit: impl FnOnce(&mut Vec<Tensor>),
    edit_config: impl FnOnce(&mut serde_json::Value),
) -> tempfile::TempDir {
    let ckpt = Checkpoint::open(src).unwrap();
    let mut tensors: Vec<Tensor> = ckpt
        .tensors()
        .map(|t| Tensor {
            meta: PlannedTensor::new(t.name(), t.dtype().clone(), t.shape().to_vec()),
            bytes: ckpt.bytes(t).to_vec(),
        })
        .collect();
    edit(&mut tensors);
    let dir = tempfile::tempdir().unwrap();
    write_tensors(&dir.path().join("model.safetensors"), &tensors);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

/// Writes tensors whose bytes may disagree with their declared shape (to make
/// lying headers): the header is built from the byte lengths actually given.
pub fn write_tensors(path: &Path, tensors: &[Tensor]) {
    let plan: Vec<PlannedTensor> = tensors.iter().map(|t| t.meta.clone()).collect();
    let mut w = StreamingWriter::new(File::create(path).unwrap(), &plan, &BTreeMap::new()).unwrap();
    for t in tensors {
        w.write(&t.bytes).unwrap();
    }
    w.finish().unwrap();
}

pub fn find<'a>(tensors: &'a mut [Tensor], name: &str) -> &'a mut Tensor {
    tensors.iter_mut().find(|t| t.meta.name == name).unwrap_or_else(|| panic!("no tensor {name}"))
}

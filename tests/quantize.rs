//! `tritium quantize` against the model card's algorithm as implemented in PyTorch
//! (`packed_reference.safetensors`, written by `scripts/make_fixtures.py`).

mod common;
use common::*;

use tritium::model::safetensors::{header_len, parse_header};
use tritium::model::Checkpoint;

/// Every tensor of a single safetensors file, name → (dtype, shape, bytes).
fn read_all(path: &std::path::Path) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let n = header_len(&bytes, bytes.len() as u64).unwrap() as usize;
    parse_header(&bytes[8..8 + n], bytes.len() as u64)
        .unwrap()
        .into_iter()
        .map(|e| {
            let data = bytes[e.offset as usize..(e.offset + e.len) as usize].to_vec();
            (e.name, (e.dtype.to_string(), e.shape, data))
        })
        .collect()
}

#[test]
fn quantized_bytes_and_scales_equal_pytorch_bit_for_bit() {
    let input = fixture("dense-f32");
    let out = tempfile::tempdir().unwrap();
    tritium_ok(&[
        "quantize",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.path().to_str().unwrap(),
        "--pack-embeddings",
    ]);
    let reference = read_all(&input.join("packed_reference.safetensors"));
    let ckpt = Checkpoint::open(out.path()).unwrap();
    assert_eq!(ckpt.config.declared_group_size(), Some(64));
    for (name, (dtype, shape, bytes)) in &reference {
        let ours = ckpt.get(name).unwrap_or_else(|| panic!("quantized model lacks {name}"));
        assert_eq!(ours.dtype().to_string(), *dtype, "{name}: dtype");
        assert_eq!(ours.shape(), shape.as_slice(), "{name}: shape");
        assert!(ckpt.bytes(ours) == bytes.as_slice(), "{name}: bytes differ from PyTorch's");
    }
    // Norms are copied unchanged and the packed model is usable.
    let input_ckpt = Checkpoint::open(&input).unwrap();
    let norm = "model.layers.0.input_layernorm.weight";
    assert_eq!(ckpt.bytes(ckpt.get(norm).unwrap()), input_ckpt.bytes(input_ckpt.get(norm).unwrap()));
    let run = tritium_ok(&["inspect", "--model", out.path().to_str().unwrap(), "--json"]);
    let info: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(info["group_size"], 64);
    tritium_ok(&["generate", "--model", out.path().to_str().unwrap(), "--ids", "1,2,3", "--max-tokens", "3"]);
}

#[test]
fn quantize_shards_and_refuses_bad_group_sizes() {
    let input = fixture("dense-f32");
    let out = tempfile::tempdir().unwrap();
    tritium_ok(&[
        "quantize",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.path().to_str().unwrap(),
        "--max-shard-size",
        "100KB",
    ]);
    let shards = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".safetensors"))
        .count();
    assert!(shards > 1, "expected several shards, got {shards}");
    let a = Checkpoint::open(out.path()).unwrap();
    assert!(a.get("model.layers.1.mlp.down_proj.weight.scales").is_some());

    let out2 = tempfile::tempdir().unwrap();
    tritium_fails(
        &[
            "quantize",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out2.path().to_str().unwrap(),
            "--group-size",
            "96",
        ],
        &["not divisible by the group size 96"],
    );
    // An already packed model is refused.
    tritium_fails(
        &["quantize", "--input", fixture("gqa-tied").to_str().unwrap(), "--output", out2.path().to_str().unwrap()],
        &["already packed"],
    );
}

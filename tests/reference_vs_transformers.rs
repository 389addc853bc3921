//! The CPU reference against logits and greedy ids recorded from Hugging Face
//! transformers (`scripts/make_fixtures.py`).

mod common;
use common::*;

const FIXTURES: &[&str] = &["gqa-tied", "mha-untied-bf16-rmsnorm", "mqa-packed-norm", "long-prompt"];

#[test]
fn cpu_logits_match_transformers() {
    for name in FIXTURES {
        let dir = fixture(name);
        let exp = expected(&dir);
        let out = tempfile::tempdir().unwrap();
        let npy = out.path().join("logits.npy");
        tritium_ok(&[
            "score",
            "--model",
            dir.to_str().unwrap(),
            "--ids",
            &ids_arg(&exp.prompt_ids),
            "--backend",
            "cpu",
            "--out",
            npy.to_str().unwrap(),
        ]);
        let (shape, ours) = read_npy(&npy);
        let (want_shape, theirs) = read_npy(&dir.join("logits.npy"));
        assert_eq!(shape, want_shape, "{name}: logits shape");
        let vocab = shape[1];
        let max_diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(
            max_diff <= 1e-3 * exp.max_abs_logit,
            "{name}: max |logit difference| {max_diff} exceeds 1e-3 * {}",
            exp.max_abs_logit
        );
        for (pos, (a, b)) in ours.chunks(vocab).zip(theirs.chunks(vocab)).enumerate() {
            let argmax = |v: &[f32]| tritium::sampling::argmax(v);
            assert_eq!(argmax(a), argmax(b), "{name}: argmax differs at position {pos}");
        }
    }
}

#[test]
fn cpu_greedy_generation_matches_transformers() {
    for name in FIXTURES {
        let dir = fixture(name);
        let exp = expected(&dir);
        let run = tritium_ok(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--ids",
            &ids_arg(&exp.prompt_ids),
            "--max-tokens",
            &exp.max_new_tokens.to_string(),
            "--temperature",
            "0",
            "--print-ids",
            "--backend",
            "cpu",
        ]);
        let last = run.stdout.lines().last().unwrap_or_default();
        assert_eq!(last, ids_arg(&exp.greedy_ids), "{name}: greedy continuation");
    }
}

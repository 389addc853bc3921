//! The tokenizer and chat template against ids and renderings recorded from
//! Hugging Face transformers (`scripts/make_tokenizer_fixture.py`), and text
//! prompts end to end.

mod common;
use common::*;

use tritium::tokenizer::{ChatMessage, TextStream, Tokenizer, CHATML_TEMPLATE};

#[derive(serde::Deserialize)]
struct Encoded {
    text: String,
    ids: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct Chat {
    messages: Vec<ChatMessage>,
    text: String,
    ids: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct Expected {
    encode: Vec<Encoded>,
    chat: Vec<Chat>,
}

fn load() -> (Tokenizer, Expected) {
    let dir = fixture("qwen2.5-tokenizer");
    let tok = Tokenizer::from_dir(&dir).unwrap().expect("tokenizer.json present");
    let exp = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    (tok, exp)
}

#[test]
fn ids_and_text_match_transformers() {
    let (tok, exp) = load();
    for case in &exp.encode {
        assert_eq!(tok.encode(&case.text).unwrap(), case.ids, "encoding {:?}", case.text);
        // Byte-level BPE decodes back to the same text (special tokens are skipped).
        if !case.text.contains("<|") {
            assert_eq!(tok.decode(&case.ids), case.text);
        }
        let mut stream = TextStream::new(&tok);
        let streamed: String = case.ids.iter().filter_map(|&id| stream.push(id)).collect();
        assert_eq!(streamed, stream.text(), "streaming {:?} never splits a character", case.text);
    }
    let mut stops = tok.stop_ids().to_vec();
    stops.sort();
    assert_eq!(stops, vec![151643, 151645], "<|endoftext|> and <|im_end|> end replies");
}

#[test]
fn chat_template_renders_as_transformers_does() {
    let (tok, exp) = load();
    for case in &exp.chat {
        let text = tok.render_chat(&case.messages, true).unwrap();
        assert_eq!(text, case.text);
        assert_eq!(tok.encode(&text).unwrap(), case.ids);
    }
    // Without a template in tokenizer_config.json, the built-in ChatML one gives the same text.
    let json = std::fs::read(fixture("qwen2.5-tokenizer").join("tokenizer.json")).unwrap();
    let bare = Tokenizer::from_bytes(&json, None).unwrap();
    for case in &exp.chat {
        assert_eq!(bare.render_chat(&case.messages, true).unwrap(), case.text, "built-in template");
    }
    assert!(CHATML_TEMPLATE.contains("<|im_start|>"));
}

#[test]
fn a_text_prompt_runs_the_same_ids_as_its_tokens() {
    let model = tempfile::tempdir().unwrap();
    let m = model.path().to_str().unwrap();
    let tok_dir = fixture("qwen2.5-tokenizer");
    tritium_ok(&["synth", "--shape", "tiny", "--output", m, "--seed", "3", "--tokenizer", tok_dir.to_str().unwrap()]);
    let (tok, _) = load();
    let prompt = "Ternary weights are -1, 0 or +1.";
    let text_run = tritium_ok(&["generate", "--model", m, "--prompt", prompt, "--max-tokens", "6", "--print-ids"]);
    let ids = ids_arg(&tok.encode(prompt).unwrap());
    let id_run = tritium_ok(&["generate", "--model", m, "--ids", &ids, "--max-tokens", "6"]);
    assert_eq!(text_run.stdout.lines().last(), id_run.stdout.lines().last());
    let summary = &text_run.stderr;
    for part in ["load: ", "prompt: ", "generated: 6 tokens", "tokens/s"] {
        assert!(summary.contains(part), "a llama.cpp-style summary with {part:?}: {summary}");
    }

    // --chat wraps the prompt in the template; the CPU reference agrees with the GPU.
    let chat = |backend: &str| {
        tritium_ok(&[
            "generate",
            "--model",
            m,
            "--prompt",
            "Hi",
            "--chat",
            "--max-tokens",
            "4",
            "--print-ids",
            "--backend",
            backend,
        ])
        .stdout
        .lines()
        .last()
        .map(str::to_string)
    };
    assert_eq!(chat("gpu"), chat("cpu"));
    tritium_fails(
        &["generate", "--model", fixture("gqa-tied").to_str().unwrap(), "--prompt", "hi"],
        &["--prompt needs tokenizer.json"],
    );
}

#[test]
fn terminal_chat_keeps_the_conversation_and_resets() {
    use std::io::Write;
    let model = tempfile::tempdir().unwrap();
    let m = model.path().to_str().unwrap();
    let tok_dir = fixture("qwen2.5-tokenizer");
    tritium_ok(&["synth", "--shape", "tiny", "--output", m, "--seed", "4", "--tokenizer", tok_dir.to_str().unwrap()]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tritium"))
        .args(["chat", "--model", m, "--max-tokens", "5", "--temperature", "0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hello\nAnd then?\n/reset\nHello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(conversation cleared)"), "{stderr}");
    assert_eq!(stderr.matches("[prompt:").count(), 3, "a summary after each of three replies: {stderr}");
    // The first turn after /reset starts from nothing again, so it repeats the first reply.
    let replies: Vec<&str> = stdout.split_terminator('\n').collect();
    let n = replies.len();
    assert!(n >= 3, "{stdout:?}");
    // Greedy replies of the same conversation are the same; the reply to "Hello"
    // after /reset is printed last.
    let (tok, _) = load();
    let ids = tok.encode(&tok.render_chat(&[ChatMessage::new("user", "Hello")], true).unwrap()).unwrap();
    let run = tritium_ok(&["generate", "--model", m, "--ids", &ids_arg(&ids), "--max-tokens", "5"]);
    let reply_ids: Vec<u32> = run.stdout.lines().last().unwrap().split(',').map(|s| s.parse().unwrap()).collect();
    let want = tok.decode(&reply_ids);
    assert!(stdout.trim_end().ends_with(want.trim_end()), "last reply {stdout:?} should end with {want:?}");
}

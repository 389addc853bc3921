//! A conversation over several turns ([`ChatSession`]), as the window and the
//! terminal chat hold it: the KV cache kept between turns must give the same
//! replies as running every turn from scratch, and Stop must end a reply at
//! the very token it is asked.

mod common;

use common::{fixture, tritium_ok};
use tritium::backend::StopReason;
use tritium::chat::{ChatSession, ReplyOptions};
use tritium::engine::{Engine, EngineOptions};
use tritium::gpu::{DeviceOptions, GpuContext};
use tritium::model::Model;
use tritium::sampling::SamplingParams;
use tritium::tokenizer::{ChatMessage, Tokenizer};

fn session_and_engine(dir: &std::path::Path) -> (ChatSession, Engine) {
    let model = Model::open(dir).unwrap();
    let gpu = pollster::block_on(GpuContext::new(&DeviceOptions::default()))
        .expect("a GPU adapter (on a machine without one, install mesa-vulkan-drivers)");
    let options = EngineOptions { ctx: Some(256), ..Default::default() };
    let c = model.config();
    let engine =
        pollster::block_on(Engine::load(&gpu, c, &model.layout, &model.checkpoint, &options, &mut |_, _| {})).unwrap();
    let tokenizer = Tokenizer::from_dir(dir).unwrap().unwrap();
    (ChatSession::new(tokenizer, c.eos_ids()), engine)
}

#[test]
fn cached_turns_match_fresh_runs_and_stop_is_immediate() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().to_str().unwrap();
    let tokenizer = fixture("qwen2.5-tokenizer");
    tritium_ok(&["synth", "--shape", "tiny", "--output", m, "--seed", "9", "--tokenizer", tokenizer.to_str().unwrap()]);
    let greedy = ReplyOptions {
        sampling: SamplingParams { temperature: 0.0, ..Default::default() },
        max_tokens: 6,
        decode_chunk: 1,
    };

    // Two turns in one session: the second reuses the cache of the first.
    let (mut session, mut engine) = session_and_engine(dir.path());
    let mut messages = vec![ChatMessage::new("user", "Hello!")];
    let first = session.reply(&mut engine, &messages, &greedy, &mut |_| true).unwrap();
    messages.push(ChatMessage::new("assistant", &first.text));
    messages.push(ChatMessage::new("user", "And then?"));
    let second = session.reply(&mut engine, &messages, &greedy, &mut |_| true).unwrap();
    assert!(second.prompt_tokens < session.context_used() / 2, "the second turn reran the whole conversation");

    // The same second turn in a fresh session, with the default chunking of the command line.
    let (mut fresh, mut fresh_engine) = session_and_engine(dir.path());
    let chunked = ReplyOptions { decode_chunk: tritium::backend::DECODE_CHUNK, ..greedy.clone() };
    let again = fresh.reply(&mut fresh_engine, &messages, &chunked, &mut |_| true).unwrap();
    assert_eq!(again.ids, second.ids);
    assert_eq!(again.text, second.text);

    // Stop after the third token: exactly three tokens come out.
    let mut calls = 0;
    let stopped = session
        .reply(&mut engine, &messages[..1], &greedy, &mut |_| {
            calls += 1;
            calls < 3
        })
        .unwrap();
    assert_eq!(stopped.reason, StopReason::Stopped);
    assert_eq!(stopped.ids, first.ids[..3]);
}

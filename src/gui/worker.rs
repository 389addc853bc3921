//! The inference thread: it owns the engine, loads models and generates
//! replies, so the window never waits on the GPU. The window sends it
//! [`Request`]s and reads [`Event`]s; a shared flag stops a reply.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use eframe::egui;

use crate::backend::Backend;
use crate::chat::{ChatSession, Reply, ReplyOptions};
use crate::engine::{Engine, EngineOptions};
use crate::gpu::GpuContext;
use crate::model::Model;
use crate::tokenizer::{ChatMessage, Tokenizer};

pub enum Request {
    Load(PathBuf),
    Reply { messages: Vec<ChatMessage>, options: ReplyOptions },
}

pub enum Event {
    /// Bytes of weights uploaded so far, of the total.
    Progress {
        done: u64,
        total: u64,
    },
    Loaded(LoadedModel),
    LoadFailed {
        dir: PathBuf,
        error: String,
    },
    /// Text the reply just grew by.
    Text(String),
    Finished {
        reply: Reply,
        context_used: usize,
    },
    ReplyFailed(String),
}

/// What the window shows about the loaded model.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub dir: PathBuf,
    pub context_len: usize,
    pub gpu_bytes: u64,
    pub load_s: f64,
}

/// Starts the thread. It ends when the window drops its [`Sender`].
pub fn spawn(
    gpu: GpuContext,
    ctx: Option<usize>,
    stop: Arc<AtomicBool>,
    repaint: egui::Context,
) -> (Sender<Request>, Receiver<Event>) {
    let (request_tx, requests) = std::sync::mpsc::channel();
    let (events, event_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || {
            let mut worker = Worker { gpu, ctx, stop, events, repaint, loaded: None };
            for request in requests {
                worker.handle(request);
            }
        })
        .expect("starting the inference thread");
    (request_tx, event_rx)
}

struct Worker {
    gpu: GpuContext,
    ctx: Option<usize>,
    stop: Arc<AtomicBool>,
    events: Sender<Event>,
    repaint: egui::Context,
    loaded: Option<(Engine, ChatSession)>,
}

impl Worker {
    fn send(&self, event: Event) {
        // The window may already be closing; nothing is left to tell then.
        let _ = self.events.send(event);
        self.repaint.request_repaint();
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Load(dir) => {
                // Free the old model's GPU memory before uploading the new one.
                self.loaded = None;
                let started = web_time::Instant::now();
                match self.load(&dir) {
                    Ok((engine, session)) => {
                        let info = LoadedModel {
                            dir,
                            context_len: engine.context_len(),
                            gpu_bytes: engine.memory_plan().total(),
                            load_s: started.elapsed().as_secs_f64(),
                        };
                        self.loaded = Some((engine, session));
                        self.send(Event::Loaded(info));
                    }
                    Err(error) => self.send(Event::LoadFailed { dir, error }),
                }
            }
            Request::Reply { messages, options } => {
                let Some((engine, session)) = &mut self.loaded else {
                    return self.send(Event::ReplyFailed("no model is loaded: open a model folder first".into()));
                };
                let (events, repaint, stop) = (&self.events, &self.repaint, &self.stop);
                let result = session.reply(engine, &messages, &options, &mut |piece| {
                    if !piece.is_empty() {
                        let _ = events.send(Event::Text(piece.to_string()));
                        repaint.request_repaint();
                    }
                    !stop.load(Ordering::SeqCst)
                });
                let event = match result {
                    Ok(reply) => Event::Finished { reply, context_used: session.context_used() },
                    Err(e) => Event::ReplyFailed(e.to_string()),
                };
                self.send(event);
            }
        }
    }

    fn load(&self, dir: &Path) -> Result<(Engine, ChatSession), String> {
        let model = Model::open(dir).map_err(|e| e.to_string())?;
        let tokenizer = Tokenizer::from_dir(dir)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} has no tokenizer.json, which chat needs", dir.display()))?;
        let options = EngineOptions { ctx: self.ctx, ..Default::default() };
        let mut last_percent = u64::MAX;
        let mut progress = |done: u64, total: u64| {
            let percent = done * 100 / total.max(1);
            if percent != last_percent {
                last_percent = percent;
                self.send(Event::Progress { done, total });
            }
        };
        let engine = pollster::block_on(Engine::load(
            &self.gpu,
            model.config(),
            &model.layout,
            &model.checkpoint,
            &options,
            &mut progress,
        ))
        .map_err(|e| format!("could not load the model onto {}: {e}", self.gpu.describe()))?;
        Ok((engine, ChatSession::new(tokenizer, model.config().eos_ids())))
    }
}

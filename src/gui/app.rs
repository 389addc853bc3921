//! The chat window: toolbar, settings, transcript, input and status line.
//! It only draws and reacts; the worker thread does every model operation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use eframe::egui;

use super::file_browser::{FileBrowser, Outcome, Purpose};
use super::markdown::{blocks, Block};
use super::transcript::{Settings, Transcript, Turn};
use super::worker::{self, Event, LoadedModel, Request};
use super::GuiOptions;
use crate::backend;
use crate::chat::ReplyOptions;
use crate::gpu::GpuContext;
use crate::tokenizer::ChatMessage;

const INPUT_ID: &str = "message-input";
const OPEN_SHORTCUT: egui::KeyboardShortcut = egui::KeyboardShortcut::new(egui::Modifiers::COMMAND, egui::Key::O);

pub struct ChatApp {
    requests: Sender<Request>,
    events: Receiver<Event>,
    stop: Arc<AtomicBool>,
    transcript: Transcript,
    input: String,
    /// The reply being streamed, if one is.
    streaming: Option<String>,
    model: Option<LoadedModel>,
    /// The folder being loaded and the fraction uploaded.
    loading: Option<(PathBuf, f32)>,
    error: Option<String>,
    /// The last reply's speed and how it ended.
    last_reply: Option<String>,
    context_used: usize,
    browser: Option<FileBrowser>,
    save_on_exit: Option<PathBuf>,
    adapter: String,
    focus_input: bool,
}

impl ChatApp {
    pub fn new(cc: &eframe::CreationContext<'_>, gpu: GpuContext, options: GuiOptions) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let adapter = gpu.describe();
        let (requests, events) = worker::spawn(gpu, options.ctx, stop.clone(), cc.egui_ctx.clone());
        cc.egui_ctx.all_styles_mut(|style| style.spacing.item_spacing = egui::vec2(8.0, 6.0));
        let mut app = ChatApp {
            requests,
            events,
            stop,
            transcript: Transcript { system: options.system, settings: options.settings, ..Default::default() },
            input: String::new(),
            streaming: None,
            model: None,
            loading: None,
            error: None,
            last_reply: None,
            context_used: 0,
            browser: None,
            save_on_exit: options.save_transcript,
            adapter,
            focus_input: true,
        };
        match options.model {
            Some(dir) => app.load_model(dir),
            None => app.error = Some("No model loaded: open a model folder (or drop one on this window).".into()),
        }
        app
    }

    fn load_model(&mut self, dir: PathBuf) {
        if self.streaming.is_some() {
            self.error = Some("Stop the reply before loading another model.".into());
            return;
        }
        self.error = None;
        self.loading = Some((dir.clone(), 0.0));
        let _ = self.requests.send(Request::Load(dir));
    }

    fn busy(&self) -> bool {
        self.streaming.is_some() || self.loading.is_some()
    }

    fn send_message(&mut self) {
        let text = self.input.trim_end().to_string();
        if text.trim().is_empty() || self.busy() {
            return;
        }
        if self.model.is_none() {
            self.error = Some("Open a model folder before sending a message.".into());
            return;
        }
        let settings = &self.transcript.settings;
        let options = ReplyOptions {
            sampling: settings.sampling(),
            max_tokens: settings.max_tokens,
            decode_chunk: backend::DECODE_CHUNK,
        };
        if let Err(e) = options.sampling.validate() {
            self.error = Some(e); // the message stays in the box, to send again
            return;
        }
        self.input.clear();
        self.error = None;
        self.transcript.turns.push(Turn { role: "user".into(), content: text, ids: vec![] });
        let mut messages = Vec::new();
        if !self.transcript.system.trim().is_empty() {
            messages.push(ChatMessage::new("system", &self.transcript.system));
        }
        messages.extend(self.transcript.turns.iter().map(|t| ChatMessage::new(&t.role, &t.content)));
        self.stop.store(false, Ordering::SeqCst);
        self.streaming = Some(String::new());
        let _ = self.requests.send(Request::Reply { messages, options });
    }

    fn new_chat(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.transcript.turns.clear();
        self.last_reply = None;
        self.focus_input = true;
    }

    fn save_transcript(&mut self, path: &Path) {
        self.transcript.model = self.model.as_ref().map(|m| m.dir.clone());
        if let Err(e) = self.transcript.save(path) {
            self.error = Some(e);
        }
    }

    fn drain_events(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            match event {
                Event::Progress { done, total } => {
                    if let Some((_, fraction)) = &mut self.loading {
                        *fraction = done as f32 / total.max(1) as f32;
                    }
                }
                Event::Loaded(model) => {
                    // Also on stderr, as the command line reports it (scripts wait for this line).
                    eprintln!(
                        "loaded {} in {:.2} s ({:.1} MB on the GPU, context {})",
                        model.dir.display(),
                        model.load_s,
                        model.gpu_bytes as f64 / 1e6,
                        model.context_len
                    );
                    self.loading = None;
                    self.context_used = 0;
                    self.model = Some(model);
                    self.focus_input = true;
                }
                Event::LoadFailed { dir, error } => {
                    eprintln!("error: could not load {}: {error}", dir.display());
                    self.loading = None;
                    self.model = None;
                    self.error = Some(format!("Could not load {}: {error}", dir.display()));
                }
                Event::Text(piece) => {
                    if let Some(text) = &mut self.streaming {
                        text.push_str(&piece);
                    }
                }
                Event::Finished { reply, context_used } => {
                    self.streaming = None;
                    self.context_used = context_used;
                    let how = reply.reason.note();
                    self.last_reply =
                        Some(format!("{} tokens, {:.1} tokens/s{how}", reply.ids.len(), reply.tokens_per_s()));
                    // A reply that New chat interrupted belongs to no conversation.
                    if self.transcript.turns.last().is_some_and(|t| t.role == "user") {
                        self.transcript.turns.push(Turn {
                            role: "assistant".into(),
                            content: reply.text,
                            ids: reply.ids,
                        });
                    }
                    if let Some(path) = self.save_on_exit.clone() {
                        self.save_transcript(&path);
                    }
                }
                Event::ReplyFailed(error) => {
                    self.streaming = None;
                    // Give the message back so it can be edited and sent again.
                    if let Some(turn) = self.transcript.turns.pop_if(|t| t.role == "user") {
                        self.input = turn.content;
                    }
                    self.error = Some(error);
                }
            }
        }
    }

    fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).filter(|p| !p.as_os_str().is_empty()).collect()
        });
        if let Some(path) = dropped.into_iter().next() {
            if path.is_dir() {
                self.load_model(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                self.open_conversation(&path);
            } else {
                self.error = Some(format!("{} is neither a model folder nor a conversation (.json)", path.display()));
            }
        }
    }

    fn open_conversation(&mut self, path: &Path) {
        if self.streaming.is_some() {
            self.error = Some("Stop the reply before loading a conversation.".into());
            return;
        }
        match Transcript::load(path) {
            Ok(transcript) => {
                let model = transcript.model.clone();
                self.transcript = transcript;
                self.last_reply = None;
                // Offer the conversation's model when none is loaded.
                if let (None, Some(dir)) = (&self.model, model) {
                    if dir.is_dir() {
                        self.load_model(dir);
                    }
                }
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn open_model_browser(&mut self) {
        let start = self.model.as_ref().and_then(|m| m.dir.parent().map(Path::to_path_buf)).unwrap_or_default();
        self.browser = Some(FileBrowser::new(Purpose::ModelFolder, &start));
    }

    fn toolbar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("Tritium");
            ui.separator();
            let open = egui::Button::new("Open model…").shortcut_text(ui.ctx().format_shortcut(&OPEN_SHORTCUT));
            if ui.add_enabled(!self.busy(), open).clicked() {
                self.open_model_browser();
            }
            if ui.button("New chat").clicked() {
                self.new_chat();
            }
            if ui.add_enabled(!self.transcript.turns.is_empty(), egui::Button::new("Save…")).clicked() {
                self.browser =
                    Some(FileBrowser::new(Purpose::SaveConversation, &std::env::current_dir().unwrap_or_default()));
            }
            if ui.add_enabled(self.streaming.is_none(), egui::Button::new("Load…")).clicked() {
                self.browser =
                    Some(FileBrowser::new(Purpose::OpenConversation, &std::env::current_dir().unwrap_or_default()));
            }
            ui.separator();
            match (&self.model, &self.loading) {
                (_, Some((dir, _))) => ui.label(format!("loading {}", dir.display())),
                (Some(model), None) => ui.label(format!("model: {}", model.dir.display())),
                (None, None) => ui.weak("no model"),
            };
        });
        if let Some((_, fraction)) = self.loading {
            ui.add(
                egui::ProgressBar::new(fraction)
                    .show_percentage()
                    .text(format!("uploading weights to the GPU: {:.0} %", fraction * 100.0)),
            );
        }
        if let Some(error) = self.error.clone() {
            egui::Frame::new()
                .fill(ui.visuals().extreme_bg_color)
                .stroke(egui::Stroke::new(1.0, ui.visuals().error_fg_color))
                .inner_margin(6.0)
                .show(ui, |ui| {
                    ui.horizontal(|ui| {
                        ui.add(egui::Label::new(&error).wrap());
                        if ui.small_button("Dismiss").on_hover_text("dismiss").clicked() {
                            self.error = None;
                        }
                    });
                });
        }
    }

    fn settings_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Settings");
        ui.label("System prompt");
        ui.add(
            egui::TextEdit::multiline(&mut self.transcript.system)
                .hint_text("empty: the model's default")
                .desired_rows(4)
                .desired_width(f32::INFINITY),
        );
        ui.add_space(6.0);
        let s: &mut Settings = &mut self.transcript.settings;
        egui::Grid::new("sampling").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
            ui.label("Temperature").on_hover_text("0 always picks the most likely token");
            ui.add(egui::Slider::new(&mut s.temperature, 0.0..=2.0));
            ui.end_row();
            ui.label("Top-p");
            ui.add(egui::Slider::new(&mut s.top_p, 0.05..=1.0));
            ui.end_row();
            ui.label("Top-k").on_hover_text("0 = all tokens");
            ui.add(egui::DragValue::new(&mut s.top_k).range(0..=1000));
            ui.end_row();
            ui.label("Max tokens");
            ui.add(egui::DragValue::new(&mut s.max_tokens).range(1..=32768));
            ui.end_row();
            ui.label("Seed");
            ui.add(egui::DragValue::new(&mut s.seed));
            ui.end_row();
        });
        if ui.button("Reset to defaults").clicked() {
            *s = Settings::default();
        }
    }

    fn input_area(&mut self, ui: &mut egui::Ui) {
        let id = egui::Id::unique(INPUT_ID);
        // Enter sends, Shift+Enter adds a line: take Enter before the text box sees
        // it, but send after the box has taken this frame's typing (a fast typist's
        // last characters arrive in the same frame as the Enter).
        let has_focus = ui.memory(|m| m.has_focus(id));
        let enter = has_focus && ui.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::Enter));
        ui.horizontal(|ui| {
            let buttons_width = 90.0;
            let edit = egui::TextEdit::multiline(&mut self.input)
                .id(id)
                .hint_text("Message (Enter sends, Shift+Enter for a new line)")
                .desired_rows(3)
                .desired_width(ui.available_width() - buttons_width);
            let response = ui.add(edit);
            if self.focus_input {
                response.request_focus();
                self.focus_input = false;
            }
            if enter {
                self.send_message();
            }
            ui.vertical(|ui| {
                if self.streaming.is_some() {
                    if ui.add_sized([80.0, 28.0], egui::Button::new("Stop")).clicked() {
                        self.stop.store(true, Ordering::SeqCst);
                    }
                } else {
                    let can_send = !self.busy() && self.model.is_some() && !self.input.trim().is_empty();
                    if ui.add_enabled(can_send, egui::Button::new("Send").min_size([80.0, 28.0].into())).clicked() {
                        self.send_message();
                    }
                }
            });
        });
    }

    fn status_line(&self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            let small = |ui: &mut egui::Ui, text: String| ui.label(egui::RichText::new(text).small());
            match &self.last_reply {
                Some(reply) => small(ui, reply.clone()),
                None if self.streaming.is_some() => small(ui, "generating…".into()),
                None => small(ui, "ready".into()),
            };
            ui.separator();
            match &self.model {
                Some(m) => small(ui, format!("context {} / {} tokens", self.context_used, m.context_len)),
                None => small(ui, "context –".into()),
            };
            ui.separator();
            small(ui, self.adapter.clone());
            if let Some(m) = &self.model {
                ui.separator();
                small(ui, format!("{:.0} MB on the GPU, loaded in {:.1} s", m.gpu_bytes as f64 / 1e6, m.load_s));
            }
        });
    }

    fn transcript_view(&mut self, ui: &mut egui::Ui) {
        egui::ScrollArea::vertical().auto_shrink([false; 2]).stick_to_bottom(true).show(ui, |ui| {
            ui.set_width(ui.available_width());
            if self.transcript.turns.is_empty() && self.streaming.is_none() {
                ui.add_space(40.0);
                ui.vertical_centered(|ui| {
                    ui.weak("Type a message below to start. Settings are on the left.");
                });
            }
            for turn in &self.transcript.turns {
                message(ui, &turn.role, &turn.content);
            }
            if let Some(text) = &self.streaming {
                let shown = if text.is_empty() { "…" } else { text.as_str() };
                message(ui, "assistant", shown);
            }
        });
    }
}

/// One turn: who spoke, then prose and code blocks.
fn message(ui: &mut egui::Ui, role: &str, content: &str) {
    let user = role == "user";
    let fill = if user { ui.visuals().faint_bg_color } else { ui.visuals().panel_fill };
    egui::Frame::new().fill(fill).corner_radius(6.0).inner_margin(8.0).show(ui, |ui| {
        ui.set_width(ui.available_width());
        ui.label(egui::RichText::new(if user { "You" } else { "Assistant" }).strong());
        for block in blocks(content) {
            match block {
                Block::Text(text) => {
                    ui.add(egui::Label::new(text).selectable(true).wrap());
                }
                Block::Code { lang, code } => code_block(ui, lang, code),
            }
        }
    });
    ui.add_space(4.0);
}

fn code_block(ui: &mut egui::Ui, lang: &str, code: &str) {
    egui::Frame::new().fill(ui.visuals().code_bg_color).corner_radius(4.0).inner_margin(6.0).show(ui, |ui| {
        ui.set_width(ui.available_width());
        ui.horizontal(|ui| {
            ui.weak(if lang.is_empty() { "code" } else { lang });
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.small_button("Copy").clicked() {
                    ui.ctx().copy_text(code.to_string());
                }
            });
        });
        ui.add(egui::Label::new(egui::RichText::new(code).monospace()).selectable(true).wrap());
    });
}

impl eframe::App for ChatApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.drain_events();
        self.handle_dropped_files(&ctx);
        if ctx.input(|i| i.modifiers.command && i.key_pressed(egui::Key::Q)) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        if ctx.input_mut(|i| i.consume_shortcut(&OPEN_SHORTCUT)) && !self.busy() {
            self.open_model_browser();
        }

        egui::Panel::top("toolbar").show(ui, |ui| {
            ui.add_space(4.0);
            self.toolbar(ui);
            ui.add_space(2.0);
        });
        egui::Panel::bottom("status").show(ui, |ui| self.status_line(ui));
        egui::Panel::bottom("input").show(ui, |ui| {
            ui.add_space(6.0);
            self.input_area(ui);
            ui.add_space(6.0);
        });
        egui::Panel::left("settings").default_size(240.0).show(ui, |ui| self.settings_panel(ui));
        egui::CentralPanel::default().show(ui, |ui| self.transcript_view(ui));

        if let Some(browser) = &mut self.browser {
            match browser.show(&ctx) {
                Outcome::Open => {}
                Outcome::Cancelled => self.browser = None,
                Outcome::Chosen(path) => {
                    let purpose = browser.purpose();
                    self.browser = None;
                    match purpose {
                        Purpose::ModelFolder => self.load_model(path),
                        Purpose::OpenConversation => self.open_conversation(&path),
                        Purpose::SaveConversation => self.save_transcript(&path),
                    }
                }
            }
        }
        if ctx.input(|i| !i.raw.hovered_files.is_empty()) {
            let screen = ctx.content_rect();
            let painter =
                ctx.layer_painter(egui::LayerId::new(egui::Order::Foreground, egui::Id::unique("drop-overlay")));
            painter.rect_filled(screen, 0.0, egui::Color32::from_black_alpha(160));
            painter.text(
                screen.center(),
                egui::Align2::CENTER_CENTER,
                "Drop a model folder to load it (or a .json conversation)",
                egui::FontId::proportional(20.0),
                egui::Color32::WHITE,
            );
        }
    }

    fn on_exit(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(path) = self.save_on_exit.clone() {
            self.save_transcript(&path);
            if let Some(error) = &self.error {
                eprintln!("error: {error}");
            }
        }
    }
}

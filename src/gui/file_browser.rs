//! A small file browser drawn with egui: pick a model folder, open or save a
//! conversation. It needs no desktop portal or toolkit, so it works the same
//! on every platform and under a bare X server.

use std::path::{Path, PathBuf};

use eframe::egui;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A model folder (one with config.json is marked as a model).
    ModelFolder,
    /// An existing conversation file.
    OpenConversation,
    /// Where to write a conversation.
    SaveConversation,
}

pub enum Outcome {
    Open,
    Chosen(PathBuf),
    Cancelled,
}

pub struct FileBrowser {
    purpose: Purpose,
    dir: PathBuf,
    /// The path being typed; for saving, the file name.
    typed: String,
    folders: Vec<(String, bool)>,
    files: Vec<String>,
    error: Option<String>,
    /// Put the cursor in the path field when the browser opens.
    focus_field: bool,
}

impl FileBrowser {
    pub fn new(purpose: Purpose, start: &Path) -> Self {
        let dir = if start.is_dir() { start.to_path_buf() } else { std::env::current_dir().unwrap_or_default() };
        let typed = match purpose {
            Purpose::SaveConversation => "conversation.json".to_string(),
            _ => dir.display().to_string(),
        };
        let mut browser =
            FileBrowser { purpose, dir, typed, folders: vec![], files: vec![], error: None, focus_field: true };
        browser.read_dir();
        browser
    }

    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    fn title(&self) -> &'static str {
        match self.purpose {
            Purpose::ModelFolder => "Open a model folder",
            Purpose::OpenConversation => "Load a conversation",
            Purpose::SaveConversation => "Save the conversation",
        }
    }

    fn go(&mut self, dir: PathBuf) {
        self.dir = dir;
        if self.purpose != Purpose::SaveConversation {
            self.typed = self.dir.display().to_string();
        }
        self.read_dir();
    }

    fn read_dir(&mut self) {
        self.folders.clear();
        self.files.clear();
        self.error = None;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                self.error = Some(format!("cannot list {}: {e}", self.dir.display()));
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                self.folders.push((name, path.join("config.json").is_file()));
            } else if name.ends_with(".json") && self.purpose != Purpose::ModelFolder {
                self.files.push(name);
            }
        }
        self.folders.sort();
        self.files.sort();
    }

    /// Draws the browser as a window; says whether the user chose or cancelled.
    pub fn show(&mut self, ctx: &egui::Context) -> Outcome {
        let mut outcome = Outcome::Open;
        let mut go_to = None;
        egui::Window::new(self.title()).collapsible(false).resizable(true).default_width(520.0).show(ctx, |ui| {
            ui.horizontal(|ui| {
                if ui.button("Up").clicked() {
                    if let Some(parent) = self.dir.parent() {
                        go_to = Some(parent.to_path_buf());
                    }
                }
                ui.label(egui::RichText::new(self.dir.display().to_string()).monospace());
            });
            ui.separator();
            egui::ScrollArea::vertical().max_height(320.0).show(ui, |ui| {
                for (name, is_model) in &self.folders {
                    let label = if *is_model { format!("{name}/   (model)") } else { format!("{name}/") };
                    if ui.selectable_label(false, label).clicked() {
                        go_to = Some(self.dir.join(name));
                    }
                }
                for name in &self.files {
                    if ui.selectable_label(false, name.clone()).clicked() {
                        self.typed = match self.purpose {
                            Purpose::SaveConversation => name.clone(),
                            _ => self.dir.join(name).display().to_string(),
                        };
                    }
                }
            });
            ui.separator();
            let hint = match self.purpose {
                Purpose::SaveConversation => "file name",
                _ => "or type a path",
            };
            let field =
                ui.add(egui::TextEdit::singleline(&mut self.typed).hint_text(hint).desired_width(f32::INFINITY));
            if std::mem::take(&mut self.focus_field) {
                field.request_focus();
            }
            if let Some(error) = &self.error {
                ui.colored_label(ui.visuals().error_fg_color, error);
            }
            ui.horizontal(|ui| {
                let action = match self.purpose {
                    Purpose::ModelFolder => "Open this folder",
                    Purpose::OpenConversation => "Load",
                    Purpose::SaveConversation => "Save",
                };
                let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if ui.button(action).clicked() || entered {
                    let typed = PathBuf::from(self.typed.trim());
                    let path = match self.purpose {
                        Purpose::SaveConversation if typed.is_relative() => self.dir.join(typed),
                        _ => typed,
                    };
                    match self.purpose {
                        Purpose::ModelFolder if path.is_dir() => outcome = Outcome::Chosen(path),
                        Purpose::OpenConversation if path.is_file() => outcome = Outcome::Chosen(path),
                        Purpose::SaveConversation if !self.typed.trim().is_empty() => outcome = Outcome::Chosen(path),
                        Purpose::OpenConversation if path.is_dir() => go_to = Some(path),
                        _ => self.error = Some(format!("{} does not exist", path.display())),
                    }
                }
                if ui.button("Cancel").clicked() || ui.input(|i| i.key_pressed(egui::Key::Escape)) {
                    outcome = Outcome::Cancelled;
                }
            });
        });
        if let Some(dir) = go_to {
            self.go(dir);
        }
        outcome
    }
}

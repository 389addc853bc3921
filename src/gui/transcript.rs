//! A conversation as a JSON file: what Save and Load in the window read and
//! write, and what `--save-transcript` leaves behind when the window closes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sampling::{SamplingParams, DEFAULT_TOP_K};

/// Sampling settings as the window shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub max_tokens: usize,
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { temperature: 0.7, top_p: 0.8, top_k: DEFAULT_TOP_K, max_tokens: 512, seed: 0 }
    }
}

impl Settings {
    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            ..Default::default()
        }
    }
}

/// One turn: `role` is "user" or "assistant".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: String,
    pub content: String,
    /// The generated token ids of an assistant turn (end-of-turn token included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The model folder the conversation was held with.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Empty: the chat template's own system message.
    #[serde(default)]
    pub system: String,
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub turns: Vec<Turn>,
}

impl Transcript {
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let json = serde_json::to_string_pretty(self).expect("a transcript always serializes");
        std::fs::write(path, json + "\n").map_err(|e| format!("could not write {}: {e}", path.display()))
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("could not read {}: {e}", path.display()))?;
        let transcript: Transcript = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a Tritium conversation: {e}", path.display()))?;
        if let Some(t) = transcript.turns.iter().find(|t| t.role != "user" && t.role != "assistant") {
            return Err(format!("{}: unknown role {:?} (expected user or assistant)", path.display(), t.role));
        }
        Ok(transcript)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.json");
        let transcript = Transcript {
            model: Some("/models/q".into()),
            system: "Be brief.".into(),
            settings: Settings { temperature: 0.0, ..Default::default() },
            turns: vec![
                Turn { role: "user".into(), content: "Hi".into(), ids: vec![] },
                Turn { role: "assistant".into(), content: "Hello!".into(), ids: vec![9707, 0, 151645] },
            ],
        };
        transcript.save(&path).unwrap();
        assert_eq!(Transcript::load(&path).unwrap(), transcript);

        std::fs::write(&path, "{\"turns\": [{\"role\": \"tool\", \"content\": \"x\"}]}").unwrap();
        assert!(Transcript::load(&path).unwrap_err().contains("unknown role \"tool\""));
        std::fs::write(&path, "not json").unwrap();
        assert!(Transcript::load(&path).unwrap_err().contains("is not a Tritium conversation"));
    }
}

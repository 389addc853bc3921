//! Hugging Face `config.json` for Qwen2 / Qwen2.5, in both the older style
//! (top-level `rope_theta`, `torch_dtype`) and the transformers 5 style
//! (`rope_parameters: {rope_theta}`, `dtype`).

use serde::{Deserialize, Serialize};
use std::path::Path;

use super::ModelError;

/// The fields of `config.json` Tritium reads, with their Hugging Face names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: Option<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Absent in some configs: then every head has its own K/V (MHA).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Older checkpoints keep the RoPE base at the top level ...
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// ... transformers 5 keeps it here.
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// `torch_dtype` in older checkpoints, `dtype` in transformers 5.
    #[serde(default, alias = "torch_dtype")]
    pub dtype: Option<String>,
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub quantization_config: Option<QuantizationConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_type: Option<String>,
}

/// A token id or a list of them (`eos_token_id` is either in the wild).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `quantization_config` as Tritium's quantizer writes it:
/// `{"quant_method":"bitnet_158","bits":1.58,"group_size":64,"packing":"base3_columns"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantizationConfig {
    #[serde(default)]
    pub quant_method: Option<String>,
    #[serde(default)]
    pub bits: Option<f64>,
    #[serde(default)]
    pub group_size: Option<usize>,
    #[serde(default)]
    pub packing: Option<String>,
}

fn default_max_position_embeddings() -> usize {
    32768
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

const DEFAULT_ROPE_THETA: f64 = 10_000.0;

impl Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            ModelError::Config(msg) => ModelError::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses and validates the text of a `config.json`.
    /// RoPE inverse frequencies `theta^(-2i/head_dim)` for `i < head_dim/2`, as
    /// transformers computes them: exponents in f32, then one f32 reciprocal.
    /// The CPU reference and the GPU engine both use this one table.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let head_dim = self.head_dim();
        (0..head_dim / 2).map(|i| 1.0 / (self.rope_theta() as f32).powf((2 * i) as f32 / head_dim as f32)).collect()
    }

    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let config: Config = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("not a valid Qwen2 config.json: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the architecture and that the sizes fit together.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::Config(msg));
        let is_qwen2_arch = self.architectures.iter().any(|a| a == "Qwen2ForCausalLM");
        let is_qwen2_type = self.model_type.as_deref() == Some("qwen2");
        if !is_qwen2_arch && !is_qwen2_type {
            return bad(format!(
                "unsupported model: architectures {:?}, model_type {:?}; Tritium runs Qwen2 / Qwen2.5 (Qwen2ForCausalLM, model_type \"qwen2\")",
                self.architectures, self.model_type
            ));
        }
        for (name, value) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_kv_heads()),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 {
                return bad(format!("{name} must be positive, got 0"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "num_attention_heads ({}) does not divide hidden_size ({})",
                self.num_attention_heads, self.hidden_size
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads()) {
            return bad(format!(
                "num_key_value_heads ({}) does not divide num_attention_heads ({})",
                self.num_kv_heads(),
                self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("head dimension {} must be even for rotary embeddings", self.head_dim()));
        }
        if let Some(head_dim) = self.head_dim {
            if head_dim != self.hidden_size / self.num_attention_heads {
                return bad(format!(
                    "head_dim {head_dim} differs from hidden_size / num_attention_heads = {}; Qwen2 needs them equal",
                    self.hidden_size / self.num_attention_heads
                ));
            }
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps <= 0.0 {
            return bad(format!("rms_norm_eps must be positive, got {}", self.rms_norm_eps));
        }
        if self.rope_theta().is_nan() || self.rope_theta() <= 0.0 {
            return bad(format!("rope_theta must be positive, got {}", self.rope_theta()));
        }
        let rope_type = self.rope_parameters.as_ref().and_then(|p| p.rope_type.as_deref());
        let scaled = self.rope_scaling.as_ref().is_some_and(|v| !v.is_null());
        if rope_type.is_some_and(|t| t != "default") || scaled {
            return bad("RoPE scaling (rope_scaling / rope_type other than \"default\") is not supported yet".into());
        }
        if self.use_sliding_window {
            return bad("use_sliding_window = true is not supported; Qwen2.5 checkpoints ship with it false".into());
        }
        Ok(())
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Width of the K and V projections: `num_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads() * self.head_dim()
    }

    /// Query heads that share one K/V head.
    pub fn kv_group(&self) -> usize {
        self.num_attention_heads / self.num_kv_heads()
    }

    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters.as_ref().and_then(|p| p.rope_theta).or(self.rope_theta).unwrap_or(DEFAULT_ROPE_THETA)
    }

    /// Token ids that end generation.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id.as_ref().map(TokenIds::to_vec).unwrap_or_default()
    }

    /// The group size declared by `quantization_config`, if any.
    pub fn declared_group_size(&self) -> Option<usize> {
        self.quantization_config.as_ref().and_then(|q| q.group_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD_STYLE: &str = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":5120,
        "intermediate_size":27648,"num_hidden_layers":64,"num_attention_heads":40,"num_key_value_heads":8,
        "vocab_size":152064,"max_position_embeddings":32768,"rms_norm_eps":1e-6,"rope_theta":1000000.0,
        "tie_word_embeddings":false,"torch_dtype":"bfloat16","use_sliding_window":false,"eos_token_id":151643}"#;

    #[test]
    fn reads_the_older_style() {
        let c = Config::from_json(OLD_STYLE).unwrap();
        assert_eq!(c.rope_theta(), 1e6);
        assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
        assert_eq!(c.head_dim(), 128);
        assert_eq!(c.kv_dim(), 1024);
        assert_eq!(c.kv_group(), 5);
        assert_eq!(c.eos_ids(), vec![151643]);
    }

    #[test]
    fn reads_the_transformers_5_style() {
        let text = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":64,
            "intermediate_size":128,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,
            "vocab_size":256,"rope_parameters":{"rope_theta":500000.0,"rope_type":"default"},"dtype":"float32",
            "eos_token_id":[1,2],"quantization_config":{"quant_method":"bitnet_158","bits":1.58,"group_size":64,
            "packing":"base3_columns"}}"#;
        let c = Config::from_json(text).unwrap();
        assert_eq!(c.rope_theta(), 5e5);
        assert_eq!(c.dtype.as_deref(), Some("float32"));
        assert_eq!(c.eos_ids(), vec![1, 2]);
        assert_eq!(c.declared_group_size(), Some(64));
    }

    #[test]
    fn refuses_inconsistent_sizes() {
        let heads = OLD_STYLE.replace("\"num_attention_heads\":40", "\"num_attention_heads\":48");
        let err = Config::from_json(&heads).unwrap_err().to_string();
        assert!(err.contains("num_attention_heads (48) does not divide hidden_size (5120)"), "{err}");

        let kv = OLD_STYLE.replace("\"num_key_value_heads\":8", "\"num_key_value_heads\":3");
        let err = Config::from_json(&kv).unwrap_err().to_string();
        assert!(err.contains("num_key_value_heads (3) does not divide"), "{err}");

        let llama = OLD_STYLE.replace("Qwen2ForCausalLM", "LlamaForCausalLM").replace("qwen2", "llama");
        let err = Config::from_json(&llama).unwrap_err().to_string();
        assert!(err.contains("unsupported model"), "{err}");

        let zero = OLD_STYLE.replace("\"num_hidden_layers\":64", "\"num_hidden_layers\":0");
        assert!(Config::from_json(&zero).unwrap_err().to_string().contains("num_hidden_layers must be positive"));
    }
}

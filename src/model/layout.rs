//! Which tensor plays which part in the Qwen2 network, and in which format.
//!
//! Every matrix is decided on its own, from the file: dtype `U8` with a
//! `<name>.scales` companion is packed ternary, F32/F16/BF16 is dense. Every shape
//! and dtype is checked against the config here, before any compute, and errors
//! name the offending tensor.

#[cfg(not(target_arch = "wasm32"))]
use super::checkpoint::Checkpoint;
use super::config::Config;
use super::safetensors::DType;
use super::ModelError;
use crate::ternary::TRITS_PER_BYTE;

/// How a weight matrix is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    /// F32 / F16 / BF16 `[rows, cols]`.
    Dense { dtype: DType },
    /// U8 `[rows, cols/4]` base-3 trits plus `scales [rows, cols/group_size]`.
    Packed { scales: String, scale_dtype: DType, group_size: usize },
}

/// A `[rows, cols]` weight matrix (`rows` outputs, `cols` inputs).
#[derive(Debug, Clone)]
pub struct Matrix {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub storage: Storage,
}

impl Matrix {
    pub fn is_packed(&self) -> bool {
        matches!(self.storage, Storage::Packed { .. })
    }
}

/// A dense 1-D tensor: a norm weight or a bias.
#[derive(Debug, Clone)]
pub struct Vector {
    pub name: String,
    pub len: usize,
    pub dtype: DType,
}

/// One projection: `y = W · norm(x) + b`, norm and bias optional.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Matrix,
    pub bias: Option<Vector>,
    /// Per-linear RMSNorm of the input (quantization-aware-trained models).
    pub norm: Option<Vector>,
}

/// The tensors of one decoder layer, named as in the checkpoint.
#[derive(Debug, Clone)]
pub struct Layer {
    pub input_layernorm: Vector,          // [hidden]
    pub q_proj: Linear,                   // [heads * head_dim, hidden] + bias
    pub k_proj: Linear,                   // [kv_heads * head_dim, hidden] + bias
    pub v_proj: Linear,                   // [kv_heads * head_dim, hidden] + bias
    pub o_proj: Linear,                   // [hidden, heads * head_dim]
    pub post_attention_layernorm: Vector, // [hidden]
    pub gate_proj: Linear,                // [intermediate, hidden]
    pub up_proj: Linear,                  // [intermediate, hidden]
    pub down_proj: Linear,                // [hidden, intermediate]
}

impl Layer {
    /// The seven projections, in the order they run.
    pub fn linears(&self) -> [&Linear; 7] {
        [&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj, &self.gate_proj, &self.up_proj, &self.down_proj]
    }
}

/// The whole network.
#[derive(Debug, Clone)]
pub struct Layout {
    pub embed_tokens: Matrix, // [vocab, hidden]
    pub layers: Vec<Layer>,
    pub norm: Vector,    // [hidden]
    pub lm_head: Matrix, // [vocab, hidden]; the embedding itself when tied
    pub tied: bool,
}

/// What the layout needs to know of a model: its config and each tensor's dtype
/// and shape. Files on disk and synthetic models both provide it.
pub trait Inventory {
    fn config(&self) -> &Config;
    fn tensor(&self, name: &str) -> Option<(&DType, &[usize])>;
    /// Where the model is, for error messages.
    fn location(&self) -> String;
}

impl Layout {
    /// Finds and checks every tensor the config calls for.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_checkpoint(ckpt: &Checkpoint) -> Result<Self, ModelError> {
        Self::from_inventory(ckpt.catalog())
    }

    /// The same, for any [`Inventory`].
    pub fn from_inventory(ckpt: &dyn Inventory) -> Result<Self, ModelError> {
        let c = ckpt.config();
        let (hidden, inter, vocab) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let q_dim = c.num_attention_heads * c.head_dim();
        let kv_dim = c.kv_dim();
        let finder = Finder { ckpt };

        let embed_tokens = finder.matrix("model.embed_tokens.weight", vocab, hidden)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Layer {
                input_layernorm: finder.vector(&format!("{p}.input_layernorm.weight"), hidden)?,
                q_proj: finder.linear(&format!("{p}.self_attn.q_proj"), q_dim, hidden)?,
                k_proj: finder.linear(&format!("{p}.self_attn.k_proj"), kv_dim, hidden)?,
                v_proj: finder.linear(&format!("{p}.self_attn.v_proj"), kv_dim, hidden)?,
                o_proj: finder.linear(&format!("{p}.self_attn.o_proj"), hidden, q_dim)?,
                post_attention_layernorm: finder.vector(&format!("{p}.post_attention_layernorm.weight"), hidden)?,
                gate_proj: finder.linear(&format!("{p}.mlp.gate_proj"), inter, hidden)?,
                up_proj: finder.linear(&format!("{p}.mlp.up_proj"), inter, hidden)?,
                down_proj: finder.linear(&format!("{p}.mlp.down_proj"), hidden, inter)?,
            });
        }
        let norm = finder.vector("model.norm.weight", hidden)?;
        let (lm_head, tied) = if c.tie_word_embeddings {
            (embed_tokens.clone(), true)
        } else {
            (finder.matrix("lm_head.weight", vocab, hidden)?, false)
        };
        Ok(Layout { embed_tokens, layers, norm, lm_head, tied })
    }

    /// Every matrix once (a tied head is listed with the embedding).
    pub fn matrices(&self) -> Vec<&Matrix> {
        let mut all = vec![&self.embed_tokens];
        for layer in &self.layers {
            all.extend(layer.linears().iter().map(|l| &l.weight));
        }
        if !self.tied {
            all.push(&self.lm_head);
        }
        all
    }
}

/// Looks tensors up by name and checks them.
struct Finder<'a> {
    ckpt: &'a dyn Inventory,
}

/// A tensor's dtype and shape.
struct Info<'a> {
    dtype: &'a DType,
    shape: &'a [usize],
}

impl Info<'_> {
    fn dtype(&self) -> &DType {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
}

impl Finder<'_> {
    fn find(&self, name: &str) -> Option<Info<'_>> {
        self.ckpt.tensor(name).map(|(dtype, shape)| Info { dtype, shape })
    }

    fn tensor(&self, name: &str) -> Result<Info<'_>, ModelError> {
        self.find(name).ok_or_else(|| ModelError::MissingTensor {
            name: name.to_string(),
            context: format!("the config calls for it; {} lacks it", self.ckpt.location()),
        })
    }

    fn shape_error(name: &str, expected: String, got: &[usize]) -> ModelError {
        ModelError::Shape { name: name.to_string(), expected, got: got.to_vec() }
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vector, ModelError> {
        let t = self.tensor(name)?;
        if !t.dtype().is_float() {
            return Err(ModelError::Dtype {
                name: name.into(),
                expected: "F32, F16 or BF16".into(),
                got: t.dtype().clone(),
            });
        }
        if t.shape() != [len] {
            return Err(Self::shape_error(name, format!("[{len}]"), t.shape()));
        }
        Ok(Vector { name: name.into(), len, dtype: t.dtype().clone() })
    }

    fn optional_vector(&self, name: &str, len: usize) -> Result<Option<Vector>, ModelError> {
        match self.find(name) {
            Some(_) => self.vector(name, len).map(Some),
            None => Ok(None),
        }
    }

    /// A dense or packed `[rows, cols]` matrix, decided from the file.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        let t = self.tensor(name)?;
        let storage = match t.dtype() {
            dtype if dtype.is_float() => {
                if t.shape() != [rows, cols] {
                    return Err(Self::shape_error(name, format!("[{rows}, {cols}]"), t.shape()));
                }
                Storage::Dense { dtype: dtype.clone() }
            }
            DType::U8 => self.packed_storage(name, &t, rows, cols)?,
            other => {
                return Err(ModelError::Dtype {
                    name: name.into(),
                    expected: "F32, F16, BF16 (dense) or U8 with .scales (packed ternary)".into(),
                    got: other.clone(),
                })
            }
        };
        Ok(Matrix { name: name.into(), rows, cols, storage })
    }

    fn packed_storage(&self, name: &str, t: &Info, rows: usize, cols: usize) -> Result<Storage, ModelError> {
        if !cols.is_multiple_of(TRITS_PER_BYTE) || t.shape() != [rows, cols / TRITS_PER_BYTE] {
            return Err(Self::shape_error(
                name,
                format!("[{rows}, {}] (U8, four trits per byte of a [{rows}, {cols}] matrix)", cols / TRITS_PER_BYTE),
                t.shape(),
            ));
        }
        let scales_name = format!("{name}.scales");
        let s = self.find(&scales_name).ok_or_else(|| ModelError::MissingTensor {
            name: scales_name.clone(),
            context: format!("{name} is U8 (packed ternary) and needs its group scales"),
        })?;
        if !s.dtype().is_float() {
            return Err(ModelError::Dtype {
                name: scales_name,
                expected: "F32, F16 or BF16".into(),
                got: s.dtype().clone(),
            });
        }
        let groups = match s.shape() {
            [r, g] if *r == rows && *g > 0 && cols.is_multiple_of(*g) && (cols / g).is_multiple_of(TRITS_PER_BYTE) => {
                *g
            }
            got => {
                let expected = match self.ckpt.config().declared_group_size() {
                    Some(gs) => format!("[{rows}, {}] (group size {gs})", cols / gs.max(1)),
                    None => format!("[{rows}, {cols} / group size]"),
                };
                return Err(Self::shape_error(&scales_name, expected, got));
            }
        };
        let group_size = cols / groups;
        if let Some(declared) = self.ckpt.config().declared_group_size() {
            if declared != group_size {
                return Err(Self::shape_error(
                    &scales_name,
                    format!("[{rows}, {}] (quantization_config.group_size = {declared})", cols / declared.max(1)),
                    s.shape(),
                ));
            }
        }
        Ok(Storage::Packed { scales: scales_name, scale_dtype: s.dtype().clone(), group_size })
    }

    /// A projection with its optional bias and optional per-linear RMSNorm.
    fn linear(&self, prefix: &str, rows: usize, cols: usize) -> Result<Linear, ModelError> {
        let weight = self.matrix(&format!("{prefix}.weight"), rows, cols)?;
        let bias = self.optional_vector(&format!("{prefix}.bias"), rows)?;
        // Both names are in use: `rms_norm` (the BitNet PR) and `norm` (Microsoft's models).
        let rms_norm = self.optional_vector(&format!("{prefix}.rms_norm.weight"), cols)?;
        let norm = self.optional_vector(&format!("{prefix}.norm.weight"), cols)?;
        if rms_norm.is_some() && norm.is_some() {
            return Err(ModelError::Checkpoint(format!(
                "{prefix} has both .rms_norm.weight and .norm.weight; keep one per-linear norm"
            )));
        }
        Ok(Linear { weight, bias, norm: rms_norm.or(norm) })
    }
}

//! `config.json` of a Hugging Face checkpoint, in both dialects, for every
//! architecture in [`super::arch`].
//!
//! transformers 4.x writes `rope_theta` / `rope_scaling` / `torch_dtype`; 5.x writes
//! `rope_parameters: {rope_type, rope_theta, ...}` (per layer type for OLMo 3 and
//! Gemma 3) / `dtype`. Both resolve to the same [`ModelConfig`]. Multimodal configs
//! that nest the language model under `text_config` resolve to that.
//!
//! ```no_run
//! let cfg = ckpt::model::ModelConfig::from_file("run/step-100/config.json".as_ref())?;
//! println!("{}: {} layers, {} parameters", cfg.arch, cfg.num_hidden_layers, cfg.num_parameters());
//! # Ok::<(), ckpt::Error>(())
//! ```

use super::arch::Arch;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// How rotary position frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's band-wise rescaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// The MLP's activation, by its transformers name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu`.
    Silu,
    /// `gelu`: the exact, erf-based GELU.
    Gelu,
    /// `gelu_new`, `gelu_fast`, `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
}

impl Activation {
    fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "silu" | "swish" => Ok(Activation::Silu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            other => Err(format!(
                "unsupported activation {other:?} (supported: silu, gelu, gelu_new, gelu_fast, gelu_pytorch_tanh)"
            )),
        }
    }

    /// The name written to `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_pytorch_tanh",
        }
    }
}

/// A resolved configuration: every default filled in, every architecture's settings
/// spelled out.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub(crate) hidden_size: usize,
    pub(crate) intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    /// Epsilon of every norm (`rms_norm_eps`, or GPT-NeoX's `layer_norm_eps`).
    pub(crate) norm_eps: f64,
    pub(crate) activation: Activation,
    pub rope_theta: f64,
    pub(crate) rope_scaling: RopeScaling,
    /// RoPE base of the sliding-window layers when it differs (Gemma 3's
    /// `rope_local_base_freq`; OLMo 3's per-layer-type `rope_parameters`); those layers
    /// use no frequency scaling.
    pub local_rope_theta: Option<f64>,
    /// How many leading dimensions of each head rotate (GPT-NeoX's `rotary_pct`).
    pub rotary_dim: usize,
    /// Per layer: whether it applies RoPE at all (SmolLM3's `no_rope_layers`).
    pub(crate) rope_layers: Vec<bool>,
    pub(crate) max_position_embeddings: usize,
    pub(crate) tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2; `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (`attention_bias`).
    pub(crate) o_bias: bool,
    /// Bias on the MLP projections (`mlp_bias`; always on GPT-NeoX).
    pub mlp_bias: bool,
    /// Attention and MLP read the same input and add to the residual together
    /// (GPT-NeoX's `use_parallel_residual`).
    pub parallel_residual: bool,
    /// `tanh(x / cap) * cap` on the attention scores (Gemma 2).
    pub(crate) attn_softcap: Option<f64>,
    /// `tanh(x / cap) * cap` on the logits (Gemma 2).
    pub(crate) final_softcap: Option<f64>,
    /// Attention scores scale by `query_pre_attn_scalar^-1/2` instead of
    /// `head_dim^-1/2` (Gemma).
    pub query_pre_attn_scalar: Option<f64>,
    /// Sliding attention window, per layer (`None`: full attention).
    pub sliding_window: Vec<Option<usize>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// The dtype the weights were saved in, as the config says (`torch_dtype` / `dtype`).
    pub saved_dtype: Option<String>,
}

/// `config.json` as written, before defaults are resolved. Architecture files read
/// the keys only they use.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawConfig {
    pub(crate) architectures: Option<Vec<String>>,
    pub(crate) model_type: Option<String>,
    pub(crate) vocab_size: Option<usize>,
    pub(crate) hidden_size: Option<usize>,
    pub(crate) intermediate_size: Option<usize>,
    pub(crate) num_hidden_layers: Option<usize>,
    pub(crate) num_attention_heads: Option<usize>,
    pub(crate) num_key_value_heads: Option<usize>,
    pub(crate) head_dim: Option<usize>,
    pub(crate) rms_norm_eps: Option<f64>,
    pub(crate) layer_norm_eps: Option<f64>,
    pub(crate) rope_theta: Option<f64>,
    pub(crate) rope_scaling: Option<Value>,
    pub(crate) rope_parameters: Option<Value>,
    pub(crate) rope_local_base_freq: Option<f64>,
    pub(crate) rotary_pct: Option<f64>,
    pub(crate) rotary_emb_base: Option<f64>,
    pub(crate) partial_rotary_factor: Option<f64>,
    pub(crate) max_position_embeddings: Option<usize>,
    pub(crate) tie_word_embeddings: Option<bool>,
    pub(crate) attention_bias: Option<bool>,
    pub(crate) mlp_bias: Option<bool>,
    pub(crate) use_parallel_residual: Option<bool>,
    /// `Some(Null)`: soft-capping switched off; absent: the architecture's default.
    pub(crate) attn_logit_softcapping: Option<Value>,
    pub(crate) final_logit_softcapping: Option<Value>,
    pub(crate) query_pre_attn_scalar: Option<f64>,
    pub(crate) sliding_window: Option<usize>,
    pub(crate) sliding_window_pattern: Option<usize>,
    pub use_sliding_window: Option<bool>,
    pub(crate) max_window_layers: Option<usize>,
    pub(crate) layer_types: Option<Vec<String>>,
    pub(crate) no_rope_layers: Option<Vec<u8>>,
    pub(crate) no_rope_layer_interval: Option<usize>,
    pub(crate) hidden_act: Option<String>,
    pub(crate) hidden_activation: Option<String>,
    pub(crate) bos_token_id: Option<Value>,
    pub(crate) eos_token_id: Option<Value>,
    pub(crate) torch_dtype: Option<String>,
    pub(crate) dtype: Option<String>,
    /// The language model of a multimodal config (Gemma 3's `text_config`).
    pub(crate) text_config: Option<Value>,
}

impl ModelConfig {
    /// Reads and resolves a `config.json`; errors name the file and the problem.
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw: RawConfig = crate::error::read_json(path)?;
        Self::resolve(raw).map_err(|p| match p {
            Problem::Unsupported(msg) => Error::unsupported(format!("{}: {msg}", path.display())),
            Problem::Bad(msg) => Error::bad_file(path, msg),
        })
    }

    /// Parses a `config.json` held in memory.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        Self::resolve(raw).map_err(|p| match p {
            Problem::Unsupported(msg) | Problem::Bad(msg) => msg,
        })
    }

    /// The architecture first: one this build does not have is [`Error::Unsupported`],
    /// every other problem is one of the file.
    fn resolve(raw: RawConfig) -> std::result::Result<Self, Problem> {
        let raw = text_part(raw).map_err(Problem::Bad)?;
        let architecture = raw
            .architectures
            .as_ref()
            .and_then(|a| a.first())
            .map(String::as_str);
        let arch = Arch::from_names(architecture, raw.model_type.as_deref())
            .map_err(Problem::Unsupported)?;
        Self::resolve_arch(raw, arch).map_err(Problem::Bad)
    }

    fn resolve_arch(raw: RawConfig, arch: Arch) -> std::result::Result<Self, String> {
        let spec = arch.spec();
        let mut raw = raw;
        (spec.size_defaults)(&mut raw);
        let need = |v: Option<usize>, name: &str| {
            v.filter(|&n| n > 0)
                .ok_or_else(|| format!("missing or zero field `{name}`"))
        };
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_attention_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        let num_hidden_layers = need(raw.num_hidden_layers, "num_hidden_layers")?;
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(format!(
                "num_attention_heads ({num_attention_heads}) is not a multiple of num_key_value_heads ({num_key_value_heads})"
            ));
        }
        let head_dim =
            match raw.head_dim {
                Some(0) => return Err("head_dim is 0; it must be a positive even number".into()),
                Some(d) => d,
                None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
                None => return Err(
                    "hidden_size is not divisible by num_attention_heads and no head_dim is given"
                        .into(),
                ),
            };
        if head_dim % 2 != 0 {
            return Err(format!(
                "head_dim {head_dim} is odd; rotary embeddings need it even"
            ));
        }
        let rope = resolve_rope(&raw)?;
        let activation = match raw
            .hidden_act
            .as_deref()
            .or(raw.hidden_activation.as_deref())
        {
            Some(name) => Activation::parse(name)?,
            None => spec.default_activation,
        };
        let attention_bias = raw.attention_bias.unwrap_or(spec.default_attention_bias);
        let vocab_size = need(raw.vocab_size, "vocab_size")?;
        let mut cfg = ModelConfig {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            norm_eps: raw
                .rms_norm_eps
                .or(raw.layer_norm_eps)
                .unwrap_or(spec.default_norm_eps),
            activation,
            rope_theta: rope.theta.unwrap_or(spec.default_rope_theta),
            rope_scaling: rope.scaling,
            local_rope_theta: rope.local_theta,
            rotary_dim: head_dim,
            rope_layers: Vec::new(),
            max_position_embeddings: match raw.max_position_embeddings {
                Some(0) => return Err("max_position_embeddings is 0".into()),
                Some(n) => n,
                None => 2048,
            },
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(spec.default_tie),
            qkv_bias: attention_bias,
            o_bias: attention_bias,
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            parallel_residual: false,
            attn_softcap: None,
            final_softcap: None,
            query_pre_attn_scalar: None,
            sliding_window: Vec::new(),
            bos_token_id: first_token_id("bos_token_id", raw.bos_token_id.as_ref(), vocab_size)?,
            eos_token_id: first_token_id("eos_token_id", raw.eos_token_id.as_ref(), vocab_size)?,
            saved_dtype: raw.dtype.clone().or(raw.torch_dtype.clone()),
        };
        if let Some(factor) = rope.partial_rotary_factor {
            cfg.rotary_dim = rotary_dim(head_dim, factor)?;
        }
        cfg.check_domain()?;
        // Sizes first: the per-layer tables below are as long as the model is deep.
        cfg.check_sizes()?;
        cfg.rope_layers = vec![true; num_hidden_layers];
        cfg.sliding_window = vec![None; num_hidden_layers];
        (spec.resolve)(&raw, &mut cfg)?;
        cfg.check_layers()?;
        Ok(cfg)
    }

    /// Scale of the attention scores.
    pub(crate) fn attention_scale(&self) -> f64 {
        1.0 / self
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim as f64)
            .sqrt()
    }

    /// The per-layer tables an architecture filled in must be as deep as the model.
    fn check_layers(&self) -> std::result::Result<(), String> {
        let n = self.num_hidden_layers;
        if self.rope_layers.len() != n {
            return Err(format!(
                "no_rope_layers has {} entries for {n} layers",
                self.rope_layers.len()
            ));
        }
        if self.rotary_dim == 0
            || !self.rotary_dim.is_multiple_of(2)
            || self.rotary_dim > self.head_dim
        {
            return Err(format!(
                "the rotary part of each head ({} of head_dim {}) must be a positive even number",
                self.rotary_dim, self.head_dim
            ));
        }
        for (key, v) in [
            ("attn_logit_softcapping", self.attn_softcap),
            ("final_logit_softcapping", self.final_softcap),
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
        ] {
            if let Some(v) = v {
                positive(key, v)?;
            }
        }
        if let Some(theta) = self.local_rope_theta {
            positive("the sliding layers' rope_theta", theta)?;
        }
        Ok(())
    }

    /// The real-valued settings must lie where the model's formulas are defined: a
    /// NaN or negative epsilon, or a theta of 0, would give NaN logits, not an error.
    fn check_domain(&self) -> std::result::Result<(), String> {
        positive("rms_norm_eps", self.norm_eps)?;
        positive("rope_theta", self.rope_theta)?;
        match self.rope_scaling {
            RopeScaling::Default => {}
            RopeScaling::Linear { factor } => positive("rope_scaling.factor", factor)?,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                positive("rope_scaling.factor", factor)?;
                positive("rope_scaling.low_freq_factor", low_freq_factor)?;
                positive("rope_scaling.high_freq_factor", high_freq_factor)?;
                positive(
                    "rope_scaling.original_max_position_embeddings",
                    original_max_position_embeddings,
                )?;
                // The smoothing between the two bands divides by their difference.
                if high_freq_factor <= low_freq_factor {
                    return Err(format!(
                        "rope_scaling.high_freq_factor = {high_freq_factor} must be larger than \
                         low_freq_factor = {low_freq_factor}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The sizes must describe a model some machine could hold: a parameter count that
    /// fits in 64 bits and at most [`MAX_PARAMETERS`], at most [`MAX_LAYERS`] layers.
    /// Whether *this* machine can hold it is checked when the weights are allocated
    /// ([`crate::memory`]).
    fn check_sizes(&self) -> std::result::Result<(), String> {
        if self.num_hidden_layers > MAX_LAYERS {
            return Err(format!(
                "num_hidden_layers = {} is more than {MAX_LAYERS}",
                self.num_hidden_layers
            ));
        }
        match self.checked_num_parameters() {
            Some(n) if n <= MAX_PARAMETERS => Ok(()),
            n => Err(format!(
                "the sizes (vocab_size {}, hidden_size {}, intermediate_size {}, \
                 num_hidden_layers {}, num_attention_heads {} x head_dim {}) make {} parameters; \
                 at most {MAX_PARAMETERS} are supported (2 bytes each fill a 64-bit address space)",
                self.vocab_size,
                self.hidden_size,
                self.intermediate_size,
                self.num_hidden_layers,
                self.num_attention_heads,
                self.head_dim,
                n.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string()),
            )),
        }
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        // A resolved config's count fits (`check_sizes`); saturate for hand-built ones.
        self.checked_num_parameters()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX)
    }

    /// Number of parameters, or `None` when it does not fit in 64 bits.
    pub(crate) fn checked_num_parameters(&self) -> Option<u64> {
        let spec = self.arch.spec();
        let n = |v: usize| u64::try_from(v).ok();
        let (h, inter, heads, kv_heads, d) = (
            n(self.hidden_size)?,
            n(self.intermediate_size)?,
            n(self.num_attention_heads)?,
            n(self.num_key_value_heads)?,
            n(self.head_dim)?,
        );
        let q = heads.checked_mul(d)?;
        let kv = kv_heads.checked_mul(d)?;
        let qkv = q.checked_add(kv.checked_mul(2)?)?;
        let qkv_bias = if self.qkv_bias { qkv } else { 0 };
        let o_bias = if self.o_bias { h } else { 0 };
        let (mlp_mats, mlp_bias) = if spec.names.gate.is_some() {
            (3, inter.checked_mul(2)?.checked_add(h)?)
        } else {
            (2, inter.checked_add(h)?)
        };
        let mlp_bias = if self.mlp_bias { mlp_bias } else { 0 };
        let per_norm = if spec.norm == super::arch::NormKind::Layer {
            h.checked_mul(2)?
        } else {
            h
        };
        let names = &spec.names;
        let norms = [
            names.attn_in_norm,
            names.attn_out_norm,
            names.mlp_in_norm,
            names.mlp_out_norm,
        ]
        .iter()
        .filter(|n| n.is_some())
        .count() as u64;
        let qk_norm = match spec.qk_norm {
            super::arch::QkNorm::None => 0,
            super::arch::QkNorm::PerHead => d.checked_mul(2)?,
            super::arch::QkNorm::Whole => q.checked_add(kv)?,
        };
        let per_layer = [
            h.checked_mul(qkv)?,
            qkv_bias,
            q.checked_mul(h)?,
            o_bias,
            h.checked_mul(inter)?.checked_mul(mlp_mats)?,
            mlp_bias,
            per_norm.checked_mul(norms)?,
            qk_norm,
        ]
        .into_iter()
        .try_fold(0u64, u64::checked_add)?;
        let embed = n(self.vocab_size)?.checked_mul(h)?;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        n(self.num_hidden_layers)?
            .checked_mul(per_layer)?
            .checked_add(embed)?
            .checked_add(head)?
            .checked_add(per_norm)
    }

    /// Writes the config in the transformers 4.x dialect (which 5.x also reads), with
    /// the keys of this architecture.
    pub fn to_json(&self) -> Value {
        let rope_scaling = match &self.rope_scaling {
            RopeScaling::Default => Value::Null,
            other => serde_json::to_value(other).unwrap_or(Value::Null),
        };
        let mut v = serde_json::json!({
            "architectures": [self.arch.architecture()],
            "model_type": self.arch.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": self.activation.name(),
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.qkv_bias,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            // Some architectures default to a pad id outside a small vocabulary
            // (SmolLM3: 128004), which transformers refuses; ckpt never pads with it.
            "pad_token_id": null,
            "torch_dtype": self.saved_dtype.clone().unwrap_or_else(|| "float32".into()),
        });
        (self.arch.spec().write)(self, &mut v);
        v
    }
}

/// The most layers a config may declare (the deepest published models have a few
/// hundred).
pub(crate) const MAX_LAYERS: usize = 1 << 20;

/// The most parameters a config may declare: 2^47, whose bf16 weights (256 TiB) fill
/// the 48-bit address space of today's 64-bit CPUs.
pub(crate) const MAX_PARAMETERS: u64 = 1 << 47;

/// A setting that must be a positive, finite number.
pub(crate) fn positive(key: &str, value: f64) -> std::result::Result<(), String> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!("{key} = {value} must be a positive, finite number"))
    }
}

/// What a config says of rotary embeddings, before the architecture's defaults.
struct RopeSettings {
    theta: Option<f64>,
    scaling: RopeScaling,
    local_theta: Option<f64>,
    partial_rotary_factor: Option<f64>,
}

/// RoPE settings from either dialect: 4.x's top-level `rope_theta` / `rope_scaling`
/// (GPT-NeoX: `rotary_emb_base` / `rotary_pct`; Gemma 3: `rope_local_base_freq`), or
/// 5.x's `rope_parameters`, flat or per layer type.
fn resolve_rope(raw: &RawConfig) -> std::result::Result<RopeSettings, String> {
    let params = raw.rope_parameters.as_ref().filter(|v| v.is_object());
    let per_type = params
        .filter(|p| p.get("full_attention").is_some() || p.get("sliding_attention").is_some());
    let (full, sliding) = match per_type {
        Some(p) => (
            p.get("full_attention").filter(|v| v.is_object()),
            p.get("sliding_attention").filter(|v| v.is_object()),
        ),
        None => (params, None),
    };
    let number = |p: Option<&Value>, key: &str, what: &str| match p.and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{what}.{key} {v} is not a number")),
    };
    let theta = number(full, "rope_theta", "rope_parameters")?
        .or(raw.rope_theta)
        .or(raw.rotary_emb_base);
    let local_theta = number(sliding, "rope_theta", "rope_parameters.sliding_attention")?
        .or(raw.rope_local_base_freq);
    let partial_rotary_factor = number(full, "partial_rotary_factor", "rope_parameters")?
        .or(raw.partial_rotary_factor)
        .or(raw.rotary_pct);
    let scaling = match full.or(raw.rope_scaling.as_ref().filter(|v| v.is_object())) {
        Some(s) => rope_scaling(s)?,
        None => RopeScaling::Default,
    };
    Ok(RopeSettings {
        theta,
        scaling,
        local_theta,
        partial_rotary_factor,
    })
}

/// The frequency scaling a `rope_scaling` / `rope_parameters` object names.
fn rope_scaling(scaling: &Value) -> std::result::Result<RopeScaling, String> {
    let kind = scaling
        .get("rope_type")
        .or_else(|| scaling.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| {
        scaling
            .get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("rope scaling {kind:?} needs `{key}`"))
    };
    Ok(match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => {
            return Err(format!(
                "unsupported rope scaling {other:?} (supported: default, linear, llama3)"
            ))
        }
    })
}

/// The rotating part of a head: `head_dim * factor`, as transformers truncates it.
fn rotary_dim(head_dim: usize, factor: f64) -> std::result::Result<usize, String> {
    if !(factor > 0.0 && factor <= 1.0) {
        return Err(format!(
            "partial_rotary_factor (rotary_pct) = {factor} must be in (0, 1]"
        ));
    }
    Ok((head_dim as f64 * factor) as usize)
}

/// Why a config does not resolve.
enum Problem {
    /// It names an architecture this build does not have.
    Unsupported(String),
    /// Anything else: the file is wrong.
    Bad(String),
}

/// A multimodal config's language model: its `text_config`, named by its own
/// `model_type` (Gemma 3's `gemma3_text`).
fn text_part(raw: RawConfig) -> std::result::Result<RawConfig, String> {
    let Some(text) = raw.text_config.as_ref().filter(|v| v.is_object()) else {
        return Ok(raw);
    };
    let mut inner: RawConfig =
        serde_json::from_value(text.clone()).map_err(|e| format!("text_config: {e}"))?;
    if inner.model_type.is_none() {
        return Err("text_config has no model_type".into());
    }
    inner.architectures = None;
    inner.torch_dtype = inner.torch_dtype.or(raw.torch_dtype);
    inner.dtype = inner.dtype.or(raw.dtype);
    inner.bos_token_id = inner.bos_token_id.or(raw.bos_token_id);
    inner.eos_token_id = inner.eos_token_id.or(raw.eos_token_id);
    inner.tie_word_embeddings = inner.tie_word_embeddings.or(raw.tie_word_embeddings);
    Ok(inner)
}

/// Per layer, its sliding window: from `layer_types` when the config lists them, else
/// from the architecture's default pattern (`slides(i)`); all `None` without a window.
pub(crate) fn layer_windows(
    raw: &RawConfig,
    window: Option<usize>,
    layers: usize,
    slides: impl Fn(usize) -> bool,
) -> std::result::Result<Vec<Option<usize>>, String> {
    let Some(window) = window else {
        return Ok(vec![None; layers]);
    };
    if window == 0 {
        return Err("sliding_window is 0".into());
    }
    if let Some(types) = &raw.layer_types {
        if types.len() != layers {
            return Err(format!(
                "layer_types has {} entries for {layers} layers",
                types.len()
            ));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                "sliding_attention" => Ok(Some(window)),
                "full_attention" => Ok(None),
                other => Err(format!(
                    "layer_types entry {other:?} is not sliding_attention or full_attention"
                )),
            })
            .collect();
    }
    Ok((0..layers).map(|i| slides(i).then_some(window)).collect())
}

/// A soft-capping value: absent gives the architecture's `default`, null switches it off.
pub(crate) fn softcap(
    key: &str,
    v: Option<&Value>,
    default: Option<f64>,
) -> std::result::Result<Option<f64>, String> {
    match v {
        None => Ok(default),
        Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{key} {x} is not a number")),
    }
}

/// `bos_token_id` / `eos_token_id` may be a token id, a list of them (the first is
/// used) or null; anything else, or an id outside the vocabulary, is an error.
fn first_token_id(
    key: &str,
    v: Option<&Value>,
    vocab_size: usize,
) -> std::result::Result<Option<u32>, String> {
    let id = |x: &Value| {
        x.as_u64()
            .filter(|&n| (n as usize) < vocab_size)
            .map(|n| n as u32)
            .ok_or_else(|| format!("{key} {x} is not a token id of the vocabulary of {vocab_size}"))
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let ids = items
                .iter()
                .map(id)
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(ids.first().copied())
        }
        Some(x) => id(x).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA3_V4: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "max_position_embeddings": 131072, "tie_word_embeddings": true,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
        "torch_dtype": "bfloat16", "hidden_act": "silu"}"#;

    const LLAMA3_V5: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 64, "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
            "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192},
        "max_position_embeddings": 131072, "tie_word_embeddings": true,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
        "dtype": "bfloat16", "hidden_act": "silu"}"#;

    #[test]
    fn both_dialects_resolve_to_the_same_config() {
        let v4 = ModelConfig::from_json(LLAMA3_V4).unwrap();
        let v5 = ModelConfig::from_json(LLAMA3_V5).unwrap();
        assert_eq!(v4, v5);
        assert_eq!(v4.rope_theta, 500000.0);
        assert!(matches!(v4.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 32.0));
        assert_eq!(v4.eos_token_id, Some(128001));
        // Llama 3.2 1B has 1.236B parameters with tied embeddings.
        assert_eq!(v4.num_parameters(), 1_235_814_400);
    }

    #[test]
    fn qwen2_has_qkv_bias_and_mistral_slides() {
        let qwen = ModelConfig::from_json(
            r#"{"architectures":["Qwen2ForCausalLM"],"vocab_size":10,"hidden_size":8,
            "intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,
            "num_key_value_heads":1,"sliding_window":4,"use_sliding_window":false}"#,
        )
        .unwrap();
        assert!(qwen.qkv_bias && !qwen.o_bias);
        assert_eq!(qwen.sliding_window, vec![None, None]);
        let mistral = ModelConfig::from_json(
            r#"{"architectures":["MistralForCausalLM"],"vocab_size":10,"hidden_size":8,
            "intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,
            "sliding_window":4}"#,
        )
        .unwrap();
        assert_eq!(mistral.sliding_window, vec![Some(4), Some(4)]);
        assert_eq!(mistral.num_key_value_heads, 2);
    }

    #[test]
    fn written_config_reads_back() {
        let cfg = ModelConfig::from_json(LLAMA3_V5).unwrap();
        let again = ModelConfig::from_json(&cfg.to_json().to_string()).unwrap();
        assert_eq!(cfg, again);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let err = ModelConfig::from_json(r#"{"architectures":["GPT2LMHeadModel"]}"#).unwrap_err();
        assert!(
            err.contains("unsupported architecture GPT2LMHeadModel"),
            "{err}"
        );
        let err = ModelConfig::from_json(r#"{"model_type":"llama","vocab_size":10}"#).unwrap_err();
        assert!(err.contains("hidden_size"), "{err}");
        let err = ModelConfig::from_json(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,"rope_scaling":{"rope_type":"yarn","factor":2}}"#,
        )
        .unwrap_err();
        assert!(err.contains("yarn"), "{err}");
    }

    #[test]
    fn token_ids_must_be_tokens_of_the_vocabulary() {
        let with = |ids: &str| {
            ModelConfig::from_json(&format!(
                r#"{{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
                "num_hidden_layers":1,"num_attention_heads":2,{ids}}}"#
            ))
        };
        let ok = with(r#""bos_token_id": 0, "eos_token_id": [9, 3]"#).unwrap();
        assert_eq!((ok.bos_token_id, ok.eos_token_id), (Some(0), Some(9)));
        assert_eq!(with(r#""bos_token_id": null"#).unwrap().bos_token_id, None);
        for bad in [
            r#""bos_token_id": -1"#,
            r#""bos_token_id": 10"#,
            r#""eos_token_id": "x""#,
            r#""eos_token_id": [1, 1e19]"#,
        ] {
            let err = with(bad).unwrap_err();
            assert!(
                err.contains("is not a token id of the vocabulary of 10"),
                "{bad}: {err}"
            );
        }
        let err = with(r#""rope_parameters": {"rope_theta": "x"}"#).unwrap_err();
        assert!(err.contains("rope_parameters.rope_theta"), "{err}");
    }
}

//! `config.json` of a Hugging Face Llama-family checkpoint, in both dialects.
//!
//! transformers 4.x writes `rope_theta` / `rope_scaling` / `torch_dtype`; 5.x writes
//! `rope_parameters: {rope_type, rope_theta, ...}` / `dtype`. Both resolve to the same
//! [`LlamaConfig`]. Llama 2/3, Mistral and Qwen2 differ only in biases, tying, sliding
//! windows and RoPE scaling, which the config spells out.
//!
//! ```no_run
//! let cfg = ckpt::model::LlamaConfig::from_file("run/step-100/config.json".as_ref())?;
//! println!("{} layers, {} parameters", cfg.num_hidden_layers, cfg.num_parameters());
//! # Ok::<(), ckpt::Error>(())
//! ```

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// The architecture family, which fixes the defaults the config may leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
}

impl Family {
    /// The `architectures` entry transformers writes for this family.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mistral => "MistralForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// The `model_type` transformers writes for this family.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
        }
    }

    fn from_names(architecture: Option<&str>, model_type: Option<&str>) -> Option<Self> {
        match (architecture, model_type) {
            (Some("LlamaForCausalLM"), _) | (None, Some("llama")) => Some(Family::Llama),
            (Some("MistralForCausalLM"), _) | (None, Some("mistral")) => Some(Family::Mistral),
            (Some("Qwen2ForCausalLM"), _) | (None, Some("qwen2")) => Some(Family::Qwen2),
            _ => None,
        }
    }
}

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

/// A resolved Llama-family configuration: every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama's `attention_bias` only).
    pub o_bias: bool,
    /// Bias on the MLP projections (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Sliding attention window, per layer (`None`: full attention).
    pub sliding_window: Vec<Option<usize>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// The dtype the weights were saved in, as the config says (`torch_dtype` / `dtype`).
    pub saved_dtype: Option<String>,
}

/// `config.json` as written, before defaults are resolved.
#[derive(Debug, Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    layer_types: Option<Vec<String>>,
    hidden_act: Option<String>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
}

impl LlamaConfig {
    /// Reads and resolves a `config.json`; errors name the file and the problem.
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw: RawConfig = crate::error::read_json(path)?;
        Self::resolve(raw).map_err(|msg| Error::bad_file(path, msg))
    }

    /// Parses a `config.json` held in memory.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        Self::resolve(raw)
    }

    fn resolve(raw: RawConfig) -> std::result::Result<Self, String> {
        let architecture = raw
            .architectures
            .as_ref()
            .and_then(|a| a.first())
            .map(String::as_str);
        let family = Family::from_names(architecture, raw.model_type.as_deref()).ok_or_else(|| {
            format!(
                "unsupported architecture {} (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
                architecture.or(raw.model_type.as_deref()).unwrap_or("<none given>")
            )
        })?;
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                return Err(format!("unsupported hidden_act {act:?} (only \"silu\")"));
            }
        }
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
        let (rope_theta, rope_scaling) = resolve_rope(&raw)?;
        let attention_bias = raw.attention_bias.unwrap_or(false);
        let (qkv_bias, o_bias) = match family {
            Family::Qwen2 => (true, false),
            _ => (attention_bias, attention_bias),
        };
        let vocab_size = need(raw.vocab_size, "vocab_size")?;
        let mut cfg = LlamaConfig {
            family,
            vocab_size,
            hidden_size,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: match raw.max_position_embeddings {
                Some(0) => return Err("max_position_embeddings is 0".into()),
                Some(n) => n,
                None => 2048,
            },
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias,
            o_bias,
            mlp_bias: raw.mlp_bias.unwrap_or(false),
            sliding_window: Vec::new(),
            bos_token_id: first_token_id("bos_token_id", raw.bos_token_id.as_ref(), vocab_size)?,
            eos_token_id: first_token_id("eos_token_id", raw.eos_token_id.as_ref(), vocab_size)?,
            saved_dtype: raw.dtype.clone().or(raw.torch_dtype.clone()),
        };
        cfg.check_domain()?;
        // Sizes first: the per-layer table below is as long as the model is deep.
        cfg.check_sizes()?;
        cfg.sliding_window = resolve_sliding_window(&raw, family, num_hidden_layers)?;
        Ok(cfg)
    }

    /// The real-valued settings must lie where the model's formulas are defined: a
    /// NaN or negative epsilon, or a theta of 0, would give NaN logits, not an error.
    fn check_domain(&self) -> std::result::Result<(), String> {
        positive("rms_norm_eps", self.rms_norm_eps)?;
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
    pub fn checked_num_parameters(&self) -> Option<u64> {
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
        let qkv_bias = if self.qkv_bias {
            q.checked_add(kv.checked_mul(2)?)?
        } else {
            0
        };
        let o_bias = if self.o_bias { h } else { 0 };
        let mlp_bias = if self.mlp_bias {
            inter.checked_mul(2)?.checked_add(h)?
        } else {
            0
        };
        let per_layer = [
            h.checked_mul(q)?,                  // q_proj
            h.checked_mul(kv)?.checked_mul(2)?, // k_proj, v_proj
            q.checked_mul(h)?,                  // o_proj
            qkv_bias,
            o_bias,
            h.checked_mul(inter)?.checked_mul(3)?, // gate, up, down
            mlp_bias,
            h.checked_mul(2)?, // the two norms
        ]
        .into_iter()
        .try_fold(0u64, u64::checked_add)?;
        let embed = n(self.vocab_size)?.checked_mul(h)?;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        n(self.num_hidden_layers)?
            .checked_mul(per_layer)?
            .checked_add(embed)?
            .checked_add(head)?
            .checked_add(h)
    }

    /// Writes the config in the transformers 4.x dialect (which 5.x also reads).
    pub fn to_json(&self) -> Value {
        let rope_scaling = match &self.rope_scaling {
            RopeScaling::Default => Value::Null,
            other => serde_json::to_value(other).unwrap_or(Value::Null),
        };
        let mut v = serde_json::json!({
            "architectures": [self.family.architecture()],
            "model_type": self.family.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": self.saved_dtype.clone().unwrap_or_else(|| "float32".into()),
        });
        if self.family == Family::Llama {
            v["attention_bias"] = self.qkv_bias.into();
            v["mlp_bias"] = self.mlp_bias.into();
        }
        v
    }
}

/// The most layers a config may declare (the deepest published models have a few
/// hundred).
pub const MAX_LAYERS: usize = 1 << 20;

/// The most parameters a config may declare: 2^47, whose bf16 weights (256 TiB) fill
/// the 48-bit address space of today's 64-bit CPUs.
pub const MAX_PARAMETERS: u64 = 1 << 47;

/// A setting that must be a positive, finite number.
fn positive(key: &str, value: f64) -> std::result::Result<(), String> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!("{key} = {value} must be a positive, finite number"))
    }
}

/// RoPE theta and scaling from either dialect.
fn resolve_rope(raw: &RawConfig) -> std::result::Result<(f64, RopeScaling), String> {
    // 5.x keeps theta inside rope_parameters; 4.x at the top level.
    let params = raw.rope_parameters.as_ref().filter(|v| v.is_object());
    let nested = match params.and_then(|p| p.get("rope_theta")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or_else(|| format!("rope_parameters.rope_theta {v} is not a number"))?,
        ),
    };
    let theta = nested.or(raw.rope_theta).unwrap_or(10_000.0);
    let scaling = params.or(raw.rope_scaling.as_ref().filter(|v| v.is_object()));
    let Some(scaling) = scaling else {
        return Ok((theta, RopeScaling::Default));
    };
    let kind = scaling
        .get("rope_type")
        .or_else(|| scaling.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if let Some(p) = scaling.get("partial_rotary_factor").and_then(Value::as_f64) {
        if p != 1.0 {
            return Err(format!("unsupported partial_rotary_factor {p}"));
        }
    }
    let num = |key: &str| {
        scaling
            .get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("rope scaling {kind:?} needs `{key}`"))
    };
    let scaling = match kind {
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
    };
    Ok((theta, scaling))
}

/// Which layers use sliding-window attention, as transformers decides it.
fn resolve_sliding_window(
    raw: &RawConfig,
    family: Family,
    layers: usize,
) -> std::result::Result<Vec<Option<usize>>, String> {
    let window = match family {
        Family::Llama => None,
        Family::Mistral => raw.sliding_window,
        Family::Qwen2 => raw
            .sliding_window
            .filter(|_| raw.use_sliding_window.unwrap_or(false)),
    };
    let Some(window) = window else {
        return Ok(vec![None; layers]);
    };
    if let Some(types) = &raw.layer_types {
        if types.len() != layers {
            return Err(format!(
                "layer_types has {} entries for {layers} layers",
                types.len()
            ));
        }
        return Ok(types
            .iter()
            .map(|t| (t == "sliding_attention").then_some(window))
            .collect());
    }
    let first_sliding = match family {
        Family::Qwen2 => raw.max_window_layers.unwrap_or(28),
        _ => 0,
    };
    Ok((0..layers)
        .map(|i| (i >= first_sliding).then_some(window))
        .collect())
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
        let v4 = LlamaConfig::from_json(LLAMA3_V4).unwrap();
        let v5 = LlamaConfig::from_json(LLAMA3_V5).unwrap();
        assert_eq!(v4, v5);
        assert_eq!(v4.rope_theta, 500000.0);
        assert!(matches!(v4.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 32.0));
        assert_eq!(v4.eos_token_id, Some(128001));
        // Llama 3.2 1B has 1.236B parameters with tied embeddings.
        assert_eq!(v4.num_parameters(), 1_235_814_400);
    }

    #[test]
    fn qwen2_has_qkv_bias_and_mistral_slides() {
        let qwen = LlamaConfig::from_json(
            r#"{"architectures":["Qwen2ForCausalLM"],"vocab_size":10,"hidden_size":8,
            "intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,
            "num_key_value_heads":1,"sliding_window":4,"use_sliding_window":false}"#,
        )
        .unwrap();
        assert!(qwen.qkv_bias && !qwen.o_bias);
        assert_eq!(qwen.sliding_window, vec![None, None]);
        let mistral = LlamaConfig::from_json(
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
        let cfg = LlamaConfig::from_json(LLAMA3_V5).unwrap();
        let again = LlamaConfig::from_json(&cfg.to_json().to_string()).unwrap();
        assert_eq!(cfg, again);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let err = LlamaConfig::from_json(r#"{"architectures":["GPT2LMHeadModel"]}"#).unwrap_err();
        assert!(
            err.contains("unsupported architecture GPT2LMHeadModel"),
            "{err}"
        );
        let err = LlamaConfig::from_json(r#"{"model_type":"llama","vocab_size":10}"#).unwrap_err();
        assert!(err.contains("hidden_size"), "{err}");
        let err = LlamaConfig::from_json(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,"rope_scaling":{"rope_type":"yarn","factor":2}}"#,
        )
        .unwrap_err();
        assert!(err.contains("yarn"), "{err}");
    }

    #[test]
    fn token_ids_must_be_tokens_of_the_vocabulary() {
        let with = |ids: &str| {
            LlamaConfig::from_json(&format!(
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

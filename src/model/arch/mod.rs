//! The architectures ckpt loads, scores and trains: one file each, one line in
//! [`SPECS`].
//!
//! An architecture is data: where its weights are named, which norms a block has and
//! where, how its config dialect spells the settings. The decoder in
//! [`super::decoder`] runs every one of them, so an architecture file holds no forward
//! code of its own; what differs between, say, OLMo 2 and Gemma 2 is which of the four
//! norm slots of a block are filled and how a norm scales.

mod gemma;
mod gpt_neox;
mod llama;
mod olmo;
mod qwen3;
mod smollm3;

use super::config::{Activation, ModelConfig, RawConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every architecture, by the name a recipe's `model.arch` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    #[serde(rename = "smollm3")]
    SmolLm3,
    Olmo2,
    Olmo3,
    GptNeox,
    Gemma2,
    Gemma3,
}

/// The registry: one line per architecture.
const SPECS: &[&Spec] = &[
    &llama::LLAMA,
    &llama::MISTRAL,
    &llama::QWEN2,
    &qwen3::QWEN3,
    &smollm3::SMOLLM3,
    &olmo::OLMO2,
    &olmo::OLMO3,
    &gpt_neox::GPT_NEOX,
    &gemma::GEMMA2,
    &gemma::GEMMA3,
];

impl Arch {
    /// What the decoder and the config reader need to know of this architecture.
    pub(crate) fn spec(self) -> &'static Spec {
        SPECS
            .iter()
            .find(|s| s.arch == self)
            .expect("every Arch has a line in SPECS")
    }

    /// The `architectures` entry transformers writes.
    pub fn architecture(self) -> &'static str {
        self.spec().architecture
    }

    /// The `model_type` transformers writes.
    pub fn model_type(self) -> &'static str {
        self.spec().model_type
    }

    /// The architecture a config names: its `architectures[0]`, else its `model_type`.
    pub(crate) fn from_names(
        architecture: Option<&str>,
        model_type: Option<&str>,
    ) -> Result<Self, String> {
        let found = match architecture {
            Some(a) => SPECS
                .iter()
                .find(|s| s.architecture == a || s.aliases.contains(&a)),
            None => SPECS.iter().find(|s| Some(s.model_type) == model_type),
        };
        found.map(|s| s.arch).ok_or_else(|| {
            let supported: Vec<&str> = SPECS.iter().map(|s| s.architecture).collect();
            format!(
                "unsupported architecture {} (supported: {})",
                architecture.or(model_type).unwrap_or("<none given>"),
                supported.join(", ")
            )
        })
    }

    /// Every supported architecture, for messages and the README's table.
    pub fn all() -> impl Iterator<Item = Arch> {
        SPECS.iter().map(|s| s.arch)
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.spec().architecture)
    }
}

/// How a norm computes, as the architecture's transformers code does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NormKind {
    /// RMSNorm, normalised in f32, cast back, then scaled (Llama, Qwen, SmolLM3).
    Rms,
    /// RMSNorm scaled while still in f32, then cast back (OLMo 2/3).
    RmsScaledInF32,
    /// RMSNorm scaled by `1 + weight` in f32 (Gemma); the stored weight starts at 0.
    RmsPlusOne,
    /// LayerNorm with a bias (GPT-NeoX).
    Layer,
}

/// Where queries and keys are normalised before the rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QkNorm {
    None,
    /// Over each head's `head_dim` (Qwen3, Gemma 3).
    PerHead,
    /// Over the whole projection, all heads at once (OLMo 2/3).
    Whole,
}

/// The projections of the attention block.
#[derive(Debug, Clone, Copy)]
pub(crate) enum QkvNames {
    /// Three projections.
    Separate {
        q: &'static str,
        k: &'static str,
        v: &'static str,
    },
    /// One fused projection laid out per head as `[heads, (q, k, v), head_dim]`
    /// (GPT-NeoX's `query_key_value`).
    FusedPerHead(&'static str),
}

/// The tensor names of an architecture, relative to the model (`embed` ...) or to a
/// layer (`layers.{i}.` + the rest). `None`: the architecture has no such tensor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Names {
    pub(crate) embed: &'static str,
    pub(crate) layers: &'static str,
    pub(crate) final_norm: &'static str,
    pub(crate) head: &'static str,
    /// Norm of the attention's input (Llama's `input_layernorm`).
    pub(crate) attn_in_norm: Option<&'static str>,
    /// Norm of the attention's output, before the residual add (OLMo 2, Gemma).
    pub(crate) attn_out_norm: Option<&'static str>,
    /// Norm of the MLP's input (Llama's `post_attention_layernorm`).
    pub(crate) mlp_in_norm: Option<&'static str>,
    /// Norm of the MLP's output, before the residual add (OLMo 2, Gemma).
    pub(crate) mlp_out_norm: Option<&'static str>,
    pub(crate) qkv: QkvNames,
    pub(crate) o: &'static str,
    pub(crate) q_norm: Option<&'static str>,
    pub(crate) k_norm: Option<&'static str>,
    /// The gate of a gated MLP; `None`: a plain `down(act(up(x)))` MLP (GPT-NeoX).
    pub(crate) gate: Option<&'static str>,
    pub(crate) up: &'static str,
    pub(crate) down: &'static str,
}

/// Llama's names, which most architectures share.
pub(crate) const LLAMA_NAMES: Names = Names {
    embed: "model.embed_tokens",
    layers: "model.layers",
    final_norm: "model.norm",
    head: "lm_head",
    attn_in_norm: Some("input_layernorm"),
    attn_out_norm: None,
    mlp_in_norm: Some("post_attention_layernorm"),
    mlp_out_norm: None,
    qkv: QkvNames::Separate {
        q: "self_attn.q_proj",
        k: "self_attn.k_proj",
        v: "self_attn.v_proj",
    },
    o: "self_attn.o_proj",
    q_norm: None,
    k_norm: None,
    gate: Some("mlp.gate_proj"),
    up: "mlp.up_proj",
    down: "mlp.down_proj",
};

/// One architecture: its names in transformers, its tensors, and its config dialect.
pub(crate) struct Spec {
    pub(crate) arch: Arch,
    /// The `architectures` entry transformers writes.
    pub(crate) architecture: &'static str,
    /// Other `architectures` entries that load the same weights.
    pub(crate) aliases: &'static [&'static str],
    pub(crate) model_type: &'static str,
    pub(crate) names: Names,
    pub(crate) norm: NormKind,
    pub(crate) qk_norm: QkNorm,
    /// Embeddings multiplied by `sqrt(hidden_size)`, rounded to the model's dtype
    /// (Gemma).
    pub(crate) scale_embeddings: bool,
    /// Defaults of the shared keys, as this architecture's transformers config has them.
    pub(crate) default_activation: Activation,
    pub(crate) default_attention_bias: bool,
    pub(crate) default_norm_eps: f64,
    pub(crate) default_rope_theta: f64,
    pub(crate) default_tie: bool,
    /// Fills sizes a config may leave to transformers' defaults (Gemma 3's nested
    /// `text_config` names only what differs from `Gemma3TextConfig`).
    pub(crate) size_defaults: fn(&mut RawConfig),
    /// Reads what this architecture's config says beyond the shared keys.
    pub(crate) resolve: fn(&RawConfig, &mut ModelConfig) -> Result<(), String>,
    /// Writes those settings back, in the key names transformers reads.
    pub write: fn(&ModelConfig, &mut Value),
}

/// Where a checkpoint keeps the language model's tensors. A multimodal checkpoint
/// (Gemma 3's `Gemma3ForConditionalGeneration`) nests them: transformers 4.x under
/// `language_model.model.*` and `language_model.lm_head`, 5.x under
/// `model.language_model.*` and `lm_head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    Plain,
    Nested4,
    Nested5,
}

impl WeightLayout {
    /// The layout of the stored tensors `has` knows, for architecture `arch`.
    pub(crate) fn detect(arch: Arch, has: impl Fn(&str) -> bool) -> Self {
        let embed = format!("{}.weight", arch.spec().names.embed);
        [
            WeightLayout::Plain,
            WeightLayout::Nested5,
            WeightLayout::Nested4,
        ]
        .into_iter()
        .find(|layout| has(&layout.stored(&embed)))
        .unwrap_or(WeightLayout::Plain)
    }

    /// The stored name of the tensor the architecture calls `name`.
    pub(crate) fn stored(self, name: &str) -> String {
        match (self, name.strip_prefix("model.")) {
            (WeightLayout::Plain, _) => name.to_string(),
            (WeightLayout::Nested5, Some(rest)) => format!("model.language_model.{rest}"),
            (WeightLayout::Nested4, Some(rest)) => format!("language_model.model.{rest}"),
            (WeightLayout::Nested4, None) => format!("language_model.{name}"),
            (WeightLayout::Nested5, None) => name.to_string(),
        }
    }
}

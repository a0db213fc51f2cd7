//! OLMo 2 and OLMo 3 (AI2, trained by OLMo-core). No norm before attention or MLP:
//! each sublayer's *output* is normalised before the residual add (transformers calls
//! the first `post_attention_layernorm`, which in Llama is the pre-MLP norm). Queries
//! and keys are RMS-normalised over the whole projection before RoPE, and every norm
//! scales in f32 before casting back. OLMo 3 adds sliding-window layers from
//! `layer_types` (3 of every 4 by default), each layer type with its own RoPE base.

use super::{Arch, Names, NormKind, QkNorm, Spec, LLAMA_NAMES};
use crate::model::config::{layer_windows, Activation, ModelConfig, RawConfig};
use serde_json::Value;

const NAMES: Names = Names {
    attn_in_norm: None,
    attn_out_norm: Some("post_attention_layernorm"),
    mlp_in_norm: None,
    mlp_out_norm: Some("post_feedforward_layernorm"),
    q_norm: Some("self_attn.q_norm"),
    k_norm: Some("self_attn.k_norm"),
    ..LLAMA_NAMES
};

const fn olmo(
    arch: Arch,
    architecture: &'static str,
    model_type: &'static str,
    default_rope_theta: f64,
    resolve: fn(&RawConfig, &mut ModelConfig) -> Result<(), String>,
    write: fn(&ModelConfig, &mut Value),
) -> Spec {
    Spec {
        arch,
        architecture,
        aliases: &[],
        model_type,
        names: NAMES,
        norm: NormKind::RmsScaledInF32,
        qk_norm: QkNorm::Whole,
        scale_embeddings: false,
        default_activation: Activation::Silu,
        default_attention_bias: false,
        default_norm_eps: 1e-5,
        default_rope_theta,
        default_tie: false,
        size_defaults: |_| {},
        resolve,
        write,
    }
}

pub(crate) const OLMO2: Spec = olmo(
    Arch::Olmo2,
    "Olmo2ForCausalLM",
    "olmo2",
    10_000.0,
    |_, _| Ok(()),
    |_, _| {},
);

pub(crate) const OLMO3: Spec = olmo(
    Arch::Olmo3,
    "Olmo3ForCausalLM",
    "olmo3",
    500_000.0,
    resolve_olmo3,
    write_olmo3,
);

fn resolve_olmo3(raw: &RawConfig, cfg: &mut ModelConfig) -> Result<(), String> {
    // A 4.x top-level `rope_theta` sets the full-attention layers only: transformers
    // gives the sliding ones the default base.
    cfg.local_rope_theta = Some(cfg.local_rope_theta.unwrap_or(500_000.0));
    let window = Some(raw.sliding_window.unwrap_or(4096));
    cfg.sliding_window = layer_windows(raw, window, cfg.num_hidden_layers, |i| (i + 1) % 4 != 0)?;
    Ok(())
}

fn write_olmo3(cfg: &ModelConfig, v: &mut Value) {
    super::llama::write_layer_types(cfg, v);
    if let Some(local) = cfg.local_rope_theta {
        // Per layer type, in the 5.x dialect, which is the only way to say it.
        v["rope_parameters"] = serde_json::json!({
            "full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": local},
        });
    }
}

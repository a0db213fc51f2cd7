//! Gemma 2 and Gemma 3 (text). Four norms per block (before and after both attention
//! and MLP), each scaling by `1 + weight` in f32; embeddings multiplied by
//! `sqrt(hidden_size)`; scores scaled by `query_pre_attn_scalar^-1/2`; a gated
//! GELU-tanh MLP. Gemma 2 soft-caps attention scores and logits and slides every other
//! layer; Gemma 3 drops the caps, normalises each head's queries and keys, slides five
//! layers of six and gives the sliding layers their own RoPE base.

use super::llama::write_layer_types;
use super::{Arch, Names, NormKind, QkNorm, Spec, LLAMA_NAMES};
use crate::model::config::{layer_windows, softcap, Activation, ModelConfig, RawConfig};
use serde_json::Value;

const NAMES: Names = Names {
    attn_in_norm: Some("input_layernorm"),
    attn_out_norm: Some("post_attention_layernorm"),
    mlp_in_norm: Some("pre_feedforward_layernorm"),
    mlp_out_norm: Some("post_feedforward_layernorm"),
    ..LLAMA_NAMES
};

pub(crate) const GEMMA2: Spec = Spec {
    arch: Arch::Gemma2,
    architecture: "Gemma2ForCausalLM",
    aliases: &[],
    model_type: "gemma2",
    names: NAMES,
    norm: NormKind::RmsPlusOne,
    qk_norm: QkNorm::None,
    scale_embeddings: true,
    default_activation: Activation::GeluTanh,
    default_attention_bias: false,
    default_norm_eps: 1e-6,
    default_rope_theta: 10_000.0,
    default_tie: true,
    size_defaults: |_| {},
    resolve: |raw, cfg| {
        cfg.attn_softcap = softcap(
            "attn_logit_softcapping",
            raw.attn_logit_softcapping.as_ref(),
            Some(50.0),
        )?;
        cfg.final_softcap = softcap(
            "final_logit_softcapping",
            raw.final_logit_softcapping.as_ref(),
            Some(30.0),
        )?;
        resolve_shared(raw, cfg, 2)
    },
    write,
};

pub(crate) const GEMMA3: Spec = Spec {
    arch: Arch::Gemma3,
    architecture: "Gemma3ForCausalLM",
    aliases: &["Gemma3ForConditionalGeneration"],
    model_type: "gemma3_text",
    names: Names {
        q_norm: Some("self_attn.q_norm"),
        k_norm: Some("self_attn.k_norm"),
        ..NAMES
    },
    norm: NormKind::RmsPlusOne,
    qk_norm: QkNorm::PerHead,
    scale_embeddings: true,
    default_activation: Activation::GeluTanh,
    default_attention_bias: false,
    default_norm_eps: 1e-6,
    default_rope_theta: 1_000_000.0,
    default_tie: true,
    size_defaults: gemma3_text_defaults,
    resolve: |raw, cfg| {
        // transformers 5 reads `attn_logit_softcapping` for Gemma 3 but never applies it.
        cfg.attn_softcap = None;
        cfg.final_softcap = softcap(
            "final_logit_softcapping",
            raw.final_logit_softcapping.as_ref(),
            None,
        )?;
        cfg.local_rope_theta = Some(cfg.local_rope_theta.unwrap_or(10_000.0));
        let pattern = raw.sliding_window_pattern.unwrap_or(6);
        resolve_shared(raw, cfg, pattern)
    },
    write,
};

/// `Gemma3TextConfig`'s defaults for what a config leaves out (a multimodal
/// checkpoint's `text_config` names only what differs from them).
fn gemma3_text_defaults(raw: &mut RawConfig) {
    let fill = |v: &mut Option<usize>, default: usize| {
        v.get_or_insert(default);
    };
    fill(&mut raw.vocab_size, 262_208);
    fill(&mut raw.hidden_size, 2304);
    fill(&mut raw.intermediate_size, 9216);
    fill(&mut raw.num_hidden_layers, 26);
    fill(&mut raw.num_attention_heads, 8);
    fill(&mut raw.num_key_value_heads, 4);
    fill(&mut raw.head_dim, 256);
    fill(&mut raw.max_position_embeddings, 131_072);
    // Token ids are not filled: an explicit null (no BOS) reads as absent here.
}

/// The scalar and the windows: every `pattern`-th layer attends fully, the rest slide.
fn resolve_shared(raw: &RawConfig, cfg: &mut ModelConfig, pattern: usize) -> Result<(), String> {
    if pattern == 0 {
        return Err("sliding_window_pattern is 0".into());
    }
    cfg.query_pre_attn_scalar = Some(raw.query_pre_attn_scalar.unwrap_or(256.0));
    let window = Some(raw.sliding_window.unwrap_or(4096));
    cfg.sliding_window = layer_windows(raw, window, cfg.num_hidden_layers, |i| {
        (i + 1) % pattern != 0
    })?;
    Ok(())
}

fn write(cfg: &ModelConfig, v: &mut Value) {
    let obj = v.as_object_mut().expect("config is an object");
    obj.remove("hidden_act");
    v["hidden_activation"] = cfg.activation.name().into();
    // transformers 5 validates it as an int.
    v["query_pre_attn_scalar"] = match cfg.query_pre_attn_scalar {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => (x as i64).into(),
        other => other.into(),
    };
    // Written even when off: an absent key means Gemma 2's default caps.
    v["attn_logit_softcapping"] = cfg.attn_softcap.into();
    v["final_logit_softcapping"] = cfg.final_softcap.into();
    if let Some(local) = cfg.local_rope_theta {
        v["rope_local_base_freq"] = local.into();
    }
    write_layer_types(cfg, v);
}

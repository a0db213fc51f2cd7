//! GPT-NeoX (Pythia): LayerNorm with bias, one fused `query_key_value` projection laid
//! out per head, RoPE on the first `rotary_pct` of each head only, a plain GELU MLP,
//! biases everywhere, an untied `embed_out`, and (by default) attention and MLP reading
//! the same input in parallel.

use super::{Arch, Names, NormKind, QkNorm, QkvNames, Spec};
use crate::model::config::{Activation, ModelConfig, RawConfig};
use serde_json::Value;

pub(crate) const GPT_NEOX: Spec = Spec {
    arch: Arch::GptNeox,
    architecture: "GPTNeoXForCausalLM",
    aliases: &[],
    model_type: "gpt_neox",
    names: Names {
        embed: "gpt_neox.embed_in",
        layers: "gpt_neox.layers",
        final_norm: "gpt_neox.final_layer_norm",
        head: "embed_out",
        attn_in_norm: Some("input_layernorm"),
        attn_out_norm: None,
        mlp_in_norm: Some("post_attention_layernorm"),
        mlp_out_norm: None,
        qkv: QkvNames::FusedPerHead("attention.query_key_value"),
        o: "attention.dense",
        q_norm: None,
        k_norm: None,
        gate: None,
        up: "mlp.dense_h_to_4h",
        down: "mlp.dense_4h_to_h",
    },
    norm: NormKind::Layer,
    qk_norm: QkNorm::None,
    scale_embeddings: false,
    default_activation: Activation::Gelu,
    default_attention_bias: true,
    default_norm_eps: 1e-5,
    default_rope_theta: 10_000.0,
    default_tie: false,
    size_defaults: |_| {},
    resolve,
    write,
};

fn resolve(raw: &RawConfig, cfg: &mut ModelConfig) -> Result<(), String> {
    if cfg.num_key_value_heads != cfg.num_attention_heads {
        return Err(format!(
            "GPT-NeoX has no grouped-query attention, but num_key_value_heads ({}) differs from num_attention_heads ({})",
            cfg.num_key_value_heads, cfg.num_attention_heads
        ));
    }
    let factor_given = raw.rotary_pct.is_some()
        || raw.partial_rotary_factor.is_some()
        || raw
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("partial_rotary_factor"))
            .is_some();
    if !factor_given {
        cfg.rotary_dim = cfg.head_dim / 4;
    }
    cfg.parallel_residual = raw.use_parallel_residual.unwrap_or(true);
    // The MLP always has biases; `attention_bias` covers query_key_value and dense.
    cfg.mlp_bias = true;
    Ok(())
}

fn write(cfg: &ModelConfig, v: &mut Value) {
    let obj = v.as_object_mut().expect("config is an object");
    for key in [
        "rms_norm_eps",
        "rope_theta",
        "rope_scaling",
        "head_dim",
        "num_key_value_heads",
    ] {
        obj.remove(key);
    }
    v["layer_norm_eps"] = cfg.norm_eps.into();
    v["rotary_emb_base"] = cfg.rope_theta.into();
    v["rotary_pct"] = (cfg.rotary_dim as f64 / cfg.head_dim as f64).into();
    v["use_parallel_residual"] = cfg.parallel_residual.into();
}

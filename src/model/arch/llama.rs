//! The Llama family: Llama 2/3, Mistral and Qwen2. They differ only in biases, tying,
//! sliding windows and RoPE scaling, which the config spells out.

use super::{Arch, NormKind, QkNorm, Spec, LLAMA_NAMES};
use crate::model::config::{layer_windows, Activation, ModelConfig, RawConfig};
use serde_json::Value;

const fn family(
    arch: Arch,
    architecture: &'static str,
    model_type: &'static str,
    resolve: fn(&RawConfig, &mut ModelConfig) -> Result<(), String>,
    write: fn(&ModelConfig, &mut Value),
) -> Spec {
    Spec {
        arch,
        architecture,
        aliases: &[],
        model_type,
        names: LLAMA_NAMES,
        norm: NormKind::Rms,
        qk_norm: QkNorm::None,
        scale_embeddings: false,
        default_activation: Activation::Silu,
        default_attention_bias: false,
        default_norm_eps: 1e-6,
        default_rope_theta: 10_000.0,
        default_tie: false,
        size_defaults: |_| {},
        resolve,
        write,
    }
}

pub(crate) const LLAMA: Spec = family(
    Arch::Llama,
    "LlamaForCausalLM",
    "llama",
    |_, _| Ok(()),
    write_llama,
);

pub(crate) const MISTRAL: Spec = family(
    Arch::Mistral,
    "MistralForCausalLM",
    "mistral",
    |raw, cfg| {
        cfg.sliding_window =
            layer_windows(raw, raw.sliding_window, cfg.num_hidden_layers, |_| true)?;
        Ok(())
    },
    write_sliding,
);

pub(crate) const QWEN2: Spec = family(
    Arch::Qwen2,
    "Qwen2ForCausalLM",
    "qwen2",
    |raw, cfg| {
        // Qwen2 always has q/k/v biases and never an output bias.
        cfg.qkv_bias = true;
        cfg.o_bias = false;
        cfg.sliding_window = qwen_windows(raw, cfg.num_hidden_layers)?;
        Ok(())
    },
    write_sliding,
);

/// Qwen's rule: a window only with `use_sliding_window`, from layer `max_window_layers`
/// on (28 by default).
pub(crate) fn qwen_windows(raw: &RawConfig, layers: usize) -> Result<Vec<Option<usize>>, String> {
    let window = raw
        .sliding_window
        .filter(|_| raw.use_sliding_window.unwrap_or(false));
    let first = raw.max_window_layers.unwrap_or(28);
    layer_windows(raw, window, layers, |i| i >= first)
}

fn write_llama(cfg: &ModelConfig, v: &mut Value) {
    v["mlp_bias"] = cfg.mlp_bias.into();
}

/// Writes the window as `sliding_window` with explicit `layer_types`, which every
/// sliding architecture of transformers 5 reads.
pub(crate) fn write_sliding(cfg: &ModelConfig, v: &mut Value) {
    write_layer_types(cfg, v);
}

pub(crate) fn write_layer_types(cfg: &ModelConfig, v: &mut Value) {
    let window = cfg.sliding_window.iter().flatten().next();
    match window {
        Some(w) => {
            v["sliding_window"] = (*w).into();
            v["use_sliding_window"] = true.into();
            v["max_window_layers"] = 0.into();
        }
        None => {
            v["sliding_window"] = Value::Null;
        }
    }
    v["layer_types"] = cfg
        .sliding_window
        .iter()
        .map(|w| {
            if w.is_some() {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect::<Vec<_>>()
        .into();
}

//! SmolLM3: Llama's block, with RoPE left out of every `no_rope_layer_interval`-th
//! layer (every 4th by default; `no_rope_layers` lists 1 for a layer with RoPE).

use super::{Arch, NormKind, QkNorm, Spec, LLAMA_NAMES};
use crate::model::config::{layer_windows, Activation, ModelConfig, RawConfig};
use serde_json::Value;

pub(crate) const SMOLLM3: Spec = Spec {
    arch: Arch::SmolLm3,
    architecture: "SmolLM3ForCausalLM",
    aliases: &[],
    model_type: "smollm3",
    names: LLAMA_NAMES,
    norm: NormKind::Rms,
    qk_norm: QkNorm::None,
    scale_embeddings: false,
    default_activation: Activation::Silu,
    default_attention_bias: false,
    default_norm_eps: 1e-6,
    default_rope_theta: 2_000_000.0,
    default_tie: true,
    size_defaults: |_| {},
    resolve,
    write,
};

fn resolve(raw: &RawConfig, cfg: &mut ModelConfig) -> Result<(), String> {
    let layers = cfg.num_hidden_layers;
    cfg.rope_layers = match &raw.no_rope_layers {
        Some(flags) => {
            if flags.len() != layers {
                return Err(format!(
                    "no_rope_layers has {} entries for {layers} layers",
                    flags.len()
                ));
            }
            flags.iter().map(|&f| f != 0).collect()
        }
        None => {
            let every = raw.no_rope_layer_interval.unwrap_or(4);
            if every == 0 {
                return Err("no_rope_layer_interval is 0".into());
            }
            (0..layers).map(|i| (i + 1) % every != 0).collect()
        }
    };
    // transformers slides only the layers without RoPE, and only when asked to.
    let window = raw
        .sliding_window
        .filter(|_| raw.use_sliding_window.unwrap_or(false));
    let rope = cfg.rope_layers.clone();
    cfg.sliding_window = layer_windows(raw, window, layers, |i| !rope[i])?;
    Ok(())
}

fn write(cfg: &ModelConfig, v: &mut Value) {
    v["mlp_bias"] = cfg.mlp_bias.into();
    v["no_rope_layers"] = cfg
        .rope_layers
        .iter()
        .map(|&r| u8::from(r))
        .collect::<Vec<_>>()
        .into();
    super::llama::write_layer_types(cfg, v);
}

//! Qwen3: Llama's block with an RMSNorm over each head's queries and keys before RoPE,
//! and `attention_bias` on all four projections.

use super::llama::{qwen_windows, write_sliding};
use super::{Arch, Names, NormKind, QkNorm, Spec, LLAMA_NAMES};
use crate::model::config::Activation;

pub(crate) const QWEN3: Spec = Spec {
    arch: Arch::Qwen3,
    architecture: "Qwen3ForCausalLM",
    aliases: &[],
    model_type: "qwen3",
    names: Names {
        q_norm: Some("self_attn.q_norm"),
        k_norm: Some("self_attn.k_norm"),
        ..LLAMA_NAMES
    },
    norm: NormKind::Rms,
    qk_norm: QkNorm::PerHead,
    scale_embeddings: false,
    default_activation: Activation::Silu,
    default_attention_bias: false,
    default_norm_eps: 1e-6,
    default_rope_theta: 10_000.0,
    default_tie: false,
    size_defaults: |_| {},
    resolve: |raw, cfg| {
        cfg.sliding_window = qwen_windows(raw, cfg.num_hidden_layers)?;
        Ok(())
    },
    write: write_sliding,
};

//! Parameter names, shapes and random initialisation of a model of any architecture.
//!
//! Names are the Hugging Face ones, so what is initialised here saves to a checkpoint
//! that transformers loads.

use super::arch::{NormKind, QkNorm, QkvNames};
use super::config::ModelConfig;
use candle_core::{DType, Device, Result, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;

/// What a parameter is, which decides its initial value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Matrix,
    Bias,
    NormScale,
}

/// Every parameter of the model (tied head omitted), in a stable order.
pub fn parameter_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    parameters(cfg)
        .into_iter()
        .map(|(name, shape, _)| (name, shape))
        .collect()
}

fn parameters(cfg: &ModelConfig) -> Vec<(String, Vec<usize>, Role)> {
    let spec = cfg.arch.spec();
    let names = &spec.names;
    let (h, d, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let (q, kv) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, role| out.push((name, shape, role));
    let linear =
        |push: &mut dyn FnMut(String, Vec<usize>, Role), name: String, rows, cols, bias| {
            push(format!("{name}.weight"), vec![rows, cols], Role::Matrix);
            if bias {
                push(format!("{name}.bias"), vec![rows], Role::Bias);
            }
        };
    let norm = |push: &mut dyn FnMut(String, Vec<usize>, Role), name: String, size| {
        push(format!("{name}.weight"), vec![size], Role::NormScale);
        if spec.norm == NormKind::Layer {
            push(format!("{name}.bias"), vec![size], Role::Bias);
        }
    };
    push(
        format!("{}.weight", names.embed),
        vec![cfg.vocab_size, h],
        Role::Matrix,
    );
    for l in 0..cfg.num_hidden_layers {
        let p = |name: &str| format!("{}.{l}.{name}", names.layers);
        if let Some(n) = names.attn_in_norm {
            norm(&mut push, p(n), h);
        }
        match names.qkv {
            QkvNames::Separate {
                q: qn,
                k: kn,
                v: vn,
            } => {
                for (name, rows) in [(qn, q), (kn, kv), (vn, kv)] {
                    linear(&mut push, p(name), rows, h, cfg.qkv_bias);
                }
            }
            QkvNames::FusedPerHead(name) => linear(&mut push, p(name), q + 2 * kv, h, cfg.qkv_bias),
        }
        let (q_size, k_size) = match spec.qk_norm {
            QkNorm::PerHead => (d, d),
            _ => (q, kv),
        };
        if spec.qk_norm != QkNorm::None {
            if let (Some(qn), Some(kn)) = (names.q_norm, names.k_norm) {
                norm(&mut push, p(qn), q_size);
                norm(&mut push, p(kn), k_size);
            }
        }
        linear(&mut push, p(names.o), h, q, cfg.o_bias);
        if let Some(n) = names.attn_out_norm {
            norm(&mut push, p(n), h);
        }
        if let Some(n) = names.mlp_in_norm {
            norm(&mut push, p(n), h);
        }
        if let Some(gate) = names.gate {
            linear(&mut push, p(gate), i, h, cfg.mlp_bias);
        }
        linear(&mut push, p(names.up), i, h, cfg.mlp_bias);
        linear(&mut push, p(names.down), h, i, cfg.mlp_bias);
        if let Some(n) = names.mlp_out_norm {
            norm(&mut push, p(n), h);
        }
    }
    norm(&mut push, names.final_norm.to_string(), h);
    if !cfg.tie_word_embeddings {
        push(
            format!("{}.weight", names.head),
            vec![cfg.vocab_size, h],
            Role::Matrix,
        );
    }
    out
}

/// Random weights: matrices ~ N(0, std^2), biases 0, norm scales at identity (1, or 0
/// where the architecture scales by `1 + weight`); reproducible from `seed`.
pub fn init_weights(
    cfg: &ModelConfig,
    std: f64,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0, std).map_err(candle_core::Error::wrap)?;
    let identity = if cfg.arch.spec().norm == NormKind::RmsPlusOne {
        0.0
    } else {
        1.0
    };
    parameters(cfg)
        .into_iter()
        .map(|(name, shape, role)| {
            let n: usize = shape.iter().product();
            let values: Vec<f64> = match role {
                Role::NormScale => vec![identity; n],
                Role::Bias => vec![0.0; n],
                Role::Matrix => (0..n).map(|_| normal.sample(&mut rng)).collect(),
            };
            let t = Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)?;
            Ok((name, t))
        })
        .collect()
}

/// The `config.json` keys that decide whether the parameter `name` exists and its
/// shape, for errors when the weights contradict the config.
pub fn keys_behind(cfg: &ModelConfig, name: &str) -> String {
    let spec = cfg.arch.spec();
    let names = &spec.names;
    let is = |part: &str| name.contains(part);
    let qk_norm = [names.q_norm, names.k_norm].into_iter().flatten().any(is);
    let attention = match names.qkv {
        QkvNames::Separate { q, k, v } => [q, k, v, names.o].into_iter().any(is),
        QkvNames::FusedPerHead(qkv) => is(qkv) || is(names.o),
    };
    let mlp = [Some(names.up), Some(names.down), names.gate]
        .into_iter()
        .flatten()
        .any(is);
    let keys = if name.ends_with(".bias") && attention {
        "attention_bias"
    } else if name.ends_with(".bias") && mlp {
        "mlp_bias"
    } else if qk_norm && spec.qk_norm == QkNorm::PerHead {
        "head_dim"
    } else if qk_norm {
        "num_attention_heads, num_key_value_heads, head_dim"
    } else if attention {
        "hidden_size, num_attention_heads, num_key_value_heads, head_dim"
    } else if mlp {
        "hidden_size, intermediate_size"
    } else if is(names.head) {
        "tie_word_embeddings, vocab_size, hidden_size"
    } else if is(names.embed) {
        "vocab_size, hidden_size"
    } else if name.contains("norm") {
        "hidden_size"
    } else {
        "num_hidden_layers"
    };
    format!("{keys} (architectures: {})", cfg.arch.architecture())
}

//! Parameter names, shapes and random initialisation of a Llama-family model.
//!
//! Names are the Hugging Face ones, so what is initialised here saves to a checkpoint
//! that transformers loads.

use super::config::LlamaConfig;
use candle_core::{DType, Device, Result, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;

/// Every parameter of the model (tied `lm_head` omitted), in a stable order.
pub fn parameter_shapes(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (h, d, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let (q, kv) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, h],
    )];
    for l in 0..cfg.num_hidden_layers {
        let p = |name: &str| format!("model.layers.{l}.{name}");
        out.push((p("input_layernorm.weight"), vec![h]));
        for (proj, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            out.push((p(&format!("self_attn.{proj}.weight")), vec![rows, h]));
            if cfg.qkv_bias {
                out.push((p(&format!("self_attn.{proj}.bias")), vec![rows]));
            }
        }
        out.push((p("self_attn.o_proj.weight"), vec![h, q]));
        if cfg.o_bias {
            out.push((p("self_attn.o_proj.bias"), vec![h]));
        }
        out.push((p("post_attention_layernorm.weight"), vec![h]));
        for (proj, shape) in [
            ("gate_proj", [i, h]),
            ("up_proj", [i, h]),
            ("down_proj", [h, i]),
        ] {
            out.push((p(&format!("mlp.{proj}.weight")), shape.to_vec()));
            if cfg.mlp_bias {
                out.push((p(&format!("mlp.{proj}.bias")), vec![shape[0]]));
            }
        }
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, h]));
    }
    out
}

/// Random weights: matrices ~ N(0, std^2), norm scales 1, biases 0; reproducible from
/// `seed`.
pub fn init_weights(
    cfg: &LlamaConfig,
    std: f64,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0, std).map_err(candle_core::Error::wrap)?;
    parameter_shapes(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f64> = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            };
            let t = Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)?;
            Ok((name, t))
        })
        .collect()
}

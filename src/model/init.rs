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
        .map(|p| (p.name, p.shape))
        .collect()
}

/// The part of the model a parameter belongs to: the unit of per-block sharpness
/// (PyHessian users ask for traces per layer, not per tensor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Block {
    Embedding,
    /// Layer `l`'s attention: its projections, their biases and its q/k norms.
    Attention(usize),
    /// Layer `l`'s MLP.
    Mlp(usize),
    /// Layer `l`'s norms around the attention and the MLP.
    Norms(usize),
    FinalNorm,
    Head,
}

impl Block {
    /// The layer, for blocks inside one.
    pub fn layer(&self) -> Option<usize> {
        match self {
            Block::Attention(l) | Block::Mlp(l) | Block::Norms(l) => Some(*l),
            _ => None,
        }
    }
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Block::Embedding => write!(f, "embed"),
            Block::Attention(l) => write!(f, "layers.{l}.attn"),
            Block::Mlp(l) => write!(f, "layers.{l}.mlp"),
            Block::Norms(l) => write!(f, "layers.{l}.norms"),
            Block::FinalNorm => write!(f, "final_norm"),
            Block::Head => write!(f, "head"),
        }
    }
}

/// The block of every parameter, in [`parameter_shapes`] order.
pub fn parameter_blocks(cfg: &ModelConfig) -> Vec<Block> {
    parameters(cfg).into_iter().map(|p| p.block).collect()
}

/// One parameter: its name, shape, role in initialisation and block.
struct Param {
    name: String,
    shape: Vec<usize>,
    role: Role,
    block: Block,
}

/// Collects parameters, each in the block being built.
struct Params {
    out: Vec<Param>,
    layer_norm: bool,
    block: Block,
}

impl Params {
    fn push(&mut self, name: String, shape: Vec<usize>, role: Role) {
        let block = self.block;
        self.out.push(Param {
            name,
            shape,
            role,
            block,
        });
    }

    fn linear(&mut self, name: String, rows: usize, cols: usize, bias: bool) {
        self.push(format!("{name}.weight"), vec![rows, cols], Role::Matrix);
        if bias {
            self.push(format!("{name}.bias"), vec![rows], Role::Bias);
        }
    }

    fn norm(&mut self, name: String, size: usize) {
        self.push(format!("{name}.weight"), vec![size], Role::NormScale);
        if self.layer_norm {
            self.push(format!("{name}.bias"), vec![size], Role::Bias);
        }
    }
}

fn parameters(cfg: &ModelConfig) -> Vec<Param> {
    let spec = cfg.arch.spec();
    let names = &spec.names;
    let (h, d, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let (q, kv) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
    let mut ps = Params {
        out: Vec::new(),
        layer_norm: spec.norm == NormKind::Layer,
        block: Block::Embedding,
    };
    ps.push(
        format!("{}.weight", names.embed),
        vec![cfg.vocab_size, h],
        Role::Matrix,
    );
    for l in 0..cfg.num_hidden_layers {
        let p = |name: &str| format!("{}.{l}.{name}", names.layers);
        if let Some(n) = names.attn_in_norm {
            ps.block = Block::Norms(l);
            ps.norm(p(n), h);
        }
        ps.block = Block::Attention(l);
        match names.qkv {
            QkvNames::Separate {
                q: qn,
                k: kn,
                v: vn,
            } => {
                for (name, rows) in [(qn, q), (kn, kv), (vn, kv)] {
                    ps.linear(p(name), rows, h, cfg.qkv_bias);
                }
            }
            QkvNames::FusedPerHead(name) => ps.linear(p(name), q + 2 * kv, h, cfg.qkv_bias),
        }
        let (q_size, k_size) = match spec.qk_norm {
            QkNorm::PerHead => (d, d),
            _ => (q, kv),
        };
        if spec.qk_norm != QkNorm::None {
            if let (Some(qn), Some(kn)) = (names.q_norm, names.k_norm) {
                ps.norm(p(qn), q_size);
                ps.norm(p(kn), k_size);
            }
        }
        ps.linear(p(names.o), h, q, cfg.o_bias);
        ps.block = Block::Norms(l);
        if let Some(n) = names.attn_out_norm {
            ps.norm(p(n), h);
        }
        if let Some(n) = names.mlp_in_norm {
            ps.norm(p(n), h);
        }
        ps.block = Block::Mlp(l);
        if let Some(gate) = names.gate {
            ps.linear(p(gate), i, h, cfg.mlp_bias);
        }
        ps.linear(p(names.up), i, h, cfg.mlp_bias);
        ps.linear(p(names.down), h, i, cfg.mlp_bias);
        ps.block = Block::Norms(l);
        if let Some(n) = names.mlp_out_norm {
            ps.norm(p(n), h);
        }
    }
    ps.block = Block::FinalNorm;
    ps.norm(names.final_norm.to_string(), h);
    if !cfg.tie_word_embeddings {
        ps.block = Block::Head;
        ps.push(
            format!("{}.weight", names.head),
            vec![cfg.vocab_size, h],
            Role::Matrix,
        );
    }
    ps.out
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
        .map(
            |Param {
                 name, shape, role, ..
             }| {
                let n: usize = shape.iter().product();
                let values: Vec<f64> = match role {
                    Role::NormScale => vec![identity; n],
                    Role::Bias => vec![0.0; n],
                    Role::Matrix => (0..n).map(|_| normal.sample(&mut rng)).collect(),
                };
                let t = Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)?;
                Ok((name, t))
            },
        )
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

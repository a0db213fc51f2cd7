//! The models: every supported architecture ([`Arch`]), its configuration, and the
//! one decoder that runs them all ([`Model`]), with a KV cache and a training path.
//!
//! Data flow: `config.json` -> [`ModelConfig`] (per-architecture dialect in `arch/`)
//! -> [`Model::load`] from a `VarBuilder` over the weights -> hidden states, logits,
//! losses.

mod arch;
mod attention;
pub(crate) mod avx512_rows;
mod bf16_gemm;
mod cache;
mod config;
mod cpu_attention;
mod decoder;
mod f32_gemm;
mod fused;
mod init;
mod kernels;
mod linear;
pub(crate) mod loss;
mod mlp;
mod norm;
mod rope;
mod tree;

pub use arch::{Arch, WeightLayout};
pub use cache::KvCache;
pub use config::{Activation, ModelConfig, RopeScaling};
pub use decoder::{select_rows, Model};
pub use init::{init_weights, keys_behind, parameter_blocks, parameter_shapes, Block};
pub use rope::inverse_frequencies;
pub use tree::TokenTree;

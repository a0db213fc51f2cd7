//! The Llama-family transformer: configuration, rotary embeddings, KV cache, decoder.

mod cache;
mod config;
mod fused;
mod init;
mod llama;
pub mod loss;
mod rope;

pub use cache::KvCache;
pub use config::{Family, LlamaConfig, RopeScaling};
pub use init::{init_weights, parameter_shapes};
pub use llama::{select_rows, Llama};
pub use rope::inverse_frequencies;

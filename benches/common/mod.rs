//! What the benchmarks share: the ~22M-parameter Llama they all time, and their knobs.

use ckpt::model::ModelConfig;

/// 6 layers, hidden 512, GQA 8/2, vocab 8192: 21.8M parameters.
pub const CONFIG: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama",
    "vocab_size":8192,"hidden_size":512,"intermediate_size":1024,"num_hidden_layers":6,
    "num_attention_heads":8,"num_key_value_heads":2,"max_position_embeddings":2048,
    "rms_norm_eps":1e-5,"rope_theta":10000.0,"bos_token_id":0,"eos_token_id":1}"#;

/// The benchmark model's configuration.
pub fn config() -> anyhow::Result<ModelConfig> {
    ModelConfig::from_json(CONFIG).map_err(anyhow::Error::msg)
}

/// An environment variable as a number, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

//! What the benchmarks share: the ~22M-parameter Llama they all time, and their knobs.

use ckpt::model::ModelConfig;

/// 6 layers, hidden 512, GQA 8/2, vocab 8192: 21.8M parameters.
pub const CONFIG: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama",
    "vocab_size":8192,"hidden_size":512,"intermediate_size":1024,"num_hidden_layers":6,
    "num_attention_heads":8,"num_key_value_heads":2,"max_position_embeddings":2048,
    "rms_norm_eps":1e-5,"rope_theta":10000.0,"bos_token_id":0,"eos_token_id":1}"#;

/// SmolLM2-135M's shape (`CKPT_BENCH_SHAPE=smollm2-135m`): 30 layers, hidden 576, GQA
/// 9/3, vocab 49,152, tied embeddings: 134.5M parameters.
pub const SMOLLM2_135M: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama",
    "vocab_size":49152,"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
    "num_attention_heads":9,"num_key_value_heads":3,"max_position_embeddings":2048,
    "rms_norm_eps":1e-5,"rope_theta":100000.0,"tie_word_embeddings":true,
    "bos_token_id":0,"eos_token_id":0}"#;

/// The benchmark model's configuration: the Llama above (or SmolLM2-135M's shape with
/// `CKPT_BENCH_SHAPE=smollm2-135m`), or the same shape in the architecture
/// `CKPT_BENCH_ARCH` names (`gpt_neox`, `olmo2`, `qwen3`, `gemma2`, ...).
pub fn config() -> anyhow::Result<ModelConfig> {
    let shape = match std::env::var("CKPT_BENCH_SHAPE").as_deref() {
        Ok("smollm2-135m") => SMOLLM2_135M,
        Ok(other) => anyhow::bail!("CKPT_BENCH_SHAPE={other}: only smollm2-135m"),
        Err(_) => CONFIG,
    };
    let mut json: serde_json::Value = serde_json::from_str(shape)?;
    if let Ok(name) = std::env::var("CKPT_BENCH_ARCH") {
        let arch: ckpt::model::Arch = serde_json::from_value(name.clone().into())
            .map_err(|_| anyhow::anyhow!("CKPT_BENCH_ARCH={name}: not an architecture"))?;
        json["architectures"] = serde_json::json!([arch.architecture()]);
        json["model_type"] = arch.model_type().into();
        if arch == ckpt::model::Arch::GptNeox {
            json["num_key_value_heads"] = json["num_attention_heads"].clone(); // no GQA
        }
        // Gemma's default scalar is for head_dim 256; this shape's heads have 64.
        json["query_pre_attn_scalar"] = 64.into();
    }
    ModelConfig::from_json(&json.to_string()).map_err(anyhow::Error::msg)
}

/// An environment variable as a number, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

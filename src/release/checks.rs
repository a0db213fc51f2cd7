//! Checks before anything leaves the machine: the checkpoint loads and computes, every
//! weight is finite, and config and tokenizer are present and agree.
//!
//! Each failure names the file and the problem: a release of a checkpoint that
//! `transformers` cannot load, or that holds a NaN, is worse than no release.

use crate::checkpoint::{non_finite, validate_shapes, Checkpoint, WeightFiles, CONFIG_FILE};
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::tokenizer::{TextTokenizer, TOKENIZER_FILE};
use candle_core::{DType, Device, Tensor};
#[cfg(test)]
use safetensors::Dtype;
use serde::Serialize;
use std::collections::BTreeSet;

/// A sentence the loaded model must score to a finite loss.
const PROBE: &str = "The quick brown fox jumps over the lazy dog.";

/// What the checks found, for the model card.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    #[serde(skip)]
    pub(crate) config: ModelConfig,
    pub(crate) parameters: usize,
    pub(crate) tensors: usize,
    /// Stored dtypes of the weights (`F32`, `BF16`...).
    pub(crate) dtypes: Vec<String>,
    pub(crate) weight_bytes: u64,
    pub(crate) tokenizer_vocab: usize,
    /// Mean next-token loss of the probe sentence (any finite value passes).
    pub(crate) probe_loss: f64,
}

/// Runs every check on `ckpt`.
pub(crate) fn check(ckpt: &Checkpoint) -> Result<CheckReport> {
    let config = ckpt.config()?;
    let weights = ckpt.weights()?;
    validate_shapes(&config, &weights)?;
    let (tensors, weight_bytes, dtypes) = check_finite(&weights)?;
    let tokenizer = check_tokenizer(ckpt, &config)?;
    let probe_loss = probe(ckpt, &config, &tokenizer, &dtypes)?;
    Ok(CheckReport {
        parameters: config.num_parameters(),
        config,
        tensors,
        dtypes: dtypes.into_iter().collect(),
        weight_bytes,
        tokenizer_vocab: tokenizer.vocab_size(),
        probe_loss,
    })
}

/// Fails on the first tensor holding a NaN or an infinity; returns the number of
/// tensors, their bytes and their dtypes.
fn check_finite(weights: &WeightFiles) -> Result<(usize, u64, BTreeSet<String>)> {
    let mut bytes_total = 0u64;
    let mut dtypes = BTreeSet::new();
    let tensors = weights.tensors();
    for (name, stored) in &tensors {
        let bytes = weights.raw_bytes(name).unwrap_or_default();
        bytes_total += bytes.len() as u64;
        dtypes.insert(format!("{:?}", stored.dtype));
        if let Some(bad) = non_finite(stored.dtype, bytes).filter(|&n| n > 0) {
            let file = weights.file_holding(name).unwrap_or(weights.origin());
            return Err(Error::bad_file(
                file,
                format!(
                    "tensor {name:?} holds {bad} non-finite values (NaN or infinity) out of {}; \
                     refusing to release it",
                    stored.shape.iter().product::<usize>()
                ),
            ));
        }
    }
    Ok((tensors.len(), bytes_total, dtypes))
}

/// The tokenizer loads, fits the embedding, and the config's special tokens exist.
fn check_tokenizer(ckpt: &Checkpoint, config: &ModelConfig) -> Result<TextTokenizer> {
    let path = ckpt.dir.join(TOKENIZER_FILE);
    if !path.is_file() {
        return Err(Error::bad_file(
            &path,
            "missing: a release needs the tokenizer for transformers to load the model",
        ));
    }
    let tokenizer = TextTokenizer::load(&ckpt.dir, None, config.bos_token_id, config.eos_token_id)?;
    let vocab = tokenizer.vocab_size();
    if vocab > config.vocab_size {
        return Err(Error::bad_file(
            &path,
            format!(
                "{vocab} tokens, but {CONFIG_FILE} has vocab_size {}: ids past {} have no embedding",
                config.vocab_size,
                config.vocab_size - 1
            ),
        ));
    }
    for (key, id) in [
        ("bos_token_id", config.bos_token_id),
        ("eos_token_id", config.eos_token_id),
    ] {
        if let Some(id) = id.filter(|&id| id as usize >= vocab) {
            return Err(Error::bad_file(
                ckpt.dir.join(CONFIG_FILE),
                format!("{key} {id} is not a token of {TOKENIZER_FILE} ({vocab} tokens)"),
            ));
        }
    }
    for name in [
        "tokenizer_config.json",
        "generation_config.json",
        "special_tokens_map.json",
    ] {
        let p = ckpt.dir.join(name);
        if p.is_file() {
            crate::error::read_json::<serde_json::Value>(&p)?;
        }
    }
    Ok(tokenizer)
}

/// Loads the model as stored and scores [`PROBE`]: the loss must be finite.
fn probe(
    ckpt: &Checkpoint,
    config: &ModelConfig,
    tokenizer: &TextTokenizer,
    dtypes: &BTreeSet<String>,
) -> Result<f64> {
    let dtype = match dtypes.iter().next().map(String::as_str) {
        Some("BF16") if dtypes.len() == 1 => DType::BF16,
        Some("F16") if dtypes.len() == 1 => DType::F16,
        _ => DType::F32,
    };
    let model = ckpt.load_model(&Device::Cpu, dtype)?;
    let mut ids = vec![tokenizer.prefix_token];
    ids.extend(tokenizer.encode(PROBE)?);
    ids.truncate(config.max_position_embeddings.max(2));
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let loss = model
        .next_token_loss(&input)?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()? as f64;
    if !loss.is_finite() {
        return Err(Error::bad_file(
            &ckpt.dir,
            format!("the model loads but its loss on a probe sentence is {loss}: refusing to release it"),
        ));
    }
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_found_in_every_float_dtype() {
        let f32s: Vec<u8> = [1.0f32, f32::NAN, f32::INFINITY, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(non_finite(Dtype::F32, &f32s), Some(2));
        let bf16 = |v: f32| ((v.to_bits() >> 16) as u16).to_le_bytes();
        let b: Vec<u8> = [1.0f32, f32::NEG_INFINITY, f32::NAN, 65504.0]
            .iter()
            .flat_map(|&v| bf16(v))
            .collect();
        assert_eq!(non_finite(Dtype::BF16, &b), Some(2));
        // f16: 0x3c00 = 1.0, 0x7c00 = inf, 0x7e00 = NaN, 0x7bff = 65504 (max finite).
        let h: Vec<u8> = [0x3c00u16, 0x7c00, 0x7e00, 0x7bff]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(non_finite(Dtype::F16, &h), Some(2));
        assert_eq!(non_finite(Dtype::I64, &[0; 8]), None);
    }
}

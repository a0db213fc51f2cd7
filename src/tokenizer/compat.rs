//! The tokenizer as transformers 5 loads it, where that differs from `tokenizer.json`.
//!
//! transformers 5 rebuilds the tokenizers of classes with their own pipeline from the
//! vocabulary and merges alone, keeping only `tokenizer.json`'s post-processor and
//! added tokens. For `LlamaTokenizer` (Llama 2, Mistral v0.1, TinyLlama and every
//! SentencePiece-converted BPE that names that class) the rebuilt pipeline has no
//! normalizer and a `Metaspace` pre-tokenizer instead of `tokenizer.json`'s
//! `Prepend("▁")` + `Replace(" ", "▁")` normalizer. The ids differ: `" dog"` gets one
//! `▁` instead of two, and text right after a special token gets none (`legacy:
//! false`). lm-eval 0.4.13 tokenizes through transformers, so ckpt does as it does.

use super::files::TokenizerFiles;
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;
use tokenizers::{DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper};

/// Tokenizer classes transformers 5 rebuilds as Llama's SentencePiece-style BPE.
const LLAMA_CLASSES: [&str; 2] = ["LlamaTokenizer", "LlamaTokenizerFast"];

/// Applies transformers 5's rebuild of `files`' tokenizer class to `inner`, loaded
/// from `path`; a class transformers uses `tokenizer.json` for is left as it is.
pub(crate) fn as_transformers_loads(
    inner: &mut tokenizers::Tokenizer,
    files: &TokenizerFiles,
    path: &Path,
) -> Result<()> {
    let class = files.config.get("tokenizer_class").and_then(Value::as_str);
    let is_bpe = matches!(inner.get_model(), tokenizers::ModelWrapper::BPE(_));
    if !class.is_some_and(|c| LLAMA_CLASSES.contains(&c)) || !is_bpe {
        return Ok(());
    }
    let flag = |key: &str, default: bool| {
        files
            .config
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    };
    // LlamaTokenizer's defaults: add_prefix_space None -> True, legacy False.
    let add_prefix_space = flag("add_prefix_space", true);
    let prepend_scheme = match (add_prefix_space, flag("legacy", false)) {
        (false, _) => "never",
        (true, true) => "always",
        (true, false) => "first",
    };
    let pre_tokenizer: PreTokenizerWrapper = parse(
        json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": prepend_scheme, "split": false}),
        path,
    )?;
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_prefix_space {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let decoder: DecoderWrapper = parse(json!({"type": "Sequence", "decoders": decoders}), path)?;
    inner
        .with_normalizer(None::<NormalizerWrapper>)
        .map_err(|e| Error::bad_file(path, format!("cannot rebuild the tokenizer: {e}")))?;
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(decoder));
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(value: Value, path: &Path) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| Error::bad_file(path, format!("cannot rebuild the tokenizer: {e}")))
}

//! The checkpoint's tokenizer (`tokenizer.json`) and its BOS token.
//!
//! Texts are encoded without special tokens, as lm-evaluation-harness does for causal
//! models; scoring prepends the BOS token itself (or EOS when there is no BOS, as the
//! harness's `prefix_token_id` does).

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// File name of a Hugging Face fast tokenizer.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A tokenizer with the token that starts every scored text.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// The token prepended to every text when scoring.
    pub prefix_token: u32,
    /// End of sequence: generation stops when it is produced.
    pub eos_token: Option<u32>,
}

impl TextTokenizer {
    /// The tokenizer of the checkpoint in `dir`, or the file `explicit` when given.
    /// `config_bos` / `config_eos` come from `config.json` and are the fallback.
    pub fn load(
        dir: &Path,
        explicit: Option<&Path>,
        config_bos: Option<u32>,
        config_eos: Option<u32>,
    ) -> Result<Self> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => dir.join(TOKENIZER_FILE),
        };
        if !path.is_file() {
            return Err(Error::bad_file(
                &path,
                "tokenizer not found (pass --tokenizer FILE to use another one)",
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::bad_file(&path, format!("cannot load tokenizer: {e}")))?;
        let special = special_tokens(&path);
        let by_name = |name: &Option<String>| name.as_deref().and_then(|t| inner.token_to_id(t));
        let prefix_token = by_name(&special.bos)
            .or(config_bos)
            .or_else(|| by_name(&special.eos))
            .or(config_eos)
            .ok_or_else(|| {
                Error::bad_file(
                    &path,
                    "no BOS or EOS token known (tokenizer_config.json or config.json must name one)",
                )
            })?;
        let eos_token = by_name(&special.eos).or(config_eos);
        Ok(Self {
            inner,
            path,
            prefix_token,
            eos_token,
        })
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::bad_file(&self.path, format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::bad_file(&self.path, format!("cannot decode: {e}")))
    }

    /// Text of `ids` without special tokens (how the harness decodes generations).
    pub fn decode_text(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::bad_file(&self.path, format!("cannot decode: {e}")))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The file the tokenizer was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Default)]
struct SpecialTokens {
    bos: Option<String>,
    eos: Option<String>,
}

/// BOS/EOS names from the `tokenizer_config.json` beside the tokenizer, if any.
/// Entries are either strings or `{"content": ...}` objects.
fn special_tokens(tokenizer: &Path) -> SpecialTokens {
    let path = tokenizer.with_file_name("tokenizer_config.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return SpecialTokens::default();
    };
    let Ok(cfg) = serde_json::from_slice::<Value>(&bytes) else {
        tracing::warn!("{}: invalid JSON, ignored", path.display());
        return SpecialTokens::default();
    };
    let name = |key: &str| match cfg.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    };
    SpecialTokens {
        bos: name("bos_token"),
        eos: name("eos_token"),
    }
}

//! The recipe's `[data]` and `[tokenizer]` sections.
//!
//! ```toml
//! [data]
//! paths = ["corpus/"]          # files or directories (expanded to supported files, sorted)
//! text_column = "text"         # JSONL/JSON/Parquet column holding a document
//! shuffle = true               # sequence order shuffled per epoch by the run's seed
//! # token_dtype = "u16"        # needed for raw .bin token shards
//! # chat_template = "tulu"     # SFT: "tulu", "chatml", a .jinja file or inline Jinja
//!                              # (default: the parent's own template; Tulu's if none)
//! # max_docs = 1000            # read at most this many documents / conversations
//!
//! [tokenizer]
//! path = "tokenizer.json"      # or a directory holding one
//! # train_vocab_size = 8192    # instead: train a byte-level BPE on the data
//! ```

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where the training data is and how to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Files or directories; a directory stands for the supported files under it.
    pub(crate) paths: Vec<PathBuf>,
    /// The column (JSON key) that holds a document's text.
    #[serde(default = "default_text_column")]
    pub(crate) text_column: String,
    /// Shuffle the order of sequences (conversations for SFT) each epoch.
    #[serde(default = "default_shuffle")]
    pub shuffle: bool,
    /// Element type of raw `.bin` token shards (`.npy` files say their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token_dtype: Option<TokenDtype>,
    /// SFT: `tulu`, `chatml`, a Jinja file or inline Jinja ([`crate::chat::TemplateChoice`]);
    /// when unset, the parent's own template (Tulu's for a base that has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) chat_template: Option<String>,
    /// Read at most this many documents (or conversations), in file order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_docs: Option<usize>,
}

/// Element type of pre-tokenized shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    U16,
    U32,
}

impl TokenDtype {
    /// Bytes per token.
    pub fn size(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }

    /// The largest token id the type holds.
    pub fn max_id(self) -> u32 {
        match self {
            TokenDtype::U16 => u16::MAX as u32,
            TokenDtype::U32 => u32::MAX,
        }
    }
}

/// Which tokenizer the run uses: a given one, or one trained on the data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// A `tokenizer.json`, or a directory holding one (a checkpoint, a Hub snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Train a byte-level BPE with this many tokens (special tokens included) on the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_vocab_size: Option<usize>,
}

fn default_text_column() -> String {
    "text".into()
}

fn default_shuffle() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let cfg: DataConfig = serde_json::from_str(r#"{"paths": ["a.jsonl"]}"#).unwrap();
        assert_eq!(cfg.text_column, "text");
        assert!(cfg.shuffle);
        assert_eq!(cfg.token_dtype, None);
        let cfg: DataConfig =
            serde_json::from_str(r#"{"paths": [], "token_dtype": "u16", "shuffle": false}"#)
                .unwrap();
        assert_eq!(cfg.token_dtype, Some(TokenDtype::U16));
        assert!(!cfg.shuffle);
        let err = serde_json::from_str::<DataConfig>(r#"{"paths": [], "colum": "x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("colum"), "{err}");
        let err = serde_json::from_str::<TokenizerConfig>(r#"{"vocab": 3}"#).unwrap_err();
        assert!(err.to_string().contains("vocab"));
        assert_eq!(
            serde_json::from_str::<TokenizerConfig>("{}").unwrap(),
            TokenizerConfig::default()
        );
    }
}

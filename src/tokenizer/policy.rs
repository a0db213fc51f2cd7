//! lm-evaluation-harness 0.4.13's tokenization policy (its HF backend), the one every
//! path that turns text into model inputs follows:
//! - `tok_encode` (log-likelihood contexts, `context + continuation` pairs, rolling
//!   texts): the tokenizer's defaults, so a tokenizer whose post-processor adds BOS
//!   (Llama 2/3, Mistral) starts every one with BOS; skipped when the text already
//!   starts with the text of the prefix token (`has_bos_prefix`);
//! - `tok_batch_encode` (generation prompts): the same, with the check against the
//!   BOS text;
//! - `add_bos_token=True/False` (`--add-bos-token true|false`) overrides the defaults:
//!   special tokens on (BOS only, the post-processor rebuilt as transformers 5 rebuilds
//!   it for an explicit `add_bos_token`) or off;
//! - the prefix token (what an empty context and the first rolling window are
//!   conditioned on) is `--prefix-token-id`, else BOS, else EOS.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// The reference whose policy this is; part of every stored result's identity.
pub const REFERENCE: &str = "lm-eval 0.4.13";

/// lm-eval's `add_bos_token` model argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddBos {
    /// Unset: whatever the tokenizer adds by default.
    #[default]
    Auto,
    True,
    False,
}

impl FromStr for AddBos {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "true" => Ok(Self::True),
            "false" => Ok(Self::False),
            _ => Err(format!("expected auto, true or false, not {s:?}")),
        }
    }
}

impl fmt::Display for AddBos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::True => "true",
            Self::False => "false",
        })
    }
}

/// How texts become token ids: lm-eval's `add_bos_token` and `prefix_token_id`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EncodePolicy {
    pub add_bos_token: AddBos,
    /// Overrides the token an empty context is conditioned on.
    pub prefix_token_id: Option<u32>,
}

impl EncodePolicy {
    /// A stable description, stored with results: results computed under another
    /// policy are never reused for this one.
    pub fn key(&self) -> String {
        let prefix = self
            .prefix_token_id
            .map_or("default".to_string(), |id| id.to_string());
        format!(
            "{REFERENCE}; add_bos_token={}; prefix_token_id={prefix}",
            self.add_bos_token
        )
    }

    /// Whether special tokens are added to a text that does not already start with
    /// the BOS text (`None`: the tokenizer's defaults).
    pub(crate) fn add_special_tokens(&self) -> bool {
        !matches!(self.add_bos_token, AddBos::False)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_keys_differ() {
        assert_eq!("TRUE".parse::<AddBos>(), Ok(AddBos::True));
        assert!("yes"
            .parse::<AddBos>()
            .unwrap_err()
            .contains("auto, true or false"));
        let auto = EncodePolicy::default();
        let on = EncodePolicy {
            add_bos_token: AddBos::True,
            ..auto
        };
        let prefix = EncodePolicy {
            prefix_token_id: Some(7),
            ..auto
        };
        assert_eq!(
            auto.key(),
            "lm-eval 0.4.13; add_bos_token=auto; prefix_token_id=default"
        );
        assert_ne!(auto.key(), on.key());
        assert_ne!(auto.key(), prefix.key());
        assert!(!EncodePolicy {
            add_bos_token: AddBos::False,
            ..auto
        }
        .add_special_tokens());
    }
}

//! A checkpoint's tokenizer as lm-evaluation-harness 0.4.13 uses it: `tokenizer.json`,
//! the settings beside it ([`files`]), and lm-eval's encoding policy ([`policy`]).
//!
//! Three ways to encode, for three kinds of text:
//! - [`TextTokenizer::encode_lm`]: lm-eval's `tok_encode` (contexts, `context +
//!   continuation` pairs, rolling texts), with the tokenizer's special tokens;
//! - [`TextTokenizer::encode_prompt`]: lm-eval's `tok_batch_encode` (generation
//!   prompts, chat-rendered prompts);
//! - [`TextTokenizer::encode`]: the text alone, no special tokens (an empty context's
//!   continuation, chat templates that spell their own special tokens).

pub(crate) mod compat;
pub(crate) mod files;
pub(crate) mod policy;

pub use files::{TemplateSource, TokenizerFiles};
pub use policy::{AddBos, EncodePolicy};

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tokenizers::processors::template::TemplateProcessing;

/// File name of a Hugging Face fast tokenizer.
pub(crate) const TOKENIZER_FILE: &str = "tokenizer.json";

/// A tokenizer with lm-eval's rules for adding special tokens.
pub struct TextTokenizer {
    /// The tokenizer with the post-processor the policy gives it.
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// The settings beside `tokenizer.json` (special tokens, chat template...).
    pub(crate) files: TokenizerFiles,
    pub(crate) policy: EncodePolicy,
    /// The token an empty context (and the first rolling window) is conditioned on.
    pub prefix_token: u32,
    /// End of sequence: generation stops when it is produced.
    pub eos_token: Option<u32>,
    /// Every token that ends a generation: EOS and `generation_config.json`'s.
    pub(crate) stop_tokens: Vec<u32>,
    /// The text of the prefix token: a text starting with it gets no special tokens.
    prefix_text: String,
    /// The BOS text: a generation prompt starting with it gets no special tokens.
    bos_text: Option<String>,
}

impl TextTokenizer {
    /// The tokenizer of the checkpoint in `dir` (or the file `explicit`) under lm-eval's
    /// default policy. `config_bos` / `config_eos` come from `config.json` and are the
    /// fallback when the tokenizer names neither.
    pub fn load(
        dir: &Path,
        explicit: Option<&Path>,
        config_bos: Option<u32>,
        config_eos: Option<u32>,
    ) -> Result<Self> {
        Self::load_with(
            dir,
            explicit,
            config_bos,
            config_eos,
            EncodePolicy::default(),
        )
    }

    /// As [`load`](Self::load), under `policy`.
    pub fn load_with(
        dir: &Path,
        explicit: Option<&Path>,
        config_bos: Option<u32>,
        config_eos: Option<u32>,
        policy: EncodePolicy,
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
        let mut inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::bad_file(&path, format!("cannot load tokenizer: {e}")))?;
        let files = TokenizerFiles::read(crate::error::parent_dir(&path))?;
        compat::as_transformers_loads(&mut inner, &files, &path)?;
        let by_name = |name: &Option<String>| name.as_deref().and_then(|t| inner.token_to_id(t));
        let bos = by_name(&files.bos);
        let eos_token = by_name(&files.eos).or(config_eos);
        // lm-eval's prefix_token_id: the override, else BOS, else EOS.
        let prefix_token = policy
            .prefix_token_id
            .or(bos)
            .or(by_name(&files.eos))
            .or(config_bos)
            .or(config_eos)
            .ok_or_else(|| {
                Error::bad_file(
                    &path,
                    "no BOS or EOS token known (tokenizer_config.json or config.json must name one)",
                )
            })?;
        if let Some(id) = policy.prefix_token_id {
            if id as usize >= inner.get_vocab_size(true) {
                return Err(Error::bad_value(
                    "--prefix-token-id",
                    format!(
                        "--prefix-token-id {id} is outside the tokenizer's vocabulary of {}",
                        inner.get_vocab_size(true)
                    ),
                ));
            }
        }
        let bos_text = bos.and(files.bos.clone());
        if policy.add_bos_token == AddBos::True {
            // transformers 5 rebuilds the post-processor for an explicit add_bos_token.
            let single = match (&bos_text, bos) {
                (Some(text), Some(id)) => TemplateProcessing::builder()
                    .try_single(format!("{text}:0 $A:0"))
                    .and_then(|b| {
                        b.special_tokens(vec![(text.clone(), id)])
                            .build()
                            .map_err(|e| e.to_string())
                    }),
                _ => TemplateProcessing::builder()
                    .try_single("$A:0")
                    .and_then(|b| b.build().map_err(|e| e.to_string())),
            }
            .map_err(|e| Error::bad_file(&path, format!("cannot add BOS: {e}")))?;
            inner.with_post_processor(Some(single));
        }
        let prefix_text = inner
            .decode(&[prefix_token], false)
            .map_err(|e| Error::bad_file(&path, format!("cannot decode: {e}")))?;
        let mut stop_tokens: Vec<u32> = eos_token.into_iter().collect();
        stop_tokens.extend(
            files
                .generation_eos
                .iter()
                .filter(|id| Some(**id) != eos_token),
        );
        let tok = Self {
            inner,
            path,
            files,
            policy,
            prefix_token,
            eos_token,
            stop_tokens,
            prefix_text,
            bos_text,
        };
        tok.warn_on_contradictions();
        Ok(tok)
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_special(text, false)
    }

    /// lm-eval's `tok_encode`: special tokens as the policy says, none when the text
    /// already starts with the prefix token's text.
    pub fn encode_lm(&self, text: &str) -> Result<Vec<u32>> {
        let add = self.policy.add_special_tokens() && !text.starts_with(&self.prefix_text);
        self.encode_special(text, add)
    }

    /// lm-eval's `tok_batch_encode` (one prompt per batch): special tokens as the
    /// policy says, none when the prompt already starts with the BOS text.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let has_bos = self
            .bos_text
            .as_deref()
            .is_some_and(|b| text.starts_with(b));
        self.encode_special(text, self.policy.add_special_tokens() && !has_bos)
    }

    fn encode_special(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::bad_file(&self.path, format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// What the tokenizer adds to a text under the policy (BOS, BOS + EOS, nothing).
    pub fn added_tokens(&self) -> Result<Vec<u32>> {
        let with = self.encode_special("a", self.policy.add_special_tokens())?;
        let without = self.encode("a")?;
        Ok(with
            .into_iter()
            .filter(|id| !without.contains(id))
            .collect())
    }

    /// A `--add-bos-token` or `tokenizer_config.json` that says one thing while the
    /// tokenizer does another gets a warning saying what will happen.
    fn warn_on_contradictions(&self) {
        let adds_by_default = self
            .encode_special("a", true)
            .map(|ids| ids.len() > self.encode("a").map_or(0, |v| v.len()))
            .unwrap_or(false);
        let file = self.path.display();
        match self.policy.add_bos_token {
            AddBos::False if adds_by_default => tracing::warn!(
                "{file}: the tokenizer adds special tokens by default; --add-bos-token false \
                 scores without them, as lm-eval's add_bos_token=False does"
            ),
            AddBos::True if self.bos_text.is_none() => tracing::warn!(
                "{file}: --add-bos-token true, but the tokenizer has no BOS token: nothing is added"
            ),
            AddBos::Auto if self.files.add_bos_token == Some(true) && !adds_by_default => {
                tracing::warn!(
                    "{file}: tokenizer_config.json says add_bos_token, but tokenizer.json's \
                     post-processor adds nothing; transformers 5 and lm-eval follow \
                     tokenizer.json, and so does ckpt (pass --add-bos-token true to add BOS)"
                )
            }
            _ => {}
        }
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::bad_file(&self.path, format!("cannot decode: {e}")))
    }

    /// Text of `ids` without special tokens (how the harness decodes generations).
    pub(crate) fn decode_text(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::bad_file(&self.path, format!("cannot decode: {e}")))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The most text bytes one token can stand for: the longest vocabulary entry's
    /// UTF-8 length, an upper bound whatever the encoding (a byte-level `Ġ` is two bytes
    /// for one, a byte-fallback `<0x41>` six for one). `text.len() / this` tokens at
    /// least: what tells a prompt too long for the context before tokenizing it.
    pub(crate) fn max_token_bytes(&self) -> usize {
        self.inner
            .get_vocab(true)
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// The file the tokenizer was read from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

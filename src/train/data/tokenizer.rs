//! The tokenizer a run trains with: a given `tokenizer.json` or one trained on the
//! data, with its special tokens and chat template, saved into the run directory in the
//! Hugging Face layout (`tokenizer.json` + `tokenizer_config.json`) so checkpoints can
//! carry it and `transformers.AutoTokenizer` loads it.

use super::bpe::{train_bpe, END_OF_TEXT, PAD};
use super::config::TokenizerConfig;
use crate::chat::TemplateChoice;
use crate::error::{Error, Result};
use crate::tokenizer::files::CHAT_TEMPLATE_FILE;
use crate::tokenizer::{TemplateSource, TokenizerFiles, TOKENIZER_FILE};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub use crate::tokenizer::files::TOKENIZER_CONFIG_FILE;

/// A special token: its text and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialToken {
    pub(crate) text: String,
    pub(crate) id: u32,
}

/// Token ids of a text and the byte range `start..end` of the text each one covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

/// A tokenizer with what training needs beside it.
pub struct TrainTokenizer {
    inner: tokenizers::Tokenizer,
    /// `inner` reading special-token text as plain text, for corpus documents.
    ordinary: tokenizers::Tokenizer,
    /// The `tokenizer.json` text, saved verbatim so a given tokenizer is copied exactly.
    json: String,
    /// Where it came from, for error messages.
    source: PathBuf,
    /// Appended after every pre-training document; ends every assistant turn.
    pub(crate) eos: SpecialToken,
    pub(crate) bos: Option<SpecialToken>,
    pub(crate) pad: Option<SpecialToken>,
    /// The Jinja chat template SFT renders conversations with.
    pub(crate) chat_template: TemplateSource,
    /// How it was chosen (`data.chat_template`); the parent's own is carried as is.
    pub template_choice: TemplateChoice,
    /// The source's own template, if it has one.
    own_template: Option<TemplateSource>,
    /// The text of `unk_token`, for templates that use it.
    unk: Option<String>,
    /// The context length `transformers` is told (`model_max_length`), when known.
    pub model_max_length: Option<usize>,
    /// The source's `tokenizer_config.json`; saving updates it with the fields above.
    source_config: Map<String, Value>,
}

/// The run's tokenizer, saved into `run_dir`:
/// - `cfg.path`: that tokenizer (a `tokenizer.json` or a directory holding one);
/// - `cfg.train_vocab_size`: a byte-level BPE trained on `training_docs`, unless
///   `run_dir` already holds the tokenizer an earlier start of this run trained (a
///   resumed run keeps its vocabulary).
///
/// `chat_template` (the recipe's) chooses the template; [`TemplateChoice::Own`] keeps
/// the tokenizer's own (Tulu's when it has none). `model_max_length` is the context
/// length written for `transformers`.
pub fn open_tokenizer(
    cfg: &TokenizerConfig,
    chat_template: &TemplateChoice,
    training_docs: Option<&[String]>,
    run_dir: &Path,
    model_max_length: usize,
) -> Result<TrainTokenizer> {
    let saved = run_dir.join(TOKENIZER_FILE);
    let mut tok = match (&cfg.path, cfg.train_vocab_size) {
        (Some(_), Some(_)) => {
            return Err(Error::bad_value(
                "tokenizer",
                "[tokenizer] sets both path and train_vocab_size; choose one",
            ))
        }
        (None, None) => {
            return Err(Error::bad_value(
                "tokenizer",
                "[tokenizer] needs path (a tokenizer.json) or train_vocab_size",
            ))
        }
        (Some(path), None) => TrainTokenizer::load(path, chat_template)?,
        (None, Some(_)) if saved.is_file() => {
            tracing::info!("reusing the tokenizer trained earlier: {}", saved.display());
            TrainTokenizer::load(&saved, chat_template)?
        }
        (None, Some(vocab_size)) => {
            let docs = training_docs.ok_or_else(|| {
                Error::bad_value("tokenizer.train_vocab_size", 
                    "train_vocab_size needs text documents in [data] (token shards are already tokenized)",
                )
            })?;
            let trained = train_bpe(docs, vocab_size)?;
            warn_if_short(&trained, vocab_size);
            TrainTokenizer::from_trained(trained, chat_template, &saved)?
        }
    };
    tok.model_max_length = Some(model_max_length);
    tok.save(run_dir)?;
    Ok(tok)
}

/// A warning, not an error, when the data allows fewer tokens than asked: the BPE stops
/// when no pair is left to merge, and a recipe whose data grows should not start failing
/// or need its vocabulary retuned. The model takes its vocabulary from the tokenizer,
/// so nothing is wrong with the run; the line says what the recipe's number became.
fn warn_if_short(trained: &tokenizers::Tokenizer, asked: usize) {
    let got = trained.get_vocab_size(true);
    if got < asked {
        tracing::warn!(
            "tokenizer.train_vocab_size = {asked}, but the data allows only {got} tokens \
             (no pair left to merge); the vocabulary has {got}"
        );
    }
}

impl TrainTokenizer {
    /// The tokenizer in `path` (a `tokenizer.json`, or a directory holding one). Special
    /// tokens come from the settings beside it ([`TokenizerFiles`]); failing that, EOS
    /// comes from a `config.json` beside it or from the usual names (`<|endoftext|>`,
    /// `</s>`...).
    pub fn load(path: &Path, chat_template: &TemplateChoice) -> Result<Self> {
        let file = if path.is_dir() {
            path.join(TOKENIZER_FILE)
        } else {
            path.to_path_buf()
        };
        let json = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let mut inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| Error::bad_file(&file, format!("cannot load tokenizer: {e}")))?;
        let files = TokenizerFiles::read(crate::error::parent_dir(&file))?;
        crate::tokenizer::compat::as_transformers_loads(&mut inner, &files, &file)?;
        let lookup = |name: &str| special(&inner, &file, name);
        let eos = match &files.eos {
            Some(name) => lookup(name)?,
            None => fallback_eos(&inner, &file)?,
        };
        let bos = files.bos.as_deref().map(lookup).transpose()?;
        let pad = files.pad.as_deref().map(lookup).transpose()?;
        Ok(Self {
            ordinary: ordinary(&inner),
            inner,
            json,
            source: file,
            eos,
            bos,
            pad,
            chat_template: chat_template.source(files.chat_template.as_ref())?,
            template_choice: chat_template.clone(),
            own_template: files.chat_template,
            unk: files.unk,
            model_max_length: None,
            source_config: files.config,
        })
    }

    /// A tokenizer made by [`train_bpe`]; `source` names it in error messages.
    pub fn from_trained(
        inner: tokenizers::Tokenizer,
        chat_template: &TemplateChoice,
        source: &Path,
    ) -> Result<Self> {
        let json = inner
            .to_string(false)
            .map_err(|e| Error::Invalid(format!("cannot serialise the tokenizer: {e}")))?;
        let eos = special(&inner, source, END_OF_TEXT)?;
        let pad = special(&inner, source, PAD)?;
        let mut source_config = Map::new();
        // Byte-level BPE decodes exactly; transformers' cleanup would drop spaces.
        source_config.insert("clean_up_tokenization_spaces".into(), false.into());
        Ok(Self {
            ordinary: ordinary(&inner),
            inner,
            json,
            source: source.to_path_buf(),
            bos: Some(eos.clone()),
            eos,
            pad: Some(pad),
            chat_template: chat_template.source(None)?,
            template_choice: chat_template.clone(),
            own_template: None,
            unk: None,
            model_max_length: None,
            source_config,
        })
    }

    /// Writes `tokenizer.json`, `tokenizer_config.json` and, when the parent's own
    /// template came from one, `chat_template.jinja` into `dir`, atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::atomic_file::write_bytes(&dir.join(TOKENIZER_FILE), self.json.as_bytes())?;
        crate::atomic_file::write_json(&dir.join(TOKENIZER_CONFIG_FILE), &self.hf_config())?;
        let template_file = dir.join(CHAT_TEMPLATE_FILE);
        match self.carried_template() {
            Some(t) if t.origin.ends_with(CHAT_TEMPLATE_FILE) => {
                crate::atomic_file::write_bytes(&template_file, t.text.as_bytes())
            }
            // The file would take priority over the config's template.
            _ if template_file.is_file() => {
                std::fs::remove_file(&template_file).map_err(|e| Error::io(&template_file, e))
            }
            _ => Ok(()),
        }
    }

    /// The parent's own template when it is kept unchanged.
    fn carried_template(&self) -> Option<&TemplateSource> {
        match self.template_choice {
            TemplateChoice::Own => self.own_template.as_ref(),
            _ => None,
        }
    }

    /// What `ckpt.json` records about the template: the choice and its origin.
    pub fn template_description(&self) -> String {
        let origin = self.chat_template.origin.display();
        match &self.template_choice {
            TemplateChoice::Own if self.own_template.is_some() => format!("own ({origin})"),
            _ => origin.to_string(),
        }
    }

    /// The special-token variables chat templates are rendered with.
    pub fn template_variables(&self) -> Vec<(String, String)> {
        let mut vars = vec![("eos_token".to_string(), self.eos.text.clone())];
        if let Some(b) = &self.bos {
            vars.push(("bos_token".into(), b.text.clone()));
        }
        if let Some(p) = &self.pad {
            vars.push(("pad_token".into(), p.text.clone()));
        }
        if let Some(u) = &self.unk {
            vars.push(("unk_token".into(), u.clone()));
        }
        vars
    }

    /// The `tokenizer_config.json` that [`save`](Self::save) writes: the source's
    /// settings (kept for `transformers`), with this tokenizer's special tokens, chat
    /// template and context length.
    pub fn hf_config(&self) -> Map<String, Value> {
        let mut config = self.source_config.clone();
        let text = |t: &Option<SpecialToken>| t.as_ref().map(|t| t.text.clone()).into();
        config.insert("bos_token".into(), text(&self.bos));
        config.insert("eos_token".into(), self.eos.text.clone().into());
        config.insert("pad_token".into(), text(&self.pad));
        // The parent's own template stays as it was written (a string, a list of named
        // templates, or a chat_template.jinja beside the config).
        if self.carried_template().is_none() {
            config.insert(
                "chat_template".into(),
                self.chat_template.text.clone().into(),
            );
        }
        if let Some(max) = self.model_max_length {
            config.insert("model_max_length".into(), max.into());
        }
        config
            .entry("tokenizer_class")
            .or_insert_with(|| "PreTrainedTokenizerFast".into());
        config
    }

    /// Token ids of `text`, without special tokens added (special tokens written in the
    /// text are still recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_with_offsets(text)?.ids)
    }

    /// Token ids of `text` with the byte range each token covers in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<Encoded> {
        self.encode_by(&self.inner, text)
    }

    /// Token ids of a corpus document: special-token text in it (a web page quoting
    /// `<|endoftext|>`) is encoded as the plain text it is, so a document can never
    /// forge a document boundary (tiktoken's `encode_ordinary`).
    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_by(&self.ordinary, text)?.ids)
    }

    fn encode_by(&self, tokenizer: &tokenizers::Tokenizer, text: &str) -> Result<Encoded> {
        let enc = tokenizer
            .encode(text, false)
            .map_err(|e| Error::bad_file(&self.source, format!("cannot encode text: {e}")))?;
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            offsets: enc.get_offsets().to_vec(),
        })
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::bad_file(&self.source, format!("cannot decode: {e}")))
    }

    /// Vocabulary size including added tokens (the model's embedding rows must cover it).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The text of `bos_token` for chat templates: empty when there is no BOS.
    pub fn bos_text(&self) -> &str {
        self.bos.as_ref().map_or("", |b| b.text.as_str())
    }

    /// The token SFT pads with: the pad token, else EOS.
    pub(crate) fn pad_id(&self) -> u32 {
        self.pad.as_ref().unwrap_or(&self.eos).id
    }

    /// The `tokenizer.json` text as read (or trained).
    pub(crate) fn json(&self) -> &str {
        &self.json
    }

    /// The `tokenizers` tokenizer itself.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn ordinary(inner: &tokenizers::Tokenizer) -> tokenizers::Tokenizer {
    let mut ordinary = inner.clone();
    ordinary.set_encode_special_tokens(true);
    ordinary
}

fn special(inner: &tokenizers::Tokenizer, file: &Path, name: &str) -> Result<SpecialToken> {
    let id = inner.token_to_id(name).ok_or_else(|| {
        Error::bad_file(
            file,
            format!("special token {name:?} is not in the vocabulary"),
        )
    })?;
    Ok(SpecialToken {
        text: name.to_string(),
        id,
    })
}

/// EOS without a `tokenizer_config.json`: `eos_token_id` of a `config.json` beside the
/// tokenizer (a checkpoint), else the first of the usual EOS names in the vocabulary.
fn fallback_eos(inner: &tokenizers::Tokenizer, file: &Path) -> Result<SpecialToken> {
    let model_config = file.with_file_name("config.json");
    if model_config.is_file() {
        let config: Value = crate::error::read_json(&model_config)?;
        let id = match config.get("eos_token_id") {
            Some(Value::Array(ids)) => ids.first().and_then(Value::as_u64),
            Some(v) => v.as_u64(),
            None => None,
        };
        if let Some(text) = id.and_then(|id| inner.id_to_token(id as u32)) {
            return special(inner, file, &text);
        }
    }
    ["<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"]
        .iter()
        .find_map(|name| special(inner, file, name).ok())
        .ok_or_else(|| {
            Error::bad_file(
                file,
                "no EOS token known: put a tokenizer_config.json with eos_token beside it",
            )
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small byte-level BPE trained on a few sentences: fast enough for every test.
    pub(crate) fn test_tokenizer() -> TrainTokenizer {
        let docs: Vec<String> = (0..50)
            .map(|i| {
                format!("Document {i}: the quick brown fox jumps over the lazy dog. Hello world!")
            })
            .collect();
        let inner = train_bpe(&docs, 320).unwrap();
        TrainTokenizer::from_trained(
            inner,
            &TemplateChoice::Own,
            Path::new("test/tokenizer.json"),
        )
        .unwrap()
    }

    #[test]
    fn trained_tokenizer_is_saved_in_the_hugging_face_layout() {
        let run = tempfile::tempdir().unwrap();
        let docs = vec!["some text to learn from, some text".to_string(); 20];
        let cfg = TokenizerConfig {
            path: None,
            train_vocab_size: Some(280),
        };
        let tok =
            open_tokenizer(&cfg, &TemplateChoice::Own, Some(&docs), run.path(), 2048).unwrap();
        assert_eq!((tok.eos.id, tok.pad_id()), (0, 1));
        let config: Value =
            crate::error::read_json(&run.path().join(TOKENIZER_CONFIG_FILE)).unwrap();
        assert_eq!(config["bos_token"], "<|endoftext|>");
        assert_eq!(config["eos_token"], "<|endoftext|>");
        assert_eq!(config["pad_token"], "<|pad|>");
        assert_eq!(config["chat_template"], crate::chat::TULU_CHAT_TEMPLATE);
        assert_eq!(config["model_max_length"], 2048);
        assert_eq!(config["tokenizer_class"], "PreTrainedTokenizerFast");

        // The saved pair loads back with the same special tokens and vocabulary; a
        // restart reuses it instead of training again (the documents are not needed).
        let inline = TemplateChoice::Inline("{{ messages }}".into());
        let again = open_tokenizer(&cfg, &inline, None, run.path(), 2048).unwrap();
        assert_eq!(
            (again.eos.clone(), again.pad.clone()),
            (tok.eos.clone(), tok.pad.clone())
        );
        assert_eq!(again.vocab_size(), tok.vocab_size());
        assert_eq!(again.chat_template.text, "{{ messages }}");
        let text = "some text, more text";
        assert_eq!(again.encode(text).unwrap(), tok.encode(text).unwrap());
    }

    #[test]
    fn given_tokenizer_is_copied_and_configuration_errors_are_clear() {
        let src = tempfile::tempdir().unwrap();
        let tok = test_tokenizer();
        tok.save(src.path()).unwrap();
        let run = tempfile::tempdir().unwrap();
        let cfg = TokenizerConfig {
            path: Some(src.path().to_path_buf()),
            train_vocab_size: None,
        };
        let loaded = open_tokenizer(&cfg, &TemplateChoice::Own, None, run.path(), 64).unwrap();
        assert_eq!(loaded.eos, tok.eos);
        assert_eq!(
            std::fs::read(run.path().join(TOKENIZER_FILE)).unwrap(),
            std::fs::read(src.path().join(TOKENIZER_FILE)).unwrap()
        );

        // Without tokenizer_config.json, EOS is found by its usual name.
        std::fs::remove_file(src.path().join(TOKENIZER_CONFIG_FILE)).unwrap();
        let bare =
            TrainTokenizer::load(&src.path().join(TOKENIZER_FILE), &TemplateChoice::Own).unwrap();
        assert_eq!(
            (bare.eos.text.as_str(), bare.pad.as_ref()),
            ("<|endoftext|>", None)
        );
        assert_eq!(bare.pad_id(), bare.eos.id);

        let both = TokenizerConfig {
            path: Some(src.path().to_path_buf()),
            train_vocab_size: Some(300),
        };
        let err = open_tokenizer(&both, &TemplateChoice::Own, None, run.path(), 64)
            .err()
            .unwrap();
        assert!(err.to_string().contains("choose one"));
        let train = TokenizerConfig {
            path: None,
            train_vocab_size: Some(300),
        };
        let err = open_tokenizer(
            &train,
            &TemplateChoice::Own,
            None,
            tempfile::tempdir().unwrap().path(),
            64,
        );
        assert!(err.err().unwrap().to_string().contains("token shards"));
        let err = TrainTokenizer::load(&run.path().join("missing.json"), &TemplateChoice::Own)
            .err()
            .unwrap();
        assert!(err.to_string().contains("missing.json"));
    }
}

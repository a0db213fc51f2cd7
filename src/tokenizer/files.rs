//! What a checkpoint's tokenizer directory says beside `tokenizer.json`, read once by
//! one set of rules for every command:
//! - `tokenizer_config.json`: special tokens (strings or `{"content": ...}` objects),
//!   `add_bos_token`/`add_eos_token`, `model_max_length`, and `chat_template` as a
//!   string or a list of named templates;
//! - `special_tokens_map.json`: special tokens the config does not name;
//! - `chat_template.jinja`: takes priority over the config's template, as transformers
//!   5 gives it;
//! - `generation_config.json`: `eos_token_id`, a number or a list.

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// File name of the Hugging Face tokenizer settings beside `tokenizer.json`.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Special tokens of older checkpoints.
pub(crate) const SPECIAL_TOKENS_MAP_FILE: &str = "special_tokens_map.json";
/// File name transformers (>= 4.43) saves a single chat template to.
pub(crate) const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
/// Generation defaults: the tokens that end a generation.
pub(crate) const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// The files beside config and weights that make a checkpoint load as transformers
/// loads it (tokenizer, its settings, generation defaults, chat template): what a Hub
/// revision fetches, a merge copies and a release ships, when present.
pub const SIDE_FILES: [&str; 10] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
];

/// A chat template and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSource {
    pub text: String,
    pub(crate) origin: PathBuf,
}

/// The settings of a tokenizer directory.
#[derive(Debug, Clone, Default)]
pub struct TokenizerFiles {
    /// `tokenizer_config.json` as read (empty when absent).
    pub(crate) config: Map<String, Value>,
    pub(crate) bos: Option<String>,
    pub(crate) eos: Option<String>,
    pub(crate) pad: Option<String>,
    pub(crate) unk: Option<String>,
    /// As written in `tokenizer_config.json`; transformers 5 ignores both when a
    /// `tokenizer.json` is present (its post-processor decides what is added).
    pub(crate) add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    pub chat_template: Option<TemplateSource>,
    /// `generation_config.json`'s `eos_token_id`: every token that ends a generation.
    pub(crate) generation_eos: Vec<u32>,
    pub model_max_length: Option<usize>,
}

impl TokenizerFiles {
    /// The settings in `dir` (the directory of a `tokenizer.json`); absent files are
    /// empty settings, malformed ones an error naming the file.
    pub fn read(dir: &Path) -> Result<Self> {
        let config = read_object(&dir.join(TOKENIZER_CONFIG_FILE))?;
        let map = read_object(&dir.join(SPECIAL_TOKENS_MAP_FILE))?;
        let special = |key: &str| token_text(config.get(key)).or_else(|| token_text(map.get(key)));
        let flag = |key: &str| config.get(key).and_then(Value::as_bool);
        let config_path = dir.join(TOKENIZER_CONFIG_FILE);
        let template_file = dir.join(CHAT_TEMPLATE_FILE);
        let chat_template = if template_file.is_file() {
            Some(TemplateSource {
                text: std::fs::read_to_string(&template_file)
                    .map_err(|e| Error::io(&template_file, e))?,
                origin: template_file,
            })
        } else {
            template_in(&config, &config_path)?.map(|text| TemplateSource {
                text,
                origin: config_path.clone(),
            })
        };
        Ok(Self {
            bos: special("bos_token"),
            eos: special("eos_token"),
            pad: special("pad_token"),
            unk: special("unk_token"),
            add_bos_token: flag("add_bos_token"),
            add_eos_token: flag("add_eos_token"),
            chat_template,
            generation_eos: generation_eos(&dir.join(GENERATION_CONFIG_FILE))?,
            model_max_length: config
                .get("model_max_length")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok()),
            config,
        })
    }

    /// The special-token variables a chat template is rendered with, as transformers
    /// passes its `special_tokens_map`: every `*_token` of the config (a string or an
    /// `AddedToken`), the named `extra_special_tokens`, and the standard ones the
    /// special-tokens map adds; each as its text.
    pub fn template_variables(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| {
            if !vars.iter().any(|(name, _)| name == k) {
                vars.push((k.to_string(), v));
            }
        };
        for (k, v) in [
            ("bos_token", &self.bos),
            ("eos_token", &self.eos),
            ("unk_token", &self.unk),
            ("pad_token", &self.pad),
        ] {
            if let Some(v) = v {
                put(k, v.clone());
            }
        }
        for (k, v) in &self.config {
            if k.ends_with("_token") {
                if let Some(text) = token_text(Some(v)) {
                    put(k, text);
                }
            }
        }
        if let Some(Value::Object(extra)) = self.config.get("extra_special_tokens") {
            for (k, v) in extra {
                if let Some(text) = token_text(Some(v)) {
                    put(k, text);
                }
            }
        }
        vars
    }
}

/// A JSON object file, or an empty one when the file does not exist.
pub(crate) fn read_object(path: &Path) -> Result<Map<String, Value>> {
    if !path.is_file() {
        return Ok(Map::new());
    }
    match crate::error::read_json::<Value>(path)? {
        Value::Object(map) => Ok(map),
        _ => Err(Error::bad_file(path, "expected a JSON object")),
    }
}

/// A special token's text: a string or an `AddedToken` object `{"content": ...}`.
pub(crate) fn token_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

/// The `chat_template` entry: a string, or a list of named templates (the `default`
/// one, as transformers picks it when no tools are given).
fn template_in(config: &Map<String, Value>, path: &Path) -> Result<Option<String>> {
    match config.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template").and_then(Value::as_str))
            .map(|t| Some(t.to_string()))
            .ok_or_else(|| {
                Error::bad_file(path, "chat_template is a list without a `default` template")
            }),
        Some(_) => Err(Error::bad_file(
            path,
            "chat_template must be a string or a list of {name, template}",
        )),
    }
}

/// `eos_token_id` of a `generation_config.json`: a number or a list of numbers.
fn generation_eos(path: &Path) -> Result<Vec<u32>> {
    let config = read_object(path)?;
    let id = |v: &Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::bad_file(path, format!("eos_token_id: {v} is not a token id")))
    };
    match config.get("eos_token_id") {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(ids)) => ids.iter().map(id).collect(),
        Some(v) => Ok(vec![id(v)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn config_map_template_file_and_generation_config() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Nothing at all: empty settings.
        let none = TokenizerFiles::read(d).unwrap();
        assert!(none.bos.is_none() && none.chat_template.is_none());
        assert!(none.generation_eos.is_empty());

        write(
            d,
            TOKENIZER_CONFIG_FILE,
            r#"{"bos_token": {"content": "<s>", "lstrip": false}, "add_bos_token": true,
                "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
                "model_max_length": 4096}"#,
        );
        write(
            d,
            SPECIAL_TOKENS_MAP_FILE,
            r#"{"bos_token": "<x>", "eos_token": "</s>"}"#,
        );
        write(d, GENERATION_CONFIG_FILE, r#"{"eos_token_id": [2, 7]}"#);
        let f = TokenizerFiles::read(d).unwrap();
        // The config wins over the map; the map fills what the config lacks.
        assert_eq!(
            (f.bos.as_deref(), f.eos.as_deref()),
            (Some("<s>"), Some("</s>"))
        );
        assert_eq!((f.add_bos_token, f.add_eos_token), (Some(true), None));
        assert_eq!(f.chat_template.as_ref().unwrap().text, "D");
        assert_eq!(f.generation_eos, vec![2, 7]);
        assert_eq!(f.model_max_length, Some(4096));
        assert_eq!(
            f.template_variables(),
            vec![
                ("bos_token".to_string(), "<s>".to_string()),
                ("eos_token".to_string(), "</s>".to_string())
            ]
        );

        // chat_template.jinja takes priority over the config's entry.
        write(d, CHAT_TEMPLATE_FILE, "FILE");
        let f = TokenizerFiles::read(d).unwrap();
        let t = f.chat_template.unwrap();
        assert_eq!(
            (t.text.as_str(), t.origin.ends_with(CHAT_TEMPLATE_FILE)),
            ("FILE", true)
        );
    }

    #[test]
    fn malformed_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, TOKENIZER_CONFIG_FILE, r#"{"chat_template": 3}"#);
        let e = TokenizerFiles::read(d).unwrap_err().to_string();
        assert!(
            e.contains(TOKENIZER_CONFIG_FILE) && e.contains("chat_template"),
            "{e}"
        );
        write(
            d,
            TOKENIZER_CONFIG_FILE,
            r#"{"chat_template": [{"name": "x", "template": "y"}]}"#,
        );
        let e = TokenizerFiles::read(d).unwrap_err().to_string();
        assert!(e.contains("without a `default`"), "{e}");
        write(d, TOKENIZER_CONFIG_FILE, "[1]");
        assert!(TokenizerFiles::read(d).is_err());
        std::fs::remove_file(d.join(TOKENIZER_CONFIG_FILE)).unwrap();
        write(d, GENERATION_CONFIG_FILE, r#"{"eos_token_id": "two"}"#);
        let e = TokenizerFiles::read(d).unwrap_err().to_string();
        assert!(
            e.contains(GENERATION_CONFIG_FILE) && e.contains("not a token id"),
            "{e}"
        );
    }
}

//! The chat prompt a checkpoint answers an instruction with: the Jinja `chat_template`
//! of its `tokenizer_config.json` (or a `chat_template.jinja` beside it, as recent
//! transformers save it), rendered with minijinja as transformers renders it; a
//! checkpoint without one (a model fine-tuned by `ckpt train` before templates were
//! saved, a base model) gets Tulu's template, the one `ckpt train` fine-tunes with.
//!
//! ```no_run
//! # use ckpt::judge::chat::ChatPrompt;
//! let chat = ChatPrompt::for_checkpoint(std::path::Path::new("runs/sft/step-100"))?;
//! let prompt = chat.user_turn("Name three colours.")?; // "<|user|>\nName three colours.\n<|assistant|>\n"
//! # Ok::<(), ckpt::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::train::data::sft::{ChatTemplate, Message, TULU_CHAT_TEMPLATE};
use serde_json::Value;
use std::path::Path;

/// File name of the tokenizer settings that carry the chat template.
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// File name transformers >= 4.43 saves the chat template to.
const TEMPLATE_FILE: &str = "chat_template.jinja";

/// A checkpoint's chat template, compiled.
pub struct ChatPrompt {
    template: ChatTemplate,
    /// Where the template came from, for messages and provenance.
    pub origin: String,
}

impl ChatPrompt {
    /// The template of the checkpoint in `dir` (see the module docs for the order).
    pub fn for_checkpoint(dir: &Path) -> Result<Self> {
        let config_path = dir.join(TOKENIZER_CONFIG);
        let config = if config_path.is_file() {
            crate::error::read_json::<Value>(&config_path)?
        } else {
            Value::Null
        };
        let bos = special_text(&config, "bos_token");
        let eos = special_text(&config, "eos_token");
        let (source, origin) = match template_in(&config, &config_path)? {
            Some(t) => (t, config_path.display().to_string()),
            None if dir.join(TEMPLATE_FILE).is_file() => {
                let file = dir.join(TEMPLATE_FILE);
                let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
                (text, file.display().to_string())
            }
            None => (TULU_CHAT_TEMPLATE.to_string(), "Tulu (default)".to_string()),
        };
        let template = ChatTemplate::new(&source, &bos, &eos)
            .map_err(|e| Error::bad_file(&origin, e.to_string()))?;
        Ok(Self { template, origin })
    }

    /// Compiles `source` with the given special-token texts.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        Ok(Self {
            template: ChatTemplate::new(source, bos, eos)?,
            origin: "given".into(),
        })
    }

    /// The conversation as text, with the assistant's header after it when
    /// `add_generation_prompt` (what a model continues).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.template
            .render(messages, add_generation_prompt)
            .map_err(|e| Error::Invalid(format!("{}: {e}", self.origin)))
    }

    /// A single user turn followed by the assistant's header.
    pub fn user_turn(&self, instruction: &str) -> Result<String> {
        let messages = [Message {
            role: "user".into(),
            content: instruction.into(),
        }];
        self.render(&messages, true)
    }
}

/// The `chat_template` entry: a string, or a list of named templates (the `default` one).
fn template_in(config: &Value, path: &Path) -> Result<Option<String>> {
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

/// A special token's text: a string, or `{"content": ...}`; empty when absent.
fn special_text(config: &Value, key: &str) -> String {
    match config.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_checkpoints_use_their_saved_template() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trained/tiny-wso");
        let chat = ChatPrompt::for_checkpoint(&dir).unwrap();
        assert!(chat.origin.ends_with(TOKENIZER_CONFIG));
        assert_eq!(
            chat.user_turn("Hi?").unwrap(),
            "<|user|>\nHi?\n<|assistant|>\n"
        );
    }

    #[test]
    fn named_templates_files_and_the_tulu_default() {
        let dir = tempfile::tempdir().unwrap();
        // No template at all: Tulu's.
        let chat = ChatPrompt::for_checkpoint(dir.path()).unwrap();
        assert_eq!(chat.origin, "Tulu (default)");
        assert_eq!(chat.user_turn("x").unwrap(), "<|user|>\nx\n<|assistant|>\n");
        // A template file beside the checkpoint, with the BOS of the config.
        std::fs::write(
            dir.path().join(TOKENIZER_CONFIG),
            r#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(TEMPLATE_FILE),
            "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}",
        )
        .unwrap();
        let chat = ChatPrompt::for_checkpoint(dir.path()).unwrap();
        assert_eq!(chat.user_turn("x").unwrap(), "<s>[user] x\n[assistant] ");
        // A list of named templates in the config wins over the file.
        std::fs::write(
            dir.path().join(TOKENIZER_CONFIG),
            r#"{"chat_template": [{"name": "tool_use", "template": "no"}, {"name": "default", "template": "{{ messages[0].content }}!"}]}"#,
        )
        .unwrap();
        let chat = ChatPrompt::for_checkpoint(dir.path()).unwrap();
        assert_eq!(chat.user_turn("x").unwrap(), "x!");
        std::fs::write(dir.path().join(TOKENIZER_CONFIG), r#"{"chat_template": 3}"#).unwrap();
        let err = ChatPrompt::for_checkpoint(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(TOKENIZER_CONFIG) && err.contains("string"),
            "{err}"
        );
    }

    #[test]
    fn a_broken_template_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(TOKENIZER_CONFIG),
            r#"{"chat_template": "{% for m in messages %}"}"#,
        )
        .unwrap();
        let err = ChatPrompt::for_checkpoint(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(TOKENIZER_CONFIG), "{err}");
    }
}

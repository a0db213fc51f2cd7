//! Chat templates: how a conversation becomes the text a model reads, for SFT,
//! judging and serving alike.
//!
//! A checkpoint's own template comes from its tokenizer directory
//! ([`crate::tokenizer::TokenizerFiles`]: `chat_template.jinja`, else
//! `tokenizer_config.json`'s `chat_template`). A base with none gets Tulu's, the one
//! `ckpt train` fine-tunes a template-less base with. `--chat-template`-style choices
//! ([`TemplateChoice`]) name a built-in (`tulu`, `chatml`) or a file.
//!
//! ```no_run
//! # use ckpt::chat::ChatPrompt;
//! let chat = ChatPrompt::for_checkpoint(std::path::Path::new("runs/sft/step-100"))?;
//! let prompt = chat.user_turn("Name three colours.")?;
//! # Ok::<(), ckpt::Error>(())
//! ```

pub(crate) mod template;

pub use template::{assistant_mask, ChatTemplate, Message, Rendered};

use crate::error::{Error, Result};
use crate::tokenizer::{TemplateSource, TokenizerFiles};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Tulu's chat template, as open-instruct and the Tulu 3 tokenizers ship it: roles on
/// their own line, each assistant turn closed by EOS (the last one without the newline).
pub const TULU_CHAT_TEMPLATE: &str = "{% for message in messages %}\
{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}\
{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}\
{% elif message['role'] == 'assistant' %}\
{% if not loop.last %}{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}\
{% else %}{{ '<|assistant|>\\n' + message['content'] + eos_token }}{% endif %}\
{% endif %}\
{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}\
{% endfor %}";

/// ChatML (`<|im_start|>role\n...<|im_end|>\n`), the layout Qwen and SmolLM use.
pub(crate) const CHATML_CHAT_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The role whose tokens are learned.
pub(crate) const ASSISTANT: &str = "assistant";

/// Which template a fine-tune renders with (`data.chat_template`), recorded in
/// `ckpt.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum TemplateChoice {
    /// The parent's own (its tokenizer directory's), carried into the output as is.
    Own,
    /// Tulu's, the default for a base with no template.
    Tulu,
    Chatml,
    /// A Jinja file.
    File(PathBuf),
    /// Jinja given inline in the recipe.
    Inline(String),
}

impl TemplateChoice {
    /// `"tulu"`, `"chatml"`, a path to an existing file, or inline Jinja.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "tulu" => Ok(Self::Tulu),
            "chatml" => Ok(Self::Chatml),
            "own" => Ok(Self::Own),
            v if v.contains("{{") || v.contains("{%") => Ok(Self::Inline(v.to_string())),
            v if Path::new(v).is_file() => Ok(Self::File(PathBuf::from(v))),
            v => Err(Error::bad_value(
                "data.chat_template",
                format!("data.chat_template: {v:?} is not tulu, chatml, an existing file or Jinja"),
            )),
        }
    }

    /// The template text and where it came from; `own` is the tokenizer's, Tulu's
    /// when it has none.
    pub(crate) fn source(&self, own: Option<&TemplateSource>) -> Result<TemplateSource> {
        let builtin = |text: &str, name: &str| TemplateSource {
            text: text.to_string(),
            origin: PathBuf::from(name),
        };
        Ok(match self {
            Self::Own => match own {
                Some(t) => t.clone(),
                None => builtin(
                    TULU_CHAT_TEMPLATE,
                    "tulu (default: the base has no template)",
                ),
            },
            Self::Tulu => builtin(TULU_CHAT_TEMPLATE, "tulu"),
            Self::Chatml => builtin(CHATML_CHAT_TEMPLATE, "chatml"),
            Self::File(path) => TemplateSource {
                text: std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?,
                origin: path.clone(),
            },
            Self::Inline(text) => builtin(text, "data.chat_template"),
        })
    }
}

/// A checkpoint's chat template, compiled with its special tokens.
pub struct ChatPrompt {
    template: ChatTemplate,
    /// Where the template came from, for messages and provenance.
    pub(crate) origin: String,
}

impl ChatPrompt {
    /// The template of the checkpoint in `dir` (Tulu's when it has none).
    pub fn for_checkpoint(dir: &Path) -> Result<Self> {
        let files = TokenizerFiles::read(dir)?;
        Self::from_files(&files)
    }

    /// The template of a tokenizer directory's settings (Tulu's when they have none).
    pub(crate) fn from_files(files: &TokenizerFiles) -> Result<Self> {
        let source = TemplateChoice::Own.source(files.chat_template.as_ref())?;
        let origin = source.origin.display().to_string();
        let variables = files.template_variables();
        let template = ChatTemplate::with_variables(&source.text, variables)
            .map_err(|e| Error::bad_file(&source.origin, e.to_string()))?;
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
            .map_err(|e| Error::bad_value("chat_template", format!("{}: {e}", self.origin)))
    }

    /// Messages given as JSON (content a string or a list of parts).
    pub fn render_json(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.template
            .render_json(messages, add_generation_prompt)
            .map(|r| r.text)
            .map_err(|e| Error::bad_value("chat_template", format!("{}: {e}", self.origin)))
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

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENIZER_CONFIG: &str = crate::tokenizer::files::TOKENIZER_CONFIG_FILE;

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
        let chat = ChatPrompt::for_checkpoint(dir.path()).unwrap();
        assert!(chat.origin.starts_with("tulu"));
        assert_eq!(chat.user_turn("x").unwrap(), "<|user|>\nx\n<|assistant|>\n");
        std::fs::write(
            dir.path().join(TOKENIZER_CONFIG),
            r#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>", "chat_template": [{"name": "tool_use", "template": "no"}, {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}!"}]}"#,
        )
        .unwrap();
        let chat = ChatPrompt::for_checkpoint(dir.path()).unwrap();
        assert_eq!(chat.user_turn("x").unwrap(), "<s>x!");
        std::fs::write(dir.path().join("chat_template.jinja"), "{{ eos_token }}").unwrap();
        let chat = ChatPrompt::for_checkpoint(dir.path()).unwrap();
        assert_eq!(chat.user_turn("x").unwrap(), "</s>");
        // A template that does not compile names its file.
        std::fs::write(
            dir.path().join("chat_template.jinja"),
            "{% for m in messages %}",
        )
        .unwrap();
        let err = ChatPrompt::for_checkpoint(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("chat_template.jinja"), "{err}");
    }

    #[test]
    fn choices_parse() {
        assert_eq!(TemplateChoice::parse("tulu").unwrap(), TemplateChoice::Tulu);
        assert_eq!(
            TemplateChoice::parse("chatml").unwrap(),
            TemplateChoice::Chatml
        );
        assert!(matches!(
            TemplateChoice::parse("{{ x }}").unwrap(),
            TemplateChoice::Inline(_)
        ));
        let err = TemplateChoice::parse("missing.jinja")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.jinja"), "{err}");
        let chatml = TemplateChoice::Chatml.source(None).unwrap();
        let t = ChatTemplate::new(&chatml.text, "", "").unwrap();
        let m = [Message {
            role: "user".into(),
            content: "hi".into(),
        }];
        assert_eq!(
            t.render(&m, true).unwrap(),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}

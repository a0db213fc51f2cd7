//! The sets sharpness is measured on, as the paper measures two (Appendix H): the
//! pre-training validation texts and the SFT validation conversations.
//!
//! `--data pt=val.jsonl --data sft=sft_val.jsonl`: each set is named (one set may go
//! unnamed), and its records decide how it is read. Texts (`.txt` lines, or records
//! with a `text` field) are packed as pre-training documents; conversations (records
//! with `messages`, as `ckpt train` fine-tunes on) are rendered with the checkpoint's
//! chat template and only the assistant's tokens count in the loss, as in training.

use crate::chat::Message;
use crate::error::{Error, Result};
use crate::records::for_each_record;
use crate::train::data::sft::{read_conversations, Conversation};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// What a set holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Documents, packed into rows.
    Texts(Vec<String>),
    /// Conversations, one per row, loss on the assistant's tokens.
    Chats(Vec<Vec<Message>>),
}

/// A named measurement set.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSet {
    /// `pt`, `sft`...; `None` for a lone unnamed `--data FILE`.
    pub(crate) name: Option<String>,
    pub(crate) path: PathBuf,
    pub(crate) content: Content,
}

impl DataSet {
    /// Reads `path`: conversations when its first record has `messages`, else texts.
    pub fn open(name: Option<String>, path: &Path) -> Result<Self> {
        let content = if first_record_has_messages(path)? {
            let chats = read_conversations(&[path.to_path_buf()], None)?;
            if chats.is_empty() {
                return Err(Error::bad_file(path, "contains no conversation"));
            }
            Content::Chats(
                chats
                    .into_iter()
                    .map(|c: Conversation| c.messages)
                    .collect(),
            )
        } else {
            Content::Texts(crate::texts::read_texts(path)?)
        };
        Ok(Self {
            name,
            path: path.to_path_buf(),
            content,
        })
    }

    /// Whether the set is conversations.
    pub fn is_chat(&self) -> bool {
        matches!(self.content, Content::Chats(_))
    }
}

/// `NAME=PATH` or `PATH`: the name, when the text before the first `=` is one
/// (a letter, then letters, digits, `-` or `_`).
pub fn parse_spec(spec: &str) -> (Option<String>, PathBuf) {
    if let Some((name, path)) = spec.split_once('=') {
        let mut chars = name.chars();
        let is_name = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if is_name && !path.is_empty() {
            return (Some(name.to_string()), PathBuf::from(path));
        }
    }
    (None, PathBuf::from(spec))
}

/// Checks a list of sets: names unique, and every set named when there are several.
pub fn check_names(specs: &[(Option<String>, PathBuf)]) -> Result<()> {
    if specs.len() > 1 {
        if let Some((_, path)) = specs.iter().find(|(n, _)| n.is_none()) {
            return Err(Error::bad_value("--data", format!(
                "--data {}: with several sets, name each one (--data pt=val.jsonl --data sft=chat.jsonl)",
                path.display()
            )));
        }
    }
    for (i, (name, _)) in specs.iter().enumerate() {
        if name.is_some() && specs[..i].iter().any(|(n, _)| n == name) {
            return Err(Error::bad_value(
                "--data",
                format!(
                    "--data: the set name {:?} is given twice",
                    name.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether the first record of a JSONL/JSON/Parquet file has a `messages` field.
fn first_record_has_messages(path: &Path) -> Result<bool> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "jsonl" | "json" | "parquet") {
        return Ok(false);
    }
    let mut found = false;
    for_each_record(path, None, &mut |record| {
        found = record.value.get("messages").is_some();
        Ok(ControlFlow::Break(()))
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_sets_and_names_are_checked() {
        assert_eq!(
            parse_spec("pt=data/val.jsonl"),
            (Some("pt".into()), "data/val.jsonl".into())
        );
        assert_eq!(parse_spec("val.jsonl"), (None, "val.jsonl".into()));
        // Not a name before '=': the whole is a path.
        assert_eq!(parse_spec("a/b=c.txt"), (None, "a/b=c.txt".into()));
        assert_eq!(parse_spec("pt="), (None, "pt=".into()));
        let two = |a: Option<&str>, b: Option<&str>| {
            check_names(&[
                (a.map(String::from), "x".into()),
                (b.map(String::from), "y".into()),
            ])
        };
        assert!(two(Some("pt"), Some("sft")).is_ok());
        assert!(two(Some("pt"), None)
            .unwrap_err()
            .to_string()
            .contains("name each"));
        assert!(two(Some("pt"), Some("pt"))
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(check_names(&[(None, "x".into())]).is_ok());
    }

    #[test]
    fn records_decide_texts_or_conversations() {
        let dir = tempfile::tempdir().unwrap();
        let texts = dir.path().join("t.jsonl");
        std::fs::write(&texts, "{\"text\": \"a b\"}\n").unwrap();
        let chats = dir.path().join("c.jsonl");
        std::fs::write(
            &chats,
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n",
        )
        .unwrap();
        assert!(!DataSet::open(None, &texts).unwrap().is_chat());
        let set = DataSet::open(Some("sft".into()), &chats).unwrap();
        assert!(set.is_chat());
        assert_eq!(
            set.content,
            Content::Chats(vec![vec![
                Message {
                    role: "user".into(),
                    content: "hi".into()
                },
                Message {
                    role: "assistant".into(),
                    content: "yo".into()
                },
            ]])
        );
    }
}

//! Reading texts to score: a plain text file (one text per non-empty line), a JSONL
//! file (one object per line with a `text` field) or a JSON array of such objects.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The texts in `path`; errors name the file, and the line where there is one.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    let bytes = crate::error::read_file(path)?;
    let content = std::str::from_utf8(&bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        Error::bad_file(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {}, line {line})",
                e.valid_up_to()
            ),
        )
    })?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let texts = match ext {
        "jsonl" => jsonl_texts(path, content)?,
        "json" => json_texts(path, content)?,
        _ => content
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect(),
    };
    if texts.is_empty() {
        return Err(Error::bad_file(path, "contains no text to score"));
    }
    Ok(texts)
}

fn text_field(path: &Path, record: &Value, where_: &str) -> Result<String> {
    match record.get("text") {
        // An empty text has no tokens: it would score perplexity 1, a perfect model.
        Some(Value::String(s)) if s.trim().is_empty() => Err(Error::bad_file(
            path,
            format!("{where_}: \"text\" is empty (nothing to score)"),
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Error::bad_file(
            path,
            format!("{where_}: field \"text\" is not a string"),
        )),
        None => Err(Error::bad_file(
            path,
            format!("{where_}: no \"text\" field"),
        )),
    }
}

fn jsonl_texts(path: &Path, content: &str) -> Result<Vec<String>> {
    content
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let where_ = format!("line {}", i + 1);
            let record: Value = serde_json::from_str(line)
                .map_err(|e| Error::bad_file(path, format!("{where_}: invalid JSON: {e}")))?;
            text_field(path, &record, &where_)
        })
        .collect()
}

fn json_texts(path: &Path, content: &str) -> Result<Vec<String>> {
    let value: Value = serde_json::from_str(content)
        .map_err(|e| Error::bad_file(path, format!("invalid JSON: {e}")))?;
    let Value::Array(records) = value else {
        return Err(Error::bad_file(
            path,
            "expected a JSON array of {\"text\": ...} objects",
        ));
    };
    records
        .iter()
        .enumerate()
        .map(|(i, r)| text_field(path, r, &format!("record {i}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_format_and_rejects_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str, content: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path
        };
        assert_eq!(
            read_texts(&p("a.txt", b"one\n\n two \n")).unwrap(),
            ["one", " two "]
        );
        assert_eq!(
            read_texts(&p(
                "a.jsonl",
                b"{\"text\": \"x\"}\n\n{\"text\": \"y\", \"id\": 2}\n"
            ))
            .unwrap(),
            ["x", "y"]
        );
        assert_eq!(
            read_texts(&p("a.json", b"[{\"text\": \"z\"}]")).unwrap(),
            ["z"]
        );

        let err = read_texts(&p("b.txt", b"\n  \n")).unwrap_err().to_string();
        assert!(err.contains("b.txt") && err.contains("no text"), "{err}");
        let err = read_texts(&p("c.txt", b"ok\nbad \xff\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.txt") && err.contains("UTF-8") && err.contains("line 2"),
            "{err}"
        );
        let err = read_texts(&p("d.jsonl", b"{\"text\": 1}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("d.jsonl") && err.contains("line 1"), "{err}");
        let err = read_texts(&p("e.jsonl", b"{\"txt\": \"a\"}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no \"text\""), "{err}");
    }
}

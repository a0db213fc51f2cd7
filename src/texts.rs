//! Reading texts to score: a plain text file (one text per non-empty line), or records
//! with a `text` field ([`crate::records`]: JSONL, a JSON array, Parquet).

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The texts in `path`; errors name the file, and the line, record or row.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let texts = match ext {
        "jsonl" | "json" | "parquet" => record_texts(path)?,
        _ => line_texts(path)?,
    };
    if texts.is_empty() {
        return Err(Error::bad_file(path, "contains no text to score"));
    }
    Ok(texts)
}

/// The non-empty lines of a text file.
fn line_texts(path: &Path) -> Result<Vec<String>> {
    Ok(crate::records::read_utf8(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect())
}

/// The `text` field of every record.
fn record_texts(path: &Path) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    crate::records::for_each_record(path, Some("text"), &mut |record| {
        texts.push(text_field(path, &record.value, &record.location)?);
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
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

        // Parquet, as the Hub's datasets store texts.
        let parquet = dir.path().join("t.parquet");
        crate::records::testing::write_parquet(
            &parquet,
            &["first", "second"],
            parquet::basic::Compression::SNAPPY,
        );
        assert_eq!(read_texts(&parquet).unwrap(), ["first", "second"]);
    }
}

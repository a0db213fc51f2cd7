//! Reading training data files: the documents of a pre-training corpus, the records of
//! an SFT set, or the pre-tokenized shards that replace both.
//!
//! Formats, picked by extension:
//! - `.txt`: the whole file is one document (a corpus directory of articles or books;
//!   paragraphs stay together). Use JSONL or Parquet for many documents per file.
//! - `.jsonl`: one JSON object per line, the text in `[data] text_column`; blank lines
//!   are skipped.
//! - `.json`: a JSON array of such objects, or JSON lines (as the Hub's `json` loader
//!   accepts both).
//! - `.parquet`: the Hub datasets' format; only the needed column is decoded.
//! - `.npy` / `.bin`: token shards (see [`super::tokens`]), never mixed with text.
//!
//! A directory stands for the supported files under it (recursively, hidden files
//! skipped), sorted by path so the corpus order never depends on the file system.

use super::config::DataConfig;
use super::tokens::{is_shard, TokenStream};
use crate::error::{Error, Result};
use crate::records::{for_each_record, read_utf8};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Extensions of the files a data directory contributes.
pub const DATA_EXTENSIONS: &[&str] = &["txt", "jsonl", "json", "parquet", "npy", "bin"];

/// The pre-training data of a recipe: documents to tokenize, or tokens already made.
pub enum Corpus {
    Documents(Vec<String>),
    Tokens(TokenStream),
}

impl Corpus {
    /// Reads the files of `cfg`: all token shards, or all text files.
    pub fn open(cfg: &DataConfig) -> Result<Self> {
        let files = expand_paths(&cfg.paths)?;
        let shards = files.iter().filter(|f| is_shard(f)).count();
        if shards == 0 {
            let docs = read_documents(&files, &cfg.text_column, cfg.max_docs)?;
            return Ok(Corpus::Documents(docs));
        }
        if shards < files.len() {
            return Err(Error::bad_value(
                "data.paths",
                "[data] paths mix token shards (.npy/.bin) with text files; use one kind",
            ));
        }
        if cfg.max_docs.is_some() {
            return Err(Error::bad_value(
                "data.max_docs",
                "[data] max_docs counts documents; token shards have none",
            ));
        }
        Ok(Corpus::Tokens(TokenStream::open_shards(
            &files,
            cfg.token_dtype,
        )?))
    }

    /// The documents, when the corpus is text (what a tokenizer can be trained on).
    pub fn documents(&self) -> Option<&[String]> {
        match self {
            Corpus::Documents(docs) => Some(docs),
            Corpus::Tokens(_) => None,
        }
    }
}

/// The data files `paths` stand for: files as given, directories expanded to the
/// supported files under them, sorted.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::bad_value("data.paths", "[data] paths is empty"));
    }
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_dir() {
            if !is_supported(path) {
                return Err(Error::bad_file(path, unsupported_message()));
            }
            files.push(path.clone());
            continue;
        }
        let found = files_under(path)?;
        if found.is_empty() {
            return Err(Error::bad_file(path, unsupported_message()));
        }
        files.extend(found);
    }
    Ok(files)
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let walk = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            Error::io(&path, e.into())
        })?;
        if entry.file_type().is_file() && is_supported(entry.path()) {
            found.push(entry.into_path());
        }
    }
    Ok(found)
}

fn is_supported(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    DATA_EXTENSIONS.contains(&ext)
}

fn unsupported_message() -> String {
    format!(
        "no supported data file (extensions: {})",
        DATA_EXTENSIONS.join(", ")
    )
}

/// The documents in `files`: the `column` of every record (a `.txt` file is one
/// document), at most `max_docs` in all.
pub fn read_documents(
    files: &[PathBuf],
    column: &str,
    max_docs: Option<usize>,
) -> Result<Vec<String>> {
    let limit = max_docs.unwrap_or(usize::MAX);
    let mut docs = Vec::new();
    for file in files {
        if docs.len() >= limit {
            break;
        }
        if file.extension().is_some_and(|e| e == "txt") {
            docs.push(read_utf8(file)?);
            continue;
        }
        for_each_record(file, Some(column), &mut |record| {
            docs.push(record.text(file, column)?);
            Ok(if docs.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::testing::write_parquet;

    fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn parquet_text_column_in_each_compression() {
        use parquet::basic::{Compression, ZstdLevel};
        let dir = tempfile::tempdir().unwrap();
        let texts = ["first doc", "zweites Dokument ü", ""];
        for (i, c) in [
            Compression::UNCOMPRESSED,
            Compression::SNAPPY,
            Compression::ZSTD(ZstdLevel::default()),
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("{i}.parquet"));
            write_parquet(&path, &texts, c);
            assert_eq!(
                read_documents(std::slice::from_ref(&path), "text", None).unwrap(),
                texts
            );
            assert_eq!(
                read_documents(&[path], "text", Some(2)).unwrap(),
                texts[..2]
            );
        }
        let path = dir.path().join("0.parquet");
        let err = read_documents(&[path], "content", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("0.parquet") && err.contains("\"content\"") && err.contains("id, text"),
            "{err}"
        );
    }

    #[test]
    fn json_formats_and_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let a = write(
            d,
            "a.jsonl",
            b"{\"body\": \"x\"}\n\n{\"body\": \"y\", \"n\": 1}\n",
        );
        assert_eq!(read_documents(&[a], "body", None).unwrap(), ["x", "y"]);
        let b = write(d, "b.json", b"[{\"text\": \"p\"}, {\"text\": \"q\"}]");
        let c = write(d, "c.json", b"{\"text\": \"r\"}\n{\"text\": \"s\"}\n");
        assert_eq!(
            read_documents(&[b, c], "text", None).unwrap(),
            ["p", "q", "r", "s"]
        );

        let bad = write(d, "bad.jsonl", b"{\"text\": \"ok\"}\n{\"text\": \n");
        let err = read_documents(&[bad], "text", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.jsonl: line 2: invalid JSON"), "{err}");
        let missing = write(d, "m.jsonl", b"{\"text\": \"ok\"}\n\n{\"txt\": \"no\"}\n");
        let err = read_documents(&[missing], "text", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.jsonl: line 3: no \"text\" column (it has: txt)"),
            "{err}"
        );
        let null = write(d, "n.json", b"[{\"text\": null}]");
        let err = read_documents(&[null], "text", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("n.json: record 0: column \"text\" is null"),
            "{err}"
        );
        let latin1 = write(d, "l.jsonl", b"{\"text\": \"a\"}\n{\"text\": \"\xe9\"}\n");
        let err = read_documents(&[latin1], "text", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("l.jsonl: line 2: not UTF-8"), "{err}");
    }

    #[test]
    fn directories_expand_sorted_and_txt_is_one_document() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "corpus/b.txt", b"second\n\nstill second");
        write(d, "corpus/a.txt", b"first");
        write(d, "corpus/sub/c.jsonl", b"{\"text\": \"third\"}");
        write(d, "corpus/.hidden.txt", b"no");
        write(d, "corpus/notes.md", b"no");
        let files = expand_paths(&[d.join("corpus")]).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.strip_prefix(d).unwrap()).collect();
        assert_eq!(
            names,
            [
                Path::new("corpus/a.txt"),
                Path::new("corpus/b.txt"),
                Path::new("corpus/sub/c.jsonl")
            ]
        );
        let docs = read_documents(&files, "text", None).unwrap();
        assert_eq!(docs, ["first", "second\n\nstill second", "third"]);
        assert_eq!(read_documents(&files, "text", Some(2)).unwrap().len(), 2);

        let err = expand_paths(&[d.join("corpus/notes.md")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("notes.md") && err.contains("parquet"), "{err}");
        let err = expand_paths(&[d.join("nope")]).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        assert!(expand_paths(&[]).is_err());
    }

    #[test]
    fn corpus_is_documents_or_shards_never_both() {
        use super::super::config::TokenDtype;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let shard = d.join("s/0.npy");
        super::super::tokens::write_npy_shard(&shard, &[1, 2, 3], TokenDtype::U16).unwrap();
        let cfg = |paths: Vec<PathBuf>| DataConfig {
            paths,
            text_column: "text".into(),
            shuffle: true,
            token_dtype: None,
            chat_template: None,
            max_docs: None,
        };
        let corpus = Corpus::open(&cfg(vec![d.join("s")])).unwrap();
        assert!(matches!(&corpus, Corpus::Tokens(t) if t.len() == 3));
        assert!(corpus.documents().is_none());
        let txt = write(d, "t.txt", b"doc");
        let corpus = Corpus::open(&cfg(vec![txt.clone()])).unwrap();
        assert_eq!(corpus.documents().unwrap(), ["doc"]);
        let err = Corpus::open(&cfg(vec![txt, shard]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("mix"), "{err}");
    }
}

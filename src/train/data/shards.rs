//! Pre-tokenizing a corpus into `.npy` token shards, which `[data] paths` then reads
//! memory-mapped: a large corpus is tokenized once, not at every start of every run.
//!
//! Files are read one at a time and the token stream is cut into shards of a fixed
//! size as it grows, so memory holds one file's documents and one shard, not the
//! corpus. The stream is the one the trainer packs from text: each document's tokens,
//! then EOS.

use super::config::TokenDtype;
use super::corpus::read_documents;
use super::pretrain::pack_documents;
use super::tokenizer::TrainTokenizer;
use super::tokens::write_npy_shard;
use crate::error::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What a tokenization wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardSummary {
    pub(crate) documents: usize,
    pub(crate) tokens: u64,
    pub(crate) shards: Vec<PathBuf>,
}

/// `ckpt tokenize`: which files, which tokenizer, and the shards to write.
#[derive(Debug, Clone)]
pub struct TokenizeJob {
    /// Text, JSONL/JSON or Parquet files, or directories of them.
    pub(crate) inputs: Vec<PathBuf>,
    /// A `tokenizer.json`, or a directory holding one (a checkpoint, a run directory).
    pub tokenizer: PathBuf,
    /// Directory for `shard-00000.npy`, `shard-00001.npy`, ...
    pub out: PathBuf,
    /// The JSON key holding a document's text.
    pub text_column: String,
    /// Token ids per shard (at least 1).
    pub(crate) shard_tokens: usize,
    /// Element type of the shards; `None`: u16 when the vocabulary fits.
    pub dtype: Option<TokenDtype>,
}

/// What a tokenization wrote, and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenizeOutcome {
    pub(crate) summary: ShardSummary,
    pub(crate) seconds: f64,
}

impl TokenizeJob {
    /// The inputs named and the shard size.
    pub fn check(&self) -> Result<()> {
        if self.inputs.is_empty() {
            return Err(Error::Invalid("give at least one input to tokenize".into()));
        }
        if self.shard_tokens == 0 {
            return Err(Error::Invalid("shard size must be at least 1 token".into()));
        }
        Ok(())
    }
}

/// Checks the job, loads the tokenizer and writes the shards.
pub fn run(job: &TokenizeJob) -> Result<TokenizeOutcome> {
    job.check()?;
    let started = std::time::Instant::now();
    let tok = TrainTokenizer::load(&job.tokenizer, &crate::chat::TemplateChoice::Own)?;
    let dtype = job.dtype.unwrap_or_else(|| dtype_for(&tok));
    let files = super::corpus::expand_paths(&job.inputs)?;
    let summary = tokenize_to_shards(
        &files,
        &job.text_column,
        &tok,
        &job.out,
        dtype,
        job.shard_tokens,
    )?;
    Ok(TokenizeOutcome {
        summary,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The narrowest dtype that holds every id of `tok`.
pub fn dtype_for(tok: &TrainTokenizer) -> TokenDtype {
    if tok.vocab_size() <= TokenDtype::U16.max_id() as usize + 1 {
        TokenDtype::U16
    } else {
        TokenDtype::U32
    }
}

/// Tokenizes the `column` documents of `files` with `tok` into
/// `out/shard-NNNNN.npy` files of `shard_tokens` tokens (the last one shorter).
pub fn tokenize_to_shards(
    files: &[PathBuf],
    column: &str,
    tok: &TrainTokenizer,
    out: &Path,
    dtype: TokenDtype,
    shard_tokens: usize,
) -> Result<ShardSummary> {
    if shard_tokens == 0 {
        // Not only a job's check: callers of this function alone would loop forever.
        return Err(Error::bad_value(
            "--shard-tokens",
            "shard size must be at least 1 token",
        ));
    }
    let mut summary = ShardSummary {
        documents: 0,
        tokens: 0,
        shards: Vec::new(),
    };
    let mut pending: Vec<u32> = Vec::new();
    let mut any_text = false;
    for file in files {
        let docs = read_documents(std::slice::from_ref(file), column, None)?;
        summary.documents += docs.len();
        any_text |= docs.iter().any(|d| !d.trim().is_empty());
        pending.extend(pack_documents(&docs, tok)?);
        while pending.len() >= shard_tokens {
            let rest = pending.split_off(shard_tokens);
            flush(&mut summary, out, &pending, dtype)?;
            pending = rest;
        }
    }
    if !any_text {
        // Nothing was written: an empty corpus is a mistake (a wrong file or column),
        // not 0 shards to train on.
        return Err(no_documents(files, column));
    }
    if !pending.is_empty() {
        flush(&mut summary, out, &pending, dtype)?;
    }
    Ok(summary)
}

fn no_documents(files: &[PathBuf], column: &str) -> Error {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let names = if names.is_empty() {
        "the input".to_string()
    } else {
        names.join(", ")
    };
    Error::bad_value(
        "--text-column",
        format!("{names}: no documents to tokenize (no non-empty {column:?} field or line)"),
    )
}

fn flush(summary: &mut ShardSummary, out: &Path, tokens: &[u32], dtype: TokenDtype) -> Result<()> {
    let path = out.join(format!("shard-{:05}.npy", summary.shards.len()));
    write_npy_shard(&path, tokens, dtype)?;
    summary.tokens += tokens.len() as u64;
    summary.shards.push(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::tokens::TokenStream;
    use crate::train::data::train_bpe;

    #[test]
    fn shards_hold_exactly_the_packed_stream() {
        let dir = tempfile::tempdir().unwrap();
        let docs: Vec<String> = (0..40)
            .map(|i| format!("document {i} says the river runs {} miles", i * 3))
            .collect();
        let jsonl: String = docs
            .iter()
            .map(|d| serde_json::json!({ "text": d }).to_string() + "\n")
            .collect();
        let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        let half = jsonl.lines().count() / 2;
        let lines: Vec<&str> = jsonl.lines().collect();
        std::fs::write(&a, lines[..half].join("\n")).unwrap();
        std::fs::write(&b, lines[half..].join("\n")).unwrap();
        let bpe = train_bpe(&docs, 300).unwrap();
        let tok = TrainTokenizer::from_trained(
            bpe,
            &crate::chat::TemplateChoice::Own,
            &dir.path().join("tok"),
        )
        .unwrap();
        let out = dir.path().join("shards");
        let files = vec![a, b];
        let summary = tokenize_to_shards(&files, "text", &tok, &out, dtype_for(&tok), 100).unwrap();
        let expected = pack_documents(&docs, &tok).unwrap();
        assert_eq!(summary.documents, 40);
        assert_eq!(summary.tokens, expected.len() as u64);
        assert_eq!(summary.shards.len(), expected.len().div_ceil(100));
        let stream = TokenStream::open_shards(&summary.shards, None).unwrap();
        let mut got = vec![0u32; expected.len()];
        stream.read(0, &mut got);
        assert_eq!(got, expected);
    }

    #[test]
    fn a_job_without_shard_size_or_inputs_is_refused() {
        let job = TokenizeJob {
            inputs: vec!["corpus.txt".into()],
            tokenizer: "tokenizer.json".into(),
            out: "shards".into(),
            text_column: "text".into(),
            shard_tokens: 1,
            dtype: None,
        };
        job.check().unwrap();
        let bad = TokenizeJob {
            shard_tokens: 0,
            ..job.clone()
        };
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("at least 1 token"));
        let bad = TokenizeJob {
            inputs: vec![],
            ..job
        };
        assert!(bad.check().is_err());
    }
}

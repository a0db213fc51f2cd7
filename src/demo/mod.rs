//! `ckpt demo`: the paper in miniature, offline, on a CPU. The plan ([`plan`]) says
//! what runs at each size; the ledger ([`ledger`]) which stages of a demo folder are
//! finished. The stages themselves are ordinary `ckpt` commands (the CLI runs them as
//! child processes with their logs in the folder), so a reader can repeat any of them.

pub(crate) mod commands;
pub(crate) mod ledger;
pub(crate) mod pipeline;
pub mod plan;
pub mod study;

use crate::error::{Error, Result};
use crate::train::data::{corpus::read_documents, open_tokenizer, TokenizerConfig};
use std::path::Path;

pub use ledger::{Ledger, Start};
pub use plan::{Plan, PretrainRun, Size};

/// Trains the byte-level BPE tokenizer every run of the demo shares, into `out_dir`
/// (`tokenizer.json`, `tokenizer_config.json`).
pub fn train_tokenizer(
    corpus: &Path,
    vocab_size: usize,
    out_dir: &Path,
    max_len: usize,
) -> Result<()> {
    let docs = read_documents(&[corpus.to_path_buf()], "text", None)?;
    let cfg = TokenizerConfig {
        path: None,
        train_vocab_size: Some(vocab_size),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    open_tokenizer(
        &cfg,
        &crate::chat::TemplateChoice::Own,
        Some(&docs),
        out_dir,
        max_len,
    )?;
    Ok(())
}

/// Fails before anything is written when the folder's file system has less than
/// `needed` bytes free: a clear message instead of a full disk halfway through.
pub fn check_free_space(dir: &Path, needed: u64) -> Result<()> {
    let free = fs4::available_space(dir).map_err(|e| Error::io(dir, e))?;
    if free < needed {
        return Err(Error::bad_file(
            dir,
            format!(
                "has {} MiB free; the demo needs about {} MiB",
                free >> 20,
                needed >> 20
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_little_free_space_is_a_clear_error_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        check_free_space(dir.path(), 1).unwrap();
        let err = check_free_space(dir.path(), u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("MiB free; the demo needs about"), "{err}");
        assert!(err.starts_with(&dir.path().display().to_string()), "{err}");
    }
}

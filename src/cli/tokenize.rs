//! `ckpt tokenize INPUT... --tokenizer DIR --out DIR`: pre-tokenize a corpus into
//! `.npy` token shards for `[data] paths`. The flags become a [`TokenizeJob`];
//! [`crate::train::data::shards::run`] does the work.

use super::output::{outln, print_json, Ui};
use crate::train::data::shards::TokenizeJob;
use crate::train::data::TokenDtype;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct TokenizeArgs {
    /// Text files, JSONL/JSON or Parquet files, or directories of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// A tokenizer.json, or a directory holding one (a checkpoint, a run directory).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Directory for shard-00000.npy, shard-00001.npy, ...
    #[arg(long)]
    out: PathBuf,
    /// The column (JSON key) holding a document's text.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Token ids per shard.
    #[arg(long, default_value_t = 100_000_000)]
    shard_tokens: usize,
    /// Element type of the shards (default: u16 when the vocabulary fits).
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Dtype {
    U16,
    U32,
}

impl TokenizeArgs {
    /// The typed job these flags ask for.
    fn job(&self) -> TokenizeJob {
        TokenizeJob {
            inputs: self.inputs.clone(),
            tokenizer: self.tokenizer.clone(),
            out: self.out.clone(),
            text_column: self.text_column.clone(),
            shard_tokens: self.shard_tokens,
            dtype: self.dtype.map(|d| match d {
                Dtype::U16 => TokenDtype::U16,
                Dtype::U32 => TokenDtype::U32,
            }),
        }
    }
}

pub(crate) fn run(args: &TokenizeArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let done = crate::train::data::shards::run(&args.job())?;
    if args.json {
        print_json(&done)?;
    } else if !ui.quiet {
        outln!(
            "{} documents, {} tokens in {} shard(s) under {} ({:.1}s)",
            done.summary.documents,
            done.summary.tokens,
            done.summary.shards.len(),
            args.out.display(),
            done.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

//! `ckpt tokenize INPUT... --tokenizer DIR --out DIR`: pre-tokenize a corpus into
//! `.npy` token shards for `[data] paths`.

use super::output::{outln, print_json, Ui};
use crate::train::data::corpus::expand_paths;
use crate::train::data::shards::{dtype_for, tokenize_to_shards};
use crate::train::data::{TokenDtype, TrainTokenizer};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct TokenizeArgs {
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

pub fn run(args: &TokenizeArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let tok = TrainTokenizer::load(&args.tokenizer, &crate::chat::TemplateChoice::Own)?;
    let dtype = match args.dtype {
        Some(Dtype::U16) => TokenDtype::U16,
        Some(Dtype::U32) => TokenDtype::U32,
        None => dtype_for(&tok),
    };
    let files = expand_paths(&args.inputs)?;
    let summary = tokenize_to_shards(
        &files,
        &args.text_column,
        &tok,
        &args.out,
        dtype,
        args.shard_tokens,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        print_json(&serde_json::json!({ "summary": summary, "seconds": seconds }))?;
    } else if !ui.quiet {
        outln!(
            "{} documents, {} tokens in {} shard(s) under {} ({:.1}s)",
            summary.documents,
            summary.tokens,
            summary.shards.len(),
            args.out.display(),
            seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

//! `ckpt report [STORE...] [--baseline RUN] [--format F]... [--out DIR]`: the paper's
//! tables, findings and plots from the results store, or several read as one
//! (`crate::report`).

use super::output::{out, Ui};
use crate::report::{build, open_stores, write, Format, ReportOptions};
use crate::store::STORE_FILE;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    ckpt report                                   # ckpt.sqlite -> report/ (md, html, csv, json, png)\n  \
    ckpt report demo/ckpt.sqlite --format html --out site/\n  \
    ckpt report results/                          # every results/*.sqlite (the shards of a sweep) as one\n  \
    ckpt report --baseline wsd --json")]
pub struct ReportArgs {
    /// The results stores: files, or directories whose *.sqlite files (ckpt.sqlite, the
    /// shards of a sweep) are read; several are merged, exactly, into a temporary store.
    #[arg(default_value = STORE_FILE, value_name = "STORE")]
    stores: Vec<PathBuf>,
    /// Compare with this pre-training run (and, after SFT, its picked fine-tune)
    /// instead of the best decayed run.
    #[arg(long)]
    baseline: Option<String>,
    /// Formats to write (repeat or comma-separate; default: all): md, csv, json, html.
    #[arg(long = "format", value_delimiter = ',', value_parser = parse_format)]
    formats: Vec<Format>,
    /// Output directory (default: report/ beside the store).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The judged task whose score picks each base model's SFT learning rate.
    #[arg(long, default_value = crate::judge::run::TASK)]
    judge_task: String,
    #[command(flatten)]
    store_timeout: super::values::StoreTimeout,
    /// Print report.json on stdout instead of the markdown tables.
    #[arg(long)]
    json: bool,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

pub fn run(args: &ReportArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let store = open_stores(&args.stores, args.store_timeout.duration())?;
    let opts = ReportOptions {
        baseline: args.baseline.clone(),
        judge_task: args.judge_task.clone(),
    };
    let report = build(&store, &opts)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(store.path()));
    let formats = if args.formats.is_empty() {
        Format::ALL.to_vec()
    } else {
        args.formats.clone()
    };
    let files = write(&report, &out, &formats)?;
    if args.json {
        super::output::print_json(&report)?;
    } else {
        out!("{}", crate::report::markdown(&report, false));
    }
    if !ui.quiet {
        eprintln!("wrote {} files to {}", files.len(), out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `report/` beside the store.
fn default_out(store: &Path) -> PathBuf {
    store
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join("report"))
        .unwrap_or_else(|| PathBuf::from("report"))
}

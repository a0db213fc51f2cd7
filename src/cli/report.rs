//! `ckpt report [STORE...] [--baseline RUN] [--format F]... [--out DIR]`: the paper's
//! tables, findings and plots from the results store, or several read as one
//! (`crate::report`).

use super::output::{out, Ui};
use crate::report::{Format, ReportJob, ReportOptions};
use crate::store::STORE_FILE;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    ckpt report                                   # ckpt.sqlite -> report/ (md, html, csv, json, png)\n  \
    ckpt report demo/ckpt.sqlite --format html --out site/\n  \
    ckpt report results/                          # every results/*.sqlite (the shards of a sweep) as one\n  \
    ckpt report --baseline wsd --json")]
pub(crate) struct ReportArgs {
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
    #[arg(long, default_value = crate::eval::judge::run::TASK)]
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

impl ReportArgs {
    /// The flags as a job.
    fn job(&self) -> anyhow::Result<ReportJob> {
        Ok(ReportJob {
            stores: self.stores.clone(),
            options: ReportOptions {
                baseline: self.baseline.clone(),
                judge_task: self.judge_task.clone(),
            },
            formats: self.formats.clone(),
            out: self.out.clone(),
            store_timeout: self.store_timeout.duration(),
        })
    }
}

pub(crate) fn run(args: &ReportArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let done = crate::report::run(&args.job()?)?;
    if args.json {
        super::output::print_json(&done.report)?;
    } else {
        out!("{}", crate::report::markdown(&done.report, false));
    }
    if !ui.quiet {
        eprintln!("wrote {} files to {}", done.files.len(), done.out.display());
    }
    Ok(ExitCode::SUCCESS)
}

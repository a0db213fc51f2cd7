//! `ckpt tasks`: list the benchmark tasks (built-in and `--tasks-dir`), a suite's, or
//! print one task's rendered prompts and requests as JSONL (`--show`).

use super::output::{self, outln, print_json, table, Ui};
use crate::eval::data::DataSources;
use crate::eval::listing::{self, ShownDoc, TaskRow, TasksJob, TasksOutcome};
use crate::eval::spec::OutputType;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where task specs come from (shared with `ckpt eval`).
#[derive(Debug, Args)]
pub(crate) struct TaskSourceArgs {
    /// A directory of task specs (`*.toml`) and suites (`suites.toml`); a spec replaces
    /// the built-in of the same name. Repeatable.
    #[arg(long, value_name = "DIR")]
    pub(crate) tasks_dir: Vec<PathBuf>,
}

/// Where task data comes from (shared with `ckpt eval`).
#[derive(Debug, Args)]
pub(crate) struct DataArgs {
    /// A data file (JSONL, JSON, Parquet in the Hub dataset's schema) for a task's
    /// evaluated split, or for another split with TASK:SPLIT=FILE. Repeatable.
    #[arg(long = "data", value_name = "TASK[:SPLIT]=FILE")]
    pub(crate) data: Vec<String>,
    /// A directory laid out as <DIR>/<dataset_path>/<dataset_name>/<split>.jsonl (or
    /// .json / .parquet), e.g. made by `ckpt synth --eval-tasks DIR`.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Download data not found locally from the Hugging Face Hub (HF_ENDPOINT, HF_HOME,
    /// HF_TOKEN honoured; with HF_HUB_OFFLINE=1 only the cache is read).
    #[arg(long)]
    pub(crate) hub: bool,
    /// The directory of exemplar files for tasks whose exemplars lm-eval hard-codes
    /// (gsm8k_cot.jsonl, truthfulqa.jsonl, bbh_cot_fewshot_<subtask>.jsonl; the task
    /// specs say which columns).
    #[arg(long, value_name = "DIR")]
    pub(crate) fewshot_dir: Option<PathBuf>,
}

impl DataArgs {
    /// The data sources these flags describe.
    pub(crate) fn sources(&self) -> anyhow::Result<DataSources> {
        let mut sources = DataSources {
            data_dir: self.data_dir.clone(),
            hub: self.hub,
            ..Default::default()
        };
        for arg in &self.data {
            sources.add_file_arg(arg)?;
        }
        Ok(sources)
    }
}

#[derive(Debug, Args)]
pub(crate) struct TasksArgs {
    /// Tasks or groups to list (default: all).
    #[arg(value_name = "TASK")]
    names: Vec<String>,
    /// List the tasks of a suite (pt, mt, sft, or one of a --tasks-dir), with its shot counts.
    #[arg(long, value_name = "SUITE")]
    suite: Option<String>,
    /// Print the prompts and requests of TASK (or of each task of a group) as JSONL:
    /// one {task, doc_id, prompt, requests, gold} per evaluated doc.
    #[arg(long, value_name = "TASK")]
    show: Option<String>,
    /// With --show: only the first N docs.
    #[arg(long, value_name = "N", value_parser = super::values::at_least_one)]
    limit: Option<usize>,
    /// Few-shot examples per prompt, instead of the task's (or the suite's) count.
    #[arg(long, value_name = "N")]
    num_fewshot: Option<usize>,
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    specs: TaskSourceArgs,
    #[command(flatten)]
    data: DataArgs,
}

impl TasksArgs {
    /// The flags as a job.
    fn job(&self) -> anyhow::Result<TasksJob> {
        Ok(TasksJob {
            names: self.names.clone(),
            suite: self.suite.clone(),
            show: self.show.clone(),
            limit: self.limit,
            num_fewshot: self.num_fewshot,
            tasks_dirs: self.specs.tasks_dir.clone(),
            data: self.data.sources()?,
            fewshot_dir: self.data.fewshot_dir.clone(),
        })
    }
}

pub(crate) fn run(args: &TasksArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let outcome = listing::run(&args.job()?, &mut |doc| {
        write_line(&mut out, &doc).unwrap_or_else(|e| output::stdout_failed(e))
    })?;
    out.flush().unwrap_or_else(|e| output::stdout_failed(e));
    drop(out);
    match outcome {
        TasksOutcome::Listed(rows) if args.json => print_json(&rows)?,
        TasksOutcome::Listed(rows) if !ui.quiet => print_table(&rows),
        TasksOutcome::Listed(_) | TasksOutcome::Shown => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[TaskRow]) {
    let mut t = table(&[
        "task", "group", "type", "dataset", "config", "split", "shots", "metrics",
    ]);
    for r in rows {
        let group = r
            .group
            .clone()
            .or_else(|| r.tags.first().cloned())
            .unwrap_or_default();
        let kind = match r.output_type {
            OutputType::MultipleChoice => "multiple_choice",
            OutputType::GenerateUntil => "generate_until",
            OutputType::LoglikelihoodRolling => "loglikelihood_rolling",
        };
        let shots = match (r.num_fewshot, &r.fewshot_split) {
            (0, _) => "0".to_string(),
            (n, Some(split)) => format!("{n} ({split})"),
            (n, None) => n.to_string(),
        };
        t.add_row(vec![
            r.task.clone(),
            group,
            kind.to_string(),
            r.dataset.clone(),
            r.config.clone().unwrap_or_default(),
            r.split.clone(),
            shots,
            r.metrics.join(" "),
        ]);
    }
    outln!("{t}");
    outln!("{} tasks", rows.len());
}

/// One JSON line of `--show`.
fn write_line(out: &mut impl Write, line: &ShownDoc) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

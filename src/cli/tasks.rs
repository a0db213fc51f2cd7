//! `ckpt tasks`: list the benchmark tasks (built-in and `--tasks-dir`), a suite's, or
//! print one task's rendered prompts and requests as JSONL (`--show`).

use super::output::{self, outln, print_json, table, Ui};
use crate::eval::catalog::{Catalog, TaskEntry};
use crate::eval::data::DataSources;
use crate::eval::spec::{OutputType, TaskSpec};
use crate::eval::task::build_task;
use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where task specs come from (shared with `ckpt eval`).
#[derive(Debug, Args)]
pub struct TaskSourceArgs {
    /// A directory of task specs (`*.toml`) and suites (`suites.toml`); a spec replaces
    /// the built-in of the same name. Repeatable.
    #[arg(long, value_name = "DIR")]
    pub tasks_dir: Vec<PathBuf>,
}

impl TaskSourceArgs {
    /// The built-ins with the user's directories over them.
    pub fn catalog(&self) -> anyhow::Result<Catalog> {
        Ok(Catalog::with_user_dirs(&self.tasks_dir)?)
    }
}

/// Where task data comes from (shared with `ckpt eval`).
#[derive(Debug, Args)]
pub struct DataArgs {
    /// A data file (JSONL, JSON, Parquet in the Hub dataset's schema) for a task's
    /// evaluated split, or for another split with TASK:SPLIT=FILE. Repeatable.
    #[arg(long = "data", value_name = "TASK[:SPLIT]=FILE")]
    pub data: Vec<String>,
    /// A directory laid out as <DIR>/<dataset_path>/<dataset_name>/<split>.jsonl (or
    /// .json / .parquet), e.g. made by `ckpt synth --eval-tasks DIR`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Download data not found locally from the Hugging Face Hub (HF_ENDPOINT, HF_HOME,
    /// HF_TOKEN honoured; with HF_HUB_OFFLINE=1 only the cache is read).
    #[arg(long)]
    pub hub: bool,
    /// The directory of exemplar files for tasks whose exemplars lm-eval hard-codes
    /// (gsm8k_cot.jsonl, truthfulqa.jsonl, bbh_cot_fewshot_<subtask>.jsonl; the task
    /// specs say which columns).
    #[arg(long, value_name = "DIR")]
    pub fewshot_dir: Option<PathBuf>,
}

impl DataArgs {
    /// The data sources these flags describe.
    pub fn sources(&self) -> anyhow::Result<DataSources> {
        if let Some(dir) = &self.data_dir {
            crate::eval::data::check_dir("--data-dir", dir)?;
        }
        if let Some(dir) = &self.fewshot_dir {
            crate::eval::data::check_dir("--fewshot-dir", dir)?;
        }
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
pub struct TasksArgs {
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

/// One row of the listing.
#[derive(Serialize)]
struct TaskRow<'a> {
    task: &'a str,
    group: Option<&'a str>,
    tags: &'a [String],
    output_type: OutputType,
    dataset: &'a str,
    config: Option<&'a str>,
    split: &'a str,
    fewshot_split: Option<&'a str>,
    num_fewshot: usize,
    metrics: Vec<String>,
    version: String,
    hash: String,
    origin: String,
}

pub fn run(args: &TasksArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    args.data.sources()?;
    let data_given = !args.data.data.is_empty()
        || args.data.data_dir.is_some()
        || args.data.fewshot_dir.is_some();
    if args.show.is_none() && (data_given || args.limit.is_some()) {
        anyhow::bail!(
            "--data, --data-dir, --fewshot-dir and --limit are only read with --show TASK"
        );
    }
    let catalog = args.specs.catalog()?;
    let mut specs = match (&args.suite, &args.show, args.names.is_empty()) {
        (Some(suite), _, _) => catalog.suite(suite)?,
        (None, Some(show), _) => catalog.resolve(show)?,
        (None, None, false) => catalog.resolve_all(&args.names)?,
        (None, None, true) => catalog.entries().iter().map(|e| e.spec.clone()).collect(),
    };
    if let Some(show) = &args.show {
        let wanted = catalog.resolve(show)?;
        specs.retain(|s| wanted.iter().any(|w| w.task == s.task));
        if specs.is_empty() {
            anyhow::bail!(
                "task {show} is not in suite {}",
                args.suite.as_deref().unwrap_or("")
            );
        }
    }
    if let Some(n) = args.num_fewshot {
        specs = specs
            .iter()
            .map(|s| s.with_num_fewshot(n))
            .collect::<Result<_, _>>()?;
    }
    if args.show.is_some() {
        return show(&specs, args);
    }
    let rows: Vec<TaskRow> = specs.iter().map(|s| row(s, entry(&catalog, s))).collect();
    if args.json {
        print_json(&rows)?;
    } else if !ui.quiet {
        print_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn entry<'a>(catalog: &'a Catalog, spec: &TaskSpec) -> Option<&'a TaskEntry> {
    catalog.entries().iter().find(|e| e.spec.task == spec.task)
}

fn row<'a>(spec: &'a TaskSpec, entry: Option<&'a TaskEntry>) -> TaskRow<'a> {
    TaskRow {
        task: &spec.task,
        group: entry.and_then(|e| e.group.as_deref()),
        tags: &spec.tag,
        output_type: spec.output_type,
        dataset: &spec.dataset_path,
        config: spec.dataset_name.as_deref(),
        split: spec.eval_split().unwrap_or(""),
        fewshot_split: match spec.fewshot_config.source {
            crate::eval::spec::FewshotSource::File => Some("file"),
            crate::eval::spec::FewshotSource::Split => spec.fewshot_split_name(),
        },
        num_fewshot: spec.num_fewshot,
        metrics: metric_names(spec),
        version: spec.version(),
        hash: spec.hash(),
        origin: spec.origin.display().to_string(),
    }
}

/// The metrics a task reports (what its scorer produces, not only `metric_list`).
fn metric_names(spec: &TaskSpec) -> Vec<String> {
    let names: Vec<String> = match spec.process_results.as_deref() {
        Some("mc2") => vec!["acc".into()],
        Some("drop") => vec!["em".into(), "f1".into()],
        _ => spec.metric_list.iter().map(|m| m.metric.clone()).collect(),
    };
    if spec.filter_list.is_empty() {
        return names;
    }
    spec.filter_list
        .iter()
        .flat_map(|f| names.iter().map(move |m| format!("{m},{}", f.name)))
        .collect()
}

fn print_table(rows: &[TaskRow]) {
    let mut t = table(&[
        "task", "group", "type", "dataset", "config", "split", "shots", "metrics",
    ]);
    for r in rows {
        let group = r
            .group
            .map(String::from)
            .or_else(|| r.tags.first().cloned())
            .unwrap_or_default();
        let kind = match r.output_type {
            OutputType::MultipleChoice => "multiple_choice",
            OutputType::GenerateUntil => "generate_until",
            OutputType::LoglikelihoodRolling => "loglikelihood_rolling",
        };
        let shots = match (r.num_fewshot, r.fewshot_split) {
            (0, _) => "0".to_string(),
            (n, Some(split)) => format!("{n} ({split})"),
            (n, None) => n.to_string(),
        };
        t.add_row(vec![
            r.task.to_string(),
            group,
            kind.to_string(),
            r.dataset.to_string(),
            r.config.unwrap_or("").to_string(),
            r.split.to_string(),
            shots,
            r.metrics.join(" "),
        ]);
    }
    outln!("{t}");
    outln!("{} tasks", rows.len());
}

/// One line of `--show`.
#[derive(Serialize)]
struct Shown<'a> {
    task: &'a str,
    doc_id: usize,
    prompt: &'a str,
    requests: &'a [crate::eval::prompt::Request],
    gold: &'a crate::eval::prompt::Gold,
}

fn show(specs: &[TaskSpec], args: &TasksArgs) -> anyhow::Result<ExitCode> {
    let sources = args.data.sources()?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for spec in specs {
        let task = build_task(spec, &sources, args.limit, args.data.fewshot_dir.as_deref())
            .with_context(|| format!("task {}", spec.task))?;
        for r in &task.requests {
            let line = Shown {
                task: &spec.task,
                doc_id: r.doc_id,
                prompt: &r.prompt,
                requests: &r.requests,
                gold: &r.gold,
            };
            write_line(&mut out, &line).unwrap_or_else(|e| output::stdout_failed(e));
        }
    }
    out.flush().unwrap_or_else(|e| output::stdout_failed(e));
    Ok(ExitCode::SUCCESS)
}

/// One JSON line of `--show`.
fn write_line(out: &mut impl Write, line: &Shown) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

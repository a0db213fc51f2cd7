//! `ckpt eval PATH... --tasks LIST | --suite NAME`: every checkpoint found under the
//! paths, scored on every task, through the store. The task `alpaca_eval` is
//! pairwise judging (`super::judge`), with its own flags and table.

use super::output::{print_json, table, Ui};
use crate::checkpoint::discover;
use crate::eval::data::DataSources;
use crate::eval::run::{evaluate, CheckpointOutcome, Progress, RunOptions};
use crate::eval::spec::TaskSpec;
use crate::eval::task::{build_task, TaskRequests};
use crate::store::{MetricRow, Store, STORE_FILE};
use anyhow::Context;
use clap::Args;
use indicatif::ProgressBar;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoints, or directories searched for checkpoints (runs, run collections).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Tasks: built-in names, group names (mmlu), paths to task TOML files, or
    /// alpaca_eval (pairwise judging, see below).
    #[arg(long, value_delimiter = ',', required_unless_present = "suite")]
    tasks: Vec<String>,
    /// A suite of the paper: pt, mt or sft.
    #[arg(long, conflicts_with = "tasks")]
    suite: Option<String>,
    /// Directory of task TOML files; they take precedence over built-ins of the same name.
    #[arg(long)]
    tasks_dir: Option<PathBuf>,
    /// A task's data file: TASK=FILE (evaluated split) or TASK:SPLIT=FILE.
    #[arg(long = "data")]
    data: Vec<String>,
    /// Data directory: DIR/<dataset_path>/<dataset_name>/<split>.{jsonl,json,parquet}.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Download missing data from the Hugging Face Hub (HF_ENDPOINT, HF_HOME, HF_TOKEN).
    #[arg(long)]
    hub: bool,
    /// Directory of few-shot exemplar files (<task>.jsonl) for tasks whose exemplars
    /// lm-eval hard-codes (gsm8k_cot, bbh, truthfulqa's preamble).
    #[arg(long)]
    fewshot_dir: Option<PathBuf>,
    /// Score only the first N docs of each task.
    #[arg(long)]
    limit: Option<usize>,
    /// Override every task's number of few-shot exemplars.
    #[arg(long)]
    num_fewshot: Option<usize>,
    /// The results store (default: ckpt.sqlite in the current directory).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Upper bound on rows x tokens of one forward pass.
    #[arg(long, default_value_t = 4096)]
    batch_tokens: usize,
    /// Model inputs at most (default: the config's max_position_embeddings).
    #[arg(long)]
    max_length: Option<usize>,
    /// Requests answered between two commits to the store (smaller: less lost on a kill).
    #[arg(long, default_value_t = crate::eval::run::REQUESTS_PER_COMMIT, hide = true)]
    commit_every: usize,
    #[arg(long, env = "CKPT_DEVICE", default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Print results as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    judge: super::judge::JudgeArgs,
}

/// Tasks named on the command line, as specs (a group stands for its tasks).
pub fn resolve_tasks(names: &[String], tasks_dir: Option<&Path>) -> anyhow::Result<Vec<TaskSpec>> {
    let mut specs = Vec::new();
    for name in names {
        let as_path = Path::new(name);
        let spec = if name.ends_with(".toml") {
            TaskSpec::read(as_path)?
        } else if let Some(file) = tasks_dir
            .map(|d| d.join(format!("{name}.toml")))
            .filter(|f| f.is_file())
        {
            TaskSpec::read(&file)?
        } else {
            specs.extend(crate::eval::builtin::lookup(name)?);
            continue;
        };
        specs.extend(spec.expanded());
    }
    Ok(specs)
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn checkpoint(&self, path: &str, requests: usize) {
        self.0.set_position(0);
        self.0.set_length(requests as u64);
        self.0.set_message(path.to_string());
    }
    fn advance(&self, n: usize) {
        self.0.inc(n as u64);
    }
}

pub fn run(args: &EvalArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let device = crate::device::parse_device(&args.device)?;
    let dtype = crate::device::parse_dtype(&args.dtype)?;
    let judged = args.tasks.iter().any(|t| t == super::judge::TASK);
    if judged {
        args.judge.check()?;
    }
    let names: Vec<String> = args
        .tasks
        .iter()
        .filter(|t| *t != super::judge::TASK)
        .cloned()
        .collect();
    let mut specs = match &args.suite {
        Some(s) => crate::eval::builtin::suite(s)?,
        None => resolve_tasks(&names, args.tasks_dir.as_deref())?,
    };
    if let Some(n) = args.num_fewshot {
        specs.iter_mut().for_each(|s| s.num_fewshot = n);
    }
    let mut sources = DataSources {
        data_dir: args.data_dir.clone(),
        hub: args.hub,
        ..Default::default()
    };
    for d in &args.data {
        sources.add_file_arg(d)?;
    }
    let checkpoints = discover(&args.paths)?;
    if checkpoints.is_empty() {
        anyhow::bail!("no checkpoints found under {}", join_paths(&args.paths));
    }
    let tasks: Vec<TaskRequests> = specs
        .iter()
        .map(|s| {
            build_task(s, &sources, args.limit, args.fewshot_dir.as_deref())
                .with_context(|| format!("task {}", s.task))
        })
        .collect::<anyhow::Result<_>>()?;
    let store_path = args
        .store
        .clone()
        .unwrap_or_else(|| PathBuf::from(STORE_FILE));
    let mut store = Store::open(&store_path)?;
    let opts = RunOptions {
        device,
        dtype,
        batch_tokens: args.batch_tokens,
        max_length: args.max_length,
        commit_every: args.commit_every,
    };
    let bar = Bar(ui.progress(0, "scoring"));
    let mut ok = true;
    let report = if tasks.is_empty() {
        None
    } else {
        let outcomes = evaluate(&checkpoints, &tasks, &mut store, &opts, &bar)?;
        ok &= outcomes.iter().all(|o| o.error.is_none());
        Some(Report::collect(&outcomes, &tasks, &store)?)
    };
    let judge_report = if judged {
        let r = super::judge::run(
            &args.judge,
            args.limit,
            &checkpoints,
            &mut store,
            &opts,
            &bar,
        )?;
        ok &= r.all_ok();
        Some(r)
    } else {
        None
    };
    bar.0.finish_and_clear();
    match (args.json, report, judge_report) {
        (true, Some(r), None) => print_json(&r)?,
        (true, r, j) => print_json(&serde_json::json!({
            "checkpoints": r.map(|r| r.checkpoints).unwrap_or_default(),
            super::judge::TASK: j,
        }))?,
        (false, r, j) => {
            if let Some(r) = r {
                r.print(&store_path);
            }
            if let Some(j) = j {
                j.print(false)?;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `ckpt eval` prints: per checkpoint, its metrics on the tasks of this run.
#[derive(Serialize)]
struct Report {
    checkpoints: Vec<CheckpointReport>,
}

#[derive(Serialize)]
struct CheckpointReport {
    path: String,
    run: String,
    step: Option<u64>,
    schedule: Option<String>,
    alpha: Option<f64>,
    fingerprint: String,
    computed_requests: usize,
    error: Option<String>,
    metrics: Vec<MetricRow>,
}

impl Report {
    fn collect(
        outcomes: &[CheckpointOutcome],
        tasks: &[TaskRequests],
        store: &Store,
    ) -> anyhow::Result<Self> {
        let hashes: Vec<(String, String)> = tasks
            .iter()
            .map(|t| (t.spec.task.clone(), t.spec.hash()))
            .collect();
        let mut checkpoints = Vec::new();
        for o in outcomes {
            let metrics = if o.row.fingerprint.is_empty() {
                vec![]
            } else {
                store
                    .metrics(Some(&o.row.fingerprint))?
                    .into_iter()
                    .filter(|m| {
                        hashes
                            .iter()
                            .any(|(t, h)| &m.task == t && &m.spec_hash == h)
                    })
                    .collect()
            };
            checkpoints.push(CheckpointReport {
                path: o.row.path.clone(),
                run: o.row.run.clone(),
                step: o.row.step,
                schedule: o.row.schedule.clone(),
                alpha: o.row.alpha,
                fingerprint: o.row.fingerprint.clone(),
                computed_requests: o.computed,
                error: o.error.clone(),
                metrics,
            });
        }
        // Grouped by run, ordered by step.
        checkpoints.sort_by(|a, b| (&a.run, a.step, &a.path).cmp(&(&b.run, b.step, &b.path)));
        Ok(Self { checkpoints })
    }

    /// Columns: each task's headline metric (the first of its metric list).
    fn columns(&self) -> Vec<(String, String, String)> {
        let mut cols: Vec<(String, String, String)> = Vec::new();
        for c in &self.checkpoints {
            for m in &c.metrics {
                if !cols.iter().any(|(t, _, _)| t == &m.task) {
                    cols.push((m.task.clone(), m.metric.clone(), m.filter.clone()));
                }
            }
        }
        cols
    }

    fn print(&self, store: &Path) {
        let cols = self.columns();
        let mut header = vec!["run".to_string(), "step".into(), "schedule".into()];
        header.extend(cols.iter().map(|(t, m, f)| {
            if f == "none" {
                format!("{t} {m}")
            } else {
                format!("{t} {m} ({f})")
            }
        }));
        let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut t = table(&header_refs);
        for c in &self.checkpoints {
            let mut row = vec![
                c.run.clone(),
                c.step.map(|s| s.to_string()).unwrap_or_default(),
                schedule_label(c.schedule.as_deref(), c.alpha),
            ];
            for (task, metric, filter) in &cols {
                let cell = match (
                    &c.error,
                    c.metrics
                        .iter()
                        .find(|m| &m.task == task && &m.metric == metric && &m.filter == filter),
                ) {
                    (_, Some(m)) => format_metric(m),
                    (Some(_), None) => "failed".into(),
                    (None, None) => String::new(),
                };
                row.push(cell);
            }
            t.add_row(row);
        }
        println!("{t}");
        for c in self.checkpoints.iter().filter(|c| c.error.is_some()) {
            eprintln!(
                "error: {}: {}",
                c.path,
                c.error.as_deref().unwrap_or_default()
            );
        }
        let computed: usize = self.checkpoints.iter().map(|c| c.computed_requests).sum();
        println!(
            "{} checkpoints, {} tasks; {computed} requests computed, the rest from {}",
            self.checkpoints.len(),
            cols.len(),
            store.display()
        );
    }
}

/// `wso`, `wsd α=0.1`, ...
pub fn schedule_label(kind: Option<&str>, alpha: Option<f64>) -> String {
    match (kind, alpha) {
        (Some(k), Some(a)) if k != "wso" && k != "constant" => format!("{k} α={a}"),
        (Some(k), _) => k.to_string(),
        (None, _) => "?".into(),
    }
}

fn format_metric(m: &MetricRow) -> String {
    let percent = m.metric.starts_with("acc")
        || m.metric == "exact_match"
        || m.metric == "em"
        || m.metric == "f1";
    match (percent, m.stderr) {
        (true, Some(se)) => format!("{:.1} ± {:.1}", 100.0 * m.value, 100.0 * se),
        (true, None) => format!("{:.1}", 100.0 * m.value),
        (false, _) => format!("{:.4}", m.value),
    }
}

//! `ckpt eval PATH... --tasks LIST | --suite NAME`: every checkpoint found under the
//! paths, scored on every task, through the store. The task `alpaca_eval` is
//! pairwise judging (`super::judge`), with its own flags and table.

use super::grid::{Grid, TableFormat};
use super::output::{out, outln, print_json, Ui};
use crate::checkpoint::Checkpoint;
use crate::eval::catalog::Catalog;
use crate::eval::data::DataSources;
use crate::eval::headline::{format_metric, group_rows, headlines, is_percent, MetricOrder};
use crate::eval::relative::{is_decayed, relative_table, RelativeTable, RunFinal};
use crate::eval::run::{evaluate_shard, results_hash, CheckpointOutcome, RunOptions};
use crate::eval::spec::TaskSpec;
use crate::eval::task::{build_task, TaskRequests};
use crate::hub::sweep::Downloads;
use crate::sources::Candidate;
use crate::store::{MetricRow, Store, STORE_FILE};
use crate::tokenizer::{AddBos, EncodePolicy};
use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use crate::report::schedule_label;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoints, or directories searched for checkpoints (runs, run collections), or
    /// Hub repositories: hf://ORG/NAME[@REVISION] (with --revisions: a run of branches).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    hub_sources: super::values::HubArgs,
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
    #[arg(long, value_parser = super::values::at_least_one)]
    limit: Option<usize>,
    /// Override every task's number of few-shot exemplars.
    #[arg(long)]
    num_fewshot: Option<usize>,
    /// Cap every generative task's new tokens (lm-eval's `--gen_kwargs max_gen_toks=N`).
    #[arg(long, value_name = "N", value_parser = super::values::at_least_one)]
    max_gen_toks: Option<usize>,
    /// The results store (default: ckpt.sqlite in the current directory); a directory
    /// means DIR/ckpt.sqlite, into which the directory's other stores (the shards of a
    /// sweep) are merged first, exactly, so that their results print and are not
    /// computed again.
    #[arg(long)]
    store: Option<PathBuf>,
    #[command(flatten)]
    store_timeout: super::values::StoreTimeout,
    #[command(flatten)]
    shard: super::values::ShardArgs,
    /// Upper bound on rows x tokens of one forward pass.
    #[arg(long, default_value_t = 4096)]
    batch_tokens: usize,
    /// Model inputs at most (default: the config's max_position_embeddings).
    #[arg(long)]
    max_length: Option<usize>,
    /// Requests answered between two commits to the store (smaller: less lost on a kill).
    #[arg(long, default_value_t = crate::eval::run::REQUESTS_PER_COMMIT, hide = true)]
    commit_every: usize,
    #[command(flatten)]
    tokenization: TokenizationArgs,
    #[arg(long, env = "CKPT_DEVICE", default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Write lm-eval-style results JSON per checkpoint, per-sample JSONL and a CSV here.
    #[arg(long)]
    output: Option<PathBuf>,
    /// The run the relative table compares against (default: the best decayed run).
    #[arg(long)]
    baseline: Option<String>,
    /// Print results as JSON (the same as --format json).
    #[arg(long)]
    json: bool,
    /// How tables print: table (long, one line per metric, when wider than the
    /// terminal), wide, long, md, csv, json.
    #[arg(long, value_enum, default_value = "table")]
    format: super::grid::TableFormat,
    #[command(flatten)]
    judge: super::judge::JudgeArgs,
}

/// lm-eval's tokenization arguments (`--model_args add_bos_token=...,prefix_token_id=...`).
#[derive(Debug, Args, Clone)]
pub struct TokenizationArgs {
    /// Add BOS to every context as lm-eval's add_bos_token does: auto (the tokenizer's
    /// defaults, as with lm-eval's add_bos_token unset), true or false.
    #[arg(long, value_name = "auto|true|false", default_value = "auto")]
    pub add_bos_token: AddBos,
    /// The token an empty context is conditioned on (lm-eval's prefix_token_id;
    /// default: BOS, else EOS).
    #[arg(long, value_name = "ID")]
    pub prefix_token_id: Option<u32>,
}

impl TokenizationArgs {
    /// The policy these flags ask for.
    pub fn policy(&self) -> EncodePolicy {
        EncodePolicy {
            add_bos_token: self.add_bos_token,
            prefix_token_id: self.prefix_token_id,
        }
    }
}

/// The catalog (`--tasks-dir` over the built-ins) and the task specs `--tasks` or
/// `--suite` name; pairwise judging (`alpaca_eval`) is not a catalog task and is left
/// out.
pub(super) fn catalog_specs(
    tasks: &[String],
    suite: Option<&str>,
    tasks_dir: Option<&Path>,
) -> anyhow::Result<(Catalog, Vec<TaskSpec>)> {
    let catalog = match tasks_dir {
        Some(dir) => Catalog::with_user_dirs(&[dir])?,
        None => Catalog::builtin()?,
    };
    let names: Vec<String> = tasks
        .iter()
        .filter(|t| *t != super::judge::TASK)
        .cloned()
        .collect();
    let specs = match suite {
        Some(s) => catalog.suite(s)?,
        None => resolve_tasks(&names, &catalog)?,
    };
    Ok((catalog, specs))
}

/// Tasks named on the command line, as specs: a `.toml` path is read as is; any other
/// name is a task, group or tag of the catalog (built-ins, overridden by `--tasks-dir`).
pub fn resolve_tasks(names: &[String], catalog: &Catalog) -> anyhow::Result<Vec<TaskSpec>> {
    let mut specs = Vec::new();
    for name in names {
        if name.ends_with(".toml") {
            specs.extend(TaskSpec::read(Path::new(name))?.expanded());
        } else {
            specs.extend(catalog.resolve(name)?);
        }
    }
    Ok(specs)
}

/// The window sizes, checked before any work: a zero would only fail (or trip an
/// assertion) deep inside scoring, after the tasks are built and the store opened.
fn check_sizes(args: &EvalArgs) -> anyhow::Result<()> {
    if args.batch_tokens == 0 {
        anyhow::bail!("--batch-tokens must be at least 1 (got 0)");
    }
    if args.max_length == Some(0) {
        anyhow::bail!("--max-length must be at least 1 (got 0)");
    }
    Ok(())
}

pub fn run(args: &EvalArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let device = crate::device::parse_device(&args.device)?;
    let dtype = crate::device::parse_dtype(&args.dtype)?;
    check_sizes(args)?;
    let shard = args.shard.resolve()?;
    // The paper's `sft` suite starts with AlpacaEval-style judging, when a judge is given.
    let judged = args.tasks.iter().any(|t| t == super::judge::TASK)
        || (args.suite.as_deref() == Some("sft") && args.judge.has_url());
    if judged && args.shard.shard.is_some() {
        anyhow::bail!(
            "--shard does not split pairwise judging (alpaca_eval) yet; judge in one process"
        );
    }
    if judged {
        args.judge.check()?;
    } else if args.judge.has_url() {
        anyhow::bail!(
            "--judge-url (and the judging flags) are only used with --tasks {} or --suite sft",
            super::judge::TASK
        );
    }
    let (catalog, mut specs) = catalog_specs(
        &args.tasks,
        args.suite.as_deref(),
        args.tasks_dir.as_deref(),
    )?;
    if let Some(n) = args.num_fewshot {
        // As lm-eval's --num_fewshot: a preamble (TruthfulQA's) keeps its count.
        specs = specs
            .iter()
            .map(|s| s.with_num_fewshot(n))
            .collect::<Result<_, _>>()?;
    }
    if let Some(n) = args.max_gen_toks {
        specs = specs.iter().map(|s| s.with_max_gen_toks(n)).collect();
    }
    for (flag, dir) in [
        ("--data-dir", &args.data_dir),
        ("--fewshot-dir", &args.fewshot_dir),
    ] {
        if let Some(dir) = dir {
            crate::eval::data::check_dir(flag, dir)?;
        }
    }
    let mut sources = DataSources {
        data_dir: args.data_dir.clone(),
        hub: args.hub,
        ..Default::default()
    };
    for d in &args.data {
        sources.add_file_arg(d)?;
    }
    let (candidates, hub) = crate::sources::candidates(&args.paths, &args.hub_sources.options())?;
    if candidates.is_empty() {
        anyhow::bail!("no checkpoints found under {}", join_paths(&args.paths));
    }
    let mut downloads =
        hub.map(|h| Downloads::new(h, args.hub_sources.retention(), ui.bar("downloading")));
    let tasks: Vec<TaskRequests> = specs
        .iter()
        .map(|s| {
            build_task(s, &sources, args.limit, args.fewshot_dir.as_deref())
                .with_context(|| format!("task {}", s.task))
        })
        .collect::<anyhow::Result<_>>()?;
    let main_store = main_store(args.store.as_deref())?;
    // A shard writes its own store: SQLite must not be shared between machines.
    let store_path = match shard {
        Some(s) => s.store_path(&main_store),
        None => {
            if args.store.as_deref().is_some_and(is_store_dir) {
                merge_shards(&main_store, args.store_timeout.duration())?;
            }
            main_store
        }
    };
    if let Some(s) = shard {
        let costs = crate::eval::run::unit_costs(&candidates, &tasks);
        tracing::info!(
            "shard {} of {}: {} of {} (checkpoint, task) units, balance {:.2} (max/mean cost), store {}",
            s.index,
            s.count,
            s.select(&costs).iter().filter(|&&m| m).count(),
            costs.len(),
            crate::shard::imbalance(&costs, s.count),
            store_path.display()
        );
    }
    let mut store = Store::open_waiting(&store_path, args.store_timeout.duration())?;
    let opts = RunOptions {
        policy: args.tokenization.policy(),
        device,
        dtype,
        batch_tokens: args.batch_tokens,
        max_length: args.max_length,
        commit_every: args.commit_every,
    };
    let bar = ui.bar("scoring");
    let mut ok = true;
    let report = if tasks.is_empty() {
        None
    } else {
        let outcomes = evaluate_shard(
            &candidates,
            &tasks,
            &mut store,
            &opts,
            &*bar,
            shard,
            downloads.as_mut(),
        )?;
        ok &= outcomes.iter().all(|o| o.error.is_none());
        let mut report = Report::collect(&outcomes, &tasks, &store, &opts.policy)?;
        report.add_groups(&group_of(&catalog, &tasks));
        report.relative =
            report.relative_table(&tasks, &store, &opts.policy, args.baseline.as_deref())?;
        if let Some(dir) = &args.output {
            let rows: Vec<_> = outcomes.iter().map(|o| o.row.clone()).collect();
            let files = crate::eval::export::export_all(dir, &store, &rows, &tasks, &opts.policy)?;
            tracing::info!("wrote {} files to {}", files.len(), dir.display());
        }
        Some(report)
    };
    let judge_report = if judged {
        // Judging generates from every checkpoint: Hub revisions are fetched and kept.
        let checkpoints = materialize(&candidates, downloads.as_ref(), ui)?;
        let r = super::judge::run(
            &args.judge,
            args.limit,
            &checkpoints,
            &mut store,
            &opts,
            &*bar,
        )?;
        ok &= r.all_ok();
        Some(r)
    } else {
        None
    };
    bar.finish();
    let json = args.json || args.format == TableFormat::Json;
    match (json, report, judge_report) {
        (true, Some(r), None) => print_json(&r)?,
        (true, r, j) => print_json(&serde_json::json!({
            "checkpoints": r.map(|r| r.checkpoints).unwrap_or_default(),
            super::judge::TASK: j,
        }))?,
        (false, r, j) => {
            if let Some(r) = r {
                r.print(&store_path, args.format);
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

/// A `--store` naming a directory (existing, or written with a trailing `/`).
fn is_store_dir(path: &Path) -> bool {
    path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/')
}

/// The store `--store` names: the file, or `DIR/ckpt.sqlite` (DIR created).
fn main_store(store: Option<&Path>) -> anyhow::Result<PathBuf> {
    match store {
        None => Ok(PathBuf::from(STORE_FILE)),
        Some(dir) if is_store_dir(dir) => {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("--store {}: cannot create the directory", dir.display())
            })?;
            Ok(dir.join(STORE_FILE))
        }
        Some(file) => Ok(file.to_path_buf()),
    }
}

/// Merges the other stores beside `main` (a sharded sweep's) into it.
fn merge_shards(main: &Path, wait: std::time::Duration) -> anyhow::Result<()> {
    let dir = crate::error::parent_dir(main);
    let others: Vec<PathBuf> = crate::store::store_files(&[dir.to_path_buf()])?
        .into_iter()
        .filter(|f| f.file_name() != main.file_name())
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    let summary = crate::store::merge(&others, main, wait)?;
    if summary.changed {
        tracing::info!(
            "merged {} stores of {} into {}",
            others.len(),
            dir.display(),
            main.display()
        );
    }
    Ok(())
}

/// Every candidate as a checkpoint on disk, Hub revisions fetched into the cache.
fn materialize(
    candidates: &[Candidate],
    downloads: Option<&Downloads>,
    ui: &Ui,
) -> anyhow::Result<Vec<Checkpoint>> {
    let transfer = ui.bar("downloading");
    candidates
        .iter()
        .map(|c| match (c, downloads) {
            (Candidate::Local(ckpt), _) => Ok((**ckpt).clone()),
            (Candidate::Hub(rev), Some(d)) => {
                let dir = d.hub().materialize(rev, transfer.as_ref())?;
                Ok(crate::sources::open_revision(&dir, rev)?)
            }
            (Candidate::Hub(rev), None) => anyhow::bail!("{}: no Hub client", rev.source),
        })
        .collect()
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
    /// Subtask -> group (MMLU's subjects, BBH's tasks): shown as one size-weighted column.
    #[serde(skip)]
    groups: BTreeMap<String, String>,
    /// Task -> the order of its spec's metrics (the first stored is its headline).
    #[serde(skip)]
    orders: BTreeMap<String, MetricOrder>,
    /// Each run's final checkpoint against the best decayed run.
    relative: Option<RelativeTable>,
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
        policy: &EncodePolicy,
    ) -> anyhow::Result<Self> {
        let hashes: Vec<(String, String)> = tasks
            .iter()
            .map(|t| (t.spec.task.clone(), results_hash(policy, &t.spec)))
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
        Ok(Self {
            checkpoints,
            groups: BTreeMap::new(),
            orders: tasks
                .iter()
                .map(|t| (t.spec.task.clone(), MetricOrder::of_spec(&t.spec)))
                .collect(),
            relative: None,
        })
    }

    /// Adds each group's size-weighted mean (lm-eval's group score) with the pooled
    /// standard error, for groups with at least two subtasks scored.
    fn add_groups(&mut self, groups: &BTreeMap<String, String>) {
        self.groups = groups.clone();
        for c in &mut self.checkpoints {
            let rows = group_rows(&c.metrics, groups);
            c.metrics.extend(rows);
        }
    }

    /// The last scored checkpoint of each run, with its headline values.
    fn finals(&self) -> Vec<RunFinal> {
        let cols = self.columns();
        let mut finals: Vec<RunFinal> = Vec::new();
        for c in self.checkpoints.iter().filter(|c| c.error.is_none()) {
            let values = cols
                .iter()
                .filter_map(|(t, m, f)| {
                    let row = c
                        .metrics
                        .iter()
                        .find(|r| &r.task == t && &r.metric == m && &r.filter == f)?;
                    Some((t.clone(), (row.value, row.higher_is_better)))
                })
                .collect();
            let fin = RunFinal {
                run: c.run.clone(),
                label: schedule_label(c.schedule.as_deref(), c.alpha),
                fingerprint: c.fingerprint.clone(),
                decayed: is_decayed(c.schedule.as_deref(), c.alpha),
                values,
            };
            // Checkpoints are sorted by run then step: the last one of a run wins.
            match finals.last_mut() {
                Some(last) if last.run == fin.run => *last = fin,
                _ => finals.push(fin),
            }
        }
        finals
    }

    fn relative_table(
        &self,
        tasks: &[TaskRequests],
        store: &Store,
        policy: &EncodePolicy,
        baseline: Option<&str>,
    ) -> anyhow::Result<Option<RelativeTable>> {
        let cols = self.columns();
        let names: Vec<String> = cols.iter().map(|(t, _, _)| t.clone()).collect();
        let items = |fp: &str, task: &str| -> crate::Result<Vec<(usize, f64)>> {
            let Some((_, metric, filter)) = cols.iter().find(|(t, _, _)| t == task) else {
                return Ok(vec![]);
            };
            let hash = tasks
                .iter()
                .find(|t| t.spec.task == task)
                .map(|t| results_hash(policy, &t.spec))
                .unwrap_or_default();
            let key = crate::eval::scoring::key(metric, filter);
            Ok(store
                .samples(fp, task, &hash)?
                .into_iter()
                .filter_map(|(doc, _, score)| {
                    let v: serde_json::Value = serde_json::from_str(&score).ok()?;
                    Some((doc, v["metrics"][&key].as_f64()?))
                })
                .collect())
        };
        if let Some(b) = baseline {
            if !self.checkpoints.iter().any(|c| c.run == b) {
                anyhow::bail!(
                    "--baseline {b}: no such run (runs: {})",
                    self.runs().join(", ")
                );
            }
        }
        Ok(relative_table(&self.finals(), &names, baseline, &items)?)
    }

    fn runs(&self) -> Vec<String> {
        let mut runs: Vec<String> = self.checkpoints.iter().map(|c| c.run.clone()).collect();
        runs.dedup();
        runs
    }

    /// Columns: each task's headline metric (`crate::eval::headline`); a group's
    /// subtasks are one column.
    fn columns(&self) -> Vec<(String, String, String)> {
        let rows: Vec<MetricRow> = self
            .checkpoints
            .iter()
            .flat_map(|c| c.metrics.iter().cloned())
            .collect();
        headlines(&rows, &self.orders, &self.groups)
            .into_iter()
            .map(|h| (h.task, h.metric, h.filter))
            .collect()
    }

    fn print(&self, store: &Path, format: TableFormat) {
        let cols = self.columns();
        let mut header = vec!["run".to_string(), "step".into(), "schedule".into()];
        header.extend(cols.iter().map(|(t, m, f)| {
            if f == "none" {
                format!("{t} {m}")
            } else {
                format!("{t} {m} ({f})")
            }
        }));
        let mut rows = Vec::new();
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
            rows.push(row);
        }
        let grid = Grid {
            header,
            rows,
            keys: 3,
        };
        out!("{}", with_newline(grid.render(format)));
        for c in self.checkpoints.iter().filter(|c| c.error.is_some()) {
            eprintln!(
                "error: {}: {}",
                c.path,
                c.error.as_deref().unwrap_or_default()
            );
        }
        // Data formats hold the one table; the rest goes to people, on a terminal.
        let for_people = matches!(
            format,
            TableFormat::Table | TableFormat::Wide | TableFormat::Long
        );
        if !for_people {
            return;
        }
        if let Some(rel) = &self.relative {
            print_relative(rel, &self.columns(), format);
        }
        let computed: usize = self.checkpoints.iter().map(|c| c.computed_requests).sum();
        outln!(
            "{} checkpoints, {} tasks; {computed} requests computed, the rest from {}",
            self.checkpoints.len(),
            cols.len(),
            store.display()
        );
    }
}

/// Subtask -> group of the tasks in this run (from the catalog's expansions).
fn group_of(catalog: &Catalog, tasks: &[TaskRequests]) -> BTreeMap<String, String> {
    catalog
        .entries()
        .iter()
        .filter(|e| tasks.iter().any(|t| t.spec.task == e.spec.task))
        .filter_map(|e| Some((e.spec.task.clone(), e.group.clone()?)))
        .collect()
}

/// Deltas from the baseline in points, with the paired test's p-value.
fn print_relative(rel: &RelativeTable, cols: &[(String, String, String)], format: TableFormat) {
    let mut header = vec!["run".to_string(), "schedule".into()];
    header.extend(rel.tasks.iter().zip(&rel.baselines).map(|(t, b)| match b {
        Some(b) => format!("{t} Δ vs {b}"),
        None => format!("{t} Δ"),
    }));
    let mut rows = Vec::new();
    for (run, label, cells) in &rel.rows {
        let mut row = vec![run.clone(), label.clone()];
        row.extend(cells.iter().zip(cols).map(|(c, (_, metric, _))| {
            let scale = if is_percent(metric) { 100.0 } else { 1.0 };
            match c {
                Some(c) => match &c.test {
                    Some(test) => format!("{:+.2} (p={:.2})", scale * c.delta, test.p_value),
                    None => format!("{:+.2}", scale * c.delta),
                },
                None => String::new(),
            }
        }));
        rows.push(row);
    }
    outln!("Relative to the best decayed schedule (accuracies in points; paired test on the same items):");
    let grid = Grid {
        header,
        rows,
        keys: 2,
    };
    out!("{}", with_newline(grid.render(format)));
}

/// `text` ending in exactly one newline.
fn with_newline(text: String) -> String {
    format!("{}\n", text.trim_end_matches('\n'))
}

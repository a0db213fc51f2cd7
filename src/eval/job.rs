//! `ckpt eval` as a job: checkpoints, tasks, data and run settings, checked once
//! ([`EvalJob::check`]) and run ([`run`]) through the store into an [`EvalOutcome`]:
//! the scored tasks' [`EvalReport`] and, with a judge, the pairwise judging's
//! [`JudgeReport`].
//!
//! A `--store` directory is the home of a sharded sweep: each shard writes its own
//! store beside the main one, and a run without `--shard` merges them in first, so
//! that their results print and are not computed again.

use super::catalog::catalog_specs;
use super::data::{check_dir, DataSources};
use super::headline::JUDGED_TASK;
use super::results::EvalReport;
use super::run::{evaluate_shard, unit_costs, RunOptions};
use super::spec::TaskSpec;
use super::task::{build_task, TaskRequests};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::eval::judge::job::{JudgeJob, JudgeReport};
use crate::hub::sweep::{Downloads, Retention};
use crate::progress::{Progress, Shared};
use crate::shard::Shard;
use crate::sources::{Candidate, HubOptions};
use crate::store::{Store, STORE_FILE};
use crate::tokenizer::EncodePolicy;
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every checkpoint found under `paths`, scored on every task, through the store.
#[derive(Debug, Clone)]
pub struct EvalJob {
    /// Checkpoints, directories searched for them, or Hub sources (`hf://ORG/NAME`).
    pub paths: Vec<PathBuf>,
    /// How Hub sources are read (which revisions, their steps).
    pub hub_sources: HubOptions,
    /// What a sweep of Hub revisions keeps on disk.
    pub retention: Retention,
    /// Task, group or tag names, `.toml` files, or `alpaca_eval` (pairwise judging).
    pub(crate) tasks: Vec<String>,
    /// A suite of the paper (`pt`, `mt`, `sft`) instead of `tasks`.
    pub(crate) suite: Option<String>,
    /// Task TOML files that take precedence over the built-ins.
    pub tasks_dir: Option<PathBuf>,
    /// Data files: `TASK=FILE` (evaluated split) or `TASK:SPLIT=FILE`.
    pub(crate) data: Vec<String>,
    /// `DIR/<dataset_path>/<dataset_name>/<split>.{jsonl,json,parquet}`.
    pub(crate) data_dir: Option<PathBuf>,
    /// Whether missing data is downloaded from the Hugging Face Hub.
    pub(crate) download_data: bool,
    /// Few-shot exemplar files (`<task>.jsonl`) for tasks lm-eval hard-codes them for.
    pub(crate) fewshot_dir: Option<PathBuf>,
    /// Score only the first N docs of each task (and judge the first N instructions).
    pub(crate) limit: Option<usize>,
    /// Every task's number of few-shot exemplars.
    pub num_fewshot: Option<usize>,
    /// Cap on every generative task's new tokens.
    pub(crate) max_gen_toks: Option<usize>,
    /// The results store (`None`: `ckpt.sqlite` here); a directory (existing, or
    /// written with a trailing `/`) means `DIR/ckpt.sqlite`.
    pub store: Option<PathBuf>,
    /// How long to wait for another process's lock on the store.
    pub(crate) store_timeout: Duration,
    /// This process's part of a sweep (into its own store beside the main one).
    pub(crate) shard: Option<Shard>,
    /// Upper bound on rows x tokens of one forward pass.
    pub(crate) batch_tokens: usize,
    /// Model inputs at most; `None`: the config's `max_position_embeddings`.
    pub(crate) max_length: Option<usize>,
    /// Requests answered between two commits to the store.
    pub(crate) commit_every: usize,
    /// How texts become token ids.
    pub policy: EncodePolicy,
    pub device: Device,
    pub dtype: DType,
    /// Where lm-eval-style results, per-sample JSONL and a CSV are written.
    pub output: Option<PathBuf>,
    /// The run the relative table compares against (`None`: the best decayed run).
    pub baseline: Option<String>,
    /// The judge, when one is given (`--tasks alpaca_eval`, or the `sft` suite).
    pub(crate) judge: Option<JudgeJob>,
}

/// What an eval job found.
#[derive(Debug, Clone)]
pub struct EvalOutcome {
    /// The scored tasks (`None`: judging only).
    pub(crate) report: Option<EvalReport>,
    /// The pairwise judging, when it ran.
    pub(crate) judged: Option<JudgeReport>,
    /// The store written (a shard's own store with a shard).
    pub(crate) store: PathBuf,
}

impl EvalOutcome {
    /// Whether every checkpoint was scored and judged.
    pub fn all_ok(&self) -> bool {
        self.report.as_ref().is_none_or(EvalReport::all_ok)
            && self.judged.as_ref().is_none_or(JudgeReport::all_ok)
    }
}

impl EvalJob {
    /// Whether the job judges: `alpaca_eval` is named, or the paper's `sft` suite (which
    /// starts with AlpacaEval-style judging) runs with a judge.
    pub fn judged(&self) -> bool {
        self.tasks.iter().any(|t| t == JUDGED_TASK)
            || (self.suite.as_deref() == Some("sft") && self.judge.is_some())
    }

    /// Every value and combination, before any work: a zero size would only fail (or
    /// trip an assertion) deep inside scoring, after the tasks are built and the store
    /// opened.
    pub fn check(&self) -> Result<()> {
        crate::score::job::check_sizes(self.batch_tokens, self.max_length)?;
        for (flag, value) in [
            ("--limit", self.limit),
            ("--max-gen-toks", self.max_gen_toks),
            ("--commit-every", Some(self.commit_every)),
        ] {
            if value == Some(0) {
                return Err(Error::bad_value(
                    flag,
                    format!("{flag} must be at least 1 (got 0)"),
                ));
            }
        }
        if self.store_timeout.is_zero() {
            return Err(Error::bad_value(
                "--store-timeout",
                "--store-timeout must be a positive number of seconds",
            ));
        }
        match (self.tasks.is_empty(), &self.suite) {
            (true, None) => {
                return Err(Error::bad_value(
                    "--tasks",
                    "name tasks with --tasks or a suite with --suite",
                ))
            }
            (false, Some(_)) => {
                return Err(Error::bad_value(
                    "--tasks",
                    "--tasks and --suite cannot be used together",
                ))
            }
            _ => {}
        }
        self.check_judging()?;
        for (flag, dir) in [
            ("--data-dir", &self.data_dir),
            ("--fewshot-dir", &self.fewshot_dir),
        ] {
            if let Some(dir) = dir {
                check_dir(flag, dir)?;
            }
        }
        self.data_sources().map(drop)
    }

    /// A judge exactly when judging, and judging in one process.
    fn check_judging(&self) -> Result<()> {
        let judged = self.judged();
        if judged && self.shard.is_some() {
            return Err(Error::bad_value(
                "--shard",
                "--shard does not split pairwise judging (alpaca_eval) yet; judge in one process",
            ));
        }
        match (&self.judge, judged) {
            (Some(judge), true) => judge.check(),
            (None, true) => Err(Error::bad_value("--tasks", format!(
                "--tasks {JUDGED_TASK} needs --judge-url URL (an OpenAI-compatible server)"
            ))),
            (Some(_), false) => Err(Error::bad_value("--judge-url", format!(
                "--judge-url (and the judging flags) are only used with --tasks {JUDGED_TASK} or --suite sft"
            ))),
            (None, false) => Ok(()),
        }
    }

    /// Where task data is looked for.
    fn data_sources(&self) -> Result<DataSources> {
        let mut sources = DataSources {
            data_dir: self.data_dir.clone(),
            hub: self.download_data,
            ..Default::default()
        };
        for d in &self.data {
            sources.add_file_arg(d)?;
        }
        Ok(sources)
    }

    /// The specs with the job's overrides of shot counts and generation lengths.
    fn adjust(&self, mut specs: Vec<TaskSpec>) -> Result<Vec<TaskSpec>> {
        if let Some(n) = self.num_fewshot {
            // As lm-eval's --num_fewshot: a preamble (TruthfulQA's) keeps its count.
            specs = specs
                .iter()
                .map(|s| s.with_num_fewshot(n))
                .collect::<Result<_>>()?;
        }
        if let Some(n) = self.max_gen_toks {
            specs = specs.iter().map(|s| s.with_max_gen_toks(n)).collect();
        }
        Ok(specs)
    }

    /// The store this process writes: the main store, or with a shard its own store
    /// beside it. Without a shard, a `--store` directory's shard stores are merged in.
    fn store_path(&self) -> Result<PathBuf> {
        let main = main_store(self.store.as_deref())?;
        Ok(match self.shard {
            // A shard writes its own store: SQLite must not be shared between machines.
            Some(s) => s.store_path(&main),
            None => {
                if self.store.as_deref().is_some_and(is_store_dir) {
                    merge_shards(&main, self.store_timeout)?;
                }
                main
            }
        })
    }

    fn run_options(&self) -> RunOptions {
        RunOptions {
            policy: self.policy,
            device: self.device.clone(),
            dtype: self.dtype,
            batch_tokens: self.batch_tokens,
            max_length: self.max_length,
            commit_every: self.commit_every,
        }
    }
}

/// Scores (and judges) every checkpoint of the job; Hub downloads report to `transfer`.
pub fn run(job: &EvalJob, progress: &dyn Progress, transfer: Shared) -> Result<EvalOutcome> {
    job.check()?;
    let (catalog, specs) =
        catalog_specs(&job.tasks, job.suite.as_deref(), job.tasks_dir.as_deref())?;
    let specs = job.adjust(specs)?;
    let sources = job.data_sources()?;
    let (candidates, hub) = crate::sources::candidates(&job.paths, &job.hub_sources)?;
    if candidates.is_empty() {
        return Err(Error::bad_value(
            "PATH",
            format!(
                "no checkpoints found under {}",
                crate::sources::join_paths(&job.paths)
            ),
        ));
    }
    let mut downloads = hub.map(|h| Downloads::new(h, job.retention, transfer.clone()));
    let tasks: Vec<TaskRequests> = specs
        .iter()
        .map(|s| {
            build_task(s, &sources, job.limit, job.fewshot_dir.as_deref())
                .map_err(|e| e.map_message(|m| format!("task {}: {m}", s.task)))
        })
        .collect::<Result<_>>()?;
    let store_path = job.store_path()?;
    if let Some(s) = job.shard {
        log_shard(s, &candidates, &tasks, &store_path);
    }
    let mut store = Store::open_waiting(&store_path, job.store_timeout)?;
    let opts = job.run_options();
    let report = if tasks.is_empty() {
        None
    } else {
        let outcomes = evaluate_shard(
            &candidates,
            &tasks,
            &mut store,
            &opts,
            progress,
            job.shard,
            downloads.as_mut(),
        )?;
        let report = EvalReport::new(
            &outcomes,
            &tasks,
            &catalog,
            &store,
            &opts.policy,
            job.baseline.as_deref(),
        )?;
        if let Some(dir) = &job.output {
            let rows: Vec<_> = outcomes.iter().map(|o| o.row.clone()).collect();
            let files = super::export::export_all(dir, &store, &rows, &tasks, &opts.policy)?;
            tracing::info!("wrote {} files to {}", files.len(), dir.display());
        }
        Some(report)
    };
    let judged = match &job.judge {
        Some(judge) if job.judged() => {
            // Judging generates from every checkpoint: Hub revisions are fetched and kept.
            let checkpoints = materialize(&candidates, downloads.as_ref(), transfer.as_ref())?;
            Some(crate::eval::judge::job::run(
                judge,
                job.limit,
                &checkpoints,
                &mut store,
                &opts,
                progress,
            )?)
        }
        _ => None,
    };
    Ok(EvalOutcome {
        report,
        judged,
        store: store_path,
    })
}

/// How a shard's share of the work is balanced, for the log.
fn log_shard(s: Shard, candidates: &[Candidate], tasks: &[TaskRequests], store: &Path) {
    let costs = unit_costs(candidates, tasks);
    tracing::info!(
        "shard {} of {}: {} of {} (checkpoint, task) units, balance {:.2} (max/mean cost), store {}",
        s.index,
        s.count,
        s.select(&costs).iter().filter(|&&m| m).count(),
        costs.len(),
        crate::shard::imbalance(&costs, s.count),
        store.display()
    );
}

/// A `--store` naming a directory (existing, or written with a trailing `/`).
fn is_store_dir(path: &Path) -> bool {
    path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/')
}

/// The store `--store` names: the file, or `DIR/ckpt.sqlite` (DIR created).
fn main_store(store: Option<&Path>) -> Result<PathBuf> {
    match store {
        None => Ok(PathBuf::from(STORE_FILE)),
        Some(dir) if is_store_dir(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::bad_value(
                    "--store",
                    format!(
                        "--store {}: cannot create the directory: {e}",
                        dir.display()
                    ),
                )
            })?;
            Ok(dir.join(STORE_FILE))
        }
        Some(file) => Ok(file.to_path_buf()),
    }
}

/// Merges the other stores beside `main` (a sharded sweep's) into it.
fn merge_shards(main: &Path, wait: Duration) -> Result<()> {
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
    transfer: &dyn Progress,
) -> Result<Vec<Checkpoint>> {
    candidates
        .iter()
        .map(|c| match (c, downloads) {
            (Candidate::Local(ckpt), _) => Ok((**ckpt).clone()),
            (Candidate::Hub(rev), Some(d)) => {
                let dir = d.hub().materialize(rev, transfer)?;
                crate::sources::open_revision(&dir, rev)
            }
            (Candidate::Hub(rev), None) => {
                Err(Error::Invalid(format!("{}: no Hub client", rev.source)))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> EvalJob {
        EvalJob {
            paths: vec!["runs".into()],
            hub_sources: HubOptions::default(),
            retention: Retention::KeepAll,
            tasks: vec!["arc_easy".into()],
            suite: None,
            tasks_dir: None,
            data: vec![],
            data_dir: None,
            download_data: false,
            fewshot_dir: None,
            limit: None,
            num_fewshot: None,
            max_gen_toks: None,
            store: None,
            store_timeout: Duration::from_secs(60),
            shard: None,
            batch_tokens: 4096,
            max_length: None,
            commit_every: 512,
            policy: EncodePolicy::default(),
            device: Device::Cpu,
            dtype: DType::F32,
            output: None,
            baseline: None,
            judge: None,
        }
    }

    #[test]
    fn check_rejects_bad_values() {
        assert!(job().check().is_ok());
        let e = EvalJob {
            max_length: Some(0),
            ..job()
        }
        .check()
        .unwrap_err();
        assert_eq!(e.to_string(), "--max-length must be at least 1 (got 0)");
        let e = EvalJob {
            limit: Some(0),
            ..job()
        }
        .check()
        .unwrap_err();
        assert_eq!(e.to_string(), "--limit must be at least 1 (got 0)");
    }

    #[test]
    fn check_rejects_bad_combinations() {
        let judging_without_judge = EvalJob {
            tasks: vec![JUDGED_TASK.into()],
            ..job()
        };
        let e = judging_without_judge.check().unwrap_err().to_string();
        assert!(e.contains("needs --judge-url"), "{e}");
        let both = EvalJob {
            suite: Some("pt".into()),
            ..job()
        };
        assert!(both.check().is_err());
        let judged_shard = EvalJob {
            tasks: vec![JUDGED_TASK.into()],
            shard: Some(Shard { index: 0, count: 2 }),
            ..job()
        };
        let e = judged_shard.check().unwrap_err().to_string();
        assert!(e.contains("--shard does not split"), "{e}");
    }
}

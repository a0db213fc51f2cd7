//! What a report is computed from: the store read once, its runs, the SFT sweeps and
//! picks, the headline columns of each stage, and the sharpness configuration used.

use super::runs::{runs, Run};
use super::sft::{picks, sweeps, SftColumns, SftPick, SftSweep};
use super::sharpness::{configs, ConfigSummary};
use super::source::StoreView;
use super::ReportOptions;
use crate::error::{Error, Result};
use crate::eval::headline::{headlines, Headline};
use crate::store::{MetricRow, Store};

/// The validation-loss task and its metric (the findings' pre-training measure).
pub(crate) const VALIDATION_TASK: &str = "validation_loss";
pub(crate) const VALIDATION_METRIC: &str = "loss";

pub(crate) struct Inputs<'a> {
    pub(crate) store: &'a Store,
    pub(crate) opts: &'a ReportOptions,
    pub(crate) view: StoreView,
    pub(crate) runs: Vec<Run>,
    /// Pre-training headline columns (over the runs' final checkpoints), the
    /// validation loss last.
    pub(crate) pre_columns: Vec<Headline>,
    pub(crate) sft_columns: SftColumns,
    pub(crate) sweeps: Vec<SftSweep>,
    pub(crate) picks: Vec<SftPick>,
    /// Sharpness configurations, the most measured (the one findings use) first.
    pub(crate) sharpness_configs: Vec<ConfigSummary>,
}

impl<'a> Inputs<'a> {
    /// Reads the store; an empty store is an error that says what to run.
    pub fn read(store: &'a Store, opts: &'a ReportOptions) -> Result<Self> {
        let view = StoreView::read(store)?;
        if view.checkpoints.is_empty() {
            return Err(Error::bad_file(
                store.path(),
                "the store holds no checkpoints yet: score some first (ckpt eval PATH --tasks ... --store FILE)",
            ));
        }
        let runs = runs(&view);
        let pre_rows: Vec<MetricRow> = runs
            .iter()
            .filter(|r| r.stage == "pre")
            .flat_map(|r| r.final_ckpt(&view).metrics.iter().cloned())
            .collect();
        let mut pre_columns = headlines(&pre_rows, &view.orders, &view.groups);
        pre_columns.sort_by_key(|h| h.task == VALIDATION_TASK);
        let sft_columns = SftColumns::new(&view, &runs, &opts.judge_task);
        let sweeps = sweeps(&view, &runs, &sft_columns);
        let picks = picks(&sweeps);
        let sharpness_configs = configs(&view);
        let inputs = Self {
            store,
            opts,
            view,
            runs,
            pre_columns,
            sft_columns,
            sweeps,
            picks,
            sharpness_configs,
        };
        inputs.check_baseline()?;
        inputs.check_judge_task()?;
        Ok(inputs)
    }

    /// A `--judge-task` other than the default must be a task with results.
    fn check_judge_task(&self) -> Result<()> {
        let task = &self.opts.judge_task;
        let mut known: Vec<&str> = self
            .view
            .checkpoints
            .iter()
            .flat_map(|c| c.metrics.iter().map(|m| m.task.as_str()))
            .collect();
        known.sort_unstable();
        known.dedup();
        if task == crate::eval::judge::run::TASK || known.contains(&task.as_str()) {
            return Ok(());
        }
        Err(Error::bad_value(
            "--judge-task",
            format!(
                "--judge-task {task:?}: no results of that task in {} (tasks: {})",
                self.view.path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ))
    }

    /// An unknown `--baseline` is an error listing the runs it could be.
    fn check_baseline(&self) -> Result<()> {
        let Some(b) = &self.opts.baseline else {
            return Ok(());
        };
        let pre: Vec<&str> = self.pre_runs().map(|r| r.name.as_str()).collect();
        if pre.contains(&b.as_str()) {
            return Ok(());
        }
        Err(Error::bad_value(
            "--baseline",
            format!(
                "--baseline {b}: no such pre-training run in {} (runs: {})",
                self.view.path.display(),
                if pre.is_empty() {
                    "none".to_string()
                } else {
                    pre.join(", ")
                }
            ),
        ))
    }

    /// Pre-training runs, then WSM merges.
    pub(crate) fn pre_runs(&self) -> impl Iterator<Item = &Run> {
        let pre = |merge: bool| {
            self.runs
                .iter()
                .filter(move |r| r.stage == "pre" && r.is_merge() == merge)
        };
        pre(false).chain(pre(true))
    }

    /// The run named `name`.
    pub fn run(&self, name: &str) -> Option<&Run> {
        self.runs.iter().find(|r| r.name == name)
    }

    /// The sharpness configuration the findings use.
    pub(crate) fn primary_sharpness(&self) -> Option<&ConfigSummary> {
        self.sharpness_configs.first()
    }

    /// The configurations that measure curves (no spectrum), one per measurement set:
    /// the primary first, then each other set's most measured.
    pub(crate) fn sharpness_per_set(&self) -> Vec<&ConfigSummary> {
        let mut out: Vec<&ConfigSummary> = Vec::new();
        for c in self.sharpness_configs.iter().filter(|c| !c.spectrum) {
            if !out.iter().any(|o| o.set == c.set) {
                out.push(c);
            }
        }
        out
    }

    /// Per-doc items of `headline` for a checkpoint (for paired tests).
    pub(crate) fn items(
        &self,
        fingerprint: &str,
        headline: &Headline,
    ) -> Result<Vec<(usize, f64)>> {
        self.view.items(self.store, fingerprint, headline)
    }

    /// The final validation loss of a run.
    pub(crate) fn validation_loss(&self, run: &Run) -> Option<&MetricRow> {
        run.final_ckpt(&self.view).metrics.iter().find(|m| {
            m.task == VALIDATION_TASK
                && m.metric == VALIDATION_METRIC
                && m.filter == crate::eval::scoring::NO_FILTER
        })
    }
}

//! What `ckpt eval` reports: per checkpoint its metrics on the tasks of the run (group
//! rows added), each task's headline column, and the relative table of the runs' final
//! checkpoints.
//!
//! The headlines, group rows, final values and paired items come from
//! [`super::headline`] and [`super::relative`], as in `ckpt report`.

use super::catalog::Catalog;
use super::headline::{group_rows, headlines, Headline, MetricOrder};
use super::relative::{
    headline_items, is_decayed, relative_table, schedule_label, RelativeTable, RunFinal,
};
use super::run::{results_hash, CheckpointOutcome};
use super::task::TaskRequests;
use crate::error::{Error, Result};
use crate::store::{CheckpointRow, MetricRow, Store};
use crate::tokenizer::EncodePolicy;
use serde::Serialize;
use std::collections::BTreeMap;

/// Per checkpoint, its metrics on the tasks of this run; and the relative table.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// By run, then step.
    pub(crate) checkpoints: Vec<CheckpointReport>,
    /// Subtask -> group (MMLU's subjects, BBH's tasks): shown as one size-weighted column.
    #[serde(skip)]
    pub(crate) groups: BTreeMap<String, String>,
    /// Task -> the order of its spec's metrics (the first stored is its headline).
    #[serde(skip)]
    pub(crate) orders: BTreeMap<String, MetricOrder>,
    /// Each run's final checkpoint against the best decayed run.
    pub(crate) relative: Option<RelativeTable>,
}

/// Which checkpoint a row of a report is about, as the reports print it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointLabel {
    pub(crate) path: String,
    pub(crate) run: String,
    pub(crate) step: Option<u64>,
    pub(crate) schedule: Option<String>,
    pub(crate) alpha: Option<f64>,
    pub(crate) fingerprint: String,
}

impl From<CheckpointRow> for CheckpointLabel {
    fn from(row: CheckpointRow) -> Self {
        Self {
            path: row.path,
            run: row.run,
            step: row.step,
            schedule: row.schedule,
            alpha: row.alpha,
            fingerprint: row.fingerprint,
        }
    }
}

impl CheckpointLabel {
    /// The order reports list checkpoints in: by run, then step.
    pub(crate) fn sort_key(&self) -> (&str, Option<u64>, &str) {
        (&self.run, self.step, &self.path)
    }
}

/// One checkpoint's part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointReport {
    #[serde(flatten)]
    pub(crate) label: CheckpointLabel,
    /// Requests answered in this run (the rest came from the store).
    pub(crate) computed_requests: usize,
    pub(crate) error: Option<String>,
    pub(crate) metrics: Vec<MetricRow>,
}

impl EvalReport {
    /// The report of a run: the stored metrics of each checkpoint under this run's
    /// specs, group rows, and the relative table against `baseline` (default: the best
    /// decayed run).
    pub fn new(
        outcomes: &[CheckpointOutcome],
        tasks: &[TaskRequests],
        catalog: &Catalog,
        store: &Store,
        policy: &EncodePolicy,
        baseline: Option<&str>,
    ) -> Result<Self> {
        let mut report = Self::collect(outcomes, tasks, store, policy)?;
        report.add_groups(&group_of(catalog, tasks));
        report.relative = report.relative_table(store, baseline)?;
        Ok(report)
    }

    fn collect(
        outcomes: &[CheckpointOutcome],
        tasks: &[TaskRequests],
        store: &Store,
        policy: &EncodePolicy,
    ) -> Result<Self> {
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
                label: o.row.clone().into(),
                computed_requests: o.computed,
                error: o.error.clone(),
                metrics,
            });
        }
        // Grouped by run, ordered by step.
        checkpoints.sort_by(|a, b| {
            (&a.label.run, a.label.step, &a.label.path).cmp(&(
                &b.label.run,
                b.label.step,
                &b.label.path,
            ))
        });
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

    /// Whether every checkpoint was scored.
    pub fn all_ok(&self) -> bool {
        self.checkpoints.iter().all(|c| c.error.is_none())
    }

    /// Columns: each task's headline metric; a group's subtasks are one column.
    pub fn columns(&self) -> Vec<Headline> {
        let rows: Vec<MetricRow> = self
            .checkpoints
            .iter()
            .flat_map(|c| c.metrics.iter().cloned())
            .collect();
        headlines(&rows, &self.orders, &self.groups)
    }

    /// The last scored checkpoint of each run, with its headline values.
    fn finals(&self, columns: &[Headline]) -> Vec<RunFinal> {
        let mut finals: Vec<RunFinal> = Vec::new();
        for c in self.checkpoints.iter().filter(|c| c.error.is_none()) {
            let fin = RunFinal::new(
                &c.label.run,
                &schedule_label(c.label.schedule.as_deref(), c.label.alpha),
                &c.label.fingerprint,
                is_decayed(c.label.schedule.as_deref(), c.label.alpha),
                &c.metrics,
                columns,
            );
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
        store: &Store,
        baseline: Option<&str>,
    ) -> Result<Option<RelativeTable>> {
        if let Some(b) = baseline {
            if !self.checkpoints.iter().any(|c| c.label.run == b) {
                return Err(Error::bad_value(
                    "--baseline",
                    format!(
                        "--baseline {b}: no such run (runs: {})",
                        self.runs().join(", ")
                    ),
                ));
            }
        }
        let columns = self.columns();
        let names: Vec<String> = columns.iter().map(|h| h.task.clone()).collect();
        let items = |fp: &str, task: &str| -> Result<Vec<(usize, f64)>> {
            let (Some(h), Some(c)) = (
                columns.iter().find(|h| h.task == task),
                self.checkpoints.iter().find(|c| c.label.fingerprint == fp),
            ) else {
                return Ok(vec![]);
            };
            headline_items(store, fp, h, &c.metrics, &self.groups)
        };
        relative_table(&self.finals(&columns), &names, baseline, &items)
    }

    fn runs(&self) -> Vec<String> {
        let mut runs: Vec<String> = self
            .checkpoints
            .iter()
            .map(|c| c.label.run.clone())
            .collect();
        runs.dedup();
        runs
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

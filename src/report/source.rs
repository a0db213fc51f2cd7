//! Everything the report reads from the store, read once: checkpoints with their
//! `ckpt.json`, metrics (one spec per task and checkpoint, group rows added), the
//! specs' metric order, and sharpness measurements; per-doc items on demand.

use crate::checkpoint::CheckpointMeta;
use crate::error::Result;
use crate::eval::catalog::Catalog;
use crate::eval::headline::{group_rows, Headline, MetricOrder};
use crate::eval::relative::headline_items;
use crate::sharpness::{ResultsFile, SharpnessResult};
use crate::store::{CheckpointRow, MetricRow, Store};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A checkpoint the store knows, with what is stored about it.
#[derive(Debug, Clone)]
pub(crate) struct Ckpt {
    pub(crate) row: CheckpointRow,
    /// Its `ckpt.json` (`None`: none recorded, or unreadable).
    pub(crate) meta: Option<CheckpointMeta>,
    /// Its metrics: per task the spec scored last, plus group rows (MMLU...).
    pub(crate) metrics: Vec<MetricRow>,
}

impl Ckpt {
    /// `pre`, `mid` or `sft`; checkpoints without a stage count as pre-training.
    pub(crate) fn stage(&self) -> &str {
        self.row.stage.as_deref().unwrap_or("pre")
    }

    /// Its row of `headline`, if scored.
    pub(crate) fn value(&self, headline: &Headline) -> Option<&MetricRow> {
        self.metrics.iter().find(|m| headline.matches(m))
    }
}

/// The store, read.
pub(crate) struct StoreView {
    /// The store file (for errors and the report's header).
    pub(crate) path: PathBuf,
    /// Every checkpoint, by run then step.
    pub(crate) checkpoints: Vec<Ckpt>,
    /// Task -> its spec's metric order (headlines).
    pub(crate) orders: BTreeMap<String, MetricOrder>,
    /// Subtask -> group, from the built-in catalog (MMLU's subjects -> `mmlu`).
    pub(crate) groups: BTreeMap<String, String>,
    /// The tasks (columns: groups for grouped subtasks) of the paper's `sft` suite.
    pub(crate) sft_suite: Vec<String>,
    pub(crate) sharpness: Vec<SharpnessResult>,
    by_fingerprint: HashMap<String, usize>,
}

impl StoreView {
    /// Reads the store.
    pub fn read(store: &Store) -> Result<Self> {
        let catalog = Catalog::builtin()?;
        let groups: BTreeMap<String, String> = catalog
            .entries()
            .iter()
            .filter_map(|e| Some((e.spec.task.clone(), e.group.clone()?)))
            .collect();
        let mut sft_suite: Vec<String> = Vec::new();
        for spec in catalog.suite("sft")? {
            let column = groups.get(&spec.task).unwrap_or(&spec.task).clone();
            if !sft_suite.contains(&column) {
                sft_suite.push(column);
            }
        }
        let metas: HashMap<String, serde_json::Value> =
            store.checkpoint_metas()?.into_iter().collect();
        let mut metrics: HashMap<String, Vec<MetricRow>> = HashMap::new();
        for m in store.metrics(None)? {
            metrics.entry(m.fingerprint.clone()).or_default().push(m);
        }
        let checkpoints: Vec<Ckpt> = store
            .checkpoints()?
            .into_iter()
            .map(|row| {
                let meta = metas
                    .get(&row.fingerprint)
                    .and_then(|v| serde_json::from_value(v.clone()).ok());
                let rows = latest_spec(metrics.remove(&row.fingerprint).unwrap_or_default());
                let mut all = group_rows(&rows, &groups);
                all.splice(0..0, rows);
                Ckpt {
                    row,
                    meta,
                    metrics: all,
                }
            })
            .collect();
        let orders = store
            .task_specs()?
            .into_iter()
            .filter_map(|(task, _, json)| {
                let spec: serde_json::Value = serde_json::from_str(&json).ok()?;
                Some((task, MetricOrder::of_spec_json(&spec)))
            })
            .collect();
        let by_fingerprint = checkpoints
            .iter()
            .enumerate()
            .map(|(i, c)| (c.row.fingerprint.clone(), i))
            .collect();
        Ok(Self {
            path: store.path().to_path_buf(),
            checkpoints,
            orders,
            groups,
            sft_suite,
            // A shard's block of probes is part of a measurement, not one.
            sharpness: ResultsFile::from_store(store)?
                .into_iter()
                .filter(|r| !r.is_block())
                .collect(),
            by_fingerprint,
        })
    }

    /// The checkpoint with this fingerprint.
    pub(crate) fn by_fingerprint(&self, fingerprint: &str) -> Option<&Ckpt> {
        self.by_fingerprint
            .get(fingerprint)
            .map(|&i| &self.checkpoints[i])
    }

    /// The checkpoint stored at `path` (as recorded, or the same file once resolved).
    pub(crate) fn by_path(&self, path: &str) -> Option<&Ckpt> {
        let canonical = |p: &Path| std::fs::canonicalize(p).ok();
        self.checkpoints
            .iter()
            .find(|c| c.row.path == path)
            .or_else(|| {
                let want = canonical(Path::new(path))?;
                self.checkpoints
                    .iter()
                    .find(|c| canonical(Path::new(&c.row.path)).as_ref() == Some(&want))
            })
    }

    /// A path the store recorded, as found from here: as is, else relative to the
    /// store's directory (`ckpt eval` records paths as it was given them).
    pub fn resolve(&self, recorded: &Path) -> Option<PathBuf> {
        if recorded.exists() {
            return Some(recorded.to_path_buf());
        }
        let beside = self.path.parent()?.join(recorded);
        beside.exists().then_some(beside)
    }

    /// Per-doc values `(item key, value)` of `headline` for a checkpoint: the items a
    /// paired test compares ([`headline_items`]).
    pub(crate) fn items(
        &self,
        store: &Store,
        fingerprint: &str,
        headline: &Headline,
    ) -> Result<Vec<(usize, f64)>> {
        match self.by_fingerprint(fingerprint) {
            Some(ckpt) => headline_items(store, fingerprint, headline, &ckpt.metrics, &self.groups),
            None => Ok(vec![]),
        }
    }
}

/// Keeps, per task, the rows of the spec scored last (a task re-scored under another
/// spec, e.g. another shot count, shows its newest result).
fn latest_spec(rows: Vec<MetricRow>) -> Vec<MetricRow> {
    let mut newest: HashMap<&str, (&str, &str)> = HashMap::new();
    for r in &rows {
        let e = newest
            .entry(&r.task)
            .or_insert((&r.created_at, &r.spec_hash));
        if r.created_at.as_str() > e.0 {
            *e = (&r.created_at, &r.spec_hash);
        }
    }
    let keep: HashMap<String, String> = newest
        .into_iter()
        .map(|(t, (_, h))| (t.to_string(), h.to_string()))
        .collect();
    rows.into_iter()
        .filter(|r| keep.get(&r.task) == Some(&r.spec_hash))
        .collect()
}

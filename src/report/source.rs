//! Everything the report reads from the store, read once: checkpoints with their
//! `ckpt.json`, metrics (one spec per task and checkpoint, group rows added), the
//! specs' metric order, and sharpness measurements; per-doc items on demand.

use crate::checkpoint::CheckpointMeta;
use crate::error::{Error, Result};
use crate::eval::catalog::Catalog;
use crate::eval::headline::{group_rows, Headline, MetricOrder};
use crate::sharpness::{ResultsFile, SharpnessResult};
use crate::store::{CheckpointRow, MetricRow, Store};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A checkpoint the store knows, with what is stored about it.
#[derive(Debug, Clone)]
pub struct Ckpt {
    pub row: CheckpointRow,
    /// Its `ckpt.json` (`None`: none recorded, or unreadable).
    pub meta: Option<CheckpointMeta>,
    /// Its metrics: per task the spec scored last, plus group rows (MMLU...).
    pub metrics: Vec<MetricRow>,
}

impl Ckpt {
    /// `pre`, `mid` or `sft`; checkpoints without a stage count as pre-training.
    pub fn stage(&self) -> &str {
        self.row.stage.as_deref().unwrap_or("pre")
    }

    /// Its row of `headline`, if scored.
    pub fn value(&self, headline: &Headline) -> Option<&MetricRow> {
        self.metrics.iter().find(|m| headline.matches(m))
    }
}

/// The store, read.
pub struct StoreView {
    /// The store file (for errors and the report's header).
    pub path: PathBuf,
    /// Every checkpoint, by run then step.
    pub checkpoints: Vec<Ckpt>,
    /// Task -> its spec's metric order (headlines).
    pub orders: BTreeMap<String, MetricOrder>,
    /// Subtask -> group, from the built-in catalog (MMLU's subjects -> `mmlu`).
    pub groups: BTreeMap<String, String>,
    /// The tasks (columns: groups for grouped subtasks) of the paper's `sft` suite.
    pub sft_suite: Vec<String>,
    pub sharpness: Vec<SharpnessResult>,
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
    pub fn by_fingerprint(&self, fingerprint: &str) -> Option<&Ckpt> {
        self.by_fingerprint
            .get(fingerprint)
            .map(|&i| &self.checkpoints[i])
    }

    /// The checkpoint stored at `path` (as recorded, or the same file once resolved).
    pub fn by_path(&self, path: &str) -> Option<&Ckpt> {
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
    /// paired test compares. A group's items are its subtasks' (keyed by subtask and
    /// doc); judged tasks' items are the per-instruction preferences (p(model wins)).
    pub fn items(
        &self,
        store: &Store,
        fingerprint: &str,
        headline: &Headline,
    ) -> Result<Vec<(usize, f64)>> {
        let Some(ckpt) = self.by_fingerprint(fingerprint) else {
            return Ok(vec![]);
        };
        let mut members: Vec<&str> = self
            .groups
            .iter()
            .filter(|(_, g)| **g == headline.task)
            .map(|(sub, _)| sub.as_str())
            .collect();
        if members.is_empty() {
            members.push(&headline.task);
        }
        let mut out = Vec::new();
        for (index, task) in members.iter().enumerate() {
            let Some(hash) = ckpt
                .metrics
                .iter()
                .find(|m| m.task == *task && !m.spec_hash.is_empty())
                .map(|m| m.spec_hash.clone())
            else {
                continue;
            };
            for (doc, _, score) in store.samples(fingerprint, task, &hash)? {
                let score: serde_json::Value = serde_json::from_str(&score).map_err(|e| {
                    Error::bad_file(&self.path, format!("sample of {task} doc {doc}: {e}"))
                })?;
                if let Some(v) = item_value(&score, headline) {
                    out.push(((index << 32) | doc, v));
                }
            }
        }
        Ok(out)
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

/// One doc's value of `headline` from its stored score.
fn item_value(score: &serde_json::Value, headline: &Headline) -> Option<f64> {
    if headline.task == crate::judge::run::TASK {
        // `preference` is alpaca_eval's 1 + p(model wins); unreadable verdicts are null.
        return score["preference"].as_f64().map(|p| p - 1.0);
    }
    let metrics = &score["metrics"];
    let key = crate::eval::scoring::key(&headline.metric, &headline.filter);
    if let Some(v) = metrics[&key].as_f64() {
        return Some(v);
    }
    // Rolling tasks keep sums per doc: the doc's own loss or bits per byte.
    let get = |k: &str| metrics[crate::eval::scoring::key(k, &headline.filter)].as_f64();
    let ll = get("loglikelihood")?;
    match headline.metric.as_str() {
        "loss" => Some(-ll / get("tokens")?.max(1.0)),
        "bits_per_byte" => Some(-ll / get("bytes")?.max(1.0) / std::f64::consts::LN_2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headline(task: &str, metric: &str) -> Headline {
        Headline {
            task: task.into(),
            metric: metric.into(),
            filter: "none".into(),
            higher_is_better: true,
        }
    }

    #[test]
    fn item_values_come_from_each_kind_of_sample() {
        let mc = json!({"doc_id": 0, "metrics": {"acc,none": 1.0}});
        assert_eq!(item_value(&mc, &headline("arc", "acc")), Some(1.0));
        let rolling = json!({"metrics": {"loglikelihood,none": -20.0, "tokens,none": 8.0, "bytes,none": 10.0}});
        assert_eq!(
            item_value(&rolling, &headline("validation_loss", "loss")),
            Some(2.5)
        );
        let bpb = item_value(&rolling, &headline("validation_loss", "bits_per_byte")).unwrap();
        assert!((bpb - 2.0 / std::f64::consts::LN_2).abs() < 1e-12);
        let judged = json!({"preference": 1.75});
        assert_eq!(
            item_value(&judged, &headline("alpaca_eval", "win_rate")),
            Some(0.75)
        );
        assert_eq!(
            item_value(&json!({"preference": null}), &headline("alpaca_eval", "x")),
            None
        );
    }
}

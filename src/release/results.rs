//! The measurements a model card reports: benchmark scores (before and after SFT) and
//! Hessian-trace sharpness against decayed siblings.
//!
//! A plain input, filled from the results store or, for now, from a JSON file
//! (`ckpt release --results FILE`):
//!
//! ```json
//! {
//!   "evals": [
//!     {"task": "hellaswag", "dataset_type": "Rowan/hellaswag", "dataset_name": "HellaSwag",
//!      "split": "validation", "metric": "acc_norm", "value": 0.412, "stderr": 0.005,
//!      "num_fewshot": 0, "stage": "pre"}
//!   ],
//!   "sharpness": [
//!     {"label": "wso", "schedule": "WSO", "step": 300, "trace": 41.0, "stderr": 2.1, "released": true},
//!     {"label": "wsd", "schedule": "WSD (α=0.1)", "step": 300, "trace": 97.5, "stderr": 3.0}
//!   ]
//! }
//! ```
//!
//! `stage` is `pre` (this checkpoint's own scores: they go into the card's
//! `model-index`) or `sft` (a model fine-tuned from it: shown in the card's body only).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which model a score belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EvalStage {
    /// This checkpoint, as released.
    Pre,
    /// A fine-tune of this checkpoint.
    Sft,
}

/// One metric of one benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvalResult {
    /// The task's name (`hellaswag`, `arc_challenge`...).
    pub(crate) task: String,
    /// Hub dataset id (`model-index` `dataset.type`).
    pub(crate) dataset_type: String,
    /// Human-readable dataset name (`dataset.name`).
    pub(crate) dataset_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dataset_config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) split: Option<String>,
    /// Metric id (`acc`, `acc_norm`, `exact_match`...).
    pub(crate) metric: String,
    pub(crate) value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stderr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) num_fewshot: Option<u32>,
    pub(crate) stage: EvalStage,
}

/// Sharpness of one checkpoint: this one (`released`) or a sibling to compare with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SharpnessRow {
    /// Run or checkpoint label.
    pub(crate) label: String,
    /// Schedule description (`WSD (α=0.1)`).
    pub(crate) schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) step: Option<u64>,
    /// Hessian trace estimate.
    pub(crate) trace: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stderr: Option<f64>,
    /// True for the checkpoint being released.
    #[serde(default)]
    pub(crate) released: bool,
}

/// Whether `metric` is a fraction of items (accuracy, exact match, F1, win rate), which
/// the card reports in [0, 1].
fn is_fraction(metric: &str) -> bool {
    let m = metric.split(',').next().unwrap_or(metric);
    m.starts_with("acc")
        || m.starts_with("exact_match")
        || m.ends_with("win_rate")
        || matches!(m, "em" | "f1" | "mc1" | "mc2" | "brier_score")
}

/// Everything the card reports beyond the checkpoint itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CardResults {
    #[serde(default)]
    pub(crate) evals: Vec<EvalResult>,
    #[serde(default)]
    pub(crate) sharpness: Vec<SharpnessRow>,
}

impl CardResults {
    /// Reads a results file; errors name the file, the entry and the problem.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = crate::error::read_file(path)?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let results: Self = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| Error::bad_file(path, format!("{}: {}", e.path(), e.inner())))?;
        results.validate().map_err(|m| Error::bad_file(path, m))?;
        Ok(results)
    }

    /// Every value finite, no empty names, at most one released sharpness row.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (i, e) in self.evals.iter().enumerate() {
            let empty = [&e.task, &e.dataset_type, &e.dataset_name, &e.metric]
                .iter()
                .any(|s| s.trim().is_empty());
            if empty {
                return Err(format!(
                    "evals[{i}]: task, dataset_type, dataset_name and metric must not be empty"
                ));
            }
            if !e.value.is_finite() || e.stderr.is_some_and(|s| !s.is_finite()) {
                return Err(format!(
                    "evals[{i}] ({}): value and stderr must be finite",
                    e.task
                ));
            }
            if is_fraction(&e.metric) && !(0.0..=1.0).contains(&e.value) {
                return Err(format!(
                    "evals[{i}] ({}): {} is {}, out of [0, 1] (a fraction, not a percentage)",
                    e.task, e.metric, e.value
                ));
            }
            if e.stderr.is_some_and(|s| s < 0.0) {
                return Err(format!(
                    "evals[{i}] ({}): stderr {} is negative",
                    e.task,
                    e.stderr.unwrap_or_default()
                ));
            }
        }
        for (i, s) in self.sharpness.iter().enumerate() {
            if !s.trace.is_finite() || s.stderr.is_some_and(|v| !v.is_finite()) {
                return Err(format!(
                    "sharpness[{i}] ({}): trace and stderr must be finite",
                    s.label
                ));
            }
        }
        if self.sharpness.iter().filter(|s| s.released).count() > 1 {
            return Err("sharpness: more than one row is marked released".into());
        }
        Ok(())
    }

    /// Scores of one stage, in the order given.
    pub(crate) fn evals_of(&self, stage: EvalStage) -> Vec<&EvalResult> {
        self.evals.iter().filter(|e| e.stage == stage).collect()
    }
}

/// This checkpoint's evaluation results from the results store (`ckpt eval`): every
/// stored metric of its fingerprint, with the task's dataset for `model-index`.
pub(crate) fn from_store(store: &crate::store::Store, fingerprint: &str) -> Result<CardResults> {
    let mut evals = Vec::new();
    for m in store.metrics(Some(fingerprint))? {
        let Some(info) = store.task_info(&m.task, &m.spec_hash)? else {
            continue;
        };
        let name = info
            .dataset_name
            .clone()
            .unwrap_or_else(|| info.dataset_path.clone());
        // Scores on local files (synthetic docs, a private copy) are not the Hub
        // dataset's: the card says so rather than claim them.
        let local = info.data_origin.as_deref().is_some_and(|o| o != "hub");
        evals.push(EvalResult {
            task: m.task.clone(),
            dataset_type: info.dataset_path.clone(),
            dataset_name: if local {
                format!("{name} (local files, not the Hub dataset)")
            } else {
                name
            },
            dataset_config: info.dataset_name,
            split: info.split,
            metric: m.metric,
            value: m.value,
            stderr: m.stderr,
            num_fewshot: Some(m.num_fewshot as u32),
            stage: EvalStage::Pre,
        });
    }
    Ok(CardResults {
        evals,
        sharpness: sharpness_from_store(store, fingerprint)?,
    })
}

/// How the card names a measured checkpoint: its run directory, or a Hub revision as a
/// link to its page.
fn checkpoint_label(checkpoint: &str) -> String {
    if let Some(Ok(source)) = crate::hub::HubSource::parse(checkpoint) {
        let endpoint = crate::hub::auth::endpoint();
        return format!(
            "[{}@{}]({})",
            source.repo,
            source.revision_or_main(),
            source.web_url(&endpoint)
        );
    }
    std::path::Path::new(checkpoint)
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Sharpness of this checkpoint and of the checkpoints measured at its step (its
/// decayed siblings), from `ckpt sharpness --store`.
fn sharpness_from_store(
    store: &crate::store::Store,
    fingerprint: &str,
) -> Result<Vec<SharpnessRow>> {
    let records: Vec<serde_json::Value> = store
        .sharpness_results()?
        .iter()
        .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        // A shard's block of probes is part of a measurement, not one.
        .filter(|r| r.get("probe_start").is_none_or(|p| p.is_null()))
        .collect();
    let Some(own) = records
        .iter()
        .rev()
        .find(|r| r["fingerprint"] == fingerprint)
    else {
        return Ok(vec![]);
    };
    let (step, key) = (own["step"].as_u64(), own["config_key"].clone());
    let mut rows: Vec<SharpnessRow> = Vec::new();
    for r in records
        .iter()
        .filter(|r| r["step"].as_u64() == step && r["config_key"] == key)
    {
        let label = checkpoint_label(r["checkpoint"].as_str().unwrap_or_default());
        let kind = r["schedule"]["kind"].as_str().unwrap_or("?").to_uppercase();
        let schedule = match r["schedule"]["alpha_pre"].as_f64() {
            Some(a) if a < 1.0 => format!("{kind} (α={a})"),
            _ => kind,
        };
        if rows
            .iter()
            .any(|x| x.label == label && x.schedule == schedule)
        {
            continue;
        }
        rows.push(SharpnessRow {
            label,
            schedule,
            step,
            trace: r["estimate"].as_f64().unwrap_or(f64::NAN),
            stderr: r["stderr"].as_f64(),
            released: r["fingerprint"] == fingerprint,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_format_and_names_bad_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        // The example of the module documentation.
        let doc = include_str!("results.rs")
            .lines()
            .skip_while(|l| !l.contains("```json"))
            .skip(1)
            .take_while(|l| !l.contains("```"))
            .map(|l| l.trim_start_matches("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&path, doc).unwrap();
        let r = CardResults::read(&path).unwrap();
        assert_eq!(r.evals_of(EvalStage::Pre).len(), 1);
        assert!(r.sharpness[0].released && !r.sharpness[1].released);

        std::fs::write(&path, r#"{"evals": [{"task": "x"}]}"#).unwrap();
        let err = CardResults::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("results.json") && err.contains("evals[0]"),
            "{err}"
        );
        std::fs::write(
            &path,
            r#"{"sharpness": [{"label": "a", "schedule": "s", "trace": 1, "released": true},
            {"label": "b", "schedule": "s", "trace": 2, "released": true}]}"#,
        )
        .unwrap();
        let err = CardResults::read(&path).unwrap_err().to_string();
        assert!(err.contains("more than one"), "{err}");
    }
}

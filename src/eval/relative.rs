//! The paper's relative tables: each run's final checkpoint against the best decayed
//! schedule (or a chosen baseline run), per task, with the paired significance of the
//! difference on the same items.
//!
//! `ckpt eval` and `ckpt report` both build their tables here: a run's final values
//! ([`RunFinal::new`]) and the per-item values the paired test reads
//! ([`headline_items`]).

use super::compare::{paired_test, PairedTest};
use super::headline::{Headline, JUDGED_TASK};
use crate::error::{Error, Result};
use crate::store::{MetricRow, Store};
use serde::Serialize;
use std::collections::BTreeMap;

/// A run's last checkpoint and its headline value per task.
#[derive(Debug, Clone)]
pub(crate) struct RunFinal {
    pub(crate) run: String,
    pub(crate) label: String,
    pub(crate) fingerprint: String,
    pub(crate) decayed: bool,
    /// task -> (value, higher is better)
    pub(crate) values: BTreeMap<String, (f64, bool)>,
}

impl RunFinal {
    /// A run's final checkpoint (`fingerprint`, its `metrics`) with its value of each of
    /// the `columns` it has.
    pub fn new(
        run: &str,
        label: &str,
        fingerprint: &str,
        decayed: bool,
        metrics: &[MetricRow],
        columns: &[Headline],
    ) -> Self {
        let values = columns
            .iter()
            .filter_map(|h| {
                let m = metrics.iter().find(|m| h.matches(m))?;
                Some((h.task.clone(), (m.value, m.higher_is_better)))
            })
            .collect();
        Self {
            run: run.to_string(),
            label: label.to_string(),
            fingerprint: fingerprint.to_string(),
            decayed,
            values,
        }
    }
}

/// One cell: the delta from the baseline and its paired test.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RelativeCell {
    pub(crate) delta: f64,
    pub(crate) test: Option<PairedTest>,
}

/// Rows of runs, columns of tasks.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RelativeTable {
    pub(crate) tasks: Vec<String>,
    /// The baseline run of each task (the best decayed one unless one was chosen).
    pub(crate) baselines: Vec<Option<String>>,
    pub(crate) rows: Vec<(String, String, Vec<Option<RelativeCell>>)>,
}

/// Whether a schedule decays the LR (the paper's decayed baselines; a WSM merge counts).
pub(crate) fn is_decayed(schedule: Option<&str>, alpha: Option<f64>) -> bool {
    match schedule {
        Some("wso") | Some("constant") => false,
        Some(k) if k.starts_with("wsm") => true,
        Some("wsd") | Some("cosine") | Some("linear") => alpha.is_none_or(|a| a < 1.0),
        _ => alpha.is_some_and(|a| a < 1.0),
    }
}

/// A schedule as tables name it: `wso`, `wsd α=0.1`, ...
pub(crate) fn schedule_label(kind: Option<&str>, alpha: Option<f64>) -> String {
    match (kind, alpha) {
        (Some(k), Some(a)) if k != "wso" && k != "constant" => format!("{k} α={a}"),
        (Some(k), _) => k.to_string(),
        (None, _) => "?".into(),
    }
}

/// Per-doc values `(doc_id, value)` of a task's headline metric for a checkpoint
/// fingerprint.
pub(crate) type ItemSource<'a> = &'a dyn Fn(&str, &str) -> Result<Vec<(usize, f64)>>;

/// Builds the table; `items(fingerprint, task)` gives the per-doc values of the task's
/// headline metric as `(doc_id, value)`. `None` when there is no baseline to compare to.
pub(crate) fn relative_table(
    finals: &[RunFinal],
    tasks: &[String],
    baseline: Option<&str>,
    items: ItemSource,
) -> Result<Option<RelativeTable>> {
    let baselines: Vec<Option<&RunFinal>> = tasks
        .iter()
        .map(|t| pick_baseline(finals, t, baseline))
        .collect();
    if baselines.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut rows = Vec::new();
    for f in finals {
        let mut cells = Vec::new();
        for (task, base) in tasks.iter().zip(&baselines) {
            let cell = match (base, f.values.get(task)) {
                (Some(b), Some(&(v, _))) => {
                    let (bv, _) = b.values[task];
                    let test = if b.fingerprint == f.fingerprint {
                        None
                    } else {
                        paired(&items(&f.fingerprint, task)?, &items(&b.fingerprint, task)?)
                    };
                    Some(RelativeCell {
                        delta: v - bv,
                        test,
                    })
                }
                _ => None,
            };
            cells.push(cell);
        }
        rows.push((f.run.clone(), f.label.clone(), cells));
    }
    Ok(Some(RelativeTable {
        tasks: tasks.to_vec(),
        baselines: baselines.iter().map(|b| b.map(|b| b.run.clone())).collect(),
        rows,
    }))
}

fn pick_baseline<'a>(
    finals: &'a [RunFinal],
    task: &str,
    chosen: Option<&str>,
) -> Option<&'a RunFinal> {
    let with_task = finals.iter().filter(|f| f.values.contains_key(task));
    if let Some(run) = chosen {
        return with_task.into_iter().find(|f| f.run == run);
    }
    with_task.filter(|f| f.decayed).max_by(|a, b| {
        let (va, higher) = a.values[task];
        let (vb, _) = b.values[task];
        let ord = va.total_cmp(&vb);
        if higher {
            ord
        } else {
            ord.reverse()
        }
    })
}

/// Per-doc values `(item key, value)` of `headline` for the checkpoint `fingerprint`
/// whose metric rows are `metrics`: the items a paired test compares. A group's items
/// are its subtasks' (`groups`: subtask -> group; keyed by subtask and doc); judged
/// tasks' items are the per-instruction preferences (p(model wins)). Samples are read
/// under the spec of the checkpoint's metric rows.
pub(crate) fn headline_items(
    store: &Store,
    fingerprint: &str,
    headline: &Headline,
    metrics: &[MetricRow],
    groups: &BTreeMap<String, String>,
) -> Result<Vec<(usize, f64)>> {
    let mut members: Vec<&str> = groups
        .iter()
        .filter(|(_, g)| **g == headline.task)
        .map(|(sub, _)| sub.as_str())
        .collect();
    if members.is_empty() {
        members.push(&headline.task);
    }
    let mut out = Vec::new();
    for (index, task) in members.iter().enumerate() {
        let Some(hash) = metrics
            .iter()
            .find(|m| m.task == *task && !m.spec_hash.is_empty())
            .map(|m| m.spec_hash.clone())
        else {
            continue;
        };
        for (doc, _, score) in store.samples(fingerprint, task, &hash)? {
            let score: serde_json::Value = serde_json::from_str(&score).map_err(|e| {
                Error::bad_file(store.path(), format!("sample of {task} doc {doc}: {e}"))
            })?;
            if let Some(v) = item_value(&score, headline) {
                out.push(((index << 32) | doc, v));
            }
        }
    }
    Ok(out)
}

/// One doc's value of `headline` from its stored score.
fn item_value(score: &serde_json::Value, headline: &Headline) -> Option<f64> {
    if headline.task == JUDGED_TASK {
        // `preference` is alpaca_eval's 1 + p(model wins); unreadable verdicts are null.
        return score["preference"].as_f64().map(|p| p - 1.0);
    }
    let metrics = &score["metrics"];
    let key = super::scoring::key(&headline.metric, &headline.filter);
    if let Some(v) = metrics[&key].as_f64() {
        return Some(v);
    }
    // Rolling tasks keep sums per doc: the doc's own loss or bits per byte.
    let get = |k: &str| metrics[super::scoring::key(k, &headline.filter)].as_f64();
    let ll = get("loglikelihood")?;
    match headline.metric.as_str() {
        "loss" => Some(-ll / get("tokens")?.max(1.0)),
        "bits_per_byte" => Some(-ll / get("bytes")?.max(1.0) / std::f64::consts::LN_2),
        _ => None,
    }
}

/// Pairs items by doc id.
fn paired(a: &[(usize, f64)], b: &[(usize, f64)]) -> Option<PairedTest> {
    let b: BTreeMap<usize, f64> = b.iter().copied().collect();
    let (xs, ys): (Vec<f64>, Vec<f64>) = a
        .iter()
        .filter_map(|(d, x)| b.get(d).map(|y| (*x, *y)))
        .unzip();
    paired_test(&xs, &ys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, decayed: bool, acc: f64) -> RunFinal {
        RunFinal {
            run: name.into(),
            label: name.into(),
            fingerprint: name.into(),
            decayed,
            values: [("t".to_string(), (acc, true))].into(),
        }
    }

    #[test]
    fn deltas_are_from_the_best_decayed_run() {
        let finals = [
            run("wso", false, 0.5),
            run("wsd", true, 0.6),
            run("cos", true, 0.55),
        ];
        let items = |fp: &str, _: &str| -> Result<Vec<(usize, f64)>> {
            let ones = match fp {
                "wso" => 5,
                "wsd" => 6,
                _ => 5,
            };
            Ok((0..10)
                .map(|i| (i, if i < ones { 1.0 } else { 0.0 }))
                .collect())
        };
        let t = relative_table(&finals, &["t".into()], None, &items)
            .unwrap()
            .unwrap();
        assert_eq!(t.baselines, vec![Some("wsd".to_string())]);
        let wso = t.rows[0].2[0].as_ref().unwrap();
        assert!((wso.delta + 0.1).abs() < 1e-12);
        assert_eq!(wso.test.unwrap().n, 10);
        assert!(
            t.rows[1].2[0].as_ref().unwrap().test.is_none(),
            "the baseline against itself"
        );
        let chosen = relative_table(&finals, &["t".into()], Some("cos"), &items)
            .unwrap()
            .unwrap();
        assert_eq!(chosen.baselines, vec![Some("cos".to_string())]);
        assert!(relative_table(&finals[..1], &["t".into()], None, &items)
            .unwrap()
            .is_none());
    }

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
        use serde_json::json;
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

    #[test]
    fn labels_show_alpha_for_decays_only() {
        assert_eq!(schedule_label(Some("wso"), Some(1.0)), "wso");
        assert_eq!(schedule_label(Some("wsd"), Some(0.1)), "wsd α=0.1");
        assert_eq!(schedule_label(None, None), "?");
    }

    #[test]
    fn decay_is_read_from_schedule_and_alpha() {
        assert!(!is_decayed(Some("wso"), Some(1.0)));
        assert!(is_decayed(Some("wsd"), Some(0.1)));
        assert!(is_decayed(Some("wsm"), Some(1.0)));
        assert!(!is_decayed(None, None));
    }
}

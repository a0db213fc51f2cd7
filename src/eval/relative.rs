//! The paper's relative tables: each run's final checkpoint against the best decayed
//! schedule (or a chosen baseline run), per task, with the paired significance of the
//! difference on the same items.

use super::compare::{paired_test, PairedTest};
use crate::error::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// A run's last checkpoint and its headline value per task.
#[derive(Debug, Clone)]
pub struct RunFinal {
    pub run: String,
    pub label: String,
    pub fingerprint: String,
    pub decayed: bool,
    /// task -> (value, higher is better)
    pub values: BTreeMap<String, (f64, bool)>,
}

/// One cell: the delta from the baseline and its paired test.
#[derive(Debug, Clone, Serialize)]
pub struct RelativeCell {
    pub delta: f64,
    pub test: Option<PairedTest>,
}

/// Rows of runs, columns of tasks.
#[derive(Debug, Clone, Serialize)]
pub struct RelativeTable {
    pub tasks: Vec<String>,
    /// The baseline run of each task (the best decayed one unless one was chosen).
    pub baselines: Vec<Option<String>>,
    pub rows: Vec<(String, String, Vec<Option<RelativeCell>>)>,
}

/// Whether a schedule decays the LR (the paper's decayed baselines; a WSM merge counts).
pub fn is_decayed(schedule: Option<&str>, alpha: Option<f64>) -> bool {
    match schedule {
        Some("wso") | Some("constant") => false,
        Some(k) if k.starts_with("wsm") => true,
        Some("wsd") | Some("cosine") | Some("linear") => alpha.is_none_or(|a| a < 1.0),
        _ => alpha.is_some_and(|a| a < 1.0),
    }
}

/// Per-doc values `(doc_id, value)` of a task's headline metric for a checkpoint
/// fingerprint.
pub type ItemSource<'a> = &'a dyn Fn(&str, &str) -> Result<Vec<(usize, f64)>>;

/// Builds the table; `items(fingerprint, task)` gives the per-doc values of the task's
/// headline metric as `(doc_id, value)`. `None` when there is no baseline to compare to.
pub fn relative_table(
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

    #[test]
    fn decay_is_read_from_schedule_and_alpha() {
        assert!(!is_decayed(Some("wso"), Some(1.0)));
        assert!(is_decayed(Some("wsd"), Some(0.1)));
        assert!(is_decayed(Some("wsm"), Some(1.0)));
        assert!(!is_decayed(None, None));
    }
}

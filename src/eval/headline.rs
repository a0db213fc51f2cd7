//! A task's headline metric: the one number a table shows for it (`ckpt eval`'s table,
//! `ckpt report`'s), with groups such as MMLU as one size-weighted column, and the way
//! such numbers are printed (accuracies in points).
//!
//! The headline is the first metric of the task's `metric_list` (under its first
//! filter) that was stored; AlpacaEval-style judging (`alpaca_eval`, no spec) shows the
//! length-controlled win rate when every judged checkpoint has one, else the win rate;
//! a task whose spec is unknown shows its first stored metric.

use super::spec::TaskSpec;
use crate::store::MetricRow;
use serde::Serialize;
use std::collections::BTreeMap;

/// The judged task (`ckpt eval --tasks alpaca_eval`), whose metrics have no spec.
pub(crate) const JUDGED_TASK: &str = "alpaca_eval";
/// The judged task's preferred headline, and the one used when a checkpoint lacks it.
const JUDGED_HEADLINES: [&str; 2] = ["length_controlled_winrate", "win_rate"];

/// The order a spec lists its metrics and filters in.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct MetricOrder {
    pub(crate) metrics: Vec<String>,
    /// Filter names; empty: the metrics pass through no filter (`none`).
    pub(crate) filters: Vec<String>,
}

impl MetricOrder {
    /// The order of a spec.
    pub fn of_spec(spec: &TaskSpec) -> Self {
        Self {
            metrics: spec.metric_list.iter().map(|m| m.metric.clone()).collect(),
            filters: spec.filter_list.iter().map(|f| f.name.clone()).collect(),
        }
    }

    /// The order of a spec as the store keeps it (JSON); only the two lists are read,
    /// so specs written by other versions still give their order.
    pub(crate) fn of_spec_json(spec: &serde_json::Value) -> Self {
        let names = |list: &str, key: &str| -> Vec<String> {
            spec[list]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|m| m[key].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            metrics: names("metric_list", "metric"),
            filters: names("filter_list", "name"),
        }
    }

    /// `(metric, filter)` pairs in headline preference order.
    fn pairs(&self) -> Vec<(String, String)> {
        let filters = if self.filters.is_empty() {
            vec![super::scoring::NO_FILTER.to_string()]
        } else {
            self.filters.clone()
        };
        self.metrics
            .iter()
            .flat_map(|m| filters.iter().map(move |f| (m.clone(), f.clone())))
            .collect()
    }
}

/// A task's headline column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Headline {
    pub(crate) task: String,
    pub(crate) metric: String,
    pub(crate) filter: String,
    pub(crate) higher_is_better: bool,
}

impl Headline {
    /// Whether `row` holds this headline's value.
    pub(crate) fn matches(&self, row: &MetricRow) -> bool {
        row.task == self.task && row.metric == self.metric && row.filter == self.filter
    }

    /// `task metric` or `task metric (filter)`.
    pub fn label(&self) -> String {
        if self.filter == super::scoring::NO_FILTER {
            format!("{} {}", self.task, self.metric)
        } else {
            format!("{} {} ({})", self.task, self.metric, self.filter)
        }
    }
}

/// The headline of each task among `rows` (every checkpoint's metrics, group rows
/// included), in the order the tasks first appear; subtasks of a group that has rows
/// are left out (the group is their column). `orders`: task -> its spec's order;
/// `groups`: subtask -> group (a group takes the order of its subtasks).
pub(crate) fn headlines(
    rows: &[MetricRow],
    orders: &BTreeMap<String, MetricOrder>,
    groups: &BTreeMap<String, String>,
) -> Vec<Headline> {
    let mut tasks: Vec<&str> = Vec::new();
    for r in rows {
        if !tasks.contains(&r.task.as_str()) {
            tasks.push(&r.task);
        }
    }
    let grouped = |t: &str| groups.get(t).is_some_and(|g| tasks.contains(&g.as_str()));
    tasks
        .iter()
        .filter(|t| !grouped(t))
        .filter_map(|t| headline(t, rows, order_of(t, orders, groups)))
        .collect()
}

/// A task's order, or for a group the order of its first subtask that has one.
fn order_of<'a>(
    task: &str,
    orders: &'a BTreeMap<String, MetricOrder>,
    groups: &BTreeMap<String, String>,
) -> Option<&'a MetricOrder> {
    orders.get(task).or_else(|| {
        groups
            .iter()
            .filter(|(_, g)| *g == task)
            .find_map(|(sub, _)| orders.get(sub))
    })
}

fn headline(task: &str, rows: &[MetricRow], order: Option<&MetricOrder>) -> Option<Headline> {
    let of_task: Vec<&MetricRow> = rows.iter().filter(|r| r.task == task).collect();
    let make = |r: &MetricRow| Headline {
        task: task.to_string(),
        metric: r.metric.clone(),
        filter: r.filter.clone(),
        higher_is_better: r.higher_is_better,
    };
    if let Some(order) = order {
        for (metric, filter) in order.pairs() {
            if let Some(r) = of_task
                .iter()
                .find(|r| r.metric == metric && r.filter == filter)
            {
                return Some(make(r));
            }
        }
    }
    if task == JUDGED_TASK {
        if let Some(r) = judged_headline(&of_task) {
            return Some(make(r));
        }
    }
    of_task.first().map(|r| make(r))
}

/// The length-controlled win rate if every judged checkpoint has one, else the win
/// rate (a column never mixes the two).
fn judged_headline<'a>(rows: &[&'a MetricRow]) -> Option<&'a MetricRow> {
    let mut checkpoints: Vec<&str> = rows.iter().map(|r| r.fingerprint.as_str()).collect();
    checkpoints.sort_unstable();
    checkpoints.dedup();
    JUDGED_HEADLINES.iter().find_map(|metric| {
        let with: Vec<&&MetricRow> = rows.iter().filter(|r| r.metric == *metric).collect();
        let all = checkpoints
            .iter()
            .all(|fp| with.iter().any(|r| r.fingerprint == *fp));
        if all {
            with.first().map(|r| **r)
        } else {
            None
        }
    })
}

/// Group rows of one checkpoint's `rows`: lm-eval's size-weighted mean (with the pooled
/// standard error) of each group with at least two subtasks scored.
pub(crate) fn group_rows(rows: &[MetricRow], groups: &BTreeMap<String, String>) -> Vec<MetricRow> {
    let mut by_key: BTreeMap<(String, String, String), Vec<MetricRow>> = BTreeMap::new();
    for m in rows {
        if let Some(g) = groups.get(&m.task) {
            by_key
                .entry((g.clone(), m.metric.clone(), m.filter.clone()))
                .or_default()
                .push(m.clone());
        }
    }
    by_key
        .into_iter()
        .filter(|(_, v)| v.len() >= 2)
        .map(|((group, _, _), members)| group_row(&group, &members))
        .collect()
}

/// lm-eval's group score: the size-weighted mean, with the pooled standard error.
pub(crate) fn group_row(group: &str, members: &[MetricRow]) -> MetricRow {
    let sizes: Vec<usize> = members.iter().map(|m| m.n).collect();
    let values: Vec<f64> = members.iter().map(|m| m.value).collect();
    let stderr = members
        .iter()
        .map(|m| m.stderr)
        .collect::<Option<Vec<f64>>>()
        .map(|se| super::metrics::pooled_sample_stderr(&se, &sizes));
    MetricRow {
        task: group.to_string(),
        spec_hash: String::new(),
        value: super::metrics::aggregate_subtask_metrics(&values, &sizes, true),
        stderr,
        n: sizes.iter().sum(),
        ..members[0].clone()
    }
}

/// Metrics shown in points (x100): accuracies, exact match, F1, win rates.
pub(crate) fn is_percent(metric: &str) -> bool {
    metric.starts_with("acc")
        || matches!(metric, "exact_match" | "em" | "f1")
        || metric.ends_with("win_rate")
        || metric.ends_with("winrate")
}

/// A value as tables print it: points with one decimal (`61.2 ± 1.4`), else 4 decimals.
pub fn format_value(metric: &str, value: f64, stderr: Option<f64>) -> String {
    match (is_percent(metric), stderr) {
        (true, Some(se)) => format!("{:.1} ± {:.1}", 100.0 * value, 100.0 * se),
        (true, None) => format!("{:.1}", 100.0 * value),
        (false, Some(se)) => format!("{value:.4} ± {se:.4}"),
        (false, None) => format!("{value:.4}"),
    }
}

/// A stored metric as tables print it (points for accuracies, 4 decimals otherwise).
pub fn format_metric(m: &MetricRow) -> String {
    if is_percent(&m.metric) {
        format_value(&m.metric, m.value, m.stderr)
    } else {
        format_value(&m.metric, m.value, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fp: &str, task: &str, metric: &str, filter: &str, value: f64) -> MetricRow {
        MetricRow {
            fingerprint: fp.into(),
            task: task.into(),
            spec_hash: "h".into(),
            metric: metric.into(),
            filter: filter.into(),
            value,
            stderr: Some(0.01),
            n: 10,
            higher_is_better: true,
            num_fewshot: 0,
            regime: "lm-eval".into(),
            ckpt_version: "0".into(),
            created_at: "t".into(),
        }
    }

    #[test]
    fn the_specs_first_metric_and_filter_is_the_headline() {
        let rows = vec![
            row("a", "gsm8k", "exact_match", "flexible-extract", 0.2),
            row("a", "gsm8k", "exact_match", "strict-match", 0.1),
            row("a", "validation_loss", "bits_per_byte", "none", 1.0),
            row("a", "validation_loss", "loss", "none", 2.0),
            row("a", "other", "zeta", "none", 2.0),
        ];
        let orders = BTreeMap::from([
            (
                "gsm8k".to_string(),
                MetricOrder {
                    metrics: vec!["exact_match".into()],
                    filters: vec!["strict-match".into(), "flexible-extract".into()],
                },
            ),
            (
                "validation_loss".to_string(),
                MetricOrder {
                    metrics: vec!["loss".into(), "bits_per_byte".into()],
                    filters: vec![],
                },
            ),
        ]);
        let h = headlines(&rows, &orders, &BTreeMap::new());
        let got: Vec<(&str, &str)> = h
            .iter()
            .map(|h| (h.metric.as_str(), h.filter.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("exact_match", "strict-match"),
                ("loss", "none"),
                ("zeta", "none")
            ]
        );
    }

    #[test]
    fn judged_column_never_mixes_lc_and_raw_win_rates() {
        let mut rows = vec![
            row("a", JUDGED_TASK, "length_controlled_winrate", "none", 0.4),
            row("a", JUDGED_TASK, "win_rate", "none", 0.3),
            row("b", JUDGED_TASK, "win_rate", "none", 0.6),
        ];
        let (orders, groups) = (BTreeMap::new(), BTreeMap::new());
        assert_eq!(headlines(&rows, &orders, &groups)[0].metric, "win_rate");
        rows.push(row(
            "b",
            JUDGED_TASK,
            "length_controlled_winrate",
            "none",
            0.5,
        ));
        assert_eq!(
            headlines(&rows, &orders, &groups)[0].metric,
            "length_controlled_winrate"
        );
    }

    #[test]
    fn groups_are_one_size_weighted_column() {
        let groups = BTreeMap::from([
            ("mmlu_a".to_string(), "mmlu".to_string()),
            ("mmlu_b".to_string(), "mmlu".to_string()),
        ]);
        let mut rows = vec![
            row("a", "mmlu_a", "acc", "none", 0.5),
            MetricRow {
                n: 30,
                ..row("a", "mmlu_b", "acc", "none", 0.1)
            },
        ];
        let g = group_rows(&rows, &groups);
        assert_eq!(g.len(), 1);
        assert!((g[0].value - (0.5 * 10.0 + 0.1 * 30.0) / 40.0).abs() < 1e-12);
        assert_eq!(g[0].n, 40);
        rows.extend(g);
        let h = headlines(&rows, &BTreeMap::new(), &groups);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].task, "mmlu");
    }

    #[test]
    fn accuracies_print_in_points() {
        assert_eq!(format_value("acc", 0.6123, Some(0.014)), "61.2 ± 1.4");
        assert_eq!(format_value("win_rate", 0.5, None), "50.0");
        assert_eq!(format_value("loss", 2.5, None), "2.5000");
    }
}

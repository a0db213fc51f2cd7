//! The per-run tables: pre-training runs (and WSM merges) at their final checkpoint,
//! the SFT sweep with the pick marked, every scored checkpoint by step, and every
//! sharpness measurement.

use super::inputs::{Inputs, VALIDATION_TASK};
use super::sharpness::{by_run, of};
use super::source::Ckpt;
use super::table::{Cell, Style, Table};
use crate::eval::headline::{is_percent, Headline};
use crate::store::MetricRow;

/// The style a metric is shown in.
pub(crate) fn style_of(metric: &str) -> Style {
    if is_percent(metric) {
        Style::Percent
    } else {
        Style::Fixed
    }
}

/// A stored metric as a cell (its standard error shown with accuracies and losses).
pub(crate) fn metric_cell(m: Option<&MetricRow>) -> Cell {
    match m {
        Some(m) => Cell::number(m.value, m.stderr, style_of(&m.metric)),
        None => Cell::Empty,
    }
}

/// A headline's column name; the validation loss reads as such.
pub(crate) fn column_name(h: &Headline) -> String {
    if h.task == VALIDATION_TASK {
        format!("validation {}", h.metric)
    } else {
        h.label()
    }
}

/// Each pre-training run's final checkpoint: headline metrics, validation loss and
/// sharpness under each configuration; WSM merges below the runs.
pub(crate) fn pretraining(inp: &Inputs) -> Table {
    let mut columns = vec!["run".to_string(), "schedule".into(), "step".into()];
    columns.extend(inp.pre_columns.iter().map(column_name));
    columns.extend(
        inp.sharpness_configs
            .iter()
            .map(|c| format!("sharpness Tr(H) ({})", c.data)),
    );
    let mut t = Table::new(
        "pretraining",
        "Pre-training runs: final checkpoints",
        columns,
    );
    t.notes.push(
        "Each run's last scored checkpoint; WSM merges (ckpt merge) below the runs. \
         Accuracies in points ± standard error, losses in nats per token; sharpness is \
         Hutchinson's estimate of the Hessian trace ± its standard error."
            .into(),
    );
    for run in inp.pre_runs() {
        let c = run.final_ckpt(&inp.view);
        let mut row = vec![
            Cell::text(&run.name),
            Cell::text(&run.label),
            Cell::step(c.row.step),
        ];
        row.extend(inp.pre_columns.iter().map(|h| metric_cell(c.value(h))));
        row.extend(inp.sharpness_configs.iter().map(|cfg| {
            match of(&inp.view, &c.row.fingerprint, &cfg.key) {
                Some(r) => Cell::number(r.estimate, r.stderr, Style::Significant),
                None => Cell::NotMeasured,
            }
        }));
        t.rows.push(row);
    }
    t
}

/// The SFT LR sweep of each base: every SFT run, its judged score, its headline
/// metrics and the fallback score, the picked one marked.
pub(crate) fn sft_sweep(inp: &Inputs) -> Table {
    let cols = &inp.sft_columns;
    let judged = match &cols.judged {
        Some(h) => format!("judged: {}", h.label()),
        None => "judged".to_string(),
    };
    let mut columns = vec![
        "base".to_string(),
        "base step".into(),
        "SFT run".into(),
        "LR".into(),
        judged,
    ];
    columns.extend(cols.tasks.iter().map(column_name));
    columns.extend(["fallback score".to_string(), "picked".into()]);
    let mut t = Table::new("sft_sweep", "SFT learning-rate sweep", columns);
    t.notes.push(super::sft::PICK_RULE.into());
    for s in &inp.sweeps {
        for (i, c) in s.candidates.iter().enumerate() {
            let ckpt = inp.view.by_fingerprint(&c.fingerprint);
            let mut row = vec![
                Cell::text(&s.base.run),
                Cell::step(s.base.step),
                Cell::text(&c.run),
                c.lr.map(|lr| Cell::number(lr, None, Style::Scientific))
                    .unwrap_or(Cell::Empty),
                match c.judged {
                    Some(v) => Cell::number(v, c.judged_stderr, Style::Percent),
                    None => Cell::NotMeasured,
                },
            ];
            row.extend(
                cols.tasks
                    .iter()
                    .map(|h| metric_cell(ckpt.and_then(|k| k.value(h)))),
            );
            row.push(
                c.suite_mean
                    .map(|v| Cell::number(v, None, Style::Percent))
                    .unwrap_or(Cell::Empty),
            );
            row.push(if s.picked == Some(i) {
                Cell::text("✓")
            } else {
                Cell::Empty
            });
            t.rows.push(row);
        }
    }
    t
}

/// Every scored checkpoint, by run and step, with every headline metric.
pub(crate) fn by_step(inp: &Inputs) -> Table {
    let rows: Vec<MetricRow> = inp
        .view
        .checkpoints
        .iter()
        .flat_map(|c| c.metrics.iter().cloned())
        .collect();
    let headlines = crate::eval::headline::headlines(&rows, &inp.view.orders, &inp.view.groups);
    let mut columns = vec![
        "run".to_string(),
        "stage".into(),
        "step".into(),
        "schedule".into(),
    ];
    // Checkpoints from the Hub link to their revision (a column only when there are some).
    let from_hub = inp.view.checkpoints.iter().any(|c| hub_source(c).is_some());
    if from_hub {
        columns.push("revision".into());
    }
    columns.extend(headlines.iter().map(column_name));
    let mut t = Table::new("metrics_by_step", "Metrics at every step", columns);
    t.notes.push(
        "Every checkpoint with stored metrics (report.json also has every metric, not only \
         the headlines)."
            .into(),
    );
    for run in &inp.runs {
        for &i in &run.checkpoints {
            let c: &Ckpt = &inp.view.checkpoints[i];
            if c.metrics.is_empty() {
                continue;
            }
            let mut row = vec![
                Cell::text(&run.name),
                Cell::text(c.stage()),
                Cell::step(c.row.step),
                Cell::text(&run.label),
            ];
            if from_hub {
                row.push(revision_cell(c));
            }
            row.extend(headlines.iter().map(|h| metric_cell(c.value(h))));
            t.rows.push(row);
        }
    }
    t
}

/// The Hub revision a checkpoint was scored from, if it was.
fn hub_source(c: &Ckpt) -> Option<crate::hub::HubSource> {
    crate::hub::HubSource::parse(&c.row.path)?.ok()
}

/// A Hub revision as `org/name@rev`, linking to its page; empty for a local checkpoint.
fn revision_cell(c: &Ckpt) -> Cell {
    match hub_source(c) {
        Some(s) => Cell::link(
            format!("{}@{}", s.repo, s.revision_or_main()),
            s.web_url(&crate::hub::auth::endpoint()),
        ),
        None => Cell::Empty,
    }
}

/// Every sharpness measurement by configuration, run and step.
pub(crate) fn sharpness(inp: &Inputs) -> Table {
    let columns = ["run", "schedule", "step", "data", "sharpness Tr(H)"]
        .map(String::from)
        .to_vec();
    let mut t = Table::new("sharpness", "Sharpness at every measured step", columns);
    t.notes.push(
        "Hutchinson's estimate of the trace of the Hessian of the mean next-token loss \
         (ckpt sharpness) ± its standard error."
            .into(),
    );
    for cfg in &inp.sharpness_configs {
        for (run, steps) in by_run(&inp.view, &inp.runs, &cfg.key) {
            let label = inp.run(&run).map(|r| r.label.clone()).unwrap_or_default();
            for m in steps {
                t.rows.push(vec![
                    Cell::text(&run),
                    Cell::text(&label),
                    Cell::int(m.step),
                    Cell::text(&cfg.data),
                    Cell::number(m.estimate, m.stderr, Style::Significant),
                ]);
            }
        }
    }
    t
}

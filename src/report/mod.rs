//! `ckpt report`: the paper's tables, findings and plots from the results store
//! (DESIGN.md sections 6-8 and 11).
//!
//! ```text
//! store --source--> checkpoints, metrics, specs, sharpness --runs--> runs, merges
//!       --sft--> LR sweeps and picks --tables/relative/findings/figures--> Report
//!       --write--> report.md, report.html (self-contained), *.csv, report.json, *.png
//! ```
//!
//! ```no_run
//! use ckpt::report::{build, write, Format, ReportOptions};
//! use ckpt::store::Store;
//! let store = ckpt::report::open_store(std::path::Path::new("ckpt.sqlite"), ckpt::store::DEFAULT_LOCK_WAIT).unwrap();
//! let report = build(&store, &ReportOptions::default()).unwrap();
//! let files = write(&report, std::path::Path::new("report"), &Format::ALL).unwrap();
//! println!("{}", ckpt::report::markdown(&report, false));
//! ```
//!
//! Everything comes from the store; training-loss curves also from each run's
//! `metrics.jsonl` where the run directory still exists.

mod csv;
mod curves;
mod figures;
mod findings;
mod html;
mod inputs;
mod job;
mod markdown;
pub(crate) mod pooled;
mod relative;
mod runs;
mod sft;
mod sharpness;
mod source;
mod table;
mod tables;
mod write;

pub use figures::{Drawing, Figure};
pub(crate) use findings::Finding;
pub use job::{run, ReportJob, ReportOutcome};
pub use markdown::markdown;
pub(crate) use runs::{schedule_label, Run};
pub use sft::{Base, Criterion, SftCandidate, SftPick, SftSweep, PICK_RULE};
pub(crate) use sharpness::ConfigSummary;
pub use table::{Cell, Style, Table};
pub use write::{write, Format};

use crate::error::Result;
use crate::store::Store;
use inputs::Inputs;
use serde::Serialize;
use std::path::PathBuf;

/// What the report compares with and how the SFT LR is picked.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// The run relative tables compare against (by base run after SFT); default: the
    /// best decayed run per task.
    pub baseline: Option<String>,
    /// The judged task whose score picks the SFT LR.
    pub judge_task: String,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            baseline: None,
            judge_task: crate::eval::judge::run::TASK.to_string(),
        }
    }
}

/// A part of the report: prose, tables and figures under a title.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Section {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) text: Vec<String>,
    pub(crate) tables: Vec<Table>,
    pub(crate) figures: Vec<Figure>,
}

impl Section {
    fn new(id: &str, title: &str) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            text: Vec::new(),
            tables: Vec::new(),
            figures: Vec::new(),
        }
    }
}

/// One stored metric of one checkpoint (the long format of `report.json`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MetricPoint {
    pub(crate) run: String,
    pub(crate) stage: String,
    pub(crate) step: Option<u64>,
    pub(crate) fingerprint: String,
    pub(crate) task: String,
    pub(crate) metric: String,
    pub(crate) filter: String,
    pub(crate) value: f64,
    pub(crate) stderr: Option<f64>,
    pub(crate) n: usize,
}

/// The whole report: what every format renders.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub(crate) store: PathBuf,
    pub(crate) ckpt_version: String,
    pub findings: Vec<Finding>,
    pub runs: Vec<Run>,
    pub(crate) sft_sweeps: Vec<SftSweep>,
    pub sft_picks: Vec<SftPick>,
    pub(crate) sharpness_configs: Vec<ConfigSummary>,
    pub(crate) sections: Vec<Section>,
    /// Every stored metric of every checkpoint (group means included).
    pub(crate) metrics: Vec<MetricPoint>,
}

impl Report {
    /// Every table, in report order.
    pub fn tables(&self) -> impl Iterator<Item = &Table> {
        self.sections.iter().flat_map(|s| &s.tables)
    }

    /// Every figure, in report order.
    pub fn figures(&self) -> impl Iterator<Item = &Figure> {
        self.sections.iter().flat_map(|s| &s.figures)
    }
}

pub use crate::store::{open_store, open_stores};

/// The SFT LR picked for each pre-training base run ([`PICK_RULE`]), by base run name.
pub fn sft_picks(store: &Store, opts: &ReportOptions) -> Result<Vec<SftPick>> {
    Ok(Inputs::read(store, opts)?.picks)
}

/// Computes the report from the store.
pub fn build(store: &Store, opts: &ReportOptions) -> Result<Report> {
    let inp = Inputs::read(store, opts)?;
    let sections = vec![
        pretraining_section(&inp)?,
        sft_section(&inp)?,
        sharpness_section(&inp),
        steps_section(&inp),
    ];
    Ok(Report {
        store: store.path().to_path_buf(),
        ckpt_version: crate::VERSION.to_string(),
        findings: findings::findings(&inp)?,
        sft_sweeps: inp.sweeps.clone(),
        sft_picks: inp.picks.clone(),
        sharpness_configs: inp.sharpness_configs.clone(),
        metrics: metric_points(&inp),
        runs: inp.runs.clone(),
        sections,
    })
}

fn pretraining_section(inp: &Inputs) -> Result<Section> {
    let mut s = Section::new("pretraining", "Pre-training");
    if inp.pre_runs().next().is_none() {
        s.text.push("No pre-training run in the store.".into());
    } else {
        s.tables.push(tables::pretraining(inp));
    }
    match relative::pretraining(inp)? {
        Some(t) => s.tables.push(t),
        None => s.text.push(
            "Relative table: not measured (no decayed run, or no scored task, to compare with)."
                .into(),
        ),
    }
    s.figures.extend(figures::lr_schedules(inp));
    s.figures.extend(figures::training_loss(inp));
    s.figures.extend(figures::metrics_by_step(inp));
    Ok(s)
}

fn sft_section(inp: &Inputs) -> Result<Section> {
    let mut s = Section::new("sft", "Supervised fine-tuning");
    if inp.sweeps.is_empty() {
        s.text.push(
            "Not measured: no SFT run (stage sft, with its parent recorded) in the store.".into(),
        );
        return Ok(s);
    }
    for p in &inp.picks {
        let lr =
            p.lr.map(|lr| format!("LR {lr:e}"))
                .unwrap_or("LR unknown".into());
        s.text.push(format!(
            "{} ({}): picked {} ({lr}), {} = {}.",
            p.base_run,
            p.base_label,
            p.run,
            p.criterion.label(),
            table::show(p.score, Style::Percent)
        ));
    }
    s.tables.push(tables::sft_sweep(inp));
    match relative::after_sft(inp)? {
        Some(t) => s.tables.push(t),
        None => s.text.push(
            "After-SFT relative table: not measured (no decayed base with a picked SFT run to compare with)."
                .into(),
        ),
    }
    s.figures.extend(figures::sft_sweep(inp));
    Ok(s)
}

fn sharpness_section(inp: &Inputs) -> Section {
    let mut s = Section::new("sharpness", "Sharpness");
    let Some(cfg) = inp.primary_sharpness() else {
        s.text.push(
            "Not measured: the store has no sharpness (ckpt sharpness PATH --store FILE).".into(),
        );
        return s;
    };
    s.text.push(format!(
        "Findings and plots use the measurements on {} ({} in the store).",
        cfg.label(),
        cfg.measurements
    ));
    s.tables.push(tables::sharpness(inp));
    s.figures.extend(figures::sharpness(inp));
    s.figures.extend(figures::sharpness_blocks(inp));
    s.figures.extend(figures::spectrum(inp));
    match figures::sharpness_vs_sft(inp) {
        Some(f) => s.figures.push(f),
        None => s.text.push(
            "Sharpness against SFT score: not measured (no measured checkpoint has a scored fine-tune)."
                .into(),
        ),
    }
    s
}

fn steps_section(inp: &Inputs) -> Section {
    let mut s = Section::new("steps", "Every scored checkpoint");
    s.tables.push(tables::by_step(inp));
    s
}

fn metric_points(inp: &Inputs) -> Vec<MetricPoint> {
    let mut out = Vec::new();
    for run in &inp.runs {
        for &i in &run.checkpoints {
            let c = &inp.view.checkpoints[i];
            out.extend(c.metrics.iter().map(|m| MetricPoint {
                run: run.name.clone(),
                stage: c.stage().to_string(),
                step: c.row.step,
                fingerprint: c.row.fingerprint.clone(),
                task: m.task.clone(),
                metric: m.metric.clone(),
                filter: m.filter.clone(),
                value: m.value,
                stderr: m.stderr,
                n: m.n,
            }));
        }
    }
    out
}

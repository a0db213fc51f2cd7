//! The report's plots, as chart specifications drawn when the report is written:
//! LR schedules, training loss, each headline metric against step, sharpness against
//! step (the paper's Figure 3), the SFT LR sweep, and sharpness against the SFT score
//! with Pearson's r (Figure 4).

use super::curves::curve;
use super::inputs::Inputs;
use super::runs::Run;
use super::sft::Criterion;
use super::source::Ckpt;
use super::tables::column_name;
use crate::eval::compare::pearson;
use crate::eval::headline::is_percent;
use crate::plot::{Legend, LineChart, Series};
use crate::release::lr_curve::spec_from_info;
use crate::sharpness::figure::sharpness_chart;
use crate::sharpness::sft::{SftCorrelation, SftPoint};
use crate::sharpness::SharpnessResult;
use serde::Serialize;
use std::collections::BTreeSet;

/// What a figure draws.
#[derive(Debug, Clone)]
pub enum Drawing {
    Chart(LineChart),
    /// Per-layer traces, one panel per run.
    HeatMaps(Vec<crate::plot::HeatMap>),
    /// Figure 4, drawn by [`crate::sharpness::sft::plot`].
    SftScatter(SftCorrelation),
}

/// A plot of the report: a PNG file in the output directory.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// File name (`lr_schedules.png`).
    pub file: String,
    pub caption: String,
    #[serde(skip)]
    pub drawing: Drawing,
}

impl Figure {
    fn chart(file: &str, caption: String, chart: LineChart) -> Option<Self> {
        (!chart.series.is_empty()).then(|| Self {
            file: file.into(),
            caption,
            drawing: Drawing::Chart(chart),
        })
    }
}

/// Steps at which an LR curve is evaluated: 1001 evenly spaced, plus each kink.
fn curve_steps(end: u64, breakpoints: Vec<u64>) -> BTreeSet<u64> {
    let mut steps: BTreeSet<u64> = (0..=1000u64).map(|i| end * i / 1000).collect();
    for b in breakpoints {
        steps.extend([b.saturating_sub(1), b, (b + 1).min(end)]);
    }
    steps
}

/// The LR schedule of each pre-training run: its schedule's formula where `ckpt.json`
/// describes it completely, else the LR its log recorded.
pub(crate) fn lr_schedules(inp: &Inputs) -> Option<Figure> {
    let mut chart = LineChart::new("Learning-rate schedules", "step", "learning rate");
    chart.legend = Legend::UpperRight;
    for run in inp.pre_runs().filter(|r| !r.is_merge()) {
        let points = match run.schedule.as_ref().and_then(spec_from_info) {
            Some(spec) => curve_steps(spec.end_step(), spec.breakpoints())
                .into_iter()
                .map(|s| (s as f64, spec.lr(s)))
                .collect(),
            None => match curve(&inp.view, run, "lr") {
                Some(c) => c.points,
                None => continue,
            },
        };
        chart.series.push(Series::new(legend(run), points));
    }
    Figure::chart(
        "lr_schedules.png",
        "Learning-rate schedules of the pre-training runs".into(),
        chart,
    )
}

/// Training loss against step, pre- and mid-training runs.
pub(crate) fn training_loss(inp: &Inputs) -> Option<Figure> {
    let mut chart = LineChart::new("Training loss", "step", "training loss");
    chart.legend = Legend::UpperRight;
    let mut averaged = 1;
    let (mut logged, mut sidecars) = (Vec::new(), Vec::new());
    for run in inp
        .runs
        .iter()
        .filter(|r| r.stage != "sft" && !r.is_merge())
    {
        let Some(c) = curve(&inp.view, run, "loss") else {
            continue;
        };
        averaged = averaged.max(c.bucket);
        let series = Series::new(legend(run), c.points);
        if c.from_log {
            logged.push(run.name.as_str());
            chart.series.push(series);
        } else {
            sidecars.push(run.name.as_str());
            chart.series.push(series.with_markers());
        }
    }
    let mut sources = Vec::new();
    if !logged.is_empty() {
        sources.push(format!(
            "every step from metrics.jsonl: {}",
            logged.join(", ")
        ));
    }
    if !sidecars.is_empty() {
        sources.push(format!(
            "each checkpoint's ckpt.json (no run log found): {}",
            sidecars.join(", ")
        ));
    }
    let mut caption = format!("Training loss ({})", sources.join("; "));
    if averaged > 1 {
        caption.push_str(&format!("; each point the mean of up to {averaged} steps"));
    }
    Figure::chart("training_loss.png", caption, chart)
}

/// One chart per pre-training headline: the metric at every scored step of each run;
/// merges as single points.
pub(crate) fn metrics_by_step(inp: &Inputs) -> Vec<Figure> {
    let mut out = Vec::new();
    for (i, h) in inp.pre_columns.iter().enumerate() {
        let scale = if is_percent(&h.metric) { 100.0 } else { 1.0 };
        let name = column_name(h);
        let unit = if scale == 100.0 { " (points)" } else { "" };
        let mut chart = LineChart::new(
            &format!("{name} against step"),
            "step",
            &format!("{name}{unit}"),
        );
        chart.legend = if h.higher_is_better {
            Legend::LowerRight
        } else {
            Legend::UpperRight
        };
        for run in inp.pre_runs() {
            let origin = branch_origin(inp, run);
            let points: Vec<(f64, f64)> = origin
                .into_iter()
                .chain(run.checkpoints.iter().map(|&k| &inp.view.checkpoints[k]))
                .filter_map(|c| Some((c.row.step? as f64, scale * c.value(h)?.value)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let label = legend(run);
            chart.series.push(if run.is_merge() {
                Series::scatter(label, points)
            } else {
                Series::new(label, points).with_markers()
            });
        }
        let file = format!("metric_{:02}_{}.png", i + 1, file_stem(&h.task));
        out.extend(Figure::chart(
            &file,
            format!("{name} at every scored step"),
            chart,
        ));
    }
    out
}

/// The checkpoint a branched run (a WSD decay) started from, so that its curve leaves
/// its parent's at the branch step as in the paper's figures.
fn branch_origin<'a>(inp: &'a Inputs, run: &Run) -> Option<&'a Ckpt> {
    let first = &inp.view.checkpoints[*run.checkpoints.first()?];
    let parent = first.meta.as_ref()?.parent.as_ref()?;
    let fingerprint = parent.fingerprint.as_deref()?;
    inp.view
        .checkpoints
        .iter()
        .find(|c| c.row.fingerprint == fingerprint && c.stage() == "pre")
}

/// The parent's measurement at the branch step, drawn as the first point of each
/// branched run (the chart groups results by the checkpoint's directory).
fn branch_origins_sharpness(inp: &Inputs, results: &[SharpnessResult]) -> Vec<SharpnessResult> {
    let mut out = Vec::new();
    for run in inp.pre_runs() {
        let (Some(origin), Some(first)) = (
            branch_origin(inp, run),
            results.iter().find(|r| {
                run.checkpoints
                    .iter()
                    .any(|&k| inp.view.checkpoints[k].row.fingerprint == r.fingerprint)
            }),
        ) else {
            continue;
        };
        let Some(at_branch) = results
            .iter()
            .find(|r| r.fingerprint == origin.row.fingerprint)
        else {
            continue;
        };
        let mut point = at_branch.clone();
        point.checkpoint = first.checkpoint.with_file_name("branch-origin");
        point.schedule = first.schedule.clone();
        out.push(point);
    }
    out
}

/// A task name as a file name part.
fn file_stem(task: &str) -> String {
    task.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Sharpness against step (the paper's Figure 3): one figure per measurement set, the
/// findings' configuration first.
pub(crate) fn sharpness(inp: &Inputs) -> Vec<Figure> {
    let configs = inp.sharpness_per_set();
    configs
        .iter()
        .enumerate()
        .filter_map(|(i, cfg)| {
            let chart = sharpness_chart(&pre_training(inp, &cfg.key));
            let file = match (i, &cfg.set) {
                (0, _) | (_, None) => "sharpness.png".to_string(),
                (_, Some(set)) => format!("sharpness-{}.png", file_stem(set)),
            };
            Figure::chart(
                &file,
                format!(
                    "Sharpness Tr(H) against step, on {} (the paper's Figure 3)",
                    cfg.label()
                ),
                chart,
            )
        })
        .collect()
}

/// The pre-training measurements under `config_key`, with each branch's origin.
fn pre_training(inp: &Inputs, config_key: &str) -> Vec<SharpnessResult> {
    let mut results: Vec<_> = inp
        .view
        .sharpness
        .iter()
        .filter(|r| r.config_key == config_key && r.stage.as_deref().unwrap_or("pre") == "pre")
        .cloned()
        .collect();
    results.extend(branch_origins_sharpness(inp, &results));
    results
}

/// Each run's per-layer trace against step, under the findings' configuration.
pub(crate) fn sharpness_blocks(inp: &Inputs) -> Option<Figure> {
    let cfg = inp.primary_sharpness()?;
    let maps = crate::sharpness::figure::block_heat_maps(&pre_training(inp, &cfg.key));
    (!maps.is_empty()).then(|| Figure {
        file: "sharpness_blocks.png".into(),
        caption: format!(
            "Each layer's Hessian trace (attention + MLP + norms) against step, on {}",
            cfg.label()
        ),
        drawing: Drawing::HeatMaps(maps),
    })
}

/// The Hessian's eigenvalue density (SLQ) of the checkpoints measured with one.
pub fn spectrum(inp: &Inputs) -> Option<Figure> {
    let measured: Vec<SharpnessResult> = inp
        .view
        .sharpness
        .iter()
        .filter(|r| r.density.is_some())
        .cloned()
        .collect();
    let chart = crate::sharpness::figure::density_chart(&measured)?;
    Figure::chart(
        "spectrum.png",
        "The Hessian's eigenvalue density (stochastic Lanczos quadrature) of the final checkpoints"
            .into(),
        chart,
    )
}

/// Each base's SFT sweep: the pick criterion against log10 of the LR.
pub(crate) fn sft_sweep(inp: &Inputs) -> Option<Figure> {
    let mut chart = LineChart::new(
        "SFT learning-rate sweep",
        "log10(peak LR)",
        "score (points)",
    );
    chart.legend = Legend::LowerLeft;
    let mut criteria = BTreeSet::new();
    for p in &inp.picks {
        let points: Vec<(f64, f64)> = p
            .candidates
            .iter()
            .filter_map(|c| {
                let score = match p.criterion {
                    Criterion::Judged { .. } => c.judged?,
                    Criterion::SuiteMean { .. } => c.suite_mean?,
                };
                Some((c.lr?.log10(), 100.0 * score))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        criteria.insert(p.criterion.label());
        chart
            .series
            .push(Series::new(format!("{} ({})", p.base_run, p.base_label), points).with_markers());
    }
    let criteria: Vec<String> = criteria.into_iter().collect();
    chart.y_label = format!("{} (points)", criteria.join(" / "));
    Figure::chart(
        "sft_lr_sweep.png",
        "The SFT LR sweep of each base model (the picked LR has the best score)".into(),
        chart,
    )
}

/// The data of Figure 4: every fine-tuned base checkpoint with a sharpness (findings'
/// configuration) and its sweep's picked score, with Pearson's r.
pub(crate) fn sft_correlation(inp: &Inputs) -> Option<SftCorrelation> {
    let cfg = inp.primary_sharpness()?;
    let mut points = Vec::new();
    let mut criteria = BTreeSet::new();
    for s in &inp.sweeps {
        let (Some(pick), Some(r)) = (
            s.pick(),
            super::sharpness::of(&inp.view, &s.base.fingerprint, &cfg.key),
        ) else {
            continue;
        };
        criteria.insert(pick.criterion.label());
        points.push(SftPoint {
            checkpoint: r.checkpoint.display().to_string(),
            run: s.base.run.clone(),
            sharpness: r.estimate,
            sft_score: 100.0 * pick.score,
        });
    }
    if points.is_empty() {
        return None;
    }
    let xs: Vec<f64> = points.iter().map(|p| p.sharpness).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.sft_score).collect();
    let corr = pearson(&xs, &ys);
    let criteria: Vec<String> = criteria.into_iter().collect();
    Some(SftCorrelation {
        task: criteria.join(" / "),
        metric: "(points)".into(),
        points,
        pearson_r: corr.map(|c| c.0),
        p_value: corr.map(|c| c.1),
    })
}

/// Figure 4 from [`sft_correlation`].
pub(crate) fn sharpness_vs_sft(inp: &Inputs) -> Option<Figure> {
    let corr = sft_correlation(inp)?;
    let r = match (corr.pearson_r, corr.p_value) {
        (Some(r), Some(p)) => format!("Pearson r = {r:.3}, p = {p:.3}, n = {}", corr.points.len()),
        _ => format!("n = {}: too few points for Pearson's r", corr.points.len()),
    };
    Some(Figure {
        file: "sharpness_vs_sft.png".into(),
        caption: format!(
            "Sharpness of each fine-tuned base checkpoint against its picked fine-tune's score ({r}; the paper's Figure 4)"
        ),
        drawing: Drawing::SftScatter(corr),
    })
}

/// A run in a legend: `name (label)`.
fn legend(run: &Run) -> String {
    format!("{} ({})", run.name, run.label)
}

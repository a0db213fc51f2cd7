//! The paper's Figure 4: sharpness of pre-training checkpoints against the score of
//! their fine-tunes, with Pearson's r and its p-value (the paper: r = -0.709 at 1B).
//!
//! Both come from the results store: sharpness from `ckpt sharpness --store`, SFT
//! scores from `ckpt eval` on the fine-tuned checkpoints, whose `ckpt.json` names the
//! pre-training checkpoint they started from (`parent.fingerprint`). A checkpoint
//! fine-tuned several times (an LR sweep) counts with its best score, as the paper picks
//! the best LR.

use crate::error::{Error, Result, StoreFault};
use crate::eval::compare::pearson;
use crate::plot::{line_chart, LineChart, Series};
use crate::store::Store;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One pre-training checkpoint: its sharpness and its best fine-tune's score.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SftPoint {
    pub(crate) checkpoint: String,
    pub(crate) run: String,
    pub(crate) sharpness: f64,
    pub(crate) sft_score: f64,
}

/// The points and their correlation.
#[derive(Debug, Clone, Serialize)]
pub struct SftCorrelation {
    pub(crate) task: String,
    pub(crate) metric: String,
    pub points: Vec<SftPoint>,
    pub pearson_r: Option<f64>,
    pub(crate) p_value: Option<f64>,
}

/// Pairs each measured checkpoint with its fine-tunes' best `task` `metric`.
pub fn sft_correlation(store: &Store, task: &str, metric: &str) -> Result<SftCorrelation> {
    let best = best_child_scores(store, task, metric)?;
    let mut points = Vec::new();
    for json in store.sharpness_results()? {
        let r: serde_json::Value = serde_json::from_str(&json).map_err(|e| {
            Error::store(
                store.path(),
                StoreFault::Query,
                format!("sharpness record: {e}"),
            )
        })?;
        if !r["probe_start"].is_null() {
            continue; // a shard's block of probes, not a measurement
        }
        let fp = r["fingerprint"].as_str().unwrap_or_default();
        let (Some(score), Some(sharpness)) = (best.get(fp), r["estimate"].as_f64()) else {
            continue;
        };
        let checkpoint = r["checkpoint"].as_str().unwrap_or_default().to_string();
        if points.iter().any(|p: &SftPoint| p.checkpoint == checkpoint) {
            continue;
        }
        let run = Path::new(&checkpoint)
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        points.push(SftPoint {
            checkpoint,
            run,
            sharpness,
            sft_score: *score,
        });
    }
    let xs: Vec<f64> = points.iter().map(|p| p.sharpness).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.sft_score).collect();
    let corr = pearson(&xs, &ys);
    Ok(SftCorrelation {
        task: task.into(),
        metric: metric.into(),
        points,
        pearson_r: corr.map(|c| c.0),
        p_value: corr.map(|c| c.1),
    })
}

/// Parent fingerprint -> best score of its fine-tunes on `task` `metric`.
fn best_child_scores(store: &Store, task: &str, metric: &str) -> Result<BTreeMap<String, f64>> {
    let mut best: BTreeMap<String, f64> = BTreeMap::new();
    for (fingerprint, meta) in store.checkpoint_metas()? {
        let Some(parent) = meta["parent"]["fingerprint"].as_str() else {
            continue;
        };
        for m in store.metrics(Some(&fingerprint))? {
            if m.task == task && m.metric == metric {
                let v = best.entry(parent.to_string()).or_insert(f64::NEG_INFINITY);
                *v = v.max(m.value);
            }
        }
    }
    Ok(best)
}

/// Draws the scatter, one colour per run, with r and p in the title.
pub(crate) fn plot(path: &Path, c: &SftCorrelation) -> Result<()> {
    let title = match (c.pearson_r, c.p_value) {
        (Some(r), Some(p)) => format!(
            "Sharpness vs SFT {} {} (Pearson r = {r:.3}, p = {p:.3})",
            c.task, c.metric
        ),
        _ => format!("Sharpness vs SFT {} {}", c.task, c.metric),
    };
    let mut chart = LineChart::new(
        &title,
        "sharpness Tr(H)",
        &format!("{} {} after SFT", c.task, c.metric),
    );
    let mut by_run: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for p in &c.points {
        by_run
            .entry(&p.run)
            .or_default()
            .push((p.sharpness, p.sft_score));
    }
    chart.series = by_run
        .into_iter()
        .map(|(run, pts)| Series::scatter(run, pts))
        .collect();
    if chart.series.is_empty() {
        return Err(Error::bad_value(
            "--sft-plot",
            format!(
                "{}: no checkpoint has both a sharpness and a fine-tune scored on {} {}",
                path.display(),
                c.task,
                c.metric
            ),
        ));
    }
    line_chart(path, &chart)
}

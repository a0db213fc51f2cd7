//! The paper's Figure 3: sharpness against training step, one line per run, with a
//! dashed line where a WSD schedule starts to decay.

use super::results::SharpnessResult;
use crate::checkpoint::ScheduleInfo;
use crate::plot::{LineChart, Series, VLine};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The chart of `results` (those without a step are left out): a run is the directory
/// holding its checkpoints, labelled with its name and schedule kind.
pub fn sharpness_chart(results: &[SharpnessResult]) -> LineChart {
    let mut runs: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut decays = BTreeSet::new();
    for r in results {
        let Some(step) = r.step else { continue };
        runs.entry(run_label(r))
            .or_default()
            .push((step as f64, r.estimate));
        if let Some(s) = r.schedule.as_ref().and_then(decay_start) {
            decays.insert(s);
        }
    }
    let mut chart = LineChart::new("Sharpness during training", "step", "Tr(H) (Hutchinson)");
    for (label, mut points) in runs {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        // A lone measurement (a merge) is a marker; a line of one point draws nothing.
        chart.series.push(if points.len() == 1 {
            Series::scatter(label, points)
        } else {
            Series::new(label, points)
        });
    }
    chart.vlines = decays
        .into_iter()
        .map(|s| VLine {
            x: s as f64,
            label: Some("WSD decay".into()),
        })
        .collect();
    chart.legend = crate::plot::Legend::UpperLeft;
    chart
}

/// `run (schedule)`: the checkpoint's parent directory name and its schedule kind.
fn run_label(r: &SharpnessResult) -> String {
    let run = r
        .checkpoint
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| r.checkpoint.display().to_string());
    match &r.schedule {
        Some(s) => format!("{run} ({})", s.kind),
        None => run,
    }
}

/// The step where a WSD schedule leaves its stable phase: the branch point of a
/// branched decay, else `W + ratio (T - W)`.
pub fn decay_start(s: &ScheduleInfo) -> Option<u64> {
    if s.kind != "wsd" {
        return None;
    }
    if let Some(step) = s.branched_from_step {
        return Some(step);
    }
    let (w, t, ratio) = (s.warmup.unwrap_or(0), s.total_steps?, s.stable_ratio?);
    Some(w + (ratio * t.saturating_sub(w) as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wsd_decay_starts_after_the_stable_phase() {
        let s = ScheduleInfo {
            kind: "wsd".into(),
            warmup: Some(10),
            total_steps: Some(110),
            stable_ratio: Some(0.8),
            ..Default::default()
        };
        assert_eq!(decay_start(&s), Some(90));
        let branched = ScheduleInfo {
            branched_from_step: Some(70),
            ..s.clone()
        };
        assert_eq!(decay_start(&branched), Some(70));
        let wso = ScheduleInfo {
            kind: "wso".into(),
            ..s
        };
        assert_eq!(decay_start(&wso), None);
    }
}

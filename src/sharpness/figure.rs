//! The paper's Figure 3: sharpness against training step, one line per run, with a
//! dashed line where a WSD schedule starts to decay.

use super::results::SharpnessResult;
use crate::checkpoint::ScheduleInfo;
use crate::plot::{HeatMap, LineChart, Series, VLine};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The chart of `results` (those without a step are left out): a run is the directory
/// holding its checkpoints, labelled with its name and schedule kind.
pub(crate) fn sharpness_chart(results: &[SharpnessResult]) -> LineChart {
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

/// Per-layer traces as heat maps, one per run: layers (rows) against steps (columns),
/// each cell the layer's trace (attention + MLP + norms) at that checkpoint. Results
/// without a step or without block traces are left out; runs left empty get no panel.
pub(crate) fn block_heat_maps(results: &[SharpnessResult]) -> Vec<HeatMap> {
    // run -> step -> layer -> trace
    let mut runs: BTreeMap<String, BTreeMap<u64, BTreeMap<usize, f64>>> = BTreeMap::new();
    for r in results.iter().filter(|r| !r.is_block()) {
        let Some(step) = r.step else { continue };
        let layers = runs
            .entry(run_label(r))
            .or_default()
            .entry(step)
            .or_default();
        for b in &r.blocks {
            if let Some(l) = b.layer() {
                *layers.entry(l).or_default() += b.estimate;
            }
        }
    }
    runs.into_iter()
        .filter_map(|(run, steps)| {
            let depth = steps.values().filter_map(|l| l.keys().max()).max()? + 1;
            let columns: Vec<String> = steps.keys().map(|s| s.to_string()).collect();
            let values = (0..depth)
                .map(|l| {
                    let at = |layers: &BTreeMap<usize, f64>| layers.get(&l).copied();
                    steps
                        .values()
                        .map(|ls| at(ls).unwrap_or(f64::NAN))
                        .collect()
                })
                .collect();
            Some(HeatMap {
                title: run,
                x_label: "step".into(),
                y_label: "layer".into(),
                columns,
                rows: (0..depth).map(|l| l.to_string()).collect(),
                values,
            })
        })
        .collect()
}

/// The eigenvalue densities of the results that have one, one curve each (`run @ step`),
/// on a common grid; `None` when no result has a density.
pub(crate) fn density_chart(results: &[SharpnessResult]) -> Option<LineChart> {
    let measured: Vec<&SharpnessResult> = results.iter().filter(|r| r.density.is_some()).collect();
    let values = measured
        .iter()
        .flat_map(|r| r.density.iter().flat_map(|d| d.runs.iter().flatten()))
        .map(|n| n.value)
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return None;
    }
    // PyHessian broadens each node by a Gaussian; 1% of the spectrum's span.
    let span = (hi - lo).max(hi.abs().max(1e-12) * 1e-3);
    let sigma = span / 100.0;
    let grid: Vec<f64> = (0..=400)
        .map(|i| lo - 5.0 * sigma + (span + 10.0 * sigma) * i as f64 / 400.0)
        .collect();
    // On a log scale, as PyHessian plots it: the bulk near zero would hide the outliers.
    let mut chart = LineChart::new(
        "Hessian eigenvalue density (SLQ)",
        "eigenvalue",
        "log10 density",
    );
    for r in measured {
        let density = r.density.as_ref()?.on_grid(&grid, sigma);
        let density = density.into_iter().map(|d| d.max(DENSITY_FLOOR).log10());
        let label = match r.step {
            Some(step) => format!("{} @ {step}", run_label(r)),
            None => run_label(r),
        };
        chart.series.push(Series::new(
            label,
            grid.iter().copied().zip(density).collect(),
        ));
    }
    chart.legend = crate::plot::Legend::UpperRight;
    Some(chart)
}

/// The smallest density drawn (log10: -8), far below the mass of one eigenvalue.
const DENSITY_FLOOR: f64 = 1e-8;

/// The step where a WSD schedule leaves its stable phase: the branch point of a
/// branched decay, else `W + ratio (T - W)`.
pub(crate) fn decay_start(s: &ScheduleInfo) -> Option<u64> {
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
    fn heat_maps_sum_each_layer_per_run_and_step() {
        use crate::sharpness::results::{tests::result_with_blocks, BlockTrace};
        let block = |name: &str, estimate: f64| BlockTrace {
            name: name.into(),
            estimate,
            stderr: None,
            samples: vec![estimate],
        };
        let at = |dir: &str, step: u64, l1: f64| {
            result_with_blocks(
                dir,
                step,
                vec![
                    block("embed", 9.0),
                    block("layers.0.attn", 1.0),
                    block("layers.0.mlp", 2.0),
                    block("layers.1.norms", l1),
                ],
            )
        };
        let results = [
            at("wso/step-20", 20, 5.0),
            at("wso/step-10", 10, 4.0),
            at("wsd/step-10", 10, 7.0),
        ];
        let maps = block_heat_maps(&results);
        assert_eq!(maps.len(), 2);
        let wso = maps.iter().find(|m| m.title == "wso").unwrap();
        assert_eq!(wso.columns, ["10", "20"]);
        assert_eq!(wso.rows, ["0", "1"]);
        assert_eq!(wso.values, [vec![3.0, 3.0], vec![4.0, 5.0]]);
    }

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

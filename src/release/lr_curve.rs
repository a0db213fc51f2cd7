//! The checkpoint's learning-rate schedule for the model card: the [`ScheduleSpec`]
//! (from the run's `run.toml`, else rebuilt from `ckpt.json`), its formula in words a
//! reader can check, and its curve as a PNG shipped in the repository.

use crate::checkpoint::ScheduleInfo;
use crate::error::Result;
use crate::plot::{line_chart, LineChart, Series, VLine};
use crate::schedule::{Kind, ScheduleSpec};
use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

/// The spec a `ckpt.json` schedule describes, when it describes one completely
/// (known kind, peak LR, `T`; cyclic schedules also need their cycle, which the
/// sidecar does not record).
pub(crate) fn spec_from_info(info: &ScheduleInfo) -> Option<ScheduleSpec> {
    let kind = Kind::from_str(&info.kind).ok()?;
    let mut spec = ScheduleSpec::new(
        kind,
        info.peak_lr?,
        info.warmup.unwrap_or(0),
        info.total_steps?,
    );
    if matches!(kind, Kind::Wsd | Kind::Cosine | Kind::Linear | Kind::Cyclic) {
        spec.alpha = info.alpha_pre;
    }
    if kind == Kind::Wsd {
        match (info.branched_from_step, info.total_steps) {
            (Some(b), Some(t)) if b < t => spec.decay_steps = Some(t - b),
            _ => spec.stable_ratio = info.stable_ratio,
        }
    }
    spec.mid_steps = info.mid_steps;
    spec.alpha_mid = info.alpha_mid.or(info.mid_steps.map(|_| 1.0));
    spec.validate().ok()?;
    Some(spec)
}

/// Short numbers for formulas: `3e-4`, `0.1`, `1000`.
fn num(x: f64) -> String {
    if x != 0.0 && (x.abs() < 1e-2 || x.abs() >= 1e5) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// The schedule as formulas, one line per phase, then the values of the symbols.
pub(crate) fn formula(spec: &ScheduleSpec) -> String {
    let pre = spec.pre_training();
    let (eta, w, t) = (pre.peak_lr, pre.warmup, pre.total_steps);
    let alpha = spec.alpha_pre();
    let mut lines = Vec::new();
    if w > 0 {
        lines.push("LR(t) = η · t / W                                  for t ≤ W".to_string());
    }
    let after = if w > 0 { "W < t ≤ T" } else { "t ≤ T" };
    let mut symbols = vec![
        format!("η = {}", num(eta)),
        format!("W = {w}"),
        format!("T = {t}"),
    ];
    match spec.kind {
        Kind::Wso | Kind::Constant => lines.push(format!(
            "LR(t) = η                                          for {after}"
        )),
        Kind::Wsd => {
            let s = pre.stable_end().unwrap_or(t as f64);
            lines.push("LR(t) = η                                          for W < t ≤ S".into());
            lines.push("LR(t) = η · ((1 − α) (T − t) / (T − S) + α)       for S < t ≤ T".into());
            symbols.push(format!("S = {}", num(s)));
            symbols.push(format!("α = {}", num(alpha)));
        }
        Kind::Cosine => {
            lines.push(format!(
                "LR(t) = η · (α + (1 − α) / 2 · (1 + cos(π (t − W) / (T − W))))   for {after}"
            ));
            symbols.push(format!("α = {}", num(alpha)));
        }
        Kind::Linear => {
            lines.push(format!(
                "LR(t) = η · ((1 − α) (T − t) / (T − W) + α)       for {after}"
            ));
            symbols.push(format!("α = {}", num(alpha)));
        }
        Kind::InvSqrt => lines.push(format!(
            "LR(t) = η · sqrt(W / t)                            for {after}"
        )),
        Kind::Cyclic => {
            lines.push(format!(
                "LR(t) = η · (α + (1 − α) / 2 · (1 + cos(π p(t))))  for {after}, p(t) = progress in the current cycle"
            ));
            symbols.push(format!("cycle = {}", spec.cycle.unwrap_or(1)));
            symbols.push(format!("mult = {}", num(spec.mult.unwrap_or(1.0))));
            symbols.push(format!("α = {}", num(alpha)));
        }
    }
    if let Some(mid) = spec.mid_training() {
        lines.push(
            "LR(t) = LR(T) · ((1 − α_mid) (T + M − t) / M + α_mid)   for T < t ≤ T + M".into(),
        );
        symbols.push(format!("M = {}", mid.steps));
        symbols.push(format!("α_mid = {}", num(mid.alpha_mid)));
    }
    lines.push(String::new());
    lines.push(symbols.join(", "));
    lines.join("\n")
}

/// Draws the schedule with a line at `step` (this checkpoint) into `path` (PNG/SVG).
pub(crate) fn plot(spec: &ScheduleSpec, step: u64, path: &Path) -> Result<()> {
    let end = spec.end_step().max(step);
    let mut steps: BTreeSet<u64> = (0..=1000u64).map(|i| end * i / 1000).collect();
    for b in spec.breakpoints() {
        steps.extend([b.saturating_sub(1), b, (b + 1).min(end)]);
    }
    let points = steps.into_iter().map(|s| (s as f64, spec.lr(s))).collect();
    // The step goes in the title: a label beside the line would be cut off at the
    // right edge, where released checkpoints usually are.
    let mut chart = LineChart::new(
        &format!(
            "Learning-rate schedule: {} (dashed: this checkpoint, step {step})",
            spec.label()
        ),
        "step",
        "learning rate",
    );
    chart.size = (1000, 500);
    chart.series.push(Series::new(spec.label(), points));
    chart.y_range = Some((0.0, spec.peak_lr * 1.08));
    if let (Some(_), Some(t)) = (spec.mid_steps, spec.total_steps) {
        chart.vlines.push(VLine {
            x: t as f64,
            label: Some("mid-training".into()),
        });
    }
    chart.vlines.push(VLine {
        x: step as f64,
        label: None,
    });
    line_chart(path, &chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(kind: &str) -> ScheduleInfo {
        ScheduleInfo {
            kind: kind.into(),
            peak_lr: Some(3e-3),
            warmup: Some(20),
            total_steps: Some(300),
            ..Default::default()
        }
    }

    #[test]
    fn sidecars_rebuild_the_trainers_spec() {
        let wso = spec_from_info(&ScheduleInfo {
            alpha_pre: Some(1.0),
            ..info("wso")
        })
        .unwrap();
        assert_eq!(wso.lr(10), 1.5e-3);
        assert_eq!(wso.lr(300), 3e-3);
        let f = formula(&wso);
        assert!(
            f.contains("LR(t) = η ") && f.contains("η = 3e-3, W = 20, T = 300"),
            "{f}"
        );

        let wsd = spec_from_info(&ScheduleInfo {
            alpha_pre: Some(0.1),
            stable_ratio: Some(0.75),
            ..info("wsd")
        })
        .unwrap();
        assert!((wsd.lr(300) - 3e-4).abs() < 1e-12);
        assert!(formula(&wsd).contains("S = 230"), "{}", formula(&wsd));

        let branched = spec_from_info(&ScheduleInfo {
            alpha_pre: Some(0.0),
            branched_from_step: Some(200),
            ..info("wsd")
        })
        .unwrap();
        assert_eq!(branched.decay_steps, Some(100));
        assert_eq!(branched.lr(200), 3e-3);

        let mid = spec_from_info(&ScheduleInfo {
            mid_steps: Some(100),
            alpha_mid: Some(0.0),
            ..info("wso")
        })
        .unwrap();
        assert!(mid.lr(400).abs() < 1e-15);
        assert!(formula(&mid).contains("α_mid = 0"));

        assert!(spec_from_info(&info("wsm-cosine")).is_none());
        assert!(
            spec_from_info(&info("cyclic")).is_none(),
            "no cycle length recorded"
        );
        assert!(spec_from_info(&ScheduleInfo {
            peak_lr: None,
            ..info("wso")
        })
        .is_none());
    }

    #[test]
    fn plots_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lr.png");
        let spec = spec_from_info(&info("wso")).unwrap();
        plot(&spec, 300, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}

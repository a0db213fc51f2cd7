//! Sharpness in the report: which measurement configuration the findings use, each
//! run's measured steps, and the decayed / WSO ratio with its standard error.

use super::runs::{run_of, Run};
use super::source::StoreView;
use crate::sharpness::SharpnessResult;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A measurement configuration found in the store.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConfigSummary {
    pub(crate) key: String,
    /// The texts' file name (`validation.jsonl`).
    pub(crate) data: String,
    /// The measurement set's name (`pt`, `sft`), when named.
    pub(crate) set: Option<String>,
    /// Whether its measurements carry a spectrum (top-k eigenvalues or a density):
    /// such runs measure a few checkpoints for their spectrum, not a curve.
    pub(crate) spectrum: bool,
    pub(crate) measurements: usize,
}

impl ConfigSummary {
    /// `validation.jsonl`, or `validation.jsonl (pt)` for a named set.
    pub fn label(&self) -> String {
        match &self.set {
            Some(set) => format!("{} ({set})", self.data),
            None => self.data.clone(),
        }
    }
}

/// The configurations, the most measured first (the findings use the first), then by
/// set name.
pub(crate) fn configs(view: &StoreView) -> Vec<ConfigSummary> {
    let mut by_key: BTreeMap<&str, ConfigSummary> = BTreeMap::new();
    for r in &view.sharpness {
        let data = Path::new(&r.config.data)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| r.config.data.clone());
        by_key
            .entry(&r.config_key)
            .or_insert(ConfigSummary {
                key: r.config_key.clone(),
                data,
                set: r.config.set.clone(),
                spectrum: r.config.top_k.is_some() || r.config.density.is_some(),
                measurements: 0,
            })
            .measurements += 1;
    }
    let mut out: Vec<ConfigSummary> = by_key.into_values().collect();
    out.sort_by(|a, b| {
        (a.spectrum, std::cmp::Reverse(a.measurements), &a.set).cmp(&(
            b.spectrum,
            std::cmp::Reverse(b.measurements),
            &b.set,
        ))
    });
    out
}

/// One measured checkpoint of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Measured {
    pub(crate) step: u64,
    pub(crate) estimate: f64,
    pub(crate) stderr: Option<f64>,
}

/// The run a measurement belongs to: the store's run of its fingerprint, else its
/// checkpoint's directory name.
pub(crate) fn run_name(view: &StoreView, runs: &[Run], r: &SharpnessResult) -> String {
    match run_of(runs, view, &r.fingerprint) {
        Some(run) => run.name.clone(),
        None => r
            .checkpoint
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// Run -> its measured steps under `config_key`, in step order (one per step).
pub(crate) fn by_run(
    view: &StoreView,
    runs: &[Run],
    config_key: &str,
) -> BTreeMap<String, Vec<Measured>> {
    let mut out: BTreeMap<String, BTreeMap<u64, Measured>> = BTreeMap::new();
    for r in view.sharpness.iter().filter(|r| r.config_key == config_key) {
        let Some(step) = r.step else { continue };
        out.entry(run_name(view, runs, r)).or_default().insert(
            step,
            Measured {
                step,
                estimate: r.estimate,
                stderr: r.stderr,
            },
        );
    }
    out.into_iter()
        .map(|(run, steps)| (run, steps.into_values().collect()))
        .collect()
}

/// The measurement of a checkpoint under `config_key`.
pub(crate) fn of<'a>(
    view: &'a StoreView,
    fingerprint: &str,
    config_key: &str,
) -> Option<&'a SharpnessResult> {
    view.sharpness
        .iter()
        .rev()
        .find(|r| r.fingerprint == fingerprint && r.config_key == config_key)
}

/// `a / b` with its standard error by the delta method (independent estimates):
/// `se = |a / b| * sqrt((se_a / a)^2 + (se_b / b)^2)`; `None` when either has none.
pub(crate) fn ratio(a: Measured, b: Measured) -> (f64, Option<f64>) {
    let r = a.estimate / b.estimate;
    let se = match (a.stderr, b.stderr) {
        (Some(sa), Some(sb)) => {
            Some(r.abs() * ((sa / a.estimate).powi(2) + (sb / b.estimate).powi(2)).sqrt())
        }
        _ => None,
    };
    (r, se)
}

/// The last step both runs were measured at, with both measurements.
pub(crate) fn last_common(a: &[Measured], b: &[Measured]) -> Option<(Measured, Measured)> {
    a.iter()
        .rev()
        .find_map(|x| b.iter().find(|y| y.step == x.step).map(|y| (*x, *y)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(step: u64, estimate: f64, stderr: f64) -> Measured {
        Measured {
            step,
            estimate,
            stderr: Some(stderr),
        }
    }

    #[test]
    fn ratio_error_is_the_delta_method() {
        let (r, se) = ratio(m(1, 6.0, 0.6), m(1, 3.0, 0.6));
        assert_eq!(r, 2.0);
        let want = 2.0 * (0.1f64.powi(2) + 0.2f64.powi(2)).sqrt();
        assert!((se.unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn last_common_step_is_shared_by_both() {
        let a = [m(100, 1.0, 0.1), m(200, 2.0, 0.1), m(300, 3.0, 0.1)];
        let b = [m(100, 1.0, 0.1), m(200, 1.5, 0.1)];
        let (x, y) = last_common(&a, &b).unwrap();
        assert_eq!((x.step, y.step, x.estimate), (200, 200, 2.0));
        assert!(last_common(&a, &[m(5, 1.0, 0.1)]).is_none());
    }
}

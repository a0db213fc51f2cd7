//! Hutchinson's trace estimator: `Tr(H) = E[z^T H z]` for Rademacher `z`, estimated by
//! the mean over probes, with its standard error and the running mean after each
//! probe (how a user sees it converge).
//!
//! ```no_run
//! # use ckpt::sharpness::hutchinson::{hutchinson_trace, TraceOptions};
//! # fn run(h: &ckpt::sharpness::hvp::Hessian<dyn ckpt::sharpness::hvp::Objective>,
//! #        shapes: &[Vec<usize>]) -> ckpt::Result<()> {
//! let opts = TraceOptions { probes: 50, seed: 0, rel_tol: None, min_probes: 10 };
//! let est = hutchinson_trace(h, shapes, &opts, &[], &mut |_, _| Ok(()))?;
//! println!("Tr(H) = {} +- {}", est.mean(), est.stderr());
//! # Ok(()) }
//! ```

use super::hvp::{Hessian, Objective};
use super::vector::rademacher;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// How many probes, drawn from which seed, and when to stop early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceOptions {
    /// Probes to draw at most.
    pub probes: usize,
    /// Probe `i` is `rademacher(seed, i)`.
    pub seed: u64,
    /// Stop once `stderr / |mean|` falls below this (after `min_probes`).
    pub rel_tol: Option<f64>,
    /// Probes drawn before the tolerance is looked at.
    pub min_probes: usize,
}

/// The samples `z_i^T H z_i` drawn so far and what they say about the trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceEstimate {
    pub samples: Vec<f64>,
}

impl TraceEstimate {
    /// Number of probes.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True before the first probe.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The estimate: the mean of the samples (NaN without any).
    pub fn mean(&self) -> f64 {
        self.samples.iter().sum::<f64>() / self.samples.len() as f64
    }

    /// The standard error of the mean: sample standard deviation over `sqrt(n)`
    /// (NaN below two samples).
    pub fn stderr(&self) -> f64 {
        let n = self.samples.len() as f64;
        if n < 2.0 {
            return f64::NAN;
        }
        let m = self.mean();
        let var = self.samples.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
        (var / n).sqrt()
    }

    /// The mean after each probe.
    pub fn running_means(&self) -> Vec<f64> {
        let mut sum = 0.0;
        self.samples
            .iter()
            .enumerate()
            .map(|(i, x)| {
                sum += x;
                sum / (i + 1) as f64
            })
            .collect()
    }

    /// Whether the relative standard error is below `rel_tol` after `min_probes`.
    pub fn converged(&self, opts: &TraceOptions) -> bool {
        match opts.rel_tol {
            Some(tol) if self.len() >= opts.min_probes.max(2) => {
                self.stderr() <= tol * self.mean().abs()
            }
            _ => false,
        }
    }
}

/// Draws probes `done.len()..opts.probes` (the first ones were drawn by an interrupted
/// run and are given back in `done`) and returns all the samples. `on_probe` sees each
/// new probe's index and the estimate so far, after it is added (to save progress).
pub fn hutchinson_trace<O: Objective + ?Sized>(
    hessian: &Hessian<O>,
    shapes: &[Vec<usize>],
    opts: &TraceOptions,
    done: &[f64],
    on_probe: &mut dyn FnMut(usize, &TraceEstimate) -> Result<()>,
) -> Result<TraceEstimate> {
    let theta = hessian.theta();
    let (dtype, device) = match theta.first() {
        Some(t) => (t.dtype(), t.device().clone()),
        None => return Ok(TraceEstimate::default()),
    };
    let mut est = TraceEstimate {
        samples: done.iter().copied().take(opts.probes).collect(),
    };
    while est.len() < opts.probes && !est.converged(opts) {
        let i = est.len();
        let z = rademacher(shapes, opts.seed, i as u64, dtype, &device)?;
        est.samples.push(hessian.quadratic_form(&z)?);
        on_probe(i, &est)?;
    }
    Ok(est)
}

/// `z^T H z` of probes `range` alone: one shard's block of a checkpoint's probes, equal
/// to the same probes of [`hutchinson_trace`] (probe `i` is `rademacher(seed, i)`
/// wherever it runs).
pub fn hutchinson_block<O: Objective + ?Sized>(
    hessian: &Hessian<O>,
    shapes: &[Vec<usize>],
    seed: u64,
    range: std::ops::Range<usize>,
    on_probe: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Vec<f64>> {
    let Some(first) = hessian.theta().first() else {
        return Ok(vec![]);
    };
    let (dtype, device) = (first.dtype(), first.device().clone());
    let mut samples = Vec::with_capacity(range.len());
    for i in range {
        let z = rademacher(shapes, seed, i as u64, dtype, &device)?;
        samples.push(hessian.quadratic_form(&z)?);
        on_probe(i)?;
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_stderr_and_running_means() {
        let est = TraceEstimate {
            samples: vec![1.0, 3.0, 2.0, 6.0],
        };
        assert_eq!(est.mean(), 3.0);
        // Sample variance (4 + 0 + 1 + 9) / 3 = 14/3; stderr sqrt(14/3 / 4).
        assert!((est.stderr() - (14.0f64 / 12.0).sqrt()).abs() < 1e-15);
        assert_eq!(est.running_means(), [1.0, 2.0, 2.0, 3.0]);
        assert!(TraceEstimate::default().mean().is_nan());
        let opts = |tol| TraceOptions {
            probes: 10,
            seed: 0,
            rel_tol: Some(tol),
            min_probes: 3,
        };
        assert!(est.converged(&opts(0.4)));
        assert!(!est.converged(&opts(0.3)));
    }
}

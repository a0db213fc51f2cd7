//! The Hessian's eigenvalue of largest magnitude by power iteration, as PyHessian's
//! `eigenvalues()` computes it: `v <- H v / |H v|` from a random start until the
//! Rayleigh quotient `v^T H v` changes by less than a relative tolerance.

use super::hvp::{Hessian, Objective};
use super::vector::{self, rademacher};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The stream of the starting vector: far from the probes' indices.
const START_PROBE: u64 = u64::MAX;

/// The result of power iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopEigen {
    /// The Rayleigh quotient at the last iterate.
    pub value: f64,
    /// Hessian-vector products taken.
    pub(crate) iterations: usize,
    /// Whether the relative change fell below the tolerance.
    pub converged: bool,
}

/// Power iteration from a Rademacher start drawn from `seed`, at most `max_iters`
/// products, stopping when the quotient changes by less than `rel_tol` relative.
pub fn top_eigenvalue<O: Objective + ?Sized>(
    hessian: &Hessian<O>,
    shapes: &[Vec<usize>],
    seed: u64,
    max_iters: usize,
    rel_tol: f64,
) -> Result<TopEigen> {
    let theta = hessian.theta();
    let first = theta
        .first()
        .ok_or_else(|| Error::Invalid("no parameters".into()))?;
    let start = rademacher(shapes, seed, START_PROBE, first.dtype(), first.device())?;
    let mut v = vector::scale(&start, 1.0 / vector::norm(&start)?)?;
    let mut value = f64::NAN;
    for i in 1..=max_iters {
        let hv = hessian.product(&v)?;
        let next = vector::dot(&v, &hv)?;
        let norm = vector::norm(&hv)?;
        if !(norm.is_finite() && norm > 0.0) {
            return Err(Error::Invalid(format!(
                "power iteration: |H v| is {norm} at iteration {i}"
            )));
        }
        v = vector::scale(&hv, 1.0 / norm)?;
        let change = (next - value).abs();
        value = next;
        if change <= rel_tol * value.abs() {
            return Ok(TopEigen {
                value,
                iterations: i,
                converged: true,
            });
        }
    }
    Ok(TopEigen {
        value,
        iterations: max_iters,
        converged: false,
    })
}

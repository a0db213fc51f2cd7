//! The Hessian's spectrum by Lanczos: its top eigenvalues, and the density of all of
//! them by stochastic Lanczos quadrature (SLQ, PyHessian's `density()`).
//!
//! ```text
//! Rademacher start v --lanczos (m products H q, full reorthogonalisation)--> T_m
//!   T_m = tridiag(beta, alpha, beta) --symmetric eigensolver--> Ritz values theta_i,
//!         eigenvectors s_i
//!   top-k:  the k largest theta_i, each with its residual |beta_m s_{m,i}|
//!   SLQ:    nodes (theta_i, s_{1,i}^2) = Gauss quadrature of v^T f(H) v / |v|^2,
//!           averaged over runs --> moments Tr(H^p)/d, a broadened density
//! ```
//!
//! Memory: Lanczos keeps all its `m` vectors (`m` copies of the parameters) so that each
//! new one is reorthogonalised against every previous one; `m` of 10 to 100 is typical.

use super::hvp::{Hessian, Objective};
use super::vector::{self, rademacher, ParamVector};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

/// The stream of the top-eigenvalue start: far from Hutchinson's probes and from power
/// iteration's start (`u64::MAX`).
const TOP_PROBE: u64 = u64::MAX - 1;

/// SLQ run `r` starts from stream `SLQ_PROBE - r`.
const SLQ_PROBE: u64 = u64::MAX - 2;

/// The most eigenvalues [`top_eigenvalues`] reports: Lanczos resolves the extremes of the
/// spectrum first, and inner Ritz values need many more steps (products) to converge.
const MAX_K: usize = 20;

/// Something that multiplies parameter vectors: the Hessian, or in tests a known matrix.
pub trait Operator {
    /// `A v`.
    fn apply(&self, v: &[Tensor]) -> Result<ParamVector>;
}

impl<O: Objective + ?Sized> Operator for Hessian<'_, O> {
    fn apply(&self, v: &[Tensor]) -> Result<ParamVector> {
        self.product(v)
    }
}

/// The Lanczos tridiagonal `T_m`: diagonal `alpha` (`m`), off-diagonal `beta` (`m - 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tridiagonal {
    pub(crate) alpha: Vec<f64>,
    pub(crate) beta: Vec<f64>,
}

/// A quadrature node: a Ritz value and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub(crate) value: f64,
    pub(crate) weight: f64,
}

/// `m` steps of Lanczos from `start` (normalised here), with full reorthogonalisation
/// against every previous Lanczos vector (Gram-Schmidt twice: "twice is enough"), so the
/// Ritz values have no spurious copies. Stops early, with fewer steps, when `beta` falls
/// below `1e-10` times the largest `|alpha|` or `beta` seen: the Krylov space is then an
/// invariant subspace and `T` is exact. `steps` is capped at the dimension.
///
/// Keeps all `m` vectors: `m` copies of the parameters.
pub fn lanczos(op: &dyn Operator, start: &[Tensor], steps: usize) -> Result<Tridiagonal> {
    Ok(lanczos_rest(op, start, steps)?.0)
}

/// [`lanczos`] and `beta_m`, the norm of what the last product left outside the Krylov
/// space (0 after an early stop): the scale of the Ritz residuals.
fn lanczos_rest(op: &dyn Operator, start: &[Tensor], steps: usize) -> Result<(Tridiagonal, f64)> {
    let steps = steps.min(vector::len(start));
    let first = vector::norm(start)?;
    if steps == 0 || !(first.is_finite() && first > 0.0) {
        let msg = format!(
            "Lanczos needs steps >= 1 and a start of finite nonzero norm, got {steps} and {first}"
        );
        return Err(Error::Invalid(msg));
    }
    let mut basis = vec![vector::scale(start, 1.0 / first)?];
    let mut t = Tridiagonal {
        alpha: Vec::with_capacity(steps),
        beta: Vec::with_capacity(steps),
    };
    let mut largest = 0f64;
    for j in 0..steps {
        let mut w = op.apply(&basis[j])?;
        let a = finite("alpha", vector::dot(&basis[j], &w)?, j)?;
        t.alpha.push(a);
        largest = largest.max(a.abs());
        w = vector::add_scaled(&w, -a, &basis[j])?;
        if j > 0 {
            w = vector::add_scaled(&w, -t.beta[j - 1], &basis[j - 1])?;
        }
        w = reorthogonalise(w, &basis)?;
        let b = finite("beta", vector::norm(&w)?, j)?;
        if b <= 1e-10 * largest {
            return Ok((t, 0.0));
        }
        if j + 1 == steps {
            return Ok((t, b));
        }
        largest = largest.max(b);
        t.beta.push(b);
        basis.push(vector::scale(&w, 1.0 / b)?);
    }
    unreachable!("the loop returns at its last step")
}

/// `w` minus its projection on the (orthonormal) `basis`, removed twice: one pass leaves
/// rounding-sized components that a second pass removes for good.
fn reorthogonalise(mut w: ParamVector, basis: &[ParamVector]) -> Result<ParamVector> {
    for _ in 0..2 {
        for q in basis {
            let c = vector::dot(q, &w)?;
            w = vector::add_scaled(&w, -c, q)?;
        }
    }
    Ok(w)
}

/// `x`, or an error naming it when it is NaN or infinite (an operator that blew up).
fn finite(what: &str, x: f64, step: usize) -> Result<f64> {
    if x.is_finite() {
        return Ok(x);
    }
    Err(Error::Invalid(format!(
        "Lanczos: {what} is {x} at step {}",
        step + 1
    )))
}

/// An eigenpair of `T` as Lanczos uses it: the value and the first and last components
/// of its unit eigenvector.
struct Eigen {
    value: f64,
    first: f64,
    last: f64,
}

impl Tridiagonal {
    /// Eigenvalues of `T` (ascending) and the Gauss quadrature weights: the squared first
    /// component of each eigenvector (they sum to 1, `T`'s eigenvectors being orthonormal).
    pub(crate) fn ritz(&self) -> Result<Vec<Node>> {
        let node = |e: Eigen| Node {
            value: e.value,
            weight: e.first * e.first,
        };
        Ok(self.eigen()?.into_iter().map(node).collect())
    }

    /// The eigenpairs, ascending, by the symmetric eigensolver (real values: PyHessian's
    /// general solver could return complex ones from rounding).
    fn eigen(&self) -> Result<Vec<Eigen>> {
        let m = self.alpha.len();
        if m == 0 || self.beta.len() + 1 != m {
            return Err(Error::Invalid(format!(
                "a tridiagonal matrix needs m >= 1 diagonal and m - 1 off-diagonal entries, \
                 got {} and {}",
                m,
                self.beta.len()
            )));
        }
        if self.alpha.iter().chain(&self.beta).any(|x| !x.is_finite()) {
            return Err(Error::Invalid(
                "the tridiagonal matrix is not finite".into(),
            ));
        }
        let t = DMatrix::from_fn(m, m, |i, j| match i.abs_diff(j) {
            0 => self.alpha[i],
            1 => self.beta[i.min(j)],
            _ => 0.0,
        });
        let eig = SymmetricEigen::try_new(t, f64::EPSILON, 1000 * m)
            .ok_or_else(|| Error::Invalid("the tridiagonal eigensolver did not converge".into()))?;
        let mut pairs: Vec<Eigen> = (0..m)
            .map(|i| Eigen {
                value: eig.eigenvalues[i],
                first: eig.eigenvectors[(0, i)],
                last: eig.eigenvectors[(m - 1, i)],
            })
            .collect();
        pairs.sort_by(|a, b| a.value.total_cmp(&b.value));
        Ok(pairs)
    }
}

/// The largest eigenvalues found by Lanczos, each with its residual bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopEigenvalues {
    /// Ritz values, descending.
    pub values: Vec<f64>,
    /// `|beta_m s_{m,i}|`: `|H y - theta y|` of each Ritz pair, so the distance to the
    /// nearest true eigenvalue is at most this (0 after an early, exact stop).
    pub(crate) residuals: Vec<f64>,
    /// Lanczos steps taken (Hessian-vector products).
    pub(crate) steps: usize,
}

/// The `k` largest (algebraic) eigenvalues by `steps` Lanczos steps from a Rademacher
/// start drawn from `seed`. `k` is 1 to 20 and `steps >= k`; `steps` is capped at the
/// dimension. Fewer than `k` values come back when Lanczos stops early (the start lies in
/// an invariant subspace with fewer distinct eigenvalues); a repeated eigenvalue is found
/// once, since a single start sees only one direction of its eigenspace.
pub fn top_eigenvalues(
    op: &dyn Operator,
    shapes: &[Vec<usize>],
    dtype: DType,
    device: &Device,
    seed: u64,
    k: usize,
    steps: usize,
) -> Result<TopEigenvalues> {
    if !(1..=MAX_K).contains(&k) || steps < k {
        return Err(Error::bad_value(
            "--top-k",
            format!(
            "top eigenvalues: k must be 1 to {MAX_K} and at most the {steps} Lanczos steps, got {k}"
        ),
        ));
    }
    let start = rademacher(shapes, seed, TOP_PROBE, dtype, device)?;
    let (t, rest) = lanczos_rest(op, &start, steps)?;
    let top: Vec<Eigen> = t.eigen()?.into_iter().rev().take(k).collect();
    Ok(TopEigenvalues {
        values: top.iter().map(|e| e.value).collect(),
        residuals: top.iter().map(|e| (rest * e.last).abs()).collect(),
        steps: t.alpha.len(),
    })
}

/// The spectral density by stochastic Lanczos quadrature: one list of nodes per run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectralDensity {
    /// Each run's quadrature nodes, ascending by value; weights sum to 1.
    pub(crate) runs: Vec<Vec<Node>>,
    /// The number of parameters `d`.
    pub(crate) dimension: usize,
}

impl SpectralDensity {
    /// The estimate of `Tr(H^p) / d`: the mean over runs of `sum_i w_i theta_i^p`, each
    /// exact for its start `v` (`v^T H^p v / |v|^2`) while `p <= 2m - 1`.
    pub fn moment(&self, p: u32) -> f64 {
        let samples = self.moment_samples(p);
        samples.iter().sum::<f64>() / samples.len() as f64
    }

    /// The standard error of [`Self::moment`] over runs (NaN below 2 runs).
    pub fn moment_stderr(&self, p: u32) -> f64 {
        let samples = self.moment_samples(p);
        let n = samples.len() as f64;
        if n < 2.0 {
            return f64::NAN;
        }
        let mean = samples.iter().sum::<f64>() / n;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (var / n).sqrt()
    }

    fn moment_samples(&self, p: u32) -> Vec<f64> {
        let power = |x: f64| x.powi(p as i32);
        self.runs
            .iter()
            .map(|run| run.iter().map(|n| n.weight * power(n.value)).sum())
            .collect()
    }

    /// The density at the points of `grid`: each node a Gaussian of width `sigma`
    /// (PyHessian's broadening: a few tens of nodes cannot draw a curve alone), averaged
    /// over runs and scaled to integrate to 1 over the grid (trapezoid rule), so that mass
    /// cut off at the grid's ends does not lower the curve. NaN unless `sigma` is
    /// positive and finite and there is a run.
    pub(crate) fn on_grid(&self, grid: &[f64], sigma: f64) -> Vec<f64> {
        if !(sigma.is_finite() && sigma > 0.0) || self.runs.is_empty() {
            return vec![f64::NAN; grid.len()];
        }
        let norm = 1.0 / (sigma * (2.0 * std::f64::consts::PI).sqrt() * self.runs.len() as f64);
        let mut density: Vec<f64> = grid
            .iter()
            .map(|&x| {
                let gauss = |n: &Node| n.weight * (-0.5 * ((x - n.value) / sigma).powi(2)).exp();
                self.runs.iter().flatten().map(gauss).sum::<f64>() * norm
            })
            .collect();
        let mass = trapezoid(grid, &density);
        if mass > 0.0 {
            density.iter_mut().for_each(|y| *y /= mass);
        }
        density
    }
}

/// `int y dx` over `x` by the trapezoid rule.
fn trapezoid(x: &[f64], y: &[f64]) -> f64 {
    (1..x.len())
        .map(|i| 0.5 * (x[i] - x[i - 1]) * (y[i] + y[i - 1]))
        .sum()
}

/// `runs` independent Lanczos runs of `steps` steps (capped at the dimension) from
/// Rademacher starts: run `r` uses probe stream `u64::MAX - 2 - r` of `seed`, so a run is
/// the same whatever ran before it. Resumable: `done` are runs already finished (an
/// interrupted measurement's; beyond `runs` they are dropped), and `on_run` sees the
/// density after each new run (to save it).
#[allow(clippy::too_many_arguments)]
pub fn slq_density(
    op: &dyn Operator,
    shapes: &[Vec<usize>],
    dtype: DType,
    device: &Device,
    seed: u64,
    runs: usize,
    steps: usize,
    done: &[Vec<Node>],
    on_run: &mut dyn FnMut(&SpectralDensity) -> Result<()>,
) -> Result<SpectralDensity> {
    if runs == 0 || steps == 0 {
        return Err(Error::bad_value(
            "--slq-runs",
            format!("SLQ needs at least one run of at least one step, got {runs} runs of {steps}"),
        ));
    }
    let mut density = SpectralDensity {
        runs: done.iter().take(runs).cloned().collect(),
        dimension: shapes.iter().map(|s| s.iter().product::<usize>()).sum(),
    };
    for r in density.runs.len()..runs {
        let start = rademacher(shapes, seed, SLQ_PROBE - r as u64, dtype, device)?;
        density.runs.push(lanczos(op, &start, steps)?.ritz()?);
        on_run(&density)?;
    }
    Ok(density)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DVector;

    const D: usize = 50;
    type OnRun<'a> = &'a mut dyn FnMut(&SpectralDensity) -> Result<()>;

    fn shapes() -> Vec<Vec<usize>> {
        vec![vec![30], vec![4, 5]]
    }

    /// A known symmetric matrix acting on parameter vectors of [`shapes`].
    struct Dense(DMatrix<f64>);

    impl Operator for Dense {
        fn apply(&self, v: &[Tensor]) -> Result<ParamVector> {
            let (y, mut end) = (&self.0 * flat(v), 0);
            let part = |s: &Vec<usize>| {
                end += s.iter().product::<usize>();
                let x = &y.as_slice()[end - s.iter().product::<usize>()..end];
                Ok(Tensor::from_slice(x, s.as_slice(), &Device::Cpu)?)
            };
            shapes().iter().map(part).collect()
        }
    }

    fn flat(v: &[Tensor]) -> DVector<f64> {
        let entries = v
            .iter()
            .flat_map(|t| t.flatten_all().unwrap().to_vec1().unwrap());
        DVector::from_vec(entries.collect())
    }

    /// 45 distinct values in [-1, 10] and 5 well separated top ones, shuffled.
    fn spectrum() -> Vec<f64> {
        let mut v: Vec<f64> = (0..45).map(|i| -1.0 + 0.25 * i as f64).collect();
        v.extend([20.0, 25.0, 31.0, 38.0, 50.0]);
        (0..D).map(|i| v[(7 * i) % D]).collect()
    }

    /// -2, 1 and 4, 17, 17 and 16 times.
    fn three_values() -> Vec<f64> {
        (0..D).map(|i| [-2.0, 1.0, 4.0][i % 3]).collect()
    }

    /// `diag(values)`, or `Q diag(values) Q^T` for a fixed orthogonal `Q` when `rotate`
    /// (then Rademacher quadratic forms vary from start to start).
    fn matrix(values: &[f64], rotate: bool) -> Dense {
        let d = DMatrix::from_diagonal(&DVector::from_column_slice(values));
        if !rotate {
            return Dense(d);
        }
        let q = DMatrix::from_fn(D, D, |i, j| ((3 * i + 5 * j * j + 1) as f64).sin());
        let q = q.qr().q();
        let a = &q * d * q.transpose();
        Dense((&a + a.transpose()) * 0.5)
    }

    fn top(op: &Dense, k: usize, steps: usize) -> Result<TopEigenvalues> {
        top_eigenvalues(op, &shapes(), DType::F64, &Device::Cpu, 3, k, steps)
    }

    fn slq_with(op: &Dense, n: usize, done: &[Vec<Node>], f: OnRun) -> Result<SpectralDensity> {
        slq_density(op, &shapes(), DType::F64, &Device::Cpu, 11, n, 10, done, f)
    }

    fn slq(op: &Dense, runs: usize) -> Result<SpectralDensity> {
        slq_with(op, runs, &[], &mut |_| Ok(()))
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    #[test]
    fn top_eigenvalues_of_a_known_diagonal() {
        let op = matrix(&spectrum(), false);
        let want = [50.0, 38.0, 31.0, 25.0, 20.0];
        let full = top(&op, 5, 200).unwrap();
        assert!(full.steps <= D && full.values.len() == 5, "{full:?}");
        for (got, want) in full.values.iter().zip(want) {
            assert!(close(*got, want, 1e-10), "{full:?}");
        }
        // Fewer steps: converged to 1e-6 with tiny residuals at 25, and at 10 each value
        // is still within its residual bound of the truth.
        for (steps, tol) in [(25, 1e-6), (10, 1e-2)] {
            let short = top(&op, 5, steps).unwrap();
            assert!(short.steps == steps && short.values.len() == 5, "{short:?}");
            for ((got, r), want) in short.values.iter().zip(&short.residuals).zip(want) {
                assert!(
                    close(*got, want, tol) && (got - want).abs() <= r + 1e-12,
                    "{short:?}"
                );
                assert!(steps == 10 || *r < 1e-9 * want, "{short:?}");
            }
        }
    }

    #[test]
    fn full_reorthogonalisation_stops_at_an_invariant_subspace() {
        let op = matrix(&three_values(), false);
        let start = rademacher(&shapes(), 5, 0, DType::F64, &Device::Cpu).unwrap();
        let t = lanczos(&op, &start, 20).unwrap();
        assert!(t.alpha.len() <= 3, "{t:?}");
        let nodes = t.ritz().unwrap();
        // A Rademacher start puts weight (multiplicity / d) on each eigenvalue.
        let want = [(-2.0, 17.0 / 50.0), (1.0, 17.0 / 50.0), (4.0, 16.0 / 50.0)];
        assert_eq!(nodes.len(), 3, "{nodes:?}");
        for (n, (value, weight)) in nodes.iter().zip(want) {
            assert!((n.value - value).abs() < 1e-12, "{nodes:?}");
            assert!((n.weight - weight).abs() < 1e-12, "{nodes:?}");
        }
    }

    #[test]
    fn slq_moments_match_the_trace_and_quadrature_is_exact() {
        let values = spectrum();
        let op = matrix(&values, true);
        let density = slq(&op, 30).unwrap();
        assert_eq!((density.runs.len(), density.dimension), (30, D));
        for p in [1, 2] {
            let exact = values.iter().map(|x| x.powi(p as i32)).sum::<f64>() / D as f64;
            let (m, se) = (density.moment(p), density.moment_stderr(p));
            let msg = format!("p={p}: {m} +- {se} vs {exact}");
            assert!(se > 0.0 && (m - exact).abs() <= 4.0 * se, "{msg}");
        }
        // Run 0 alone: Gauss quadrature with 10 nodes is exact up to degree 19.
        let start = rademacher(&shapes(), 11, u64::MAX - 2, DType::F64, &Device::Cpu);
        let v = flat(&start.unwrap());
        let mut apv = v.clone();
        for p in 1..=3 {
            apv = &op.0 * apv;
            let exact = v.dot(&apv) / v.dot(&v);
            let nodes = density.runs[0].iter();
            let quad: f64 = nodes.map(|n| n.weight * n.value.powi(p)).sum();
            assert!(close(quad, exact, 1e-10), "p={p}: {quad} vs {exact}");
        }
    }

    #[test]
    fn weights_sum_to_one_and_the_density_peaks_at_the_clusters() {
        for run in slq(&matrix(&spectrum(), true), 4).unwrap().runs {
            assert!((run.iter().map(|n| n.weight).sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let density = slq(&matrix(&three_values(), false), 3).unwrap();
        let grid: Vec<f64> = (0..=11_000).map(|i| -4.0 + 0.001 * i as f64).collect();
        let sigma = 0.1;
        let y = density.on_grid(&grid, sigma);
        assert!((trapezoid(&grid, &y) - 1.0).abs() < 1e-9);
        // A grid cutting the peak at 1 in half still integrates to 1 once scaled.
        let half = &grid[..=5000];
        assert!((trapezoid(half, &density.on_grid(half, sigma)) - 1.0).abs() < 1e-9);
        let at = |x: f64| y[((x + 4.0) / 0.001).round() as usize];
        // The peak of a Gaussian of weight 17/50: the normalisation changed nothing.
        let peak = 17.0 / 50.0 / (sigma * (2.0 * std::f64::consts::PI).sqrt());
        assert!(close(at(1.0), peak, 1e-6), "{} vs {peak}", at(1.0));
        for (x, between) in [(-2.0, -0.5), (1.0, 2.5), (4.0, 2.5)] {
            assert!(at(x) > 1e6 * at(between) && at(x) > at(x - 0.05) && at(x) > at(x + 0.05));
        }
        assert!(density.on_grid(&grid, 0.0)[0].is_nan());
    }

    #[test]
    fn a_resumed_density_equals_an_uninterrupted_one() {
        let op = matrix(&spectrum(), true);
        let mut seen = vec![];
        let mut record = |d: &SpectralDensity| {
            seen.push(d.runs.len());
            Ok(())
        };
        let full = slq_with(&op, 5, &[], &mut record).unwrap();
        let resumed = slq_with(&op, 5, &full.runs[..2], &mut record).unwrap();
        assert_eq!(resumed, full);
        assert_eq!(seen, [1, 2, 3, 4, 5, 3, 4, 5]);
        assert_ne!(full.runs[0], full.runs[1]);
    }

    #[test]
    fn bad_arguments_and_non_finite_products_are_errors() {
        let op = matrix(&spectrum(), false);
        for (k, steps) in [(0, 10), (21, 30), (6, 5)] {
            let err = top(&op, k, steps).unwrap_err().to_string();
            assert!(err.contains(&k.to_string()), "{err}");
        }
        assert!(slq(&op, 0).is_err());
        let start = rademacher(&shapes(), 0, 0, DType::F64, &Device::Cpu).unwrap();
        assert!(lanczos(&op, &start, 0).is_err());
        for bad in [f64::NAN, f64::INFINITY] {
            let mut values = spectrum();
            values[17] = bad;
            let op = matrix(&values, false);
            assert!(top(&op, 1, 10).is_err() && slq(&op, 2).is_err());
        }
        let t = Tridiagonal {
            alpha: vec![1.0],
            beta: vec![2.0],
        };
        assert!(t.ritz().is_err());
    }
}

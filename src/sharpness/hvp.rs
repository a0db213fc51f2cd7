//! Hessian-vector products of an [`Objective`] at fixed parameters, two ways.
//!
//! - **Central differences of gradients** ([`Method::FiniteDifference`]):
//!   `H v ~ (g(theta + h v) - g(theta - h v)) / (2 h)`, two gradient evaluations (one
//!   forward and one backward each) per product on the fast fused kernels. The step is
//!   `h = eps sqrt(n) / |v|`, so that a Rademacher probe (`|v| = sqrt(n)`) moves by
//!   `eps` per entry. The error is `O(h^2)` truncation plus the gradient's rounding
//!   divided by `2 h`; in f32 with `eps = 3e-5` about 1e-5 relative per `v^T H v`.
//! - **Double backward** ([`Method::Exact`]): the gradient is computed with its graph
//!   kept, `<g, v>` is differentiated once more. Exact up to rounding, but it needs the
//!   composite (twice-differentiable) kernels and the whole graph of the first backward:
//!   several times slower and hungrier, so it serves as the in-repo reference.
//!
//! candle keeps the graph of a backward pass only when `CANDLE_GRAD_DO_NOT_DETACH` is
//! set, and reads that variable once per thread, at the thread's first backward.
//! Changing the environment while other threads run is a data race, so the variable is
//! set once, before any thread starts ([`keep_gradient_graphs_from_start`]: `ckpt
//! sharpness --method exact` calls it first thing). The exact path then runs on a fresh
//! thread with a deep stack ([`with_graph_kept`]), which checks that candle keeps the
//! graph there and says how to get it when not.
//!
//! ```no_run
//! # use ckpt::sharpness::hvp::{Hessian, Method, Objective};
//! # fn run(objective: &dyn Objective, theta: Vec<candle_core::Tensor>,
//! #        z: Vec<candle_core::Tensor>) -> ckpt::Result<()> {
//! let hessian = Hessian::new(objective, theta, Method::FiniteDifference { eps: 3e-5 });
//! let zhz = hessian.quadratic_form(&z)?; // z^T H z, one Hutchinson sample
//! # Ok(()) }
//! ```

use super::vector::{self, ParamVector};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};

/// A scalar loss of parameters, the mean of per-batch losses.
pub trait Objective: Sync {
    /// Number of batches; the objective is the mean of their losses.
    fn num_batches(&self) -> usize;

    /// The loss of batch `batch` at `params` (each a variable the gradient is taken
    /// with respect to). `twice`: built only from ops whose backward is differentiable.
    fn loss(&self, params: &[Tensor], batch: usize, twice: bool) -> Result<Tensor>;
}

/// How Hessian-vector products are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Central differences of gradients, `eps` per entry of a Rademacher direction.
    FiniteDifference { eps: f64 },
    /// Double backward (composite kernels, on a thread where candle keeps the graph).
    Exact,
}

impl Method {
    /// `fd` or `exact`.
    pub fn name(&self) -> &'static str {
        match self {
            Method::FiniteDifference { .. } => "fd",
            Method::Exact => "exact",
        }
    }
}

/// The Hessian of an objective at `theta`, applied to vectors.
pub struct Hessian<'a, O: Objective + ?Sized> {
    objective: &'a O,
    theta: ParamVector,
    method: Method,
}

impl<'a, O: Objective + ?Sized> Hessian<'a, O> {
    /// The Hessian of `objective` at `theta`, by `method`.
    pub fn new(objective: &'a O, theta: ParamVector, method: Method) -> Self {
        Self {
            objective,
            theta,
            method,
        }
    }

    /// The parameters.
    pub fn theta(&self) -> &[Tensor] {
        &self.theta
    }

    /// `v^T H v`.
    pub fn quadratic_form(&self, v: &[Tensor]) -> Result<f64> {
        Ok(self.quadratic_form_parts(v)?.iter().sum())
    }

    /// `v_i^T (H v)_i` for each parameter `i`: the parts of `v^T H v` (their sum), at the
    /// cost of one product. A block's Hutchinson estimate is the sum of its parts.
    pub(crate) fn quadratic_form_parts(&self, v: &[Tensor]) -> Result<Vec<f64>> {
        match self.method {
            Method::FiniteDifference { eps } => {
                let h = self.step(v, eps)?;
                let plus = self.mean_gradient_dots(&shifted(&self.theta, h, v)?, v)?;
                let minus = self.mean_gradient_dots(&shifted(&self.theta, -h, v)?, v)?;
                Ok(plus
                    .iter()
                    .zip(&minus)
                    .map(|(p, m)| (p - m) / (2.0 * h))
                    .collect())
            }
            Method::Exact => {
                let hv = self.exact_product(v)?;
                vector::dots(v, &hv)
            }
        }
    }

    /// `H v`.
    pub fn product(&self, v: &[Tensor]) -> Result<ParamVector> {
        match self.method {
            Method::FiniteDifference { eps } => {
                let h = self.step(v, eps)?;
                let plus = self.mean_gradient(&shifted(&self.theta, h, v)?)?;
                let minus = self.mean_gradient(&shifted(&self.theta, -h, v)?)?;
                vector::scale(&vector::add_scaled(&plus, -1.0, &minus)?, 0.5 / h)
            }
            Method::Exact => self.exact_product(v),
        }
    }

    /// The objective and its gradient at `theta`.
    pub fn gradient(&self) -> Result<(f64, ParamVector)> {
        let mut loss = 0.0;
        let mut total: Option<ParamVector> = None;
        let params = as_vars(&self.theta)?;
        for b in 0..self.batches()? {
            let (l, g) = gradient_at(self.objective, &params, b)?;
            check_finite("the gradient norm", vector::norm(&g)?, b)?;
            loss += l;
            total = Some(match total {
                None => g,
                Some(t) => vector::add_scaled(&t, 1.0, &g)?,
            });
        }
        let n = self.batches()? as f64;
        Ok((
            loss / n,
            vector::scale(&total.expect("one batch"), 1.0 / n)?,
        ))
    }

    /// `h` such that `h v` moves a Rademacher-sized `v` by `eps` per entry.
    fn step(&self, v: &[Tensor], eps: f64) -> Result<f64> {
        if !(eps.is_finite() && eps > 0.0) {
            return Err(Error::bad_value(
                "--eps",
                format!("the finite-difference step must be positive, got {eps}"),
            ));
        }
        let norm = vector::norm(v)?;
        if !(norm.is_finite() && norm > 0.0) {
            return Err(Error::Invalid(format!(
                "cannot take a Hessian-vector product with a vector of norm {norm}"
            )));
        }
        Ok(eps * (vector::len(v) as f64).sqrt() / norm)
    }

    fn batches(&self) -> Result<usize> {
        match self.objective.num_batches() {
            0 => Err(Error::Invalid("the objective has no batch".into())),
            n => Ok(n),
        }
    }

    /// Mean over batches of `<g_b(point)_i, v_i>` for each parameter `i`; `point` holds
    /// variables.
    fn mean_gradient_dots(&self, point: &[Tensor], v: &[Tensor]) -> Result<Vec<f64>> {
        let n = self.batches()?;
        let mut total = vec![0.0; v.len()];
        for b in 0..n {
            let (_, g) = gradient_at(self.objective, point, b)?;
            let dots = vector::dots(&g, v)?;
            // A NaN or infinite gradient entry makes the product so (v has no zero).
            check_finite("the gradient along the probe", dots.iter().sum(), b)?;
            for (t, d) in total.iter_mut().zip(dots) {
                *t += d;
            }
        }
        Ok(total.into_iter().map(|t| t / n as f64).collect())
    }

    /// Mean over batches of `g_b(point)`; `point` holds variables.
    fn mean_gradient(&self, point: &[Tensor]) -> Result<ParamVector> {
        let n = self.batches()?;
        let mut total: Option<ParamVector> = None;
        for b in 0..n {
            let (_, g) = gradient_at(self.objective, point, b)?;
            check_finite("the gradient norm", vector::norm(&g)?, b)?;
            total = Some(match total {
                None => g,
                Some(t) => vector::add_scaled(&t, 1.0, &g)?,
            });
        }
        vector::scale(&total.expect("one batch"), 1.0 / n as f64)
    }

    /// `H v` by double backward, on a thread where candle keeps the graph.
    fn exact_product(&self, v: &[Tensor]) -> Result<ParamVector> {
        let n = self.batches()?;
        with_graph_kept(|| {
            let params = as_vars(&self.theta)?;
            let mut total: Option<ParamVector> = None;
            for b in 0..n {
                let loss = self.objective.loss(&params, b, true)?;
                check_finite("the loss", scalar(&loss)?, b)?;
                let grads = loss.backward()?;
                // <g, v> with v constant: its gradient is H v.
                let mut inner: Option<Tensor> = None;
                for (p, v) in params.iter().zip(v) {
                    if let Some(g) = grads.get(p) {
                        let term = (g * v.to_dtype(g.dtype())?)?.sum_all()?;
                        inner = Some(match inner {
                            None => term,
                            Some(s) => (s + term)?,
                        });
                    }
                }
                let inner = inner.ok_or_else(|| {
                    Error::Invalid("the loss does not depend on the parameters".into())
                })?;
                let second = inner.backward()?;
                let hv = params
                    .iter()
                    .map(|p| match second.get(p) {
                        Some(h) => Ok(h.detach()),
                        None => Ok(p.zeros_like()?),
                    })
                    .collect::<Result<ParamVector>>()?;
                drop(second);
                drop(grads);
                total = Some(match total {
                    None => hv,
                    Some(t) => vector::add_scaled(&t, 1.0, &hv)?,
                });
            }
            vector::scale(&total.expect("one batch"), 1.0 / n as f64)
        })
    }
}

/// Loss and gradient of batch `b` at `params` (variables; first order: candle
/// detaches as usual).
fn gradient_at<O: Objective + ?Sized>(
    objective: &O,
    params: &[Tensor],
    b: usize,
) -> Result<(f64, ParamVector)> {
    let loss = objective.loss(params, b, false)?;
    let value = scalar(&loss)?;
    check_finite("the loss", value, b)?;
    let grads = loss.backward()?;
    let g = params
        .iter()
        .map(|p| match grads.get(p) {
            Some(g) => Ok(g.detach()),
            None => Ok(p.zeros_like()?),
        })
        .collect::<Result<ParamVector>>()?;
    Ok((value, g))
}

/// Copies of `point` as variables (tensors the backward pass differentiates by).
fn as_vars(point: &[Tensor]) -> Result<Vec<Tensor>> {
    point
        .iter()
        .map(|t| Ok(Var::from_tensor(t)?.into_inner()))
        .collect()
}

/// `theta + h v` as variables, built one tensor at a time so that the shifted weights
/// exist once (a 1B model in f32: 4 GB, not 8).
fn shifted(theta: &[Tensor], h: f64, v: &[Tensor]) -> Result<Vec<Tensor>> {
    theta
        .iter()
        .zip(v)
        .map(|(t, v)| {
            let point = (t + (v.to_dtype(t.dtype())? * h)?)?;
            Ok(Var::from_tensor(&point)?.into_inner())
        })
        .collect()
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn check_finite(what: &str, value: f64, batch: usize) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} is {value} on batch {}; no Hessian estimate there",
            batch + 1
        )))
    }
}

/// The environment variable candle 0.11 reads, once per thread, at the thread's first
/// backward: set, the gradients keep their graph.
pub(crate) const KEEP_GRAPH_VAR: &str = "CANDLE_GRAD_DO_NOT_DETACH";

/// Stack of the exact path's thread: candle walks the (doubled) graph recursively.
const EXACT_STACK_BYTES: usize = 256 << 20;

/// Makes candle keep the gradient graph of every backward pass in this process, as
/// exact Hessian-vector products need. Call it first thing in `main`, before any thread
/// starts (it sets `CANDLE_GRAD_DO_NOT_DETACH`); every later backward pass keeps its
/// graph, which costs memory but changes no number.
pub fn keep_gradient_graphs_from_start() {
    // Safety by contract: no other thread exists yet to read the environment.
    std::env::set_var(KEEP_GRAPH_VAR, "1");
}

/// Runs `f` on a fresh thread with a deep stack, where candle keeps the gradient graph
/// (double backward works there), and returns its result. Errors, saying how to get
/// the mode, when candle detaches there.
pub fn with_graph_kept<R: Send>(f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("ckpt-double-backward".into())
            .stack_size(EXACT_STACK_BYTES)
            .spawn_scoped(scope, || {
                if !graph_is_kept()? {
                    return Err(Error::unsupported(format!(
                        "exact Hessian-vector products need candle to keep gradient graphs: \
                         set {KEEP_GRAPH_VAR}=1 before the process starts (`ckpt sharpness \
                         --method exact` does it itself)"
                    )));
                }
                f()
            })
            .map_err(|e| Error::Invalid(format!("cannot start the double-backward thread: {e}")))?;
        handle
            .join()
            .map_err(|_| Error::Invalid("the double-backward thread panicked".into()))?
    })
}

/// Whether candle keeps the gradient graph on this thread: the second derivative of
/// `x^4 = (x^2)^2` at 1 is 12 through the whole graph, 4 when the inner gradient was
/// detached (candle cuts the graph at each node's incoming gradient, so a shallower
/// function cannot tell).
pub(crate) fn graph_is_kept() -> Result<bool> {
    let x = Var::new(&[1f64], &Device::Cpu)?;
    let y = x.as_tensor().sqr()?.sqr()?.sum_all()?;
    let grads = y.backward()?;
    let Some(g) = grads.get(x.as_tensor()) else {
        return Ok(false);
    };
    let second = g.sum_all()?.backward()?;
    let value = match second.get(x.as_tensor()) {
        Some(h) => h.sum_all()?.to_scalar::<f64>()?,
        None => 0.0,
    };
    Ok((value - 12.0).abs() < 1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `f(x) = sum_i a_i x_i^4 / 12 + (x_0 x_1)`, batches scale it by `1 + b`.
    struct Quartic {
        a: Tensor,
    }

    impl Objective for Quartic {
        fn num_batches(&self) -> usize {
            2
        }
        fn loss(&self, params: &[Tensor], batch: usize, _twice: bool) -> Result<Tensor> {
            let x = &params[0];
            let quartic = (x.powf(4.0)? * &self.a)?.sum_all()? / 12.0;
            let cross = (x.narrow(0, 0, 1)? * x.narrow(0, 1, 1)?)?.sum_all()?;
            Ok(((quartic? + cross)? * (1.0 + batch as f64))?)
        }
    }

    #[test]
    fn both_methods_give_the_analytic_product_of_a_non_quadratic() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[1.0f64, 2.0, 0.5], &dev).unwrap();
        let x = Tensor::new(&[0.3f64, -1.2, 2.0], &dev).unwrap();
        let v = Tensor::new(&[1.0f64, -1.0, 1.0], &dev).unwrap();
        // H = 1.5 * (diag(a x^2) + [[0,1,0],[1,0,0],[0,0,0]]) (mean scale of batches).
        let xs: Vec<f64> = x.to_vec1().unwrap();
        let vs: Vec<f64> = v.to_vec1().unwrap();
        let av = [1.0, 2.0, 0.5];
        let expected: Vec<f64> = (0..3)
            .map(|i| {
                let off = match i {
                    0 => vs[1],
                    1 => vs[0],
                    _ => 0.0,
                };
                1.5 * (av[i] * xs[i] * xs[i] * vs[i] + off)
            })
            .collect();
        let objective = Quartic { a };
        // The exact method is checked in tests/sharpness_exact.rs, whose process keeps
        // gradient graphs from the start.
        for method in [Method::FiniteDifference { eps: 1e-4 }] {
            let h = Hessian::new(&objective, vec![x.clone()], method);
            let hv: Vec<f64> = h.product(std::slice::from_ref(&v)).unwrap()[0]
                .to_vec1()
                .unwrap();
            for (got, want) in hv.iter().zip(&expected) {
                assert!(
                    (got - want).abs() < 1e-7,
                    "{method:?}: {hv:?} vs {expected:?}"
                );
            }
            let q = h.quadratic_form(std::slice::from_ref(&v)).unwrap();
            let want: f64 = expected.iter().zip(&vs).map(|(h, v)| h * v).sum();
            assert!((q - want).abs() < 1e-7, "{method:?}: {q} vs {want}");
        }
    }

    /// This test process never set the mode: the exact path says how to get it.
    #[test]
    fn without_the_mode_the_exact_path_says_how_to_get_it() {
        if std::env::var_os(KEEP_GRAPH_VAR).is_some() {
            return; // set from outside: nothing to check
        }
        let err = with_graph_kept(graph_is_kept).unwrap_err().to_string();
        assert!(
            err.contains(KEEP_GRAPH_VAR) && err.contains("--method exact"),
            "{err}"
        );
        assert!(!graph_is_kept().unwrap());
    }

    #[test]
    fn a_non_finite_loss_is_an_error() {
        struct Nan;
        impl Objective for Nan {
            fn num_batches(&self) -> usize {
                1
            }
            fn loss(&self, params: &[Tensor], _: usize, _: bool) -> Result<Tensor> {
                Ok((params[0].log()?.sum_all())?)
            }
        }
        let x = Tensor::new(&[-1.0f64], &Device::Cpu).unwrap();
        let h = Hessian::new(
            &Nan,
            vec![x.clone()],
            Method::FiniteDifference { eps: 1e-3 },
        );
        let err = h.quadratic_form(&[x]).unwrap_err().to_string();
        assert!(err.contains("NaN") && err.contains("batch 1"), "{err}");
    }
}

//! RMSNorm `x / sqrt(mean(x^2) + eps) * weight` over the last dimension, with a
//! backward pass for both `x` and `weight`.
//!
//! Composed from candle ops, the norm walks and allocates a `[tokens, hidden]` tensor
//! about six times forward and twice that backward. Here the forward is one pass and
//! the backward one more, which also sums the weight's gradient over the rows.

use super::{float_kernel, Float};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// RMSNorm of `x` (any shape, normalised over the last dimension `[hidden]`) scaled by
/// `weight` `[hidden]`. Non-f32/f64 inputs are normalised in f32, as transformers does.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let fused = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && weight.dtype() == x.dtype();
    if fused {
        x.contiguous()?
            .apply_op2(&weight.contiguous()?, RmsNorm { eps })
    } else {
        composed(x, weight, eps)
    }
}

/// The same norm from candle's differentiable ops.
pub(crate) fn composed(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let compute = if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let x = x.to_dtype(compute)?;
    let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    x.broadcast_div(&rms)?
        .to_dtype(dtype)?
        .broadcast_mul(weight)
}

struct RmsNorm {
    eps: f64,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let hidden = hidden_of(l1, l2)?;
        let out = float_kernel!(
            "rms-norm",
            (x = s1, l1), (w = s2, l2) => forward(x, w, hidden, self.eps)
        );
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // One buffer holds both gradients (a custom op has one output): dx, then dw.
        let both = x.apply_op3_no_bwd(
            weight,
            &grad_res.contiguous()?,
            &RmsNormGrad { eps: self.eps },
        )?;
        let n = x.elem_count();
        let dx = both.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = both
            .narrow(0, n, weight.elem_count())?
            .reshape(weight.shape())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `[dx..., dw...]` from `x`, `weight` and the output's gradient.
struct RmsNormGrad {
    eps: f64,
}

impl CustomOp3 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let hidden = hidden_of(l1, l2)?;
        let out = float_kernel!(
            "rms-norm grad",
            (x = s1, l1), (w = s2, l2), (g = s3, l3) => backward(x, w, g, hidden, self.eps)
        );
        Ok((out, Shape::from(l1.shape().elem_count() + hidden)))
    }
}

/// The normalised size, checked against the weight's.
fn hidden_of(x: &Layout, weight: &Layout) -> Result<usize> {
    let hidden = x.shape().dims().last().copied().unwrap_or(1);
    if weight.shape().elem_count() != hidden || hidden == 0 {
        candle_core::bail!(
            "rms-norm: weight {:?} for input {:?}",
            weight.shape(),
            x.shape()
        );
    }
    Ok(hidden)
}

/// `sqrt(mean(x^2) + eps)` of one row, in the composition's order of operations.
fn rms<T: Float>(row: &[T], eps: f64) -> T {
    let sum = row.iter().fold(T::ZERO, |s, &v| s + v * v);
    (sum * T::from_f64(1.0 / row.len() as f64) + T::from_f64(eps)).sqrt()
}

fn forward<T: Float>(x: &[T], w: &[T], hidden: usize, eps: f64) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    out.par_chunks_mut(hidden)
        .zip(x.par_chunks(hidden))
        .for_each(|(out, row)| {
            let r = rms(row, eps);
            for ((o, &v), &w) in out.iter_mut().zip(row).zip(w) {
                *o = v / r * w;
            }
        });
    out
}

/// Rows per task of the backward pass. Fixed, so the weight gradient's partial sums,
/// and with them its rounding, do not depend on the thread count.
const ROWS_PER_BLOCK: usize = 32;

/// With `y = x / r`: `dx = (g w - y mean(g w y)) / r`, `dw = sum over rows of g y`.
fn backward<T: Float>(x: &[T], w: &[T], g: &[T], hidden: usize, eps: f64) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len() + hidden];
    let (dx, dw) = out.split_at_mut(x.len());
    let block = ROWS_PER_BLOCK * hidden;
    let partials: Vec<Vec<T>> = dx
        .par_chunks_mut(block)
        .zip(x.par_chunks(block).zip(g.par_chunks(block)))
        .map(|(dx, (x, g))| {
            let mut dw = vec![T::ZERO; hidden];
            for ((dx, x), g) in dx
                .chunks_mut(hidden)
                .zip(x.chunks(hidden))
                .zip(g.chunks(hidden))
            {
                backward_row(dx, &mut dw, x, w, g, eps);
            }
            dw
        })
        .collect();
    for partial in partials {
        for (d, p) in dw.iter_mut().zip(partial) {
            *d = *d + p;
        }
    }
    out
}

fn backward_row<T: Float>(dx: &mut [T], dw: &mut [T], x: &[T], w: &[T], g: &[T], eps: f64) {
    let r = rms(x, eps);
    let mut dot = T::ZERO;
    for ((&x, &w), &g) in x.iter().zip(w).zip(g) {
        dot = dot + g * w * (x / r);
    }
    let mean = dot * T::from_f64(1.0 / x.len() as f64);
    for ((((dx, dw), &x), &w), &g) in dx.iter_mut().zip(dw.iter_mut()).zip(x).zip(w).zip(g) {
        let y = x / r;
        *dx = (g * w - y * mean) / r;
        *dw = *dw + g * y;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_abs, randn};
    use super::*;
    use candle_core::Var;

    #[test]
    fn rms_norm_matches_the_composition_in_value_and_gradients() {
        for dtype in [DType::F32, DType::F64] {
            // More rows than one backward block, and a ragged last block.
            let rand = |shape: &[usize], std: f32| randn(shape, std, dtype);
            let x = Var::from_tensor(&rand(&[3, 25, 16], 2.0)).unwrap();
            let w = Var::from_tensor(&(rand(&[16], 0.5) + 1.0).unwrap()).unwrap();
            let probe = rand(&[3, 25, 16], 1.0);
            let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
            let reference = composed(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert!(max_abs((&fused - &reference).unwrap()) < tol);
            let grads = |y: Tensor| {
                let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                let get = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
                (get(&x), get(&w))
            };
            let ((fx, fw), (cx, cw)) = (grads(fused), grads(reference));
            assert!(max_abs((fx - cx).unwrap()) < tol);
            assert!(max_abs((fw - cw).unwrap()) < tol * 10.0);
        }
    }
}

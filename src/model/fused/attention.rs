//! Scaled, masked softmax of attention scores, with its backward pass.
//!
//! The scores are the largest tensors of a layer (`[batch, heads, seq, seq]`). Composed,
//! scaling, adding the causal mask and the views between them each cost a pass forward
//! and, as candle's backward accumulates every view's gradient into a fresh zeroed
//! buffer, two more backward. Here the forward reads the raw `q k^T` scores once and
//! the backward writes their gradient once.

use super::{float_kernel, Float};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `softmax(scores * scale + mask)` over the last dimension. `scores` is
/// `[..., groups * t, s]`: query rows of `groups` head groups, each the `t` rows that
/// `mask` `[t, s]` covers.
pub(crate) fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let dtype = scores.dtype();
    let fused = scores.device().is_cpu()
        && matches!(dtype, DType::F32 | DType::F64)
        && mask.dtype() == dtype;
    if fused {
        scores
            .contiguous()?
            .apply_op2(&mask.contiguous()?, MaskedSoftmax { scale })
    } else {
        composed(scores, mask, scale)
    }
}

/// The same from candle's differentiable ops.
fn composed(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let dims = scores.dims();
    let (rows, s) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let t = mask.dim(0)?;
    let grouped = (scores * scale)?.reshape(((), rows / t, t, s))?;
    candle_nn::ops::softmax(&grouped.broadcast_add(mask)?, candle_core::D::Minus1)?.reshape(dims)
}

struct MaskedSoftmax {
    scale: f64,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = l1.shape().dims().last().copied().unwrap_or(0);
        let (t, mask_s) = l2.shape().dims2()?;
        let rows = l1.shape().elem_count() / s.max(1);
        if mask_s != s || t == 0 || !rows.is_multiple_of(t) {
            candle_core::bail!(
                "masked softmax: mask {:?} for scores {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        let out = float_kernel!(
            "masked softmax",
            (x = s1, l1), (m = s2, l2) => masked_softmax_rows(x, m, s, self.scale)
        );
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _mask: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = SoftmaxGrad { scale: self.scale };
        let d_scores = res.apply_op2_no_bwd(&grad_res.contiguous()?, &grad)?;
        Ok((Some(d_scores), None))
    }
}

/// Row `r` of `scores` takes mask row `r % t`.
pub(super) fn masked_softmax_rows<T: Float>(
    scores: &[T],
    mask: &[T],
    s: usize,
    scale: f64,
) -> Vec<T> {
    let t = mask.len() / s;
    let scale = T::from_f64(scale);
    let mut out = vec![T::ZERO; scores.len()];
    out.par_chunks_mut(s)
        .zip(scores.par_chunks(s))
        .enumerate()
        .for_each(|(r, (out, row))| {
            let mask = &mask[(r % t) * s..(r % t + 1) * s];
            for ((o, &x), &m) in out.iter_mut().zip(row).zip(mask) {
                *o = x * scale + m;
            }
            let max = super::row_max(out);
            let mut sum = T::ZERO;
            for o in out.iter_mut() {
                *o = (*o - max).exp();
                sum = sum + *o;
            }
            for o in out.iter_mut() {
                *o = *o / sum;
            }
        });
    out
}

/// `dx = scale * y * (dy - sum(dy * y))` per row, from the softmax output `y` of
/// `softmax(scale * x + c)`.
pub(super) struct SoftmaxGrad {
    pub(super) scale: f64,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-last-dim-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dim = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let out = float_kernel!(
            "softmax grad",
            (y = s1, l1), (g = s2, l2) => softmax_grad_rows(y, g, dim, self.scale)
        );
        Ok((out, l1.shape().clone()))
    }
}

fn softmax_grad_rows<T: Float>(y: &[T], g: &[T], dim: usize, scale: f64) -> Vec<T> {
    // A scale of 1 multiplies exactly, so the plain softmax's gradient is unchanged.
    let scale = T::from_f64(scale);
    let mut out = vec![T::ZERO; y.len()];
    out.par_chunks_mut(dim)
        .zip(y.par_chunks(dim).zip(g.par_chunks(dim)))
        .for_each(|(out, (y, g))| {
            let dot = y.iter().zip(g).fold(T::ZERO, |s, (&a, &b)| s + a * b);
            for ((o, &y), &g) in out.iter_mut().zip(y).zip(g) {
                *o = y * (g - dot) * scale;
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_abs, randn};
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn masked_softmax_matches_the_composition_in_value_and_gradient() {
        let dev = Device::Cpu;
        let mut mask = vec![0f32; 4 * 6];
        for i in 0..4 {
            for j in (i + 3)..6 {
                mask[i * 6 + j] = f32::NEG_INFINITY;
            }
        }
        for dtype in [DType::F32, DType::F64] {
            let mask = Tensor::from_vec(mask.clone(), (4, 6), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            // Two batches, two key/value heads, three query heads per group.
            let rand = || randn((2, 2, 3 * 4, 6), 2.0, dtype);
            let scores = Var::from_tensor(&rand()).unwrap();
            let probe = rand();
            let fused = masked_softmax(scores.as_tensor(), &mask, 0.125).unwrap();
            let reference = composed(scores.as_tensor(), &mask, 0.125).unwrap();
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-6 };
            assert!(max_abs((&fused - &reference).unwrap()) < tol);
            let grad = |y: Tensor| {
                let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(scores.as_tensor()).unwrap().clone()
            };
            assert!(max_abs((grad(fused) - grad(reference)).unwrap()) < tol);
        }
    }
}

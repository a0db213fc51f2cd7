//! Fused CPU kernels with a backward pass, for the training and sharpness paths.
//!
//! candle's own fused kernels (`softmax_last_dim`, `rms_norm`) pass no gradient, and
//! the differentiable compositions allocate and walk a full tensor per elementary op,
//! forward and backward. These kernels do each in one pass and register their own
//! backward. Other devices and dtypes take the composition, which gives the same
//! numbers (the tests compare both, values and gradients).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

mod rms_norm;
mod rotary;
mod swiglu;

pub use rms_norm::{composed as rms_norm_composed, rms_norm};
pub use rotary::rotate_into_heads;
pub use swiglu::swiglu;

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dim = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let (a, b) = contiguous(layout)?;
        let out = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(softmax_rows(&x[a..b], dim)),
            CpuStorage::F64(x) => CpuStorage::F64(softmax_rows(&x[a..b], dim)),
            _ => candle_core::bail!("softmax: f32 or f64 only"),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.apply_op2_no_bwd(&grad_res.contiguous()?, &SoftmaxGrad)?,
        ))
    }
}

/// `dx = y * (dy - sum(dy * y))` per row, from the softmax output `y`.
struct SoftmaxGrad;

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
        let ((a0, a1), (g0, g1)) = (contiguous(l1)?, contiguous(l2)?);
        let out = match (s1, s2) {
            (CpuStorage::F32(y), CpuStorage::F32(g)) => {
                CpuStorage::F32(softmax_grad_rows(&y[a0..a1], &g[g0..g1], dim))
            }
            (CpuStorage::F64(y), CpuStorage::F64(g)) => {
                CpuStorage::F64(softmax_grad_rows(&y[a0..a1], &g[g0..g1], dim))
            }
            _ => candle_core::bail!("softmax grad: f32 or f64 only"),
        };
        Ok((out, l1.shape().clone()))
    }
}

pub(crate) fn contiguous(layout: &Layout) -> Result<(usize, usize)> {
    layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused kernel needs a contiguous tensor".into()))
}

/// The float types the kernels run in.
pub(crate) trait Float:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn from_f64(v: f64) -> Self;
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// The largest element of a row (`-inf` for an empty or all-masked row).
pub(crate) fn row_max<T: Float>(row: &[T]) -> T {
    row.iter()
        .fold(T::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

fn softmax_rows<T: Float>(x: &[T], dim: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .for_each(|(out, row)| {
            let max = row_max(row);
            let mut sum = T::ZERO;
            for (o, &v) in out.iter_mut().zip(row) {
                *o = (v - max).exp();
                sum = sum + *o;
            }
            for o in out.iter_mut() {
                *o = *o / sum;
            }
        });
    out
}

fn softmax_grad_rows<T: Float>(y: &[T], g: &[T], dim: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; y.len()];
    out.par_chunks_mut(dim)
        .zip(y.par_chunks(dim).zip(g.par_chunks(dim)))
        .for_each(|(out, (y, g))| {
            let dot = y.iter().zip(g).fold(T::ZERO, |s, (&a, &b)| s + a * b);
            for ((o, &y), &g) in out.iter_mut().zip(y).zip(g) {
                *o = y * (g - dot);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    pub(super) fn max_abs(t: Tensor) -> f64 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn softmax_matches_the_composition_in_value_and_gradient() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let x = Tensor::randn(0f32, 2.0, (2, 3, 5), &dev).unwrap();
            // A masked entry, as causal attention has.
            let mask = Tensor::new(&[0f32, 0., 0., 0., f32::NEG_INFINITY], &dev).unwrap();
            let x = x.broadcast_add(&mask).unwrap().to_dtype(dtype).unwrap();
            let w = Tensor::randn(0f32, 1.0, (2, 3, 5), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let var = Var::from_tensor(&x).unwrap();
            let fused = softmax_last_dim(var.as_tensor()).unwrap();
            let composed = candle_nn::ops::softmax(var.as_tensor(), D::Minus1).unwrap();
            assert!(max_abs((&fused - &composed).unwrap()) < 1e-6);
            let grad = |y: Tensor| {
                let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(var.as_tensor()).unwrap().clone()
            };
            assert!(max_abs((grad(fused) - grad(composed)).unwrap()) < 1e-6);
        }
    }
}

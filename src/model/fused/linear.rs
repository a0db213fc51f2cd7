//! `x W^T` as one op over `x` of any rank, with its backward pass.
//!
//! The composition `x.reshape(2-D).matmul(W.t()).reshape(..)` leaves three views on the
//! graph (two reshapes and the weight's transpose). candle's backward gives every view
//! its own zeroed accumulator and copies the gradient into it, so each dense layer paid
//! two activation-sized and one weight-sized copy for nothing. This op runs the same
//! GEMM and its backward computes `dx = g W` and `dW = g^T x` directly.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

/// `x` `[..., in]` times `weight` `[out, in]` transposed: `[..., out]`. `None` where the
/// op does not apply (not CPU, or not f32/f64 throughout): the caller composes.
pub(crate) fn linear(x: &Tensor, weight: &Tensor) -> Result<Option<Tensor>> {
    let dtype = x.dtype();
    let fused =
        x.device().is_cpu() && matches!(dtype, DType::F32 | DType::F64) && weight.dtype() == dtype;
    if !fused {
        return Ok(None);
    }
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, Linear)
        .map(Some)
}

struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (out, k) = l2.shape().dims2()?;
        let dims = l1.shape().dims();
        if dims.last() != Some(&k) {
            candle_core::bail!("linear: weight {:?} for input {:?}", l2.shape(), l1.shape());
        }
        let m = l1.shape().elem_count() / k.max(1);
        let lhs = Layout::contiguous_with_offset((m, k), l1.start_offset());
        let y = s1.matmul(s2, (1, m, out, k), &lhs, &l2.transpose(0, 1)?)?;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("checked above") = out;
        Ok((y, Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Detached: these products are gradients, not part of the graph.
        let (x, weight) = (x.detach(), weight.detach());
        let (out, k) = weight.dims2()?;
        let g = grad_res.contiguous()?.reshape(((), out))?;
        let dx = g.matmul(&weight)?.reshape(x.shape())?;
        let dw = g.t()?.matmul(&x.reshape(((), k))?)?;
        Ok((Some(dx), Some(dw)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_abs, randn};
    use super::*;
    use candle_core::Var;

    #[test]
    fn linear_matches_the_composition_in_value_and_gradients() {
        for dtype in [DType::F32, DType::F64] {
            let rand = |shape: &[usize]| randn(shape, 1.0, dtype);
            let x = Var::from_tensor(&rand(&[2, 5, 7])).unwrap();
            let w = Var::from_tensor(&rand(&[3, 7])).unwrap();
            let probe = rand(&[2, 5, 3]);
            let fused = linear(x.as_tensor(), w.as_tensor()).unwrap().unwrap();
            let reference = x
                .as_tensor()
                .reshape((10, 7))
                .unwrap()
                .matmul(&w.as_tensor().t().unwrap())
                .unwrap()
                .reshape((2, 5, 3))
                .unwrap();
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert!(max_abs((&fused - &reference).unwrap()) < tol);
            let grads = |y: Tensor| {
                let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                let get = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
                (get(&x), get(&w))
            };
            let ((fx, fw), (cx, cw)) = (grads(fused), grads(reference));
            assert!(max_abs((fx - cx).unwrap()) < tol);
            assert!(max_abs((fw - cw).unwrap()) < tol);
        }
    }
}

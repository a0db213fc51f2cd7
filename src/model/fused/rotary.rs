//! Rotary embedding fused with the split into heads, with its backward pass.
//!
//! The differentiable path used to copy each projection into `[batch, heads, seq, d]`
//! and then rotate it with seven ops over that tensor (narrow, negate, concatenate,
//! two products, a sum), forward and backward. Here one pass reads the projection
//! `[batch, seq, heads, d]` and writes the rotated heads; the backward of a rotation is
//! the inverse rotation, written back in the projection's layout.

use super::{float_kernel, Float};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x` `[batch, seq, heads * head_dim]` rotated by the angles `cos`, `sin`
/// `[seq, head_dim / 2]` (half-split convention of transformers' Llama), returned as
/// `[batch, heads, seq, head_dim]`. `None` where the fused kernel does not apply (not
/// CPU, or not f32/f64 throughout): the caller composes.
pub(crate) fn rotate_into_heads(
    x: &Tensor,
    heads: usize,
    cos: &Tensor,
    sin: &Tensor,
) -> Result<Option<Tensor>> {
    let dtype = x.dtype();
    let fused = x.device().is_cpu()
        && matches!(dtype, DType::F32 | DType::F64)
        && cos.dtype() == dtype
        && sin.dtype() == dtype
        && heads > 0
        && x.dim(2)? % heads == 0;
    if !fused {
        return Ok(None);
    }
    let (cos, sin) = (cos.contiguous()?, sin.contiguous()?);
    x.contiguous()?
        .apply_op3(&cos, &sin, Rotate { heads })
        .map(Some)
}

/// Forward: projection layout in, rotated heads out.
struct Rotate {
    heads: usize,
}

/// Backward: the gradient of the heads in, inverse-rotated into the projection layout.
struct RotateBack;

impl CustomOp3 for Rotate {
    fn name(&self) -> &'static str {
        "rotary-into-heads"
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
        let (b, t, width) = l1.shape().dims3()?;
        let (n, d) = (self.heads, width / self.heads);
        let out = dispatch(s1, l1, s2, l2, s3, l3, Dims { t, n, d }, false)?;
        Ok((out, Shape::from((b, n, t, d))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = grad_res
            .contiguous()?
            .apply_op3_no_bwd(cos, sin, &RotateBack)?;
        Ok((Some(dx), None, None))
    }
}

impl CustomOp3 for RotateBack {
    fn name(&self) -> &'static str {
        "rotary-into-heads-grad"
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
        let (b, n, t, d) = l1.shape().dims4()?;
        let out = dispatch(s1, l1, s2, l2, s3, l3, Dims { t, n, d }, true)?;
        Ok((out, Shape::from((b, t, n * d))))
    }
}

#[derive(Clone, Copy)]
/// Sequence, heads and head size; the batch is what the length leaves.
struct Dims {
    t: usize,
    n: usize,
    d: usize,
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
    dims: Dims,
    back: bool,
) -> Result<CpuStorage> {
    if !dims.d.is_multiple_of(2) || l2.shape().dims2()? != (dims.t, dims.d / 2) {
        candle_core::bail!("rotary: angles {:?} for input {:?}", l2.shape(), l1.shape());
    }
    Ok(float_kernel!(
        "rotary",
        (x = s1, l1), (cos = s2, l2), (sin = s3, l3) => rotate(x, cos, sin, dims, back)
    ))
}

/// Forward (`back == false`): `src` is `[b, t, n, d]`, the result `[b, n, t, d]`,
/// `(x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)`. Backward: `src` is `[b, n, t, d]`,
/// the result `[b, t, n, d]`, rotated by the opposite angle.
fn rotate<T: Float>(src: &[T], cos: &[T], sin: &[T], dims: Dims, back: bool) -> Vec<T> {
    let Dims { t, n, d } = dims;
    let half = d / 2;
    // One task per (batch, head) slab of the output forward, per (batch, position)
    // backward; `inner` rows each.
    let inner = if back { n } else { t };
    let mut out = vec![T::ZERO; src.len()];
    out.par_chunks_mut(inner * d)
        .enumerate()
        .for_each(|(task, out)| {
            for (i, out) in out.chunks_mut(d).enumerate() {
                let (row, pos) = if back {
                    let (bi, ti) = (task / t, task % t);
                    ((bi * n + i) * t + ti, ti)
                } else {
                    let (bi, ni) = (task / n, task % n);
                    ((bi * t + i) * n + ni, i)
                };
                let x = &src[row * d..(row + 1) * d];
                let (cos, sin) = (&cos[pos * half..], &sin[pos * half..]);
                let (o1, o2) = out.split_at_mut(half);
                for j in 0..half {
                    let (x1, x2, c, s) = (x[j], x[half + j], cos[j], sin[j]);
                    if back {
                        o1[j] = x1 * c + x2 * s;
                        o2[j] = x2 * c - x1 * s;
                    } else {
                        o1[j] = x1 * c - x2 * s;
                        o2[j] = x2 * c + x1 * s;
                    }
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_abs, randn};
    use super::*;
    use crate::model::rope;
    use candle_core::{Device, Var};

    #[test]
    fn rotation_into_heads_matches_the_composition_in_value_and_gradient() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let rand = |shape: (usize, usize, usize, usize)| randn(shape, 1.0, dtype);
            let angles = Tensor::randn(0f32, 2.0, (5, 4), &dev).unwrap();
            let cos = angles.cos().unwrap().to_dtype(dtype).unwrap();
            let sin = angles.sin().unwrap().to_dtype(dtype).unwrap();
            let x = Var::from_tensor(&rand((2, 5, 3, 8)).reshape((2, 5, 24)).unwrap()).unwrap();
            let probe = rand((2, 3, 5, 8));
            let fused = rotate_into_heads(x.as_tensor(), 3, &cos, &sin)
                .unwrap()
                .unwrap();
            let heads = x.as_tensor().reshape((2, 5, 3, 8)).unwrap();
            let heads = heads.transpose(1, 2).unwrap().contiguous().unwrap();
            let reference = rope::apply(&heads, &cos, &sin, true).unwrap();
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert!(max_abs((&fused - &reference).unwrap()) < tol);
            let grad = |y: Tensor| {
                let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(x.as_tensor()).unwrap().clone()
            };
            assert!(max_abs((grad(fused) - grad(reference)).unwrap()) < tol);
        }
    }
}

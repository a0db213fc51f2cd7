//! Splitting a projection into attention heads as a single op, and the reverse copy
//! that merges heads back (the split's backward; [`super::sdpa`] merges its output
//! with it too).
//!
//! Composed, `reshape -> transpose -> contiguous` leaves three views on the graph, and
//! candle's backward gives each its own zeroed accumulator and copy. Here one copy
//! moves the data each way.

use super::float_kernel;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x` `[batch, seq, heads * head_dim]` as `[batch, heads, seq, head_dim]`. `None`
/// where the op does not apply (not CPU, or not f32/f64): the caller composes.
pub(crate) fn split_heads(x: &Tensor, heads: usize) -> Result<Option<Tensor>> {
    let (b, t, width) = x.dims3()?;
    if !applies(x) || heads == 0 || width % heads != 0 {
        return Ok(None);
    }
    let dims = Dims {
        b,
        n: heads,
        t,
        d: width / heads,
    };
    x.contiguous()?
        .apply_op1(Permute { dims, split: true })
        .map(Some)
}

fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// Batch, heads, sequence, head size.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub(super) b: usize,
    pub(super) n: usize,
    pub(super) t: usize,
    pub(super) d: usize,
}

/// Swaps the sequence and head axes: `split` reads `[b, t, n, d]` and writes
/// `[b, n, t, d]`, the other way round otherwise.
struct Permute {
    dims: Dims,
    split: bool,
}

impl CustomOp1 for Permute {
    fn name(&self) -> &'static str {
        if self.split {
            "split-heads"
        } else {
            "merge-heads"
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Dims { b, n, t, d } = self.dims;
        if layout.shape().elem_count() != b * n * t * d {
            candle_core::bail!("{}: input {:?}", self.name(), layout.shape());
        }
        let out = float_kernel!(
            "split/merge heads",
            (x = storage, layout) => permute(x, self.dims, self.split)
        );
        let shape = if self.split {
            Shape::from((b, n, t, d))
        } else {
            Shape::from((b, t, n * d))
        };
        Ok((out, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let back = Permute {
            dims: self.dims,
            split: !self.split,
        };
        let grad = grad_res.contiguous()?.apply_op1_no_bwd(&back)?;
        Ok(Some(grad.reshape(arg.shape())?))
    }
}

/// One task per output slab: a `(batch, head)` when splitting, a `(batch, position)`
/// when merging; each copies `d`-long rows.
pub(super) fn permute<T: Copy + Send + Sync + Default>(
    src: &[T],
    dims: Dims,
    split: bool,
) -> Vec<T> {
    let Dims { n, t, d, .. } = dims;
    let inner = if split { t } else { n };
    let mut out = vec![T::default(); src.len()];
    out.par_chunks_mut(inner * d)
        .enumerate()
        .for_each(|(task, out)| {
            for (i, out) in out.chunks_mut(d).enumerate() {
                let row = if split {
                    let (bi, ni) = (task / n, task % n);
                    (bi * t + i) * n + ni
                } else {
                    let (bi, ti) = (task / t, task % t);
                    (bi * n + i) * t + ti
                };
                out.copy_from_slice(&src[row * d..(row + 1) * d]);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_abs, randn};
    use super::*;
    use candle_core::Var;

    #[test]
    fn split_matches_the_composition_in_value_and_gradient() {
        for dtype in [DType::F32, DType::F64] {
            let rand = |shape: (usize, usize, usize, usize)| randn(shape, 1.0, dtype);
            let x = Var::from_tensor(&rand((2, 5, 3, 4)).reshape((2, 5, 12)).unwrap()).unwrap();
            let probe = rand((2, 3, 5, 4));
            let fused = split_heads(x.as_tensor(), 3).unwrap().unwrap();
            let reference = x.as_tensor().reshape((2, 5, 3, 4)).unwrap();
            let reference = reference.transpose(1, 2).unwrap().contiguous().unwrap();
            assert_eq!(max_abs((&fused - &reference).unwrap()), 0.0);
            let grad = |y: Tensor| {
                let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(x.as_tensor()).unwrap().clone()
            };
            assert_eq!(max_abs((grad(fused) - grad(reference)).unwrap()), 0.0);
        }
    }
}

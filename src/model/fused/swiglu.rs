//! The SwiGLU product `silu(gate) * up` of the Llama MLP, with its backward pass.
//!
//! candle's `silu` backward alone is seven elementwise ops over the
//! `[tokens, intermediate]` activations (the largest of a layer). Fused, the forward
//! is one pass and the backward one more that writes both gradients.

use super::{float_kernel, Float};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `silu(gate) * up`, elementwise; `gate` and `up` have one shape.
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let fused = gate.device().is_cpu()
        && matches!(gate.dtype(), DType::F32 | DType::F64)
        && gate.dtype() == up.dtype()
        && gate.shape() == up.shape();
    if fused {
        gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
    } else {
        composed(gate, up)
    }
}

/// The same product from candle's differentiable ops.
pub(crate) fn composed(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = float_kernel!("swiglu", (g = s1, l1), (u = s2, l2) => forward(g, u));
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // One buffer holds both gradients (a custom op has one output): d gate, d up.
        let both = gate.apply_op3_no_bwd(up, &grad_res.contiguous()?, &SwiGluGrad)?;
        let n = gate.elem_count();
        let d_gate = both.narrow(0, 0, n)?.reshape(gate.shape())?;
        let d_up = both.narrow(0, n, n)?.reshape(up.shape())?;
        Ok((Some(d_gate), Some(d_up)))
    }
}

/// `[d gate..., d up...]` from `gate`, `up` and the output's gradient.
struct SwiGluGrad;

impl CustomOp3 for SwiGluGrad {
    fn name(&self) -> &'static str {
        "swiglu-grad"
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
        let out = float_kernel!(
            "swiglu grad",
            (g = s1, l1), (u = s2, l2), (d = s3, l3) => backward(g, u, d)
        );
        Ok((out, Shape::from(2 * l1.shape().elem_count())))
    }
}

/// Elements per parallel task: large enough to amortise the scheduling.
const CHUNK: usize = 4096;

fn forward<T: Float>(gate: &[T], up: &[T]) -> Vec<T> {
    let mut out = vec![T::ZERO; gate.len()];
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(out, (gate, up))| {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                // candle's silu: x / (1 + exp(-x)).
                *o = g / (T::ONE + (T::ZERO - g).exp()) * u;
            }
        });
    out
}

/// `d gate = d * up * s (1 + gate (1 - s))` with `s = sigmoid(gate)`; `d up = d * silu(gate)`.
fn backward<T: Float>(gate: &[T], up: &[T], grad: &[T]) -> Vec<T> {
    let n = gate.len();
    let mut out = vec![T::ZERO; 2 * n];
    let (d_gate, d_up) = out.split_at_mut(n);
    d_gate
        .par_chunks_mut(CHUNK)
        .zip(d_up.par_chunks_mut(CHUNK))
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .zip(grad.par_chunks(CHUNK))
        .for_each(|(((d_gate, d_up), (gate, up)), grad)| {
            for ((((dg, du), &g), &u), &d) in d_gate
                .iter_mut()
                .zip(d_up.iter_mut())
                .zip(gate)
                .zip(up)
                .zip(grad)
            {
                // As candle's silu and its backward compute them.
                let denominator = T::ONE + (T::ZERO - g).exp();
                let (s, silu) = (T::ONE / denominator, g / denominator);
                *dg = d * u * (s * (T::ONE - silu) + silu);
                *du = d * silu;
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
    fn swiglu_matches_the_composition_in_value_and_gradients() {
        for dtype in [DType::F32, DType::F64] {
            let rand = |std: f32| {
                // More elements than one parallel chunk, and a ragged last chunk.
                randn((3, 7, 401), std, dtype)
            };
            let gate = Var::from_tensor(&rand(4.0)).unwrap();
            let up = Var::from_tensor(&rand(1.0)).unwrap();
            let probe = rand(1.0);
            let fused = swiglu(gate.as_tensor(), up.as_tensor()).unwrap();
            let reference = composed(gate.as_tensor(), up.as_tensor()).unwrap();
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert!(max_abs((&fused - &reference).unwrap()) < tol);
            let grads = |y: Tensor| {
                let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                let get = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
                (get(&gate), get(&up))
            };
            let ((fg, fu), (cg, cu)) = (grads(fused), grads(reference));
            assert!(max_abs((fg - cg).unwrap()) < tol);
            assert!(max_abs((fu - cu).unwrap()) < tol);
        }
    }
}

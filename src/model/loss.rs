//! Per-token cross-entropy of logits against target ids, with its backward.
//!
//! The vocabulary projection is the largest tensor of a small model's step
//! (`tokens x vocab`). Composed from candle ops, `log_softmax` + `gather` allocates and
//! walks that tensor about ten times between forward and backward. On the CPU this
//! module does it in two passes with one allocation each: the forward computes
//! `logsumexp(row) - row[target]` per row, the backward `(softmax(row) - onehot) * g`
//! (what PyTorch's fused `cross_entropy` does). Other devices and dtypes take the
//! composed path, which gives the same numbers.

use super::fused::{float_kernel, row_max, Float};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// `-log softmax(logits)[target]` for each row of `logits` `[rows, vocab]`: `[rows]`.
/// `targets` holds one u32 id per row.
pub(crate) fn token_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let fused = logits.device().is_cpu() && matches!(logits.dtype(), DType::F32 | DType::F64);
    if !fused {
        return composed_cross_entropy(logits, targets);
    }
    let (rows, vocab) = logits.dims2()?;
    let targets = checked_targets(targets, rows, vocab)?;
    logits.contiguous()?.apply_op1(CrossEntropy { targets })
}

/// [`token_cross_entropy`] of the logits `rows` `[rows, hidden]` times `weight`
/// `[vocab, hidden]` transposed, in one op. The logits never become a graph node, so
/// the backward skips the zeroed accumulator candle gives every node: for a small
/// model's `tokens x vocab` logits, the largest copy of the step. `None` where the op
/// does not apply (not CPU, or not f32/f64 throughout): the caller composes.
pub(crate) fn projected_cross_entropy(
    rows: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
) -> Result<Option<Tensor>> {
    let dtype = rows.dtype();
    let fused = rows.device().is_cpu()
        && matches!(dtype, DType::F32 | DType::F64)
        && weight.dtype() == dtype;
    if !fused {
        return Ok(None);
    }
    let (n, _) = rows.dims2()?;
    let targets = checked_targets(targets, n, weight.dim(0)?)?;
    let op = ProjectedCrossEntropy {
        targets,
        logits: Mutex::new(None),
    };
    rows.contiguous()?
        .apply_op2(&weight.contiguous()?, op)
        .map(Some)
}

/// The target ids as a vector, one per row, each inside the vocabulary.
fn checked_targets(targets: &Tensor, rows: usize, vocab: usize) -> Result<Arc<Vec<u32>>> {
    let ids: Vec<u32> = targets.flatten_all()?.to_vec1()?;
    if ids.len() != rows {
        candle_core::bail!("{} targets for {rows} rows of logits", ids.len());
    }
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("target id {bad} is outside the vocabulary of {vocab}");
    }
    Ok(Arc::new(ids))
}

/// The same loss from candle's elementary ops, whose backward is itself differentiable
/// (the fused kernel's backward is not).
pub(crate) fn composed_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let rows = logits.dim(0)?;
    log_probs
        .gather(&targets.reshape((rows, 1))?, 1)?
        .neg()?
        .reshape(rows)
}

struct CrossEntropy {
    targets: Arc<Vec<u32>>,
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "token-cross-entropy"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, vocab) = layout.shape().dims2()?;
        let out = float_kernel!(
            "cross-entropy",
            (x = storage, layout) => forward(x, vocab, &self.targets)
        );
        Ok((out, Shape::from(rows)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &CrossEntropyGrad {
                targets: self.targets.clone(),
            },
        )?;
        Ok(Some(grad))
    }
}

/// Gradient of the loss with respect to the logits, given the upstream gradient per row.
struct CrossEntropyGrad {
    targets: Arc<Vec<u32>>,
}

impl CustomOp2 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "token-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, vocab) = l1.shape().dims2()?;
        let out = float_kernel!(
            "cross-entropy grad",
            (x = s1, l1), (g = s2, l2) => backward(x, g, vocab, &self.targets)
        );
        Ok((out, l1.shape().clone()))
    }
}

/// The projection and the loss; the forward keeps the logits for the backward.
struct ProjectedCrossEntropy {
    targets: Arc<Vec<u32>>,
    logits: Mutex<Option<CpuStorage>>,
}

impl CustomOp2 for ProjectedCrossEntropy {
    fn name(&self) -> &'static str {
        "projected-token-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, hidden) = l1.shape().dims2()?;
        let (vocab, _) = l2.shape().dims2()?;
        let lhs = Layout::contiguous_with_offset((rows, hidden), l1.start_offset());
        let logits = s1.matmul(s2, (1, rows, vocab, hidden), &lhs, &l2.transpose(0, 1)?)?;
        let out = match &logits {
            CpuStorage::F32(x) => CpuStorage::F32(forward(x, vocab, &self.targets)),
            CpuStorage::F64(x) => CpuStorage::F64(forward(x, vocab, &self.targets)),
            _ => candle_core::bail!("cross-entropy: f32 or f64 logits only"),
        };
        *self.logits.lock().expect("not poisoned") = Some(logits);
        Ok((out, Shape::from(rows)))
    }

    fn bwd(
        &self,
        rows: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Detached: these products are gradients, not part of the graph.
        let (rows, weight) = (rows.detach(), weight.detach());
        let (n, vocab) = (rows.dim(0)?, weight.dim(0)?);
        let kept = self.logits.lock().expect("not poisoned").take();
        let logits = match kept {
            Some(CpuStorage::F32(x)) => Tensor::from_vec(x, (n, vocab), rows.device())?,
            Some(CpuStorage::F64(x)) => Tensor::from_vec(x, (n, vocab), rows.device())?,
            // A second backward through the same graph: compute them again.
            _ => rows.matmul(&weight.t()?)?,
        };
        let d_logits = logits.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &CrossEntropyGrad {
                targets: self.targets.clone(),
            },
        )?;
        drop(logits);
        let d_rows = d_logits.matmul(&weight)?;
        let d_weight = d_logits.t()?.matmul(&rows)?;
        Ok((Some(d_rows), Some(d_weight)))
    }
}

/// `(max, log(sum(exp(row - max))))` of one row: `logsumexp = max + second`.
fn max_and_log_sum<T: Float>(row: &[T]) -> (T, T) {
    let max = row_max(row);
    let sum = row.iter().fold(T::ZERO, |s, &x| s + (x - max).exp());
    (max, sum.ln())
}

fn forward<T: Float>(logits: &[T], vocab: usize, targets: &[u32]) -> Vec<T> {
    logits
        .par_chunks(vocab)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let (max, log_sum) = max_and_log_sum(row);
            max - row[t as usize] + log_sum
        })
        .collect()
}

fn backward<T: Float>(logits: &[T], grad: &[T], vocab: usize, targets: &[u32]) -> Vec<T> {
    let mut out = vec![T::ZERO; logits.len()];
    out.par_chunks_mut(vocab)
        .zip(logits.par_chunks(vocab))
        .zip(grad.par_iter().zip(targets.par_iter()))
        .for_each(|((out, row), (&g, &t))| {
            let (max, log_sum) = max_and_log_sum(row);
            for (o, &x) in out.iter_mut().zip(row) {
                *o = (x - max - log_sum).exp() * g;
            }
            out[t as usize] = out[t as usize] - g;
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::tests::randn;
    use candle_core::{Device, Var};

    #[test]
    fn fused_matches_composed_in_value_and_gradient() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let x = randn((7, 11), 3.0, dtype);
            let targets = Tensor::new(&[0u32, 3, 10, 5, 5, 1, 9], &dev).unwrap();
            let weights = Tensor::randn(0f32, 1.0, 7, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let var = Var::from_tensor(&x).unwrap();
            let fused = token_cross_entropy(var.as_tensor(), &targets).unwrap();
            let reference = composed_cross_entropy(var.as_tensor(), &targets).unwrap();
            let diff = (&fused - &reference)
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap();
            assert!(
                diff.to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
                    < 1e-5
            );
            let grad = |loss: Tensor| {
                let g = (loss * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                g.get(var.as_tensor()).unwrap().clone()
            };
            let d = (grad(fused) - grad(reference)).unwrap().abs().unwrap();
            let d = d.flatten_all().unwrap().max(0).unwrap();
            assert!(d.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap() < 1e-6);
        }
    }

    #[test]
    fn projected_loss_matches_projection_then_loss_in_value_and_gradients() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let rand = |shape: (usize, usize), std: f32| randn(shape, std, dtype);
            let rows = Var::from_tensor(&rand((7, 5), 1.0)).unwrap();
            let weight = Var::from_tensor(&rand((11, 5), 1.0)).unwrap();
            let targets = Tensor::new(&[0u32, 3, 10, 5, 5, 1, 9], &dev).unwrap();
            let weights = rand((7, 1), 1.0).squeeze(1).unwrap();
            let fused = projected_cross_entropy(rows.as_tensor(), weight.as_tensor(), &targets)
                .unwrap()
                .unwrap();
            let logits = rows
                .as_tensor()
                .matmul(&weight.as_tensor().t().unwrap())
                .unwrap();
            let reference = composed_cross_entropy(&logits, &targets).unwrap();
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            let max_abs = |t: Tensor| -> f64 {
                let t = t.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                t.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
            };
            assert!(max_abs((&fused - &reference).unwrap()) < tol);
            let grads = |loss: Tensor| {
                let g = (loss * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let get = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
                (get(&rows), get(&weight))
            };
            let ((fr, fw), (cr, cw)) = (grads(fused), grads(reference));
            assert!(max_abs((fr - cr).unwrap()) < tol);
            assert!(max_abs((fw - cw).unwrap()) < tol);
        }
    }

    #[test]
    fn rejects_targets_outside_the_vocabulary() {
        let x = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let t = Tensor::new(&[1u32, 4], &Device::Cpu).unwrap();
        let err = token_cross_entropy(&x, &t).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
    }
}

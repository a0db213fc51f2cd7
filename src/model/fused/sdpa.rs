//! Grouped-query attention `softmax(q k^T * scale + mask) v` as one op, heads merged.
//!
//! With the scores and probabilities (`[batch, heads, seq, seq]`, a layer's largest
//! tensors) as graph nodes, candle's backward zeroes an accumulator for each and copies
//! their gradient into it. This op keeps them inside: the forward runs candle's GEMMs
//! on the storages, keeps the probabilities for the backward, and returns the output
//! already merged to `[batch, seq, heads * head_dim]`; the backward forms the gradients
//! of q, k and v from the same kernels.

use super::attention::{masked_softmax_rows, SoftmaxGrad};
use super::heads::{permute, split_heads, Dims};
use super::Float;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

/// Attention of `q` `[b, heads, t, d]` over `k`, `v` `[b, kv_heads, s, d]` under `mask`
/// `[t, s]` (0 / -inf), query heads grouped `heads / kv_heads` to a key/value head.
/// Returns `[b, t, heads * d]`. `None` where the op does not apply (not CPU, or not
/// f32/f64 throughout): the caller composes.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> Result<Option<Tensor>> {
    let dtype = q.dtype();
    let fused = q.device().is_cpu()
        && matches!(dtype, DType::F32 | DType::F64)
        && k.dtype() == dtype
        && v.dtype() == dtype;
    if !fused {
        return Ok(None);
    }
    let (b, heads, t, d) = q.dims4()?;
    let (kb, kv, s, kd) = k.dims4()?;
    if (kb, kd) != (b, d) || v.dims4()? != (b, kv, s, d) || kv == 0 || heads % kv != 0 {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?}",
            q.shape(),
            k.shape(),
            v.shape()
        );
    }
    if mask.dims2()? != (t, s) {
        candle_core::bail!("attention: mask {:?} for {t} x {s} scores", mask.shape());
    }
    let op = Attention {
        shape: Shape4 {
            b,
            heads,
            kv,
            t,
            s,
            d,
        },
        scale,
        mask: mask.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?,
        probs: Mutex::new(None),
    };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    q.apply_op3(&k, &v, op).map(Some)
}

#[derive(Clone, Copy)]
struct Shape4 {
    b: usize,
    heads: usize,
    kv: usize,
    t: usize,
    s: usize,
    d: usize,
}

impl Shape4 {
    /// Query rows per key/value head: the group's heads times the sequence.
    fn group_rows(&self) -> usize {
        self.heads / self.kv * self.t
    }

    fn heads_dims(&self) -> Dims {
        Dims {
            b: self.b,
            n: self.heads,
            t: self.t,
            d: self.d,
        }
    }
}

struct Attention {
    shape: Shape4,
    scale: f64,
    mask: Vec<f64>,
    /// The probabilities `[b * kv, group_rows, s]`, from the forward for the backward.
    probs: Mutex<Option<CpuStorage>>,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention"
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
        let Shape4 { b, kv, s, d, .. } = self.shape;
        let (batch, rows) = (b * kv, self.shape.group_rows());
        let q_l = Layout::contiguous_with_offset((batch, rows, d), l1.start_offset());
        let k_t =
            Layout::contiguous_with_offset((batch, s, d), l2.start_offset()).transpose(1, 2)?;
        let scores = s1.matmul(s2, (batch, rows, s, d), &q_l, &k_t)?;
        let probs = match &scores {
            CpuStorage::F32(x) => CpuStorage::F32(self.softmax(x)),
            CpuStorage::F64(x) => CpuStorage::F64(self.softmax(x)),
            _ => candle_core::bail!("attention: f32 or f64 only"),
        };
        drop(scores);
        let p_l = Layout::contiguous((batch, rows, s));
        let v_l = Layout::contiguous_with_offset((batch, s, d), l3.start_offset());
        let out = probs.matmul(s3, (batch, rows, d, s), &p_l, &v_l)?;
        *self.probs.lock().expect("not poisoned") = Some(probs);
        let dims = self.shape.heads_dims();
        let merged = match &out {
            CpuStorage::F32(x) => CpuStorage::F32(permute(x, dims, false)),
            CpuStorage::F64(x) => CpuStorage::F64(permute(x, dims, false)),
            _ => candle_core::bail!("attention: f32 or f64 only"),
        };
        Ok((merged, Shape::from((b, self.shape.t, self.shape.heads * d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Shape4 {
            b, heads, kv, s, d, ..
        } = self.shape;
        let grouped = (b, kv, self.shape.group_rows(), d);
        // Detached: these products are gradients, not part of the graph.
        let (q, k, v) = (q.detach(), k.detach(), v.detach());
        let q_grouped = q.reshape(grouped)?;
        let probs = self.kept_probs(&q_grouped, &k)?;
        let d_out = split_heads(&grad_res.detach(), heads)?
            .ok_or_else(|| candle_core::Error::Msg("attention grad: no fused split".into()))?
            .reshape(grouped)?;
        let d_probs = d_out.matmul(&v.t()?)?;
        let d_scores = probs.apply_op2_no_bwd(&d_probs, &SoftmaxGrad { scale: self.scale })?;
        drop(d_probs);
        let dq = d_scores.matmul(&k)?.reshape(q.shape())?;
        let dk = d_scores.t()?.matmul(&q_grouped)?;
        let dv = probs.t()?.matmul(&d_out)?;
        debug_assert_eq!(dk.dims4()?, (b, kv, s, d));
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

impl Attention {
    /// Row `r` of each group's scores takes mask row `r % t`.
    fn softmax<T: Float>(&self, scores: &[T]) -> Vec<T> {
        let mask: Vec<T> = self.mask.iter().map(|&m| T::from_f64(m)).collect();
        masked_softmax_rows(scores, &mask, self.shape.s, self.scale)
    }

    /// The forward's probabilities `[b, kv, group_rows, s]`, or the same recomputed if
    /// they were taken by an earlier backward through this graph.
    fn kept_probs(&self, q_grouped: &Tensor, k: &Tensor) -> Result<Tensor> {
        let Shape4 { b, kv, s, .. } = self.shape;
        let shape = (b, kv, self.shape.group_rows(), s);
        let dev = q_grouped.device();
        match self.probs.lock().expect("not poisoned").take() {
            Some(CpuStorage::F32(p)) => Tensor::from_vec(p, shape, dev),
            Some(CpuStorage::F64(p)) => Tensor::from_vec(p, shape, dev),
            _ => {
                let scores = q_grouped.matmul(&k.t()?)?;
                let mask = Tensor::from_vec(self.mask.clone(), (self.shape.t, s), dev)?;
                super::masked_softmax(&scores, &mask.to_dtype(scores.dtype())?, self.scale)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_abs, randn};
    use super::*;
    use candle_core::{Device, Var};

    /// The composition the model used: grouped scores, masked softmax, merge.
    fn composed(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Tensor {
        let (b, heads, t, d) = q.dims4().unwrap();
        let kv = k.dim(1).unwrap();
        let grouped = q.reshape((b, kv, heads / kv * t, d)).unwrap();
        let scores = grouped.matmul(&k.t().unwrap()).unwrap();
        let probs = crate::model::fused::masked_softmax(&scores, mask, scale).unwrap();
        let out = probs.matmul(v).unwrap().reshape((b, heads, t, d)).unwrap();
        out.transpose(1, 2)
            .unwrap()
            .reshape((b, t, heads * d))
            .unwrap()
    }

    #[test]
    fn attention_matches_the_composition_in_value_and_gradients() {
        let dev = Device::Cpu;
        let (t, s) = (3, 5);
        let mut mask = vec![0f32; t * s];
        for i in 0..t {
            for j in (i + 3)..s {
                mask[i * s + j] = f32::NEG_INFINITY;
            }
        }
        for dtype in [DType::F32, DType::F64] {
            let mask = Tensor::from_vec(mask.clone(), (t, s), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let rand = |shape: (usize, usize, usize, usize)| randn(shape, 1.0, dtype);
            // Two batches, six query heads in two groups of three.
            let q = Var::from_tensor(&rand((2, 6, t, 4))).unwrap();
            let k = Var::from_tensor(&rand((2, 2, s, 4))).unwrap();
            let v = Var::from_tensor(&rand((2, 2, s, 4))).unwrap();
            let probe = rand((1, 2, t, 24)).squeeze(0).unwrap();
            let (qt, kt, vt) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
            let fused = attention(qt, kt, vt, &mask, 0.5).unwrap().unwrap();
            let reference = composed(qt, kt, vt, &mask, 0.5);
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            assert!(max_abs((&fused - &reference).unwrap()) < tol);
            let grads = |y: Tensor| {
                let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                let get = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
                [get(&q), get(&k), get(&v)]
            };
            for (f, c) in grads(fused).into_iter().zip(grads(reference)) {
                assert!(max_abs((f - c).unwrap()) < tol);
            }
        }
    }
}

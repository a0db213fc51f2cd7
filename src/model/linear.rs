//! A dense layer `x W^T + b` with Hugging Face's `[out, in]` weight layout.

use super::bf16_gemm::{self, PackedWeight};
use super::kernels::Kernels;
use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    packed: Bf16Packing,
}

impl Linear {
    pub(crate) fn load(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            packed: Bf16Packing::default(),
        })
    }

    /// `x`: `[batch, seq, in]`. Runs as one `[batch * seq, in]` GEMM: candle's own
    /// `Linear` broadcasts the weight into a batched matmul, which is slower on CPU.
    pub(crate) fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let fused = match kernels {
            Kernels::Trainable => super::fused::linear(x, &self.weight)?,
            Kernels::Inference => {
                let (b, t, d) = x.dims3()?;
                let x2 = x.reshape((b * t, d))?;
                self.packed
                    .times_transposed(&x2, &self.weight)?
                    .map(|y| y.reshape((b, t, ())))
                    .transpose()?
            }
            Kernels::Composite => None,
        };
        let y = match fused {
            Some(y) => y,
            None => {
                let (b, t, d) = x.dims3()?;
                let y = times_transposed(&x.reshape((b * t, d))?, &self.weight)?;
                y.reshape((b, t, ()))?
            }
        };
        match &self.bias {
            Some(bias) => y.broadcast_add(bias),
            None => Ok(y),
        }
    }
}

/// `x W^T` for `x` `[m, in]` and `W` `[out, in]`. A few rows (decoding a batch of
/// requests) run as `(W x^T)^T`: on CPU, candle's GEMM repacks the whole weight for
/// every call with 2 to a few dozen rows, and that form is 2-3x faster there (one row
/// takes a matrix-vector path either way).
pub(crate) fn times_transposed(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let m = x.dim(0)?;
    if x.device().is_cpu() && (2..=SKINNY_ROWS).contains(&m) {
        return w.matmul(&x.t()?)?.t()?.contiguous();
    }
    x.matmul(&w.t()?)
}

/// Rows up to which [`times_transposed`] turns the product around.
const SKINNY_ROWS: usize = 32;

/// A weight's bf16 copy packed for [`bf16_gemm`], made the first time a bf16 product
/// on a CPU with AVX512-BF16 needs it (inference only; the weight itself stays for
/// everything else).
#[derive(Debug, Clone, Default)]
pub(crate) struct Bf16Packing(Arc<OnceLock<Option<PackedWeight>>>);

impl Bf16Packing {
    /// `x W^T` for `x` `[m, in]` through the bf16 kernel, when both are bf16 on a CPU
    /// that has it; `None` otherwise (the caller uses candle's product).
    pub(crate) fn times_transposed(&self, x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
        let applies = x.dtype() == DType::BF16
            && w.dtype() == DType::BF16
            && x.device().is_cpu()
            && bf16_gemm::available();
        if !applies {
            return Ok(None);
        }
        let packed = self.0.get_or_init(|| {
            let (n, k) = w.dims2().ok()?;
            let data = w.flatten_all().ok()?.to_vec1::<half::bf16>().ok()?;
            Some(PackedWeight::pack(&data, n, k))
        });
        let Some(packed) = packed else {
            return Ok(None);
        };
        let (m, k) = x.dims2()?;
        if k != packed.cols() {
            candle_core::bail!(
                "bf16 product of [{m}, {k}] with a weight of {k} inputs expected {}",
                packed.cols()
            );
        }
        let x = x.contiguous()?;
        let out = super::avx512_rows::with_bf16(&x, |data| Ok(bf16_gemm::matmul(data, m, packed)))?;
        Tensor::from_vec(out, (m, packed.rows()), x.device()).map(Some)
    }
}

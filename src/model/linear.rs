//! A dense layer `x W^T + b` with Hugging Face's `[out, in]` weight layout.

use super::kernels::Kernels;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn load(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// `x`: `[batch, seq, in]`. Runs as one `[batch * seq, in]` GEMM: candle's own
    /// `Linear` broadcasts the weight into a batched matmul, which is slower on CPU.
    pub(crate) fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let fused = if kernels == Kernels::Trainable {
            super::fused::linear(x, &self.weight)?
        } else {
            None
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

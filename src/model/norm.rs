//! The norms of every architecture: RMSNorm in its three castings, and LayerNorm.
//!
//! Where the cast back to the model's dtype happens is what separates them in bf16:
//! Llama scales after it, OLMo 2 and Gemma before it (see [`NormKind`]).

use super::arch::NormKind;
use super::kernels::Kernels;
use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

/// A norm over the last dimension with a learned scale (and a bias for LayerNorm).
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    kind: NormKind,
    weight: Tensor,
    bias: Option<Tensor>,
    eps: f64,
}

impl Norm {
    pub(crate) fn load(kind: NormKind, size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let bias = if kind == NormKind::Layer {
            Some(vb.get(size, "bias")?)
        } else {
            None
        };
        Ok(Self {
            kind,
            weight: vb.get(size, "weight")?,
            bias,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        match self.kind {
            NormKind::Rms => self.rms(x, kernels),
            NormKind::RmsScaledInF32 => {
                let normed = normalise_rms(x, self.eps)?;
                normed
                    .broadcast_mul(&self.weight.to_dtype(normed.dtype())?)?
                    .to_dtype(x.dtype())
            }
            NormKind::RmsPlusOne => {
                let normed = normalise_rms(x, self.eps)?;
                let scale = (self.weight.to_dtype(normed.dtype())? + 1.0)?;
                normed.broadcast_mul(&scale)?.to_dtype(x.dtype())
            }
            NormKind::Layer => self.layer_norm(x),
        }
    }

    /// Llama's RMSNorm: normalised in f32, cast back, then scaled.
    fn rms(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        // candle's fused kernel rounds the RMS itself to bf16/f16 before dividing (a
        // per-row error up to 2^-8); transformers divides in f32. So the fused kernel
        // serves f32 inference only.
        if kernels == Kernels::Inference && x.dtype() == DType::F32 {
            return candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps as f32);
        }
        if kernels == Kernels::Inference {
            if let Some(y) = super::avx512_rows::rms_norm_tensor(x, &self.weight, self.eps)? {
                return Ok(y);
            }
        }
        if kernels == Kernels::Trainable {
            super::fused::rms_norm(x, &self.weight, self.eps)
        } else {
            super::fused::rms_norm_composed(x, &self.weight, self.eps)
        }
    }

    /// LayerNorm in f32 (torch accumulates in f32 for half types too), cast back.
    fn layer_norm(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(compute_dtype(dtype))?;
        let centred = xf.broadcast_sub(&xf.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let w = self.weight.to_dtype(normed.dtype())?;
        let mut y = normed.broadcast_mul(&w)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.to_dtype(normed.dtype())?)?;
        }
        y.to_dtype(dtype)
    }
}

/// `norm(x)` where the architecture has the norm, else `x`.
pub(crate) fn apply(norm: &Option<Norm>, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    match norm {
        Some(n) => n.forward(x, kernels),
        None => Ok(x.clone()),
    }
}

/// `x / sqrt(mean(x^2) + eps)` in f32 (f64 for f64), not cast back.
fn normalise_rms(x: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.to_dtype(compute_dtype(x.dtype()))?;
    let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    x.broadcast_div(&rms)
}

/// Softmax and normalisation run in f32 (f64 for f64 models), as transformers does.
pub(crate) fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

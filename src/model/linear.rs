//! A dense layer `x W^T + b` with Hugging Face's `[out, in]` weight layout.

use super::kernels::Kernels;
use super::{avx512_rows, bf16_gemm, f32_gemm};
use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    packed: CpuPacking,
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
            packed: CpuPacking::default(),
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

/// A weight packed for the CPU kernels ([`bf16_gemm`] for bf16, [`f32_gemm`] for
/// f32), made the first time an inference product on a CPU that has the kernel's
/// instructions needs it. The weight itself stays for everything else (training,
/// other devices), so a packed model holds its weights twice (where memory allows:
/// see [`Packed::of`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct CpuPacking(Arc<OnceLock<Option<Packed>>>);

#[derive(Debug)]
enum Packed {
    Bf16(bf16_gemm::PackedWeight),
    F32(f32_gemm::PackedWeight),
}

impl Packed {
    /// Packs `w` `[n, k]` for its dtype's kernel, when this CPU has it and memory has
    /// room for the copy ([`room_for_copy`]): where memory is short, a weight stays on
    /// candle's product instead.
    fn of(w: &Tensor) -> Option<Self> {
        let (n, k) = w.dims2().ok()?;
        let bytes = (w.elem_count() * w.dtype().size_in_bytes()) as u64;
        if !room_for_copy(bytes, crate::memory::available_bytes()) {
            return None;
        }
        match w.dtype() {
            DType::BF16 if bf16_gemm::available() => {
                let data = w.flatten_all().ok()?.to_vec1::<half::bf16>().ok()?;
                Some(Self::Bf16(bf16_gemm::PackedWeight::pack(&data, n, k)))
            }
            DType::F32 if f32_gemm::available() => {
                let w = w.contiguous().ok()?;
                avx512_rows::with_f32(&w, |data| Ok(f32_gemm::PackedWeight::pack(data, n, k)))
                    .ok()
                    .map(Self::F32)
            }
            _ => None,
        }
    }

    fn shape(&self) -> (usize, usize) {
        match self {
            Self::Bf16(p) => (p.rows(), p.cols()),
            Self::F32(p) => (p.rows(), p.cols()),
        }
    }
}

/// Memory a packed copy must leave available beside it, for the activations: without
/// it, a model that fills most of memory would pack until nothing was left for them.
const ACTIVATION_RESERVE: u64 = 1 << 30;

/// Whether a packed copy of `bytes` fits in `available` (`None`: unknown, so yes): at
/// most half of it, and leaving [`ACTIVATION_RESERVE`].
fn room_for_copy(bytes: u64, available: Option<u64>) -> bool {
    available.is_none_or(|room| bytes <= room / 2 && room - bytes >= ACTIVATION_RESERVE)
}

impl CpuPacking {
    /// `x W^T` for `x` `[m, in]` through the packed kernel, when `x` and `W` share a
    /// dtype that has one on this CPU; `None` otherwise (the caller uses candle's
    /// product).
    pub(crate) fn times_transposed(&self, x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
        if x.dtype() != w.dtype() || !x.device().is_cpu() || !w.device().is_cpu() {
            return Ok(None);
        }
        let Some(packed) = self.0.get_or_init(|| Packed::of(w)) else {
            return Ok(None);
        };
        let (n, k_packed) = packed.shape();
        let (m, k) = x.dims2()?;
        if k != k_packed {
            candle_core::bail!("product of [{m}, {k}] with a weight of {k_packed} inputs");
        }
        let x = x.contiguous()?;
        match packed {
            Packed::Bf16(p) => {
                let out = avx512_rows::with_bf16(&x, |data| Ok(bf16_gemm::matmul(data, m, p)))?;
                Tensor::from_vec(out, (m, n), x.device()).map(Some)
            }
            Packed::F32(p) => {
                let out = avx512_rows::with_f32(&x, |data| Ok(f32_gemm::matmul(data, m, p)))?;
                Tensor::from_vec(out, (m, n), x.device()).map(Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy is made while it takes at most half of what is available and leaves the
    /// reserve; a large model's last weights stay unpacked rather than take it.
    #[test]
    fn a_packed_copy_leaves_the_activation_reserve() {
        const GIB: u64 = 1 << 30;
        assert!(room_for_copy(100 << 20, Some(8 * GIB)));
        assert!(room_for_copy(100 << 20, None));
        assert!(!room_for_copy(5 * GIB, Some(8 * GIB)), "more than half");
        assert!(room_for_copy(4 * GIB, Some(8 * GIB)));
        assert!(!room_for_copy(100 << 20, Some(GIB)), "into the reserve");
        assert!(room_for_copy(100 << 20, Some(GIB + (100 << 20))));
        assert!(!room_for_copy(1, Some(0)));
    }
}

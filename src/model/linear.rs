//! A dense layer `x W^T + b` with Hugging Face's `[out, in]` weight layout.

use super::kernels::Kernels;
use super::{avx512_rows, bf16_gemm, f32_gemm};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn load(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = Weight::new(vb.get((out_dim, in_dim), "weight")?);
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// `x`: `[..., in]`.
    pub(crate) fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let y = self.weight.product(x, kernels)?;
        match &self.bias {
            Some(bias) => y.broadcast_add(bias),
            None => Ok(y),
        }
    }

    pub(crate) fn weight_mut(&mut self) -> &mut Weight {
        &mut self.weight
    }
}

/// A `[out, in]` weight as loaded, as packed for this CPU's inference kernels, or
/// both. The packed copy is made the first time an inference product on a CPU with
/// the kernel's instructions needs it ([`bf16_gemm`] for bf16, [`f32_gemm`] for f32),
/// and the loaded one serves everything else (training, other devices). An
/// inference-only model drops the loaded copy ([`Self::keep_packed_only`]) so that it
/// holds its weights once.
#[derive(Debug, Clone)]
pub(crate) struct Weight {
    /// Empty after [`Self::keep_packed_only`]; rebuilt from the packed copy the first
    /// time a kernel other than the packed one asks for it.
    loaded: OnceLock<Tensor>,
    packed: CpuPacking,
}

impl Weight {
    pub(crate) fn new(tensor: Tensor) -> Self {
        Self {
            loaded: OnceLock::from(tensor),
            packed: CpuPacking::default(),
        }
    }

    /// The weight as a tensor, rebuilt (bit for bit) from the packed copy where
    /// [`Self::keep_packed_only`] dropped it.
    pub(crate) fn tensor(&self) -> Result<&Tensor> {
        if let Some(tensor) = self.loaded.get() {
            return Ok(tensor);
        }
        let Some(packed) = self.packed.0.get().and_then(Option::as_ref) else {
            candle_core::bail!("a weight that is neither loaded nor packed");
        };
        let rebuilt = packed.unpack()?;
        // Another thread may have rebuilt it meanwhile: both copies are the same.
        Ok(self.loaded.get_or_init(|| rebuilt))
    }

    /// `x W^T` for `x` `[..., in]` with the kernels `kernels` names: training's fused op
    /// on `x` as it is (a reshape would cost its backward a copy), otherwise one
    /// `[rows, in]` GEMM (candle's own `Linear` broadcasts the weight into a batched
    /// matmul, which is slower on CPU).
    pub(crate) fn product(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        if kernels == Kernels::Trainable {
            if let Some(y) = super::fused::linear(x, self.tensor()?)? {
                return Ok(y);
            }
        }
        let rows = |x: &Tensor| match kernels {
            Kernels::Inference => self.inference_product(x),
            _ => times_transposed(x, self.tensor()?),
        };
        if x.rank() == 2 {
            return rows(x);
        }
        let mut dims = x.dims().to_vec();
        let k = dims.pop().unwrap_or(1);
        let y = rows(&x.reshape(((), k))?)?;
        dims.push(y.dim(1)?);
        y.reshape(dims)
    }

    /// `x W^T` for `x` `[m, in]` at inference: through the packed kernel where this CPU
    /// has one for the dtype, otherwise [`times_transposed`].
    fn inference_product(&self, x: &Tensor) -> Result<Tensor> {
        match self.packed_for(x) {
            Some(packed) => packed.times_transposed(x),
            None => times_transposed(x, self.tensor()?),
        }
    }

    /// Packs the weight now and drops the loaded copy, for a model that only infers:
    /// its weights are then held once. A weight with no packed kernel here (another
    /// device or dtype, a CPU without the instructions, memory too short for the copy)
    /// stays as loaded.
    pub(crate) fn keep_packed_only(&mut self) {
        if self
            .loaded
            .get()
            .is_some_and(|w| self.packing_of(w).is_some())
        {
            self.loaded.take();
        }
    }

    /// The packed copy for a product with `x`, packing it if it is the first.
    fn packed_for(&self, x: &Tensor) -> Option<&Packed> {
        if !x.device().is_cpu() {
            return None;
        }
        let packed = match self.loaded.get() {
            Some(w) if w.dtype() != x.dtype() => None,
            Some(w) => self.packing_of(w),
            None => self.packed.0.get().and_then(Option::as_ref),
        }?;
        (packed.dtype() == x.dtype()).then_some(packed)
    }

    fn packing_of(&self, w: &Tensor) -> Option<&Packed> {
        if !w.device().is_cpu() {
            return None;
        }
        self.packed.0.get_or_init(|| Packed::of(w)).as_ref()
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

/// A weight's copy packed for the CPU kernels, made at most once and shared by the
/// clones of its model; `None` inside: this weight has no packed kernel here.
#[derive(Debug, Clone, Default)]
struct CpuPacking(Arc<OnceLock<Option<Packed>>>);

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

    fn dtype(&self) -> DType {
        match self {
            Self::Bf16(_) => DType::BF16,
            Self::F32(_) => DType::F32,
        }
    }

    fn shape(&self) -> (usize, usize) {
        match self {
            Self::Bf16(p) => (p.rows(), p.cols()),
            Self::F32(p) => (p.rows(), p.cols()),
        }
    }

    /// The weight `[n, k]` back as a CPU tensor, bit for bit.
    fn unpack(&self) -> Result<Tensor> {
        let shape = self.shape();
        match self {
            Self::Bf16(p) => Tensor::from_vec(p.unpack(), shape, &Device::Cpu),
            Self::F32(p) => Tensor::from_vec(p.unpack(), shape, &Device::Cpu),
        }
    }

    /// `x W^T` for `x` `[m, k]` of the packed dtype, on the CPU.
    fn times_transposed(&self, x: &Tensor) -> Result<Tensor> {
        let (n, k_packed) = self.shape();
        let (m, k) = x.dims2()?;
        if k != k_packed {
            candle_core::bail!("product of [{m}, {k}] with a weight of {k_packed} inputs");
        }
        let x = x.contiguous()?;
        match self {
            Self::Bf16(p) => {
                let out = avx512_rows::with_bf16(&x, |data| Ok(bf16_gemm::matmul(data, m, p)))?;
                Tensor::from_vec(out, (m, n), x.device())
            }
            Self::F32(p) => {
                let out = avx512_rows::with_f32(&x, |data| Ok(f32_gemm::matmul(data, m, p)))?;
                Tensor::from_vec(out, (m, n), x.device())
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A weight kept packed only drops its loaded copy where this CPU has the dtype's
    /// kernel, multiplies as the full weight does, bit for bit, and gives the same
    /// tensor back when a kernel asks for it.
    #[test]
    fn a_weight_kept_packed_only_multiplies_and_rebuilds_exactly() {
        let dev = Device::Cpu;
        for (dtype, kernel) in [
            (DType::F32, f32_gemm::available()),
            (DType::BF16, bf16_gemm::available()),
        ] {
            let random = |shape: (usize, usize)| {
                Tensor::randn(0f32, 1.0, shape, &dev)
                    .and_then(|t| t.to_dtype(dtype))
                    .unwrap()
            };
            let (w, x) = (random((70, 129)), random((13, 129)));
            let full = Weight::new(w.clone());
            let mut lean = Weight::new(w.clone());
            lean.keep_packed_only();
            assert_eq!(lean.loaded.get().is_none(), kernel, "{dtype:?}");
            let bits = |t: &Tensor| {
                let t = t.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
                t.to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            let product = |w: &Weight| bits(&w.inference_product(&x).unwrap());
            assert_eq!(product(&lean), product(&full), "{dtype:?}");
            assert_eq!(bits(lean.tensor().unwrap()), bits(&w), "{dtype:?}");
        }
    }

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

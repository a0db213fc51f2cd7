//! Fused CPU kernels with a backward pass, for the training and sharpness paths.
//!
//! candle's own fused kernels (`softmax_last_dim`, `rms_norm`) pass no gradient, and
//! the differentiable compositions allocate and walk a full tensor per elementary op,
//! forward and backward. These kernels do each in one pass and register their own
//! backward. Other devices and dtypes take the composition, which gives the same
//! numbers (the tests compare both, values and gradients).

use candle_core::{Layout, Result};

mod attention;
mod heads;
mod linear;
mod rms_norm;
mod rotary;
mod sdpa;
mod swiglu;

pub(crate) use attention::masked_softmax;
pub(crate) use heads::split_heads;
pub(crate) use linear::linear;
pub(crate) use rms_norm::{composed as rms_norm_composed, rms_norm};
pub(crate) use rotary::rotate_into_heads;
pub(crate) use sdpa::attention;
pub(crate) use swiglu::swiglu;

/// Runs a kernel on the f32 or f64 data of CPU storages of one dtype, each sliced to
/// its contiguous layout, and wraps the result in that dtype. Every fused op has the
/// same dispatch, so it is written once:
/// `float_kernel!("swiglu", (g = s1, l1), (u = s2, l2) => forward(g, u))`.
macro_rules! float_kernel {
    ($name:literal, $(($x:ident = $s:expr, $l:expr)),+ => $body:expr) => {{
        use candle_core::CpuStorage::{F32, F64};
        match ($($s,)+) {
            ($(F32($x),)+) => {
                $(let $x = &$x[crate::model::fused::range($l)?];)+
                F32($body)
            }
            ($(F64($x),)+) => {
                $(let $x = &$x[crate::model::fused::range($l)?];)+
                F64($body)
            }
            _ => candle_core::bail!("{}: f32 or f64 only, one dtype", $name),
        }
    }};
}
pub(crate) use float_kernel;

/// The data range of a contiguous layout, to slice a storage with; the kernels take
/// nothing else.
pub(crate) fn range(layout: &Layout) -> Result<std::ops::Range<usize>> {
    layout
        .contiguous_offsets()
        .map(|(a, b)| a..b)
        .ok_or_else(|| candle_core::Error::Msg("fused kernel needs a contiguous tensor".into()))
}

/// The float types the kernels run in.
pub(crate) trait Float:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn from_f64(v: f64) -> Self;
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// The largest element of a row (`-inf` for an empty or all-masked row).
pub(crate) fn row_max<T: Float>(row: &[T]) -> T {
    row.iter()
        .fold(T::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{DType, Device, Shape, Tensor};

    /// Normal random values with standard deviation `std`, in `dtype`, on the CPU.
    pub(crate) fn randn<S: Into<Shape>>(shape: S, std: f32, dtype: DType) -> Tensor {
        Tensor::randn(0f32, std, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// The largest absolute element.
    pub(crate) fn max_abs(t: Tensor) -> f64 {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar()
            .unwrap()
    }
}

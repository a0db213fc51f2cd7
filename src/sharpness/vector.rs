//! Vectors in parameter space: one tensor per parameter, in a fixed order.
//!
//! A Hessian-vector product takes and returns such vectors; Hutchinson's probes are
//! Rademacher ones, drawn from a seed so that a probe is the same whatever else ran
//! before it (a resumed run draws the probes it has not finished yet, and nothing else).
//!
//! ```
//! # use ckpt::sharpness::vector::{rademacher, dot};
//! # use candle_core::{DType, Device};
//! let shapes = vec![vec![2, 3], vec![4]];
//! let z = rademacher(&shapes, 7, 0, DType::F32, &Device::Cpu)?;
//! assert_eq!(dot(&z, &z)?, 10.0); // every entry is +1 or -1
//! # Ok::<(), ckpt::Error>(())
//! ```

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// A vector in parameter space: one tensor per parameter.
pub(crate) type ParamVector = Vec<Tensor>;

/// SplitMix64: a tiny, well-mixed generator whose stream is fixed by this code alone
/// (no crate version can change which probes a seed gives).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The generator of parameter `param` of probe `probe` under `seed`.
fn stream(seed: u64, probe: u64, param: u64) -> SplitMix64 {
    let mut mix = SplitMix64(seed);
    let a = mix.next() ^ probe.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut mix = SplitMix64(a);
    let b = mix.next() ^ param.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7);
    SplitMix64(SplitMix64(b).next())
}

/// Probe `probe` of `seed`: entries +1 or -1 with equal probability, one tensor per
/// shape. Entry `i` of a parameter is bit `i % 64` of the `i / 64`-th draw of its
/// stream (1 gives +1).
pub fn rademacher(
    shapes: &[Vec<usize>],
    seed: u64,
    probe: u64,
    dtype: DType,
    device: &Device,
) -> Result<ParamVector> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            let n: usize = shape.iter().product();
            let mut rng = stream(seed, probe, i as u64);
            let mut signs = Vec::with_capacity(n);
            let mut bits = 0u64;
            for j in 0..n {
                if j % 64 == 0 {
                    bits = rng.next();
                }
                signs.push(if bits >> (j % 64) & 1 == 1 {
                    1f32
                } else {
                    -1f32
                });
            }
            Ok(Tensor::from_vec(signs, shape.as_slice(), device)?.to_dtype(dtype)?)
        })
        .collect()
}

/// `sum_i <a_i, b_i>`, summed in f64 whatever the tensors' dtype: finite differences
/// subtract two such sums, so their rounding must stay far below the difference. The
/// products are taken in the tensors' dtype (exact against a +-1 probe).
pub fn dot(a: &[Tensor], b: &[Tensor]) -> Result<f64> {
    Ok(dots(a, b)?.iter().sum())
}

/// `<a_i, b_i>` for each parameter `i`, in f64 as [`dot`]: the per-block parts of a
/// quadratic form.
pub(crate) fn dots(a: &[Tensor], b: &[Tensor]) -> Result<Vec<f64>> {
    check_aligned(a, b)?;
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let product = (x * y.to_dtype(x.dtype())?)?.to_dtype(DType::F64)?;
            Ok(product.sum_all()?.to_scalar::<f64>()?)
        })
        .collect()
}

/// The Euclidean norm.
pub(crate) fn norm(a: &[Tensor]) -> Result<f64> {
    Ok(dot(a, a)?.sqrt())
}

/// Total number of entries.
pub fn len(a: &[Tensor]) -> usize {
    a.iter().map(Tensor::elem_count).sum()
}

/// `a + s * b`.
pub(crate) fn add_scaled(a: &[Tensor], s: f64, b: &[Tensor]) -> Result<ParamVector> {
    check_aligned(a, b)?;
    a.iter().zip(b).map(|(x, y)| Ok((x + (y * s)?)?)).collect()
}

/// `s * a`.
pub(crate) fn scale(a: &[Tensor], s: f64) -> Result<ParamVector> {
    a.iter().map(|x| Ok((x * s)?)).collect()
}

fn check_aligned(a: &[Tensor], b: &[Tensor]) -> Result<()> {
    if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.shape() != y.shape()) {
        return Err(Error::Invalid(format!(
            "parameter vectors do not match: {} tensors against {}",
            a.len(),
            b.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_signs_fixed_by_seed_and_index() {
        let shapes = vec![vec![50, 40], vec![7]];
        let dev = Device::Cpu;
        let z = rademacher(&shapes, 1, 3, DType::F64, &dev).unwrap();
        assert_eq!(dot(&z, &z).unwrap(), 2007.0);
        let again = rademacher(&shapes, 1, 3, DType::F64, &dev).unwrap();
        let other = rademacher(&shapes, 1, 4, DType::F64, &dev).unwrap();
        let reseeded = rademacher(&shapes, 2, 3, DType::F64, &dev).unwrap();
        assert_eq!(dot(&z, &again).unwrap(), 2007.0);
        // Independent signs: the overlap of two probes is ~N(0, n), |.| < 5 sqrt(n).
        for w in [other, reseeded] {
            assert!(dot(&z, &w).unwrap().abs() < 5.0 * 2007f64.sqrt());
        }
        // Balanced: the sum of 2000 signs is within 5 standard deviations of 0.
        let sum: f64 = z[0].sum_all().unwrap().to_scalar().unwrap();
        assert!(sum.abs() < 5.0 * 2000f64.sqrt(), "{sum}");
    }

    #[test]
    fn arithmetic_and_mismatch() {
        let dev = Device::Cpu;
        let a = vec![Tensor::new(&[1f32, 2.0], &dev).unwrap()];
        let b = vec![Tensor::new(&[3f32, -1.0], &dev).unwrap()];
        assert_eq!(dot(&a, &b).unwrap(), 1.0);
        assert_eq!(norm(&b).unwrap(), 10f64.sqrt());
        let c = add_scaled(&a, 2.0, &b).unwrap();
        assert_eq!(c[0].to_vec1::<f32>().unwrap(), [7.0, 0.0]);
        assert_eq!(
            scale(&a, -1.0).unwrap()[0].to_vec1::<f32>().unwrap(),
            [-1.0, -2.0]
        );
        let short = vec![Tensor::new(&[1f32], &dev).unwrap()];
        assert!(dot(&a, &short).is_err());
    }
}

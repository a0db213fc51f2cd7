//! Row kernels for inference on CPUs with AVX-512, sixteen values at a time: the
//! softmax of attention (f32, and bf16 around it), Llama's RMSNorm and SwiGLU's
//! `silu(gate) * up` in bf16, and the statistics of a scored row of logits.
//!
//! candle's bf16 element-wise ops convert element by element and round after every
//! elementary step (its bf16 SiLU rounds three times). These widen to f32 once, compute
//! in f32, and round to bf16 where transformers rounds, with the hardware's
//! round-to-nearest-even (`vcvtneps2bf16`). Callers check [`available`] for the dtype
//! they run: the f32 kernels need AVX-512F only, the bf16 ones AVX512-BF16 too.

use candle_core::{CpuStorage, DType, Result, Storage, Tensor};
use half::bf16;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Lanes of one AVX-512 register of f32.
const LANES: usize = 16;

/// Rows one parallel task normalises or activates.
const TASK_ROWS: usize = 32;

/// [`rms_norm`] over the last dimension of a CPU bf16 `x`; `None` where it does not
/// apply (another dtype or device, or a CPU without AVX512-BF16).
pub(crate) fn rms_norm_tensor(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !applies(&[x, weight]) {
        return Ok(None);
    }
    let n = x.dim(candle_core::D::Minus1)?;
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    let out = with_bf16(&x, |xs| {
        with_bf16(&weight, |w| {
            let mut out = vec![bf16::ZERO; xs.len()];
            out.par_chunks_mut(n * TASK_ROWS)
                .zip(xs.par_chunks(n * TASK_ROWS))
                .for_each(|(o, x)| {
                    for (o, x) in o.chunks_mut(n).zip(x.chunks(n)) {
                        rms_norm(x, w, eps as f32, o);
                    }
                });
            Ok(out)
        })
    })?;
    Tensor::from_vec(out, x.shape(), x.device()).map(Some)
}

/// [`silu_mul`] (bf16) or [`silu_mul_f32`] of two CPU tensors of one shape and dtype;
/// `None` where it does not apply.
pub(crate) fn silu_mul_tensor(gate: &Tensor, up: &Tensor) -> Result<Option<Tensor>> {
    let dtype = gate.dtype();
    let on_cpu = gate.device().is_cpu() && up.dtype() == dtype && gate.shape() == up.shape();
    if !on_cpu || !available(dtype) {
        return Ok(None);
    }
    let (gate, up) = (gate.contiguous()?, up.contiguous()?);
    let (shape, device) = (gate.shape(), gate.device());
    match dtype {
        DType::BF16 => with_bf16(&gate, |g| {
            with_bf16(&up, |u| {
                Tensor::from_vec(elementwise(g, u, silu_mul), shape, device)
            })
        }),
        DType::F32 => with_f32(&gate, |g| {
            with_f32(&up, |u| {
                Tensor::from_vec(elementwise(g, u, silu_mul_f32), shape, device)
            })
        }),
        _ => return Ok(None),
    }
    .map(Some)
}

/// `f(a, b, out)` over two equal-length slices, in parallel chunks.
fn elementwise<T: Copy + Default + Send + Sync>(
    a: &[T],
    b: &[T],
    f: impl Fn(&[T], &[T], &mut [T]) + Sync,
) -> Vec<T> {
    let chunk = 16 * 1024;
    let mut out = vec![T::default(); a.len()];
    out.par_chunks_mut(chunk)
        .zip(a.par_chunks(chunk).zip(b.par_chunks(chunk)))
        .for_each(|(o, (a, b))| f(a, b, o));
    out
}

/// Whether this CPU runs the kernels here for `dtype`: AVX-512F for f32 (Intel since
/// Skylake-SP, AMD since Zen 4), and for bf16 also AVX512-BF16, as
/// [`super::bf16_gemm`] needs.
pub(crate) fn available(dtype: DType) -> bool {
    match dtype {
        DType::BF16 => super::bf16_gemm::available(),
        #[cfg(target_arch = "x86_64")]
        DType::F32 => std::arch::is_x86_feature_detected!("avx512f"),
        _ => false,
    }
}

/// Whether the kernels here serve these tensors: all bf16 on a CPU that has them.
pub(crate) fn applies(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.dtype() == DType::BF16 && t.device().is_cpu())
        && available(DType::BF16)
}

/// Runs `f` on a contiguous CPU bf16 tensor's values.
pub(crate) fn with_bf16<R>(x: &Tensor, f: impl FnOnce(&[bf16]) -> Result<R>) -> Result<R> {
    let (storage, layout) = x.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::BF16(data)) => f(&data[super::fused::range(layout)?]),
        _ => candle_core::bail!("bf16 kernel: a CPU bf16 tensor expected"),
    }
}

/// Runs `f` on a contiguous CPU f32 tensor's values.
pub(crate) fn with_f32<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = x.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(data)) => f(&data[super::fused::range(layout)?]),
        _ => candle_core::bail!("f32 kernel: a CPU f32 tensor expected"),
    }
}

/// `softmax(scores + mask)` in f32, rounded to bf16 into `probs`; an all-masked row
/// gives zeros. `work` holds `scores.len()` floats of scratch.
pub(crate) fn softmax(scores: &[bf16], mask: &[f32], work: &mut [f32], probs: &mut [bf16]) {
    let n = scores.len();
    assert!(work.len() >= n && probs.len() >= n, "softmax of {n}");
    widen_into(scores, &mut work[..n]);
    softmax_in_place(&mut work[..n], mask);
    narrow(&work[..n], &mut probs[..n]);
}

/// `softmax(scores + mask)` of one f32 row, in place; an all-masked row gives zeros.
pub(crate) fn softmax_in_place(scores: &mut [f32], mask: &[f32]) {
    let n = scores.len();
    assert!(
        mask.len() >= n,
        "softmax of {n} with a mask of {}",
        mask.len()
    );
    // SAFETY: the caller checked the CPU (module docs); lengths checked above.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        softmax_avx512(scores, &mask[..n])
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX-512 row kernels need x86-64")
}

/// Llama's RMSNorm of one row: `w * bf16(x / sqrt(mean(x^2) + eps))`, the product
/// rounded to bf16 again (transformers' order in bf16).
pub(crate) fn rms_norm(x: &[bf16], weight: &[bf16], eps: f32, out: &mut [bf16]) {
    let n = x.len();
    assert!(weight.len() == n && out.len() == n, "rms norm of {n}");
    // SAFETY: as in `softmax_in_place`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        rms_norm_avx512(x, weight, eps, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX-512 row kernels need x86-64")
}

/// `bf16(bf16(silu(gate)) * up)`: transformers' SwiGLU in bf16 (SiLU computed in f32
/// and rounded once, then the product rounded).
pub(crate) fn silu_mul(gate: &[bf16], up: &[bf16], out: &mut [bf16]) {
    let n = gate.len();
    assert!(up.len() == n && out.len() == n, "silu * up of {n}");
    // SAFETY: as in `softmax_in_place`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        silu_mul_avx512(gate, up, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX-512 row kernels need x86-64")
}

/// `silu(gate) * up` in f32.
pub(crate) fn silu_mul_f32(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = gate.len();
    assert!(up.len() == n && out.len() == n, "silu * up of {n}");
    // SAFETY: as in `softmax_in_place`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        silu_mul_f32_avx512(gate, up, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX-512 row kernels need x86-64")
}

/// f32 to bf16, rounded to nearest even.
pub(crate) fn narrow(x: &[f32], out: &mut [bf16]) {
    assert_eq!(x.len(), out.len(), "narrowing {} values", x.len());
    // SAFETY: as in `softmax_in_place`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        narrow_avx512(x, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX-512 row kernels need x86-64")
}

/// Of one row of logits: the first index of its largest value, that value, and
/// `sum(exp(x - max))` (exponentials in f32, summed in f64): what scoring needs for
/// `logit[target] - logsumexp` and greedy agreement.
pub(crate) fn row_stats(row: &[f32]) -> (usize, f32, f64) {
    assert!(!row.is_empty(), "statistics of an empty row");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `softmax_in_place`; the row is not empty.
    unsafe {
        row_stats_avx512(row)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX-512 row kernels need x86-64")
}

/// bf16 to f32 (exact).
pub(crate) fn widen_into(x: &[bf16], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "widening {} values", x.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `softmax_in_place`.
    unsafe {
        for i in (0..x.len()).step_by(LANES) {
            let m = tail_mask(x.len() - i);
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), m, widen(x.as_ptr().add(i), m));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AVX-512 row kernels need x86-64")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_stats_avx512(row: &[f32]) -> (usize, f32, f64) {
    let n = row.len();
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for i in (0..n).step_by(LANES) {
        let m = tail_mask(n - i);
        max = _mm512_mask_max_ps(max, m, max, _mm512_maskz_loadu_ps(m, row.as_ptr().add(i)));
    }
    let max = _mm512_reduce_max_ps(max);
    let at = _mm512_set1_ps(max);
    let mut arg = 0;
    for i in (0..n).step_by(LANES) {
        let m = tail_mask(n - i);
        let hits = _mm512_mask_cmpeq_ps_mask(m, _mm512_maskz_loadu_ps(m, row.as_ptr().add(i)), at);
        if hits != 0 {
            arg = i + hits.trailing_zeros() as usize;
            break;
        }
    }
    let (mut lo, mut hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
    for i in (0..n).step_by(LANES) {
        let m = tail_mask(n - i);
        let x = _mm512_maskz_loadu_ps(m, row.as_ptr().add(i));
        let e = _mm512_maskz_mov_ps(m, exp(_mm512_sub_ps(x, at)));
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        hi = _mm512_add_pd(
            hi,
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(e),
            ))),
        );
    }
    (arg, max, _mm512_reduce_add_pd(_mm512_add_pd(lo, hi)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(scores: &mut [f32], mask: &[f32]) {
    let n = scores.len();
    let at = scores.as_mut_ptr();
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for i in (0..n).step_by(LANES) {
        let m = tail_mask(n - i);
        let s = _mm512_maskz_loadu_ps(m, at.add(i));
        let v = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, mask.as_ptr().add(i)));
        _mm512_mask_storeu_ps(at.add(i), m, v);
        max = _mm512_mask_max_ps(max, m, max, v);
    }
    let max = _mm512_reduce_max_ps(max);
    if max == f32::NEG_INFINITY {
        scores.fill(0.0);
        return;
    }
    let shift = _mm512_set1_ps(max);
    let mut sum = _mm512_setzero_ps();
    for i in (0..n).step_by(LANES) {
        let m = tail_mask(n - i);
        let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, at.add(i)), shift));
        _mm512_mask_storeu_ps(at.add(i), m, e);
        sum = _mm512_mask_add_ps(sum, m, sum, e);
    }
    let sum = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
    for i in (0..n).step_by(LANES) {
        let m = tail_mask(n - i);
        let p = _mm512_div_ps(_mm512_maskz_loadu_ps(m, at.add(i)), sum);
        _mm512_mask_storeu_ps(at.add(i), m, p);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn rms_norm_avx512(x: &[bf16], weight: &[bf16], eps: f32, out: &mut [bf16]) {
    let n = x.len();
    let mut squares = _mm512_setzero_ps();
    for i in (0..n).step_by(LANES) {
        let v = widen(x.as_ptr().add(i), tail_mask(n - i));
        squares = _mm512_fmadd_ps(v, v, squares);
    }
    let mean = _mm512_reduce_add_ps(squares) / n as f32;
    let inverse = _mm512_set1_ps(1.0 / (mean + eps).sqrt());
    for i in (0..n).step_by(LANES) {
        let m = tail_mask(n - i);
        let normed = round(_mm512_mul_ps(widen(x.as_ptr().add(i), m), inverse));
        let scaled = _mm512_mul_ps(normed, widen(weight.as_ptr().add(i), m));
        store_bf16(out.as_mut_ptr().add(i), m, scaled);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn silu_mul_avx512(gate: &[bf16], up: &[bf16], out: &mut [bf16]) {
    let n = gate.len();
    let one = _mm512_set1_ps(1.0);
    for i in (0..n).step_by(LANES) {
        let m = tail_mask(n - i);
        let g = widen(gate.as_ptr().add(i), m);
        let negated = _mm512_sub_ps(_mm512_setzero_ps(), g);
        let silu = round(_mm512_div_ps(g, _mm512_add_ps(one, exp(negated))));
        let product = _mm512_mul_ps(silu, widen(up.as_ptr().add(i), m));
        store_bf16(out.as_mut_ptr().add(i), m, product);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_mul_f32_avx512(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = gate.len();
    let one = _mm512_set1_ps(1.0);
    for i in (0..n).step_by(LANES) {
        let m = tail_mask(n - i);
        let g = _mm512_maskz_loadu_ps(m, gate.as_ptr().add(i));
        let negated = _mm512_sub_ps(_mm512_setzero_ps(), g);
        let silu = _mm512_div_ps(g, _mm512_add_ps(one, exp(negated)));
        let product = _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, up.as_ptr().add(i)));
        _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), m, product);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn narrow_avx512(x: &[f32], out: &mut [bf16]) {
    let n = x.len();
    for i in (0..n).step_by(LANES) {
        let m = tail_mask(n - i);
        store_bf16(
            out.as_mut_ptr().add(i),
            m,
            _mm512_maskz_loadu_ps(m, x.as_ptr().add(i)),
        );
    }
}

/// The lanes of a block of 16 that hold data when `left` values remain.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tail_mask(left: usize) -> __mmask16 {
    if left >= LANES {
        0xffff
    } else {
        (1u16 << left) - 1
    }
}

/// Up to 16 bf16 values (the lanes of `m`) as f32; other lanes zero.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn widen(p: *const bf16, m: __mmask16) -> __m512 {
    let bits = _mm256_maskz_loadu_epi16(m, p as *const i16);
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits)))
}

/// Stores the lanes of `m` of `v`, rounded to bf16 (nearest even).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn store_bf16(p: *mut bf16, m: __mmask16, v: __m512) {
    let narrowed: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
    _mm256_mask_storeu_epi16(p as *mut i16, m, narrowed);
}

/// `v` rounded to bf16 and widened back: the value a bf16 tensor would hold.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn round(v: __m512) -> __m512 {
    let narrowed: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(narrowed)))
}

/// `e^x` to about 1 ulp over f32's range (Cephes' `expf`: `x = n ln 2 + r`, a degree-6
/// polynomial in `r`, scaled by `2^n`); `-inf` gives 0.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn exp(x: __m512) -> __m512 {
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-104.0)),
        _mm512_set1_ps(88.7),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_fmadd_ps(
        _mm512_mul_ps(p, r),
        r,
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    _mm512_scalef_ps(y, n)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn skip() -> bool {
        let skip = !available(DType::BF16);
        if skip {
            eprintln!("no AVX512-BF16 here: nothing to check");
        }
        skip
    }

    /// `n` values in `[-1, 1)`, the same for the same seed (a linear congruential
    /// generator: the bf16 kernels' tests need no more).
    pub(crate) fn uniform(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        uniform(n, seed).into_iter().map(|v| v * 4.0).collect()
    }

    fn bf16s(x: &[f32]) -> Vec<bf16> {
        x.iter().map(|&v| bf16::from_f32(v)).collect()
    }

    /// bf16 values within one rounding step (2^-8 relative) of an f64 reference.
    fn assert_close(got: &[bf16], want: &[f64], what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let tol = w.abs() * 2f64.powi(-8) + 1e-30;
            assert!((g.to_f64() - w).abs() <= tol, "{what}[{i}]: {g} vs {w}");
        }
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64_and_zero_at_minus_infinity() {
        if skip() {
            return;
        }
        // Whole blocks of 16: the loop below loads and stores 16 at a time.
        let xs: Vec<f32> = (-8000..8000).map(|i| i as f32 / 100.0).collect();
        assert_eq!(xs.len() % 16, 0);
        let mut got = vec![0f32; xs.len()];
        for (x, g) in xs.chunks(16).zip(got.chunks_mut(16)) {
            // SAFETY: checked the CPU above; chunks of 16 exactly.
            unsafe {
                let v = exp(_mm512_loadu_ps(x.as_ptr()));
                _mm512_storeu_ps(g.as_mut_ptr(), v);
            }
        }
        for (x, g) in xs.iter().zip(&got) {
            let want = (*x as f64).exp();
            assert!(
                ((*g as f64) - want).abs() <= want * 2.5e-7,
                "exp({x}) = {g}, want {want}"
            );
        }
        let mut zero = [1f32; 16];
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(zero.as_mut_ptr(), exp(_mm512_set1_ps(f32::NEG_INFINITY))) };
        assert_eq!(zero, [0f32; 16]);
    }

    #[test]
    fn rows_match_f64_references_for_every_tail() {
        if skip() {
            return;
        }
        for n in [1, 15, 16, 17, 64, 100] {
            let x = bf16s(&values(n, n as u64));
            let y = bf16s(&values(n, 7 + n as u64));
            let (xf, yf): (Vec<f64>, Vec<f64>) = (
                x.iter().map(|v| v.to_f64()).collect(),
                y.iter().map(|v| v.to_f64()).collect(),
            );

            // softmax with the last third masked out
            let mask: Vec<f32> = (0..n)
                .map(|i| {
                    if i >= n - n / 3 {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            let (mut work, mut probs) = (vec![0f32; n], vec![bf16::ONE; n]);
            softmax(&x, &mask, &mut work, &mut probs);
            let visible = n - n / 3;
            let max = xf[..visible].iter().cloned().fold(f64::MIN, f64::max);
            let total: f64 = xf[..visible].iter().map(|v| (v - max).exp()).sum();
            let want: Vec<f64> = (0..n)
                .map(|i| {
                    if i < visible {
                        (xf[i] - max).exp() / total
                    } else {
                        0.0
                    }
                })
                .collect();
            assert_close(&probs, &want, "softmax");

            // RMSNorm: the normalised row is rounded before the weight multiplies it
            let mut out = vec![bf16::ZERO; n];
            rms_norm(&x, &y, 1e-5, &mut out);
            let rms = (xf.iter().map(|v| v * v).sum::<f64>() / n as f64 + 1e-5).sqrt();
            let want: Vec<f64> = (0..n)
                .map(|i| bf16::from_f64(xf[i] / rms).to_f64() * yf[i])
                .collect();
            assert_close(&out, &want, "rms_norm");

            // SwiGLU: silu rounded to bf16, then the product
            silu_mul(&x, &y, &mut out);
            let want: Vec<f64> = (0..n)
                .map(|i| bf16::from_f64(xf[i] / (1.0 + (-xf[i]).exp())).to_f64() * yf[i])
                .collect();
            assert_close(&out, &want, "silu_mul");

            // SwiGLU in f32: no roundings but f32's own
            let mut out_f32 = vec![0f32; n];
            let (xs, ys): (Vec<f32>, Vec<f32>) = (values(n, 11), values(n, 12));
            silu_mul_f32(&xs, &ys, &mut out_f32);
            for (i, got) in out_f32.iter().enumerate() {
                let (g, u) = (xs[i] as f64, ys[i] as f64);
                let want = g / (1.0 + (-g).exp()) * u;
                assert!(
                    (*got as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3),
                    "silu_mul_f32 at {i} of {n}: {got} vs {want}"
                );
            }

            let wide: Vec<f32> = values(n, 5);
            let (arg, max, sum) = row_stats(&wide);
            let want_max = wide.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(
                (arg, max),
                (wide.iter().position(|&v| v == want_max).unwrap(), want_max)
            );
            let want_sum: f64 = wide.iter().map(|&v| ((v - want_max) as f64).exp()).sum();
            assert!(
                (sum - want_sum).abs() <= want_sum * 1e-6,
                "row_stats sum {sum} vs {want_sum}"
            );
            let mut widened = vec![0f32; n];
            widen_into(&x, &mut widened);
            assert_eq!(
                widened,
                xf.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                "widen"
            );

            let mut narrowed = vec![bf16::ZERO; n];
            let wide: Vec<f32> = values(n, 3);
            narrow(&wide, &mut narrowed);
            assert_eq!(narrowed, bf16s(&wide), "narrow");
        }
    }
}

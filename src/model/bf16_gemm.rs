//! bf16 matrix products on CPUs with AVX512-BF16 (`vdpbf16ps`), for inference.
//!
//! candle multiplies bf16 matrices by converting both to f32 around an f32 GEMM, so a
//! bf16 model ran at about half its f32 speed on CPU while PyTorch's oneDNN runs it at
//! twice. Here the products stay in bf16 and accumulate in f32, as oneDNN does: each
//! `vdpbf16ps` multiplies 16 pairs of bf16 values and adds both products to 16 f32
//! sums. The result is rounded to bf16 once, at the end (round to nearest even), as
//! candle's f32 path rounds it.
//!
//! A weight `W` `[n, k]` (Hugging Face's `[out, in]`) is packed once into panels of 32
//! columns of `W^T`, each holding `k / 2` pairs of rows, so that one load gives 16
//! columns of a pair of `k`. Activations need no packing: a pair of `x[m, k..k + 2]`
//! is one 32-bit broadcast. The micro-kernel keeps an 8 x 32 tile of sums in 16
//! registers.
//!
//! Everything here is checked at run time (`is_x86_feature_detected!`); elsewhere
//! [`available`] is false and callers keep candle's path.

use half::bf16;

/// Columns of one packed panel (two 16-lane registers).
const NR: usize = 32;
/// Rows of one micro-tile.
const MR: usize = 8;
/// Rows of activations one task multiplies (kept in L2 while the panels stream by).
const MC: usize = 64;
/// Columns one task covers.
const NC: usize = 256;

/// Whether this CPU has the instructions (AVX-512F, BW and VL, and AVX512-BF16; every
/// CPU with the last has the others, but each is checked).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight `[n, k]` laid out for the kernel: panel `p` holds columns
/// `32p..32p + 32` of `W^T` as `[k / 2][32][2]` (odd `k` and the last panel padded
/// with zeros).
#[derive(Debug)]
pub(crate) struct PackedWeight {
    n: usize,
    k: usize,
    /// `k` rounded up to even.
    k2: usize,
    data: Vec<u16>,
}

impl PackedWeight {
    /// Packs the row-major `w` (`n` rows of `k`).
    pub(crate) fn pack(w: &[bf16], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight of {n} x {k}");
        let k2 = k.next_multiple_of(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u16; panels * k2 * NR];
        for p in 0..panels {
            let panel = &mut data[p * k2 * NR..(p + 1) * k2 * NR];
            for c in 0..NR.min(n - p * NR) {
                let row = &w[(p * NR + c) * k..(p * NR + c + 1) * k];
                for (kk, v) in row.iter().enumerate() {
                    panel[(kk / 2) * NR * 2 + c * 2 + kk % 2] = v.to_bits();
                }
            }
        }
        Self { n, k, k2, data }
    }

    /// Packs `W` given as its transpose `wt` (`k` rows of `n`, as attention holds its
    /// values): the same layout [`Self::pack`] makes from `W`.
    pub(crate) fn pack_transposed(wt: &[bf16], n: usize, k: usize) -> Self {
        assert_eq!(wt.len(), n * k, "transposed weight of {k} x {n}");
        let k2 = k.next_multiple_of(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u16; panels * k2 * NR];
        for (kk, row) in wt.chunks(n).enumerate() {
            for (col, v) in row.iter().enumerate() {
                let (p, c) = (col / NR, col % NR);
                data[p * k2 * NR + (kk / 2) * NR * 2 + c * 2 + kk % 2] = v.to_bits();
            }
        }
        Self { n, k, k2, data }
    }

    /// The row-major `W` (`n` rows of `k`) back from its panels: [`Self::pack`]'s
    /// inverse, for the kernels that need the weight as a tensor.
    pub(crate) fn unpack(&self) -> Vec<bf16> {
        let mut w = vec![bf16::ZERO; self.n * self.k];
        for (r, row) in w.chunks_mut(self.k.max(1)).enumerate().take(self.n) {
            let panel = self.panel(r / NR);
            let c = r % NR;
            for (kk, v) in row.iter_mut().enumerate() {
                *v = bf16::from_bits(panel[(kk / 2) * NR * 2 + c * 2 + kk % 2]);
            }
        }
        w
    }

    pub(crate) fn rows(&self) -> usize {
        self.n
    }

    pub(crate) fn cols(&self) -> usize {
        self.k
    }

    fn panel(&self, p: usize) -> &[u16] {
        &self.data[p * self.k2 * NR..(p + 1) * self.k2 * NR]
    }
}

/// `x W^T` for `x` `[m, k]` (row-major bf16), rounded to bf16: `[m, n]`. Only call
/// where [`available`] said yes.
pub(crate) fn matmul(x: &[bf16], m: usize, w: &PackedWeight) -> Vec<bf16> {
    assert!(available(), "bf16 GEMM without AVX512-BF16");
    let (n, k) = (w.n, w.k);
    assert_eq!(x.len(), m * k, "activations of {m} x {k}");
    // Rows of an even length, so that every pair read stays in its row.
    let padded;
    let x: &[bf16] = if k % 2 == 1 {
        padded = x
            .chunks(k)
            .flat_map(|row| row.iter().copied().chain([bf16::ZERO]))
            .collect::<Vec<_>>();
        &padded
    } else {
        x
    };
    let mut out = vec![bf16::ZERO; m * n];
    let tasks: Vec<(usize, usize)> = (0..m.div_ceil(MC))
        .flat_map(|i| (0..n.div_ceil(NC)).map(move |j| (i * MC, j * NC)))
        .collect();
    let out_ptr = SendPtr(out.as_mut_ptr());
    let run = |&(m0, n0): &(usize, usize)| {
        let rows = MC.min(m - m0);
        let cols = NC.min(n - n0);
        // SAFETY: tasks cover disjoint [m0, m0 + rows) x [n0, n0 + cols) blocks of
        // `out`, which outlives the parallel loop.
        unsafe { block(x, w, out_ptr.get(), m0, rows, n0, cols) };
    };
    if tasks.len() == 1 {
        run(&tasks[0]);
    } else {
        use rayon::prelude::*;
        tasks.par_iter().for_each(run);
    }
    out
}

#[derive(Clone, Copy)]
struct SendPtr(*mut bf16);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut bf16 {
        self.0
    }
}

/// One task: rows `m0..m0 + rows`, columns `n0..n0 + cols` (`n0` a multiple of 32).
///
/// # Safety
/// No other thread writes that block of `out` (`[m, w.n]`, row-major).
unsafe fn block(
    x: &[bf16],
    w: &PackedWeight,
    out: *mut bf16,
    m0: usize,
    rows: usize,
    n0: usize,
    cols: usize,
) {
    let k2 = w.k2;
    let a = Rows {
        data: &x[m0 * k2..(m0 + rows) * k2],
        stride: k2,
        rows,
    };
    tiles(a, w, k2 / 2, n0, cols, out.add(m0 * w.n + n0), w.n);
}

/// Rows of bf16 activations with a row stride.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [bf16],
    stride: usize,
    rows: usize,
}

/// `a` times columns `n0..n0 + cols` of `w` over its first `2 * pairs` inputs, written
/// rounded to `out` (row `r`, column `c` at `out[r * ldo + c - n0]`).
///
/// # Safety
/// `out` holds `a.rows` rows of stride `ldo` with room for `cols` values each, and
/// nobody else writes them meanwhile.
unsafe fn tiles(
    a: Rows,
    w: &PackedWeight,
    pairs: usize,
    n0: usize,
    cols: usize,
    out: *mut bf16,
    ldo: usize,
) {
    debug_assert!(2 * pairs <= w.k2 && n0 + cols <= w.n);
    debug_assert!(a.rows == 0 || (a.rows - 1) * a.stride + 2 * pairs <= a.data.len());
    let mut tile = [0f32; MR * NR];
    for c0 in (0..cols).step_by(NR) {
        let panel = w.panel((n0 + c0) / NR);
        let width = NR.min(cols - c0);
        for r0 in (0..a.rows).step_by(MR) {
            let height = MR.min(a.rows - r0);
            let rows = Rows {
                data: &a.data[r0 * a.stride..],
                stride: a.stride,
                rows: height,
            };
            #[cfg(target_arch = "x86_64")]
            kernel(rows, pairs, panel, &mut tile);
            for r in 0..height {
                let dst = std::slice::from_raw_parts_mut(out.add((r0 + r) * ldo + c0), width);
                super::avx512_rows::narrow(&tile[r * NR..r * NR + width], dst);
            }
        }
    }
}

/// A serial product for callers that run their own parallel loop (attention): the
/// `rows` rows of `x` (stride `lda`) times the first `cols` columns of `w`, over the
/// first `2 * pairs` inputs, rounded to bf16 into `out` (stride `ldo`). Only call
/// where [`available`] said yes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn product_into(
    x: &[bf16],
    lda: usize,
    rows: usize,
    w: &PackedWeight,
    pairs: usize,
    cols: usize,
    out: &mut [bf16],
    ldo: usize,
) {
    assert!(available(), "bf16 GEMM without AVX512-BF16");
    assert!(
        2 * pairs <= w.k2 && cols <= w.n && cols <= ldo,
        "product of {rows} rows"
    );
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        (rows - 1) * lda + 2 * pairs <= x.len(),
        "activations of {rows} rows"
    );
    assert!(
        (rows - 1) * ldo + cols <= out.len(),
        "output of {rows} rows"
    );
    let a = Rows {
        data: x,
        stride: lda,
        rows,
    };
    // SAFETY: the asserts above keep every write inside `out`, which we borrow mutably.
    unsafe { tiles(a, w, pairs, 0, cols, out.as_mut_ptr(), ldo) };
}

/// The 8 x 32 (or fewer rows) tile `a` times one panel, over `pairs` pairs of inputs.
#[cfg(target_arch = "x86_64")]
fn kernel(a: Rows, pairs: usize, panel: &[u16], tile: &mut [f32; MR * NR]) {
    debug_assert!(a.rows >= 1 && a.rows <= MR);
    debug_assert!(a.data.len() >= (a.rows - 1) * a.stride + 2 * pairs);
    debug_assert!(panel.len() >= pairs * 2 * NR);
    let (p, lda, b) = (a.data.as_ptr(), a.stride, panel.as_ptr());
    // SAFETY: the caller checked the CPU has the instructions; the pointers stay within
    // `a` (rows of stride lda, 2 * pairs values each) and `panel` (pairs of 64 values).
    unsafe {
        match a.rows {
            8 => kernel_rows::<8>(p, lda, pairs, b, tile),
            7 => kernel_rows::<7>(p, lda, pairs, b, tile),
            6 => kernel_rows::<6>(p, lda, pairs, b, tile),
            5 => kernel_rows::<5>(p, lda, pairs, b, tile),
            4 => kernel_rows::<4>(p, lda, pairs, b, tile),
            3 => kernel_rows::<3>(p, lda, pairs, b, tile),
            2 => kernel_rows::<2>(p, lda, pairs, b, tile),
            _ => kernel_rows::<1>(p, lda, pairs, b, tile),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel_rows<const R: usize>(
    a: *const bf16,
    lda: usize,
    pairs: usize,
    panel: *const u16,
    tile: &mut [f32; MR * NR],
) {
    use std::arch::x86_64::*;
    let mut lo = [_mm512_setzero_ps(); R];
    let mut hi = [_mm512_setzero_ps(); R];
    for p in 0..pairs {
        let b = panel.add(p * NR * 2);
        let b_lo: __m512bh = std::mem::transmute(_mm512_loadu_si512(b as *const _));
        let b_hi: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(32) as *const _));
        for r in 0..R {
            let pair = (a.add(r * lda + 2 * p) as *const i32).read_unaligned();
            let a_pair: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
            lo[r] = _mm512_dpbf16_ps(lo[r], a_pair, b_lo);
            hi[r] = _mm512_dpbf16_ps(hi[r], a_pair, b_hi);
        }
    }
    for r in 0..R {
        _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR), lo[r]);
        _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR + 16), hi[r]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packing and unpacking give back the weight bit for bit, whatever its tails.
    #[test]
    fn unpacking_inverts_packing() {
        for (n, k) in [(1, 1), (3, 7), (32, 64), (70, 129), (33, 0)] {
            let w: Vec<bf16> = (0..n * k)
                .map(|i| bf16::from_f32(i as f32 * 0.37 - 5.0))
                .collect();
            assert_eq!(PackedWeight::pack(&w, n, k).unpack(), w, "{n} x {k}");
        }
    }

    /// Against an f64 reference of the same bf16 inputs: the sums are f32, so the
    /// error is that of f32 accumulation plus the final rounding to bf16.
    #[test]
    fn products_match_an_f64_reference_for_every_tail() {
        if !available() {
            eprintln!("no AVX512-BF16 here: nothing to check");
            return;
        }
        let mut seed = 1u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        for (m, n, k) in [
            (1, 1, 1),
            (3, 40, 7),
            (8, 32, 64),
            (13, 70, 129),
            (130, 300, 96),
        ] {
            let x: Vec<bf16> = (0..m * k).map(|_| bf16::from_f32(next())).collect();
            let w: Vec<bf16> = (0..n * k).map(|_| bf16::from_f32(next())).collect();
            let packed = PackedWeight::pack(&w, n, k);
            let got = matmul(&x, m, &packed);
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|t| x[i * k + t].to_f64() * w[j * k + t].to_f64())
                        .sum();
                    let g = got[i * n + j].to_f64();
                    // One bf16 rounding (2^-8 relative) of a sum of k terms below 1.
                    let tol = exact.abs() * 2f64.powi(-8) + k as f64 * 1e-6;
                    assert!(
                        (g - exact).abs() <= tol,
                        "{m}x{n}x{k} at ({i},{j}): {g} vs {exact}"
                    );
                }
            }
        }
    }
}

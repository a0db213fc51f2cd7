//! f32 matrix products against pre-packed weights on CPUs with AVX-512F, for inference.
//!
//! candle's f32 product (the `gemm` crate) repacks the weight into its own panels on
//! every call: 8% of an f32 forward at the SmolLM2-135M shape went to that packing,
//! and more to zeroing the output before the product overwrote it. Here a weight is
//! packed once, the first time inference needs it, and the product writes its output
//! once.
//!
//! A weight `W` `[n, k]` (Hugging Face's `[out, in]`) is packed into panels of 32
//! columns of `W^T`, each `[k][32]`, so that one step of `k` loads two 16-lane
//! registers. Activations need no packing: `x[r, kk]` is one broadcast. The
//! micro-kernel keeps a 12 x 32 tile of sums in 24 registers. Every output is the
//! same sequential sum over `k`, whatever the number of rows: a row's result does not
//! depend on the rows multiplied with it.
//!
//! Everything here is checked at run time (`is_x86_feature_detected!`); elsewhere
//! [`available`] is false and callers keep candle's path.

/// Columns of one packed panel (two 16-lane registers).
const NR: usize = 32;
/// Rows of one micro-tile.
const MR: usize = 12;
/// Rows of activations one task multiplies.
const MC: usize = 96;
/// Columns one task covers.
const NC: usize = 256;

/// Whether this CPU has AVX-512F.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight `[n, k]` laid out for the kernel: panel `p` holds columns
/// `32p..32p + 32` of `W^T` as `[k][32]` (the last panel padded with zeros).
#[derive(Debug)]
pub(crate) struct PackedWeight {
    n: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedWeight {
    /// Packs the row-major `w` (`n` rows of `k`); the panels in parallel.
    pub(crate) fn pack(w: &[f32], n: usize, k: usize) -> Self {
        use rayon::prelude::*;
        assert_eq!(w.len(), n * k, "weight of {n} x {k}");
        let mut data = vec![0f32; n.div_ceil(NR) * k * NR];
        if k > 0 {
            data.par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(p, panel)| {
                    for c in 0..NR.min(n - p * NR) {
                        let row = &w[(p * NR + c) * k..(p * NR + c + 1) * k];
                        for (kk, &v) in row.iter().enumerate() {
                            panel[kk * NR + c] = v;
                        }
                    }
                });
        }
        Self { n, k, data }
    }

    /// Packs `W` given as its transpose `wt` (`k` rows of `n`, as attention holds its
    /// values): the same layout [`Self::pack`] makes from `W`.
    pub(crate) fn pack_transposed(wt: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(wt.len(), n * k, "transposed weight of {k} x {n}");
        let mut data = vec![0f32; n.div_ceil(NR) * k * NR];
        for (kk, row) in wt.chunks(n.max(1)).enumerate().take(k) {
            for (p, cols) in row.chunks(NR).enumerate() {
                data[(p * k + kk) * NR..][..cols.len()].copy_from_slice(cols);
            }
        }
        Self { n, k, data }
    }

    /// The row-major `W` (`n` rows of `k`) back from its panels: [`Self::pack`]'s
    /// inverse, for the kernels that need the weight as a tensor.
    pub(crate) fn unpack(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.n * self.k];
        for (r, row) in w.chunks_mut(self.k.max(1)).enumerate().take(self.n) {
            let (p, c) = (r / NR, r % NR);
            for (kk, v) in row.iter_mut().enumerate() {
                *v = self.data[(p * self.k + kk) * NR + c];
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

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * NR..(p + 1) * self.k * NR]
    }
}

/// `x W^T` for `x` `[m, k]` (row-major): `[m, n]`. Only call where [`available`]
/// said yes.
pub(crate) fn matmul(x: &[f32], m: usize, w: &PackedWeight) -> Vec<f32> {
    assert!(available(), "f32 GEMM without AVX-512F");
    let (n, k) = (w.n, w.k);
    assert_eq!(x.len(), m * k, "activations of {m} x {k}");
    let mut out = Vec::with_capacity(m * n);
    let tasks: Vec<(usize, usize)> = (0..m.div_ceil(MC))
        .flat_map(|i| (0..n.div_ceil(NC)).map(move |j| (i * MC, j * NC)))
        .collect();
    let out_ptr = SendPtr(out.as_mut_ptr());
    let run = |&(m0, n0): &(usize, usize)| {
        let rows = MC.min(m - m0);
        let cols = NC.min(n - n0);
        // SAFETY: tasks cover disjoint [m0, m0 + rows) x [n0, n0 + cols) blocks of
        // `out`'s m * n values, which outlive the parallel loop, and together write
        // every one of them.
        unsafe { block(x, w, out_ptr.get(), m0, rows, n0, cols) };
    };
    if tasks.len() == 1 {
        run(&tasks[0]);
    } else {
        use rayon::prelude::*;
        tasks.par_iter().for_each(run);
    }
    // SAFETY: the tasks wrote all m * n values (above).
    unsafe { out.set_len(m * n) };
    out
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// One task: rows `m0..m0 + rows`, columns `n0..n0 + cols` (`n0` a multiple of 32).
///
/// # Safety
/// No other thread writes that block of `out` (`[m, w.n]`, row-major), which has
/// room for it.
unsafe fn block(
    x: &[f32],
    w: &PackedWeight,
    out: *mut f32,
    m0: usize,
    rows: usize,
    n0: usize,
    cols: usize,
) {
    let a = Rows {
        data: &x[m0 * w.k..(m0 + rows) * w.k],
        stride: w.k,
        rows,
    };
    tiles(a, w, w.k, n0, cols, out.add(m0 * w.n + n0), w.n);
}

/// Rows of activations with a row stride.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    stride: usize,
    rows: usize,
}

/// `a` times columns `n0..n0 + cols` of `w` over its first `steps` inputs, written to
/// `out` (row `r`, column `c` at `out[r * ldo + c - n0]`).
///
/// # Safety
/// `out` holds `a.rows` rows of stride `ldo` with room for `cols` values each, and
/// nobody else writes them meanwhile.
unsafe fn tiles(
    a: Rows,
    w: &PackedWeight,
    steps: usize,
    n0: usize,
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    debug_assert!(steps <= w.k && n0 + cols <= w.n);
    debug_assert!(a.rows == 0 || (a.rows - 1) * a.stride + steps <= a.data.len());
    for c0 in (0..cols).step_by(NR) {
        let panel = w.panel((n0 + c0) / NR);
        let width = NR.min(cols - c0);
        for r0 in (0..a.rows).step_by(MR) {
            let rows = Rows {
                data: &a.data[r0 * a.stride..],
                stride: a.stride,
                rows: MR.min(a.rows - r0),
            };
            #[cfg(target_arch = "x86_64")]
            kernel(rows, steps, panel, out.add(r0 * ldo + c0), ldo, width);
        }
    }
}

/// A serial product for callers that run their own parallel loop (attention): the
/// `rows` rows of `x` (stride `lda`) times the first `cols` columns of `w`, over its
/// first `steps` inputs, into `out` (stride `ldo`). Only call where [`available`]
/// said yes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn product_into(
    x: &[f32],
    lda: usize,
    rows: usize,
    w: &PackedWeight,
    steps: usize,
    cols: usize,
    out: &mut [f32],
    ldo: usize,
) {
    assert!(available(), "f32 GEMM without AVX-512F");
    assert!(
        steps <= w.k && cols <= w.n && cols <= ldo,
        "product of {rows} rows"
    );
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        (rows - 1) * lda + steps <= x.len(),
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
    unsafe { tiles(a, w, steps, 0, cols, out.as_mut_ptr(), ldo) };
}

/// The `a.rows` x `width` tile (at most 12 x 32) of `a` times one panel, over
/// `steps` inputs, written to `out` (row stride `ldo`).
///
/// # Safety
/// `out` has room for `a.rows` rows of `width` values at stride `ldo`, which nobody
/// else writes meanwhile.
#[cfg(target_arch = "x86_64")]
unsafe fn kernel(a: Rows, steps: usize, panel: &[f32], out: *mut f32, ldo: usize, width: usize) {
    debug_assert!((1..=MR).contains(&a.rows));
    debug_assert!(a.data.len() >= (a.rows - 1) * a.stride + steps);
    debug_assert!(panel.len() >= steps * NR && (1..=NR).contains(&width));
    let (p, lda, b) = (a.data.as_ptr(), a.stride, panel.as_ptr());
    let o = Out {
        ptr: out,
        ldo,
        width,
    };
    // SAFETY: the caller checked the CPU has AVX-512F; the pointers stay within `a`
    // (rows of stride lda, `steps` values each) and `panel` (steps of 32 values), and
    // `o` as the caller promised.
    unsafe {
        match a.rows {
            12 => kernel_rows::<12>(p, lda, steps, b, o),
            11 => kernel_rows::<11>(p, lda, steps, b, o),
            10 => kernel_rows::<10>(p, lda, steps, b, o),
            9 => kernel_rows::<9>(p, lda, steps, b, o),
            8 => kernel_rows::<8>(p, lda, steps, b, o),
            7 => kernel_rows::<7>(p, lda, steps, b, o),
            6 => kernel_rows::<6>(p, lda, steps, b, o),
            5 => kernel_rows::<5>(p, lda, steps, b, o),
            4 => kernel_rows::<4>(p, lda, steps, b, o),
            3 => kernel_rows::<3>(p, lda, steps, b, o),
            2 => kernel_rows::<2>(p, lda, steps, b, o),
            _ => kernel_rows::<1>(p, lda, steps, b, o),
        }
    }
}

/// Where a tile goes: rows at stride `ldo`, `width` values each.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    ldo: usize,
    width: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_rows<const R: usize>(
    a: *const f32,
    lda: usize,
    steps: usize,
    panel: *const f32,
    out: Out,
) {
    use std::arch::x86_64::*;
    let mut lo = [_mm512_setzero_ps(); R];
    let mut hi = [_mm512_setzero_ps(); R];
    for kk in 0..steps {
        let b = panel.add(kk * NR);
        let b_lo = _mm512_loadu_ps(b);
        let b_hi = _mm512_loadu_ps(b.add(16));
        for r in 0..R {
            let x = _mm512_set1_ps(*a.add(r * lda + kk));
            lo[r] = _mm512_fmadd_ps(x, b_lo, lo[r]);
            hi[r] = _mm512_fmadd_ps(x, b_hi, hi[r]);
        }
    }
    // Masks of the columns this tile has (all 32 but at the end of a row).
    let lanes = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
    let (mask_lo, mask_hi) = (lanes(out.width), lanes(out.width.saturating_sub(16)));
    for r in 0..R {
        let dst = out.ptr.add(r * out.ldo);
        _mm512_mask_storeu_ps(dst, mask_lo, lo[r]);
        _mm512_mask_storeu_ps(dst.add(16), mask_hi, hi[r]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packing and unpacking give back the weight bit for bit, whatever its tails.
    #[test]
    fn unpacking_inverts_packing() {
        for (n, k) in [(1, 1), (3, 7), (32, 64), (70, 129), (33, 0)] {
            let w: Vec<f32> = (0..n * k).map(|i| i as f32 * 0.37 - 5.0).collect();
            assert_eq!(PackedWeight::pack(&w, n, k).unpack(), w, "{n} x {k}");
        }
    }

    /// Against an f64 reference, for shapes with every kind of tail (rows not a
    /// multiple of 12 or of a task, columns not a multiple of 32 or of a task), and
    /// bit for bit against the same rows multiplied alone.
    #[test]
    fn products_match_an_f64_reference_and_do_not_depend_on_their_neighbours() {
        if !available() {
            eprintln!("no AVX-512F here: nothing to check");
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
            (12, 32, 64),
            (13, 70, 129),
            (200, 300, 96),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let packed = PackedWeight::pack(&w, n, k);
            let got = matmul(&x, m, &packed);
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                        .sum();
                    let g = got[i * n + j] as f64;
                    // f32 accumulation of k terms below 1.
                    let tol = k as f64 * 2f64.powi(-23);
                    assert!(
                        (g - exact).abs() <= tol,
                        "{m}x{n}x{k} at ({i},{j}): {g} vs {exact}"
                    );
                }
            }
            let last = matmul(&x[(m - 1) * k..], 1, &packed);
            assert_eq!(last, got[(m - 1) * n..], "{m}x{n}x{k}: the last row alone");
        }
    }

    /// `product_into` over the first `steps` inputs and `cols` columns, with row
    /// strides on both sides, on a weight packed from its transpose: against f64.
    #[test]
    fn strided_partial_products_of_a_transposed_packing_match_f64() {
        if !available() {
            return;
        }
        let (rows, n, k, lda, ldo) = (13, 45, 70, 75, 50);
        let value = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        let x: Vec<f32> = (0..rows * lda).map(value).collect();
        // W^T as attention holds values: k rows of n.
        let wt: Vec<f32> = (0..k * n).map(|i| value(i + 17)).collect();
        let packed = PackedWeight::pack_transposed(&wt, n, k);
        for (steps, cols) in [(k, n), (33, 40), (1, 1), (64, 32)] {
            let mut out = vec![f32::NAN; rows * ldo];
            product_into(&x, lda, rows, &packed, steps, cols, &mut out, ldo);
            for r in 0..rows {
                for c in 0..ldo {
                    let got = out[r * ldo + c];
                    if c >= cols {
                        assert!(got.is_nan(), "({r},{c}) written outside {cols} columns");
                        continue;
                    }
                    let exact: f64 = (0..steps)
                        .map(|t| x[r * lda + t] as f64 * wt[t * n + c] as f64)
                        .sum();
                    let tol = steps as f64 * 2f64.powi(-23);
                    assert!(
                        (got as f64 - exact).abs() <= tol,
                        "({r},{c}): {got} vs {exact}"
                    );
                }
            }
        }
    }
}

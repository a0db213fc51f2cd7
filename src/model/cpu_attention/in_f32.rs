//! The f32 kernel of [`super`]: both products on the `gemm` crate's kernels (those
//! behind candle's CPU matmul), called serially inside each task, and the softmax in
//! place on the scores.

use super::Shape;
use crate::model::avx512_rows;

/// `[b, t, heads * d]` attention of f32 `q`, `k`, `v` laid out as [`super::attend`] takes them.
pub(super) fn attend_slices(
    shape: &Shape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[f32],
    scale: f32,
) -> Vec<f32> {
    let (s, d) = (shape.s, shape.d);
    let unit = |unit: usize| (&k[unit * s * d..][..s * d], &v[unit * s * d..][..s * d]);
    shape.run(q, mask, unit, |(keys, values), queries, masks, cols| {
        head_block(queries, masks, cols, keys, values, d, scale)
    })
}

/// One head's block of query rows against the first `cols` keys: `[rows, d]`.
fn head_block(
    queries: &[f32],
    masks: &[&[f32]],
    cols: usize,
    keys: &[f32],
    values: &[f32],
    d: usize,
    scale: f32,
) -> Vec<f32> {
    let rows = masks.len();
    let mut out = vec![0f32; rows * d];
    if cols == 0 {
        return out;
    }
    // Scaling q (rows x d) is cheaper than scaling the scores (rows x cols).
    let scaled: Vec<f32> = queries.iter().map(|x| x * scale).collect();
    let mut scores = vec![0f32; rows * cols];
    // scores = q k^T: keys are `[s, d]` row-major, so k^T reads them column by column.
    product(&mut scores, (rows, cols, d), &scaled, (d, 1), keys, (1, d));
    for (row, mask) in scores.chunks_mut(cols).zip(masks) {
        avx512_rows::softmax_in_place(row, mask);
    }
    product(
        &mut out,
        (rows, d, cols),
        &scores,
        (cols, 1),
        values,
        (d, 1),
    );
    out
}

/// `dst [m, n] = lhs [m, k] rhs [k, n]`, `dst` row-major, each operand read through its
/// (row, column) strides; serial, since the caller runs one task per core.
fn product(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    let last = |rs: usize, cs: usize, rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        dst.len() >= m * n
            && lhs.len() > last(lhs_rs, lhs_cs, m, k)
            && rhs.len() > last(rhs_rs, rhs_cs, k, n),
        "product of [{m}, {k}] and [{k}, {n}] out of its slices"
    );
    // SAFETY: every element the strides reach lies inside its slice (checked above), and
    // `dst` is not aliased.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

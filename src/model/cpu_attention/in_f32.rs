//! The f32 kernel of [`super`]: both products on the packed f32 GEMM kernel
//! ([`crate::model::f32_gemm`]), with each head's keys and values packed once, and the
//! softmax in place on the scores. Each sum runs over the head dimension, or over the
//! keys, in order, so a row's result does not depend on its neighbours.

use super::Shape;
use crate::model::avx512_rows;
use crate::model::f32_gemm::{self, PackedWeight};

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
    // Each (row, kv head)'s keys as the weight of `q k^T`, and its values as that of `p v`.
    let pack = |unit: usize| {
        let (keys, values) = (&k[unit * s * d..][..s * d], &v[unit * s * d..][..s * d]);
        (
            PackedWeight::pack(keys, s, d),
            PackedWeight::pack_transposed(values, d, s),
        )
    };
    shape.run(q, mask, pack, |(keys, values), queries, masks, cols| {
        head_block(queries, masks, cols, keys, values, d, scale)
    })
}

/// One head's block of query rows against the first `cols` keys: `[rows, d]`.
fn head_block(
    queries: &[f32],
    masks: &[&[f32]],
    cols: usize,
    keys: &PackedWeight,
    values: &PackedWeight,
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
    f32_gemm::product_into(&scaled, d, rows, keys, d, cols, &mut scores, cols);
    for (row, mask) in scores.chunks_mut(cols).zip(masks) {
        avx512_rows::softmax_in_place(row, mask);
    }
    f32_gemm::product_into(&scores, cols, rows, values, cols, d, &mut out, d);
    out
}

//! The bf16 kernel of [`super`], in transformers' eager order of roundings: q scaled and
//! rounded, scores rounded to bf16, the softmax in f32, probabilities rounded to bf16,
//! their product with the values rounded once; every sum in f32. Both products run on
//! the bf16 GEMM kernel ([`crate::model::bf16_gemm`]), with each head's keys and values
//! packed once. candle would convert both operands of each product to f32 and back.

use super::Shape;
use crate::model::avx512_rows;
use crate::model::bf16_gemm::{self, PackedWeight};
use half::bf16;

/// `[b, t, heads * d]` attention of bf16 `q`, `k`, `v` laid out as [`super::attend`] takes them.
pub(super) fn attend_slices(
    shape: &Shape,
    q: &[bf16],
    k: &[bf16],
    v: &[bf16],
    mask: &[f32],
    scale: f64,
) -> Vec<bf16> {
    let (s, d) = (shape.s, shape.d);
    let scale = bf16::from_f64(scale).to_f32();
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
    queries: &[bf16],
    masks: &[&[f32]],
    cols: usize,
    keys: &PackedWeight,
    values: &PackedWeight,
    d: usize,
    scale: f32,
) -> Vec<bf16> {
    let rows = masks.len();
    let mut out = vec![bf16::ZERO; rows * d];
    if cols == 0 {
        return out;
    }
    // Scaling q (as the candle path does) rounds once, like the scaled product would.
    let scaled: Vec<bf16> = queries
        .iter()
        .map(|x| bf16::from_f32(x.to_f32() * scale))
        .collect();
    let mut scores = vec![bf16::ZERO; rows * cols];
    bf16_gemm::product_into(&scaled, d, rows, keys, d / 2, cols, &mut scores, cols);
    // Pairs of keys: the product with the values reads probabilities two at a time.
    let width = cols.next_multiple_of(2);
    let mut probs = vec![bf16::ZERO; rows * width];
    let mut row_f32 = vec![0f32; cols];
    for (r, mask) in masks.iter().enumerate() {
        avx512_rows::softmax(
            &scores[r * cols..][..cols],
            &mask[..cols],
            &mut row_f32,
            &mut probs[r * width..][..cols],
        );
    }
    bf16_gemm::product_into(&probs, width, rows, values, width / 2, d, &mut out, d);
    out
}

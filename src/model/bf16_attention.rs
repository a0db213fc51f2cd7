//! Attention in bf16 on CPUs with AVX512-BF16, for inference, in transformers' eager
//! order of roundings: scores rounded to bf16, the softmax in f32, probabilities
//! rounded to bf16, their product with the values rounded once; every sum in f32.
//!
//! candle multiplies bf16 tensors by converting both to f32 and back, and converts the
//! scores to f32 and back element by element. Here both products run on the bf16
//! kernel ([`super::bf16_gemm`]), with each head's keys and values packed once, and a
//! block of query rows stops at the last key its mask lets in: causal attention does
//! about half the products and exponentials.

use super::bf16_gemm::{self, PackedWeight};
use super::bf16_rows::{self, with_bf16, with_f32};
use candle_core::{DType, Result, Tensor};
use half::bf16;
use rayon::prelude::*;

/// Query rows of one head that one task attends.
const ROWS: usize = 64;

/// `softmax(scale q k^T + mask) v` for `q` `[b, heads, t, d]` and `k`, `v`
/// `[b, kv_heads, s, d]`, with `mask` `[t, s]` or per row `[b, 1, 1, t, s]` (f32, 0 or
/// -inf); returns `[b, t, heads * d]`. `None` where it does not apply (not bf16 on a CPU
/// with AVX512-BF16, an odd head size): the caller takes candle's path.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> Result<Option<Tensor>> {
    if !bf16_rows::applies(&[q, k, v]) || mask.dtype() != DType::F32 {
        return Ok(None);
    }
    let (b, heads, t, d) = q.dims4()?;
    let (_, kv_heads, s, _) = k.dims4()?;
    if d % 2 == 1 || heads % kv_heads != 0 {
        return Ok(None);
    }
    let shape = Shape {
        b,
        heads,
        kv_heads,
        t,
        s,
        d,
        mask_per_row: mask.rank() == 5,
    };
    let (q, k, v, mask) = (
        q.contiguous()?,
        k.contiguous()?,
        v.contiguous()?,
        mask.contiguous()?,
    );
    let out = with_bf16(&q, |q| {
        with_bf16(&k, |k| {
            with_bf16(&v, |v| {
                with_f32(&mask, |mask| {
                    Ok(attend_slices(
                        &shape,
                        q,
                        k,
                        v,
                        mask,
                        bf16::from_f64(scale).to_f32(),
                    ))
                })
            })
        })
    })?;
    Tensor::from_vec(out, (b, t, heads * d), q.device()).map(Some)
}

/// The sizes of one attention call.
struct Shape {
    b: usize,
    heads: usize,
    kv_heads: usize,
    t: usize,
    s: usize,
    d: usize,
    mask_per_row: bool,
}

impl Shape {
    /// The mask row of query `i` in batch row `row`.
    fn mask_row(&self, row: usize, i: usize) -> usize {
        if self.mask_per_row {
            row * self.t + i
        } else {
            i
        }
    }
}

fn attend_slices(
    shape: &Shape,
    q: &[bf16],
    k: &[bf16],
    v: &[bf16],
    mask: &[f32],
    scale: f32,
) -> Vec<bf16> {
    let Shape {
        b,
        heads,
        kv_heads,
        t,
        s,
        d,
        ..
    } = *shape;
    // Each (row, kv head)'s keys as the weight of `q k^T`, and its values as that of `p v`.
    let packed: Vec<(PackedWeight, PackedWeight)> = (0..b * kv_heads)
        .into_par_iter()
        .map(|unit| {
            let (keys, values) = (&k[unit * s * d..][..s * d], &v[unit * s * d..][..s * d]);
            (
                PackedWeight::pack(keys, s, d),
                PackedWeight::pack_transposed(values, d, s),
            )
        })
        .collect();
    // How far right each mask row reaches: one past its last visible key.
    let reach: Vec<usize> = mask
        .chunks(s)
        .map(|row| {
            row.iter()
                .rposition(|&m| m != f32::NEG_INFINITY)
                .map_or(0, |j| j + 1)
        })
        .collect();
    let tasks: Vec<(usize, usize, usize)> = (0..b)
        .flat_map(|row| {
            (0..heads).flat_map(move |h| (0..t).step_by(ROWS).map(move |i| (row, h, i)))
        })
        .collect();
    let results: Vec<Vec<bf16>> = tasks
        .par_iter()
        .map(|&(row, h, i0)| {
            let rows = ROWS.min(t - i0);
            let (keys, values) = &packed[row * kv_heads + h / (heads / kv_heads)];
            let queries = &q[((row * heads + h) * t + i0) * d..][..rows * d];
            let masks: Vec<&[f32]> = (i0..i0 + rows)
                .map(|i| &mask[shape.mask_row(row, i) * s..][..s])
                .collect();
            let cols = (i0..i0 + rows)
                .map(|i| reach[shape.mask_row(row, i)])
                .max()
                .unwrap_or(0);
            head_block(queries, &masks, cols, keys, values, d, scale)
        })
        .collect();
    let mut out = vec![bf16::ZERO; b * t * heads * d];
    for (&(row, h, i0), block) in tasks.iter().zip(&results) {
        for (r, values) in block.chunks(d).enumerate() {
            let at = ((row * t + i0 + r) * heads + h) * d;
            out[at..at + d].copy_from_slice(values);
        }
    }
    out
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
        bf16_rows::softmax(
            &scores[r * cols..][..cols],
            &mask[..cols],
            &mut row_f32,
            &mut probs[r * width..][..cols],
        );
    }
    bf16_gemm::product_into(&probs, width, rows, values, width / 2, d, &mut out, d);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bf16_rows::tests::uniform as random;
    use candle_core::Device;

    fn round(x: f64) -> f64 {
        bf16::from_f64(x).to_f64()
    }

    /// Eager attention in f64 with bf16 roundings where transformers rounds:
    /// `[b, t, heads * d]`.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[bf16],
        k: &[bf16],
        v: &[bf16],
        mask: &[f32],
        shape: &Shape,
        scale: f64,
    ) -> Vec<f64> {
        let Shape {
            b,
            heads,
            kv_heads,
            t,
            s,
            d,
            ..
        } = *shape;
        let mut out = vec![0f64; b * t * heads * d];
        for row in 0..b {
            for h in 0..heads {
                let g = h / (heads / kv_heads);
                for i in 0..t {
                    let mask_row = if shape.mask_per_row { row * t + i } else { i };
                    let m = &mask[mask_row * s..][..s];
                    let qi = &q[((row * heads + h) * t + i) * d..][..d];
                    let scores: Vec<f64> = (0..s)
                        .map(|j| {
                            let kj = &k[((row * kv_heads + g) * s + j) * d..][..d];
                            let dot: f64 = (0..d)
                                .map(|x| round(qi[x].to_f64() * scale) * kj[x].to_f64())
                                .sum();
                            round(dot) + m[j] as f64
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                    for x in 0..d {
                        let sum: f64 = (0..s)
                            .map(|j| {
                                let vj = v[((row * kv_heads + g) * s + j) * d + x].to_f64();
                                round((scores[j] - max).exp() / total) * vj
                            })
                            .sum();
                        out[((row * t + i) * heads + h) * d + x] = round(sum);
                    }
                }
            }
        }
        out
    }

    /// Causal masks with and without cached keys, a per-row mask with padding, GQA,
    /// a scale that is no power of two, and more query rows than one task takes.
    #[test]
    fn matches_eager_attention_with_the_same_roundings() {
        if !bf16_gemm::available() {
            eprintln!("no AVX512-BF16 here: nothing to check");
            return;
        }
        let causal = |t: usize, s: usize| -> Vec<f32> {
            (0..t * s)
                .map(|x| {
                    let (i, j) = (x / s, x % s);
                    if j <= s - t + i {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect()
        };
        let padded = |b: usize, t: usize| -> Vec<f32> {
            let base = causal(t, t);
            (0..b)
                .flat_map(|row| {
                    base.iter()
                        .enumerate()
                        .map(move |(x, &m)| {
                            let (i, j) = (x / t, x % t);
                            // Row 1 starts with two padding tokens, which see only themselves.
                            if row == 1 && j < 2 && i != j {
                                f32::NEG_INFINITY
                            } else {
                                m
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let cases = [
            (2, 4, 2, 70, 70, 8, causal(70, 70), false, 0.125),
            (2, 2, 1, 5, 9, 6, causal(5, 9), false, 0.3),
            (2, 3, 3, 7, 7, 4, padded(2, 7), true, 0.5),
        ];
        for (case, (b, heads, kv_heads, t, s, d, mask, per_row, scale)) in
            cases.into_iter().enumerate()
        {
            let shape = Shape {
                b,
                heads,
                kv_heads,
                t,
                s,
                d,
                mask_per_row: per_row,
            };
            let bf = |n: usize, seed: u64| -> Vec<bf16> {
                random(n, seed).into_iter().map(bf16::from_f32).collect()
            };
            let q = bf(b * heads * t * d, 1);
            let k = bf(b * kv_heads * s * d, 2);
            let v = bf(b * kv_heads * s * d, 3);
            let dev = Device::Cpu;
            let mask_t = if per_row {
                Tensor::from_vec(mask.clone(), (b, 1, 1, t, s), &dev)
            } else {
                Tensor::from_vec(mask.clone(), (t, s), &dev)
            }
            .unwrap();
            let got = attend(
                &Tensor::from_vec(q.clone(), (b, heads, t, d), &dev).unwrap(),
                &Tensor::from_vec(k.clone(), (b, kv_heads, s, d), &dev).unwrap(),
                &Tensor::from_vec(v.clone(), (b, kv_heads, s, d), &dev).unwrap(),
                &mask_t,
                scale,
            )
            .unwrap()
            .expect("bf16 on this CPU")
            .flatten_all()
            .unwrap()
            .to_vec1::<bf16>()
            .unwrap();
            let want = reference(&q, &k, &v, &mask, &shape, scale);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // f32 sums and exponentials against f64 ones: a bf16 rounding or two apart.
                assert!(
                    (g.to_f64() - w).abs() <= 2e-2,
                    "case {case}, value {i}: {g} vs {w}"
                );
            }
        }
    }
}

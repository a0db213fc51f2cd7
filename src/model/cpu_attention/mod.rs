//! Attention on CPUs with AVX-512, for inference, in bf16 ([`in_bf16`]) and f32 ([`in_f32`]).
//!
//! candle's path computes every score of `q k^T` (masked ones too), adds the mask in a
//! separate pass and takes a scalar `exp` per score. Here each task attends one head's
//! block of [`ROWS`] query rows and stops at the last key its mask lets in: a causal
//! mask halves the products and the exponentials. Trees and padded rows work the same
//! way, because the reach comes from the mask. The softmax runs sixteen lanes at a time
//! ([`super::avx512_rows`]), scaling and masking included.

mod in_bf16;
mod in_f32;

use super::avx512_rows::{self, with_bf16, with_f32};
use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

/// Query rows of one head that one task attends.
const ROWS: usize = 64;

/// `softmax(scale q k^T + mask) v` for `q` `[b, heads, t, d]` and `k`, `v`
/// `[b, kv_heads, s, d]`, with `mask` `[t, s]` or per row `[b, 1, 1, t, s]` (f32, 0 or
/// -inf); returns `[b, t, heads * d]`. `None` where it does not apply (not a CPU with
/// the kernels, a dtype other than bf16 or f32, an odd bf16 head size): the caller
/// takes candle's path.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> Result<Option<Tensor>> {
    let dtype = q.dtype();
    let same = [k, v].iter().all(|x| x.dtype() == dtype);
    if !q.device().is_cpu() || !same || mask.dtype() != DType::F32 || !avx512_rows::available(dtype)
    {
        return Ok(None);
    }
    let (b, heads, t, d) = q.dims4()?;
    let (_, kv_heads, s, _) = k.dims4()?;
    if heads % kv_heads != 0 || (dtype == DType::BF16 && d % 2 == 1) {
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
    let (dims, device) = ((b, t, heads * d), q.device().clone());
    with_f32(&mask, |mask| match dtype {
        DType::BF16 => with_bf16(&q, |q| {
            with_bf16(&k, |k| {
                with_bf16(&v, |v| {
                    let out = in_bf16::attend_slices(&shape, q, k, v, mask, scale);
                    Tensor::from_vec(out, dims, &device).map(Some)
                })
            })
        }),
        DType::F32 => with_f32(&q, |q| {
            with_f32(&k, |k| {
                with_f32(&v, |v| {
                    let out = in_f32::attend_slices(&shape, q, k, v, mask, scale as f32);
                    Tensor::from_vec(out, dims, &device).map(Some)
                })
            })
        }),
        _ => Ok(None),
    })
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

    /// Runs `block(unit, queries, masks, cols)` for every block of up to [`ROWS`] query
    /// rows of each (row, head), in parallel, and gathers the blocks' `[rows, d]` outputs
    /// into `[b, t, heads * d]`. `unit` is the block's (row, kv head) as `pack` made it;
    /// `cols` is how far right its mask rows reach (one past the last visible key).
    fn run<E, P>(
        &self,
        q: &[E],
        mask: &[f32],
        pack: impl Fn(usize) -> P + Sync,
        block: impl Fn(&P, &[E], &[&[f32]], usize) -> Vec<E> + Sync,
    ) -> Vec<E>
    where
        E: Copy + Default + Send + Sync,
        P: Send + Sync,
    {
        let Shape {
            b,
            heads,
            kv_heads,
            t,
            s,
            d,
            ..
        } = *self;
        let units: Vec<P> = (0..b * kv_heads).into_par_iter().map(&pack).collect();
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
        let results: Vec<Vec<E>> = tasks
            .par_iter()
            .map(|&(row, h, i0)| {
                let rows = ROWS.min(t - i0);
                let unit = &units[row * kv_heads + h / (heads / kv_heads)];
                let queries = &q[((row * heads + h) * t + i0) * d..][..rows * d];
                let masks: Vec<&[f32]> = (i0..i0 + rows)
                    .map(|i| &mask[self.mask_row(row, i) * s..][..s])
                    .collect();
                let cols = (i0..i0 + rows)
                    .map(|i| reach[self.mask_row(row, i)])
                    .max()
                    .unwrap_or(0);
                block(unit, queries, &masks, cols)
            })
            .collect();
        let mut out = vec![E::default(); b * t * heads * d];
        for (&(row, h, i0), block) in tasks.iter().zip(&results) {
            for (r, values) in block.chunks(d).enumerate() {
                let at = ((row * t + i0 + r) * heads + h) * d;
                out[at..at + d].copy_from_slice(values);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::avx512_rows::tests::uniform as random;
    use candle_core::Device;
    use half::bf16;

    fn to_bf16(x: f64) -> f64 {
        bf16::from_f64(x).to_f64()
    }

    /// Eager attention in f64, `[b, t, heads * d]`, with `round` applied where
    /// transformers rounds to the model's dtype (which only matters for bf16).
    fn reference(
        (q, k, v): (&[f64], &[f64], &[f64]),
        mask: &[f32],
        shape: &Shape,
        scale: f64,
        round: fn(f64) -> f64,
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
                            let dot: f64 = (0..d).map(|x| round(qi[x] * scale) * kj[x]).sum();
                            round(dot) + m[j] as f64
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                    for x in 0..d {
                        let sum: f64 = (0..s)
                            .map(|j| {
                                let vj = v[((row * kv_heads + g) * s + j) * d + x];
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
    /// a scale that is no power of two, and more query rows than one task takes; bf16
    /// with transformers' roundings, f32 against f64.
    #[test]
    fn matches_eager_attention() {
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
            // Values a bf16 holds exactly, so both dtypes attend the same numbers.
            let values = |n: usize, seed: u64| -> Vec<f64> {
                random(n, seed)
                    .into_iter()
                    .map(|x| bf16::from_f32(x).to_f64())
                    .collect()
            };
            let q = values(b * heads * t * d, 1);
            let k = values(b * kv_heads * s * d, 2);
            let v = values(b * kv_heads * s * d, 3);
            let dev = Device::Cpu;
            let mask_t = if per_row {
                Tensor::from_vec(mask.clone(), (b, 1, 1, t, s), &dev)
            } else {
                Tensor::from_vec(mask.clone(), (t, s), &dev)
            }
            .unwrap();
            // f32 sums and exponentials against f64 ones: in bf16 a rounding or two apart.
            for (dtype, round, bound) in [
                (DType::BF16, to_bf16 as fn(f64) -> f64, 2e-2),
                (DType::F32, std::convert::identity as fn(f64) -> f64, 2e-6),
            ] {
                if !avx512_rows::available(dtype) {
                    eprintln!("no AVX-512 kernels for {dtype:?} here: nothing to check");
                    continue;
                }
                let tensor = |x: &[f64], dims: (usize, usize, usize, usize)| {
                    Tensor::from_vec(x.to_vec(), dims, &dev)
                        .and_then(|x| x.to_dtype(dtype))
                        .unwrap()
                };
                let got = attend(
                    &tensor(&q, (b, heads, t, d)),
                    &tensor(&k, (b, kv_heads, s, d)),
                    &tensor(&v, (b, kv_heads, s, d)),
                    &mask_t,
                    scale,
                )
                .unwrap()
                .expect("the kernels on this CPU")
                .flatten_all()
                .and_then(|x| x.to_dtype(DType::F64))
                .and_then(|x| x.to_vec1::<f64>())
                .unwrap();
                let want = reference((&q, &k, &v), &mask, &shape, scale, round);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= bound,
                        "{dtype:?}, case {case}, value {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}

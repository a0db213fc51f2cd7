//! Rotary position embeddings (RoPE), with Llama 3 and linear frequency scaling.
//!
//! The angles are computed as transformers computes them (inverse frequencies and
//! `position * inv_freq` in f32), so positions far into a long context agree too.

use super::config::{ModelConfig, RopeScaling};
use candle_core::{DType, Device, Result, Tensor, D};

/// The inverse frequencies `1 / theta^(2i/d)` over the rotating part of a head
/// (`d` = `rotary_dim`), rescaled as the config asks.
pub fn inverse_frequencies(cfg: &ModelConfig) -> Vec<f32> {
    let base = base_frequencies(cfg.rotary_dim, cfg.rope_theta);
    let scaled = match cfg.rope_scaling {
        RopeScaling::Default => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_len,
        } => base
            .iter()
            .map(|&f| llama3_scale(f, factor, low_freq_factor, high_freq_factor, old_len))
            .collect(),
    };
    scaled.into_iter().map(|f| f as f32).collect()
}

/// Unscaled inverse frequencies of base `theta` over `dim` dimensions.
pub(crate) fn plain_frequencies(dim: usize, theta: f64) -> Vec<f32> {
    base_frequencies(dim, theta)
        .into_iter()
        .map(|f| f as f32)
        .collect()
}

fn base_frequencies(dim: usize, theta: f64) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / dim as f64))
        .collect()
}

/// Llama 3.1's rule: long wavelengths are divided by `factor`, short ones kept, and the
/// band between interpolates smoothly.
fn llama3_scale(inv_freq: f64, factor: f64, low: f64, high: f64, old_len: f64) -> f64 {
    let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
    let low_freq_wavelen = old_len / low;
    let high_freq_wavelen = old_len / high;
    if wavelen < high_freq_wavelen {
        inv_freq
    } else if wavelen > low_freq_wavelen {
        inv_freq / factor
    } else {
        let smooth = (old_len / wavelen - low) / (high - low);
        (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
    }
}

/// Precomputed cos/sin tables, `[positions, head_dim / 2]`, in the model's dtype.
#[derive(Debug, Clone)]
pub(crate) struct RotaryTables {
    inv_freq: Vec<f32>,
    cos: Tensor,
    sin: Tensor,
    dtype: DType,
}

impl RotaryTables {
    /// Tables of `inv_freq` for positions `0..max_positions`.
    pub fn new(inv_freq: &[f32], max_positions: usize, dtype: DType, dev: &Device) -> Result<Self> {
        let (cos, sin) = tables(inv_freq, 0, max_positions, dtype, dev)?;
        Ok(Self {
            inv_freq: inv_freq.to_vec(),
            cos,
            sin,
            dtype,
        })
    }

    /// cos and sin for positions `offset..offset + len`, each `[len, head_dim / 2]`.
    pub(crate) fn cos_sin(&self, offset: usize, len: usize) -> Result<(Tensor, Tensor)> {
        if offset + len <= self.cos.dim(0)? {
            Ok((
                self.cos.narrow(0, offset, len)?,
                self.sin.narrow(0, offset, len)?,
            ))
        } else {
            // Past the precomputed range (a user-raised max length): compute on demand.
            tables(&self.inv_freq, offset, len, self.dtype, self.cos.device())
        }
    }

    /// cos and sin at each of `positions` of each of `rows` rows (`positions` row
    /// after row): each `[rows, positions / rows, head_dim / 2]`.
    pub(crate) fn at(&self, positions: &[u32], rows: usize) -> Result<(Tensor, Tensor)> {
        let end = positions.iter().max().map_or(0, |&p| p as usize + 1);
        let index = Tensor::new(positions, self.cos.device())?;
        let (cos, sin) = if end <= self.cos.dim(0)? {
            (self.cos.clone(), self.sin.clone())
        } else {
            tables(&self.inv_freq, 0, end, self.dtype, self.cos.device())?
        };
        let shape = (rows, positions.len() / rows.max(1), ());
        Ok((
            cos.index_select(&index, 0)?.reshape(shape)?,
            sin.index_select(&index, 0)?.reshape(shape)?,
        ))
    }
}

fn tables(
    inv_freq: &[f32],
    offset: usize,
    len: usize,
    dtype: DType,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for pos in offset..offset + len {
        for &f in inv_freq {
            // f32 product as in transformers, then an exact cos/sin of that angle.
            let angle = (pos as f32 * f) as f64;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let cos = Tensor::from_vec(cos, (len, half), dev)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (len, half), dev)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// Rotates `x` (`[batch, heads, seq, head_dim]`) with the half-split convention of
/// transformers' Llama; `cos` and `sin` are `[seq, head_dim / 2]`, or
/// `[batch, seq, head_dim / 2]` for rows at different positions. `differentiable` picks the composite form, which has a backward
/// pass; candle's fused kernel has none (huggingface/candle#2168).
pub(crate) fn apply(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    differentiable: bool,
) -> Result<Tensor> {
    if differentiable {
        // To [batch or 1, 1, seq, head_dim]: the same angles for every head.
        let per_row = cos.rank() == 3;
        let widen = |t: &Tensor| -> Result<Tensor> {
            let t = Tensor::cat(&[t, t], D::Minus1)?.unsqueeze(0)?;
            if per_row {
                t.transpose(0, 1)
            } else {
                t.unsqueeze(0)
            }
        };
        let (cos, sin) = (widen(cos)?, widen(sin)?);
        let half = x.dim(D::Minus1)? / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    } else {
        candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with(scaling: RopeScaling) -> ModelConfig {
        let mut cfg = ModelConfig::from_json(
            r#"{"model_type":"llama","vocab_size":8,"hidden_size":128,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":1,"rope_theta":500000}"#,
        )
        .unwrap();
        cfg.rope_scaling = scaling;
        cfg
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let plain = inverse_frequencies(&cfg_with(RopeScaling::Default));
        let scaled = inverse_frequencies(&cfg_with(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        }));
        // Highest frequency (wavelength 2*pi < 8192/4): unchanged.
        assert_eq!(plain[0], scaled[0]);
        // Lowest frequency (wavelength > 8192): divided by the factor.
        let last = plain.len() - 1;
        assert!((scaled[last] - plain[last] / 8.0).abs() < 1e-12);
        // In between: between the two.
        for (p, s) in plain.iter().zip(&scaled) {
            assert!(*s <= *p && *s >= p / 8.0 - 1e-12);
        }
    }

    #[test]
    fn fused_and_composite_rotations_agree() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = cfg_with(RopeScaling::Linear { factor: 2.0 });
        let rope = RotaryTables::new(&inverse_frequencies(&cfg), 16, DType::F32, &dev)?;
        let (cos, sin) = rope.cos_sin(3, 5)?;
        let x = Tensor::randn(0f32, 1.0, (2, 1, 5, 128), &dev)?;
        let a = apply(&x, &cos, &sin, true)?;
        let b = apply(&x, &cos, &sin, false)?;
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        // Positions past the table are computed on demand and match.
        let (c1, _) = rope.cos_sin(12, 6)?;
        let (c2, _) =
            RotaryTables::new(&inverse_frequencies(&cfg), 32, DType::F32, &dev)?.cos_sin(12, 6)?;
        let diff = (c1 - c2)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }
}

//! Merge coefficients from an emulated learning-rate decay (DESIGN.md section 9).
//!
//! Averaging checkpoints theta_0..theta_k of a constant-LR run with coefficients c_j
//! (summing to 1) applies the update of interval i, (s_{i-1}, s_i], with the LR
//! multiplier w_i = c_i + ... + c_k. So a decay shape w (w_0 = 1 >= w_1 >= ... >= w_k)
//! is emulated by c_j = w_j - w_{j+1} and c_k = w_k.
//!
//! The shapes are functions f on [0, 1] with f(0) = 1, read at
//! x_i = (s_i - s_0) / (s_k - s_0 + h), where h = (s_k - s_0) / k is the mean checkpoint
//! interval. For evenly spaced checkpoints x_i = i / (k + 1), so uniform averaging is
//! exactly linear decay (f = 1 - x), as the WSM paper shows.
//!
//! ```
//! use ckpt::merge::{emulate, DecayShape};
//! let w = emulate(DecayShape::Cosine, &[200, 300, 400]).unwrap();
//! // x = 1/3 and 2/3: w = 1, 0.75, 0.25, so c = 0.25, 0.5, 0.25.
//! assert!((w.coefficients[1] - 0.5).abs() < 1e-12);
//! ```

use crate::error::{Error, Result};
use serde::Serialize;

/// Largest distance of the coefficients' sum from 1 that explicit weights may have.
pub const SUM_TOLERANCE: f64 = 1e-6;

/// An LR decay shape that a merge can emulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecayShape {
    /// Equal coefficients 1 / (k + 1): linear decay for evenly spaced checkpoints.
    Uniform,
    /// f(x) = 1 - x.
    Linear,
    /// f(x) = (1 + cos(pi x)) / 2.
    Cosine,
    /// The inverse-square-root decay started at the window: w(s) = sqrt(h / (s - s_0)),
    /// capped at 1 (so w_i = 1 / sqrt(i) for evenly spaced checkpoints).
    InvSqrt,
    /// f(x) = 1 - sqrt(x), the cooldown of Hägele et al. (2024).
    OneMinusSqrt,
}

impl DecayShape {
    /// Every shape, in the order `--help` lists them.
    pub const ALL: [DecayShape; 5] = [
        DecayShape::Uniform,
        DecayShape::Linear,
        DecayShape::Cosine,
        DecayShape::InvSqrt,
        DecayShape::OneMinusSqrt,
    ];

    /// The shape's name on the command line and in `ckpt.json`.
    pub fn name(self) -> &'static str {
        match self {
            DecayShape::Uniform => "uniform",
            DecayShape::Linear => "linear",
            DecayShape::Cosine => "cosine",
            DecayShape::InvSqrt => "inv-sqrt",
            DecayShape::OneMinusSqrt => "1-sqrt",
        }
    }

    /// The LR multiplier `d` steps after s_0, for checkpoints spanning `span` steps at
    /// a mean interval `h`; `None` for uniform averaging, which is not a function of
    /// the step when checkpoints are unevenly spaced.
    pub(crate) fn multiplier(self, d: f64, span: f64, h: f64) -> Option<f64> {
        let x = d / (span + h);
        Some(match self {
            DecayShape::Uniform => return None,
            DecayShape::Linear => 1.0 - x,
            DecayShape::Cosine => (1.0 + (std::f64::consts::PI * x).cos()) / 2.0,
            DecayShape::OneMinusSqrt => 1.0 - x.sqrt(),
            DecayShape::InvSqrt if d <= 0.0 => 1.0,
            DecayShape::InvSqrt => (h / d).sqrt().min(1.0),
        })
    }
}

impl std::fmt::Display for DecayShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DecayShape {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|shape| shape.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                Error::bad_value(
                    "--emulate",
                    format!(
                        "unknown decay shape {s:?} (expected one of {})",
                        names.join(", ")
                    ),
                )
            })
    }
}

/// The coefficients of a merge and the LR multipliers they emulate, per checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergeWeights {
    /// The checkpoints' steps, increasing.
    pub(crate) steps: Vec<u64>,
    /// c_j: the weight of checkpoint j in the average; they sum to 1.
    pub coefficients: Vec<f64>,
    /// w_j = c_j + ... + c_k: the LR multiplier of the interval ending at checkpoint j
    /// (w_0 = 1: the updates before the first checkpoint keep the full LR).
    pub(crate) multipliers: Vec<f64>,
}

impl MergeWeights {
    /// The emulated multiplier of the last interval: the LR the merge ends at,
    /// relative to the constant LR of the run.
    pub fn final_multiplier(&self) -> f64 {
        *self.multipliers.last().unwrap_or(&1.0)
    }
}

/// The coefficients that emulate `shape` over checkpoints at `steps` (increasing).
pub fn emulate(shape: DecayShape, steps: &[u64]) -> Result<MergeWeights> {
    check_steps(steps)?;
    let k = steps.len() - 1;
    if shape == DecayShape::Uniform {
        return from_coefficients(steps, vec![1.0 / (k + 1) as f64; k + 1]);
    }
    let s0 = steps[0];
    let span = (steps[k] - s0) as f64;
    let h = span / k as f64;
    let multipliers: Vec<f64> = steps
        .iter()
        .enumerate()
        .map(|(i, &s)| match i {
            0 => 1.0,
            _ => shape
                .multiplier((s - s0) as f64, span, h)
                .expect("only uniform has no multiplier"),
        })
        .collect();
    let coefficients = (0..=k)
        .map(|j| multipliers[j] - multipliers.get(j + 1).copied().unwrap_or(0.0))
        .collect();
    Ok(MergeWeights {
        steps: steps.to_vec(),
        coefficients,
        multipliers,
    })
}

/// Coefficients given by hand, one per checkpoint in step order: each finite and
/// non-negative, summing to 1 within [`SUM_TOLERANCE`].
pub fn explicit(weights: &[f64], steps: &[u64]) -> Result<MergeWeights> {
    check_steps(steps)?;
    if weights.len() != steps.len() {
        return Err(Error::bad_value(
            "--weights",
            format!(
                "{} weights given but {} checkpoints are selected (steps {}): give one weight \
             per checkpoint, in step order",
                weights.len(),
                steps.len(),
                list(steps)
            ),
        ));
    }
    if let Some((i, w)) = weights
        .iter()
        .enumerate()
        .find(|(_, w)| !w.is_finite() || **w < 0.0)
    {
        return Err(Error::bad_value(
            "--weights",
            format!(
                "weight {w} (for step {}) is not a non-negative number: a negative weight \
             emulates an LR that rises",
                steps[i]
            ),
        ));
    }
    let sum: f64 = weights.iter().sum();
    if (sum - 1.0).abs() > SUM_TOLERANCE {
        return Err(Error::bad_value(
            "--weights",
            format!(
                "the weights sum to {sum}, not 1: a weighted average needs coefficients that \
             sum to 1"
            ),
        ));
    }
    from_coefficients(steps, weights.to_vec())
}

fn from_coefficients(steps: &[u64], coefficients: Vec<f64>) -> Result<MergeWeights> {
    // w_j is the sum of the coefficients from j on (so w_0 is their sum, 1).
    let mut multipliers = coefficients.clone();
    for j in (0..multipliers.len().saturating_sub(1)).rev() {
        multipliers[j] += multipliers[j + 1];
    }
    Ok(MergeWeights {
        steps: steps.to_vec(),
        coefficients,
        multipliers,
    })
}

fn check_steps(steps: &[u64]) -> Result<()> {
    if steps.len() < 2 {
        return Err(Error::bad_value(
            "checkpoints",
            format!(
                "a merge needs at least 2 checkpoints, got {} (steps {})",
                steps.len(),
                list(steps)
            ),
        ));
    }
    if let Some(w) = steps.windows(2).find(|w| w[0] >= w[1]) {
        return Err(Error::bad_value(
            "checkpoints",
            format!("checkpoint steps must increase, got {} then {}", w[0], w[1]),
        ));
    }
    Ok(())
}

/// Steps as `100, 200, 300`.
pub(crate) fn list(steps: &[u64]) -> String {
    let parts: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn coefficients_telescope_to_the_multipliers() {
        for shape in DecayShape::ALL {
            for steps in [
                vec![0u64, 10],
                vec![100, 200, 300, 400, 500],
                vec![5, 6, 40, 41],
            ] {
                let w = emulate(shape, &steps).unwrap();
                let sum: f64 = w.coefficients.iter().sum();
                assert!((sum - 1.0).abs() < 1e-12, "{shape}: sum {sum}");
                assert!(
                    w.coefficients.iter().all(|&c| c >= -1e-15),
                    "{shape}: {w:?}"
                );
                assert_eq!(w.multipliers[0], 1.0);
                for j in 0..steps.len() {
                    let tail: f64 = w.coefficients[j..].iter().sum();
                    assert!((tail - w.multipliers[j]).abs() < 1e-12, "{shape} {j}");
                }
            }
        }
    }

    #[test]
    fn uniform_is_linear_decay_for_even_spacing() {
        let steps = [1000, 2000, 3000, 4000, 5000];
        let uniform = emulate(DecayShape::Uniform, &steps).unwrap();
        let linear = emulate(DecayShape::Linear, &steps).unwrap();
        assert!(
            close(&uniform.coefficients, &linear.coefficients),
            "{linear:?}"
        );
        assert!(close(&linear.coefficients, &[0.2; 5]));
    }

    #[test]
    fn inv_sqrt_starts_at_full_lr_and_caps_at_one() {
        let w = emulate(DecayShape::InvSqrt, &[0, 10, 20, 30]).unwrap();
        let want = [1.0, 1.0, 0.5f64.sqrt(), (1.0f64 / 3.0).sqrt()];
        assert!(close(&w.multipliers, &want), "{w:?}");
        // A first interval shorter than the mean would give w_1 > 1 (a negative c_0).
        let w = emulate(DecayShape::InvSqrt, &[0, 1, 30]).unwrap();
        assert_eq!(w.multipliers[1], 1.0);
        assert!(w.coefficients.iter().all(|&c| c >= 0.0));
    }

    #[test]
    fn explicit_weights_are_checked() {
        let steps = [1, 2, 3];
        let w = explicit(&[0.2, 0.3, 0.5], &steps).unwrap();
        assert!(close(&w.multipliers, &[1.0, 0.8, 0.5]));
        let err = |w: &[f64]| explicit(w, &steps).unwrap_err().to_string();
        assert!(
            err(&[0.5, 0.5]).contains("2 weights"),
            "{}",
            err(&[0.5, 0.5])
        );
        assert!(err(&[-0.5, 1.0, 0.5]).contains("-0.5"));
        assert!(err(&[f64::NAN, 0.5, 0.5]).contains("NaN"));
        assert!(err(&[0.2, 0.2, 0.2]).contains("sum to 0.6"));
        assert!(explicit(&[0.2, 0.3, 0.5 + 5e-7], &steps).is_ok());
    }

    #[test]
    fn bad_steps_and_names() {
        assert!(emulate(DecayShape::Linear, &[5]).is_err());
        assert!(emulate(DecayShape::Linear, &[5, 5]).is_err());
        assert_eq!(
            "inv-sqrt".parse::<DecayShape>().unwrap(),
            DecayShape::InvSqrt
        );
        assert_eq!(
            "1-sqrt".parse::<DecayShape>().unwrap(),
            DecayShape::OneMinusSqrt
        );
        let err = "exp".parse::<DecayShape>().unwrap_err().to_string();
        assert!(err.contains("cosine"), "{err}");
    }
}

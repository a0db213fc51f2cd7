//! Learning-rate schedules as pure functions of the step (DESIGN.md section 5).
//!
//! Every pre-training schedule warms up linearly, `LR(t) = eta * t / W` for `t <= W`,
//! then follows its shape until the last pre-training step `T`; past `T` it holds its
//! final value. Because a schedule is a pure function, resuming a run and branching a
//! decay from any stable-phase checkpoint need no state.
//!
//! ```
//! use ckpt::schedule::{Schedule, Shape};
//! let wsd = Schedule { peak_lr: 3e-4, warmup: 1000, total_steps: 80_000,
//!                      shape: Shape::Wsd { stable_ratio: 0.75, alpha: 0.1 } };
//! assert!((wsd.lr(500) - 1.5e-4).abs() < 1e-12);   // warming up
//! assert_eq!(wsd.lr(60_000), 3e-4);                  // stable
//! assert!((wsd.lr(80_000) - 3e-5).abs() < 1e-12);   // decayed to alpha * eta
//! ```

use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// What the LR does after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Shape {
    /// Warmup-Stable-Only: constant at the peak to the end (WSD with alpha = 1).
    Wso,
    /// Warmup-Stable-Decay: constant until `S = W + stable_ratio (T - W)`, then linear
    /// decay to `alpha * eta` at `T`.
    Wsd { stable_ratio: f64, alpha: f64 },
    /// Cosine from the peak to `alpha * eta` over `W..T`.
    Cosine { alpha: f64 },
    /// Linear from the peak to `alpha * eta` over `W..T`.
    Linear { alpha: f64 },
    /// Inverse square root: `eta * sqrt(W / t)` after warmup.
    InvSqrt,
    /// Cosine cycles with warm restarts (SGDR): the first cycle lasts `cycle` steps,
    /// each next one `mult` times longer, each decays to `alpha * eta`.
    Cyclic { cycle: u64, mult: f64, alpha: f64 },
}

/// A pre-training schedule: peak LR `eta`, warmup `W`, total steps `T` and a shape.
/// A constant LR without warmup is `Shape::Wso` with `warmup: 0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub peak_lr: f64,
    pub warmup: u64,
    pub total_steps: u64,
    pub shape: Shape,
}

impl Schedule {
    /// The learning rate at `step` (steps count from 0; step `t` uses `LR(t)`).
    pub fn lr(&self, step: u64) -> f64 {
        let (eta, w) = (self.peak_lr, self.warmup as f64);
        let t = step.min(self.total_steps) as f64;
        if t <= w && self.warmup > 0 {
            return eta * t / w;
        }
        let end = self.total_steps as f64;
        match self.shape {
            Shape::Wso => eta,
            Shape::Wsd {
                stable_ratio,
                alpha,
            } => {
                let s = w + stable_ratio * (end - w);
                if t <= s || end <= s {
                    eta
                } else {
                    eta * ((1.0 - alpha) * (end - t) / (end - s) + alpha)
                }
            }
            Shape::Cosine { alpha } => {
                let progress = fraction(t - w, end - w);
                eta * (alpha + (1.0 - alpha) / 2.0 * (1.0 + (PI * progress).cos()))
            }
            Shape::Linear { alpha } => {
                eta * ((1.0 - alpha) * (1.0 - fraction(t - w, end - w)) + alpha)
            }
            Shape::InvSqrt => eta * (w.max(1.0) / t.max(1.0)).sqrt(),
            Shape::Cyclic { cycle, mult, alpha } => {
                let progress = cycle_progress(t - w, cycle as f64, mult);
                eta * (alpha + (1.0 - alpha) / 2.0 * (1.0 + (PI * progress).cos()))
            }
        }
    }

    /// The minimum LR factor the shape decays to (1 for WSO: no decay).
    pub fn alpha(&self) -> f64 {
        match self.shape {
            Shape::Wso => 1.0,
            Shape::Wsd { alpha, .. }
            | Shape::Cosine { alpha }
            | Shape::Linear { alpha }
            | Shape::Cyclic { alpha, .. } => alpha,
            Shape::InvSqrt => 0.0,
        }
    }
}

/// `x / span` clamped to [0, 1]; an empty span counts as finished.
fn fraction(x: f64, span: f64) -> f64 {
    if span <= 0.0 {
        1.0
    } else {
        (x / span).clamp(0.0, 1.0)
    }
}

/// Where `x` steps after warmup fall inside the current SGDR cycle, in [0, 1).
fn cycle_progress(mut x: f64, mut cycle: f64, mult: f64) -> f64 {
    if cycle <= 0.0 {
        return 1.0;
    }
    while x >= cycle {
        x -= cycle;
        cycle *= mult.max(1.0);
    }
    x / cycle
}

/// Mid-training after a pre-training schedule: steps `T+1 ..= T+M` decay linearly from
/// the pre-training LR at `T` to `alpha_mid` times it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MidTraining {
    pub pre: Schedule,
    pub steps: u64,
    pub alpha_mid: f64,
}

impl MidTraining {
    /// LR at absolute step `t` (`T < t <= T + M`; clamped to that range).
    pub fn lr(&self, step: u64) -> f64 {
        let end_pre = self.pre.total_steps;
        let m = self.steps.max(1) as f64;
        let t = step.clamp(end_pre, end_pre + self.steps) as f64;
        let base = self.pre.lr(end_pre);
        base * ((1.0 - self.alpha_mid) * ((end_pre as f64 + m - t) / m) + self.alpha_mid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETA: f64 = 3e-4;

    fn paper(shape: Shape) -> Schedule {
        Schedule {
            peak_lr: ETA,
            warmup: 1000,
            total_steps: 80_000,
            shape,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-12)
    }

    #[test]
    fn every_shape_warms_up_linearly() {
        for shape in [
            Shape::Wso,
            Shape::Wsd {
                stable_ratio: 0.75,
                alpha: 0.0,
            },
            Shape::Cosine { alpha: 0.1 },
            Shape::Linear { alpha: 0.0 },
            Shape::InvSqrt,
            Shape::Cyclic {
                cycle: 10_000,
                mult: 2.0,
                alpha: 0.0,
            },
        ] {
            let s = paper(shape);
            assert_eq!(s.lr(0), 0.0);
            assert!(close(s.lr(250), ETA / 4.0));
            assert!(close(s.lr(1000), ETA), "{shape:?}");
        }
    }

    #[test]
    fn wso_and_wsd_follow_the_paper() {
        let wso = paper(Shape::Wso);
        assert_eq!(wso.lr(80_000), ETA);
        assert_eq!(wso.lr(90_000), ETA);
        let wsd = paper(Shape::Wsd {
            stable_ratio: 0.75,
            alpha: 0.1,
        });
        let s = 1000.0 + 0.75 * 79_000.0; // 60,250
        assert_eq!(wsd.lr(60_250), ETA);
        let t = 70_000.0;
        let want = ETA * (0.9 * (80_000.0 - t) / (80_000.0 - s) + 0.1);
        assert!(close(wsd.lr(70_000), want));
        assert!(close(wsd.lr(80_000), 0.1 * ETA));
        assert!(close(wsd.lr(85_000), 0.1 * ETA), "held after T");
    }

    #[test]
    fn cosine_and_linear_follow_the_paper() {
        let cos = paper(Shape::Cosine { alpha: 0.1 });
        let mid = 1000.0 + 79_000.0 / 2.0;
        assert!(close(cos.lr(mid as u64), ETA * (0.1 + 0.9 / 2.0)));
        assert!(close(cos.lr(80_000), 0.1 * ETA));
        let t = 20_000.0;
        let want = ETA * (0.1 + 0.45 * (1.0 + (PI * (t - 1000.0) / 79_000.0).cos()));
        assert!(close(cos.lr(20_000), want));
        let lin = paper(Shape::Linear { alpha: 0.0 });
        assert!(close(lin.lr(40_500), ETA / 2.0));
        assert_eq!(lin.lr(80_000), 0.0);
    }

    #[test]
    fn mid_training_continues_from_the_last_pretraining_lr() {
        let pre = paper(Shape::Cosine { alpha: 0.1 });
        let mid = MidTraining {
            pre,
            steps: 36_000,
            alpha_mid: 0.0,
        };
        assert!(close(mid.lr(80_000), 0.1 * ETA));
        assert!(close(mid.lr(98_000), 0.05 * ETA));
        assert_eq!(mid.lr(116_000), 0.0);
        let hold = MidTraining {
            pre: paper(Shape::Wso),
            steps: 36_000,
            alpha_mid: 1.0,
        };
        assert_eq!(hold.lr(100_000), ETA);
    }

    #[test]
    fn inverse_sqrt_and_restarts() {
        let inv = paper(Shape::InvSqrt);
        assert!(close(inv.lr(4000), ETA / 2.0));
        let sgdr = paper(Shape::Cyclic {
            cycle: 1000,
            mult: 2.0,
            alpha: 0.0,
        });
        assert!(close(sgdr.lr(1500), ETA / 2.0)); // half-way through cycle 1
        assert!(close(sgdr.lr(2000), ETA)); // restart
        assert!(close(sgdr.lr(3000), ETA / 2.0)); // half-way through the 2000-step cycle 2
    }
}

//! Learning-rate schedules as pure functions of the step (DESIGN.md section 5).
//!
//! Every pre-training schedule warms up linearly, `LR(t) = eta * t / W` for `t <= W`,
//! then follows its shape until the last pre-training step `T`; mid-training, when
//! there is one, decays linearly from `LR(T)` over the next `M` steps; past the end the
//! LR holds its final value. Because a schedule is a pure function, resuming a run and
//! branching a decay from any stable-phase checkpoint need no state.
//!
//! A recipe describes its schedule with a [`ScheduleSpec`] (the `[schedule]` table);
//! the spec maps onto the primitives [`Schedule`], [`Shape`] and [`MidTraining`].
//!
//! ```
//! use ckpt::schedule::{Kind, ScheduleSpec};
//! let mut wsd = ScheduleSpec::new(Kind::Wsd, 3e-4, 1000, 80_000);
//! wsd.alpha = Some(0.1);
//! wsd.validate().unwrap();
//! assert!((wsd.lr(500) - 1.5e-4).abs() < 1e-12);   // warming up
//! assert_eq!(wsd.lr(60_000), 3e-4);                  // stable (S = 60,250)
//! assert!((wsd.lr(80_000) - 3e-5).abs() < 1e-12);   // decayed to alpha * eta
//! assert_eq!(wsd.label(), "WSD (α=0.1)");
//! ```

pub mod job;

pub use job::{DataFormat, ScheduleJob, ScheduleOutcome, Schedules};

use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

// ----- the spec: what a recipe's [schedule] table says -----

/// The schedule families a recipe can name (`kind = "..."`, kebab-case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Warmup-Stable-Only: warm up, then hold the peak to the end.
    Wso,
    /// Warmup-Stable-Decay: hold the peak until `S`, then decay linearly to `alpha * eta`.
    Wsd,
    /// Cosine decay from the peak to `alpha * eta` over `W..T`.
    Cosine,
    /// Linear decay from the peak to `alpha * eta` over `W..T`.
    Linear,
    /// The peak throughout (warmup honoured if given).
    Constant,
    /// `eta * sqrt(W / t)` after warmup.
    #[serde(alias = "inv_sqrt")]
    InvSqrt,
    /// Cosine cycles with warm restarts (SGDR).
    Cyclic,
}

impl Kind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Kind; 7] = [
        Kind::Wso,
        Kind::Wsd,
        Kind::Cosine,
        Kind::Linear,
        Kind::Constant,
        Kind::InvSqrt,
        Kind::Cyclic,
    ];

    /// The name recipes and flags use (`inv-sqrt`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Wso => "wso",
            Kind::Wsd => "wsd",
            Kind::Cosine => "cosine",
            Kind::Linear => "linear",
            Kind::Constant => "constant",
            Kind::InvSqrt => "inv-sqrt",
            Kind::Cyclic => "cyclic",
        }
    }

    /// Whether the kind decays to a minimum factor `alpha` (which it then accepts).
    fn takes_alpha(self) -> bool {
        matches!(self, Kind::Wsd | Kind::Cosine | Kind::Linear | Kind::Cyclic)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown schedule kind {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// The `[schedule]` table of a training recipe, or the schedule flags of the CLI.
///
/// Optional keys that a kind does not use must be absent ([`ScheduleSpec::validate`]
/// says which); [`ScheduleSpec::resolved`] fills in the defaults of the ones it uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// The schedule family.
    pub kind: Kind,
    /// Peak learning rate `eta`.
    pub(crate) peak_lr: f64,
    /// Warmup steps `W` (linear from 0 to the peak); 0 = none.
    #[serde(default)]
    pub warmup: u64,
    /// `T`, the last pre-training step. `None` only in SFT recipes, where the trainer
    /// fills it from the epoch size with [`ScheduleSpec::with_total_steps`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) total_steps: Option<u64>,
    /// WSD: the stable phase ends at `S = W + stable_ratio (T - W)` (default 0.75).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stable_ratio: Option<f64>,
    /// WSD, instead of `stable_ratio`: the decay lasts this many steps, `S = T -
    /// decay_steps` (a decay branched from a stable-phase checkpoint of a WSO run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) decay_steps: Option<u64>,
    /// Minimum LR factor of pre-training (default 0 for wsd, cosine, linear and
    /// cyclic; absent or 1 for wso; not used by constant and inv-sqrt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Cyclic: length of the first cycle in steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cycle: Option<u64>,
    /// Cyclic: each cycle lasts `mult` times the previous one (default 1, >= 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mult: Option<f64>,
    /// `M`, the mid-training steps after `T` (with `alpha_mid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mid_steps: Option<u64>,
    /// Minimum factor of mid-training, relative to `LR(T)` (with `mid_steps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_mid: Option<f64>,
}

/// What is wrong with a [`ScheduleSpec`]; the message names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// A factor outside [0, 1] (or not a number).
    #[error("schedule.{key} = {value} is outside [0, 1]")]
    OutsideUnit { key: &'static str, value: f64 },
    /// A quantity that must be a positive finite number.
    #[error("schedule.{key} = {value} must be positive and finite")]
    NotPositive { key: &'static str, value: f64 },
    /// `mult` below 1 (cycles would shrink) or not finite.
    #[error("schedule.mult = {0} must be a finite number >= 1")]
    BadMult(f64),
    /// A key the kind does not use.
    #[error("schedule.{key} does not apply to kind = \"{kind}\"")]
    NotForKind { key: &'static str, kind: Kind },
    /// WSO never decays: its alpha is 1 by definition.
    #[error("schedule.alpha = {0} does not apply to kind = \"wso\" (WSO does not decay: alpha must be absent or 1; use kind = \"wsd\" for a decay)")]
    WsoAlpha(f64),
    /// A key that the others require.
    #[error("schedule.{key} is required {reason}")]
    Missing { key: &'static str, reason: String },
    /// Two keys that say the same thing in different ways.
    #[error("schedule.{0} and schedule.{1} are both set; give one of them")]
    Conflict(&'static str, &'static str),
    /// `total_steps + mid_steps` past the largest step count there is.
    #[error(
        "schedule.total_steps + schedule.mid_steps = {total} + {mid} overflows: together they must be at most {}",
        u64::MAX
    )]
    TooManySteps { total: u64, mid: u64 },
    /// A step count larger than the room the schedule has for it.
    #[error("schedule.{key} = {value} is larger than {limit}")]
    TooLarge {
        key: &'static str,
        value: u64,
        limit: String,
    },
}

impl SpecError {
    /// The key the error is about (`alpha`, `warmup`, ...).
    pub fn key(&self) -> &'static str {
        match self {
            SpecError::OutsideUnit { key, .. }
            | SpecError::NotPositive { key, .. }
            | SpecError::NotForKind { key, .. }
            | SpecError::Missing { key, .. }
            | SpecError::TooLarge { key, .. }
            | SpecError::Conflict(key, _) => key,
            SpecError::TooManySteps { .. } => "mid_steps",
            SpecError::BadMult(_) => "mult",
            SpecError::WsoAlpha(_) => "alpha",
        }
    }
}

impl From<SpecError> for crate::Error {
    fn from(e: SpecError) -> Self {
        crate::Error::bad_value("schedule", e.to_string())
    }
}

/// The WSD stable ratio of the paper (Table 6).
pub(crate) const DEFAULT_STABLE_RATIO: f64 = 0.75;

impl ScheduleSpec {
    /// A spec of `kind` with every optional key absent (their defaults apply).
    pub fn new(kind: Kind, peak_lr: f64, warmup: u64, total_steps: u64) -> Self {
        Self {
            kind,
            peak_lr,
            warmup,
            total_steps: Some(total_steps),
            stable_ratio: None,
            decay_steps: None,
            alpha: None,
            cycle: None,
            mult: None,
            mid_steps: None,
            alpha_mid: None,
        }
    }

    /// Reads the `[schedule]` table of a training recipe (TOML; other tables are
    /// ignored) and validates it. Errors name the file and the key.
    pub fn read_recipe(path: &Path) -> crate::Result<Self> {
        let bytes = crate::error::read_file(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| crate::Error::bad_file(path, "not UTF-8 text"))?;
        Self::from_recipe_str(text).map_err(|message| crate::Error::bad_file(path, message))
    }

    /// [`ScheduleSpec::read_recipe`] on the text of a recipe; the error is the message
    /// without the file name.
    pub fn from_recipe_str(text: &str) -> Result<Self, String> {
        let mut recipe: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map(|s| {
                let before = &text.as_bytes()[..s.start.min(text.len())];
                before.iter().filter(|&&b| b == b'\n').count() + 1
            });
            match line {
                Some(line) => format!("invalid TOML at line {line}: {}", e.message()),
                None => format!("invalid TOML: {}", e.message()),
            }
        })?;
        let table = match recipe.remove("schedule") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err("`schedule` is not a table".into()),
            None => return Err("no [schedule] table".into()),
        };
        let spec: ScheduleSpec = table
            .try_into()
            .map_err(|e: toml::de::Error| format!("[schedule]: {}", e.message()))?;
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// Checks the spec; the error names the first key that is wrong. A spec without
    /// `total_steps` (an SFT recipe before the trainer fills it in) passes when the
    /// rest is consistent; the checks against `T` run once it is set.
    pub fn validate(&self) -> Result<(), SpecError> {
        let kind = self.kind;
        if !(self.peak_lr.is_finite() && self.peak_lr > 0.0) {
            return Err(SpecError::NotPositive {
                key: "peak_lr",
                value: self.peak_lr,
            });
        }
        if let Some(t) = self.total_steps {
            if t == 0 {
                return Err(SpecError::NotPositive {
                    key: "total_steps",
                    value: 0.0,
                });
            }
            if self.warmup > t {
                return Err(SpecError::TooLarge {
                    key: "warmup",
                    value: self.warmup,
                    limit: format!("schedule.total_steps = {t}"),
                });
            }
        }
        // Keys that only some kinds use.
        let only = |key: &'static str, set: bool, applies: bool| match (set, applies) {
            (true, false) => Err(SpecError::NotForKind { key, kind }),
            _ => Ok(()),
        };
        only(
            "stable_ratio",
            self.stable_ratio.is_some(),
            kind == Kind::Wsd,
        )?;
        only("decay_steps", self.decay_steps.is_some(), kind == Kind::Wsd)?;
        only("cycle", self.cycle.is_some(), kind == Kind::Cyclic)?;
        only("mult", self.mult.is_some(), kind == Kind::Cyclic)?;
        match (kind, self.alpha) {
            (Kind::Wso, Some(a)) if a != 1.0 => return Err(SpecError::WsoAlpha(a)),
            (Kind::Wso, _) => {}
            (k, Some(_)) if !k.takes_alpha() => only("alpha", true, false)?,
            _ => {}
        }
        unit("alpha", self.alpha)?;
        unit("stable_ratio", self.stable_ratio)?;
        unit("alpha_mid", self.alpha_mid)?;
        if self.stable_ratio.is_some() && self.decay_steps.is_some() {
            return Err(SpecError::Conflict("decay_steps", "stable_ratio"));
        }
        if let (Some(d), Some(t)) = (self.decay_steps, self.total_steps) {
            let room = t - self.warmup;
            if d > room {
                return Err(SpecError::TooLarge {
                    key: "decay_steps",
                    value: d,
                    limit: format!("total_steps - warmup = {room}"),
                });
            }
        }
        if kind == Kind::Cyclic {
            match self.cycle {
                None => {
                    return Err(SpecError::Missing {
                        key: "cycle",
                        reason: "when kind = \"cyclic\"".into(),
                    })
                }
                Some(0) => {
                    return Err(SpecError::NotPositive {
                        key: "cycle",
                        value: 0.0,
                    })
                }
                Some(_) => {}
            }
            if let Some(m) = self.mult {
                if !(m.is_finite() && m >= 1.0) {
                    return Err(SpecError::BadMult(m));
                }
            }
        }
        // The curve ends at T + M: a sum that wraps would end it early, silently.
        if let (Some(total), Some(mid)) = (self.total_steps, self.mid_steps) {
            if total.checked_add(mid).is_none() {
                return Err(SpecError::TooManySteps { total, mid });
            }
        }
        match (self.mid_steps, self.alpha_mid) {
            (Some(0), _) => Err(SpecError::NotPositive {
                key: "mid_steps",
                value: 0.0,
            }),
            (Some(_), None) => Err(SpecError::Missing {
                key: "alpha_mid",
                reason: "with schedule.mid_steps".into(),
            }),
            (None, Some(_)) => Err(SpecError::Missing {
                key: "mid_steps",
                reason: "with schedule.alpha_mid".into(),
            }),
            _ => Ok(()),
        }
    }

    /// `T`, or an error saying it is missing.
    pub fn require_total_steps(&self) -> Result<u64, SpecError> {
        self.total_steps.ok_or(SpecError::Missing {
            key: "total_steps",
            reason: "to compute the learning rate".into(),
        })
    }

    /// The same spec with `T` set (SFT: the trainer knows it from the epoch size).
    pub fn with_total_steps(&self, t: u64) -> Self {
        Self {
            total_steps: Some(t),
            ..self.clone()
        }
    }

    /// The spec with the defaults of the keys its kind uses written out (`alpha`,
    /// `stable_ratio` unless `decay_steps`, `mult`), as a run records it.
    pub fn resolved(&self) -> Self {
        let mut s = self.clone();
        match s.kind {
            Kind::Wso => s.alpha = Some(1.0),
            k if k.takes_alpha() => s.alpha = Some(self.alpha_pre()),
            _ => {}
        }
        if s.kind == Kind::Wsd && s.decay_steps.is_none() {
            s.stable_ratio = Some(s.stable_ratio.unwrap_or(DEFAULT_STABLE_RATIO));
        }
        if s.kind == Kind::Cyclic {
            s.mult = Some(s.mult.unwrap_or(1.0));
        }
        s
    }

    /// The minimum LR factor of pre-training: 1 for wso and constant (no decay), the
    /// given or default `alpha` for the decaying kinds, 0 for inv-sqrt (tends to 0).
    pub fn alpha_pre(&self) -> f64 {
        match self.kind {
            Kind::Wso | Kind::Constant => 1.0,
            Kind::InvSqrt => 0.0,
            _ => self.alpha.unwrap_or(0.0),
        }
    }

    /// The pre-training part as a [`Schedule`].
    ///
    /// # Panics
    /// If `total_steps` is not set (see [`ScheduleSpec::with_total_steps`]).
    pub(crate) fn pre_training(&self) -> Schedule {
        let total_steps = self
            .total_steps
            .expect("schedule.total_steps must be set (with_total_steps) before computing LRs");
        let alpha = self.alpha_pre();
        let shape = match self.kind {
            Kind::Wso | Kind::Constant => Shape::Wso,
            Kind::Wsd => match self.decay_steps {
                Some(decay_steps) => Shape::WsdDecaySteps { decay_steps, alpha },
                None => Shape::Wsd {
                    stable_ratio: self.stable_ratio.unwrap_or(DEFAULT_STABLE_RATIO),
                    alpha,
                },
            },
            Kind::Cosine => Shape::Cosine { alpha },
            Kind::Linear => Shape::Linear { alpha },
            Kind::InvSqrt => Shape::InvSqrt,
            Kind::Cyclic => Shape::Cyclic {
                cycle: self.cycle.unwrap_or(1),
                mult: self.mult.unwrap_or(1.0),
                alpha,
            },
        };
        Schedule {
            peak_lr: self.peak_lr,
            warmup: self.warmup,
            total_steps,
            shape,
        }
    }

    /// The mid-training part, if the spec has one.
    ///
    /// # Panics
    /// If `total_steps` is not set.
    pub(crate) fn mid_training(&self) -> Option<MidTraining> {
        let steps = self.mid_steps?;
        Some(MidTraining {
            pre: self.pre_training(),
            steps,
            alpha_mid: self.alpha_mid.unwrap_or(1.0),
        })
    }

    /// The learning rate at `step`: pre-training for `step <= T`, mid-training for
    /// `T < step <= T + M`, the last value after that.
    ///
    /// # Panics
    /// If `total_steps` is not set.
    pub fn lr(&self, step: u64) -> f64 {
        match self.mid_training() {
            Some(mid) if step > mid.pre.total_steps => mid.lr(step),
            _ => self.pre_training().lr(step),
        }
    }

    /// The last step of the schedule: `T + M`, or `T` without mid-training.
    ///
    /// # Panics
    /// If `total_steps` is not set.
    pub(crate) fn end_step(&self) -> u64 {
        self.pre_training().total_steps + self.mid_steps.unwrap_or(0)
    }

    /// Steps where the curve changes its formula (warmup end, stable end, `T`, cycle
    /// restarts, the end), in order: a plot that samples the curve keeps its corners
    /// by including them.
    ///
    /// # Panics
    /// If `total_steps` is not set.
    pub(crate) fn breakpoints(&self) -> Vec<u64> {
        let pre = self.pre_training();
        let t = pre.total_steps;
        let mut steps = vec![0, pre.warmup, t, self.end_step()];
        if let Some(s) = pre.stable_end() {
            steps.push(s.floor() as u64);
            steps.push(s.ceil() as u64);
        }
        if let Shape::Cyclic { cycle, mult, .. } = pre.shape {
            let (mut start, mut len) = (pre.warmup as f64, cycle as f64);
            // Past some thousands of restarts a plot cannot show them anyway.
            for _ in 0..10_000 {
                start += len;
                len *= mult;
                if start > t as f64 {
                    break;
                }
                steps.push(start.floor() as u64);
                steps.push(start.ceil() as u64);
            }
        }
        steps.retain(|&s| s <= self.end_step());
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    /// A short name for legends: `WSO`, `WSD (α=0.1)`, `Cosine (α=0) + mid α_mid=1`.
    pub fn label(&self) -> String {
        let alpha = self.alpha_pre();
        let mut label = match self.kind {
            Kind::Wso => "WSO".to_string(),
            Kind::Constant => "Constant".to_string(),
            Kind::InvSqrt => "Inverse sqrt".to_string(),
            Kind::Wsd => match (self.decay_steps, self.stable_ratio) {
                (Some(d), _) => format!("WSD (α={alpha}, decay {d} steps)"),
                (None, Some(r)) if r != DEFAULT_STABLE_RATIO => {
                    format!("WSD (ρ={r}, α={alpha})")
                }
                _ => format!("WSD (α={alpha})"),
            },
            Kind::Cosine => format!("Cosine (α={alpha})"),
            Kind::Linear => format!("Linear (α={alpha})"),
            Kind::Cyclic => {
                let cycle = self.cycle.unwrap_or(1);
                let mult = self.mult.unwrap_or(1.0);
                if mult == 1.0 {
                    format!("Cyclic (cycle {cycle}, α={alpha})")
                } else {
                    format!("Cyclic (cycle {cycle} ×{mult}, α={alpha})")
                }
            }
        };
        if self.mid_steps.is_some() {
            label.push_str(&format!(" + mid α_mid={}", self.alpha_mid.unwrap_or(1.0)));
        }
        label
    }
}

fn unit(key: &'static str, value: Option<f64>) -> Result<(), SpecError> {
    match value {
        Some(v) if !(0.0..=1.0).contains(&v) => Err(SpecError::OutsideUnit { key, value: v }),
        _ => Ok(()),
    }
}

// ----- the primitives: pure functions of the step -----

/// What the LR does after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Shape {
    /// Warmup-Stable-Only: constant at the peak to the end (WSD with alpha = 1).
    Wso,
    /// Warmup-Stable-Decay: constant until `S = W + stable_ratio (T - W)`, then linear
    /// decay to `alpha * eta` at `T`.
    Wsd { stable_ratio: f64, alpha: f64 },
    /// WSD whose decay has a fixed length: `S = T - decay_steps` (a decay branched
    /// from a stable-phase checkpoint).
    WsdDecaySteps { decay_steps: u64, alpha: f64 },
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
pub(crate) struct Schedule {
    pub(crate) peak_lr: f64,
    pub(crate) warmup: u64,
    pub(crate) total_steps: u64,
    pub(crate) shape: Shape,
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
            Shape::Wsd { alpha, .. } | Shape::WsdDecaySteps { alpha, .. } => {
                let s = self.stable_end().unwrap_or(end);
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
                // (T - t) / (T - W) as the paper writes it: 1 - (t - W) / (T - W) would
                // lose digits near T.
                eta * ((1.0 - alpha) * fraction(end - t, end - w) + alpha)
            }
            Shape::InvSqrt => eta * (w.max(1.0) / t.max(1.0)).sqrt(),
            Shape::Cyclic { cycle, mult, alpha } => {
                let progress =
                    cycle_progress(step.min(self.total_steps) - self.warmup, cycle, mult);
                eta * (alpha + (1.0 - alpha) / 2.0 * (1.0 + (PI * progress).cos()))
            }
        }
    }

    /// `S`, where a WSD decay starts (`None` for the other shapes).
    pub(crate) fn stable_end(&self) -> Option<f64> {
        let (w, end) = (self.warmup as f64, self.total_steps as f64);
        match self.shape {
            Shape::Wsd { stable_ratio, .. } => Some(w + stable_ratio * (end - w)),
            Shape::WsdDecaySteps { decay_steps, .. } => Some(
                self.total_steps
                    .saturating_sub(decay_steps)
                    .max(self.warmup) as f64,
            ),
            _ => None,
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
fn cycle_progress(x: u64, cycle: u64, mult: f64) -> f64 {
    if cycle == 0 {
        return 1.0;
    }
    if mult <= 1.0 {
        // Equal cycles: exact in integers, and O(1) however many restarts there were.
        return (x % cycle) as f64 / cycle as f64;
    }
    let (mut x, mut cycle) = (x as f64, cycle as f64);
    while x >= cycle {
        x -= cycle;
        cycle *= mult;
    }
    x / cycle
}

/// Mid-training after a pre-training schedule: steps `T+1 ..= T+M` decay linearly from
/// the pre-training LR at `T` to `alpha_mid` times it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct MidTraining {
    pub(crate) pre: Schedule,
    pub(crate) steps: u64,
    pub(crate) alpha_mid: f64,
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

    // ----- ScheduleSpec -----

    fn spec(kind: Kind) -> ScheduleSpec {
        ScheduleSpec::new(kind, ETA, 1000, 80_000)
    }

    fn with(mut s: ScheduleSpec, edit: impl FnOnce(&mut ScheduleSpec)) -> ScheduleSpec {
        edit(&mut s);
        s
    }

    /// The paper's equations written out in the test, at t = 0, W, S, T, T + M and
    /// points between them.
    #[test]
    fn spec_follows_the_paper_at_the_key_steps() {
        let (w, t_end) = (1000.0, 80_000.0);
        let warm = |t: f64| ETA * t / w;
        for kind in Kind::ALL {
            let s = with(spec(kind), |s| {
                if kind == Kind::Cyclic {
                    s.cycle = Some(79_000);
                }
            });
            s.validate().unwrap();
            assert_eq!(s.lr(0), 0.0, "{kind}");
            assert!(close(s.lr(300), warm(300.0)), "{kind}");
            assert!(close(s.lr(1000), ETA), "{kind}");
            assert_eq!(s.end_step(), 80_000);
        }

        let wsd = with(spec(Kind::Wsd), |s| s.alpha = Some(0.2));
        let s_end = w + 0.75 * (t_end - w);
        let decay = |t: f64| ETA * (0.8 * (t_end - t) / (t_end - s_end) + 0.2);
        assert_eq!(wsd.lr(30_000), ETA);
        assert_eq!(wsd.lr(60_250), ETA);
        for t in [60_251, 70_000, 79_999, 80_000] {
            assert!(close(wsd.lr(t), decay(t as f64)), "WSD at {t}");
        }
        assert!(close(wsd.lr(80_000), 0.2 * ETA));

        let cosine = with(spec(Kind::Cosine), |s| s.alpha = Some(0.1));
        let cos = |t: f64| ETA * (0.1 + 0.9 / 2.0 * (1.0 + (PI * (t - w) / (t_end - w)).cos()));
        for t in [1001, 20_000, 40_500, 79_999, 80_000] {
            assert!(close(cosine.lr(t), cos(t as f64)), "cosine at {t}");
        }
        assert!(close(cosine.lr(80_000), 0.1 * ETA));

        let linear = spec(Kind::Linear); // alpha defaults to 0
        for t in [1001, 20_000, 40_500, 80_000] {
            let want = ETA * (t_end - t as f64) / (t_end - w);
            assert!(close(linear.lr(t), want), "linear at {t}");
        }
        assert_eq!(linear.lr(80_000), 0.0);

        for kind in [Kind::Wso, Kind::Constant] {
            let s = spec(kind);
            for t in [1001, 60_250, 80_000, 90_000] {
                assert_eq!(s.lr(t), ETA, "{kind} at {t}");
            }
        }
        let constant = ScheduleSpec::new(Kind::Constant, ETA, 0, 100);
        assert_eq!(constant.lr(0), ETA, "constant needs no warmup");

        let inv = spec(Kind::InvSqrt);
        assert!(close(inv.lr(16_000), ETA / 4.0));
        assert!(close(inv.lr(80_000), ETA * (1000.0f64 / 80_000.0).sqrt()));

        let sgdr = with(spec(Kind::Cyclic), |s| {
            s.cycle = Some(2000);
            s.mult = Some(2.0);
            s.alpha = Some(0.1);
        });
        let at = |p: f64| ETA * (0.1 + 0.45 * (1.0 + (PI * p).cos()));
        assert!(close(sgdr.lr(2000), at(0.5)));
        assert!(
            close(sgdr.lr(3000), ETA),
            "restart after the first 2000 steps"
        );
        assert!(
            close(sgdr.lr(5000), at(0.5)),
            "half-way through the 4000-step cycle"
        );
        assert!(close(sgdr.lr(2999), at(1999.0 / 2000.0)));
    }

    #[test]
    fn mid_training_continues_from_lr_at_t() {
        let (t_end, m) = (80_000.0, 36_000.0);
        // Equation 11: LR_pre(T) * ((1 - alpha_mid) (T + M - t) / M + alpha_mid).
        let mid = |t: f64, base: f64, a: f64| base * ((1.0 - a) * (t_end + m - t) / m + a);
        let cos = with(spec(Kind::Cosine), |s| {
            s.alpha = Some(0.1);
            s.mid_steps = Some(36_000);
            s.alpha_mid = Some(0.0);
        });
        cos.validate().unwrap();
        assert_eq!(cos.end_step(), 116_000);
        assert!(close(cos.lr(80_000), 0.1 * ETA), "T is still pre-training");
        for t in [80_001, 89_000, 98_000, 115_999] {
            assert!(close(cos.lr(t), mid(t as f64, 0.1 * ETA, 0.0)), "{t}");
        }
        assert!(close(cos.lr(98_000), 0.05 * ETA));
        assert_eq!(cos.lr(116_000), 0.0);
        assert_eq!(cos.lr(200_000), 0.0, "holds the last value");

        let wso_hold = with(spec(Kind::Wso), |s| {
            s.mid_steps = Some(36_000);
            s.alpha_mid = Some(1.0);
        });
        for t in [80_000, 90_000, 116_000, 130_000] {
            assert_eq!(wso_hold.lr(t), ETA);
        }
        let wsd_half = with(spec(Kind::Wsd), |s| {
            s.alpha = Some(0.1);
            s.mid_steps = Some(36_000);
            s.alpha_mid = Some(0.5);
        });
        assert!(close(wsd_half.lr(116_000), 0.05 * ETA));
        assert!(close(wsd_half.lr(100_000), mid(100_000.0, 0.1 * ETA, 0.5)));
    }

    #[test]
    fn branched_decay_starts_decay_steps_before_t() {
        // A WSO run's stable checkpoint at step 40,000, decayed over 8,000 more steps.
        let branch = ScheduleSpec {
            decay_steps: Some(8000),
            alpha: Some(0.0),
            ..ScheduleSpec::new(Kind::Wsd, ETA, 1000, 48_000)
        };
        branch.validate().unwrap();
        assert_eq!(branch.lr(40_000), ETA);
        assert!(close(branch.lr(44_000), ETA / 2.0));
        assert_eq!(branch.lr(48_000), 0.0);
        assert_eq!(
            branch.breakpoints(),
            vec![0, 1000, 40_000, 48_000],
            "warmup end, stable end, T"
        );
    }

    #[test]
    fn total_steps_can_come_later() {
        let sft = ScheduleSpec {
            total_steps: None,
            alpha: Some(0.0),
            ..ScheduleSpec::new(Kind::Cosine, 1e-5, 100, 0)
        };
        sft.validate().unwrap();
        assert_eq!(sft.require_total_steps().unwrap_err().key(), "total_steps");
        let filled = sft.with_total_steps(1100);
        filled.validate().unwrap();
        assert!(close(filled.lr(600), 0.5e-5));
        assert_eq!(filled.lr(1100), 0.0);
        // warmup > T is only detectable once T is known
        assert_eq!(
            sft.with_total_steps(50).validate().unwrap_err().key(),
            "warmup"
        );
    }

    #[test]
    fn validation_names_the_key() {
        let cases: Vec<(ScheduleSpec, &str, &str)> = vec![
            (
                with(spec(Kind::Wsd), |s| s.alpha = Some(1.5)),
                "alpha",
                "schedule.alpha = 1.5 is outside [0, 1]",
            ),
            (
                with(spec(Kind::Cosine), |s| s.alpha = Some(f64::NAN)),
                "alpha",
                "outside [0, 1]",
            ),
            (
                with(spec(Kind::Wsd), |s| s.stable_ratio = Some(-0.1)),
                "stable_ratio",
                "schedule.stable_ratio = -0.1 is outside [0, 1]",
            ),
            (
                with(spec(Kind::Wso), |s| {
                    s.mid_steps = Some(10);
                    s.alpha_mid = Some(2.0);
                }),
                "alpha_mid",
                "schedule.alpha_mid = 2",
            ),
            (
                with(spec(Kind::Wso), |s| s.peak_lr = 0.0),
                "peak_lr",
                "schedule.peak_lr = 0 must be positive",
            ),
            (
                with(spec(Kind::Wso), |s| s.peak_lr = f64::INFINITY),
                "peak_lr",
                "schedule.peak_lr = inf",
            ),
            (
                with(spec(Kind::Wso), |s| s.warmup = 90_000),
                "warmup",
                "schedule.warmup = 90000 is larger than schedule.total_steps = 80000",
            ),
            (
                with(spec(Kind::Wso), |s| s.total_steps = Some(0)),
                "total_steps",
                "schedule.total_steps = 0",
            ),
            (
                with(spec(Kind::Wsd), |s| s.cycle = Some(10)),
                "cycle",
                "schedule.cycle does not apply to kind = \"wsd\"",
            ),
            (
                with(spec(Kind::Cosine), |s| s.stable_ratio = Some(0.5)),
                "stable_ratio",
                "does not apply to kind = \"cosine\"",
            ),
            (
                with(spec(Kind::Linear), |s| s.decay_steps = Some(5)),
                "decay_steps",
                "does not apply",
            ),
            (
                with(spec(Kind::Wsd), |s| s.mult = Some(2.0)),
                "mult",
                "does not apply",
            ),
            (
                with(spec(Kind::Constant), |s| s.alpha = Some(0.5)),
                "alpha",
                "schedule.alpha does not apply to kind = \"constant\"",
            ),
            (
                with(spec(Kind::InvSqrt), |s| s.alpha = Some(0.0)),
                "alpha",
                "does not apply to kind = \"inv-sqrt\"",
            ),
            (
                with(spec(Kind::Wso), |s| s.alpha = Some(0.1)),
                "alpha",
                "schedule.alpha = 0.1 does not apply to kind = \"wso\"",
            ),
            (
                with(spec(Kind::Wsd), |s| {
                    s.stable_ratio = Some(0.8);
                    s.decay_steps = Some(100);
                }),
                "decay_steps",
                "schedule.decay_steps and schedule.stable_ratio are both set",
            ),
            (
                with(spec(Kind::Wsd), |s| s.decay_steps = Some(79_001)),
                "decay_steps",
                "schedule.decay_steps = 79001 is larger than total_steps - warmup = 79000",
            ),
            (
                spec(Kind::Cyclic),
                "cycle",
                "schedule.cycle is required when kind = \"cyclic\"",
            ),
            (
                with(spec(Kind::Cyclic), |s| s.cycle = Some(0)),
                "cycle",
                "schedule.cycle = 0",
            ),
            (
                with(spec(Kind::Cyclic), |s| {
                    s.cycle = Some(10);
                    s.mult = Some(0.5);
                }),
                "mult",
                "schedule.mult = 0.5 must be a finite number >= 1",
            ),
            (
                with(spec(Kind::Wso), |s| s.mid_steps = Some(100)),
                "alpha_mid",
                "schedule.alpha_mid is required with schedule.mid_steps",
            ),
            (
                with(spec(Kind::Wso), |s| s.alpha_mid = Some(0.0)),
                "mid_steps",
                "schedule.mid_steps is required with schedule.alpha_mid",
            ),
            (
                with(spec(Kind::Wso), |s| {
                    s.mid_steps = Some(0);
                    s.alpha_mid = Some(0.0);
                }),
                "mid_steps",
                "schedule.mid_steps = 0",
            ),
        ];
        for (s, key, message) in cases {
            let err = s.validate().expect_err(message);
            assert_eq!(err.key(), key, "{err}");
            assert!(err.to_string().contains(message), "{err} vs {message}");
        }
        // WSO with alpha = 1 says what WSO is; warmup = T is allowed.
        with(spec(Kind::Wso), |s| s.alpha = Some(1.0))
            .validate()
            .unwrap();
        with(spec(Kind::Cosine), |s| s.warmup = 80_000)
            .validate()
            .unwrap();
    }

    #[test]
    fn recipe_tables_parse_and_errors_say_what() {
        let recipe = r#"
            [model]
            hidden_size = 64
            [training]
            steps = 10
            [schedule]
            kind = "wsd"
            peak_lr = 3e-4
            warmup = 1000
            total_steps = 80000
            alpha = 0.1
            mid_steps = 36000
            alpha_mid = 0
        "#;
        let s = ScheduleSpec::from_recipe_str(recipe).unwrap();
        assert_eq!(
            s,
            with(spec(Kind::Wsd), |s| {
                s.alpha = Some(0.1);
                s.mid_steps = Some(36_000);
                s.alpha_mid = Some(0.0);
            })
        );
        let int_lr = "[schedule]\nkind = \"inv-sqrt\"\npeak_lr = 1\ntotal_steps = 5\n";
        assert_eq!(ScheduleSpec::from_recipe_str(int_lr).unwrap().peak_lr, 1.0);

        for (text, wanted) in [
            ("[model]\nx = 1\n", "no [schedule] table"),
            ("schedule = 3\n", "`schedule` is not a table"),
            ("[schedule\nkind = 1", "invalid TOML at line 1"),
            (
                "[schedule]\nkind = \"wso\"\npeak_lr = = 1\n",
                "invalid TOML at line 3",
            ),
            (
                "[schedule]\nkind = \"wso\"\npeak_lr = 1e-3\ntotal_steps = 5\nlr = 1\n",
                "[schedule]: unknown field `lr`",
            ),
            (
                "[schedule]\nkind = \"wsx\"\npeak_lr = 1e-3\n",
                "unknown variant `wsx`",
            ),
            ("[schedule]\nkind = \"wso\"\n", "missing field `peak_lr`"),
            (
                "[schedule]\nkind = \"wsd\"\npeak_lr = 1e-3\ntotal_steps = 5\nalpha = 1.5\n",
                "schedule.alpha = 1.5 is outside [0, 1]",
            ),
        ] {
            let err = ScheduleSpec::from_recipe_str(text).unwrap_err();
            assert!(err.contains(wanted), "{err:?} lacks {wanted:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn labels_resolved_specs_and_kind_names() {
        let wsd = with(spec(Kind::Wsd), |s| s.alpha = Some(0.1));
        assert_eq!(wsd.label(), "WSD (α=0.1)");
        assert_eq!(spec(Kind::Wso).label(), "WSO");
        let cos_mid = with(spec(Kind::Cosine), |s| {
            s.mid_steps = Some(10);
            s.alpha_mid = Some(1.0);
        });
        assert_eq!(cos_mid.label(), "Cosine (α=0) + mid α_mid=1");
        let ratio = with(spec(Kind::Wsd), |s| s.stable_ratio = Some(0.9));
        assert_eq!(ratio.label(), "WSD (ρ=0.9, α=0)");
        let sgdr = with(spec(Kind::Cyclic), |s| {
            s.cycle = Some(500);
            s.mult = Some(2.0);
        });
        assert_eq!(sgdr.label(), "Cyclic (cycle 500 ×2, α=0)");

        let r = wsd.resolved();
        assert_eq!((r.stable_ratio, r.alpha), (Some(0.75), Some(0.1)));
        assert_eq!(spec(Kind::Wso).resolved().alpha, Some(1.0));
        assert_eq!(spec(Kind::Constant).resolved().alpha, None);
        assert_eq!(sgdr.resolved().mult, Some(2.0));
        r.validate().unwrap();

        for kind in Kind::ALL {
            assert_eq!(kind.name().parse::<Kind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
        assert_eq!("inv_sqrt".parse::<Kind>().unwrap(), Kind::InvSqrt);
        assert!("step".parse::<Kind>().unwrap_err().contains("wso, wsd"));
    }

    #[test]
    fn breakpoints_mark_the_corners() {
        let wsd = with(spec(Kind::Wsd), |s| {
            s.mid_steps = Some(100);
            s.alpha_mid = Some(0.0);
        });
        assert_eq!(wsd.breakpoints(), vec![0, 1000, 60_250, 80_000, 80_100]);
        let sgdr = ScheduleSpec {
            cycle: Some(300),
            ..ScheduleSpec::new(Kind::Cyclic, 1.0, 100, 1000)
        };
        assert_eq!(sgdr.breakpoints(), vec![0, 100, 400, 700, 1000]);
    }

    /// `tests/fixtures/schedules.json`, written by `scripts/schedule_reference.py` from
    /// the paper's formulas in plain Python.
    #[test]
    fn matches_the_python_reference() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedules.json");
        let fixture: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let s: ScheduleSpec = serde_json::from_value(case["spec"].clone()).unwrap();
            s.validate().unwrap();
            for point in case["points"].as_array().unwrap() {
                let step = point[0].as_u64().unwrap();
                let want = point[1].as_f64().unwrap();
                let got = s.lr(step);
                assert!(
                    (got - want).abs() <= 1e-12 * want.abs().max(1e-300) || got == want,
                    "{} at step {step}: {got} vs reference {want}",
                    s.label()
                );
            }
        }
    }
}

//! Is this a WSO base model? What `ckpt.json` says about the checkpoint's learning-rate
//! schedule, read for the one question a release asks: did the LR decay?
//!
//! Decayed (refused unless `--allow-decayed`):
//! - a pre-training schedule with a minimum factor `alpha_pre < 1` (wsd, cosine,
//!   linear, cyclic, inv-sqrt; the kinds' defaults when `alpha_pre` is not recorded);
//! - a checkpoint past `T` of a run with mid-training decaying to `alpha_mid < 1`;
//! - a merged checkpoint (`ckpt merge`): averaging a constant-LR run's checkpoints
//!   emulates a decay (WSM). Recognised by a `merge` entry in `ckpt.json`, a schedule
//!   kind starting with `wsm`, or `alpha_pre < 1`;
//! - an SFT checkpoint: not a base model (and its schedule decays to 0);
//! - an LR recorded at this step below the peak after warmup, whatever the kind says.
//!
//! Unknown (refused unless `--allow-unknown-schedule`): no `ckpt.json`, no schedule in
//! it, or a kind this version does not know without a recorded `alpha_pre`.

use crate::checkpoint::{CheckpointMeta, ScheduleInfo, Stage};
use crate::schedule::Kind;
use serde::Serialize;
use std::str::FromStr;

/// What the sidecar says about decay.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "kebab-case")]
pub enum Verdict {
    /// No decay: warmup then constant (WSO, constant), mid-training included.
    NotDecayed(String),
    /// The LR decayed; the reason names how.
    Decayed(String),
    /// Nothing says; the reason names what is missing.
    Unknown(String),
}

/// The verdict for a checkpoint with sidecar `meta` (its raw JSON as `raw`, to see
/// fields this version of [`CheckpointMeta`] does not know, like `merge`).
pub(crate) fn assess(meta: Option<&CheckpointMeta>, raw: Option<&serde_json::Value>) -> Verdict {
    let Some(meta) = meta else {
        return Verdict::Unknown(
            "no ckpt.json: the schedule it was trained under is not recorded".into(),
        );
    };
    if let Some(merge) = raw.and_then(|r| r.get("merge")).filter(|m| !m.is_null()) {
        return Verdict::Decayed(format!(
            "a merged checkpoint (ckpt merge{}): averaging checkpoints emulates LR decay",
            merge
                .get("shape")
                .or_else(|| merge.get("emulate"))
                .and_then(|e| e.as_str())
                .map(|e| format!(", emulating {e} decay"))
                .unwrap_or_default()
        ));
    }
    if meta.stage == Some(Stage::Sft) {
        return Verdict::Decayed("an SFT checkpoint (stage sft), not a base model".into());
    }
    let Some(s) = &meta.schedule else {
        return Verdict::Unknown("ckpt.json records no schedule".into());
    };
    if let Some(v) = by_kind(s, meta.step) {
        return v;
    }
    if let Some(v) = by_recorded_lr(s, meta) {
        return v;
    }
    Verdict::NotDecayed(format!(
        "{} schedule: warmup, then the peak LR{}",
        s.kind,
        match s.mid_steps {
            Some(_) => " (mid-training without decay)",
            None => " to the end",
        }
    ))
}

/// The verdict the schedule's kind and factors give, `None` when they show no decay.
fn by_kind(s: &ScheduleInfo, step: u64) -> Option<Verdict> {
    let kind = Kind::from_str(&s.kind).ok();
    if kind.is_none() && s.kind.to_ascii_lowercase().starts_with("wsm") {
        return Some(Verdict::Decayed(format!(
            "schedule kind {:?}: checkpoint merging emulates LR decay",
            s.kind
        )));
    }
    let alpha_pre = match (s.alpha_pre, kind) {
        (Some(a), _) => a,
        (None, Some(Kind::Wso | Kind::Constant)) => 1.0,
        (None, Some(k)) => default_alpha(k),
        (None, None) => {
            return Some(Verdict::Unknown(format!(
                "unknown schedule kind {:?} without alpha_pre",
                s.kind
            )))
        }
    };
    if alpha_pre < 1.0 {
        return Some(Verdict::Decayed(format!(
            "{} schedule decaying to alpha_pre={alpha_pre}",
            s.kind
        )));
    }
    let past_pre = s.total_steps.is_some_and(|t| step > t);
    match s.alpha_mid {
        Some(a) if a < 1.0 && s.mid_steps.is_some() && past_pre => Some(Verdict::Decayed(format!(
            "mid-training decaying to alpha_mid={a} (step {step} is past pre-training's {})",
            s.total_steps.unwrap_or(0)
        ))),
        _ => None,
    }
}

/// `alpha` a recipe gets when it leaves it out (see `ScheduleSpec::alpha_pre`).
fn default_alpha(kind: Kind) -> f64 {
    match kind {
        Kind::Wso | Kind::Constant => 1.0,
        _ => 0.0,
    }
}

/// A recorded LR below the peak after warmup is a decay, whatever the kind claims.
fn by_recorded_lr(s: &ScheduleInfo, meta: &CheckpointMeta) -> Option<Verdict> {
    let (lr, peak) = (meta.lr?, s.peak_lr?);
    let warm = meta.step > s.warmup.unwrap_or(0);
    (warm && lr < peak * (1.0 - 1e-6)).then(|| {
        Verdict::Decayed(format!(
            "the LR at step {} ({lr:e}) is below the peak ({peak:e})",
            meta.step
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: &str, f: impl FnOnce(&mut ScheduleInfo)) -> CheckpointMeta {
        let mut m = CheckpointMeta::new(300);
        m.stage = Some(Stage::Pre);
        let mut s = ScheduleInfo {
            kind: kind.into(),
            peak_lr: Some(3e-3),
            warmup: Some(20),
            total_steps: Some(300),
            ..Default::default()
        };
        f(&mut s);
        m.schedule = Some(s);
        m
    }

    fn verdict(m: &CheckpointMeta) -> Verdict {
        assess(Some(m), None)
    }

    #[test]
    fn wso_and_constant_are_not_decayed() {
        let m = meta("wso", |s| s.alpha_pre = Some(1.0));
        assert!(matches!(verdict(&m), Verdict::NotDecayed(_)));
        let m = meta("constant", |_| {});
        assert!(matches!(verdict(&m), Verdict::NotDecayed(_)));
        // Mid-training that holds the LR, past T.
        let mut m = meta("wso", |s| {
            s.mid_steps = Some(100);
            s.alpha_mid = Some(1.0);
        });
        m.step = 350;
        m.stage = Some(Stage::Mid);
        assert!(matches!(verdict(&m), Verdict::NotDecayed(_)));
    }

    #[test]
    fn decays_are_named() {
        let cases = [
            (meta("wsd", |s| s.alpha_pre = Some(0.1)), "alpha_pre=0.1"),
            (meta("cosine", |_| {}), "alpha_pre=0"),
            (meta("inv-sqrt", |s| s.alpha_pre = Some(0.0)), "inv-sqrt"),
            (meta("wsm-cosine", |s| s.alpha_pre = Some(1.0)), "merging"),
            (
                meta("future-kind", |s| s.alpha_pre = Some(0.5)),
                "alpha_pre=0.5",
            ),
        ];
        for (m, needle) in cases {
            match verdict(&m) {
                Verdict::Decayed(why) => assert!(why.contains(needle), "{why}"),
                other => panic!("{needle}: {other:?}"),
            }
        }
        let mut mid = meta("wso", |s| {
            s.mid_steps = Some(100);
            s.alpha_mid = Some(0.0);
        });
        assert!(matches!(verdict(&mid), Verdict::NotDecayed(_)), "before T");
        mid.step = 400;
        assert!(matches!(verdict(&mid), Verdict::Decayed(w) if w.contains("alpha_mid=0")));

        let mut lr = meta("wso", |_| {});
        lr.lr = Some(1e-3);
        assert!(matches!(verdict(&lr), Verdict::Decayed(w) if w.contains("below the peak")));
        lr.step = 10; // warming up
        assert!(matches!(verdict(&lr), Verdict::NotDecayed(_)));

        let mut sft = meta("cosine", |_| {});
        sft.stage = Some(Stage::Sft);
        assert!(matches!(verdict(&sft), Verdict::Decayed(w) if w.contains("SFT")));
    }

    #[test]
    fn merged_checkpoints_are_decayed_and_silence_is_unknown() {
        let m = meta("wso", |_| {});
        let raw = serde_json::json!({"step": 300, "merge": {"shape": "cosine", "accumulate": "f32", "sources": []}});
        assert!(
            matches!(assess(Some(&m), Some(&raw)), Verdict::Decayed(w) if w.contains("cosine"))
        );
        assert!(matches!(assess(None, None), Verdict::Unknown(w) if w.contains("no ckpt.json")));
        let mut bare = CheckpointMeta::new(5);
        assert!(matches!(assess(Some(&bare), None), Verdict::Unknown(_)));
        bare.schedule = Some(ScheduleInfo {
            kind: "mystery".into(),
            ..Default::default()
        });
        assert!(matches!(assess(Some(&bare), None), Verdict::Unknown(w) if w.contains("mystery")));
    }
}

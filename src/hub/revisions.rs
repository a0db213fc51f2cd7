//! Which revisions of a repository form a run, and the training step each one is.
//!
//! Checkpoint suites name their branches after the step: Pythia `step1000`, SmolLM2
//! `step-125000`, OLMo 2 `stage1-step140000-tokens294B`, LLM360 `ckpt_000`, Megatron
//! `iter_0001000`, DeepSpeed `global_step500`. The tokens seen are read too when the
//! name carries them (`tokens294B`).

use crate::error::{Error, Result};
use regex::Regex;
use std::sync::LazyLock;

/// `step` as a word of the name (`step1000`, `step-125000`, `stage1-step140000-...`,
/// `global_step500`), or a name that is a counter alone (`ckpt_000`, `iter_0001000`,
/// `checkpoint-500`).
static STEP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:^|[-_/])(?:global_)?step[-_]?(\d+)(?:$|[-_])|^(?:ckpt|iter|checkpoint)[-_](\d+)$",
    )
    .expect("valid regex")
});

/// Tokens seen, with a unit: `tokens294B`, `tokens4T`, `tokens500M`, `tokens10K`.
static TOKENS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[-_])tokens[-_]?(\d+(?:\.\d+)?)([KMBT]?)(?:$|[-_])").expect("valid regex")
});

/// What a revision's name says about its place in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) step: u64,
    pub(crate) tokens: Option<u64>,
}

/// How steps are read from revision names: the usual names, or a user's pattern whose
/// first group is the step (`--step-from`).
#[derive(Debug, Clone, Default)]
pub(crate) struct StepReader {
    custom: Option<Regex>,
}

impl StepReader {
    /// The usual names, and `pattern` (a regex with a group) first when given.
    pub fn new(pattern: Option<&str>) -> Result<Self> {
        let custom = match pattern {
            None => None,
            Some(p) => {
                let re = Regex::new(p).map_err(|e| {
                    Error::bad_value("--step-from", format!("--step-from {p:?}: {e}"))
                })?;
                if re.captures_len() < 2 {
                    return Err(Error::bad_value("--step-from", format!(
                        "--step-from {p:?}: the pattern needs a group around the step, as in 'ep(\\d+)'"
                    )));
                }
                Some(re)
            }
        };
        Ok(Self { custom })
    }

    /// The step (and tokens) `name` gives; `None` when it gives none.
    pub(crate) fn position(&self, name: &str) -> Option<Position> {
        let step = match &self.custom {
            Some(re) => re.captures(name)?.get(1)?.as_str().parse().ok()?,
            None => step_of(name)?,
        };
        Some(Position {
            step,
            tokens: tokens_of(name),
        })
    }

    /// [`StepReader::position`], or an error naming the revision for a sweep.
    pub(crate) fn require(&self, repo: &str, name: &str) -> Result<Position> {
        self.position(name).ok_or_else(|| {
            Error::bad_value("--step-from", format!(
                "hf://{repo}@{name}: the revision name gives no step (stepN, step-N, ckpt_N, iter_N, global_stepN); say how to read it with --step-from REGEX"
            ))
        })
    }
}

fn step_of(name: &str) -> Option<u64> {
    let caps = STEP.captures(name)?;
    caps.get(1).or_else(|| caps.get(2))?.as_str().parse().ok()
}

fn tokens_of(name: &str) -> Option<u64> {
    let caps = TOKENS.captures(name)?;
    let value: f64 = caps.get(1)?.as_str().parse().ok()?;
    let unit = match caps.get(2).map(|m| m.as_str()) {
        Some("K") => 1e3,
        Some("M") => 1e6,
        Some("B") => 1e9,
        Some("T") => 1e12,
        _ => 1.0,
    };
    Some((value * unit).round() as u64)
}

/// The branches a sweep takes: a glob (`step*`, `stage1-*`) or, when the pattern uses
/// regex syntax (`^`, `$`, `\`, `(`, `|`, `+`), a regex searched in the name.
#[derive(Debug, Clone)]
pub(crate) enum RevisionFilter {
    Glob(globset::GlobMatcher),
    Regex(Regex),
}

impl RevisionFilter {
    pub fn parse(pattern: &str) -> Result<Self> {
        let bad =
            |e: String| Error::bad_value("--revisions", format!("--revisions {pattern:?}: {e}"));
        if pattern.trim().is_empty() {
            return Err(bad("empty pattern".into()));
        }
        if pattern.contains(['^', '$', '\\', '(', '|', '+']) {
            return Regex::new(pattern)
                .map(Self::Regex)
                .map_err(|e| bad(e.to_string()));
        }
        globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map(|g| Self::Glob(g.compile_matcher()))
            .map_err(|e| bad(e.to_string()))
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            Self::Glob(g) => g.is_match(name),
            Self::Regex(r) => r.is_match(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_come_from_the_suites_names() {
        let r = StepReader::default();
        let step = |n: &str| r.position(n).map(|p| p.step);
        assert_eq!(step("step1000"), Some(1000)); // Pythia
        assert_eq!(step("step-125000"), Some(125_000)); // SmolLM2
        assert_eq!(step("step-125000-rc"), Some(125_000));
        assert_eq!(step("stage1-step140000-tokens294B"), Some(140_000)); // OLMo 2
        assert_eq!(step("ckpt_000"), Some(0)); // LLM360 Amber
        assert_eq!(step("ckpt_359"), Some(359));
        assert_eq!(step("global_step500"), Some(500));
        assert_eq!(step("iter_0001000"), Some(1000));
        assert_eq!(step("checkpoint-42"), Some(42));
        for none in [
            "main",
            "v1.0",
            "stepwise",
            "footstep12",
            "steps",
            "release-3",
        ] {
            assert_eq!(step(none), None, "{none}");
        }
    }

    #[test]
    fn tokens_come_with_their_unit() {
        let r = StepReader::default();
        let p = r.position("stage1-step140000-tokens294B").unwrap();
        assert_eq!(p.tokens, Some(294_000_000_000));
        assert_eq!(
            r.position("stage2-step11931-tokens50B").unwrap().tokens,
            Some(50_000_000_000)
        );
        assert_eq!(
            r.position("step-10-tokens1.5T").unwrap().tokens,
            Some(1_500_000_000_000)
        );
        assert_eq!(r.position("step1000").unwrap().tokens, None);
    }

    #[test]
    fn a_custom_pattern_reads_other_names() {
        let r = StepReader::new(Some(r"ep(\d+)")).unwrap();
        assert_eq!(r.position("run-ep12").map(|p| p.step), Some(12));
        assert!(StepReader::new(Some("ep"))
            .unwrap_err()
            .to_string()
            .contains("group"));
        assert!(StepReader::new(Some("(")).is_err());
        let err = StepReader::default().require("org/m", "final").unwrap_err();
        assert!(
            err.to_string().contains("hf://org/m@final") && err.to_string().contains("--step-from")
        );
    }

    #[test]
    fn filters_are_globs_or_regexes() {
        let g = RevisionFilter::parse("step*").unwrap();
        assert!(g.matches("step1000") && !g.matches("main"));
        let r = RevisionFilter::parse(r"^stage1-step\d+").unwrap();
        assert!(r.matches("stage1-step10-tokens1B") && !r.matches("stage2-step10"));
        assert!(RevisionFilter::parse("").is_err());
        assert!(RevisionFilter::parse("(")
            .unwrap_err()
            .to_string()
            .contains("--revisions"));
    }
}

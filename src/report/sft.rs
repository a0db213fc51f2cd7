//! The SFT learning-rate sweep of each base model and the LR picked, as the paper picks
//! it: by the judged instruction-following score.
//!
//! An SFT run (stage `sft`) belongs to the pre-training checkpoint its `ckpt.json`
//! descends from (`parent`, followed through mid-training); the SFT runs of one base
//! checkpoint are its sweep, each at its schedule's peak LR. The rule is [`PICK_RULE`].

use super::runs::{run_of, Run};
use super::source::{Ckpt, StoreView};
use crate::eval::headline::{headlines, Headline};
use crate::store::MetricRow;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The rule, as the report states it.
pub const PICK_RULE: &str = "For each base model, its SFT runs (checkpoints of stage sft \
descending from it, through mid-training if any) form the LR sweep (LR: the SFT \
schedule's peak LR). The picked LR has the best judged score (the judge task's \
length-controlled win rate when every judged checkpoint has one, else its win rate); \
when no run of the sweep was judged, the best mean of the headline metrics of the `sft` \
suite tasks that every run of the sweep was scored on (any higher-is-better task when \
none of the suite's is). Ties go to the smaller LR.";

/// How a sweep's best run was chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Criterion {
    /// The judged score (`task`'s `metric`, a fraction).
    Judged { task: String, metric: String },
    /// The mean of these tasks' headline values (fractions).
    SuiteMean { tasks: Vec<String> },
}

impl Criterion {
    /// `alpaca_eval length_controlled_winrate`, `mean of arc_easy, mmlu`.
    pub fn label(&self) -> String {
        match self {
            Criterion::Judged { task, metric } => format!("{task} {metric}"),
            Criterion::SuiteMean { tasks } => format!("mean of {}", tasks.join(", ")),
        }
    }
}

/// One SFT run of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SftCandidate {
    pub(crate) run: String,
    /// Its final checkpoint.
    pub(crate) fingerprint: String,
    pub(crate) path: String,
    pub(crate) step: Option<u64>,
    /// Peak LR of its schedule.
    pub(crate) lr: Option<f64>,
    /// The judged score (fraction), if judged.
    pub(crate) judged: Option<f64>,
    pub(crate) judged_stderr: Option<f64>,
    /// The sweep's fallback score (fraction), when the sweep has one.
    pub(crate) suite_mean: Option<f64>,
}

/// The base checkpoint of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Base {
    pub(crate) run: String,
    pub(crate) label: String,
    pub(crate) decayed: bool,
    pub(crate) fingerprint: String,
    pub(crate) step: Option<u64>,
}

/// The SFT runs of one base checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct SftSweep {
    pub(crate) base: Base,
    /// By LR, smallest first.
    pub(crate) candidates: Vec<SftCandidate>,
    pub(crate) criterion: Option<Criterion>,
    /// Index of the picked candidate.
    pub(crate) picked: Option<usize>,
}

/// A base model's picked SFT run: what `ckpt demo` fine-tunes, judges and reports.
#[derive(Debug, Clone, Serialize)]
pub struct SftPick {
    pub base_run: String,
    pub(crate) base_label: String,
    pub base_decayed: bool,
    pub(crate) base_fingerprint: String,
    pub base_step: Option<u64>,
    /// The picked SFT run and its final checkpoint.
    pub run: String,
    pub(crate) fingerprint: String,
    pub(crate) path: String,
    pub lr: Option<f64>,
    pub criterion: Criterion,
    /// Its score under the criterion (a fraction).
    pub score: f64,
    /// The whole sweep, by LR.
    pub candidates: Vec<SftCandidate>,
}

impl SftSweep {
    /// The pick, if the sweep has a criterion.
    pub(crate) fn pick(&self) -> Option<SftPick> {
        let i = self.picked?;
        let c = &self.candidates[i];
        let criterion = self.criterion.clone()?;
        let score = match criterion {
            Criterion::Judged { .. } => c.judged?,
            Criterion::SuiteMean { .. } => c.suite_mean?,
        };
        Some(SftPick {
            base_run: self.base.run.clone(),
            base_label: self.base.label.clone(),
            base_decayed: self.base.decayed,
            base_fingerprint: self.base.fingerprint.clone(),
            base_step: self.base.step,
            run: c.run.clone(),
            fingerprint: c.fingerprint.clone(),
            path: c.path.clone(),
            lr: c.lr,
            criterion,
            score,
            candidates: self.candidates.clone(),
        })
    }
}

/// The SFT headline columns (over every SFT run's final checkpoint) and the judged one.
pub(crate) struct SftColumns {
    pub(crate) tasks: Vec<Headline>,
    pub(crate) judged: Option<Headline>,
}

impl SftColumns {
    pub fn new(view: &StoreView, runs: &[Run], judge_task: &str) -> Self {
        let rows: Vec<MetricRow> = runs
            .iter()
            .filter(|r| r.stage == "sft")
            .flat_map(|r| r.final_ckpt(view).metrics.iter().cloned())
            .collect();
        let all = headlines(&rows, &view.orders, &view.groups);
        let (judged, tasks): (Vec<Headline>, Vec<Headline>) =
            all.into_iter().partition(|h| h.task == judge_task);
        Self {
            tasks,
            judged: judged.into_iter().next(),
        }
    }
}

/// Every sweep: SFT runs grouped by base checkpoint, bases in run order then step.
pub(crate) fn sweeps(view: &StoreView, runs: &[Run], columns: &SftColumns) -> Vec<SftSweep> {
    // Keyed by (base run, base step, base fingerprint): bases in run order, then step.
    type BaseKey = (String, Option<u64>, String);
    let mut by_base: BTreeMap<BaseKey, (Base, Vec<SftCandidate>)> = BTreeMap::new();
    for run in runs.iter().filter(|r| r.stage == "sft") {
        let ckpt = run.final_ckpt(view);
        let Some(base) = base_of(view, runs, ckpt) else {
            continue;
        };
        let judged = columns.judged.as_ref().and_then(|h| ckpt.value(h));
        let candidate = SftCandidate {
            run: run.name.clone(),
            fingerprint: ckpt.row.fingerprint.clone(),
            path: ckpt.row.path.clone(),
            step: ckpt.row.step,
            lr: run.schedule.as_ref().and_then(|s| s.peak_lr),
            judged: judged.map(|m| m.value),
            judged_stderr: judged.and_then(|m| m.stderr),
            suite_mean: None,
        };
        let key = (base.run.clone(), base.step, base.fingerprint.clone());
        by_base
            .entry(key)
            .or_insert_with(|| (base, Vec::new()))
            .1
            .push(candidate);
    }
    by_base
        .into_values()
        .map(|(base, mut candidates)| {
            candidates.sort_by(|a, b| {
                let lr = |c: &SftCandidate| c.lr.unwrap_or(f64::INFINITY);
                lr(a).total_cmp(&lr(b)).then_with(|| a.run.cmp(&b.run))
            });
            let mut sweep = SftSweep {
                base,
                candidates,
                criterion: None,
                picked: None,
            };
            choose(view, &mut sweep, columns);
            sweep
        })
        .collect()
}

/// Sets the sweep's criterion, fallback scores and pick (the rule of [`PICK_RULE`]).
fn choose(view: &StoreView, sweep: &mut SftSweep, columns: &SftColumns) {
    if let Some(h) = columns
        .judged
        .as_ref()
        .filter(|_| sweep.candidates.iter().any(|c| c.judged.is_some()))
    {
        sweep.criterion = Some(Criterion::Judged {
            task: h.task.clone(),
            metric: h.metric.clone(),
        });
        sweep.picked = best(sweep.candidates.iter().map(|c| c.judged));
        return;
    }
    let scored_by_all = |h: &&Headline| {
        h.higher_is_better
            && sweep
                .candidates
                .iter()
                .all(|c| ckpt(view, c).is_some_and(|k| k.value(h).is_some()))
    };
    let in_suite: Vec<&Headline> = columns
        .tasks
        .iter()
        .filter(|h| view.sft_suite.contains(&h.task))
        .filter(scored_by_all)
        .collect();
    let chosen = if in_suite.is_empty() {
        columns.tasks.iter().filter(scored_by_all).collect()
    } else {
        in_suite
    };
    if chosen.is_empty() {
        return;
    }
    for c in &mut sweep.candidates {
        let k = view
            .by_fingerprint(&c.fingerprint)
            .expect("a stored checkpoint");
        let values: Vec<f64> = chosen
            .iter()
            .filter_map(|h| k.value(h).map(|m| m.value))
            .collect();
        c.suite_mean = Some(values.iter().sum::<f64>() / values.len() as f64);
    }
    sweep.criterion = Some(Criterion::SuiteMean {
        tasks: chosen.iter().map(|h| h.task.clone()).collect(),
    });
    sweep.picked = best(sweep.candidates.iter().map(|c| c.suite_mean));
}

fn ckpt<'a>(view: &'a StoreView, c: &SftCandidate) -> Option<&'a Ckpt> {
    view.by_fingerprint(&c.fingerprint)
}

/// The index of the largest score (the first of equals: candidates are by LR).
fn best(scores: impl Iterator<Item = Option<f64>>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, s) in scores.enumerate() {
        if let Some(s) = s.filter(|s| s.is_finite()) {
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// The pre-training checkpoint `ckpt` descends from: its `parent`, followed through
/// mid-training (and SFT of SFT) checkpoints. A parent the store does not know is
/// named by its run directory.
pub(crate) fn base_of(view: &StoreView, runs: &[Run], ckpt: &Ckpt) -> Option<Base> {
    let mut current = ckpt;
    // A lineage longer than this is a loop in hand-edited sidecars.
    for _ in 0..64 {
        let parent = current.meta.as_ref()?.parent.as_ref()?;
        let found = parent
            .fingerprint
            .as_deref()
            .and_then(|fp| view.by_fingerprint(fp))
            .or_else(|| view.by_path(&parent.path));
        let Some(p) = found else {
            let run = Path::new(&parent.path)
                .parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| parent.path.clone());
            return Some(Base {
                run,
                label: "?".into(),
                decayed: false,
                fingerprint: parent.fingerprint.clone().unwrap_or_default(),
                step: parent.step,
            });
        };
        if p.stage() != "pre" {
            current = p;
            continue;
        }
        let run = run_of(runs, view, &p.row.fingerprint)?;
        return Some(Base {
            run: run.name.clone(),
            label: run.label.clone(),
            decayed: run.decayed,
            fingerprint: p.row.fingerprint.clone(),
            step: p.row.step,
        });
    }
    None
}

/// One pick per base run: the sweep of its latest fine-tuned checkpoint that has a
/// pick.
pub(crate) fn picks(sweeps: &[SftSweep]) -> Vec<SftPick> {
    let mut by_run: BTreeMap<&str, SftPick> = BTreeMap::new();
    for s in sweeps {
        let Some(pick) = s.pick() else { continue };
        match by_run.get(s.base.run.as_str()) {
            Some(p) if p.base_step >= pick.base_step => {}
            _ => {
                by_run.insert(&s.base.run, pick);
            }
        }
    }
    by_run.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_takes_the_first_of_equal_scores_and_skips_missing() {
        assert_eq!(best([Some(0.2), Some(0.5), Some(0.5)].into_iter()), Some(1));
        assert_eq!(best([None, Some(0.1)].into_iter()), Some(1));
        assert_eq!(best([None, Some(f64::NAN)].into_iter()), None);
    }
}

//! WSM checkpoint merging (Tian et al., ICLR 2026; DESIGN.md section 9): a weighted
//! average of the checkpoints of a constant-LR run emulates a learning-rate decay.
//!
//! A merge is planned, then written. Planning finds the checkpoints (a run directory
//! yields all of its own), orders them by step, keeps a window, checks they can be
//! averaged (one architecture, the same tensors, distinct steps, one stage) and turns
//! the decay shape into coefficients ([`emulate`]). Writing streams the weighted sum
//! tensor by tensor into an ordinary Hugging Face checkpoint whose `ckpt.json` records
//! the sources and coefficients ([`crate::checkpoint::MergeInfo`]).
//!
//! ```no_run
//! use ckpt::merge::{plan, DecayShape, MergeOptions, Selection, Weighting};
//! let plan = plan(
//!     &["runs/wso".into()],
//!     Selection::Window(2000),
//!     &Weighting::Emulate(DecayShape::Cosine),
//! )?;
//! println!("{:?}", plan.weights.coefficients);
//! plan.write("merged".as_ref(), &MergeOptions::default(), &|_| {})?;
//! # Ok::<(), ckpt::Error>(())
//! ```
//!
//! The merged checkpoint counts as decayed: its sidecar has a `merge` field (the test
//! `ckpt release` should use) and a schedule of kind `wsm` whose `alpha_pre` (or
//! `alpha_mid` for a mid-training merge) is the emulated final LR multiplier w_k.
//! Merged checkpoints met while walking a directory are not taken as sources (they
//! would repeat the last step); name one directly to merge it again.

mod coefficients;
pub mod job;
mod output;
mod sources;
mod tensors;

pub use coefficients::{emulate, explicit, DecayShape, MergeWeights, SUM_TOLERANCE};
pub use job::{MergeEvent, MergeJob, MergeOutcome, MergedSource};
pub use output::SIDE_FILES;
pub use sources::{Selection, Source, Sources};
pub use tensors::Accumulate;

use crate::checkpoint::{
    CheckpointMeta, MergeInfo, MergeSource, ScheduleInfo, Stage, WeightFiles, SINGLE_FILE,
};
use crate::error::Result;
use std::path::{Path, PathBuf};

/// How the coefficients are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Weighting {
    /// Emulate an LR decay of this shape.
    Emulate(DecayShape),
    /// Coefficients given by hand, one per selected checkpoint in step order.
    Explicit(Vec<f64>),
}

impl Weighting {
    /// The shape's name, or `explicit`.
    pub fn name(&self) -> &'static str {
        match self {
            Weighting::Emulate(shape) => shape.name(),
            Weighting::Explicit(_) => "explicit",
        }
    }
}

/// Settings of the written merge.
#[derive(Debug, Clone, Default)]
pub struct MergeOptions {
    pub accumulate: Accumulate,
    /// Replace an existing output directory.
    pub force: bool,
}

/// The checkpoints to merge and their coefficients.
pub struct MergePlan {
    pub(crate) sources: Sources,
    pub(crate) selection: Selection,
    pub(crate) weighting: Weighting,
    pub weights: MergeWeights,
}

/// Finds and checks the checkpoints under `inputs` and computes their coefficients.
pub fn plan(inputs: &[PathBuf], selection: Selection, weighting: &Weighting) -> Result<MergePlan> {
    let sources = sources::select(inputs, selection)?;
    let steps: Vec<u64> = sources.selected.iter().map(Source::step).collect();
    let weights = match weighting {
        Weighting::Emulate(shape) => emulate(*shape, &steps)?,
        Weighting::Explicit(w) => explicit(w, &steps)?,
    };
    Ok(MergePlan {
        sources,
        selection,
        weighting: weighting.clone(),
        weights,
    })
}

impl MergePlan {
    /// The selected checkpoints, in step order.
    pub fn selected(&self) -> &[Source] {
        &self.sources.selected
    }

    /// Elements in one checkpoint (the work of a merge is this times the sources).
    pub fn elements(&self) -> u64 {
        let newest = &self.selected()[self.selected().len() - 1];
        newest
            .weights
            .tensors()
            .values()
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum()
    }

    /// The emulated LR multiplier against step, as a step curve: 1 (the constant LR)
    /// for one mean interval before s_0, then w_i on each interval (s_{i-1}, s_i].
    pub fn lr_curve(&self) -> Vec<(f64, f64)> {
        let w = &self.weights;
        let (s0, sk) = (w.steps[0] as f64, w.steps[w.steps.len() - 1] as f64);
        let h = (sk - s0) / (w.steps.len() - 1) as f64;
        let mut points = vec![((s0 - h).max(0.0), 1.0), (s0, 1.0)];
        for i in 1..w.steps.len() {
            points.push((w.steps[i - 1] as f64, w.multipliers[i]));
            points.push((w.steps[i] as f64, w.multipliers[i]));
        }
        points
    }

    /// The continuous decay shape the coefficients sample, over the merged steps
    /// (`None` for uniform and explicit weights).
    pub fn target_curve(&self, points: usize) -> Option<Vec<(f64, f64)>> {
        let Weighting::Emulate(shape) = self.weighting else {
            return None;
        };
        let steps = &self.weights.steps;
        let (s0, sk) = (steps[0] as f64, steps[steps.len() - 1] as f64);
        let h = (sk - s0) / (steps.len() - 1) as f64;
        (0..=points)
            .map(|i| {
                let d = (sk - s0) * i as f64 / points as f64;
                shape.multiplier(d, sk - s0, h).map(|m| (s0 + d, m))
            })
            .collect()
    }

    /// Writes the merged checkpoint to `out`; `progress` receives elements done.
    /// Returns the sidecar written.
    pub fn write(
        &self,
        out: &Path,
        opts: &MergeOptions,
        progress: &dyn Fn(u64),
    ) -> Result<CheckpointMeta> {
        output::check_target(out, self.selected(), opts.force)?;
        let fingerprints = self
            .selected()
            .iter()
            .map(|s| s.checkpoint.fingerprint())
            .collect::<Result<Vec<_>>>()?;
        let meta = self.meta(fingerprints, opts.accumulate);
        let newest = &self.selected()[self.selected().len() - 1];
        output::write_dir(out, |dir| {
            let weights: Vec<&WeightFiles> = self.selected().iter().map(|s| &s.weights).collect();
            tensors::write_weighted_sum(
                &weights,
                &self.weights.coefficients,
                opts.accumulate,
                &dir.join(SINGLE_FILE),
                progress,
            )?;
            output::copy_side_files(&newest.checkpoint.dir, dir)?;
            meta.write(dir)
        })?;
        Ok(meta)
    }

    /// The merged checkpoint's sidecar: the newest source's step, stage and tokens,
    /// the emulated schedule, and the sources with their coefficients.
    fn meta(&self, fingerprints: Vec<String>, accumulate: Accumulate) -> CheckpointMeta {
        let newest = &self.selected()[self.selected().len() - 1];
        let newest_meta = newest.checkpoint.meta.as_ref();
        let stage = self.selected().iter().find_map(|s| s.checkpoint.stage());
        let w_k = self.weights.final_multiplier();
        let from = newest_meta
            .and_then(|m| m.schedule.clone())
            .unwrap_or_default();
        let mid = stage == Some(Stage::Mid);
        let schedule = ScheduleInfo {
            kind: "wsm".into(),
            peak_lr: from.peak_lr,
            warmup: from.warmup,
            total_steps: from.total_steps,
            alpha_pre: if mid { from.alpha_pre } else { Some(w_k) },
            alpha_mid: if mid { Some(w_k) } else { None },
            mid_steps: from.mid_steps,
            ..Default::default()
        };
        let sources = self
            .selected()
            .iter()
            .zip(fingerprints)
            .enumerate()
            .map(|(j, (s, fingerprint))| MergeSource {
                path: s.checkpoint.dir.display().to_string(),
                step: s.step(),
                fingerprint,
                coefficient: self.weights.coefficients[j],
                multiplier: self.weights.multipliers[j],
            })
            .collect();
        let (window, last) = match self.selection {
            Selection::All => (None, None),
            Selection::Window(w) => (Some(w), None),
            Selection::Last(k) => (None, Some(k)),
        };
        CheckpointMeta {
            tokens_seen: newest_meta.and_then(|m| m.tokens_seen),
            stage,
            schedule: Some(schedule),
            // The LR the emulated decay ends at.
            lr: newest_meta.and_then(|m| m.lr).map(|lr| lr * w_k),
            merge: Some(MergeInfo {
                shape: self.weighting.name().into(),
                window,
                last,
                accumulate: accumulate.name().into(),
                sources,
            }),
            ..CheckpointMeta::new(newest.step())
        }
    }
}

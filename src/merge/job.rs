//! `MergeJob`: what `ckpt merge` asks for, as typed values, checked in one place;
//! [`run`] plans the merge, draws the emulated LR curve and writes the merged
//! checkpoint, and returns what the command prints ([`MergeOutcome`]).
//!
//! ```no_run
//! use ckpt::merge::{DecayShape, MergeJob, MergeOptions, Selection, Weighting};
//! let job = MergeJob {
//!     checkpoints: vec!["runs/wso".into()],
//!     selection: Selection::Last(4),
//!     weighting: Weighting::Emulate(DecayShape::Cosine),
//!     out: Some("merged".into()),
//!     options: MergeOptions::default(),
//!     plot: None,
//! };
//! let done = ckpt::merge::job::run(&job, &mut |_event| {})?;
//! println!("the LR decays to {:.4}", done.final_multiplier);
//! # Ok::<(), ckpt::Error>(())
//! ```

use super::{plan, MergeOptions, MergePlan, Selection, Weighting};
use crate::error::{Error, Result};
use crate::plot::{line_chart, LineChart, Series};
use serde::Serialize;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A merge: which checkpoints, with which coefficients, written where.
#[derive(Debug, Clone)]
pub struct MergeJob {
    /// Checkpoints, or run directories whose checkpoints to merge (ordered by step).
    pub checkpoints: Vec<PathBuf>,
    /// Which of the checkpoints found are merged.
    pub selection: Selection,
    /// How the coefficients are chosen.
    pub weighting: Weighting,
    /// The merged checkpoint's directory; `None`: the coefficients only.
    pub out: Option<PathBuf>,
    /// Precision of the sums, and whether `out` may be replaced.
    pub options: MergeOptions,
    /// The emulated LR multiplier against step (.png or .svg).
    pub plot: Option<PathBuf>,
}

/// Progress of a merge.
#[derive(Debug, Clone)]
pub enum MergeEvent {
    /// A merged checkpoint met while walking a directory: not taken as a source.
    SkippedMerged(PathBuf),
    /// Writing starts: this many tensor elements (over all sources) to sum.
    Writing { elements: u64 },
    /// This many more elements summed.
    Summed(u64),
}

/// One selected checkpoint with its coefficient.
#[derive(Debug, Clone, Serialize)]
pub struct MergedSource {
    pub(crate) path: PathBuf,
    pub(crate) step: u64,
    pub(crate) coefficient: f64,
    /// The emulated LR multiplier of its interval.
    pub(crate) multiplier: f64,
    /// Its weights' fingerprint, once the merge is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fingerprint: Option<String>,
}

/// What a merge did (printed as a table or as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct MergeOutcome {
    /// The decay shape emulated, or `explicit`.
    pub(crate) shape: &'static str,
    pub(crate) window: Option<u64>,
    pub(crate) last: Option<usize>,
    /// The steps of every checkpoint found, selected or not.
    pub(crate) found_steps: Vec<u64>,
    /// Merged checkpoints met while walking a directory, not taken as sources.
    pub(crate) skipped: Vec<PathBuf>,
    pub(crate) sources: Vec<MergedSource>,
    /// The LR multiplier of the last interval: where the emulated decay ends.
    pub final_multiplier: f64,
    pub(crate) out: Option<PathBuf>,
    /// The merged checkpoint's fingerprint.
    pub(crate) fingerprint: Option<String>,
    /// Time spent writing.
    pub(crate) seconds: Option<f64>,
}

impl MergeJob {
    /// The values and combinations that need no checkpoint to check; what depends on
    /// the checkpoints found (counts, steps, weights per checkpoint) is checked by
    /// [`plan`].
    pub fn check(&self) -> Result<()> {
        if self.checkpoints.is_empty() {
            return Err(Error::bad_value(
                "CHECKPOINTS",
                "give at least one checkpoint to merge",
            ));
        }
        if self.options.force && self.out.is_none() {
            return Err(Error::bad_value(
                "--force",
                "--force replaces the output directory: give it with --out",
            ));
        }
        if let Weighting::Explicit(w) = &self.weighting {
            if w.is_empty() {
                return Err(Error::bad_value("--weights", "--weights: no weight given"));
            }
        }
        if let Some(plot) = &self.plot {
            // Drawn before anything is written: a bad name fails first.
            crate::plot::ImageFormat::from_path(plot)?;
        }
        Ok(())
    }
}

/// Checks the job, plans the merge, draws the plot and writes the merged checkpoint
/// (when `out` is given), reporting the sums' progress to `on_event`.
pub fn run(job: &MergeJob, on_event: &mut dyn FnMut(MergeEvent)) -> Result<MergeOutcome> {
    job.check()?;
    let plan = plan(&job.checkpoints, job.selection, &job.weighting)?;
    for dir in &plan.sources.skipped {
        on_event(MergeEvent::SkippedMerged(dir.clone()));
    }
    if let Some(path) = &job.plot {
        draw(&plan, path)?;
    }
    let mut done = outcome(&plan, job);
    if let Some(dir) = &job.out {
        let started = Instant::now();
        let sources = plan.selected().len() as u64;
        on_event(MergeEvent::Writing {
            elements: plan.elements() * sources,
        });
        // `write` reports through a shared closure; the sink is called from this
        // thread only.
        let sink = RefCell::new(on_event);
        let meta = plan.write(dir, &job.options, &|n| {
            (sink.borrow_mut())(MergeEvent::Summed(n * sources))
        })?;
        done.seconds = Some(started.elapsed().as_secs_f64());
        let merged = crate::checkpoint::Checkpoint::open(dir)?;
        done.fingerprint = Some(merged.fingerprint()?);
        if let Some(info) = meta.merge {
            for (row, source) in done.sources.iter_mut().zip(info.sources) {
                row.fingerprint = Some(source.fingerprint);
            }
        }
    }
    Ok(done)
}

/// The plan as reported, before anything is written.
fn outcome(plan: &MergePlan, job: &MergeJob) -> MergeOutcome {
    let w = &plan.weights;
    let (window, last) = match job.selection {
        Selection::All => (None, None),
        Selection::Window(w) => (Some(w), None),
        Selection::Last(k) => (None, Some(k)),
    };
    MergeOutcome {
        shape: plan.weighting.name(),
        window,
        last,
        found_steps: plan.sources.found_steps.clone(),
        skipped: plan.sources.skipped.clone(),
        sources: plan
            .selected()
            .iter()
            .enumerate()
            .map(|(j, s)| MergedSource {
                path: s.checkpoint.dir.clone(),
                step: s.step(),
                coefficient: w.coefficients[j],
                multiplier: w.multipliers[j],
                fingerprint: None,
            })
            .collect(),
        final_multiplier: w.final_multiplier(),
        out: job.out.clone(),
        fingerprint: None,
        seconds: None,
    }
}

/// The emulated LR multiplier against step, with the decay shape it samples.
fn draw(plan: &MergePlan, path: &Path) -> Result<()> {
    let mut chart = LineChart::new(
        &format!("LR decay emulated by merging ({})", plan.weighting.name()),
        "step",
        "LR multiplier",
    );
    chart
        .series
        .push(Series::new("emulated by the merge", plan.lr_curve()));
    if let Some(target) = plan.target_curve(200) {
        chart.series.push(Series::new(
            format!("{} decay", plan.weighting.name()),
            target,
        ));
    }
    chart.y_range = Some((0.0, 1.05));
    line_chart(path, &chart)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::DecayShape;

    fn job() -> MergeJob {
        MergeJob {
            checkpoints: vec!["runs/wso".into()],
            selection: Selection::All,
            weighting: Weighting::Emulate(DecayShape::Cosine),
            out: None,
            options: MergeOptions::default(),
            plot: None,
        }
    }

    #[test]
    fn a_bad_plot_name_is_refused() {
        job().check().unwrap();
        let bad = MergeJob {
            plot: Some("lr.gif".into()),
            ..job()
        };
        assert!(bad.check().is_err());
        let bad = MergeJob {
            weighting: Weighting::Explicit(vec![]),
            ..job()
        };
        assert!(bad.check().unwrap_err().to_string().contains("--weights"));
    }

    #[test]
    fn force_without_an_output_is_refused() {
        let mut bad = job();
        bad.options.force = true;
        assert!(bad.check().unwrap_err().to_string().contains("--out"));
        bad.out = Some("merged".into());
        bad.check().unwrap();
    }
}

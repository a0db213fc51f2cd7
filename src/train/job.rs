//! `TrainJob`: a recipe (with its overrides applied) and where to resume; [`run`]
//! prepares the trainer and runs it to its last step or until stopped.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! let job = ckpt::train::TrainJob::load(Some("trainer/tiny.toml".as_ref()), &[], None)?;
//! let done = ckpt::train::job::run(&job, &AtomicBool::new(false), &mut |_event| {})?;
//! println!("step {}: {}", done.step, done.checkpoint.display());
//! # Ok::<(), ckpt::Error>(())
//! ```

use super::recipe::{Recipe, RUN_FILE};
use super::trainer::{Outcome, StepMetrics};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// A training run: the resolved recipe, and the checkpoint or run to continue from.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// The recipe, overrides applied.
    pub recipe: Recipe,
    /// A checkpoint, or a run directory whose latest checkpoint to continue from;
    /// `None`: the recipe's run directory is resumed when it holds its checkpoints.
    pub resume: Option<PathBuf>,
}

/// Progress of a run.
pub enum TrainEvent<'a> {
    /// The trainer is ready: global steps `step..end_step`, a checkpoint every
    /// `checkpoint_every` steps.
    Started {
        name: &'a str,
        step: u64,
        end_step: u64,
        checkpoint_every: u64,
    },
    /// A step finished.
    Step(&'a StepMetrics),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// The global step reached.
    pub step: u64,
    /// The last checkpoint saved.
    pub checkpoint: PathBuf,
    /// Stopped before its last step (the checkpoint saved on the way out; the same
    /// command resumes it).
    pub(crate) interrupted: bool,
}

impl TrainJob {
    /// The job of the recipe file at `recipe` with `--set key=value` overrides; without
    /// a recipe, the `run.toml` of the run `resume` names.
    pub fn load(
        recipe: Option<&Path>,
        overrides: &[String],
        resume: Option<PathBuf>,
    ) -> Result<Self> {
        let path = recipe_path(recipe, resume.as_deref())?;
        Ok(Self {
            recipe: Recipe::load(&path, overrides)?,
            resume,
        })
    }

    /// Every value of the recipe, and their agreement ([`Recipe::validate`]).
    pub fn check(&self) -> Result<()> {
        self.recipe.validate()
    }
}

/// The recipe file: given, or the `run.toml` of the run being resumed.
fn recipe_path(recipe: Option<&Path>, resume: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = recipe {
        return Ok(path.to_path_buf());
    }
    let Some(resume) = resume else {
        return Err(Error::bad_value(
            "--resume",
            "give a recipe, or --resume RUN_DIR to continue a run",
        ));
    };
    let run_dir = if crate::checkpoint::is_checkpoint_dir(resume) {
        crate::error::parent_dir(resume)
    } else {
        resume
    };
    let path = run_dir.join(RUN_FILE);
    if !path.is_file() {
        return Err(Error::Invalid(format!(
            "{}: no {RUN_FILE}; give the recipe",
            run_dir.display()
        )));
    }
    Ok(path)
}

/// Checks the job, prepares the trainer (data, tokenizer, weights, optimizer,
/// schedule) and trains until the last step, or until `stop` is raised (then it saves
/// first).
pub fn run(
    job: &TrainJob,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome> {
    job.check()?;
    let name = &job.recipe.job.name;
    let mut trainer = super::setup::prepare(&job.recipe, job.resume.as_deref())
        .map_err(|e| e.map_message(|m| format!("cannot start {name}: {m}")))?;
    on_event(TrainEvent::Started {
        name,
        step: trainer.step(),
        end_step: trainer.end_step(),
        checkpoint_every: job.recipe.training.checkpoint_every,
    });
    let outcome = trainer.run(stop, &mut |m| on_event(TrainEvent::Step(m)))?;
    let (checkpoint, interrupted) = match outcome {
        Outcome::Finished(dir) => (dir, false),
        Outcome::Interrupted(dir) => (dir, true),
    };
    Ok(TrainOutcome {
        step: trainer.step(),
        checkpoint,
        interrupted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        let text = crate::train::recipe::tests::TINY;
        Recipe::from_table(toml::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn a_bad_value_is_refused_naming_the_key() {
        let mut job = TrainJob {
            recipe: recipe(),
            resume: None,
        };
        job.check().unwrap();
        job.recipe.training.checkpoint_every = 0;
        let err = job.check().unwrap_err().to_string();
        assert!(err.contains("training.checkpoint_every"), "{err}");
    }

    #[test]
    fn a_bad_combination_is_refused() {
        let mut job = TrainJob {
            recipe: recipe(),
            resume: None,
        };
        // 2048 tokens in rows of 128 are 16 sequences: 3 micro-batches cannot split them.
        job.recipe.training.grad_accum = 3;
        let err = job.check().unwrap_err().to_string();
        assert!(err.contains("training.grad_accum = 3"), "{err}");
        let err = TrainJob::load(None, &[], None).unwrap_err().to_string();
        assert!(err.contains("--resume RUN_DIR"), "{err}");
    }
}

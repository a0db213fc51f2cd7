//! `SynthJob`: the synthetic corpora and/or the synthetic benchmark data `ckpt synth`
//! writes, checked in one place; [`run`] generates and writes them.
//!
//! ```no_run
//! use ckpt::synth::{job, SynthConfig, SynthJob};
//! let job = SynthJob {
//!     out: Some("data".into()),
//!     config: SynthConfig::default(),
//!     eval_tasks: None,
//!     eval_docs: 50,
//! };
//! let done = job::run(&job)?;
//! # Ok::<(), ckpt::Error>(())
//! ```

use super::tasks::{write_task_data, SyntheticConfig};
use super::{generate, CorpusStats, SynthConfig, FILES};
use crate::error::{Error, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// What to generate, and where.
#[derive(Debug, Clone)]
pub struct SynthJob {
    /// Directory for `world.json` and the corpora; `None`: no corpora.
    pub out: Option<PathBuf>,
    /// The world's seed and size, and each corpus's size.
    pub config: SynthConfig,
    /// Directory for benchmark data about the same world, for every built-in task
    /// (laid out for `--data-dir`, exemplars in `DIR/fewshot`).
    pub eval_tasks: Option<PathBuf>,
    /// Docs per split of each task's benchmark data (at least 1).
    pub eval_docs: usize,
}

/// The corpora written.
#[derive(Debug, Clone, Serialize)]
pub struct CorporaWritten {
    pub(crate) out: PathBuf,
    pub(crate) files: [&'static str; 7],
    pub(crate) config: SynthConfig,
    pub(crate) seconds: f64,
    #[serde(flatten)]
    pub(crate) stats: CorpusStats,
}

/// The benchmark data written.
#[derive(Debug, Clone, Serialize)]
pub struct TaskDataWritten {
    pub(crate) eval_tasks: PathBuf,
    pub(crate) config: SyntheticConfig,
    /// Files written (data, then exemplars).
    pub(crate) files: usize,
    /// Docs and exemplars in all.
    pub(crate) docs: usize,
    /// Tasks the data is for (not in the JSON summary: the catalog's size).
    #[serde(skip)]
    pub tasks: usize,
}

/// What a run wrote.
#[derive(Debug, Clone)]
pub struct SynthOutcome {
    pub task_data: Option<TaskDataWritten>,
    pub corpora: Option<CorporaWritten>,
}

impl SynthJob {
    /// Something to write, and the sizes of what is written.
    pub fn check(&self) -> Result<()> {
        if self.out.is_none() && self.eval_tasks.is_none() {
            return Err(Error::bad_value(
                "--out",
                "give --out DIR for the corpora, --eval-tasks DIR for benchmark data, or both",
            ));
        }
        if self.eval_tasks.is_some() && self.eval_docs == 0 {
            return Err(Error::bad_value(
                "--eval-docs",
                "--eval-docs must be at least 1 (got 0)",
            ));
        }
        if self.out.is_some() {
            self.config.validate()?;
        }
        Ok(())
    }
}

/// Checks the job, then writes the benchmark data and the corpora asked for.
pub fn run(job: &SynthJob) -> Result<SynthOutcome> {
    job.check()?;
    let task_data = job
        .eval_tasks
        .as_ref()
        .map(|dir| task_data(job, dir))
        .transpose()?;
    let corpora = job
        .out
        .as_ref()
        .map(|out| {
            let started = Instant::now();
            let corpus = generate(&job.config);
            corpus.write(out)?;
            Ok::<_, Error>(CorporaWritten {
                out: out.clone(),
                files: FILES,
                stats: corpus.stats(),
                config: job.config.clone(),
                seconds: started.elapsed().as_secs_f64(),
            })
        })
        .transpose()?;
    Ok(SynthOutcome { task_data, corpora })
}

/// Data for every built-in task, about the world of the job's seed and entities.
fn task_data(job: &SynthJob, dir: &std::path::Path) -> Result<TaskDataWritten> {
    let catalog = crate::eval::catalog::Catalog::builtin()?;
    let specs: Vec<_> = catalog.entries().iter().map(|e| e.spec.clone()).collect();
    let config = SyntheticConfig {
        seed: job.config.seed,
        entities: job.config.entities,
        docs: job.eval_docs,
    };
    let written = write_task_data(dir, &specs, &config)?;
    Ok(TaskDataWritten {
        eval_tasks: dir.to_path_buf(),
        config,
        files: written.files.len(),
        docs: written.docs,
        tasks: specs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> SynthJob {
        SynthJob {
            out: Some("data".into()),
            config: SynthConfig::default(),
            eval_tasks: None,
            eval_docs: 1,
        }
    }

    #[test]
    fn a_world_without_entities_is_refused() {
        job().check().unwrap();
        let mut bad = job();
        bad.config.entities = 0;
        assert!(bad.check().unwrap_err().to_string().contains("entity"));
    }

    #[test]
    fn nothing_to_write_or_no_docs_per_split_is_refused() {
        let bad = SynthJob { out: None, ..job() };
        assert!(bad.check().is_err());
        let bad = SynthJob {
            eval_tasks: Some("tasks".into()),
            eval_docs: 0,
            ..job()
        };
        assert!(bad.check().unwrap_err().to_string().contains("--eval-docs"));
    }
}

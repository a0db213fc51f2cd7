//! [`StatusJob`]: a `ckpt store status` as typed values, checked once, and [`run`]:
//! per checkpoint and task, whether the results stores hold a result, a failure or
//! nothing. It lives with eval, not the store, because it names tasks and checkpoints
//! as `ckpt eval` does.

use super::catalog::catalog_specs;
use super::headline::JUDGED_TASK;
use super::run::checkpoint_row;
use crate::error::{Error, Result};
use crate::hub::models::known_fingerprint;
use crate::hub::HubRevision;
use crate::sources::{Candidate, HubOptions};
use crate::store::{store_files, CheckpointRow, Status, Store, StoreSet, Target};
use std::path::PathBuf;
use std::time::Duration;

/// What to check in which stores.
#[derive(Debug, Clone)]
pub struct StatusJob {
    /// Store files, or directories whose `*.sqlite` files are read as one.
    pub stores: Vec<PathBuf>,
    /// Tasks (names, groups or task TOML files); with no suite either: every task
    /// with a result in the stores.
    pub(crate) tasks: Vec<String>,
    /// A suite of the paper (pt, mt, sft) instead of `tasks`.
    pub(crate) suite: Option<String>,
    /// Task specs over the built-ins, for `tasks` or `suite`.
    pub(crate) tasks_dir: Option<PathBuf>,
    /// Checkpoints, or directories searched for them (hf://ORG/NAME[@REV] too), to
    /// check whether or not the stores know them; empty: every one in the stores.
    pub(crate) checkpoints: Vec<PathBuf>,
    /// Which revisions of a Hub checkpoint in `checkpoints` count.
    pub(crate) hub: HubOptions,
    /// How long to wait while another process holds a store locked.
    pub(crate) store_timeout: Duration,
}

/// The status, and the store it was read from (several are read as one).
#[derive(Debug)]
pub struct StatusOutcome {
    pub(crate) status: Status,
    pub(crate) store: PathBuf,
}

impl StatusJob {
    /// Checks the timeout and the combinations of options.
    pub fn check(&self) -> Result<()> {
        crate::store::check_store_timeout(self.store_timeout)?;
        if !self.tasks.is_empty() && self.suite.is_some() {
            return Err(Error::bad_value(
                "--suite",
                "--suite and --tasks cannot be used together",
            ));
        }
        if self.tasks_dir.is_some() && self.tasks.is_empty() && self.suite.is_none() {
            return Err(Error::bad_value(
                "--tasks-dir",
                "--tasks-dir is only read with --tasks or --suite",
            ));
        }
        if self.checkpoints.is_empty()
            && (self.hub.revisions.is_some() || self.hub.step_from.is_some())
        {
            return Err(Error::bad_value("--revisions", "--revisions and --step-from select Hub revisions for --checkpoints hf://ORG/NAME; give it"));
        }
        Ok(())
    }
}

/// Reads the stores as one and says, per checkpoint and task, what is done.
pub fn run(job: &StatusJob) -> Result<StatusOutcome> {
    job.check()?;
    let tasks = wanted_tasks(job)?;
    let store = StoreSet::open(&store_files(&job.stores)?, job.store_timeout)?;
    let targets = if job.checkpoints.is_empty() {
        None
    } else {
        Some(targets(&job.checkpoints, &job.hub, &store)?)
    };
    Ok(StatusOutcome {
        status: store.status(targets, tasks)?,
        store: store.path().to_path_buf(),
    })
}

/// The task names of `tasks`/`suite` (groups expanded), or `None` for every task with
/// a result.
fn wanted_tasks(job: &StatusJob) -> Result<Option<Vec<String>>> {
    if job.tasks.is_empty() && job.suite.is_none() {
        return Ok(None);
    }
    // Pairwise judging is a task of its own, not in the catalog.
    let judged = job.tasks.iter().any(|t| t == JUDGED_TASK);
    let (_, specs) = catalog_specs(&job.tasks, job.suite.as_deref(), job.tasks_dir.as_deref())?;
    let mut tasks: Vec<String> = Vec::new();
    for task in specs.into_iter().map(|s| s.task) {
        if !tasks.contains(&task) {
            tasks.push(task);
        }
    }
    if judged {
        tasks.push(JUDGED_TASK.to_string());
    }
    Ok(Some(tasks))
}

/// The checkpoints `paths` name, identified as `ckpt eval` identifies them; a Hub
/// revision by what the store recorded of it, without downloading its weights.
fn targets(paths: &[PathBuf], opts: &HubOptions, store: &Store) -> Result<Vec<Target>> {
    let (found, hub) = crate::sources::candidates(paths, opts)?;
    if found.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::bad_value(
            "--checkpoints",
            format!("no checkpoints found under {}", names.join(", ")),
        ));
    }
    Ok(found
        .iter()
        .map(|candidate| match (candidate, &hub) {
            (Candidate::Local(ckpt), _) => match ckpt.fingerprint() {
                Ok(fp) => Target {
                    row: checkpoint_row(ckpt, &fp),
                    error: None,
                },
                Err(e) => Target {
                    row: checkpoint_row(ckpt, ""),
                    error: Some(e.to_string()),
                },
            },
            (Candidate::Hub(rev), hub) => {
                let known = hub
                    .as_ref()
                    .map(|h| known_fingerprint(h, rev, store))
                    .transpose();
                let mut row = checkpoint_row_of_revision(rev);
                match known {
                    Ok(fp) => {
                        row.fingerprint = fp.flatten().unwrap_or_default();
                        Target { row, error: None }
                    }
                    Err(e) => Target {
                        row,
                        error: Some(e.to_string()),
                    },
                }
            }
        })
        .collect())
}

/// A Hub revision as the store shows it, before its weights are known.
fn checkpoint_row_of_revision(rev: &HubRevision) -> CheckpointRow {
    CheckpointRow {
        fingerprint: String::new(),
        path: rev.source.to_string(),
        run: rev.source.name().to_string(),
        step: rev.position.map(|p| p.step),
        stage: None,
        schedule: None,
        alpha: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> StatusJob {
        StatusJob {
            stores: vec!["ckpt.sqlite".into()],
            tasks: vec![],
            suite: None,
            tasks_dir: None,
            checkpoints: vec![],
            hub: HubOptions::default(),
            store_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn check_refuses_hub_revisions_without_checkpoints_and_tasks_with_a_suite() {
        let mut bad = job();
        bad.hub.revisions = Some("step*".into());
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("--checkpoints"));
        let both = StatusJob {
            tasks: vec!["arc_easy".into()],
            suite: Some("pt".into()),
            ..job()
        };
        assert!(both.check().unwrap_err().to_string().contains("--suite"));
    }
}

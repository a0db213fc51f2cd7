//! `ckpt store status`: per checkpoint and task, done, failed or missing, so that the
//! failed element of a job array can be found and run again.
//!
//! A task is done for a checkpoint when metrics of the task are stored for its
//! fingerprint, under any spec: the flags that change a result's key (the few-shot
//! count, the tokenization, `--limit`) are not checked. Otherwise it failed when a
//! failure is recorded for the checkpoint (by fingerprint or path) and that task or
//! the whole checkpoint; a failure followed by a result elsewhere (a rerun, another
//! shard) is therefore no failure. Otherwise it is missing.

use super::{sql_error, CheckpointRow, Store};
use crate::error::Result;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// What became of one task on one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Done,
    Failed,
    Missing,
}

/// A checkpoint to report on.
#[derive(Debug, Clone)]
pub struct Target {
    /// As `ckpt eval` would record it (`fingerprint` empty when it could not be taken).
    pub row: CheckpointRow,
    /// Why the checkpoint could not be identified (its weights unreadable): every
    /// task not done has failed.
    pub error: Option<String>,
}

/// One checkpoint's tasks.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointStatus {
    pub(crate) path: String,
    pub(crate) fingerprint: String,
    pub(crate) run: String,
    pub(crate) step: Option<u64>,
    /// Task -> its state.
    pub(crate) tasks: BTreeMap<String, State>,
    /// The latest failure recorded for the first task that failed.
    pub(crate) error: Option<String>,
}

impl CheckpointStatus {
    /// The tasks in `state`, in name order.
    pub fn in_state(&self, state: State) -> Vec<&str> {
        self.tasks
            .iter()
            .filter(|(_, s)| **s == state)
            .map(|(t, _)| t.as_str())
            .collect()
    }
}

/// Every (checkpoint, task) pair's state.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub(crate) tasks: Vec<String>,
    pub(crate) checkpoints: Vec<CheckpointStatus>,
    pub(crate) done: usize,
    pub(crate) failed: usize,
    pub(crate) missing: usize,
}

/// A row of `failures`.
struct Failure {
    path: String,
    fingerprint: Option<String>,
    task: Option<String>,
    message: String,
}

impl Failure {
    fn concerns_checkpoint(&self, row: &CheckpointRow) -> bool {
        self.path == row.path
            || (!row.fingerprint.is_empty()
                && self.fingerprint.as_deref() == Some(row.fingerprint.as_str()))
    }

    fn concerns(&self, row: &CheckpointRow, task: &str) -> bool {
        self.concerns_checkpoint(row) && self.task.as_deref().is_none_or(|t| t == task)
    }
}

impl Store {
    /// The state of every task of `tasks` (default: every task with a stored result) on
    /// every checkpoint of `targets` (default: every checkpoint the store knows, and
    /// every path recorded only as a failure).
    pub fn status(
        &self,
        targets: Option<Vec<Target>>,
        tasks: Option<Vec<String>>,
    ) -> Result<Status> {
        let done = self.done_pairs()?;
        let failures = self.failures()?;
        let targets = match targets {
            Some(t) => t,
            None => self.known_targets(&failures)?,
        };
        let tasks = match tasks {
            Some(t) => t,
            None => {
                let mut all: Vec<String> = done.iter().map(|(_, t)| t.clone()).collect();
                all.sort();
                all.dedup();
                all
            }
        };
        let mut status = Status {
            tasks,
            checkpoints: Vec::new(),
            done: 0,
            failed: 0,
            missing: 0,
        };
        for target in targets {
            let c = checkpoint_status(&target, &status.tasks, &done, &failures);
            for state in c.tasks.values() {
                match state {
                    State::Done => status.done += 1,
                    State::Failed => status.failed += 1,
                    State::Missing => status.missing += 1,
                }
            }
            status.checkpoints.push(c);
        }
        Ok(status)
    }

    /// `(fingerprint, task)` of every stored result.
    fn done_pairs(&self) -> Result<HashSet<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT fingerprint, task FROM metrics")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// Every failure recorded, oldest first.
    fn failures(&self) -> Result<Vec<Failure>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, fingerprint, task, message FROM failures ORDER BY created_at, rowid",
            )
            .map_err(|e| sql_error(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Failure {
                    path: r.get(0)?,
                    fingerprint: r.get(1)?,
                    task: r.get(2)?,
                    message: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// The checkpoints the store knows, then the paths known only from failures (whose
    /// fingerprint could not be taken).
    fn known_targets(&self, failures: &[Failure]) -> Result<Vec<Target>> {
        let mut targets: Vec<Target> = self
            .checkpoints()?
            .into_iter()
            .map(|row| Target { row, error: None })
            .collect();
        for f in failures.iter().filter(|f| f.fingerprint.is_none()) {
            if targets.iter().all(|t| t.row.path != f.path) {
                targets.push(Target {
                    row: unknown_checkpoint(&f.path),
                    error: None,
                });
            }
        }
        Ok(targets)
    }
}

/// A checkpoint known only by its path (its run: the parent directory, as `ckpt eval`
/// names runs).
fn unknown_checkpoint(path: &str) -> CheckpointRow {
    let run = Path::new(path)
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    CheckpointRow {
        fingerprint: String::new(),
        path: path.to_string(),
        run,
        step: None,
        stage: None,
        schedule: None,
        alpha: None,
    }
}

fn checkpoint_status(
    target: &Target,
    tasks: &[String],
    done: &HashSet<(String, String)>,
    failures: &[Failure],
) -> CheckpointStatus {
    let row = &target.row;
    let mut states = BTreeMap::new();
    let mut error = target.error.clone();
    for task in tasks {
        let key = (row.fingerprint.clone(), task.clone());
        let state = if !row.fingerprint.is_empty() && done.contains(&key) {
            State::Done
        } else if let Some(f) = failures.iter().rev().find(|f| f.concerns(row, task)) {
            error = error.or_else(|| Some(f.message.clone()));
            State::Failed
        } else if target.error.is_some() {
            State::Failed
        } else {
            State::Missing
        };
        states.insert(task.clone(), state);
    }
    if tasks.is_empty() {
        // No task to pin it on: the checkpoint's latest failure still shows.
        error = error.or_else(|| {
            let latest = failures.iter().rev().find(|f| f.concerns_checkpoint(row));
            latest.map(|f| f.message.clone())
        });
    }
    CheckpointStatus {
        path: row.path.clone(),
        fingerprint: row.fingerprint.clone(),
        run: row.run.clone(),
        step: row.step,
        tasks: states,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MetricRow;

    fn row(fp: &str, path: &str) -> CheckpointRow {
        CheckpointRow {
            fingerprint: fp.into(),
            ..unknown_checkpoint(path)
        }
    }

    fn scored(s: &mut Store, fp: &str, task: &str, spec_hash: &str) {
        let m = MetricRow {
            fingerprint: fp.into(),
            task: task.into(),
            spec_hash: spec_hash.into(),
            metric: "acc".into(),
            filter: "none".into(),
            value: 0.5,
            stderr: None,
            n: 1,
            higher_is_better: true,
            num_fewshot: 0,
            regime: "lm-eval".into(),
            ckpt_version: "0".into(),
            created_at: "2024-01-01T00:00:00Z".into(),
        };
        s.put_task_result(fp, task, spec_hash, &[], &[m]).unwrap();
    }

    #[test]
    fn done_failed_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.sqlite")).unwrap();
        s.put_checkpoint(&row("f1", "runs/a/step-1"), None).unwrap();
        s.put_checkpoint(&row("f2", "runs/a/step-2"), None).unwrap();
        // Done under any spec; a failure then a result is done.
        scored(&mut s, "f1", "arc", "h1");
        scored(&mut s, "f1", "hellaswag", "h2");
        s.put_failure("runs/a/step-1", Some("f1"), None, "out of memory")
            .unwrap();
        // A task's failure concerns that task only.
        s.put_failure("runs/a/step-2", Some("f2"), Some("arc"), "bad doc")
            .unwrap();
        // A checkpoint whose fingerprint failed is known by its path only.
        s.put_failure("runs/b/step-9", None, None, "no weights")
            .unwrap();
        let status = s.status(None, None).unwrap();
        assert_eq!(status.tasks, ["arc", "hellaswag"]);
        let states: Vec<(String, Vec<State>)> = status
            .checkpoints
            .iter()
            .map(|c| (c.path.clone(), c.tasks.values().copied().collect()))
            .collect();
        use State::*;
        assert_eq!(
            states,
            [
                ("runs/a/step-1".to_string(), vec![Done, Done]),
                ("runs/a/step-2".to_string(), vec![Failed, Missing]),
                ("runs/b/step-9".to_string(), vec![Failed, Failed]),
            ]
        );
        assert_eq!((status.done, status.failed, status.missing), (2, 3, 1));
        assert_eq!(status.checkpoints[1].error.as_deref(), Some("bad doc"));
        assert_eq!(status.checkpoints[2].run, "b");
        // Asked about a checkpoint the store does not know, and a task it has no
        // result of: missing.
        let target = Target {
            row: row("f3", "runs/c/step-1"),
            error: None,
        };
        let status = s
            .status(Some(vec![target]), Some(vec!["mmlu_x".into()]))
            .unwrap();
        assert_eq!(status.checkpoints[0].tasks["mmlu_x"], Missing);
    }
}

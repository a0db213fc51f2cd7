//! [`TasksJob`]: a `ckpt tasks` as typed values, checked once, and [`run`]: the
//! catalog's tasks (built in and the user's), a suite's, or one task's rendered
//! prompts and requests.

use super::catalog::{Catalog, TaskEntry};
use super::data::DataSources;
use super::prompt::{Gold, Request};
use super::spec::{FewshotSource, OutputType, TaskSpec};
use super::task::build_task;
use crate::error::{Error, Result};
use serde::Serialize;
use std::path::PathBuf;

/// Which tasks to list or show.
#[derive(Debug, Clone, Default)]
pub struct TasksJob {
    /// Tasks or groups to list; empty: every one.
    pub names: Vec<String>,
    /// List a suite's tasks (pt, mt, sft, or one of `tasks_dirs`), with its shots.
    pub suite: Option<String>,
    /// Render the prompts and requests of this task (or of each task of a group).
    pub(crate) show: Option<String>,
    /// With `show`: only the first N docs.
    pub(crate) limit: Option<usize>,
    /// Few-shot examples per prompt, instead of the task's (or the suite's) count.
    pub num_fewshot: Option<usize>,
    /// Directories of task specs and suites over the built-ins.
    pub tasks_dirs: Vec<PathBuf>,
    /// Where `show` finds the docs.
    pub(crate) data: DataSources,
    /// Exemplar files for tasks whose exemplars lm-eval hard-codes, for `show`.
    pub(crate) fewshot_dir: Option<PathBuf>,
}

/// One row of the listing.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub(crate) task: String,
    pub(crate) group: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) output_type: OutputType,
    pub(crate) dataset: String,
    pub(crate) config: Option<String>,
    pub(crate) split: String,
    /// Where the few-shot examples come from: a split's name, or `file`.
    pub(crate) fewshot_split: Option<String>,
    pub(crate) num_fewshot: usize,
    pub(crate) metrics: Vec<String>,
    pub(crate) version: String,
    pub(crate) hash: String,
    pub(crate) origin: String,
}

/// One evaluated doc of a shown task.
#[derive(Debug, Serialize)]
pub struct ShownDoc<'a> {
    pub(crate) task: &'a str,
    pub(crate) doc_id: usize,
    pub(crate) prompt: &'a str,
    pub(crate) requests: &'a [Request],
    pub(crate) gold: &'a Gold,
}

/// What [`run`] did.
#[derive(Debug)]
pub enum TasksOutcome {
    /// The tasks asked for.
    Listed(Vec<TaskRow>),
    /// Every doc was handed to the caller.
    Shown,
}

impl TasksJob {
    /// Checks the limit, that options read only by `show` come with it, and that the
    /// directories they name exist.
    pub fn check(&self) -> Result<()> {
        if self.limit == Some(0) {
            return Err(Error::bad_value(
                "--limit",
                "--limit must be at least 1 (got 0)",
            ));
        }
        let data_given = !self.data.files.is_empty()
            || self.data.data_dir.is_some()
            || self.fewshot_dir.is_some();
        if self.show.is_none() && (data_given || self.limit.is_some()) {
            return Err(Error::bad_value(
                "--data",
                "--data, --data-dir, --fewshot-dir and --limit are only read with --show TASK",
            ));
        }
        for (flag, dir) in [
            ("--data-dir", &self.data.data_dir),
            ("--fewshot-dir", &self.fewshot_dir),
        ] {
            if let Some(dir) = dir {
                super::data::check_dir(flag, dir)?;
            }
        }
        Ok(())
    }
}

/// Lists the tasks, or with `show` hands each doc's prompt and requests to `on_doc`.
pub fn run(job: &TasksJob, on_doc: &mut dyn FnMut(ShownDoc)) -> Result<TasksOutcome> {
    job.check()?;
    let catalog = Catalog::with_user_dirs(&job.tasks_dirs)?;
    let specs = specs(job, &catalog)?;
    if job.show.is_none() {
        let rows = specs.iter().map(|s| row(s, entry(&catalog, s))).collect();
        return Ok(TasksOutcome::Listed(rows));
    }
    for spec in &specs {
        let task = build_task(spec, &job.data, job.limit, job.fewshot_dir.as_deref())
            .map_err(|e| e.map_message(|m| format!("task {}: {m}", spec.task)))?;
        for r in &task.requests {
            on_doc(ShownDoc {
                task: &spec.task,
                doc_id: r.doc_id,
                prompt: &r.prompt,
                requests: &r.requests,
                gold: &r.gold,
            });
        }
    }
    Ok(TasksOutcome::Shown)
}

/// The specs the job names, with its shot count.
fn specs(job: &TasksJob, catalog: &Catalog) -> Result<Vec<TaskSpec>> {
    let mut specs = match (&job.suite, &job.show, job.names.is_empty()) {
        (Some(suite), _, _) => catalog.suite(suite)?,
        (None, Some(show), _) => catalog.resolve(show)?,
        (None, None, false) => catalog.resolve_all(&job.names)?,
        (None, None, true) => catalog.entries().iter().map(|e| e.spec.clone()).collect(),
    };
    if let Some(show) = &job.show {
        let wanted = catalog.resolve(show)?;
        specs.retain(|s| wanted.iter().any(|w| w.task == s.task));
        if specs.is_empty() {
            return Err(Error::Invalid(format!(
                "task {show} is not in suite {}",
                job.suite.as_deref().unwrap_or("")
            )));
        }
    }
    match job.num_fewshot {
        Some(n) => specs.iter().map(|s| s.with_num_fewshot(n)).collect(),
        None => Ok(specs),
    }
}

fn entry<'a>(catalog: &'a Catalog, spec: &TaskSpec) -> Option<&'a TaskEntry> {
    catalog.entries().iter().find(|e| e.spec.task == spec.task)
}

fn row(spec: &TaskSpec, entry: Option<&TaskEntry>) -> TaskRow {
    TaskRow {
        task: spec.task.clone(),
        group: entry.and_then(|e| e.group.clone()),
        tags: spec.tag.clone(),
        output_type: spec.output_type,
        dataset: spec.dataset_path.clone(),
        config: spec.dataset_name.clone(),
        split: spec.eval_split().unwrap_or("").to_string(),
        fewshot_split: match spec.fewshot_config.source {
            FewshotSource::File => Some("file".to_string()),
            FewshotSource::Split => spec.fewshot_split_name().map(String::from),
        },
        num_fewshot: spec.num_fewshot,
        metrics: metric_names(spec),
        version: spec.version(),
        hash: spec.hash(),
        origin: spec.origin.display().to_string(),
    }
}

/// The metrics a task reports (what its scorer produces, not only `metric_list`).
fn metric_names(spec: &TaskSpec) -> Vec<String> {
    let names: Vec<String> = match spec.process_results.as_deref() {
        Some("mc2") => vec!["acc".into()],
        Some("drop") => vec!["em".into(), "f1".into()],
        _ => spec.metric_list.iter().map(|m| m.metric.clone()).collect(),
    };
    if spec.filter_list.is_empty() {
        return names;
    }
    spec.filter_list
        .iter()
        .flat_map(|f| names.iter().map(move |m| format!("{m},{}", f.name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_refuses_a_zero_limit() {
        let job = TasksJob {
            show: Some("arc_easy".into()),
            limit: Some(0),
            ..TasksJob::default()
        };
        assert!(job.check().unwrap_err().to_string().contains("--limit"));
    }

    #[test]
    fn check_refuses_data_options_without_show() {
        assert!(TasksJob::default().check().is_ok());
        let job = TasksJob {
            limit: Some(3),
            ..TasksJob::default()
        };
        assert!(job.check().unwrap_err().to_string().contains("--show"));
        let job = TasksJob {
            fewshot_dir: Some("shots".into()),
            ..TasksJob::default()
        };
        assert!(job.check().unwrap_err().to_string().contains("--show"));
    }
}

//! A task made concrete: its docs loaded and preprocessed, and every doc's requests
//! built, once, before any checkpoint is scored (so prompts never depend on which
//! checkpoints or how many run).

use super::data::{read_records, DataSources};
use super::preprocess::preprocess;
use super::prompt::{DocRequests, PromptBuilder, Shots};
use super::spec::{FewshotSource, TaskSpec};
use super::template::Templates;
use crate::error::{Error, Result};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// A task's docs and their requests.
pub struct TaskRequests {
    pub spec: TaskSpec,
    pub docs: Vec<Json>,
    pub requests: Vec<DocRequests>,
    /// Where the evaluated docs came from (named in errors).
    pub origin: PathBuf,
}

/// Loads `spec`'s evaluated split (the first `limit` docs), its few-shot pool, and
/// builds every doc's requests in doc order (lm-eval's order of few-shot draws).
pub fn build_task(
    spec: &TaskSpec,
    sources: &DataSources,
    limit: Option<usize>,
    fewshot_dir: Option<&Path>,
) -> Result<TaskRequests> {
    let split = spec.eval_split().expect("validated");
    let loaded = sources.load(spec, split, true)?;
    let mut docs = process(spec, loaded.docs, &loaded.origin)?;
    if let Some(n) = limit {
        docs.truncate(n);
    }
    let pool = if spec.num_fewshot == 0 {
        vec![]
    } else {
        fewshot_pool(spec, sources, fewshot_dir)?
    };
    let spec_origin = PathBuf::from(format!("tasks/{}.toml", spec.task));
    let templates = Templates::new(&spec_origin);
    let builder = PromptBuilder::new(spec, &templates);
    let mut shots = Shots::new(spec, pool);
    let requests = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            builder
                .build(i, doc, &mut shots)
                .map_err(|e| with_origin(e, &loaded.origin, i))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TaskRequests {
        spec: spec.clone(),
        docs,
        requests,
        origin: loaded.origin,
    })
}

fn with_origin(e: Error, origin: &Path, doc: usize) -> Error {
    match e {
        Error::Invalid(m) => Error::bad_file(origin, format!("doc {doc}: {m}")),
        other => other,
    }
}

fn process(spec: &TaskSpec, docs: Vec<Json>, origin: &Path) -> Result<Vec<Json>> {
    let Some(name) = &spec.process_docs else {
        return Ok(docs);
    };
    docs.iter()
        .enumerate()
        .map(|(i, d)| preprocess(name, d).map_err(|e| with_origin(e, origin, i)))
        .collect()
}

/// Exemplars: the few-shot split, or the user's file for exemplars lm-eval hard-codes.
fn fewshot_pool(
    spec: &TaskSpec,
    sources: &DataSources,
    fewshot_dir: Option<&Path>,
) -> Result<Vec<Json>> {
    match spec.fewshot_config.source {
        FewshotSource::Split => {
            let split = spec.fewshot_split_name().expect("validated");
            let loaded = sources.load(spec, split, false)?;
            process(spec, loaded.docs, &loaded.origin)
        }
        FewshotSource::File => {
            let columns = spec.fewshot_config.columns.join(", ");
            let Some(dir) = fewshot_dir else {
                return Err(Error::Invalid(format!(
                    "task {} needs few-shot exemplars that lm-eval hard-codes and ckpt does not ship: \
                     give --fewshot-dir DIR with {}.jsonl (columns: {columns})",
                    spec.task, spec.task
                )));
            };
            let file = dir.join(format!("{}.jsonl", spec.task));
            if !file.is_file() {
                return Err(Error::bad_file(
                    &file,
                    format!(
                        "missing: exemplars of task {} (columns: {columns})",
                        spec.task
                    ),
                ));
            }
            let docs = read_records(&file)?;
            for (i, d) in docs.iter().enumerate() {
                if let Some(c) = spec
                    .fewshot_config
                    .columns
                    .iter()
                    .find(|c| d.get(c.as_str()).is_none())
                {
                    return Err(Error::bad_file(
                        &file,
                        format!("record {i}: no \"{c}\" column"),
                    ));
                }
            }
            Ok(docs)
        }
    }
}

//! From a task spec and its data to every request the model is asked: the docs of the
//! evaluated split (preprocessed, the first `limit`), the few-shot pool (the few-shot
//! split, preprocessed the same way, or the user's exemplar file), and each doc's
//! prompt and requests built as lm-evaluation-harness builds them.
//!
//! Exemplar files (`fewshot_config.source = "file"`) are JSONL, read from the few-shot
//! directory as `<dir>/<fewshot_config.file or task>.jsonl`; every line must have the
//! spec's `fewshot_config.columns`. They are used as written: lm-eval does not run
//! `process_docs` on the exemplars of its YAML either.
//!
//! ```no_run
//! use ckpt::eval::{catalog::Catalog, data::DataSources, task::build_task};
//! # fn f() -> ckpt::Result<()> {
//! let spec = &Catalog::builtin()?.resolve("arc_easy")?[0];
//! let mut sources = DataSources::default();
//! sources.add_file_arg("arc_easy=arc_easy_test.jsonl")?;
//! let task = build_task(spec, &sources, Some(10), None)?;
//! println!("{}", task.requests[0].prompt);
//! # Ok(()) }
//! ```

use super::data::{read_records, DataSources, Docs};
use super::preprocess::preprocess;
use super::prompt::{DocRequests, PromptBuilder, Shots};
use super::spec::{FewshotSource, TaskSpec};
use super::template::Templates;
use crate::error::{Error, Result};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// The `dataset_path` of tasks whose data only the user can give (validation loss).
pub const LOCAL_DATASET: &str = "local";

/// A task ready to run: its spec, its evaluated docs and their requests (`requests[i]`
/// is `docs[i]`'s, `doc_id` = i).
#[derive(Debug, Clone)]
pub struct TaskRequests {
    pub spec: TaskSpec,
    /// The evaluated docs after `process_docs` (what scoring reads, e.g. DROP's answers).
    pub(crate) docs: Vec<Json>,
    pub requests: Vec<DocRequests>,
    /// Where the evaluated docs came from (named in errors).
    pub origin: PathBuf,
    /// Whether they are the Hub dataset's (else local files, which a model card says).
    pub from_hub: bool,
}

/// Builds the requests of `spec` on the first `limit` docs of its evaluated split.
/// `fewshot_dir` holds the exemplar files of file-sourced tasks.
pub fn build_task(
    spec: &TaskSpec,
    sources: &DataSources,
    limit: Option<usize>,
    fewshot_dir: Option<&Path>,
) -> Result<TaskRequests> {
    let eval_split = spec
        .eval_split()
        .expect("validated: a spec has an evaluated split");
    let sources = local_only(spec, sources);
    let loaded = load_split(spec, &sources, eval_split, true)?;
    let mut shots = fewshot(spec, &sources, eval_split, &loaded, fewshot_dir)?;
    let n = limit.unwrap_or(usize::MAX).min(loaded.docs.len());
    let mut docs = loaded.docs;
    docs.truncate(n);
    let mut templates = Templates::new(&spec.origin);
    if let Some(config) = &spec.dataset_name {
        templates.set_global("dataset_name", config);
    }
    let builder = PromptBuilder::new(spec, &templates);
    let requests = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            builder
                .build(i, doc, &mut shots)
                .map_err(|e| at_doc(e, &loaded.origin, i))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TaskRequests {
        spec: spec.clone(),
        docs,
        requests,
        origin: loaded.origin,
        from_hub: loaded.from_hub,
    })
}

/// A task on a `local` dataset is never looked for on the Hub.
fn local_only(spec: &TaskSpec, sources: &DataSources) -> DataSources {
    let mut s = sources.clone();
    if spec.dataset_path == LOCAL_DATASET {
        s.hub = false;
    }
    s
}

/// The docs of `split`, each through the spec's `process_docs`.
fn load_split(spec: &TaskSpec, sources: &DataSources, split: &str, eval: bool) -> Result<Docs> {
    let mut loaded = sources.load(spec, split, eval).map_err(|e| match (&e, spec.dataset_path == LOCAL_DATASET) {
        (Error::BadValue { .. } | Error::Invalid(_), true) => Error::bad_value("--data", format!(
            "task {} reads a local file: give --data {}=FILE.jsonl (one {{\"text\": ...}} per line) or put it at <data-dir>/{LOCAL_DATASET}/{split}.jsonl",
            spec.task, spec.task
        )),
        _ => e,
    })?;
    if let Some(name) = &spec.process_docs {
        let origin = loaded.origin.clone();
        for (i, doc) in loaded.docs.iter_mut().enumerate() {
            *doc = preprocess(name, doc).map_err(|e| at_doc(e, &origin, i))?;
        }
    }
    Ok(loaded)
}

/// The task's few-shot sampler: over the few-shot split, or the exemplar file.
fn fewshot(
    spec: &TaskSpec,
    sources: &DataSources,
    eval_split: &str,
    eval_docs: &Docs,
    fewshot_dir: Option<&Path>,
) -> Result<Shots> {
    let cfg = &spec.fewshot_config;
    match cfg.source {
        FewshotSource::File => {
            let (pool, description) = exemplar_file(spec, fewshot_dir)?;
            let shots = Shots::new(spec, pool);
            Ok(match description {
                Some(d) => shots.with_description(d),
                None => shots,
            })
        }
        FewshotSource::Split if spec.num_fewshot == 0 => Ok(Shots::new(spec, vec![])),
        FewshotSource::Split => {
            let split = spec
                .fewshot_split_name()
                .expect("validated: num_fewshot > 0 has a split");
            let pool = if split == eval_split {
                eval_docs.docs.clone()
            } else {
                load_split(spec, sources, split, false)?.docs
            };
            Ok(Shots::new(spec, pool))
        }
    }
}

/// Where a file-sourced task's exemplars are.
pub fn exemplar_path(spec: &TaskSpec, fewshot_dir: &Path) -> PathBuf {
    let stem = spec.fewshot_config.file.as_deref().unwrap_or(&spec.task);
    fewshot_dir.join(format!("{stem}.jsonl"))
}

/// The exemplars of a file-sourced task, checked, and the description they carry.
fn exemplar_file(
    spec: &TaskSpec,
    fewshot_dir: Option<&Path>,
) -> Result<(Vec<Json>, Option<String>)> {
    let cfg = &spec.fewshot_config;
    let needed = spec.num_fewshot > 0 || cfg.description_column.is_some();
    let Some(dir) = fewshot_dir.filter(|_| needed) else {
        if needed {
            return Err(Error::bad_value("--fewshot-dir", format!(
                "task {} reads its few-shot exemplars from a file you supply ({}.jsonl with columns {}; see {}): give --fewshot-dir DIR",
                spec.task,
                cfg.file.as_deref().unwrap_or(&spec.task),
                cfg.columns.join(", "),
                spec.origin.display()
            )));
        }
        return Ok((vec![], None));
    };
    let path = exemplar_path(spec, dir);
    if !path.is_file() {
        return Err(Error::bad_file(&path, format!(
            "missing: task {} needs {} exemplars here, one JSON object per line with columns {} (see {})",
            spec.task,
            spec.num_fewshot,
            cfg.columns.join(", "),
            spec.origin.display()
        )));
    }
    let rows = read_records(&path)?;
    for (i, row) in rows.iter().enumerate() {
        if let Some(c) = cfg.columns.iter().find(|c| row.get(c.as_str()).is_none()) {
            return Err(Error::bad_file(
                &path,
                format!(
                    "line {}: no column `{c}` (task {} needs {})",
                    i + 1,
                    spec.task,
                    cfg.columns.join(", ")
                ),
            ));
        }
    }
    if rows.len() < spec.num_fewshot {
        return Err(Error::bad_file(
            &path,
            format!(
                "{} exemplars, task {} asks for {}",
                rows.len(),
                spec.task,
                spec.num_fewshot
            ),
        ));
    }
    let description = match &cfg.description_column {
        None => None,
        Some(col) => match rows.first().and_then(|r| r.get(col.as_str())) {
            Some(Json::String(s)) => Some(s.clone()),
            _ => {
                return Err(Error::bad_file(
                    &path,
                    format!(
                        "line 1: no string column `{col}` (task {}'s description)",
                        spec.task
                    ),
                ))
            }
        },
    };
    Ok((rows, description))
}

/// Names the data file and document of an error about one doc.
fn at_doc(e: Error, origin: &Path, i: usize) -> Error {
    match e {
        Error::BadValue { message, .. } | Error::Invalid(message) => {
            Error::bad_file(origin, format!("document {i}: {message}"))
        }
        // A template of the spec failed on this doc (`index()` of an answer key that is
        // not a label): the spec's file leads, the doc is named after it.
        Error::BadFile { path, message } if path != origin => Error::bad_file(
            &path,
            format!("{message} (on document {i} of {})", origin.display()),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::catalog::Catalog;
    use crate::eval::prompt::{Gold, Request};

    fn write(path: &Path, lines: &[Json]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn preprocessed_docs_and_shots_from_the_training_split() {
        let dir = tempfile::tempdir().unwrap();
        let doc = |ctx: &str, label: &str| {
            serde_json::json!({"ind": 1, "activity_label": "Baking", "ctx_a": "A cook stirs.", "ctx_b": ctx,
                "ctx": "", "endings": ["adds salt.", "sings [title] loudly."], "source_id": "s", "split": "val",
                "split_type": "indomain", "label": label})
        };
        write(
            &dir.path().join("Rowan/hellaswag/validation.jsonl"),
            &[doc("then he", "1"), doc("she", "0")],
        );
        // lm-eval draws n + 1 shots (to drop the evaluated doc), so the pool needs two:
        // `Random(1234).sample(range(2), 2)` is [1, 0].
        write(
            &dir.path().join("Rowan/hellaswag/train.jsonl"),
            &[doc("we", "1"), doc("they", "0")],
        );
        let sources = DataSources {
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let spec = Catalog::builtin().unwrap().resolve("hellaswag").unwrap()[0]
            .with_num_fewshot(1)
            .unwrap();
        let t = build_task(&spec, &sources, Some(1), None).unwrap();
        assert_eq!(t.docs.len(), 1);
        assert_eq!(t.docs[0]["query"], "Baking: A cook stirs. Then he");
        let r = &t.requests[0];
        assert_eq!(
            r.prompt,
            "Baking: A cook stirs. They adds salt.\n\nBaking: A cook stirs. Then he"
        );
        assert_eq!(r.gold, Gold::Index(1));
        assert_eq!(
            r.requests[1],
            Request::Loglikelihood {
                context: r.prompt.clone(),
                continuation: " sings. loudly.".into()
            }
        );
    }

    #[test]
    fn exemplar_files_are_required_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let test = dir.path().join("test.jsonl");
        write(
            &test,
            &[serde_json::json!({"question": "Two plus two?", "answer": "2 + 2 = 4\n#### 4"})],
        );
        let mut sources = DataSources::default();
        sources
            .add_file_arg(&format!("gsm8k_cot={}", test.display()))
            .unwrap();
        let spec = Catalog::builtin().unwrap().resolve("gsm8k_cot").unwrap()[0]
            .with_num_fewshot(2)
            .unwrap();
        let err = build_task(&spec, &sources, None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--fewshot-dir") && err.contains("question, target"),
            "{err}"
        );
        let shots = dir.path().join("shots");
        let err = build_task(&spec, &sources, None, Some(&shots))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gsm8k_cot.jsonl") && err.contains("missing"),
            "{err}"
        );
        write(
            &shots.join("gsm8k_cot.jsonl"),
            &[serde_json::json!({"question": "One?", "target": "It is 1. The answer is 1."})],
        );
        let err = build_task(&spec, &sources, None, Some(&shots))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 exemplars") && err.contains("asks for 2"),
            "{err}"
        );
        write(
            &shots.join("gsm8k_cot.jsonl"),
            &[
                serde_json::json!({"question": "One?", "target": "It is 1. The answer is 1."}),
                serde_json::json!({"question": "Zero?", "answer": "0"}),
            ],
        );
        let err = build_task(&spec, &sources, None, Some(&shots))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("`target`"), "{err}");
        write(
            &shots.join("gsm8k_cot.jsonl"),
            &[
                serde_json::json!({"question": "One?", "target": "It is 1. The answer is 1."}),
                serde_json::json!({"question": "Zero?", "target": "None. The answer is 0."}),
            ],
        );
        let t = build_task(&spec, &sources, None, Some(&shots)).unwrap();
        assert_eq!(
            t.requests[0].prompt,
            "Q: One?\nA: It is 1. The answer is 1.\n\nQ: Zero?\nA: None. The answer is 0.\n\nQ: Two plus two?\nA:"
        );
        assert_eq!(t.requests[0].gold, Gold::Text("4".into()));
    }

    #[test]
    fn local_data_is_never_fetched() {
        let spec = Catalog::builtin()
            .unwrap()
            .resolve("validation_loss")
            .unwrap()[0]
            .clone();
        let sources = DataSources {
            hub: true,
            ..Default::default()
        };
        let err = build_task(&spec, &sources, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--data validation_loss=FILE.jsonl"), "{err}");
    }
}

//! A task's documents, read in the Hub dataset's own schema.
//!
//! Where a split comes from, first match wins:
//! 1. a file named for it (`--data arc_easy=test.jsonl`, `--data arc_easy:train=x.parquet`);
//! 2. a data directory: `<dir>/<dataset_path>/<dataset_name>/<split>.{jsonl,json,parquet}`
//!    (without a config: `<dir>/<dataset_path>/<split>.*`);
//! 3. the Hugging Face Hub: the dataset's Parquet files for that config and split, in
//!    the usual cache ([`super::hub`]).
//!
//! JSONL, JSON arrays and Parquet are read with the trainer's record reader, so nested
//! columns (ARC's `choices` struct) arrive as JSON objects.

use super::spec::TaskSpec;
use crate::error::{Error, Result};
use crate::records::for_each_record;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// File extensions a split may have, in the order they are looked for.
pub const SPLIT_EXTENSIONS: &[&str] = &["jsonl", "json", "parquet"];

/// Where task data is looked for.
#[derive(Debug, Clone, Default)]
pub struct DataSources {
    /// Files for `(task, split)`; split `None` is the evaluated split.
    pub files: BTreeMap<(String, Option<String>), PathBuf>,
    pub data_dir: Option<PathBuf>,
    /// Whether the Hub may be asked (in its cache only when `HF_HUB_OFFLINE` is set).
    pub hub: bool,
}

/// The docs of one split and the files they came from (named in errors).
#[derive(Debug, Clone)]
pub struct Docs {
    pub(crate) docs: Vec<Json>,
    pub(crate) origin: PathBuf,
    /// Downloaded from (or found in the cache of) the Hub, not a local file.
    pub(crate) from_hub: bool,
}

impl DataSources {
    /// Parses a `--data TASK[:SPLIT]=FILE` argument.
    pub fn add_file_arg(&mut self, arg: &str) -> Result<()> {
        let (key, file) = arg.split_once('=').ok_or_else(|| {
            Error::bad_value(
                "--data",
                format!("--data {arg}: expected TASK=FILE or TASK:SPLIT=FILE"),
            )
        })?;
        let (task, split) = match key.split_once(':') {
            Some((t, s)) => (t.to_string(), Some(s.to_string())),
            None => (key.to_string(), None),
        };
        if task.is_empty() || split.as_deref() == Some("") {
            return Err(Error::bad_value(
                "--data",
                format!("--data {arg}: expected TASK=FILE or TASK:SPLIT=FILE"),
            ));
        }
        let path = PathBuf::from(file);
        if !path.is_file() {
            let what = if path.is_dir() {
                "is a directory"
            } else {
                "no such file"
            };
            return Err(Error::bad_value(
                "--data",
                format!("--data {arg}: {file}: {what}, not a data file"),
            ));
        }
        self.files.insert((task, split), path);
        Ok(())
    }

    /// The docs of `split` of `spec` (`eval` says whether it is the evaluated split).
    pub fn load(&self, spec: &TaskSpec, split: &str, eval: bool) -> Result<Docs> {
        let (files, from_hub) = self.files_for(spec, split, eval)?;
        let mut docs = Vec::new();
        for file in &files {
            docs.extend(read_records(file)?);
        }
        let origin = files.first().cloned().unwrap_or_default();
        if docs.is_empty() {
            return Err(Error::bad_file(
                &origin,
                format!("split {split:?} of task {} has no documents", spec.task),
            ));
        }
        Ok(Docs {
            docs,
            origin,
            from_hub,
        })
    }

    /// The files of a split, and whether they are the Hub's.
    fn files_for(&self, spec: &TaskSpec, split: &str, eval: bool) -> Result<(Vec<PathBuf>, bool)> {
        let by_split = self
            .files
            .get(&(spec.task.clone(), Some(split.to_string())));
        let by_task = eval
            .then(|| self.files.get(&(spec.task.clone(), None)))
            .flatten();
        if let Some(file) = by_split.or(by_task) {
            return Ok((vec![file.clone()], false));
        }
        if let Some(dir) = &self.data_dir {
            if let Some(file) = find_in_dir(dir, spec, split) {
                return Ok((vec![file], false));
            }
        }
        if self.hub {
            let files =
                super::hub::split_files(&spec.dataset_path, spec.dataset_name.as_deref(), split)?;
            return Ok((files, true));
        }
        let mut where_ = format!("no file for split {split:?} of task {}", spec.task);
        if let Some(dir) = &self.data_dir {
            where_.push_str(&format!(
                " in {} (looked for {})",
                dir.display(),
                split_stem(dir, spec, split).display()
            ));
        }
        where_.push_str("; give --data TASK[:SPLIT]=FILE, --data-dir DIR, or allow --hub");
        Err(Error::bad_value("--data", where_))
    }
}

/// `<dir>/<dataset_path>/<dataset_name>/<split>` without its extension.
pub fn split_stem(dir: &Path, spec: &TaskSpec, split: &str) -> PathBuf {
    let mut p = dir.join(&spec.dataset_path);
    if let Some(config) = &spec.dataset_name {
        p = p.join(config);
    }
    p.join(split)
}

fn find_in_dir(dir: &Path, spec: &TaskSpec, split: &str) -> Option<PathBuf> {
    let stem = split_stem(dir, spec, split);
    SPLIT_EXTENSIONS
        .iter()
        .map(|ext| stem.with_extension(ext))
        .find(|p| p.is_file())
}

/// Every record of a JSONL / JSON / Parquet file, as JSON objects.
pub fn read_records(file: &Path) -> Result<Vec<Json>> {
    let mut docs = Vec::new();
    for_each_record(file, None, &mut |record| {
        if !record.value.is_object() {
            return Err(Error::bad_file(
                file,
                format!("{}: a document must be a JSON object", record.location),
            ));
        }
        docs.push(record.value);
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(docs)
}

/// A directory flag's value must be an existing directory (`flag` names it in the error).
pub fn check_dir(flag: &str, path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let what = if path.exists() {
        "is not a directory"
    } else {
        "no such directory"
    };
    Err(Error::bad_value(
        flag,
        format!("{flag} {}: {what}", path.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskSpec {
        TaskSpec::parse(
            r#"
task = "t"
dataset_path = "org/ds"
dataset_name = "cfg"
output_type = "multiple_choice"
test_split = "test"
doc_to_text = "{{q}}"
doc_to_target = "{{a}}"
doc_to_choice = "{{c}}"
"#,
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn data_dir_layout_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let sources = DataSources {
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let err = sources.load(&spec(), "test", true).unwrap_err().to_string();
        assert!(err.contains("org/ds/cfg/test"), "{err}");
        let file = dir.path().join("org/ds/cfg/test.jsonl");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "{\"q\": 1}\n{\"q\": 2}\n").unwrap();
        let docs = sources.load(&spec(), "test", true).unwrap();
        assert_eq!(docs.docs.len(), 2);
        std::fs::write(&file, "").unwrap();
        let err = sources.load(&spec(), "test", true).unwrap_err().to_string();
        assert!(err.contains("no documents"), "{err}");
    }

    #[test]
    fn file_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        std::fs::write(&a, "{}\n").unwrap();
        std::fs::write(&b, "{}\n").unwrap();
        let mut s = DataSources::default();
        s.add_file_arg(&format!("t={}", a.display())).unwrap();
        s.add_file_arg(&format!("t:train={}", b.display())).unwrap();
        assert!(s.add_file_arg("nonsense").is_err());
        // A file that is not there, or a directory, is named at once.
        let err = s.add_file_arg("t=missing.jsonl").unwrap_err().to_string();
        assert!(
            err.contains("missing.jsonl") && err.contains("no such file"),
            "{err}"
        );
        let err = s
            .add_file_arg(&format!("t={}", dir.path().display()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a directory"), "{err}");
        assert!(s.add_file_arg(&format!(":x={}", a.display())).is_err());
        assert_eq!(
            s.files_for(&spec(), "test", true).unwrap(),
            (vec![a.clone()], false)
        );
        assert_eq!(
            s.files_for(&spec(), "train", false).unwrap(),
            (vec![b], false)
        );
    }
}

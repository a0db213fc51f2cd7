//! Task data from the Hugging Face Hub: a dataset's Parquet files for one config and
//! split, downloaded with hf-hub into the usual cache (`HF_HOME`, `HF_ENDPOINT` and
//! `HF_TOKEN` honoured as the Hugging Face tools read them).
//!
//! Datasets lay their Parquet files out in a few ways; the first that matches wins:
//! `<config>/<split>-*.parquet`, `<config>/<split>/*.parquet`, `data/<split>-*.parquet`
//! (no config), `<split>-*.parquet`; failing those, the Hub's automatic conversion on
//! the `refs/convert/parquet` revision (`<config or default>/<split>/*.parquet`). With
//! `HF_HUB_OFFLINE=1` nothing is asked of the network: the files come from the cache.

use crate::error::{Error, Result};
use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

/// The revision where the Hub keeps its Parquet conversion of every dataset.
const PARQUET_REVISION: &str = "refs/convert/parquet";

/// Local paths of the Parquet files of `split` of `dataset` (config `config`).
pub fn split_files(dataset: &str, config: Option<&str>, split: &str) -> Result<Vec<PathBuf>> {
    let what = format!(
        "{dataset}{} split {split}",
        config.map(|c| format!(" ({c})")).unwrap_or_default()
    );
    for revision in ["main", PARQUET_REVISION] {
        let files = list_files(dataset, revision).map_err(|e| hub_error(&what, e))?;
        let wanted = select_split_files(&files, config, split, revision == PARQUET_REVISION);
        if !wanted.is_empty() {
            return wanted
                .iter()
                .map(|f| fetch(dataset, revision, f).map_err(|e| hub_error(&what, e)))
                .collect();
        }
    }
    Err(Error::Invalid(format!(
        "the Hub has no Parquet files for {what}"
    )))
}

/// Local path of one file of a Hub dataset (main revision), from the cache or downloaded.
pub fn dataset_file(dataset: &str, file: &str) -> Result<PathBuf> {
    fetch(dataset, "main", file).map_err(|e| hub_error(&format!("{file} of {dataset}"), e))
}

fn hub_error(what: &str, e: String) -> Error {
    Error::Invalid(format!("downloading {what} from the Hub: {e}"))
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn repo(dataset: &str, revision: &str) -> Repo {
    Repo::with_revision(dataset.to_string(), RepoType::Dataset, revision.to_string())
}

fn api() -> std::result::Result<Api, String> {
    let mut builder = ApiBuilder::from_env().with_progress(false);
    // `from_env` reads the token file; the environment variable wins, as in huggingface_hub.
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    builder.build().map_err(|e| e.to_string())
}

/// File names of `dataset` at `revision`: from the Hub, or offline from the cache.
fn list_files(dataset: &str, revision: &str) -> std::result::Result<Vec<String>, String> {
    if offline() {
        return Ok(cached_files(dataset, revision));
    }
    let info = api()?.repo(repo(dataset, revision)).info();
    match info {
        Ok(info) => Ok(info.siblings.into_iter().map(|s| s.rfilename).collect()),
        // A dataset without a Parquet conversion answers 404 for that revision.
        Err(e) if revision == PARQUET_REVISION && e.to_string().contains("404") => Ok(vec![]),
        Err(e) => Err(e.to_string()),
    }
}

/// Files present in the cache's snapshot of `revision`.
fn cached_files(dataset: &str, revision: &str) -> Vec<String> {
    let cache = Cache::from_env();
    let folder = cache.path().join(repo(dataset, revision).folder_name());
    let Ok(sha) = std::fs::read_to_string(folder.join("refs").join(revision)) else {
        return vec![];
    };
    let snapshot = folder.join("snapshots").join(sha.trim());
    walkdir::WalkDir::new(&snapshot)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_type().is_dir())
        .filter_map(|e| relative_name(&snapshot, e.path()))
        .collect()
}

fn relative_name(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    Some(rel.to_string_lossy().replace('\\', "/"))
}

fn fetch(dataset: &str, revision: &str, file: &str) -> std::result::Result<PathBuf, String> {
    let repo = repo(dataset, revision);
    if let Some(path) = Cache::from_env().repo(repo.clone()).get(file) {
        return Ok(path);
    }
    if offline() {
        return Err(format!(
            "{file} is not in the cache and HF_HUB_OFFLINE is set"
        ));
    }
    api()?.repo(repo).get(file).map_err(|e| e.to_string())
}

/// The Parquet files of `split` among `files`, sorted (shards in order).
pub fn select_split_files(
    files: &[String],
    config: Option<&str>,
    split: &str,
    converted: bool,
) -> Vec<String> {
    let parquet = |f: &&String| f.ends_with(".parquet");
    let shard_of = |dir: &str, f: &str| -> bool {
        let Some(name) = f.strip_prefix(dir) else {
            return false;
        };
        name.starts_with(&format!("{split}-")) || name.starts_with(&format!("{split}.")) || {
            name.strip_prefix(split)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|rest| !rest.contains('/'))
        }
    };
    let dirs: Vec<String> = if converted {
        vec![format!("{}/", config.unwrap_or("default"))]
    } else {
        match config {
            Some(c) => vec![
                format!("{c}/"),
                format!("{c}/data/"),
                "data/".into(),
                String::new(),
            ]
            .into_iter()
            .take(if c == "default" { 4 } else { 2 })
            .collect(),
            None => vec!["data/".into(), String::new()],
        }
    };
    for dir in dirs {
        let mut found: Vec<String> = files
            .iter()
            .filter(parquet)
            .filter(|f| shard_of(&dir, f))
            .cloned()
            .collect();
        if !found.is_empty() {
            found.sort();
            return found;
        }
    }
    vec![]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn layouts_of_hub_datasets() {
        let arc = names(&[
            "ARC-Easy/test-00000-of-00001.parquet",
            "ARC-Easy/train-00000-of-00001.parquet",
            "ARC-Challenge/test-00000-of-00001.parquet",
            "README.md",
        ]);
        assert_eq!(
            select_split_files(&arc, Some("ARC-Easy"), "test", false),
            names(&["ARC-Easy/test-00000-of-00001.parquet"])
        );
        let plain = names(&[
            "data/validation-00001-of-00002.parquet",
            "data/validation-00000-of-00002.parquet",
            "data/train-0.parquet",
        ]);
        assert_eq!(
            select_split_files(&plain, None, "validation", false),
            names(&[
                "data/validation-00000-of-00002.parquet",
                "data/validation-00001-of-00002.parquet"
            ])
        );
        let converted = names(&[
            "abstract_algebra/test/0000.parquet",
            "abstract_algebra/dev/0000.parquet",
        ]);
        assert_eq!(
            select_split_files(&converted, Some("abstract_algebra"), "dev", true),
            names(&["abstract_algebra/dev/0000.parquet"])
        );
        assert!(select_split_files(&arc, Some("ARC-Easy"), "validation", false).is_empty());
    }
}

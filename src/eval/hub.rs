//! Task data from the Hugging Face Hub: a dataset's Parquet files for one config and
//! split, downloaded by [`crate::hub`]'s client into the usual cache (`HF_HOME`,
//! `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE` honoured as the
//! Hugging Face tools read them), checked against the digests the Hub lists.
//!
//! Datasets lay their Parquet files out in a few ways; the first that matches wins:
//! `<config>/<split>-*.parquet`, `<config>/<split>/*.parquet`, `data/<split>-*.parquet`
//! (no config), `<split>-*.parquet`; failing those, the Hub's automatic conversion on
//! the `refs/convert/parquet` revision (`<config or default>/<split>/*.parquet`). With
//! `HF_HUB_OFFLINE=1` nothing is asked of the network: the files come from the cache.

use crate::error::{Error, Result};
use crate::hub::{FileEntry, Hub, HubRevision, HubSource, RepoKind};
use crate::progress::Silent;
use std::path::{Path, PathBuf};

/// The revision where the Hub keeps its Parquet conversion of every dataset.
const PARQUET_REVISION: &str = "refs/convert/parquet";

/// Local paths of the Parquet files of `split` of `dataset` (config `config`).
pub fn split_files(dataset: &str, config: Option<&str>, split: &str) -> Result<Vec<PathBuf>> {
    let what = format!(
        "{dataset}{} split {split}",
        config.map(|c| format!(" ({c})")).unwrap_or_default()
    );
    let hub = datasets()?;
    for revision in ["main", PARQUET_REVISION] {
        let converted = revision == PARQUET_REVISION;
        let Some(snapshot) =
            Snapshot::of(&hub, dataset, revision).map_err(|e| hub_error(&what, e))?
        else {
            continue;
        };
        let wanted = select_split_files(&snapshot.names(), config, split, converted);
        if !wanted.is_empty() {
            return wanted
                .iter()
                .map(|f| snapshot.fetch(&hub, f).map_err(|e| hub_error(&what, e)))
                .collect();
        }
    }
    Err(Error::unsupported(format!(
        "the Hub has no Parquet files for {what}"
    )))
}

/// Local path of one file of a Hub dataset (main revision), from the cache or downloaded.
pub fn dataset_file(dataset: &str, file: &str) -> Result<PathBuf> {
    let what = format!("{file} of {dataset}");
    let hub = datasets()?;
    let snapshot = Snapshot::of(&hub, dataset, "main")
        .and_then(|s| s.ok_or_else(|| Error::network("no main revision")))
        .map_err(|e| hub_error(&what, e))?;
    snapshot.fetch(&hub, file).map_err(|e| hub_error(&what, e))
}

fn datasets() -> Result<Hub> {
    Hub::of_kind_from_env(RepoKind::Dataset)
}

/// A failed download, named; what the Hub answered (status, error code) is kept.
fn hub_error(what: &str, e: Error) -> Error {
    let message = format!("downloading {what} from the Hub: {e}");
    match e {
        Error::Network { status, code, .. } => Error::Network {
            status,
            code,
            message,
        },
        _ => Error::network(message),
    }
}

/// One revision of a dataset: its commit and files (offline: what the cache holds).
struct Snapshot {
    rev: HubRevision,
    /// The Hub's listing; `None` offline, where the cached snapshot is the listing.
    files: Option<Vec<FileEntry>>,
    dir: PathBuf,
}

impl Snapshot {
    /// `None`: the revision does not exist (a dataset without a Parquet conversion).
    fn of(hub: &Hub, dataset: &str, revision: &str) -> Result<Option<Self>> {
        let source = HubSource {
            repo: dataset.to_string(),
            revision: Some(revision.to_string()),
        };
        let rev = match hub.pin(&source) {
            Ok(rev) => rev,
            Err(Error::Network {
                status: Some(404), ..
            }) if revision == PARQUET_REVISION => return Ok(None),
            Err(_) if hub.is_offline() => return Ok(None),
            Err(e) => return Err(e),
        };
        let files = match hub.is_offline() {
            true => None,
            false => Some(hub.tree(dataset, &rev.commit)?),
        };
        let dir = hub.cache().snapshot(dataset, &rev.commit);
        Ok(Some(Self { rev, files, dir }))
    }

    fn names(&self) -> Vec<String> {
        match &self.files {
            Some(files) => files.iter().map(|f| f.path.clone()).collect(),
            None => cached_files(&self.dir),
        }
    }

    /// `file` in the cache, downloaded when it is not there yet.
    fn fetch(&self, hub: &Hub, file: &str) -> Result<PathBuf> {
        let Some(files) = &self.files else {
            let path = self.dir.join(file);
            return match path.is_file() {
                true => Ok(path),
                false => Err(Error::network(format!(
                    "{file} is not in the cache and HF_HUB_OFFLINE is set"
                ))),
            };
        };
        let entry = files
            .iter()
            .find(|f| f.path == file)
            .ok_or_else(|| Error::network(format!("no file {file} at this revision")))?;
        // The cache's ref to this revision was written when it was pinned.
        let (path, _) = hub.fetch_file(&self.rev, entry, &Silent)?;
        Ok(path)
    }
}

/// Files present in a cached snapshot.
fn cached_files(snapshot: &Path) -> Vec<String> {
    walkdir::WalkDir::new(snapshot)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_type().is_dir())
        .filter_map(|e| relative_name(snapshot, e.path()))
        .collect()
}

fn relative_name(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    Some(rel.to_string_lossy().replace('\\', "/"))
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

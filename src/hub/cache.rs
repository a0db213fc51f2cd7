//! The Hugging Face cache, laid out as huggingface_hub lays it out, so that files
//! `ckpt` downloads serve other tools and theirs serve `ckpt`:
//!
//! ```text
//! $HF_HUB_CACHE/models--ORG--NAME/   (datasets--ORG--NAME/ for a dataset)
//!     blobs/<etag>                 the file's bytes (etag: sha256 for LFS, git sha1 otherwise)
//!     blobs/<etag>.incomplete      a download in progress (resumed from its length)
//!     snapshots/<commit>/<path>    a symlink to ../../blobs/<etag>
//!     refs/<revision>              the commit a branch or tag pointed at when last seen
//! ```
//!
//! The cache root is `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`.

use super::repo_id::RepoKind;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The cache root and the paths within it, for one kind of repository.
#[derive(Debug, Clone)]
pub struct HubCache {
    root: PathBuf,
    kind: RepoKind,
}

impl HubCache {
    /// The cache of model repositories at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            kind: RepoKind::Model,
        }
    }

    /// The same cache, for repositories of `kind`.
    pub(crate) fn of_kind(mut self, kind: RepoKind) -> Self {
        self.kind = kind;
        self
    }

    pub(crate) fn kind(&self) -> RepoKind {
        self.kind
    }

    /// The cache the environment names, as huggingface_hub finds it.
    pub(crate) fn from_env() -> Self {
        if let Some(dir) =
            std::env::var_os("HF_HUB_CACHE").or_else(|| std::env::var_os("HUGGINGFACE_HUB_CACHE"))
        {
            return Self::new(dir);
        }
        let home =
            super::auth::hf_home().unwrap_or_else(|| std::env::temp_dir().join("huggingface"));
        Self::new(home.join("hub"))
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `models--ORG--NAME` (or `datasets--ORG--NAME`).
    pub(crate) fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(format!(
            "{}--{}",
            self.kind.plural(),
            repo.replace('/', "--")
        ))
    }

    pub(crate) fn blob(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    /// Where a download of `etag` grows until it is complete.
    pub(crate) fn incomplete(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    pub(crate) fn snapshot(&self, repo: &str, commit: &str) -> PathBuf {
        self.repo_dir(repo).join("snapshots").join(commit)
    }

    fn ref_file(&self, repo: &str, revision: &str) -> PathBuf {
        // `refs/pr/1` nests as huggingface_hub nests it.
        self.repo_dir(repo).join("refs").join(revision)
    }

    /// The commit `revision` pointed at when last seen.
    pub(crate) fn read_ref(&self, repo: &str, revision: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.ref_file(repo, revision)).ok()?;
        let commit = text.trim();
        is_commit(commit).then(|| commit.to_string())
    }

    /// Records that `revision` points at `commit` (not for a commit named as itself).
    pub(crate) fn write_ref(&self, repo: &str, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let file = self.ref_file(repo, revision);
        if self.read_ref(repo, revision).as_deref() == Some(commit) {
            return Ok(());
        }
        // Written beside the lock files and renamed into `refs/`: a temporary file left
        // in `refs/` by a crash would read as a ref to huggingface_hub's cache scan.
        let locks = crate::error::parent_dir(&self.lock_file(repo, commit)).to_path_buf();
        let parent = crate::error::parent_dir(&file);
        for dir in [&locks, &parent.to_path_buf()] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(".ckpt-ref-")
            .tempfile_in(&locks)
            .map_err(|e| Error::io(&locks, e))?;
        use std::io::Write;
        tmp.write_all(commit.as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| Error::io(tmp.path(), e))?;
        tmp.persist(&file).map_err(|e| Error::io(&file, e.error))?;
        Ok(())
    }

    /// Every ref the cache holds for `repo`: (name, commit), sorted by name.
    pub(crate) fn refs(&self, repo: &str) -> Vec<(String, String)> {
        let dir = self.repo_dir(repo).join("refs");
        let mut refs: Vec<(String, String)> = walkdir::WalkDir::new(&dir)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| {
                let name = e
                    .path()
                    .strip_prefix(&dir)
                    .ok()?
                    .to_str()?
                    .replace('\\', "/");
                let commit = self.read_ref(repo, &name)?;
                Some((name, commit))
            })
            .collect();
        refs.sort();
        refs
    }

    /// Links `snapshots/<commit>/<path>` to the blob `etag` (relative, so the cache can
    /// move), replacing a link that pointed elsewhere.
    pub(crate) fn link(&self, repo: &str, commit: &str, path: &str, etag: &str) -> Result<PathBuf> {
        let link = self.snapshot(repo, commit).join(path);
        let parent = crate::error::parent_dir(&link);
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        // snapshots/<commit>/a/b -> ../../../blobs/<etag>: one `..` per directory.
        let depth = path.split('/').count() + 1;
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(etag);
        if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
            return Ok(link);
        }
        let _ = std::fs::remove_file(&link);
        symlink(&target, &link).map_err(|e| Error::io(&link, e))?;
        Ok(link)
    }

    /// The lock file guarding downloads of `etag` (huggingface_hub's `.locks` layout),
    /// so that processes sharing the cache never write one blob at once.
    pub(crate) fn lock_file(&self, repo: &str, etag: &str) -> PathBuf {
        let repo_dir = self.repo_dir(repo);
        let name = repo_dir.file_name().unwrap_or_default();
        self.root
            .join(".locks")
            .join(name)
            .join(format!("{etag}.lock"))
    }

    /// Whether the snapshot's `path` resolves to a complete blob.
    pub fn has_file(&self, repo: &str, commit: &str, path: &str) -> bool {
        self.snapshot(repo, commit).join(path).is_file()
    }
}

/// A full commit id: 40 lowercase hex digits.
pub(crate) fn is_commit(text: &str) -> bool {
    text.len() == 40
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    // Where links need privileges, huggingface_hub copies; so do we.
    let blob = crate::error::parent_dir(link).join(target);
    std::fs::copy(blob, link).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_huggingface_hubs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HubCache::new(dir.path());
        let repo = "org/suite";
        let commit = "a".repeat(40);
        assert!(cache.repo_dir(repo).ends_with("models--org--suite"));
        let datasets = cache.clone().of_kind(RepoKind::Dataset);
        assert!(datasets.repo_dir(repo).ends_with("datasets--org--suite"));
        std::fs::create_dir_all(cache.blob(repo, "x").parent().unwrap()).unwrap();
        std::fs::write(cache.blob(repo, "e1"), b"{}").unwrap();
        std::fs::write(cache.blob(repo, "e2"), b"w").unwrap();
        cache.link(repo, &commit, "config.json", "e1").unwrap();
        cache.link(repo, &commit, "sub/dir/w.bin", "e2").unwrap();
        assert_eq!(
            std::fs::read(cache.snapshot(repo, &commit).join("config.json")).unwrap(),
            b"{}"
        );
        assert_eq!(
            std::fs::read(cache.snapshot(repo, &commit).join("sub/dir/w.bin")).unwrap(),
            b"w"
        );
        assert!(cache.has_file(repo, &commit, "sub/dir/w.bin"));
        std::fs::remove_file(cache.blob(repo, "e2")).unwrap();
        assert!(!cache.has_file(repo, &commit, "sub/dir/w.bin"));

        cache.write_ref(repo, "step1", &commit).unwrap();
        cache.write_ref(repo, "refs/pr/1", &"b".repeat(40)).unwrap();
        cache.write_ref(repo, &commit, &commit).unwrap();
        assert_eq!(cache.read_ref(repo, "step1"), Some(commit.clone()));
        assert_eq!(
            cache.refs(repo),
            [
                ("refs/pr/1".to_string(), "b".repeat(40)),
                ("step1".into(), commit)
            ]
        );
    }
}

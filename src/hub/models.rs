//! Model repositories on the Hub: their branches, the files of a commit, and the
//! files a checkpoint needs, fetched into the cache as a snapshot directory.
//!
//! Only what `ckpt` reads is downloaded: `config.json`, the weights (the shards an
//! index names, else `model.safetensors`, else other `*.safetensors`, else PyTorch
//! `.bin`), the tokenizer and chat-template files, and `ckpt.json`. Optimizer states,
//! other formats and everything else in the repository stay on the Hub. With
//! `HF_HUB_OFFLINE=1` no request is made: refs and files come from the cache.

use super::cache::{is_commit, HubCache};
use super::client::{HubClient, HubError, RetryPolicy};
use super::download::fetch_blob;
use super::repo_id::RepoKind;
use super::revisions::Position;
use super::source::HubSource;
use crate::checkpoint::{BIN_INDEX_FILE, BIN_SINGLE_FILE, CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
use crate::error::{Error, Result};
use crate::progress::{Progress, Silent};
use reqwest::Method;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// A file of a commit, as the tree listing gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub(crate) path: String,
    pub(crate) size: u64,
    /// The git blob id (of the pointer, for LFS files).
    pub(crate) oid: String,
    /// The content's sha256, for files stored in LFS.
    pub(crate) lfs_sha256: Option<String>,
}

impl FileEntry {
    /// The name the cache stores the file under (what the Hub's `ETag` says).
    pub(crate) fn etag(&self) -> &str {
        self.lfs_sha256.as_deref().unwrap_or(&self.oid)
    }
}

/// What [`Hub::fetch`] put in the cache.
#[derive(Debug)]
pub struct Fetched {
    /// The snapshot directory: a checkpoint directory.
    pub(crate) dir: PathBuf,
    /// The files that were not in the cache before.
    pub(crate) downloaded: Vec<Downloaded>,
}

/// A file a fetch downloaded: its link in the snapshot and its blob.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub(crate) link: PathBuf,
    pub(crate) blob: PathBuf,
    pub(crate) bytes: u64,
}

impl Downloaded {
    /// Whether this is a weights file (worth removing after a sweep has used it; the
    /// small files stay for later runs, offline ones too).
    pub(crate) fn is_weights(&self) -> bool {
        let name = self.link.to_string_lossy();
        name.ends_with(".safetensors") || name.ends_with(".bin")
    }
}

/// A revision pinned to its commit, with what its name says of its step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRevision {
    /// The repository and the revision as named (a branch, tag or commit).
    pub(crate) source: HubSource,
    pub(crate) commit: String,
    pub(crate) position: Option<Position>,
}

impl HubRevision {
    pub(crate) fn revision(&self) -> &str {
        self.source.revision_or_main()
    }
}

#[derive(Deserialize)]
struct RefsAnswer {
    #[serde(default)]
    branches: Vec<GitRef>,
}

#[derive(Deserialize)]
struct GitRef {
    name: String,
    #[serde(rename = "targetCommit")]
    target_commit: String,
}

#[derive(Deserialize)]
struct TreeItem {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: String,
    #[serde(default)]
    lfs: Option<LfsItem>,
}

#[derive(Deserialize)]
struct LfsItem {
    oid: String,
}

#[derive(Deserialize)]
struct RevisionAnswer {
    sha: String,
}

/// The Hub as a source of checkpoints: a client (none offline) and the cache.
#[derive(Clone)]
pub struct Hub {
    client: Option<HubClient>,
    cache: HubCache,
    endpoint: String,
}

impl Hub {
    /// The Hub and cache the environment names (`HF_ENDPOINT`, `HF_TOKEN` or the token
    /// file, `HF_HUB_CACHE`/`HF_HOME`, `HF_HUB_OFFLINE`).
    pub(crate) fn from_env() -> Result<Self> {
        Self::of_kind_from_env(RepoKind::Model)
    }

    /// [`Hub::from_env`] for repositories of `kind` (datasets: task data).
    pub(crate) fn of_kind_from_env(kind: RepoKind) -> Result<Self> {
        let endpoint = super::auth::endpoint();
        let client = if super::offline() {
            None
        } else {
            let token = super::auth::resolve_token(None).map(|(t, _)| t);
            let client = HubClient::new(&endpoint, token, RetryPolicy::default())?;
            Some(client)
        };
        Ok(Self {
            client,
            cache: HubCache::from_env().of_kind(kind),
            endpoint,
        })
    }

    pub(crate) fn is_offline(&self) -> bool {
        self.client.is_none()
    }

    pub fn cache(&self) -> &HubCache {
        &self.cache
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn online(&self, what: &str) -> Result<&HubClient> {
        self.client.as_ref().ok_or_else(|| self.not_cached(what))
    }

    fn not_cached(&self, what: &str) -> Error {
        Error::network(format!(
            "{what}: not in the Hugging Face cache ({}), and HF_HUB_OFFLINE is set",
            self.cache.root().display()
        ))
    }

    /// Every branch of `repo` with its commit, by name (offline: the refs the cache
    /// recorded).
    pub(crate) fn branches(&self, repo: &str) -> Result<Vec<(String, String)>> {
        let Some(client) = &self.client else {
            return Ok(self.cache.refs(repo));
        };
        let refs = self.refs(client, repo)?;
        let mut branches: Vec<(String, String)> = refs
            .branches
            .into_iter()
            .map(|r| (r.name, r.target_commit))
            .collect();
        branches.sort();
        Ok(branches)
    }

    fn refs(&self, client: &HubClient, repo: &str) -> Result<RefsAnswer> {
        let what = format!("listing the revisions of hf://{repo}");
        let url = format!(
            "{}/api/{}/{repo}/refs",
            client.endpoint(),
            self.cache.kind().plural()
        );
        let resp = send_get(client, &what, &url)?;
        Ok(client.json(&what, resp)?)
    }

    /// The commit `source`'s revision points at now (offline: when last seen), recorded
    /// in the cache's refs.
    pub(crate) fn commit_of(&self, source: &HubSource) -> Result<String> {
        let rev = source.revision_or_main();
        if is_commit(rev) {
            return Ok(rev.to_string());
        }
        let Some(client) = &self.client else {
            return self
                .cache
                .read_ref(&source.repo, rev)
                .ok_or_else(|| self.not_cached(&source.to_string()));
        };
        let what = format!("resolving {source}");
        let url = format!(
            "{}/api/{}/{}/revision/{}",
            client.endpoint(),
            self.cache.kind().plural(),
            source.repo,
            super::repo_id::quote_revision(rev)
        );
        let resp = send_get(client, &what, &url)?;
        let answer: RevisionAnswer = client.json(&what, resp)?;
        self.cache.write_ref(&source.repo, rev, &answer.sha)?;
        Ok(answer.sha)
    }

    /// Records in the cache that `revision` of `repo` points at `commit`.
    pub(crate) fn remember(&self, rev: &HubRevision) -> Result<()> {
        self.cache
            .write_ref(&rev.source.repo, rev.revision(), &rev.commit)
    }

    /// Every file of `repo` at `commit` (the recursive tree listing, page by page).
    pub(crate) fn tree(&self, repo: &str, commit: &str) -> Result<Vec<FileEntry>> {
        let what = format!("listing the files of hf://{repo}@{commit}");
        let client = self.online(&what)?;
        let mut url = format!(
            "{}/api/{}/{repo}/tree/{commit}?recursive=true&expand=false",
            client.endpoint(),
            self.cache.kind().plural()
        );
        let mut files = Vec::new();
        loop {
            let resp = send_get(client, &what, &url)?;
            let next = next_page(&resp);
            let items: Vec<TreeItem> = client.json(&what, resp)?;
            files.extend(
                items
                    .into_iter()
                    .filter(|i| i.kind == "file")
                    .map(|i| FileEntry {
                        path: i.path,
                        size: i.size,
                        oid: i.oid,
                        lfs_sha256: i.lfs.map(|l| l.oid),
                    }),
            );
            match next {
                Some(n) => url = n,
                None => return Ok(files),
            }
        }
    }

    /// The files of `tree` a checkpoint needs; reading a sharded index downloads it.
    pub(crate) fn checkpoint_files(
        &self,
        rev: &HubRevision,
        tree: &[FileEntry],
    ) -> Result<Vec<FileEntry>> {
        let find = |path: &str| tree.iter().find(|f| f.path == path).cloned();
        let Some(config) = find(CONFIG_FILE) else {
            return Err(Error::bad_value(
                "source",
                format!(
                    "{}: no {CONFIG_FILE} at this revision (commit {})",
                    rev.source,
                    short(&rev.commit)
                ),
            ));
        };
        let mut files = vec![config];
        files.extend(self.weight_files(rev, tree)?);
        files.extend(
            crate::tokenizer::files::SIDE_FILES
                .iter()
                .filter_map(|p| find(p)),
        );
        files.extend(find(crate::checkpoint::META_FILE));
        Ok(files)
    }

    /// The weight files, in the order the checkpoint reader prefers them.
    fn weight_files(&self, rev: &HubRevision, tree: &[FileEntry]) -> Result<Vec<FileEntry>> {
        let find = |path: &str| tree.iter().find(|f| f.path == path).cloned();
        for index in [INDEX_FILE, BIN_INDEX_FILE] {
            if let Some(entry) = find(index) {
                return self.indexed(rev, tree, entry);
            }
        }
        if let Some(single) = find(SINGLE_FILE) {
            return Ok(vec![single]);
        }
        let others: Vec<FileEntry> = tree
            .iter()
            .filter(|f| !f.path.contains('/'))
            .filter(|f| crate::checkpoint::is_model_safetensors_name(&f.path))
            .cloned()
            .collect();
        if !others.is_empty() {
            return Ok(others);
        }
        if let Some(bin) = find(BIN_SINGLE_FILE) {
            return Ok(vec![bin]);
        }
        Err(Error::bad_value(
            "source",
            format!(
                "{}: no weights at this revision (commit {}): expected {}",
                rev.source,
                short(&rev.commit),
                crate::checkpoint::WEIGHT_FILES
            ),
        ))
    }

    /// A sharded index and the shards it names.
    fn indexed(
        &self,
        rev: &HubRevision,
        tree: &[FileEntry],
        index: FileEntry,
    ) -> Result<Vec<FileEntry>> {
        let (path, _) = self.fetch_file(rev, &index, &Silent)?;
        let shards = crate::checkpoint::shard_names(&path)?;
        let mut files = vec![index];
        for name in shards {
            let entry = tree
                .iter()
                .find(|f| f.path == name)
                .cloned()
                .ok_or_else(|| {
                    Error::bad_value(
                        "source",
                        format!(
                            "{}: the weight index names {name}, which is not at this revision",
                            rev.source
                        ),
                    )
                })?;
            files.push(entry);
        }
        Ok(files)
    }

    /// One file into the cache, linked into the revision's snapshot; whether it had
    /// to be downloaded.
    pub(crate) fn fetch_file(
        &self,
        rev: &HubRevision,
        entry: &FileEntry,
        transfer: &dyn Progress,
    ) -> Result<(PathBuf, bool)> {
        let repo = &rev.source.repo;
        let cached = self.cache.blob(repo, entry.etag()).is_file();
        if !cached {
            let client = self.online(&format!("{} of {}", entry.path, rev.source))?;
            fetch_blob(client, &self.cache, rev, entry, transfer)?;
        }
        let link = self
            .cache
            .link(repo, &rev.commit, &entry.path, entry.etag())?;
        Ok((link, !cached))
    }

    /// The revision's snapshot directory holding every one of `files`, and the files
    /// that were not in the cache before.
    pub(crate) fn fetch(
        &self,
        rev: &HubRevision,
        files: &[FileEntry],
        transfer: &dyn Progress,
    ) -> Result<Fetched> {
        let mut downloaded = Vec::new();
        for entry in files {
            let (link, fresh) = self.fetch_file(rev, entry, transfer)?;
            if fresh {
                downloaded.push(Downloaded {
                    link,
                    blob: self.cache.blob(&rev.source.repo, entry.etag()),
                    bytes: entry.size,
                });
            }
        }
        self.remember(rev)?;
        Ok(Fetched {
            dir: self.cache.snapshot(&rev.source.repo, &rev.commit),
            downloaded,
        })
    }

    /// Bytes of `files` the cache lacks.
    pub(crate) fn missing_bytes(&self, rev: &HubRevision, files: &[FileEntry]) -> u64 {
        files
            .iter()
            .filter(|f| !self.cache.blob(&rev.source.repo, f.etag()).is_file())
            .map(|f| f.size)
            .sum()
    }

    /// The snapshot of `rev` as a checkpoint directory: downloaded as needed, or
    /// offline the one the cache holds.
    pub(crate) fn materialize(
        &self,
        rev: &HubRevision,
        transfer: &dyn Progress,
    ) -> Result<PathBuf> {
        if self.is_offline() {
            let dir = self.cache.snapshot(&rev.source.repo, &rev.commit);
            if crate::checkpoint::is_checkpoint_dir(&dir) {
                return Ok(dir);
            }
            return Err(self.not_cached(&rev.source.to_string()));
        }
        let tree = self.tree(&rev.source.repo, &rev.commit)?;
        let files = self.checkpoint_files(rev, &tree)?;
        Ok(self.fetch(rev, &files, transfer)?.dir)
    }

    /// `source` pinned to its commit.
    pub(crate) fn pin(&self, source: &HubSource) -> Result<HubRevision> {
        let commit = self.commit_of(source)?;
        Ok(HubRevision {
            source: source.at(source.revision_or_main()),
            commit,
            position: None,
        })
    }
}

/// The weight files of `files` and their digests, `path=sha256;...`: equal for equal
/// weights, known from a tree listing before anything is downloaded.
pub fn weights_key(files: &[FileEntry]) -> String {
    let mut parts: Vec<String> = files
        .iter()
        .filter(|f| f.path.ends_with(".safetensors") || f.path.ends_with(".bin"))
        .map(|f| format!("{}={}", f.path, f.etag()))
        .collect();
    parts.sort();
    parts.join(";")
}

/// The fingerprint `store` knows for `rev`'s weights, by its commit or else (online)
/// by the digests of its weight files; `None` when they were never scored.
pub fn known_fingerprint(
    hub: &Hub,
    rev: &HubRevision,
    store: &crate::store::Store,
) -> Result<Option<String>> {
    let repo = &rev.source.repo;
    if let Some(fp) = store.hub_fingerprint_at(repo, &rev.commit)? {
        return Ok(Some(fp));
    }
    if hub.is_offline() {
        return Ok(None);
    }
    let files = hub.checkpoint_files(rev, &hub.tree(repo, &rev.commit)?)?;
    store.hub_fingerprint_of_weights(&weights_key(&files))
}

fn send_get(
    client: &HubClient,
    what: &str,
    url: &str,
) -> std::result::Result<reqwest::blocking::Response, HubError> {
    client.send(what, &mut || {
        Ok(client
            .request(Method::GET, url)
            .timeout(Duration::from_secs(120)))
    })
}

/// The `rel="next"` URL of a paginated answer's `Link` header.
fn next_page(resp: &reqwest::blocking::Response) -> Option<String> {
    let link = resp.headers().get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

//! Publishing a [`Plan`] to a Hub repository, as `huggingface_hub.create_commit` does:
//!
//! 1. `whoami` (a bad token fails here, before any work), create the repository
//!    (an existing one is fine) and, for `--revision BRANCH`, the branch;
//! 2. read the revision's head commit: it becomes the commit's `parentCommit`;
//! 3. `preupload`: the Hub says which files go to LFS and what it already holds; files
//!    identical to the revision's are left out, and nothing is committed when all are;
//! 4. the LFS batch API for the rest: objects the Hub already has (a rerun after a
//!    failure) are skipped, the others are uploaded, completed and verified;
//! 5. one NDJSON commit.
//!
//! The commit is never repeated blindly. When its outcome is unknown (a dropped
//! connection, a 5xx), the branch head is read again: still at the parent, the commit
//! did not happen and is sent again (safe: `parentCommit` makes the Hub refuse a
//! duplicate); moved to a commit holding exactly these files, it happened; anything
//! else is reported, not retried.

use super::lfs::{self, LocalObject};
use super::plan::{Plan, PlanFile, UploadMode};
use crate::error::{Error, Result};
use crate::hub::client::{
    CommitFailure, HubClient, HubError, LfsObject, PreuploadFile, RevisionInfo,
};
use crate::hub::RepoId;
use crate::progress::{self, Unit};
use base64::Engine;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub repo: RepoId,
    /// Branch to commit to (`main` by default); created when missing.
    pub revision: String,
    /// Create the repository private (an existing one keeps its visibility).
    pub private: bool,
    pub commit_message: String,
    pub commit_description: String,
    /// Open a pull request against `revision` instead of committing to it.
    pub create_pr: bool,
}

/// How the upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A new commit (or pull request) holds the files.
    Committed,
    /// The commit's answer was lost, but the branch head holds exactly these files.
    CommittedAnswerLost,
    /// The revision already held every file: nothing to commit.
    UpToDate,
}

/// What the upload did.
#[derive(Debug, Clone, Serialize)]
pub struct UploadReport {
    /// `namespace/name`.
    pub(crate) repo: String,
    pub(crate) revision: String,
    pub(crate) outcome: Outcome,
    pub(crate) created_repo: bool,
    pub(crate) commit_oid: Option<String>,
    pub(crate) commit_url: Option<String>,
    pub(crate) pull_request_url: Option<String>,
    /// Files whose LFS objects were uploaded.
    pub uploaded: Vec<String>,
    /// Files whose LFS objects the Hub already had (not sent again).
    pub(crate) already_on_hub: Vec<String>,
    /// Files identical to the revision's, left out of the commit.
    pub(crate) unchanged: Vec<String>,
}

fn hub(e: HubError) -> Error {
    e.into()
}

/// Publishes `plan` (whose modes are updated to the Hub's decisions); `progress`
/// counts the LFS bytes sent.
pub fn publish(
    client: &HubClient,
    plan: &mut Plan,
    opts: &UploadOptions,
    progress: &progress::Shared,
) -> Result<UploadReport> {
    let user = client.whoami().map_err(hub)?;
    let repo = opts.repo.full(&user.name);
    let created_repo = create_repo(client, &repo, opts.private)?;
    if opts.revision != "main" && !opts.create_pr {
        client.create_branch(&repo, &opts.revision).map_err(hub)?;
    }
    let head = client.revision(&repo, &opts.revision).map_err(hub)?;
    let mut report = UploadReport {
        repo: repo.clone(),
        revision: opts.revision.clone(),
        outcome: Outcome::UpToDate,
        created_repo,
        commit_oid: None,
        commit_url: None,
        pull_request_url: None,
        uploaded: Vec::new(),
        already_on_hub: Vec::new(),
        unchanged: Vec::new(),
    };

    let changed = preupload(client, &repo, plan, opts, &mut report)?;
    if changed.is_empty() {
        report.commit_oid = Some(head.sha.clone());
        report.commit_url = Some(format!(
            "{}/{repo}/tree/{}",
            client.endpoint(),
            opts.revision
        ));
        return Ok(report);
    }
    let files: Vec<&PlanFile> = plan
        .files
        .iter()
        .filter(|f| changed.contains(&f.path_in_repo))
        .collect();
    upload_lfs(client, &repo, &opts.revision, &files, progress, &mut report)?;
    commit(client, &repo, &files, &head, opts, &mut report)?;
    Ok(report)
}

/// Creates the repository; `Ok(false)` when it exists. A 403 on creation is fine when
/// the repository exists (a token may write to a repository in a namespace where it
/// cannot create one), as huggingface_hub's `exist_ok` does.
fn create_repo(client: &HubClient, repo: &str, private: bool) -> Result<bool> {
    match client.create_repo(repo, private) {
        Ok(created) => Ok(created),
        Err(e) if e.status() == Some(403) => match client.revision(repo, "main") {
            Ok(_) => Ok(false),
            Err(_) => Err(hub(e)),
        },
        Err(e) => Err(hub(e)),
    }
}

/// Asks the Hub how to upload each file; returns the paths that differ from the
/// revision (the ones to commit).
fn preupload(
    client: &HubClient,
    repo: &str,
    plan: &mut Plan,
    opts: &UploadOptions,
    report: &mut UploadReport,
) -> Result<HashSet<String>> {
    let engine = base64::engine::general_purpose::STANDARD;
    let offers: Vec<PreuploadFile> = plan
        .files
        .iter()
        .map(|f| PreuploadFile {
            path: f.path_in_repo.clone(),
            sample: engine.encode(&f.sample),
            size: f.size,
        })
        .collect();
    let answers = client
        .preupload(repo, &opts.revision, &offers, opts.create_pr)
        .map_err(hub)?;
    let by_path: BTreeMap<&str, _> = answers.iter().map(|a| (a.path.as_str(), a)).collect();
    let mut changed = HashSet::new();
    for f in &mut plan.files {
        let answer = by_path.get(f.path_in_repo.as_str()).ok_or_else(|| {
            hub(HubError::Protocol {
                what: "preupload".into(),
                message: format!("no answer for {}", f.path_in_repo),
            })
        })?;
        if answer.should_ignore {
            tracing::warn!("{}: ignored by the repository's .gitignore", f.path_in_repo);
            continue;
        }
        // Empty files cannot go through LFS (huggingface_hub commits them inline).
        f.mode = match answer.upload_mode.as_str() {
            _ if f.size == 0 => UploadMode::Regular,
            "lfs" => UploadMode::Lfs,
            "regular" => UploadMode::Regular,
            other => {
                return Err(hub(HubError::Protocol {
                    what: "preupload".into(),
                    message: format!("{}: unknown upload mode {other:?}", f.path_in_repo),
                }))
            }
        };
        if answer.oid.is_some() && answer.oid.as_deref() == local_oid(f)?.as_deref() {
            report.unchanged.push(f.path_in_repo.clone());
        } else {
            changed.insert(f.path_in_repo.clone());
        }
    }
    Ok(changed)
}

/// The id the Hub gives a file: sha256 for LFS, the git blob sha1 for regular files.
fn local_oid(f: &mut PlanFile) -> Result<Option<String>> {
    Ok(match f.mode {
        UploadMode::Lfs => Some(f.sha256.clone()),
        UploadMode::Regular => {
            if f.git_oid.is_none() {
                let bytes = crate::error::read_file(&f.source)?;
                f.git_oid = Some(git_blob_id(&bytes));
            }
            f.git_oid.clone()
        }
    })
}

/// Git's id of a blob: sha1 of `blob <len>\0` and the content.
pub(crate) fn git_blob_id(content: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    format!("{:x}", h.finalize())
}

/// Uploads the LFS objects the Hub does not have yet.
fn upload_lfs(
    client: &HubClient,
    repo: &str,
    revision: &str,
    files: &[&PlanFile],
    progress: &progress::Shared,
    report: &mut UploadReport,
) -> Result<()> {
    // Two paths with the same content are one object.
    let mut objects: BTreeMap<&str, &PlanFile> = BTreeMap::new();
    for f in files.iter().filter(|f| f.mode == UploadMode::Lfs) {
        objects.entry(f.sha256.as_str()).or_insert(f);
    }
    let list: Vec<&PlanFile> = objects.values().copied().collect();
    for chunk in list.chunks(256) {
        let request: Vec<LfsObject> = chunk
            .iter()
            .map(|f| LfsObject {
                oid: f.sha256.clone(),
                size: f.size,
            })
            .collect();
        let batch = client.lfs_batch(repo, revision, &request).map_err(hub)?;
        let mut to_send = Vec::new();
        for f in chunk {
            let answer = batch
                .objects
                .iter()
                .find(|o| o.oid == f.sha256)
                .ok_or_else(|| {
                    hub(HubError::Protocol {
                        what: "LFS batch".into(),
                        message: format!("no answer for {} ({})", f.path_in_repo, f.sha256),
                    })
                })?;
            if let Some(err) = &answer.error {
                return Err(Error::network(format!(
                    "LFS batch: the Hub refused {} ({}): {} (code {})",
                    f.path_in_repo, f.sha256, err.message, err.code
                )));
            }
            match &answer.actions {
                Some(actions) if actions.upload.is_some() => to_send.push((*f, actions.clone())),
                _ => report.already_on_hub.push(f.path_in_repo.clone()),
            }
        }
        let total = to_send.iter().map(|(f, _)| f.size).sum();
        let mut done = 0;
        for (f, actions) in to_send {
            progress.start(
                &format!("uploading {}", f.path_in_repo),
                Unit::Bytes,
                total,
                done,
            );
            done += f.size;
            let object = LocalObject {
                name: f.path_in_repo.clone(),
                path: f.source.clone(),
                oid: f.sha256.clone(),
                size: f.size,
            };
            lfs::upload(client, &object, &actions, progress).map_err(hub)?;
            report.uploaded.push(f.path_in_repo.clone());
        }
    }
    Ok(())
}

/// The NDJSON body of a commit of `files` on top of `parent`.
fn commit_body(files: &[&PlanFile], parent: &str, opts: &UploadOptions) -> Result<Vec<u8>> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut lines = vec![serde_json::json!({
        "key": "header",
        "value": {
            "summary": opts.commit_message,
            "description": opts.commit_description,
            "parentCommit": parent,
        },
    })];
    for f in files {
        lines.push(match f.mode {
            UploadMode::Regular => serde_json::json!({
                "key": "file",
                "value": {
                    "content": engine.encode(crate::error::read_file(&f.source)?),
                    "path": f.path_in_repo,
                    "encoding": "base64",
                },
            }),
            UploadMode::Lfs => serde_json::json!({
                "key": "lfsFile",
                "value": {"path": f.path_in_repo, "algo": "sha256", "oid": f.sha256, "size": f.size},
            }),
        });
    }
    let mut body = Vec::new();
    for line in lines {
        serde_json::to_writer(&mut body, &line).expect("JSON");
        body.push(b'\n');
    }
    Ok(body)
}

/// True when `rev` holds exactly the content of `files`.
fn holds(rev: &RevisionInfo, files: &[&PlanFile]) -> bool {
    files.iter().all(|f| {
        rev.siblings.iter().any(|s| {
            s.rfilename == f.path_in_repo
                && match (&s.lfs, f.mode) {
                    (Some(lfs), UploadMode::Lfs) => lfs.sha256 == f.sha256 && lfs.size == f.size,
                    (None, UploadMode::Regular) => s.blob_id.is_some() && s.blob_id == f.git_oid,
                    _ => false,
                }
        })
    })
}

fn commit(
    client: &HubClient,
    repo: &str,
    files: &[&PlanFile],
    head: &RevisionInfo,
    opts: &UploadOptions,
    report: &mut UploadReport,
) -> Result<()> {
    let body = commit_body(files, &head.sha, opts)?;
    let retry = client.retry_policy();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let err = match client.commit(repo, &opts.revision, body.clone(), opts.create_pr) {
            Ok(done) => {
                report.outcome = Outcome::Committed;
                report.commit_oid = Some(done.commit_oid);
                report.commit_url = Some(done.commit_url);
                report.pull_request_url = done.pull_request_url;
                return Ok(());
            }
            Err(CommitFailure::Refused(e)) => return Err(hub(e)),
            Err(CommitFailure::Unknown(e)) => e,
        };
        if opts.create_pr {
            return Err(Error::network(format!(
                "{err}; the pull request may or may not have been opened: look at {}/{repo}/discussions before rerunning",
                client.endpoint()
            )));
        }
        let now = client.revision(repo, &opts.revision).map_err(|e| {
            Error::network(format!(
                "{err}; then {e}: the commit may or may not exist. Rerun: files already \
                 committed are found identical and not committed twice"
            ))
        })?;
        if now.sha != head.sha {
            if holds(&now, files) {
                tracing::warn!("{err}; the commit exists all the same ({})", now.sha);
                report.outcome = Outcome::CommittedAnswerLost;
                report.commit_url =
                    Some(format!("{}/{repo}/commit/{}", client.endpoint(), now.sha));
                report.commit_oid = Some(now.sha);
                return Ok(());
            }
            return Err(Error::network(format!(
                "{err}; {repo}@{} moved from {} to {}, which does not hold these files: \
                 not retried, check the repository and rerun",
                opts.revision, head.sha, now.sha
            )));
        }
        if attempt > retry.max_retries {
            return Err(Error::network(format!(
                "{err}; the branch is unchanged, so nothing was committed; rerun the release"
            )));
        }
        // Still at the parent: the commit did not happen. Sending it again is safe, as
        // the Hub refuses a commit whose parent is no longer the head.
        tracing::warn!("{err}; nothing was committed, sending the commit again");
        std::thread::sleep(retry.backoff(attempt));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_ids_are_gits() {
        // `printf 'hello\n' | git hash-object --stdin`, and the empty blob.
        assert_eq!(
            git_blob_id(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(git_blob_id(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
    }
}

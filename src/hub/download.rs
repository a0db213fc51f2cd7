//! One file of a revision into the cache: resumed where a broken transfer stopped,
//! checked against the digest the Hub announced, then moved into place.
//!
//! Bytes grow in `blobs/<etag>.incomplete`; a dropped connection, a crash or a
//! `kill -9` leaves them there, and the next attempt asks for the rest with a `Range`
//! request. Only a file whose sha256 (LFS) or git blob id (regular files) is the one
//! the tree listing gave becomes `blobs/<etag>`, so a truncated or corrupted transfer
//! is never read as weights. A lock file keeps two processes on one machine (shards
//! sharing a cache) from writing one blob at once.

use super::cache::HubCache;
use super::client::{HubClient, HubError};
use super::models::{FileEntry, HubRevision};
use crate::error::{Error, Result};
use crate::progress::{Progress, Unit};
use reqwest::Method;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes moved per read from the network.
const CHUNK: usize = 1 << 20;

/// Downloads `entry` of `repo` at `commit` unless its blob is cached; returns the blob.
pub(super) fn fetch_blob(
    client: &HubClient,
    cache: &HubCache,
    rev: &HubRevision,
    entry: &FileEntry,
    transfer: &dyn Progress,
) -> Result<PathBuf> {
    let repo = &rev.source.repo;
    let etag = entry.etag();
    let blob = cache.blob(repo, etag);
    if blob.is_file() {
        return Ok(blob);
    }
    let lock_path = cache.lock_file(repo, etag);
    let lock = open_lock(&lock_path)?;
    fs4::FileExt::lock(&lock).map_err(|e| Error::io(&lock_path, e))?;
    // Another process may have finished it while we waited for the lock.
    if blob.is_file() {
        return Ok(blob);
    }
    let partial = cache.incomplete(repo, etag);
    // By commit: a branch that moves during the download cannot mix two versions.
    let blobs = crate::error::parent_dir(&partial);
    std::fs::create_dir_all(blobs).map_err(|e| Error::io(blobs, e))?;
    let url = format!(
        "{}/{}{}/resolve/{}/{}",
        client.endpoint(),
        cache.kind().url_prefix(),
        rev.source.repo,
        rev.commit,
        quote_path(&entry.path)
    );
    transfer_resuming(client, rev, entry, &url, &partial, transfer)?;
    verify(entry, &partial)?;
    std::fs::rename(&partial, &blob).map_err(|e| Error::io(&blob, e))?;
    Ok(blob)
}

fn open_lock(path: &Path) -> Result<std::fs::File> {
    let dir = crate::error::parent_dir(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Appends to `partial` until it holds `entry.size` bytes, asking each time for the
/// bytes it lacks. A transfer that breaks after making progress is resumed at once;
/// one that makes none counts against the client's retry policy.
fn transfer_resuming(
    client: &HubClient,
    rev: &HubRevision,
    entry: &FileEntry,
    url: &str,
    partial: &Path,
    transfer: &dyn Progress,
) -> Result<()> {
    let what = format!("downloading {} of {}", entry.path, rev.source);
    let policy = client.retry_policy();
    let mut failures = 0;
    if !partial.exists() {
        truncate(partial)?;
    }
    let mut have = file_len(partial);
    if have > entry.size {
        // Not a prefix of this file: start over.
        truncate(partial)?;
        have = 0;
    }
    transfer.start(
        &format!("downloading {}", entry.path),
        Unit::Bytes,
        entry.size,
        have,
    );
    while have < entry.size {
        let before = have;
        match transfer_once(client, &what, url, partial, have, transfer) {
            Ok(n) => have = n,
            Err(e) if failures < policy.max_retries => {
                have = file_len(partial);
                tracing::warn!(
                    "{e}; resuming at byte {have} of {} ({}/{})",
                    entry.size,
                    failures + 1,
                    policy.max_retries
                );
            }
            Err(e) => return Err(e.into()),
        }
        if have > before {
            failures = 0;
        } else {
            failures += 1;
            if failures > policy.max_retries {
                return Err(Error::network(format!(
                    "{what}: no progress after {} attempts",
                    policy.max_retries
                )));
            }
            std::thread::sleep(policy.backoff(failures));
        }
    }
    Ok(())
}

/// One request for the bytes from `from` on, appended to `partial` as they arrive;
/// returns the length reached.
fn transfer_once(
    client: &HubClient,
    what: &str,
    url: &str,
    partial: &Path,
    from: u64,
    transfer: &dyn Progress,
) -> std::result::Result<u64, HubError> {
    let mut resp = client.send(what, &mut || {
        let req = client
            .request(Method::GET, url)
            .timeout(Duration::from_secs(24 * 3600));
        Ok(if from > 0 {
            req.header(reqwest::header::RANGE, format!("bytes={from}-"))
        } else {
            req
        })
    })?;
    let local = |e: std::io::Error| HubError::Local(format!("{}: {e}", partial.display()));
    // A server that ignores the range sends the whole file again.
    let resumed = resp.status().as_u16() == 206;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(resumed)
        .write(true)
        .truncate(!resumed)
        .open(partial)
        .map_err(local)?;
    let mut have = if resumed { from } else { 0 };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                file.flush().map_err(local)?;
                return Err(HubError::Transport {
                    what: what.to_string(),
                    message: format!("connection broken after {have} bytes: {e}"),
                });
            }
        };
        file.write_all(&buf[..n]).map_err(local)?;
        have += n as u64;
        transfer.advance(n as u64);
    }
    file.flush().map_err(local)?;
    Ok(have)
}

/// Checks the finished file against the digest the Hub announced for it.
fn verify(entry: &FileEntry, file: &Path) -> Result<()> {
    let got = match &entry.lfs_sha256 {
        Some(_) => digest_file::<Sha256>(file, None)?,
        None => digest_file::<Sha1>(file, Some(entry.size))?,
    };
    if got == entry.etag() {
        return Ok(());
    }
    // A corrupt transfer must not be resumed from: the next attempt starts over.
    let _ = std::fs::remove_file(file);
    Err(Error::network(format!(
        "{}: the downloaded bytes do not match the Hub's digest ({} expected, {got} received); removed, rerun to download again",
        entry.path,
        entry.etag()
    )))
}

/// The hex digest of `file`; with `git_blob_len`, as git hashes a blob of that length.
fn digest_file<D: Digest>(file: &Path, git_blob_len: Option<u64>) -> Result<String> {
    let mut hasher = D::new();
    if let Some(len) = git_blob_len {
        hasher.update(format!("blob {len}\0").as_bytes());
    }
    let mut f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(file, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn truncate(path: &Path) -> Result<()> {
    std::fs::File::create(path)
        .map(|_| ())
        .map_err(|e| Error::io(path, e))
}

/// A repository path in a URL: each segment quoted, the slashes kept.
pub(super) fn quote_path(path: &str) -> String {
    path.split('/')
        .map(super::repo_id::quote_revision)
        .collect::<Vec<_>>()
        .join("/")
}

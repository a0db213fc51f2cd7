//! Git LFS uploads the way the Hub hands them out in its batch answers:
//!
//! - basic: one `PUT` of the whole file to `upload.href`;
//! - multipart (the Hub's extension): `upload.header` holds `chunk_size` and one URL
//!   per part number; each part is `PUT` and answers with an `ETag`, then a `POST` of
//!   `{oid, parts: [{partNumber, etag}]}` to `upload.href` completes the object;
//! - then, when the answer has one, `POST {oid, size}` to `verify.href`.
//!
//! Bodies stream from disk in fixed-size reads (memory stays flat whatever the file
//! size) and are hashed as they go out: an object whose bytes no longer hash to the
//! oid announced (the file changed after planning) fails before it is completed,
//! verified or committed. Each request is retried on its own, so a failed part is
//! sent again, not the whole file.

use crate::hub::client::{BatchActions, HubClient, HubError, LfsAction, LFS_MEDIA_TYPE};
use crate::progress;
use reqwest::blocking::Body;
use reqwest::Method;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A local file to upload as the LFS object `oid` (sha256, hex).
#[derive(Debug, Clone)]
pub(crate) struct LocalObject {
    /// How messages name it (its path in the repository).
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) oid: String,
    pub(crate) size: u64,
}

/// Uploads `object` following `actions` (which must have an upload action), then
/// verifies it. `progress` advances by the bytes sent.
pub fn upload(
    client: &HubClient,
    object: &LocalObject,
    actions: &BatchActions,
    progress: &progress::Shared,
) -> Result<(), HubError> {
    let Some(upload) = &actions.upload else {
        return Ok(());
    };
    match upload.header.get("chunk_size") {
        Some(chunk) => {
            let chunk: u64 = chunk.parse().ok().filter(|&c| c > 0).ok_or_else(|| {
                protocol(
                    &object.name,
                    format!("chunk_size {chunk:?} is not a positive integer"),
                )
            })?;
            upload_multipart(client, object, upload, chunk, progress)?;
        }
        None => upload_basic(client, object, upload, progress)?,
    }
    if let Some(verify) = &actions.verify {
        verify_object(client, object, verify)?;
    }
    Ok(())
}

fn protocol(name: &str, message: String) -> HubError {
    HubError::Protocol {
        what: format!("uploading {name}"),
        message,
    }
}

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Arc<Mutex<Sha256>>,
    progress: progress::Shared,
    /// Bytes counted by this attempt, to take back if it is retried.
    counted: Arc<AtomicU64>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.lock().expect("hasher lock").update(&buf[..n]);
        self.progress.advance(n as u64);
        self.counted.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Time allowed for sending `len` bytes: generous, but a stalled upload ends.
fn transfer_timeout(len: u64) -> Duration {
    Duration::from_secs(300 + len / (256 * 1024))
}

/// Opens `path` at `offset`, limited to `len` bytes.
fn open_slice(path: &Path, offset: u64, len: u64) -> Result<std::io::Take<File>, HubError> {
    let local = |e: std::io::Error| HubError::Local(format!("{}: {e}", path.display()));
    let mut file = File::open(path).map_err(local)?;
    file.seek(SeekFrom::Start(offset)).map_err(local)?;
    Ok(file.take(len))
}

/// The action's headers, less the multipart bookkeeping entries.
fn plain_headers(action: &LfsAction) -> impl Iterator<Item = (&String, &String)> {
    action
        .header
        .iter()
        .filter(|(k, _)| k.as_str() != "chunk_size" && !k.chars().all(|c| c.is_ascii_digit()))
}

/// Sends `[offset, offset + len)` of the file to `url` by `PUT`, hashing into `hasher`
/// (restored to `before` on each retry) and returning the response's `ETag`.
#[allow(clippy::too_many_arguments)]
fn put_slice(
    client: &HubClient,
    what: &str,
    url: &str,
    action: &LfsAction,
    object: &LocalObject,
    (offset, len): (u64, u64),
    hasher: &Arc<Mutex<Sha256>>,
    progress: &progress::Shared,
) -> Result<Option<String>, HubError> {
    let before = hasher.lock().expect("hasher lock").clone();
    let counted = Arc::new(AtomicU64::new(0));
    let resp = client.send(what, &mut || {
        *hasher.lock().expect("hasher lock") = before.clone();
        progress.rewind(counted.swap(0, Ordering::Relaxed));
        let reader = HashingReader {
            inner: open_slice(&object.path, offset, len)?,
            hasher: Arc::clone(hasher),
            progress: Arc::clone(progress),
            counted: Arc::clone(&counted),
        };
        let mut req = client
            .request(Method::PUT, url)
            .body(Body::sized(reader, len))
            .timeout(transfer_timeout(len));
        for (k, v) in plain_headers(action) {
            req = req.header(k.as_str(), v.as_str());
        }
        Ok(req)
    })?;
    Ok(resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(String::from))
}

/// Fails unless what was sent hashes to the announced oid.
fn check_hash(object: &LocalObject, hasher: &Arc<Mutex<Sha256>>) -> Result<(), HubError> {
    let sent = format!(
        "{:x}",
        hasher.lock().expect("hasher lock").clone().finalize()
    );
    if sent != object.oid {
        return Err(HubError::Local(format!(
            "{} ({}): the file changed while it was being uploaded (sha256 {sent}, planned {}); \
             nothing was committed, rerun the release",
            object.name,
            object.path.display(),
            object.oid
        )));
    }
    Ok(())
}

fn upload_basic(
    client: &HubClient,
    object: &LocalObject,
    action: &LfsAction,
    progress: &progress::Shared,
) -> Result<(), HubError> {
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let what = format!("uploading {}", object.name);
    put_slice(
        client,
        &what,
        &action.href,
        action,
        object,
        (0, object.size),
        &hasher,
        progress,
    )?;
    check_hash(object, &hasher)
}

/// The part URLs of a multipart action, in part order.
fn part_urls(action: &LfsAction) -> Vec<(u32, &str)> {
    let mut parts: Vec<(u32, &str)> = action
        .header
        .iter()
        .filter_map(|(k, v)| Some((k.parse::<u32>().ok()?, v.as_str())))
        .collect();
    parts.sort_unstable();
    parts
}

fn upload_multipart(
    client: &HubClient,
    object: &LocalObject,
    action: &LfsAction,
    chunk: u64,
    progress: &progress::Shared,
) -> Result<(), HubError> {
    let parts = part_urls(action);
    let expected = object.size.div_ceil(chunk);
    if parts.len() as u64 != expected
        || parts.iter().enumerate().any(|(i, p)| p.0 as usize != i + 1)
    {
        return Err(protocol(
            &object.name,
            format!(
                "{} part URLs for {} bytes in chunks of {chunk} (expected parts 1..={expected})",
                parts.len(),
                object.size
            ),
        ));
    }
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let mut etags = Vec::with_capacity(parts.len());
    for (number, url) in parts {
        let offset = (number as u64 - 1) * chunk;
        let len = chunk.min(object.size - offset);
        let what = format!("uploading part {number}/{expected} of {}", object.name);
        let etag = put_slice(
            client,
            &what,
            url,
            action,
            object,
            (offset, len),
            &hasher,
            progress,
        )?
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            protocol(
                &object.name,
                format!("part {number} answered without an ETag"),
            )
        })?;
        etags.push(serde_json::json!({"partNumber": number, "etag": etag}));
    }
    check_hash(object, &hasher)?;
    let body = serde_json::json!({"oid": object.oid, "parts": etags});
    let what = format!("completing the upload of {}", object.name);
    client.send(&what, &mut || {
        Ok(client
            .request(Method::POST, &action.href)
            .header(reqwest::header::ACCEPT, LFS_MEDIA_TYPE)
            .header(reqwest::header::CONTENT_TYPE, LFS_MEDIA_TYPE)
            .body(serde_json::to_vec(&body).expect("JSON"))
            .timeout(Duration::from_secs(600)))
    })?;
    Ok(())
}

fn verify_object(
    client: &HubClient,
    object: &LocalObject,
    verify: &LfsAction,
) -> Result<(), HubError> {
    let body = serde_json::json!({"oid": object.oid, "size": object.size});
    let what = format!("verifying the upload of {}", object.name);
    client.send(&what, &mut || {
        let mut req = client
            .request(Method::POST, &verify.href)
            .header(reqwest::header::ACCEPT, LFS_MEDIA_TYPE)
            .header(reqwest::header::CONTENT_TYPE, LFS_MEDIA_TYPE)
            .body(serde_json::to_vec(&body).expect("JSON"))
            .timeout(Duration::from_secs(120));
        for (k, v) in &verify.header {
            req = req.header(k.as_str(), v.as_str());
        }
        Ok(req)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_no_longer_hash_to_the_oid_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        std::fs::write(&path, b"planned").unwrap();
        let oid = format!("{:x}", Sha256::digest(b"planned"));
        let object = LocalObject {
            name: "w.bin".into(),
            path: path.clone(),
            oid,
            size: 7,
        };
        let send = |object: &LocalObject| {
            let hasher = Arc::new(Mutex::new(Sha256::new()));
            let mut reader = HashingReader {
                inner: open_slice(&object.path, 0, object.size).unwrap(),
                hasher: Arc::clone(&hasher),
                progress: progress::silent(),
                counted: Arc::default(),
            };
            std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
            check_hash(object, &hasher)
        };
        assert!(send(&object).is_ok());
        std::fs::write(&path, b"changed").unwrap();
        let err = send(&object).unwrap_err().to_string();
        assert!(
            err.contains("w.bin") && err.contains("changed while it was being uploaded"),
            "{err}"
        );
    }

    #[test]
    fn parts_are_ordered_by_number_not_by_text() {
        let mut header = std::collections::BTreeMap::new();
        for n in [10, 2, 1, 3, 4, 5, 6, 7, 8, 9] {
            header.insert(n.to_string(), format!("u{n}"));
        }
        header.insert("chunk_size".into(), "5".into());
        let action = LfsAction {
            href: "x".into(),
            header,
        };
        let numbers: Vec<u32> = part_urls(&action).iter().map(|p| p.0).collect();
        assert_eq!(numbers, (1..=10).collect::<Vec<_>>());
        assert_eq!(plain_headers(&action).count(), 0);
    }
}

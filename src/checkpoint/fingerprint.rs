//! Content fingerprints of checkpoint weights.
//!
//! A checkpoint's identity in the results store is a hash of its tensors (names, dtypes,
//! shapes and bytes, in name order), not its path: a moved, copied or re-sharded
//! checkpoint keeps its fingerprint and is not scored twice. Hashing a 16 GB checkpoint
//! takes seconds, so results are cached per directory, keyed by the weight files'
//! sizes and modification times.

use super::weights::WeightFiles;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Tensors larger than this are hashed on all cores.
const PARALLEL_HASH_BYTES: usize = 1 << 20;

/// BLAKE3 of the checkpoint's tensors, as 64 hex digits. Safetensors and `.bin` weights
/// both give each tensor's contiguous little-endian bytes and its safetensors dtype, so
/// converting a checkpoint from one format to the other keeps its fingerprint.
pub fn hash_weights(weights: &WeightFiles) -> String {
    let mut hasher = blake3::Hasher::new();
    for (name, stored) in weights.tensors() {
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(format!("{:?}", stored.dtype).as_bytes());
        hasher.update(&(stored.shape.len() as u64).to_le_bytes());
        for d in &stored.shape {
            hasher.update(&(*d as u64).to_le_bytes());
        }
        let bytes = weights.raw_bytes(&name).unwrap_or_default();
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        if bytes.len() > PARALLEL_HASH_BYTES {
            hasher.update_rayon(bytes);
        } else {
            hasher.update(bytes);
        }
    }
    hasher.finalize().to_hex().to_string()
}

/// What the weight files looked like when they were hashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FileStamp {
    path: PathBuf,
    len: u64,
    modified_ns: u128,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    files: Vec<FileStamp>,
    fingerprint: String,
}

/// Where `ckpt` keeps caches: `$CKPT_CACHE_DIR`, else the user cache dir + `ckpt`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CKPT_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("ckpt")
}

fn stamps(paths: &[&Path]) -> Option<Vec<FileStamp>> {
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            let modified = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
            Some(FileStamp {
                path: std::fs::canonicalize(p).ok()?,
                len: meta.len(),
                modified_ns: modified.as_nanos(),
            })
        })
        .collect()
}

/// The fingerprint of the weights in `dir`, from the cache when the files are unchanged.
pub fn fingerprint(dir: &Path, weights: &WeightFiles) -> Result<String> {
    let cache_file = cache_dir().join("fingerprints.json");
    let key = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string();
    let now = stamps(&weights.paths());
    // A corrupt or unreadable cache is only a cache: start over.
    let mut cache: BTreeMap<String, CacheEntry> = std::fs::read(&cache_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let (Some(entry), Some(now)) = (cache.get(&key), &now) {
        if &entry.files == now {
            return Ok(entry.fingerprint.clone());
        }
    }
    let fingerprint = hash_weights(weights);
    if let Some(files) = now {
        cache.insert(
            key,
            CacheEntry {
                files,
                fingerprint: fingerprint.clone(),
            },
        );
        // Failing to cache must not fail the command (read-only home, full disk).
        if let Err(e) = crate::atomic_file::write_json(&cache_file, &cache) {
            tracing::warn!("cannot update the fingerprint cache: {e}");
        }
    }
    Ok(fingerprint)
}

//! Many revisions within a disk budget: while revision *k* is scored, revision *k+1*
//! downloads in the background, and weights fetched only for this sweep are removed
//! once the command has stored what it needs from them.
//!
//! The budget bounds the bytes this sweep has downloaded and not yet removed: the
//! revision in use plus the one prefetched. A prefetch that would pass it waits until
//! the revision in use is released; a revision larger than the budget alone is an
//! error naming both. Files that were in the cache before the sweep are never
//! removed, and `--keep-downloads` keeps everything (no budget then).

use super::models::{Downloaded, Fetched, FileEntry, Hub, HubRevision};
use crate::error::{Error, Result};
use crate::progress::{Progress, Silent};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

/// The default budget of a sweep: 50 GB.
pub const DEFAULT_BUDGET: u64 = 50_000_000_000;

/// What to keep on disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retention {
    /// Keep every download.
    KeepAll,
    /// Remove weights fetched for the sweep once used; at most this many bytes of them
    /// on disk at once.
    Budget(u64),
}

struct Prefetch {
    index: usize,
    bytes: u64,
    handle: JoinHandle<Result<Fetched>>,
}

/// The downloads of one sweep, by the index of the revision in the sweep.
pub struct Downloads {
    hub: Hub,
    retention: Retention,
    transfer: Arc<dyn Progress + Send + Sync>,
    prefetch: Option<Prefetch>,
    /// Files fetched for revisions still in use, and not in the cache before.
    held: BTreeMap<usize, Vec<Downloaded>>,
}

impl Downloads {
    pub fn new(hub: Hub, retention: Retention, transfer: Arc<dyn Progress + Send + Sync>) -> Self {
        Self {
            hub,
            retention,
            transfer,
            prefetch: None,
            held: BTreeMap::new(),
        }
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    fn held_bytes(&self) -> u64 {
        let held: u64 = self.held.values().flatten().map(|d| d.bytes).sum();
        held + self.prefetch.as_ref().map_or(0, |p| p.bytes)
    }

    fn fits(&self, bytes: u64) -> bool {
        match self.retention {
            Retention::KeepAll => true,
            Retention::Budget(budget) => self.held_bytes() + bytes <= budget,
        }
    }

    /// Revision `index`'s snapshot, with `files` in it: the prefetched one, or
    /// downloaded now.
    pub(crate) fn get(
        &mut self,
        index: usize,
        rev: &HubRevision,
        files: &[FileEntry],
    ) -> Result<PathBuf> {
        if self.hub.is_offline() {
            return self.hub.materialize(rev, &Silent);
        }
        let fetched = match self.prefetch.take() {
            Some(p) if p.index == index => join(p)?,
            other => {
                // A prefetch of another revision (a sweep that skipped ahead) finishes
                // first and is kept until released.
                if let Some(p) = other {
                    let i = p.index;
                    if let Ok(f) = join(p) {
                        self.held.insert(i, f.downloaded);
                    }
                }
                let bytes = self.hub.missing_bytes(rev, files);
                if let (Retention::Budget(budget), false) = (self.retention, self.fits(bytes)) {
                    return Err(Error::bad_value("--cache-budget", format!(
                        "{}: needs {} of downloads, more than --cache-budget {} allows beside the {} already held; raise it or use --keep-downloads",
                        rev.source,
                        human(bytes),
                        human(budget),
                        human(self.held_bytes())
                    )));
                }
                self.hub.fetch(rev, files, self.transfer.as_ref())?
            }
        };
        self.held.insert(index, fetched.downloaded);
        Ok(fetched.dir)
    }

    /// Starts downloading revision `index` in the background, if the budget allows it
    /// beside what is held.
    pub(crate) fn prefetch(&mut self, index: usize, rev: &HubRevision, files: &[FileEntry]) {
        if self.prefetch.is_some() || self.hub.is_offline() {
            return;
        }
        let bytes = self.hub.missing_bytes(rev, files);
        if bytes == 0 || !self.fits(bytes) {
            return;
        }
        tracing::info!(
            "downloading {} ({}) in the background",
            rev.source,
            human(bytes)
        );
        let (hub, rev, files) = (self.hub.clone(), rev.clone(), files.to_vec());
        let handle = std::thread::spawn(move || hub.fetch(&rev, &files, &Silent));
        self.prefetch = Some(Prefetch {
            index,
            bytes,
            handle,
        });
    }

    /// Revision `index` is done with: the weights fetched for it are removed (unless
    /// everything is kept).
    pub(crate) fn release(&mut self, index: usize) {
        let Some(files) = self.held.remove(&index) else {
            return;
        };
        if self.retention == Retention::KeepAll {
            return;
        }
        for d in files.iter().filter(|d| d.is_weights()) {
            for path in [&d.link, &d.blob] {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!("cannot remove {}: {e}", path.display());
                }
            }
        }
    }

    /// Waits for a background download still running (its files stay in the cache).
    pub(crate) fn finish(&mut self) {
        if let Some(p) = self.prefetch.take() {
            let i = p.index;
            if let Ok(f) = join(p) {
                self.held.insert(i, f.downloaded);
            }
        }
        let held: Vec<usize> = self.held.keys().copied().collect();
        for i in held {
            self.release(i);
        }
    }
}

impl Drop for Downloads {
    fn drop(&mut self) {
        self.finish();
    }
}

fn join(p: Prefetch) -> Result<Fetched> {
    p.handle
        .join()
        .unwrap_or_else(|_| Err(Error::Invalid("a background download panicked".into())))
}

/// Bytes for people: `1.5 GB`, `320 MB`, `12 kB`, `7 B` (decimal units, as the Hub).
pub(crate) fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

/// Reads a size: `50GB`, `1.5 GiB`, `500MB`, `64kB`, `1000` (bytes).
pub(crate) fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (as in 50GB, 500MiB, 1000)"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024f64.powi(4),
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    let bytes = (value * scale).round();
    if bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is more bytes than can be counted"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_and_print() {
        assert_eq!(parse_size("50GB"), Ok(50_000_000_000));
        assert_eq!(parse_size("1.5 GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("300kB"), Ok(300_000));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert_eq!(human(1_234_567), "1.2 MB");
        assert_eq!(human(999), "999 B");
    }
}

//! `demo.json`: which stages of a demo folder are finished, so that a rerun (after
//! Ctrl-C, a full disk, a crash) skips them and resumes the interrupted one, whose own
//! command resumes from its checkpoints and the store.

use super::plan::Size;
use crate::atomic_file;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The ledger's file name inside the demo folder.
pub const LEDGER_FILE: &str = "demo.json";

/// The paths the demo writes inside its folder: `--force` removes these and nothing else.
pub const DEMO_PATHS: &[&str] = &[
    LEDGER_FILE,
    "data",
    "tokenizer",
    "recipes",
    "runs",
    "logs",
    "report",
    "release",
    "alpaca_eval",
    "sharpness.jsonl",
    "spectrum.jsonl",
    "sharpness.progress.jsonl",
    "ckpt.sqlite",
    "ckpt.sqlite-wal",
    "ckpt.sqlite-shm",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ledger {
    pub(crate) size: Size,
    /// The seed of the world and of every run (`--seed`).
    #[serde(default)]
    pub(crate) seed: u64,
    pub(crate) ckpt_version: String,
    /// Finished stages and the seconds each took.
    pub(crate) stages: BTreeMap<String, f64>,
    #[serde(skip)]
    path: PathBuf,
}

/// What to do with the output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Fresh,
    Resume,
}

impl Ledger {
    /// Opens the demo folder `dir` for a run of `size`: a new or empty folder starts
    /// fresh; a demo folder of the same size resumes; anything else is refused unless
    /// `force` (which removes a previous demo's files, and writes beside other files).
    pub fn open(dir: &Path, size: Size, seed: u64, force: bool) -> Result<(Ledger, Start)> {
        let path = dir.join(LEDGER_FILE);
        let fresh = Ledger {
            size,
            seed,
            ckpt_version: crate::VERSION.to_string(),
            stages: BTreeMap::new(),
            path: path.clone(),
        };
        if !dir.exists() || is_empty_dir(dir)? {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            return Ok((fresh, Start::Fresh));
        }
        if !dir.is_dir() {
            return Err(Error::bad_file(dir, "exists and is not a directory"));
        }
        if !path.is_file() {
            if force {
                return Ok((fresh, Start::Fresh));
            }
            return Err(Error::bad_file(
                dir,
                "exists and is not a ckpt demo folder (no demo.json); choose another --out, \
                 or pass --force to write into it",
            ));
        }
        let previous = read(&path)?;
        if force {
            remove_demo_paths(dir)?;
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            return Ok((fresh, Start::Fresh));
        }
        if previous.size != size {
            return Err(Error::bad_file(
                dir,
                format!(
                    "holds a --size {} demo; run with --size {} to resume it, or --force to \
                     start over at --size {}",
                    previous.size.name(),
                    previous.size.name(),
                    size.name()
                ),
            ));
        }
        if previous.seed != seed {
            return Err(Error::bad_file(
                dir,
                format!(
                    "holds a --seed {} demo; run with --seed {} to resume it, or --force to \
                     start over with --seed {seed}",
                    previous.seed, previous.seed
                ),
            ));
        }
        Ok((Ledger { path, ..previous }, Start::Resume))
    }

    pub fn is_done(&self, stage: &str) -> bool {
        self.stages.contains_key(stage)
    }

    /// Records a finished stage (written at once, atomically).
    pub fn finish(&mut self, stage: &str, seconds: f64) -> Result<()> {
        self.stages.insert(stage.to_string(), seconds);
        atomic_file::write_json(&self.path, self)
    }
}

fn read(path: &Path) -> Result<Ledger> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut ledger: Ledger = serde_json::from_slice(&bytes).map_err(|e| {
        Error::bad_file(
            path,
            format!("is not a demo ledger ({e}); pass --force to start over"),
        )
    })?;
    ledger.path = path.to_path_buf();
    Ok(ledger)
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(entries.next().is_none())
}

fn remove_demo_paths(dir: &Path) -> Result<()> {
    for name in DEMO_PATHS {
        let path = dir.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else if path.exists() {
            std::fs::remove_file(&path)
        } else {
            Ok(())
        };
        removed.map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_refuses_and_forces() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        let (mut ledger, start) = Ledger::open(&dir, Size::Tiny, 0, false).unwrap();
        assert_eq!(start, Start::Fresh);
        ledger.finish("world", 0.5).unwrap();

        let (again, start) = Ledger::open(&dir, Size::Tiny, 0, false).unwrap();
        assert_eq!(start, Start::Resume);
        assert!(again.is_done("world"));

        let err = Ledger::open(&dir, Size::Small, 0, false).unwrap_err();
        assert!(err.to_string().contains("--size tiny"), "{err}");

        std::fs::create_dir_all(dir.join("runs/wso")).unwrap();
        std::fs::write(dir.join("mine.txt"), "keep").unwrap();
        let (forced, start) = Ledger::open(&dir, Size::Small, 0, true).unwrap();
        assert_eq!(start, Start::Fresh);
        assert!(!forced.is_done("world"));
        assert!(!dir.join("runs").exists() && !dir.join(LEDGER_FILE).exists());
        assert!(
            dir.join("mine.txt").exists(),
            "--force removes only the demo's files"
        );

        let err = Ledger::open(&dir, Size::Small, 0, false).unwrap_err();
        assert!(err.to_string().contains("not a ckpt demo folder"), "{err}");
    }
}

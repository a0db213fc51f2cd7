//! What a sharpness measurement records, and the JSONL file that keeps them.
//!
//! One line per finished (checkpoint, configuration): the key is the checkpoint's
//! weight fingerprint and a hash of the configuration (the data enters by the hash of
//! its tokens, not its path), so a rerun skips what is done. The probe samples of the
//! measurement in progress are saved beside it (`<file>.progress.json`) after each
//! probe, so a killed run resumes at its last finished probe. Every write replaces the
//! file atomically.

use super::power::TopEigen;
use crate::checkpoint::ScheduleInfo;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The settings a measurement depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharpnessConfig {
    /// The text file, as given (informative: the key uses `data_hash`).
    pub data: String,
    /// BLAKE3 of the token batches.
    pub data_hash: String,
    pub seq_len: usize,
    pub batch_size: usize,
    pub batches: usize,
    pub max_batches: Option<usize>,
    pub max_texts: Option<usize>,
    pub samples: usize,
    pub seed: u64,
    /// `fd` or `exact`.
    pub method: String,
    /// Finite-difference step per probe entry (unused by `exact`).
    pub eps: f64,
    /// `f32` or `f64`.
    pub dtype: String,
    pub rel_tol: Option<f64>,
    pub min_probes: usize,
    /// Power-iteration products at most, when the top eigenvalue is asked for.
    pub top_eigen_iters: Option<usize>,
    pub top_eigen_tol: f64,
}

impl SharpnessConfig {
    /// Hash (BLAKE3, hex) of every field but `data`.
    pub fn key(&self) -> String {
        let mut value = serde_json::to_value(self).expect("serialisable");
        if let Some(map) = value.as_object_mut() {
            map.remove("data");
        }
        blake3::hash(value.to_string().as_bytes())
            .to_hex()
            .to_string()
    }
}

/// One checkpoint's sharpness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharpnessResult {
    /// The checkpoint directory (absolute).
    pub checkpoint: PathBuf,
    pub fingerprint: String,
    pub step: Option<u64>,
    /// Pre-training, mid-training or SFT, from `ckpt.json`.
    pub stage: Option<String>,
    pub schedule: Option<ScheduleInfo>,
    pub config: SharpnessConfig,
    pub config_key: String,
    /// Hutchinson's estimate of `Tr(H)`.
    pub estimate: f64,
    /// Its standard error (`None` with a single probe).
    pub stderr: Option<f64>,
    pub probes: usize,
    pub batches: usize,
    pub target_tokens: usize,
    pub parameters: usize,
    /// Every probe's `z^T H z`.
    pub samples: Vec<f64>,
    /// The estimate after each probe.
    pub running: Vec<f64>,
    pub top_eigenvalue: Option<TopEigen>,
    /// Wall time of this measurement (a resumed one: of its last part).
    pub seconds: f64,
    pub ckpt_version: String,
    /// Set on a shard's block of a checkpoint's probes (`--shard` with fewer
    /// checkpoints than shards): `samples` are probes `probe_start..` only. Blocks are
    /// joined into the whole result by the next run without `--shard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_start: Option<usize>,
}

impl SharpnessResult {
    /// Whether this is one block of a measurement, not a whole one.
    pub fn is_block(&self) -> bool {
        self.probe_start.is_some()
    }

    /// The key of the record in the store: the checkpoint, and for a block its probes.
    pub fn store_checkpoint(&self) -> String {
        match self.probe_start {
            None => self.checkpoint.display().to_string(),
            Some(a) => format!(
                "{}#probes={a}-{}",
                self.checkpoint.display(),
                a + self.samples.len()
            ),
        }
    }
}

/// Probes finished by an interrupted measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub fingerprint: String,
    pub config_key: String,
    pub samples: Vec<f64>,
}

/// The results file (JSONL) and its progress sidecar.
pub struct ResultsFile {
    path: PathBuf,
    results: Vec<SharpnessResult>,
}

impl ResultsFile {
    /// Opens `path` (a missing file is empty); a bad line is an error naming it.
    pub fn open(path: &Path) -> Result<Self> {
        let results = match std::fs::read_to_string(path) {
            Ok(text) => parse_lines(path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            results,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every result, in the order written.
    pub fn results(&self) -> &[SharpnessResult] {
        &self.results
    }

    /// The finished result for `(fingerprint, config_key)`, if any: the one recorded
    /// for `checkpoint` when there is one, else the latest.
    pub fn find(
        &self,
        checkpoint: &Path,
        fingerprint: &str,
        config_key: &str,
    ) -> Option<&SharpnessResult> {
        let mut same = self
            .results
            .iter()
            .rev()
            .filter(|r| !r.is_block())
            .filter(|r| r.fingerprint == fingerprint && r.config_key == config_key);
        let latest = same.clone().next();
        same.find(|r| r.checkpoint == checkpoint).or(latest)
    }

    /// Takes in results measured elsewhere (the results store), so they are not
    /// measured again; the file is rewritten only when a new result is appended.
    pub fn adopt(&mut self, known: Vec<SharpnessResult>) {
        for r in known {
            let seen = self.results.iter().any(|x| {
                x.fingerprint == r.fingerprint
                    && x.config_key == r.config_key
                    && x.checkpoint == r.checkpoint
                    && x.probe_start == r.probe_start
            });
            if !seen {
                self.results.push(r);
            }
        }
    }

    /// Copies every result into the results store.
    pub fn save_to_store(&self, store: &crate::store::Store) -> Result<()> {
        for r in &self.results {
            let json = serde_json::to_string(r)
                .map_err(|e| Error::Invalid(format!("cannot serialise a result: {e}")))?;
            store.put_sharpness(&crate::store::SharpnessRecord {
                fingerprint: &r.fingerprint,
                config_key: &r.config_key,
                checkpoint: &r.store_checkpoint(),
                step: r.step,
                estimate: r.estimate,
                stderr: r.stderr,
                result: &json,
            })?;
        }
        Ok(())
    }

    /// Results recorded in the store.
    pub fn from_store(store: &crate::store::Store) -> Result<Vec<SharpnessResult>> {
        store
            .sharpness_results()?
            .iter()
            .map(|j| {
                serde_json::from_str(j)
                    .map_err(|e| Error::bad_file(store.path(), format!("sharpness record: {e}")))
            })
            .collect()
    }

    /// Adds `result` and rewrites the file atomically; the progress sidecar goes.
    pub fn append(&mut self, result: SharpnessResult) -> Result<()> {
        self.results.push(result);
        let mut text = String::new();
        for r in &self.results {
            let line = serde_json::to_string(r)
                .map_err(|e| Error::Invalid(format!("cannot serialise a result: {e}")))?;
            text.push_str(&line);
            text.push('\n');
        }
        crate::atomic_file::write_bytes(&self.path, text.as_bytes())?;
        let progress = self.progress_path();
        if progress.exists() {
            std::fs::remove_file(&progress).map_err(|e| Error::io(&progress, e))?;
        }
        Ok(())
    }

    /// The probes of `(fingerprint, config_key)` that blocks measured (by shards),
    /// from probe 0 on as far as they run without a gap.
    pub fn blocks(&self, fingerprint: &str, config_key: &str) -> Vec<f64> {
        let mut blocks: Vec<&SharpnessResult> = self
            .results
            .iter()
            .filter(|r| r.is_block() && r.fingerprint == fingerprint && r.config_key == config_key)
            .collect();
        blocks.sort_by_key(|r| r.probe_start);
        let mut samples = Vec::new();
        for b in blocks {
            let start = b.probe_start.unwrap_or(0);
            if start > samples.len() {
                break;
            }
            samples.extend(b.samples.iter().skip(samples.len() - start));
        }
        samples
    }

    /// `<file>.progress.json`.
    pub fn progress_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".progress.json");
        self.path.with_file_name(name)
    }

    /// The probes an interrupted measurement of `(fingerprint, config_key)` finished.
    pub fn progress(&self, fingerprint: &str, config_key: &str) -> Result<Vec<f64>> {
        let path = self.progress_path();
        if !path.exists() {
            return Ok(Vec::new());
        }
        let p: Progress = crate::error::read_json(&path)?;
        if p.fingerprint == fingerprint && p.config_key == config_key {
            Ok(p.samples)
        } else {
            Ok(Vec::new())
        }
    }

    /// Saves the probes finished so far (atomically).
    pub fn save_progress(&self, progress: &Progress) -> Result<()> {
        crate::atomic_file::write_json(&self.progress_path(), progress)
    }
}

fn parse_lines(path: &Path, text: &str) -> Result<Vec<SharpnessResult>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                Error::bad_file(path, format!("line {}: not a sharpness result: {e}", i + 1))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn config() -> SharpnessConfig {
        SharpnessConfig {
            data: "a.txt".into(),
            data_hash: "h".into(),
            seq_len: 8,
            batch_size: 1,
            batches: 2,
            max_batches: None,
            max_texts: None,
            samples: 3,
            seed: 0,
            method: "fd".into(),
            eps: 3e-5,
            dtype: "f32".into(),
            rel_tol: None,
            min_probes: 10,
            top_eigen_iters: None,
            top_eigen_tol: 1e-3,
        }
    }

    fn result(fingerprint: &str, cfg: &SharpnessConfig) -> SharpnessResult {
        SharpnessResult {
            checkpoint: "run/step-1".into(),
            fingerprint: fingerprint.into(),
            step: Some(1),
            stage: None,
            schedule: None,
            config: cfg.clone(),
            config_key: cfg.key(),
            estimate: 2.0,
            stderr: None,
            probes: 1,
            batches: 2,
            target_tokens: 14,
            parameters: 10,
            samples: vec![2.0],
            running: vec![2.0],
            top_eigenvalue: None,
            seconds: 0.1,
            ckpt_version: crate::VERSION.into(),
            probe_start: None,
        }
    }

    #[test]
    fn the_key_ignores_the_data_path_only() {
        let a = config();
        let b = SharpnessConfig {
            data: "elsewhere/a.txt".into(),
            ..config()
        };
        assert_eq!(a.key(), b.key());
        let c = SharpnessConfig {
            data_hash: "other".into(),
            ..config()
        };
        assert_ne!(a.key(), c.key());
    }

    #[test]
    fn results_and_progress_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        let cfg = config();
        let mut file = ResultsFile::open(&path).unwrap();
        assert!(file.results().is_empty());
        file.save_progress(&Progress {
            fingerprint: "f1".into(),
            config_key: cfg.key(),
            samples: vec![1.0, 2.0],
        })
        .unwrap();
        assert_eq!(file.progress("f1", &cfg.key()).unwrap(), [1.0, 2.0]);
        assert!(file.progress("f2", &cfg.key()).unwrap().is_empty());
        file.append(result("f1", &cfg)).unwrap();
        assert!(!file.progress_path().exists());

        let file = ResultsFile::open(&path).unwrap();
        assert_eq!(file.results().len(), 1);
        let here = Path::new("run/step-1");
        assert!(file.find(here, "f1", &cfg.key()).is_some());
        assert!(file.find(here, "f1", "other").is_none());
        let twin = file
            .find(Path::new("twin/step-1"), "f1", &cfg.key())
            .unwrap();
        assert_eq!(twin.checkpoint, here, "the same weights elsewhere");

        std::fs::write(&path, "{\"oops\": 1}\n").unwrap();
        let err = ResultsFile::open(&path).err().unwrap().to_string();
        assert!(err.contains("s.jsonl") && err.contains("line 1"), "{err}");
    }
}

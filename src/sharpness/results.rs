//! What a sharpness measurement records, and the JSONL file that keeps them.
//!
//! One line per finished (checkpoint, configuration): the key is the checkpoint's
//! weight fingerprint and a hash of the configuration (the data enters by the hash of
//! its tokens, not its path), so a rerun skips what is done. The probe samples of the
//! measurement in progress are saved beside it (`<file>.progress.json`) after each
//! probe, so a killed run resumes at its last finished probe. Every write replaces the
//! file atomically.

use super::hutchinson::{BlockSamples, TraceEstimate};
use super::power::TopEigen;
use super::spectrum::{Node, SpectralDensity, TopEigenvalues};
use crate::checkpoint::ScheduleInfo;
use crate::error::{Error, Result, StoreFault};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The settings a measurement depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharpnessConfig {
    /// The text file, as given (informative: the key uses `data_hash`).
    pub data: String,
    /// The measurement set's name (`--data NAME=FILE`; informative, as `data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
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
    /// The top-k eigenvalues by Lanczos: k and the steps (absent: not asked, so the
    /// keys of measurements without them stay as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<(usize, usize)>,
    /// The SLQ density: runs and steps per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub density: Option<(usize, usize)>,
}

impl SharpnessConfig {
    /// Hash (BLAKE3, hex) of every field but `data` and `set`.
    pub fn key(&self) -> String {
        let mut value = serde_json::to_value(self).expect("serialisable");
        if let Some(map) = value.as_object_mut() {
            map.remove("data");
            map.remove("set");
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
    /// The trace of each parameter block (embeddings, each layer's attention, MLP and
    /// norms, the final norm, the head) from the same probes; each probe's block parts
    /// sum to its sample.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<BlockTrace>,
    /// The estimate after each probe.
    pub running: Vec<f64>,
    pub top_eigenvalue: Option<TopEigen>,
    /// The top-k eigenvalues by Lanczos (`--top-k`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_eigenvalues: Option<TopEigenvalues>,
    /// The spectral density by SLQ (`--density`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub density: Option<SpectralDensity>,
    /// Wall time of this measurement (a resumed one: of its last part).
    pub seconds: f64,
    pub ckpt_version: String,
    /// Set on a shard's block of a checkpoint's probes (`--shard` with fewer
    /// checkpoints than shards): `samples` are probes `probe_start..` only. Blocks are
    /// joined into the whole result by the next run without `--shard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_start: Option<usize>,
}

/// One parameter block's trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockTrace {
    /// `embed`, `layers.L.attn`, `layers.L.mlp`, `layers.L.norms`, `final_norm`, `head`
    /// (tied embeddings: the head is the embedding's).
    pub(crate) name: String,
    pub(crate) estimate: f64,
    pub(crate) stderr: Option<f64>,
    /// The block's part of every probe.
    pub(crate) samples: Vec<f64>,
}

impl BlockTrace {
    /// The layer of a `layers.L.*` block.
    pub(crate) fn layer(&self) -> Option<usize> {
        self.name
            .strip_prefix("layers.")?
            .split('.')
            .next()?
            .parse()
            .ok()
    }

    /// The kind of block: `attn`, `mlp`, `norms`, or the name itself outside layers.
    pub fn kind(&self) -> &str {
        match self.layer() {
            Some(_) => self.name.rsplit('.').next().unwrap_or(&self.name),
            None => &self.name,
        }
    }
}

/// The block traces of an estimate.
pub(crate) fn block_traces(estimate: &TraceEstimate) -> Vec<BlockTrace> {
    estimate
        .blocks
        .iter()
        .map(|b| {
            let stderr = super::hutchinson::stderr(&b.samples);
            BlockTrace {
                name: b.name.clone(),
                estimate: super::hutchinson::mean(&b.samples),
                stderr: stderr.is_finite().then_some(stderr),
                samples: b.samples.clone(),
            }
        })
        .collect()
}

impl SharpnessResult {
    /// The probes recorded, with their block parts.
    pub(crate) fn trace_estimate(&self) -> TraceEstimate {
        TraceEstimate {
            samples: self.samples.clone(),
            blocks: self
                .blocks
                .iter()
                .map(|b| BlockSamples {
                    name: b.name.clone(),
                    samples: b.samples.clone(),
                })
                .collect(),
        }
    }

    /// Whether this is one block of a measurement, not a whole one.
    pub(crate) fn is_block(&self) -> bool {
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
pub(crate) struct Progress {
    pub(crate) fingerprint: String,
    pub(crate) config_key: String,
    #[serde(flatten)]
    pub(crate) estimate: TraceEstimate,
    /// The top-k eigenvalues, once computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) top_eigenvalues: Option<TopEigenvalues>,
    /// The SLQ runs finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) density_runs: Vec<Vec<Node>>,
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
    pub(crate) fn results(&self) -> &[SharpnessResult] {
        &self.results
    }

    /// The finished result for `(fingerprint, config_key)`, if any: the one recorded
    /// for `checkpoint` when there is one, else the latest.
    pub(crate) fn find(
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
    pub(crate) fn from_store(store: &crate::store::Store) -> Result<Vec<SharpnessResult>> {
        store
            .sharpness_results()?
            .iter()
            .map(|j| {
                serde_json::from_str(j).map_err(|e| {
                    Error::store(
                        store.path(),
                        StoreFault::Query,
                        format!("sharpness record: {e}"),
                    )
                })
            })
            .collect()
    }

    /// Adds `result` and rewrites the file atomically; the progress sidecar goes.
    pub(crate) fn append(&mut self, result: SharpnessResult) -> Result<()> {
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
    /// from probe 0 on as far as they run without a gap, with their block parts where
    /// every block record has them.
    pub fn blocks(&self, fingerprint: &str, config_key: &str) -> TraceEstimate {
        let mut records: Vec<&SharpnessResult> = self
            .results
            .iter()
            .filter(|r| r.is_block() && r.fingerprint == fingerprint && r.config_key == config_key)
            .collect();
        records.sort_by_key(|r| r.probe_start);
        let mut joined = TraceEstimate::default();
        for (i, record) in records.iter().enumerate() {
            let start = record.probe_start.unwrap_or(0);
            if start > joined.len() {
                break;
            }
            let skip = joined.len() - start;
            let part = record.trace_estimate();
            if i == 0 {
                joined.blocks = part
                    .blocks
                    .iter()
                    .map(|b| BlockSamples {
                        name: b.name.clone(),
                        samples: vec![],
                    })
                    .collect();
            }
            let same_blocks = joined.blocks.len() == part.blocks.len()
                && joined
                    .blocks
                    .iter()
                    .zip(&part.blocks)
                    .all(|(a, b)| a.name == b.name);
            if !same_blocks {
                joined.blocks.clear();
            }
            for (j, b) in joined.blocks.iter_mut().enumerate() {
                b.samples.extend(part.blocks[j].samples.iter().skip(skip));
            }
            joined.samples.extend(part.samples.iter().skip(skip));
        }
        joined
    }

    /// `<file>.progress.json`.
    pub(crate) fn progress_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".progress.json");
        self.path.with_file_name(name)
    }

    /// What an interrupted measurement of `(fingerprint, config_key)` finished.
    pub(crate) fn progress(&self, fingerprint: &str, config_key: &str) -> Result<Progress> {
        let none = Progress {
            fingerprint: fingerprint.into(),
            config_key: config_key.into(),
            estimate: TraceEstimate::default(),
            top_eigenvalues: None,
            density_runs: vec![],
        };
        let path = self.progress_path();
        if !path.exists() {
            return Ok(none);
        }
        let p: Progress = crate::error::read_json(&path)?;
        if p.fingerprint == fingerprint && p.config_key == config_key {
            Ok(p)
        } else {
            Ok(none)
        }
    }

    /// Saves the probes finished so far (atomically).
    pub(crate) fn save_progress(&self, progress: &Progress) -> Result<()> {
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
pub(crate) mod tests {
    use super::*;

    /// A whole result of `checkpoint` at `step` with `blocks`.
    pub(crate) fn result_with_blocks(
        checkpoint: &str,
        step: u64,
        blocks: Vec<BlockTrace>,
    ) -> SharpnessResult {
        SharpnessResult {
            checkpoint: checkpoint.into(),
            step: Some(step),
            blocks,
            ..result("f", &config())
        }
    }

    pub(crate) fn config() -> SharpnessConfig {
        SharpnessConfig {
            data: "a.txt".into(),
            set: None,
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
            top_k: None,
            density: None,
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
            blocks: vec![],
            running: vec![2.0],
            top_eigenvalue: None,
            top_eigenvalues: None,
            density: None,
            seconds: 0.1,
            ckpt_version: crate::VERSION.into(),
            probe_start: None,
        }
    }

    #[test]
    fn keys_of_measurements_without_a_spectrum_are_unchanged() {
        // The key of `config()` as the version before the spectrum computed it.
        let mut value = serde_json::to_value(config()).unwrap();
        let map = value.as_object_mut().unwrap();
        assert!(!map.contains_key("top_k") && !map.contains_key("density"));
        map.remove("data");
        let before = blake3::hash(value.to_string().as_bytes())
            .to_hex()
            .to_string();
        assert_eq!(config().key(), before);
        let with_top = SharpnessConfig {
            top_k: Some((5, 30)),
            ..config()
        };
        assert_ne!(with_top.key(), before);
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
        let estimate = TraceEstimate {
            samples: vec![1.0, 2.0],
            blocks: vec![BlockSamples {
                name: "embed".into(),
                samples: vec![1.0, 2.0],
            }],
        };
        let progress = Progress {
            fingerprint: "f1".into(),
            config_key: cfg.key(),
            estimate: estimate.clone(),
            top_eigenvalues: None,
            density_runs: vec![vec![Node {
                value: 1.0,
                weight: 1.0,
            }]],
        };
        file.save_progress(&progress).unwrap();
        assert_eq!(file.progress("f1", &cfg.key()).unwrap(), progress);
        assert!(file.progress("f2", &cfg.key()).unwrap().estimate.is_empty());
        // An older version's progress: samples alone.
        std::fs::write(
            file.progress_path(),
            format!(
                r#"{{"fingerprint":"f1","config_key":"{}","samples":[3.0]}}"#,
                cfg.key()
            ),
        )
        .unwrap();
        let old = file.progress("f1", &cfg.key()).unwrap().estimate;
        assert_eq!((old.samples.as_slice(), old.blocks.len()), (&[3.0][..], 0));
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

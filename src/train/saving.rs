//! Writing training checkpoints and finding them again.
//!
//! A checkpoint is assembled in a hidden sibling directory and renamed into place, so
//! a crash or a full disk half way leaves the previous checkpoints untouched and never a
//! half-written `step-N` (discovery skips hidden directories).

use super::optimizer::{AdamW, OPTIMIZER_FILE};
use crate::checkpoint::{self, CheckpointMeta};
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use candle_core::{Tensor, Var};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Files copied from the tokenizer directory into every checkpoint, when present.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Directory name of the checkpoint at `step`: zero-padded so names sort by step.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:07}")
}

/// Everything that goes into one checkpoint.
pub struct CheckpointParts<'a> {
    pub(crate) config: &'a ModelConfig,
    pub(crate) weights: &'a [(String, Var)],
    pub(crate) optimizer: &'a AdamW,
    pub(crate) meta: &'a CheckpointMeta,
    /// Where `tokenizer.json` and friends live.
    pub(crate) tokenizer_dir: &'a Path,
}

/// Writes `run_dir/step-NNNNNNN` atomically and returns its path.
pub fn save_checkpoint(run_dir: &Path, parts: &CheckpointParts) -> Result<PathBuf> {
    let name = step_dir_name(parts.meta.step);
    let target = run_dir.join(&name);
    let staging = run_dir.join(format!(".{name}.partial"));
    remove_dir_if_present(&staging)?;
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    if let Err(e) = write_parts(&staging, parts) {
        // The previous checkpoints were never touched; drop the partial one.
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    replace_dir(&staging, &target)?;
    Ok(target)
}

fn write_parts(dir: &Path, parts: &CheckpointParts) -> Result<()> {
    let tensors: HashMap<String, Tensor> = parts
        .weights
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    checkpoint::write_checkpoint(dir, parts.config, &tensors, Some(parts.meta))?;
    parts.optimizer.save(&dir.join(OPTIMIZER_FILE))?;
    let tokenizer = parts.tokenizer_dir.join(TOKENIZER_FILES[0]);
    if !tokenizer.is_file() {
        return Err(Error::bad_file(
            &tokenizer,
            "missing: every checkpoint carries the run's tokenizer",
        ));
    }
    for file in TOKENIZER_FILES {
        let from = parts.tokenizer_dir.join(file);
        if from.is_file() {
            let bytes = crate::error::read_file(&from)?;
            crate::atomic_file::write_bytes(&dir.join(file), &bytes)?;
        }
    }
    Ok(())
}

/// Moves `staging` to `target`, replacing an older `target` (a re-run of the same step).
fn replace_dir(staging: &Path, target: &Path) -> Result<()> {
    if target.exists() {
        let old = target.with_file_name(format!(
            ".{}.old",
            target
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("checkpoint")
        ));
        remove_dir_if_present(&old)?;
        std::fs::rename(target, &old).map_err(|e| Error::io(target, e))?;
        std::fs::rename(staging, target).map_err(|e| Error::io(target, e))?;
        return remove_dir_if_present(&old);
    }
    std::fs::rename(staging, target).map_err(|e| Error::io(target, e))
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir, e)),
        _ => Ok(()),
    }
}

/// The checkpoint with the highest step directly inside `run_dir`, if any.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<checkpoint::Checkpoint>> {
    if !run_dir.is_dir() {
        return Ok(None);
    }
    let found = checkpoint::discover(&[run_dir.to_path_buf()])?;
    Ok(found
        .into_iter()
        .filter(|c| c.dir.parent() == Some(run_dir))
        .max_by_key(|c| c.step))
}

/// Appends one JSON line to the run's metrics log.
pub fn append_metrics<T: serde::Serialize>(path: &Path, record: &T) -> Result<()> {
    use std::io::Write;
    let mut line = serde_json::to_string(record).map_err(|e| Error::Invalid(e.to_string()))?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(line.as_bytes())
        .map_err(|e| Error::io(path, e))
}

/// Drops the metrics of steps after `step` (a resumed run redoes them), atomically.
pub fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    if !path.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    crate::atomic_file::write_bytes(path, kept.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_truncate_to_the_resumed_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        for step in 1..=5u64 {
            append_metrics(&path, &serde_json::json!({"step": step, "loss": 1.0})).unwrap();
        }
        truncate_metrics(&path, 3).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().last().unwrap().contains("\"step\":3"));
    }

    /// A tiny model, its optimizer and a tokenizer directory, for saving.
    fn parts_fixture(dir: &Path) -> (ModelConfig, Vec<(String, Var)>, AdamW, PathBuf) {
        let cfg = ModelConfig::from_json(
            r#"{"architectures":["LlamaForCausalLM"],"vocab_size":16,"hidden_size":8,
            "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,
            "num_key_value_heads":1,"max_position_embeddings":8}"#,
        )
        .unwrap();
        let weights = crate::model::init_weights(
            &cfg,
            0.02,
            0,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let vars: Vec<(String, Var)> = weights
            .iter()
            .map(|(n, t)| (n.clone(), Var::from_tensor(t).unwrap()))
            .collect();
        let opt = AdamW::new(Default::default(), vars.clone()).unwrap();
        let tok = dir.join("tok");
        std::fs::create_dir_all(&tok).unwrap();
        std::fs::write(tok.join("tokenizer.json"), "{}").unwrap();
        (cfg, vars, opt, tok)
    }

    #[test]
    fn a_save_that_fails_half_way_leaves_the_previous_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let (cfg, vars, opt, tok) = parts_fixture(dir.path());
        let save = |step: u64, tok: &Path| {
            let meta = CheckpointMeta::new(step);
            let parts = CheckpointParts {
                config: &cfg,
                weights: &vars,
                optimizer: &opt,
                meta: &meta,
                tokenizer_dir: tok,
            };
            save_checkpoint(&run, &parts)
        };
        let first = save(1, &tok).unwrap();
        let before = std::fs::read(first.join("model.safetensors")).unwrap();
        // The model and optimizer files are written, then the tokenizer is missing.
        let err = save(2, &dir.path().join("gone")).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
        let names: Vec<String> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["step-0000001"]);
        assert_eq!(
            std::fs::read(first.join("model.safetensors")).unwrap(),
            before
        );
        assert!(crate::checkpoint::Checkpoint::open(&first).is_ok());
    }

    #[test]
    fn replacing_a_checkpoint_keeps_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (staging, target) = (dir.path().join(".s"), dir.path().join("step-0000001"));
        for content in ["old", "new"] {
            std::fs::create_dir_all(&staging).unwrap();
            std::fs::write(staging.join("f"), content).unwrap();
            replace_dir(&staging, &target).unwrap();
        }
        assert_eq!(std::fs::read_to_string(target.join("f")).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}

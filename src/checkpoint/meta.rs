//! The `ckpt.json` sidecar: what `ckpt` knows about a checkpoint beyond its weights.
//!
//! Written by the trainer next to `config.json`; every field but `step` is optional so
//! that sidecars from older versions, and hand-written ones, still read.

use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name of the sidecar.
pub const META_FILE: &str = "ckpt.json";

/// Training stage that produced a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Pre-training.
    Pre,
    /// Mid-training (continued pre-training with its own decay).
    Mid,
    /// Supervised fine-tuning.
    Sft,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Pre => "pre",
            Stage::Mid => "mid",
            Stage::Sft => "sft",
        })
    }
}

/// The learning-rate schedule a checkpoint was trained under (DESIGN.md section 5).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    /// `wso`, `wsd`, `cosine`, `linear`, `constant`, `inv-sqrt`, `cyclic`, ...
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_ratio: Option<f64>,
    /// Minimum LR factor of pre-training (1 for WSO).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha_pre: Option<f64>,
    /// Minimum LR factor of mid-training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha_mid: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mid_steps: Option<u64>,
    /// Step of the stable-phase checkpoint a decay was branched from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branched_from_step: Option<u64>,
}

/// The checkpoint this one was trained from (mid-training, SFT, branched decays).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentRef {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// Contents of `ckpt.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub step: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_seen: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleInfo>,
    /// The learning rate at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// Where the data loader stands, so a resumed run reads the same next batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_position: Option<serde_json::Value>,
    /// RNG state, so a resumed run draws the same numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng_state: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    /// First global step of this checkpoint's stage (mid-training and branched decays
    /// continue the parent's step count), so a resumed run knows where its stage began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_start: Option<u64>,
    /// Version of `ckpt` that wrote the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ckpt_version: Option<String>,
    /// Set when `ckpt merge` made this checkpoint by averaging others (WSM): a merged
    /// checkpoint counts as decayed whatever its sources' schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeInfo>,
    /// SFT: the chat template the conversations were rendered with (`own (FILE)` for
    /// the parent's own, carried unchanged; `tulu`, `chatml` or a file otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
}

/// How a merged checkpoint was made (`ckpt merge`, DESIGN.md section 9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeInfo {
    /// The emulated decay shape (`uniform`, `linear`, `cosine`, `inv-sqrt`, `1-sqrt`),
    /// or `explicit` for coefficients given by hand.
    pub shape: String,
    /// `--window`: the merge spans the last `window` training steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u64>,
    /// `--last`: the merge takes the last `last` checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<usize>,
    /// `f32` or `f64`: the precision the weighted sums were accumulated in.
    pub accumulate: String,
    /// The merged checkpoints, in step order.
    pub sources: Vec<MergeSource>,
}

/// One checkpoint of a merge and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeSource {
    pub(crate) path: String,
    pub(crate) step: u64,
    pub(crate) fingerprint: String,
    /// Its merge coefficient c_j (the coefficients sum to 1).
    pub(crate) coefficient: f64,
    /// The emulated LR multiplier w_j = c_j + ... + c_k of the update interval that
    /// ends at this checkpoint (w_0 = 1).
    pub(crate) multiplier: f64,
}

impl CheckpointMeta {
    /// A sidecar for `step` with nothing else known yet.
    pub fn new(step: u64) -> Self {
        Self {
            chat_template: None,
            step,
            tokens_seen: None,
            stage: None,
            schedule: None,
            lr: None,
            parent: None,
            data_position: None,
            rng_state: None,
            train_loss: None,
            stage_start: None,
            ckpt_version: Some(crate::VERSION.to_string()),
            merge: None,
        }
    }

    /// Reads `dir/ckpt.json` if there is one.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(META_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        crate::error::read_json(&path).map(Some)
    }

    /// Writes `dir/ckpt.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::atomic_file::write_json(&dir.join(META_FILE), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_minimal_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = CheckpointMeta::new(1200);
        meta.stage = Some(Stage::Mid);
        meta.schedule = Some(ScheduleInfo {
            kind: "wsd".into(),
            peak_lr: Some(3e-4),
            alpha_pre: Some(0.1),
            ..Default::default()
        });
        meta.rng_state = Some(serde_json::json!({"seed": 7, "draws": 42}));
        meta.write(dir.path()).unwrap();
        assert_eq!(CheckpointMeta::read(dir.path()).unwrap(), Some(meta));

        std::fs::write(dir.path().join(META_FILE), r#"{"step": 5}"#).unwrap();
        assert_eq!(CheckpointMeta::read(dir.path()).unwrap().unwrap().step, 5);

        std::fs::write(dir.path().join(META_FILE), r#"{"stage": "pre"}"#).unwrap();
        let err = CheckpointMeta::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ckpt.json") && err.contains("step"), "{err}");
    }
}

//! Training recipes: one TOML file per job, torchtitan-style.
//!
//! A recipe names everything a run needs (model shape, tokenizer, data, optimizer,
//! schedule, batch, checkpoints, seed, device, stage, parent) so that `run.toml`, the
//! resolved recipe saved in the run directory, is enough to reproduce or resume it.
//! `--set table.key=value` overrides any field; unknown keys are errors that name the
//! key, and inconsistent values are rejected before any step runs.
//!
//! Relative paths are relative to the working directory, as in torchtitan.

use super::data::{DataConfig, TokenizerConfig};
use super::optimizer::OptimizerConfig;
use crate::checkpoint::Stage;
use crate::error::{Error, Result};
use crate::model::{Arch, ModelConfig};
use crate::schedule::ScheduleSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the resolved recipe inside a run directory.
pub(crate) const RUN_FILE: &str = "run.toml";

/// A whole training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub job: JobConfig,
    /// Shape of a fresh model; absent when the run starts from `init.parent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<ModelShape>,
    #[serde(default)]
    pub(crate) tokenizer: TokenizerConfig,
    pub(crate) data: DataConfig,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleSpec,
    pub training: TrainingConfig,
    #[serde(default)]
    pub init: InitConfig,
}

/// `[job]`: what the run is called, where it goes and what it runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    /// `pre`, `mid` or `sft`.
    pub stage: Stage,
    /// The run directory (default `runs/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) out: Option<PathBuf>,
    /// Seeds the initial weights and the data order.
    #[serde(default)]
    pub(crate) seed: u64,
    /// `cpu` or `cuda[:N]`.
    #[serde(default = "default_device")]
    pub(crate) device: String,
    /// Compute dtype (`f32`, `bf16`, `f16`); master weights and moments stay f32.
    #[serde(default = "default_dtype")]
    pub(crate) dtype: String,
}

fn default_device() -> String {
    "cpu".into()
}

fn default_dtype() -> String {
    "f32".into()
}

/// `[model]`: the shape of a model trained from scratch (a Llama; SwiGLU, RMSNorm, RoPE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelShape {
    /// The architecture (`llama`, `qwen3`, `olmo2`, `gpt_neox`, `gemma2`, ...).
    #[serde(default = "default_arch")]
    pub(crate) arch: Arch,
    pub(crate) hidden_size: usize,
    pub(crate) intermediate_size: usize,
    pub(crate) num_hidden_layers: usize,
    pub(crate) num_attention_heads: usize,
    pub(crate) num_key_value_heads: usize,
    /// Default `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) head_dim: Option<usize>,
    /// Default: the tokenizer's vocabulary size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) vocab_size: Option<usize>,
    /// Default: `training.seq_len`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_position_embeddings: Option<usize>,
    #[serde(default = "default_rope_theta")]
    pub(crate) rope_theta: f64,
    #[serde(default = "default_rms_eps")]
    pub(crate) rms_norm_eps: f64,
    #[serde(default)]
    pub(crate) tie_word_embeddings: bool,
    /// Standard deviation of the initial weight matrices.
    #[serde(default = "default_init_std")]
    pub(crate) init_std: f64,
}

fn default_arch() -> Arch {
    Arch::Llama
}

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_rms_eps() -> f64 {
    1e-5
}

fn default_init_std() -> f64 {
    0.02
}

/// `[training]`: how long, how big, how often to save.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Optimizer steps this stage runs. Default: the schedule's length for the stage
    /// (T for pre-training, M for mid-training, the epochs for SFT, T minus the branch
    /// point for a branched decay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) steps: Option<u64>,
    /// SFT: passes over the chat data (default 1) when `steps` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) epochs: Option<u64>,
    /// Tokens per optimizer step (over all accumulation micro-batches).
    pub batch_tokens: u64,
    /// Tokens per sequence (each row holds `seq_len + 1` for the shifted targets).
    pub seq_len: usize,
    #[serde(default = "one")]
    pub(crate) grad_accum: u64,
    /// Save a checkpoint every this many steps (and always at the end).
    pub(crate) checkpoint_every: u64,
}

fn one() -> u64 {
    1
}

/// `[init]`: where the weights come from when not from scratch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// A checkpoint directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<PathBuf>,
    #[serde(default)]
    pub(crate) mode: InitMode,
}

/// How a run continues from its parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum InitMode {
    /// Weights only; fresh optimizer and data order (mid-training, SFT).
    #[default]
    Weights,
    /// Weights, optimizer moments, data position and step count: the run goes on
    /// exactly as the parent's would have, under a different schedule (a decay
    /// branched from a stable-phase checkpoint).
    Branch,
}

impl Recipe {
    /// Reads a recipe file, applies `--set key=value` overrides and validates it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut table: toml::Table = toml::from_str(&text)
            .map_err(|e| Error::bad_file(path, format!("not valid TOML: {e}")))?;
        for item in overrides {
            apply_override(&mut table, item)?;
        }
        let recipe = Self::from_table(table).map_err(|msg| Error::bad_file(path, msg))?;
        recipe.validate().map_err(|e| match e {
            Error::BadValue { message, .. }
            | Error::Unsupported(message)
            | Error::Invalid(message) => Error::bad_file(path, message),
            other => other,
        })?;
        Ok(recipe)
    }

    /// Deserialises a recipe; the message names the offending key.
    pub(crate) fn from_table(table: toml::Table) -> std::result::Result<Self, String> {
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let inner = inner.trim();
            if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            }
        })
    }

    /// The resolved recipe as TOML (what `run.toml` holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a recipe always serialises")
    }

    /// The run directory.
    pub fn run_dir(&self) -> PathBuf {
        self.job
            .out
            .clone()
            .unwrap_or_else(|| Path::new("runs").join(&self.job.name))
    }

    /// Sequences per optimizer step.
    pub fn rows_per_step(&self) -> usize {
        (self.training.batch_tokens / self.training.seq_len as u64) as usize
    }

    /// Sequences per accumulation micro-batch.
    pub fn rows_per_micro_batch(&self) -> usize {
        self.rows_per_step() / self.training.grad_accum as usize
    }

    /// Checks values that must agree with each other; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, msg: String| Err(Error::bad_value(name, msg));
        let t = &self.training;
        check_job_name(&self.job.name)?;
        crate::device::device_ordinal(&self.job.device)
            .map_err(|e| Error::bad_value("job.device", format!("job.device: {e}")))?;
        crate::device::parse_dtype(&self.job.dtype)
            .map_err(|e| Error::bad_value("job.dtype", format!("job.dtype: {e}")))?;
        if t.seq_len < 1 {
            return bad(
                "training.seq_len",
                "training.seq_len must be at least 1".into(),
            );
        }
        if t.batch_tokens == 0 || !t.batch_tokens.is_multiple_of(t.seq_len as u64) {
            return bad(
                "training.batch_tokens",
                format!(
                "training.batch_tokens = {} is not a positive multiple of training.seq_len = {}",
                t.batch_tokens, t.seq_len
            ),
            );
        }
        if t.grad_accum == 0 || !(self.rows_per_step() as u64).is_multiple_of(t.grad_accum) {
            return bad(
                "training.grad_accum",
                format!(
                    "training.grad_accum = {} does not divide the {} sequences of a step",
                    t.grad_accum,
                    self.rows_per_step()
                ),
            );
        }
        if t.checkpoint_every == 0 {
            return bad(
                "training.checkpoint_every",
                "training.checkpoint_every must be at least 1".into(),
            );
        }
        if t.steps == Some(0) || t.epochs == Some(0) {
            return bad(
                "training.steps",
                "training.steps and training.epochs must be at least 1".into(),
            );
        }
        if t.epochs.is_some() && self.job.stage != Stage::Sft {
            return bad(
                "training.epochs",
                "training.epochs only applies to stage = \"sft\"".into(),
            );
        }
        self.validate_stage()?;
        self.validate_model()?;
        self.optimizer.validate()?;
        self.validate_schedule()
    }

    fn validate_stage(&self) -> Result<()> {
        let parent = self.init.parent.is_some();
        match (self.job.stage, parent, self.init.mode) {
            (Stage::Mid | Stage::Sft, false, _) => Err(Error::bad_value(
                "init.parent",
                format!("init.parent is required for stage = \"{}\"", self.job.stage),
            )),
            (Stage::Sft, true, InitMode::Branch) => Err(Error::bad_value(
                "init.mode",
                "init.mode = \"branch\" continues pre-training; SFT starts from weights",
            )),
            (_, false, InitMode::Branch) => Err(Error::bad_value(
                "init.mode",
                "init.mode = \"branch\" needs init.parent (a stable-phase checkpoint)",
            )),
            _ => Ok(()),
        }
    }

    fn validate_model(&self) -> Result<()> {
        match (&self.model, &self.init.parent) {
            (Some(_), Some(_)) => Err(Error::bad_value(
                "model",
                "model: a run from init.parent takes its shape from the parent; remove [model]",
            )),
            (None, None) => Err(Error::bad_value(
                "model",
                "model: a run from scratch needs a [model] table",
            )),
            (Some(shape), None) => shape.validate(self.training.seq_len),
            (None, Some(_)) => Ok(()),
        }
    }

    fn validate_schedule(&self) -> Result<()> {
        let s = &self.schedule;
        if s.total_steps.is_none() && self.job.stage != Stage::Sft {
            return Err(Error::bad_value(
                "schedule.total_steps",
                "schedule.total_steps is required (only SFT derives it from the epochs)",
            ));
        }
        // SFT recipes may leave T to the data; validate with a stand-in length.
        let probe = if s.total_steps.is_none() {
            s.with_total_steps(s.warmup.max(1))
        } else {
            s.clone()
        };
        probe.validate()?;
        let mid = s.mid_steps.is_some();
        match self.job.stage {
            Stage::Mid if !mid => Err(Error::bad_value(
                "schedule.mid_steps",
                "schedule.mid_steps is required for stage = \"mid\"",
            )),
            Stage::Pre | Stage::Sft if mid => Err(Error::bad_value(
                "schedule.mid_steps",
                format!(
                    "schedule.mid_steps only applies to stage = \"mid\", not \"{}\"",
                    self.job.stage
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl ModelShape {
    fn validate(&self, seq_len: usize) -> Result<()> {
        let bad = |msg: String| {
            let key = msg.split(' ').next().unwrap_or_default();
            Err(Error::bad_value(
                format!("model.{key}"),
                format!("model.{msg}"),
            ))
        };
        for (key, value) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
        ] {
            if value == 0 {
                return bad(format!("{key} must be at least 1"));
            }
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size = {} is not divisible by num_attention_heads = {} (set head_dim)",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if let Some(d) = self.head_dim {
            if d == 0 || d % 2 != 0 {
                return bad(format!(
                    "head_dim = {d} must be a positive even number (rotary embeddings rotate pairs)"
                ));
            }
        }
        // NaN would reach config.json as null, which reads back as the default: the
        // saved model would not be the one the recipe describes.
        for (key, value) in [
            ("rope_theta", self.rope_theta),
            ("rms_norm_eps", self.rms_norm_eps),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return bad(format!("{key} = {value} must be a positive, finite number"));
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads = {} is not a multiple of num_key_value_heads = {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if let Some(max) = self.max_position_embeddings {
            if max < seq_len {
                return bad(format!(
                    "max_position_embeddings = {max} is shorter than training.seq_len = {seq_len}"
                ));
            }
        }
        if !(self.init_std.is_finite() && self.init_std > 0.0) {
            return bad(format!("init_std = {} must be > 0", self.init_std));
        }
        Ok(())
    }

    /// The Hugging Face config of this shape, for a tokenizer with `vocab` ids whose
    /// BOS and EOS are `bos`/`eos`.
    pub fn to_config(
        &self,
        vocab: usize,
        seq_len: usize,
        bos: Option<u32>,
        eos: Option<u32>,
    ) -> Result<ModelConfig> {
        let mut json = serde_json::json!({
            "architectures": [self.arch.architecture()],
            "model_type": self.arch.model_type(),
            "vocab_size": self.vocab_size.unwrap_or(vocab),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads),
            "max_position_embeddings": self.max_position_embeddings.unwrap_or(seq_len),
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "torch_dtype": "float32",
        });
        // Gemma's default scalar (256) is for its own head size; a shape from scratch
        // scales scores by its head_dim as every other architecture does.
        if matches!(self.arch, Arch::Gemma2 | Arch::Gemma3) {
            json["query_pre_attn_scalar"] = json["head_dim"].clone();
        }
        ModelConfig::from_json(&json.to_string())
            .map_err(|e| Error::bad_value("model", format!("model: {e}")))
    }
}

/// `job.name` names the folder under `runs/`: one plain path component, so that the
/// run stays inside it (`job.out` is the way to write elsewhere).
fn check_job_name(name: &str) -> Result<()> {
    use std::path::Component;
    if name.trim().is_empty() {
        return Err(Error::bad_value("job.name", "job.name is empty"));
    }
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) if !name.contains(['/', '\\']) => Ok(()),
        _ => Err(Error::bad_value(
            "job.name",
            format!(
                "job.name = {name:?} must be a plain folder name (no /, \\, . or ..): \
             the run goes to runs/<name>; set job.out to write elsewhere"
            ),
        )),
    }
}

/// Applies one `table.key=value` override. The value is read as TOML (`3e-4`, `true`,
/// `"text"`, `[1, 2]`), and as a plain string when it is not valid TOML. An empty value
/// (`table.key=`) removes the key, so the default applies (`'""'` sets an empty string).
fn apply_override(table: &mut toml::Table, item: &str) -> Result<()> {
    let bad = |msg: &str| Error::bad_value("--set", format!("--set {item}: {msg}"));
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| bad("expected key=value"))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty key"));
    }
    let raw = raw.trim();
    let (last, tables) = parts.split_last().expect("split yields one part");
    let mut current = table;
    for part in tables {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| bad(&format!("`{part}` is not a table")))?;
    }
    if raw.is_empty() {
        current.remove(*last);
    } else {
        current.insert(last.to_string(), parse_value(raw));
    }
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid tiny pre-training recipe (other modules' tests start from it too).
    pub(crate) const TINY: &str = r#"
[job]
name = "tiny-wsd"
stage = "pre"
seed = 3

[model]
hidden_size = 64
intermediate_size = 128
num_hidden_layers = 2
num_attention_heads = 4
num_key_value_heads = 2

[data]
paths = ["data/pretrain.jsonl"]

[schedule]
kind = "wsd"
peak_lr = 3e-3
warmup = 10
total_steps = 100
stable_ratio = 0.75
alpha = 0.1

[training]
batch_tokens = 2048
seq_len = 128
grad_accum = 2
checkpoint_every = 25
"#;

    fn load(text: &str, sets: &[&str]) -> Result<Recipe> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recipe.toml");
        std::fs::write(&path, text).unwrap();
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Recipe::load(&path, &sets)
    }

    fn err(text: &str, sets: &[&str]) -> String {
        load(text, sets).unwrap_err().to_string()
    }

    #[test]
    fn reads_defaults_and_overrides() {
        let r = load(
            TINY,
            &["training.steps=40", "schedule.alpha=0", "job.out=elsewhere"],
        )
        .unwrap();
        assert_eq!(r.rows_per_step(), 16);
        assert_eq!(r.rows_per_micro_batch(), 8);
        assert_eq!(r.training.steps, Some(40));
        assert_eq!(r.schedule.alpha, Some(0.0));
        assert_eq!(r.run_dir(), PathBuf::from("elsewhere"));
        assert_eq!(r.optimizer, OptimizerConfig::default());
        assert_eq!(
            (r.job.device.as_str(), r.job.dtype.as_str()),
            ("cpu", "f32")
        );
        // The resolved recipe round-trips through run.toml.
        let again = Recipe::from_table(toml::from_str(&r.to_toml()).unwrap()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn errors_name_the_key() {
        let e = err(TINY, &["training.stepz=3"]);
        assert!(e.contains("training") && e.contains("stepz"), "{e}");
        let e = err(TINY, &["training.batch_tokens=1000"]);
        assert!(
            e.contains("training.batch_tokens") && e.contains("recipe.toml"),
            "{e}"
        );
        let e = err(TINY, &["training.grad_accum=3"]);
        assert!(e.contains("training.grad_accum"), "{e}");
        let e = err(TINY, &["job.stage=\"sft\""]);
        assert!(e.contains("init.parent"), "{e}");
        let e = err(TINY, &["model.num_key_value_heads=3"]);
        assert!(e.contains("model.num_attention_heads"), "{e}");
        let e = err(TINY, &["model.max_position_embeddings=64"]);
        assert!(e.contains("max_position_embeddings"), "{e}");
        let e = err(TINY, &["optimizer.beta1=1.5"]);
        assert!(e.contains("optimizer.beta1"), "{e}");
        let e = err(TINY, &["job.device=\"tpu\""]);
        assert!(e.contains("job.device"), "{e}");
        let e = err(TINY, &["schedule.mid_steps=10"]);
        assert!(e.contains("schedule.mid_steps"), "{e}");
        let e = err(TINY, &["init.mode=\"branch\""]);
        assert!(e.contains("init.parent"), "{e}");
        let e = err(TINY, &["nokey"]);
        assert!(e.contains("key=value"), "{e}");
        let e = err("[job\n", &[]);
        assert!(e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn shape_resolves_to_a_hugging_face_config() {
        let r = load(TINY, &[]).unwrap();
        let cfg = r
            .model
            .unwrap()
            .to_config(300, 128, Some(0), Some(0))
            .unwrap();
        assert_eq!(
            (cfg.vocab_size, cfg.head_dim, cfg.max_position_embeddings),
            (300, 16, 128)
        );
        assert_eq!(cfg.num_key_value_heads, 2);
        assert!(!cfg.tie_word_embeddings);
    }
}

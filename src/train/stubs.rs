//! TEMPORARY stand-ins for the schedule spec and data pipeline (replaced at merge).
#![allow(missing_docs, dead_code)]
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Wso,
    Wsd,
    Cosine,
    Linear,
    Constant,
    InvSqrt,
    Cyclic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub kind: Kind,
    pub peak_lr: f64,
    #[serde(default)]
    pub warmup: u64,
    pub total_steps: Option<u64>,
    pub stable_ratio: Option<f64>,
    pub decay_steps: Option<u64>,
    pub alpha: Option<f64>,
    pub cycle: Option<u64>,
    pub mult: Option<f64>,
    pub mid_steps: Option<u64>,
    pub alpha_mid: Option<f64>,
}
impl ScheduleSpec {
    pub fn validate(&self) -> crate::Result<()> {
        Ok(())
    }
    pub fn with_total_steps(&self, t: u64) -> Self {
        Self {
            total_steps: Some(t),
            ..self.clone()
        }
    }
    pub fn lr(&self, step: u64) -> f64 {
        let w = self.warmup as f64;
        let t = step as f64;
        if t <= w && self.warmup > 0 {
            self.peak_lr * t / w
        } else {
            self.peak_lr
        }
    }
    pub fn end_step(&self) -> u64 {
        self.total_steps.unwrap_or(0) + self.mid_steps.unwrap_or(0)
    }
    pub fn label(&self) -> String {
        format!("{:?}", self.kind)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub paths: Vec<PathBuf>,
    pub text_column: String,
    pub shuffle: bool,
    pub chat_template: Option<String>,
    pub max_docs: Option<usize>,
}
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerConfig {
    pub path: Option<PathBuf>,
    pub train_vocab_size: Option<usize>,
}

//! The training loop: batches in, optimizer steps out, checkpoints on schedule.
//!
//! One step draws `grad_accum` micro-batches, back-propagates each, sums the gradients
//! and takes one AdamW step at the schedule's LR for that step. The loss is the mean
//! over every target token of the step (SFT: every assistant token), whatever the
//! micro-batch split, so accumulation does not change the objective.

use super::data::{Batch, BatchLoader};
use super::optimizer::{AdamW, StepReport};
use super::saving::{self, CheckpointParts};
use crate::checkpoint::{CheckpointMeta, ParentRef, ScheduleInfo, Stage};
use crate::error::{Error, Result};
use crate::model::{Model, ModelConfig};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// File name of the per-run metrics log (one JSON object per step).
pub(crate) const METRICS_FILE: &str = "metrics.jsonl";

/// What one step did, as written to `metrics.jsonl` and shown in the progress bar.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    pub(crate) step: u64,
    pub(crate) loss: f64,
    pub(crate) lr: f64,
    pub(crate) grad_norm: f64,
    pub(crate) clip_scale: f64,
    /// Tokens read this step.
    pub(crate) tokens: u64,
    /// Tokens read since the first stage of the lineage.
    pub(crate) tokens_seen: u64,
    pub(crate) tokens_per_s: f64,
    pub(crate) elapsed_s: f64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Reached its last step; the final checkpoint.
    Finished(PathBuf),
    /// Stopped by a signal after saving this checkpoint.
    Interrupted(PathBuf),
}

/// A run in progress: weights, optimizer, data and where it stands.
pub struct Trainer {
    pub(crate) run_dir: PathBuf,
    pub(crate) config: ModelConfig,
    pub(crate) vars: Vec<(String, Var)>,
    pub(crate) optimizer: AdamW,
    pub(crate) data: Box<dyn BatchLoader>,
    /// LR of every global step.
    pub(crate) lr_at: Box<dyn Fn(u64) -> f64>,
    pub(crate) schedule_info: ScheduleInfo,
    pub(crate) stage: Stage,
    pub(crate) parent: Option<ParentRef>,
    pub(crate) compute_dtype: DType,
    pub(crate) rows_per_micro_batch: usize,
    pub(crate) grad_accum: usize,
    pub(crate) checkpoint_every: u64,
    pub(crate) tokenizer_dir: PathBuf,
    /// SFT: the chat template rendered with, recorded in `ckpt.json`.
    pub(crate) chat_template: Option<String>,
    /// Global step reached (steps of earlier stages included for mid/branch runs).
    pub(crate) step: u64,
    /// First global step of this stage.
    pub(crate) stage_start: u64,
    /// Global step at which the run stops.
    pub(crate) end_step: u64,
    pub(crate) tokens_seen: u64,
    /// Checkpoint of the last completed save.
    pub(crate) last_saved: Option<PathBuf>,
}

impl Trainer {
    /// Global step reached so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Global step at which the run will stop.
    pub fn end_step(&self) -> u64 {
        self.end_step
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Trains until the last step, or until `stop` is raised (then saves first).
    /// `on_step` sees every step's metrics.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        on_step: &mut dyn FnMut(&StepMetrics),
    ) -> Result<Outcome> {
        let started = Instant::now();
        let metrics_path = self.run_dir.join(METRICS_FILE);
        let mut last_loss = None;
        while self.step < self.end_step {
            if stop.load(Ordering::SeqCst) {
                let dir = self.save(last_loss)?;
                return Ok(Outcome::Interrupted(dir));
            }
            let step_started = Instant::now();
            let (loss, report, tokens) = self.train_step().map_err(|e| self.diverged(e))?;
            self.step += 1;
            self.tokens_seen += tokens;
            last_loss = Some(loss);
            let metrics = StepMetrics {
                step: self.step,
                loss,
                lr: (self.lr_at)(self.step),
                grad_norm: report.grad_norm,
                clip_scale: report.clip_scale,
                tokens,
                tokens_seen: self.tokens_seen,
                tokens_per_s: tokens as f64 / step_started.elapsed().as_secs_f64().max(1e-9),
                elapsed_s: started.elapsed().as_secs_f64(),
            };
            saving::append_metrics(&metrics_path, &metrics)?;
            on_step(&metrics);
            if self.step.is_multiple_of(self.checkpoint_every) || self.step == self.end_step {
                self.save(last_loss)?;
            }
        }
        let dir = match &self.last_saved {
            Some(dir) if self.saved_step() == Some(self.step) => dir.clone(),
            _ => self.save(last_loss)?,
        };
        Ok(Outcome::Finished(dir))
    }

    /// Adds where the last good checkpoint is to a divergence error.
    fn diverged(&self, e: Error) -> Error {
        match e {
            Error::NonFinite { .. } => {
                let kept = self
                    .last_saved
                    .as_ref()
                    .map(|d| format!("the last good checkpoint is {}", d.display()))
                    .unwrap_or_else(|| "no checkpoint was written yet".into());
                Error::Invalid(format!("training stopped: {e}; {kept}"))
            }
            other => other,
        }
    }

    fn saved_step(&self) -> Option<u64> {
        self.last_saved
            .as_ref()
            .and_then(|d| d.file_name()?.to_str().map(str::to_string))
            .and_then(|n| crate::checkpoint::step_from_name(&n))
    }

    /// One optimizer step: returns the mean loss, the optimizer's report and the
    /// number of tokens read.
    fn train_step(&mut self) -> Result<(f64, StepReport, u64)> {
        let batches: Vec<Batch> = (0..self.grad_accum)
            .map(|_| self.data.next_batch(self.rows_per_micro_batch))
            .collect();
        let tokens: u64 = batches.iter().map(|b| (b.rows * (b.len - 1)) as u64).sum();
        let model = self.compute_model()?;
        let next = self.step + 1;
        let lr = (self.lr_at)(next);
        let (loss, report) =
            optimizer_step(&model, &self.vars, &mut self.optimizer, &batches, lr, next)?;
        Ok((loss, report, tokens))
    }

    /// The model to run forward: the f32 master weights themselves, or copies cast to
    /// the compute dtype (the cast is differentiable, so gradients reach the masters).
    fn compute_model(&self) -> Result<Model> {
        build_model(&self.config, &self.vars, self.compute_dtype)
    }

    /// Writes a checkpoint of the current step.
    pub fn save(&mut self, train_loss: Option<f64>) -> Result<PathBuf> {
        let meta = CheckpointMeta {
            tokens_seen: Some(self.tokens_seen),
            stage: Some(self.stage),
            schedule: Some(self.schedule_info.clone()),
            lr: Some((self.lr_at)(self.step)),
            parent: self.parent.clone(),
            data_position: Some(
                serde_json::to_value(self.data.position())
                    .map_err(|e| Error::Invalid(e.to_string()))?,
            ),
            rng_state: None,
            train_loss,
            stage_start: Some(self.stage_start),
            chat_template: self.chat_template.clone(),
            ..CheckpointMeta::new(self.step)
        };
        let dir = saving::save_checkpoint(
            &self.run_dir,
            &CheckpointParts {
                config: &self.config,
                weights: &self.vars,
                optimizer: &self.optimizer,
                meta: &meta,
                tokenizer_dir: &self.tokenizer_dir,
            },
        )?;
        tracing::info!("saved {}", dir.display());
        self.last_saved = Some(dir.clone());
        Ok(dir)
    }
}

/// A differentiable model over `vars` computing in `dtype`.
pub fn build_model(cfg: &ModelConfig, vars: &[(String, Var)], dtype: DType) -> Result<Model> {
    let device = vars
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(Device::Cpu);
    let tensors = vars
        .iter()
        .map(|(name, var)| Ok((name.clone(), var.as_tensor().to_dtype(dtype)?)))
        .collect::<Result<_>>()?;
    let vb = VarBuilder::from_tensors(tensors, dtype, &device);
    let mut model = Model::load(cfg, vb)?;
    model.set_differentiable(true);
    Ok(model)
}

/// One optimizer step of `model` (built over `vars`) on the micro-batches of a step:
/// forward and backward of each, gradients summed, one AdamW update at `lr`. The loss
/// is the mean over all the step's target tokens. `step` (1-based) names the step in
/// a divergence error, which is raised before any weight changes.
pub fn optimizer_step(
    model: &Model,
    vars: &[(String, Var)],
    optimizer: &mut AdamW,
    batches: &[Batch],
    lr: f64,
    step: u64,
) -> Result<(f64, StepReport)> {
    let weight: f64 = batches.iter().map(target_weight).sum();
    let mut total: Option<GradStore> = None;
    let mut loss = 0.0;
    for batch in batches {
        let (part, grads) = micro_step(model, batch, weight.max(1.0))?;
        loss += part;
        total = Some(match total {
            None => grads,
            Some(acc) => add_grads(acc, grads, vars)?,
        });
    }
    if !loss.is_finite() {
        return Err(Error::NonFinite {
            what: "the loss",
            value: loss,
            step,
        });
    }
    let grads = total.ok_or_else(|| Error::Invalid("a step needs a micro-batch".into()))?;
    let report = optimizer.step(&grads, lr)?;
    Ok((loss, report))
}

/// Forward and backward of one micro-batch; its loss is divided by `weight`, the
/// target count of the whole step. Returns that loss share and the gradients.
fn micro_step(model: &Model, batch: &Batch, weight: f64) -> Result<(f64, GradStore)> {
    let dev = model.device();
    let ids = Tensor::from_slice(&batch.tokens, (batch.rows, batch.len), dev)?;
    let losses = model.next_token_losses(&ids)?;
    let summed = match &batch.loss_mask {
        None => losses.sum_all()?,
        Some(mask) => {
            let mask = Tensor::from_slice(mask, (batch.rows, batch.len), dev)?
                .narrow(1, 1, batch.len - 1)?
                .to_dtype(losses.dtype())?;
            (losses * mask)?.sum_all()?
        }
    };
    let loss = (summed / weight)?;
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok((value, loss.backward()?))
}

/// Sums two gradient stores over the trained variables.
fn add_grads(mut acc: GradStore, mut more: GradStore, vars: &[(String, Var)]) -> Result<GradStore> {
    for (_, var) in vars {
        if let Some(g) = more.remove(var.as_tensor()) {
            let sum = match acc.remove(var.as_tensor()) {
                Some(a) => (a + g)?,
                None => g,
            };
            acc.insert(var.as_tensor(), sum);
        }
    }
    Ok(acc)
}

/// Number of target tokens of `batch` that count towards the loss.
pub fn target_weight(batch: &Batch) -> f64 {
    match &batch.loss_mask {
        None => (batch.rows * batch.len.saturating_sub(1)) as f64,
        Some(mask) => mask
            .chunks(batch.len)
            .map(|row| row.iter().skip(1).map(|&w| w as f64).sum::<f64>())
            .sum(),
    }
}

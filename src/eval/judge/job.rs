//! Pairwise judging as a job (`ckpt eval --tasks alpaca_eval`): the judge, the
//! instruction set and the reference, checked once ([`JudgeJob::check`]), then run over
//! checkpoints ([`run`]) into a [`JudgeReport`] of win rates.

use super::client::{check_base_url, ClientConfig, JudgeClient};
use super::instructions::{
    outputs_for, read_difficulty, read_instructions, read_records, Instruction, InstructionSource,
};
use super::metrics::WinRates;
use super::prompt::JudgeTemplate;
use super::run::{judge_checkpoints, JudgeRun, JudgeSettings, PairwiseTask, Reference};
use crate::checkpoint::{is_checkpoint_dir, Checkpoint};
use crate::error::{Error, Result};
use crate::eval::results::CheckpointLabel;
use crate::eval::run::RunOptions;
use crate::progress::Progress;
use crate::store::Store;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Judge calls in flight at most (a server's queue, not a limit of ours).
pub const MAX_CONCURRENCY: usize = 1024;

/// What pairwise judging needs besides the checkpoints.
#[derive(Debug, Clone)]
pub struct JudgeJob {
    /// The OpenAI-compatible server: URL, key, timeout and retries.
    pub(crate) client: ClientConfig,
    /// The judge's model name; `None`: the one model the server lists.
    pub model: Option<String>,
    /// A checkpoint or a model_outputs.json-style file; `None`: the instructions'
    /// `output` fields.
    pub reference: Option<PathBuf>,
    /// The instruction set (AlpacaEval's layout).
    pub instructions: InstructionSource,
    /// Tokens each checkpoint may generate per answer.
    pub(crate) max_new_tokens: usize,
    /// Judge calls in flight at once.
    pub(crate) concurrency: usize,
    /// Jinja template of the judge's question; `None`: the built-in one.
    pub template: Option<PathBuf>,
    /// `top_logprobs` asked of the judge.
    pub top_logprobs: usize,
    /// Seed of the order in which each instruction's two answers are shown.
    pub seed: u64,
    /// Instruction difficulties (CSV): the LC win rate uses the noreg GLM.
    pub difficulty: Option<PathBuf>,
    /// Directory of the AlpacaEval exports; `None`: `alpaca_eval/` beside the store.
    pub export_dir: Option<PathBuf>,
}

impl JudgeJob {
    /// Every value, before a checkpoint answers anything.
    pub fn check(&self) -> Result<()> {
        check_base_url(&self.client.base_url)?;
        if self.max_new_tokens == 0 {
            return Err(Error::bad_value(
                "--max-new-tokens",
                "--max-new-tokens must be at least 1 (got 0)",
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(Error::bad_value(
                "--concurrency",
                format!(
                    "--concurrency must be from 1 to {MAX_CONCURRENCY} (got {})",
                    self.concurrency
                ),
            ));
        }
        if self.client.timeout.is_zero() {
            return Err(Error::bad_value(
                "--judge-timeout",
                "--judge-timeout must be a positive number of seconds",
            ));
        }
        Ok(())
    }
}

/// Judges every checkpoint against the reference on the first `limit` instructions.
pub fn run(
    job: &JudgeJob,
    limit: Option<usize>,
    checkpoints: &[Checkpoint],
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<JudgeReport> {
    job.check()?;
    let mut instructions = read_instructions(&job.instructions)?;
    if let Some(n) = limit {
        instructions.truncate(n);
    }
    let reference = reference(job.reference.as_deref(), &instructions)?;
    let difficulty = job
        .difficulty
        .as_deref()
        .map(|p| read_difficulty(p, instructions.len()))
        .transpose()?;
    let client = JudgeClient::new(job.client.clone())?;
    let model = match &job.model {
        Some(m) => m.clone(),
        None => only_model(client.models()?)?,
    };
    let template = match &job.template {
        Some(p) => JudgeTemplate::read(p)?,
        None => JudgeTemplate::builtin(),
    };
    let settings = JudgeSettings {
        model,
        template,
        seed: job.seed,
        top_logprobs: job.top_logprobs,
        concurrency: job.concurrency,
    };
    let export_dir = job
        .export_dir
        .clone()
        .unwrap_or_else(|| crate::error::parent_dir(store.path()).join("alpaca_eval"));
    let task = PairwiseTask {
        instructions,
        reference,
        max_new_tokens: job.max_new_tokens,
        difficulty,
        export_dir: Some(export_dir.clone()),
    };
    let run = judge_checkpoints(
        checkpoints,
        &task,
        &settings,
        &client,
        store,
        opts,
        progress,
    )?;
    Ok(JudgeReport::new(run, &settings.model, export_dir))
}

/// The reference of the comparison: a checkpoint, a file of outputs, or the
/// instructions' own `output` fields.
fn reference(arg: Option<&Path>, instructions: &[Instruction]) -> Result<Reference> {
    match arg {
        Some(p) if p.is_dir() || is_checkpoint_dir(p) => Ok(Reference::Checkpoint(Box::new(
            crate::sources::open_single(p, &crate::progress::Silent)?,
        ))),
        Some(file) => {
            let records = read_records(file)?;
            let outputs = outputs_for(instructions, &records, file)?;
            let generator = records
                .iter()
                .find_map(|r| r.generator.clone())
                .or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "reference".into());
            Ok(Reference::Outputs { generator, outputs })
        }
        None => {
            let outputs = instructions
                .iter()
                .enumerate()
                .map(|(i, ins)| {
                    ins.output.clone().ok_or_else(|| {
                        Error::bad_value("--reference", format!(
                            "no --reference given and instruction {i} has no `output` to compare with"
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let generator = instructions
                .iter()
                .find_map(|i| i.generator.clone())
                .unwrap_or_else(|| "reference".into());
            Ok(Reference::Outputs { generator, outputs })
        }
    }
}

/// The judge model when none is named: the server must list exactly one.
fn only_model(models: Vec<String>) -> Result<String> {
    match models.as_slice() {
        [one] => Ok(one.clone()),
        many => Err(Error::bad_value(
            "--judge-model",
            format!(
                "the judge server lists {} models ({}); name one with --judge-model",
                many.len(),
                many.join(", ")
            ),
        )),
    }
}

/// Per checkpoint, its win rates against the reference.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeReport {
    pub(crate) judge: String,
    pub(crate) reference: String,
    pub(crate) judge_calls: usize,
    pub(crate) cached_answers: usize,
    pub(crate) export_dir: PathBuf,
    pub(crate) checkpoints: Vec<JudgedCheckpoint>,
}

/// One checkpoint's judging.
#[derive(Debug, Clone, Serialize)]
pub struct JudgedCheckpoint {
    #[serde(flatten)]
    pub(crate) label: CheckpointLabel,
    pub(crate) generator: String,
    pub(crate) generated: usize,
    pub(crate) no_verdict: usize,
    pub(crate) metrics: Option<WinRates>,
    pub(crate) export: Option<PathBuf>,
    pub(crate) error: Option<String>,
}

impl JudgeReport {
    fn new(run: JudgeRun, judge: &str, export_dir: PathBuf) -> Self {
        let mut checkpoints: Vec<JudgedCheckpoint> = run
            .outcomes
            .into_iter()
            .map(|o| JudgedCheckpoint {
                label: o.row.into(),
                generator: o.generator,
                generated: o.generated,
                no_verdict: o.no_verdict,
                metrics: o.metrics,
                export: o.export,
                error: o.error,
            })
            .collect();
        checkpoints.sort_by(|a, b| a.label.sort_key().cmp(&b.label.sort_key()));
        Self {
            judge: judge.to_string(),
            reference: run.reference,
            judge_calls: run.judge_calls,
            cached_answers: run.cached_answers,
            export_dir,
            checkpoints,
        }
    }

    /// Whether every checkpoint was judged.
    pub fn all_ok(&self) -> bool {
        self.checkpoints.iter().all(|c| c.error.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JudgeJob {
        JudgeJob {
            client: ClientConfig::new("http://127.0.0.1:8000/v1"),
            model: None,
            reference: None,
            instructions: InstructionSource::File("instructions.json".into()),
            max_new_tokens: 512,
            concurrency: 8,
            template: None,
            top_logprobs: 20,
            seed: 0,
            difficulty: None,
            export_dir: None,
        }
    }

    #[test]
    fn check_rejects_bad_values() {
        assert!(job().check().is_ok());
        let none_in_flight = JudgeJob {
            concurrency: 0,
            ..job()
        };
        assert!(none_in_flight
            .check()
            .unwrap_err()
            .to_string()
            .contains("--concurrency"));
        let mut no_host = job();
        no_host.client.base_url = "ftp://".into();
        assert!(no_host.check().is_err());
        let mut instant = job();
        instant.client.timeout = std::time::Duration::ZERO;
        assert!(instant
            .check()
            .unwrap_err()
            .to_string()
            .contains("--judge-timeout"));
    }
}

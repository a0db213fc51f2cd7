//! `ckpt eval ... --tasks alpaca_eval`: the judge's flags, turned into a
//! [`PairwiseTask`] and [`JudgeSettings`], and the table of win rates.

use super::eval::schedule_label;
use super::output::{outln, print_json, table};
use crate::checkpoint::{is_checkpoint_dir, Checkpoint};
use crate::eval::run::RunOptions;
use crate::judge::client::{ApiKey, ClientConfig, JudgeClient};
use crate::judge::instructions::{
    outputs_for, read_difficulty, read_instructions, read_records, InstructionSource,
};
use crate::judge::metrics::WinRates;
use crate::judge::prompt::JudgeTemplate;
use crate::judge::run::{judge_checkpoints, JudgeRun, JudgeSettings, PairwiseTask, Reference};
use crate::progress::Progress;
use crate::store::Store;
use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The task name that selects pairwise judging.
pub use crate::judge::run::TASK;

#[derive(Debug, Args)]
#[command(next_help_heading = "Pairwise judging (--tasks alpaca_eval)")]
pub struct JudgeArgs {
    /// Base URL of the judge, an OpenAI-compatible server (vLLM, llama.cpp, TGI, OpenAI,
    /// `ckpt serve`), with or without /v1.
    #[arg(long, value_name = "URL", value_parser = parse_judge_url)]
    judge_url: Option<String>,
    /// The judge's model name [default: the one model the server lists].
    #[arg(long, requires = "judge_url")]
    judge_model: Option<String>,
    /// Environment variable holding the judge's API key (none sent when unset).
    #[arg(
        long,
        default_value = "OPENAI_API_KEY",
        value_name = "VAR",
        requires = "judge_url"
    )]
    judge_key_env: String,
    /// What the checkpoints are compared with: a checkpoint (it answers the instructions
    /// too) or a model_outputs.json-style file [default: the instructions' `output`].
    #[arg(long, value_name = "CKPT|FILE", requires = "judge_url")]
    reference: Option<PathBuf>,
    /// Instruction set in AlpacaEval's layout: a JSON/JSONL file, or a Hub dataset
    /// ORG/NAME[:FILE].
    #[arg(
        long,
        default_value = "tatsu-lab/alpaca_eval",
        value_name = "FILE|HUB_ID",
        requires = "judge_url"
    )]
    instructions: String,
    /// Tokens each checkpoint may generate per answer.
    #[arg(long, default_value_t = 512, requires = "judge_url", value_parser = super::values::at_least_one)]
    max_new_tokens: usize,
    /// Judge calls in flight at once.
    #[arg(long, default_value_t = 8, requires = "judge_url", value_parser = super::values::usize_in(1, 1024))]
    concurrency: usize,
    /// Jinja template of the judge's question [default: tasks/judge_pairwise.j2].
    #[arg(long, value_name = "FILE", requires = "judge_url")]
    judge_template: Option<PathBuf>,
    /// top_logprobs asked of the judge (the preference is read from them).
    #[arg(long, default_value_t = 20, requires = "judge_url")]
    judge_top_logprobs: usize,
    /// Seed of the order in which each instruction's two answers are shown.
    #[arg(long, default_value_t = 0, requires = "judge_url")]
    judge_seed: u64,
    /// Seconds one judge call may take.
    #[arg(long, default_value_t = 120.0, value_parser = parse_timeout, requires = "judge_url")]
    judge_timeout: f64,
    /// Retries of a failed judge call (backoff doubling from 1 s, honouring Retry-After).
    #[arg(long, default_value_t = 6, requires = "judge_url")]
    judge_retries: u32,
    /// First backoff in milliseconds (tests shorten it).
    #[arg(long, default_value_t = 1000, hide = true)]
    judge_backoff_ms: u64,
    /// Instruction difficulties (CSV, one per instruction): the LC win rate uses
    /// AlpacaEval's length_controlled_noreg GLM instead of length_controlled_minimal.
    #[arg(long, value_name = "CSV", requires = "judge_url")]
    difficulty: Option<PathBuf>,
    /// Directory of the AlpacaEval exports [default: alpaca_eval/ beside the store].
    #[arg(long, value_name = "DIR", requires = "judge_url")]
    judge_out: Option<PathBuf>,
}

/// `--judge-url`: checked when the command line is parsed, so that a typo is a usage
/// error at once rather than six retries of something that is not a network failure.
fn parse_judge_url(s: &str) -> Result<String, String> {
    crate::judge::client::check_base_url(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// `--judge-timeout`: a positive, finite number of seconds (0 would time out every
/// call, through every retry).
fn parse_timeout(s: &str) -> Result<f64, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && Duration::try_from_secs_f64(secs).is_ok()) {
        return Err(format!(
            "{s} is not a positive, finite number of seconds (e.g. 120)"
        ));
    }
    Ok(secs)
}

impl JudgeArgs {
    /// Refuses judging without a judge before any work starts.
    /// Whether a judge was given (the `sft` suite then includes the pairwise judging).
    pub fn has_url(&self) -> bool {
        self.judge_url.is_some()
    }

    pub fn check(&self) -> anyhow::Result<()> {
        if self.judge_url.is_none() {
            bail!("--tasks {TASK} needs --judge-url URL (an OpenAI-compatible server)");
        }
        Ok(())
    }
}

/// Judges every checkpoint; returns the report and whether all checkpoints succeeded.
pub fn run(
    args: &JudgeArgs,
    limit: Option<usize>,
    checkpoints: &[Checkpoint],
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> anyhow::Result<JudgeReport> {
    args.check()?;
    let mut instructions = read_instructions(&InstructionSource::parse(&args.instructions))?;
    if let Some(n) = limit {
        instructions.truncate(n);
    }
    let reference = reference(args.reference.as_deref(), &instructions)?;
    let difficulty = args
        .difficulty
        .as_deref()
        .map(|p| read_difficulty(p, instructions.len()))
        .transpose()?;
    let mut cfg = ClientConfig::new(args.judge_url.as_deref().expect("checked"));
    cfg.api_key = ApiKey::from_env(&args.judge_key_env);
    cfg.timeout = Duration::try_from_secs_f64(args.judge_timeout)
        .context("--judge-timeout must be a positive number of seconds")?;
    cfg.retries = args.judge_retries;
    cfg.backoff = Duration::from_millis(args.judge_backoff_ms);
    let client = JudgeClient::new(cfg)?;
    let model = match &args.judge_model {
        Some(m) => m.clone(),
        None => only_model(client.models()?)?,
    };
    let template = match &args.judge_template {
        Some(p) => JudgeTemplate::read(p)?,
        None => JudgeTemplate::builtin(),
    };
    let settings = JudgeSettings {
        model,
        template,
        seed: args.judge_seed,
        top_logprobs: args.judge_top_logprobs,
        concurrency: args.concurrency.max(1),
    };
    let export_dir = args
        .judge_out
        .clone()
        .unwrap_or_else(|| crate::error::parent_dir(store.path()).join("alpaca_eval"));
    let task = PairwiseTask {
        instructions,
        reference,
        max_new_tokens: args.max_new_tokens,
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

/// The reference of the comparison (see `--reference`).
fn reference(
    arg: Option<&Path>,
    instructions: &[crate::judge::instructions::Instruction],
) -> anyhow::Result<Reference> {
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
                    ins.output.clone().with_context(|| {
                        format!("no --reference given and instruction {i} has no `output` to compare with")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let generator = instructions
                .iter()
                .find_map(|i| i.generator.clone())
                .unwrap_or_else(|| "reference".into());
            Ok(Reference::Outputs { generator, outputs })
        }
    }
}

fn only_model(models: Vec<String>) -> anyhow::Result<String> {
    match models.as_slice() {
        [one] => Ok(one.clone()),
        many => bail!(
            "the judge server lists {} models ({}); name one with --judge-model",
            many.len(),
            many.join(", ")
        ),
    }
}

/// What is printed: per checkpoint, its win rates against the reference.
#[derive(Serialize)]
pub struct JudgeReport {
    pub judge: String,
    pub reference: String,
    pub judge_calls: usize,
    pub cached_answers: usize,
    pub export_dir: PathBuf,
    pub checkpoints: Vec<JudgedCheckpoint>,
}

#[derive(Serialize)]
pub struct JudgedCheckpoint {
    pub path: String,
    pub run: String,
    pub step: Option<u64>,
    pub schedule: Option<String>,
    pub alpha: Option<f64>,
    pub fingerprint: String,
    pub generator: String,
    pub generated: usize,
    pub no_verdict: usize,
    pub metrics: Option<WinRates>,
    pub export: Option<PathBuf>,
    pub error: Option<String>,
}

impl JudgeReport {
    fn new(run: JudgeRun, judge: &str, export_dir: PathBuf) -> Self {
        let mut checkpoints: Vec<JudgedCheckpoint> = run
            .outcomes
            .into_iter()
            .map(|o| JudgedCheckpoint {
                path: o.row.path,
                run: o.row.run,
                step: o.row.step,
                schedule: o.row.schedule,
                alpha: o.row.alpha,
                fingerprint: o.row.fingerprint,
                generator: o.generator,
                generated: o.generated,
                no_verdict: o.no_verdict,
                metrics: o.metrics,
                export: o.export,
                error: o.error,
            })
            .collect();
        checkpoints.sort_by(|a, b| (&a.run, a.step, &a.path).cmp(&(&b.run, b.step, &b.path)));
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

    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            return print_json(self);
        }
        let mut t = table(&[
            "run",
            "step",
            "schedule",
            "win rate",
            "LC win rate",
            "discrete",
            "W / L / D",
            "n",
        ]);
        for c in &self.checkpoints {
            let mut row = vec![
                c.run.clone(),
                c.step.map(|s| s.to_string()).unwrap_or_default(),
                schedule_label(c.schedule.as_deref(), c.alpha),
            ];
            match &c.metrics {
                Some(m) => row.extend([
                    with_se(m.win_rate, m.standard_error),
                    with_se(m.length_controlled_winrate, m.lc_standard_error),
                    percent(m.discrete_win_rate),
                    format!("{} / {} / {}", m.n_wins, m.n_wins_base, m.n_draws),
                    m.n_total.to_string(),
                ]),
                None => row.extend([
                    "failed".to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]),
            }
            t.add_row(row);
        }
        outln!("{t}");
        for c in &self.checkpoints {
            if let Some(e) = &c.error {
                eprintln!("error: {}: {e}", c.path);
            } else if c.no_verdict > 0 {
                eprintln!(
                    "warning: {}: the judge gave no readable verdict on {} instructions (left out)",
                    c.generator, c.no_verdict
                );
            }
        }
        outln!(
            "alpaca_eval: judge {} vs reference {}; {} judge calls, {} answers from the store; AlpacaEval files in {}",
            self.judge,
            self.reference,
            self.judge_calls,
            self.cached_answers,
            self.export_dir.display()
        );
        Ok(())
    }
}

fn percent(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

fn with_se(x: Option<f64>, se: Option<f64>) -> String {
    match (x, se) {
        (Some(v), Some(s)) => format!("{v:.1} ± {s:.1}"),
        (Some(v), None) => format!("{v:.1}"),
        _ => "-".into(),
    }
}

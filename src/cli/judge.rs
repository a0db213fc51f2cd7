//! `ckpt eval ... --tasks alpaca_eval`: the judge's flags, turned into a [`JudgeJob`],
//! and the table of win rates.

use super::output::{outln, table};
use crate::eval::judge::client::{ApiKey, ClientConfig};
use crate::eval::judge::instructions::InstructionSource;
use crate::eval::judge::job::{JudgeJob, JudgeReport};
use crate::report::schedule_label;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// The task name that selects pairwise judging.
pub(crate) use crate::eval::judge::run::TASK;

#[derive(Debug, Args)]
#[command(next_help_heading = "Pairwise judging (--tasks alpaca_eval)")]
pub(crate) struct JudgeArgs {
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
    crate::eval::judge::client::check_base_url(s).map_err(|e| e.to_string())?;
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
    /// The judging these flags ask for; `None` without `--judge-url`.
    pub(crate) fn job(&self) -> anyhow::Result<Option<JudgeJob>> {
        let Some(url) = &self.judge_url else {
            return Ok(None);
        };
        let mut client = ClientConfig::new(url);
        client.api_key = ApiKey::from_env(&self.judge_key_env);
        client.timeout = Duration::try_from_secs_f64(self.judge_timeout)
            .context("--judge-timeout must be a positive number of seconds")?;
        client.retries = self.judge_retries;
        client.backoff = Duration::from_millis(self.judge_backoff_ms);
        Ok(Some(JudgeJob {
            client,
            model: self.judge_model.clone(),
            reference: self.reference.clone(),
            instructions: InstructionSource::parse(&self.instructions),
            max_new_tokens: self.max_new_tokens,
            concurrency: self.concurrency,
            template: self.judge_template.clone(),
            top_logprobs: self.judge_top_logprobs,
            seed: self.judge_seed,
            difficulty: self.difficulty.clone(),
            export_dir: self.judge_out.clone(),
        }))
    }
}

/// The table of win rates, warnings for checkpoints without verdicts, and a summary.
pub(crate) fn print(report: &JudgeReport) {
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
    for c in &report.checkpoints {
        let mut row = vec![
            c.label.run.clone(),
            c.label.step.map(|s| s.to_string()).unwrap_or_default(),
            schedule_label(c.label.schedule.as_deref(), c.label.alpha),
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
    for c in &report.checkpoints {
        if let Some(e) = &c.error {
            eprintln!("error: {}: {e}", c.label.path);
        } else if c.no_verdict > 0 {
            eprintln!(
                "warning: {}: the judge gave no readable verdict on {} instructions (left out)",
                c.generator, c.no_verdict
            );
        }
    }
    outln!(
            "alpaca_eval: judge {} vs reference {}; {} judge calls, {} answers from the store; AlpacaEval files in {}",
            report.judge,
            report.reference,
            report.judge_calls,
            report.cached_answers,
            report.export_dir.display()
        );
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

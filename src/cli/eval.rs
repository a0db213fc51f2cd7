//! `ckpt eval PATH... --tasks LIST | --suite NAME`: every checkpoint found under the
//! paths, scored on every task, through the store. The task `alpaca_eval` is
//! pairwise judging (`super::judge`), with its own flags and table.

use super::grid::{Grid, TableFormat};
use super::output::{out, outln, print_json, Ui};
use crate::eval::headline::{format_metric, is_percent, Headline};
use crate::eval::job::EvalJob;
use crate::eval::relative::{schedule_label, RelativeTable};
use crate::eval::results::EvalReport;
use crate::tokenizer::{AddBos, EncodePolicy};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `ckpt store status` names tasks as `ckpt eval` does.

#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// Checkpoints, or directories searched for checkpoints (runs, run collections), or
    /// Hub repositories: hf://ORG/NAME[@REVISION] (with --revisions: a run of branches).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    hub_sources: super::values::HubArgs,
    /// Tasks: built-in names, group names (mmlu), paths to task TOML files, or
    /// alpaca_eval (pairwise judging, see below).
    #[arg(long, value_delimiter = ',', required_unless_present = "suite")]
    tasks: Vec<String>,
    /// A suite of the paper: pt, mt or sft.
    #[arg(long, conflicts_with = "tasks")]
    suite: Option<String>,
    /// Directory of task TOML files; they take precedence over built-ins of the same name.
    #[arg(long)]
    tasks_dir: Option<PathBuf>,
    /// A task's data file: TASK=FILE (evaluated split) or TASK:SPLIT=FILE.
    #[arg(long = "data")]
    data: Vec<String>,
    /// Data directory: DIR/<dataset_path>/<dataset_name>/<split>.{jsonl,json,parquet}.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Download missing data from the Hugging Face Hub (HF_ENDPOINT, HF_HOME, HF_TOKEN).
    #[arg(long)]
    hub: bool,
    /// Directory of few-shot exemplar files (<task>.jsonl) for tasks whose exemplars
    /// lm-eval hard-codes (gsm8k_cot, bbh, truthfulqa's preamble).
    #[arg(long)]
    fewshot_dir: Option<PathBuf>,
    /// Score only the first N docs of each task.
    #[arg(long, value_parser = super::values::at_least_one)]
    limit: Option<usize>,
    /// Override every task's number of few-shot exemplars.
    #[arg(long)]
    num_fewshot: Option<usize>,
    /// Cap every generative task's new tokens (lm-eval's `--gen_kwargs max_gen_toks=N`).
    #[arg(long, value_name = "N", value_parser = super::values::at_least_one)]
    max_gen_toks: Option<usize>,
    /// The results store (default: ckpt.sqlite in the current directory); a directory
    /// means DIR/ckpt.sqlite, into which the directory's other stores (the shards of a
    /// sweep) are merged first, exactly, so that their results print and are not
    /// computed again.
    #[arg(long)]
    store: Option<PathBuf>,
    #[command(flatten)]
    store_timeout: super::values::StoreTimeout,
    #[command(flatten)]
    shard: super::values::ShardArgs,
    /// Upper bound on rows x tokens of one forward pass.
    #[arg(long, default_value_t = 4096)]
    batch_tokens: usize,
    /// Model inputs at most (default: the config's max_position_embeddings).
    #[arg(long)]
    max_length: Option<usize>,
    /// Requests answered between two commits to the store (smaller: less lost on a kill).
    #[arg(long, default_value_t = crate::eval::run::REQUESTS_PER_COMMIT, hide = true)]
    commit_every: usize,
    #[command(flatten)]
    model: super::values::ModelArgs,
    /// Write lm-eval-style results JSON per checkpoint, per-sample JSONL and a CSV here.
    #[arg(long)]
    output: Option<PathBuf>,
    /// The run the relative table compares against (default: the best decayed run).
    #[arg(long)]
    baseline: Option<String>,
    /// Print results as JSON (the same as --format json).
    #[arg(long)]
    json: bool,
    /// How tables print: table (long, one line per metric, when wider than the
    /// terminal), wide, long, md, csv, json.
    #[arg(long, value_enum, default_value = "table")]
    format: super::grid::TableFormat,
    #[command(flatten)]
    judge: super::judge::JudgeArgs,
}

/// lm-eval's tokenization arguments (`--model_args add_bos_token=...,prefix_token_id=...`).
#[derive(Debug, Args, Clone)]
pub(crate) struct TokenizationArgs {
    /// Add BOS to every context as lm-eval's add_bos_token does: auto (the tokenizer's
    /// defaults, as with lm-eval's add_bos_token unset), true or false.
    #[arg(long, value_name = "auto|true|false", default_value = "auto")]
    pub(crate) add_bos_token: AddBos,
    /// The token an empty context is conditioned on (lm-eval's prefix_token_id;
    /// default: BOS, else EOS).
    #[arg(long, value_name = "ID")]
    pub(crate) prefix_token_id: Option<u32>,
}

impl TokenizationArgs {
    /// The policy these flags ask for.
    pub(crate) fn policy(&self) -> EncodePolicy {
        EncodePolicy {
            add_bos_token: self.add_bos_token,
            prefix_token_id: self.prefix_token_id,
        }
    }
}

impl EvalArgs {
    /// The flags as a job: names parsed into devices, types, a shard and a judge.
    fn job(&self) -> anyhow::Result<EvalJob> {
        Ok(EvalJob {
            device: crate::device::parse_device(&self.model.device)?,
            dtype: crate::device::parse_dtype(&self.model.dtype)?,
            shard: self.shard.resolve()?,
            judge: self.judge.job()?,
            paths: self.paths.clone(),
            hub_sources: self.hub_sources.options(),
            retention: self.hub_sources.retention(),
            tasks: self.tasks.clone(),
            suite: self.suite.clone(),
            tasks_dir: self.tasks_dir.clone(),
            data: self.data.clone(),
            data_dir: self.data_dir.clone(),
            download_data: self.hub,
            fewshot_dir: self.fewshot_dir.clone(),
            limit: self.limit,
            num_fewshot: self.num_fewshot,
            max_gen_toks: self.max_gen_toks,
            store: self.store.clone(),
            store_timeout: self.store_timeout.duration(),
            batch_tokens: self.batch_tokens,
            max_length: self.max_length,
            commit_every: self.commit_every,
            policy: self.model.tokenization.policy(),
            output: self.output.clone(),
            baseline: self.baseline.clone(),
        })
    }
}

pub(crate) fn run(args: &EvalArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let job = args.job()?;
    let bar = ui.bar("scoring");
    let outcome = crate::eval::job::run(&job, &*bar, ui.bar("downloading"))?;
    bar.finish();
    let ok = outcome.all_ok();
    let json = args.json || args.format == TableFormat::Json;
    match (json, outcome.report, outcome.judged) {
        (true, Some(r), None) => print_json(&r)?,
        (true, r, j) => print_json(&serde_json::json!({
            "checkpoints": r.map(|r| r.checkpoints).unwrap_or_default(),
            super::judge::TASK: j,
        }))?,
        (false, r, j) => {
            if let Some(r) = r {
                print_report(&r, &outcome.store, args.format);
            }
            if let Some(j) = j {
                super::judge::print(&j);
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The table of metrics, errors, and on a terminal the relative table and a summary.
fn print_report(report: &EvalReport, store: &Path, format: TableFormat) {
    let cols = report.columns();
    let mut header = vec!["run".to_string(), "step".into(), "schedule".into()];
    header.extend(cols.iter().map(Headline::label));
    let mut rows = Vec::new();
    for c in &report.checkpoints {
        let mut row = vec![
            c.label.run.clone(),
            c.label.step.map(|s| s.to_string()).unwrap_or_default(),
            schedule_label(c.label.schedule.as_deref(), c.label.alpha),
        ];
        for h in &cols {
            let cell = match (&c.error, c.metrics.iter().find(|m| h.matches(m))) {
                (_, Some(m)) => format_metric(m),
                (Some(_), None) => "failed".into(),
                (None, None) => String::new(),
            };
            row.push(cell);
        }
        rows.push(row);
    }
    let grid = Grid {
        header,
        rows,
        keys: 3,
    };
    out!("{}", with_newline(grid.render(format)));
    for c in report.checkpoints.iter().filter(|c| c.error.is_some()) {
        eprintln!(
            "error: {}: {}",
            c.label.path,
            c.error.as_deref().unwrap_or_default()
        );
    }
    // Data formats hold the one table; the rest goes to people, on a terminal.
    let for_people = matches!(
        format,
        TableFormat::Table | TableFormat::Wide | TableFormat::Long
    );
    if !for_people {
        return;
    }
    if let Some(rel) = &report.relative {
        print_relative(rel, &cols, format);
    }
    let computed: usize = report.checkpoints.iter().map(|c| c.computed_requests).sum();
    outln!(
        "{} checkpoints, {} tasks; {computed} requests computed, the rest from {}",
        report.checkpoints.len(),
        cols.len(),
        store.display()
    );
}

/// Deltas from the baseline in points, with the paired test's p-value.
fn print_relative(rel: &RelativeTable, cols: &[Headline], format: TableFormat) {
    let mut header = vec!["run".to_string(), "schedule".into()];
    header.extend(rel.tasks.iter().zip(&rel.baselines).map(|(t, b)| match b {
        Some(b) => format!("{t} Δ vs {b}"),
        None => format!("{t} Δ"),
    }));
    let mut rows = Vec::new();
    for (run, label, cells) in &rel.rows {
        let mut row = vec![run.clone(), label.clone()];
        row.extend(cells.iter().zip(cols).map(|(c, h)| {
            let scale = if is_percent(&h.metric) { 100.0 } else { 1.0 };
            match c {
                Some(c) => match &c.test {
                    Some(test) => format!("{:+.2} (p={:.2})", scale * c.delta, test.p_value),
                    None => format!("{:+.2}", scale * c.delta),
                },
                None => String::new(),
            }
        }));
        rows.push(row);
    }
    outln!("Relative to the best decayed schedule (accuracies in points; paired test on the same items):");
    let grid = Grid {
        header,
        rows,
        keys: 2,
    };
    out!("{}", with_newline(grid.render(format)));
}

/// `text` ending in exactly one newline.
fn with_newline(text: String) -> String {
    format!("{}\n", text.trim_end_matches('\n'))
}

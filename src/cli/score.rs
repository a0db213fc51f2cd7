//! `ckpt score CKPT --text FILE`: rolling log-likelihood of texts.

use super::output::{outln, print_json, table, Ui};
use crate::score::job::{ScoreEvent, ScoreJob, ScoreOutcome};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct ScoreArgs {
    /// Checkpoint directory (config.json + weights + tokenizer.json).
    checkpoint: PathBuf,
    /// Texts to score: .txt (one per non-empty line), .jsonl / .json (field "text").
    #[arg(long)]
    text: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Include every token's log-probability in the JSON output.
    #[arg(long)]
    per_token: bool,
    /// Tokenizer file to use instead of the checkpoint's tokenizer.json.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Model inputs per window [default: the config's max_position_embeddings].
    #[arg(long)]
    max_length: Option<usize>,
    /// Upper bound on batch rows x padded length per forward pass.
    #[arg(long, default_value_t = 4096)]
    batch_tokens: usize,
    #[command(flatten)]
    model: super::values::ModelArgs,
    #[command(flatten)]
    shard: super::values::ShardArgs,
}

impl ScoreArgs {
    /// The flags as a job: names parsed into devices, types and a shard.
    fn job(&self) -> anyhow::Result<ScoreJob> {
        Ok(ScoreJob {
            device: crate::device::parse_device(&self.model.device)?,
            dtype: crate::device::parse_dtype(&self.model.dtype)?,
            shard: self.shard.resolve()?,
            checkpoint: self.checkpoint.clone(),
            text: self.text.clone(),
            per_token: self.per_token,
            tokenizer: self.tokenizer.clone(),
            max_length: self.max_length,
            batch_tokens: self.batch_tokens,
            policy: self.model.tokenization.policy(),
        })
    }
}

pub(crate) fn run(args: &ScoreArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let job = args.job()?;
    let mut bar = None;
    let out = crate::score::job::run(
        &job,
        ui.bar("downloading").as_ref(),
        &mut |event| match event {
            ScoreEvent::Started { texts } => {
                bar = Some(ui.progress(texts as u64, "scoring windows"))
            }
            ScoreEvent::Scored(n) => bar.iter().for_each(|b| b.inc(n as u64)),
        },
    )?;
    bar.iter().for_each(|b| b.finish_and_clear());
    if args.json {
        print_json(&out)?;
    } else {
        print_tables(&out);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_tables(out: &ScoreOutcome) {
    let mut t = table(&["text", "tokens", "loglikelihood", "mean loss", "perplexity"]);
    for (i, s) in out.report.texts.iter().enumerate() {
        t.add_row(vec![
            (i + 1).to_string(),
            s.tokens.to_string(),
            format!("{:.4}", s.loglikelihood),
            format!("{:.4}", s.mean_loss),
            format!("{:.3}", s.perplexity),
        ]);
    }
    outln!("{t}");
    let a = &out.report.aggregate;
    outln!(
        "{} texts, {} tokens: loglikelihood {:.4}, mean loss {:.4}, perplexity {:.3}, \
         word perplexity {:.3}, byte perplexity {:.4}, bits per byte {:.4}",
        a.texts,
        a.tokens,
        a.loglikelihood,
        a.mean_loss,
        a.token_perplexity,
        a.word_perplexity,
        a.byte_perplexity,
        a.bits_per_byte
    );
    outln!(
        "{} ({}), max length {}, {:.1}s, {:.0} tokens/s",
        out.checkpoint,
        &out.fingerprint[..12],
        out.report.max_length,
        out.seconds,
        out.tokens_per_second
    );
}

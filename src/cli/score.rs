//! `ckpt score CKPT --text FILE`: rolling log-likelihood of texts.

use super::output::{outln, print_json, table, Ui};
use crate::score::{score_texts, ScoreOptions, ScoreReport};
use crate::tokenizer::TextTokenizer;
use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct ScoreArgs {
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
    tokenization: super::eval::TokenizationArgs,
    /// cpu, cuda or cuda:N.
    #[arg(long, env = "CKPT_DEVICE", default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[command(flatten)]
    shard: super::values::ShardArgs,
}

#[derive(Serialize)]
struct Output<'a> {
    checkpoint: String,
    /// `I/N` when this is a shard's part.
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<String>,
    /// With --shard: the texts' indices in the file, in the order of `texts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    text_indices: Option<Vec<usize>>,
    fingerprint: String,
    dtype: &'a str,
    seconds: f64,
    tokens_per_second: f64,
    #[serde(flatten)]
    report: &'a ScoreReport,
}

pub fn run(args: &ScoreArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let device = crate::device::parse_device(&args.device)?;
    let dtype = crate::device::parse_dtype(&args.dtype)?;
    if args.batch_tokens == 0 {
        anyhow::bail!("--batch-tokens must be at least 1 (got 0)");
    }
    if args.max_length == Some(0) {
        anyhow::bail!("--max-length must be at least 1 (got 0)");
    }
    let shard = args.shard.resolve()?;
    let ckpt = crate::sources::open_single(&args.checkpoint, ui.bar("downloading").as_ref())?;
    let mut texts = crate::texts::read_texts(&args.text)?;
    // A shard scores its share of the texts, balanced by length; each keeps its index
    // in the file, so the shards' outputs join back in order.
    let text_indices = shard.map(|s| {
        let costs: Vec<u64> = texts.iter().map(|t| t.len() as u64 + 1).collect();
        let mine = s.select(&costs);
        let indices: Vec<usize> = (0..texts.len()).filter(|&i| mine[i]).collect();
        texts = indices.iter().map(|&i| texts[i].clone()).collect();
        indices
    });
    let cfg = ckpt.config()?;
    let tokenizer = TextTokenizer::load_with(
        &ckpt.dir,
        args.tokenizer.as_deref(),
        cfg.bos_token_id,
        cfg.eos_token_id,
        args.tokenization.policy(),
    )?;
    let model = ckpt.load_model(&device, dtype)?;
    let fingerprint = ckpt.fingerprint()?;

    let opts = ScoreOptions {
        max_length: args.max_length,
        batch_tokens: args.batch_tokens,
        keep_token_logprobs: args.per_token,
    };
    let started = Instant::now();
    let bar = ui.progress(texts.len() as u64, "scoring windows");
    let report = score_texts(&model, &tokenizer, &texts, &opts, &|n| bar.inc(n as u64))
        .with_context(|| format!("scoring {}", args.text.display()))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let out = Output {
        checkpoint: ckpt.name(),
        shard: shard.map(|s| format!("{}/{}", s.index, s.count)),
        text_indices,
        fingerprint,
        dtype: &args.dtype,
        seconds,
        tokens_per_second: report.aggregate.tokens as f64 / seconds.max(1e-9),
        report: &report,
    };
    if args.json {
        print_json(&out)?;
    } else {
        print_tables(&out);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_tables(out: &Output) {
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

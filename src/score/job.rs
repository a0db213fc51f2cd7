//! `ckpt score` as a job: a checkpoint, a file of texts and the scoring settings,
//! checked once ([`ScoreJob::check`]) and run ([`run`]) into a [`ScoreOutcome`].
//!
//! ```ignore
//! let outcome = ckpt::score::job::run(&job, &ckpt::hub::Silent, &mut |_| {})?;
//! println!("{}", outcome.report.aggregate.mean_loss);
//! ```

use super::{score_texts, ScoreOptions, ScoreReport};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::shard::Shard;
use crate::tokenizer::{EncodePolicy, TextTokenizer};
use candle_core::{DType, Device};
use serde::Serialize;
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Instant;

/// Rolling log-likelihood of every text of a file under one checkpoint.
#[derive(Debug, Clone)]
pub struct ScoreJob {
    /// Checkpoint directory, or a Hub source (`hf://ORG/NAME[@REVISION]`).
    pub checkpoint: PathBuf,
    /// Texts: .txt (one per non-empty line), .jsonl / .json (field "text").
    pub text: PathBuf,
    /// Keep every token's log-probability in the outcome.
    pub per_token: bool,
    /// Tokenizer file used instead of the checkpoint's `tokenizer.json`.
    pub tokenizer: Option<PathBuf>,
    /// Model inputs per window; `None`: the config's `max_position_embeddings`.
    pub(crate) max_length: Option<usize>,
    /// Upper bound on batch rows x padded length per forward pass.
    pub(crate) batch_tokens: usize,
    /// How texts become token ids.
    pub policy: EncodePolicy,
    pub device: Device,
    pub dtype: DType,
    /// This process's share of the texts (balanced by length), if the work is split.
    pub shard: Option<Shard>,
}

/// What a score job reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreEvent {
    /// Scoring starts on this many texts.
    Started { texts: usize },
    /// This many more windows were scored.
    Scored(usize),
}

/// The scores of a job's texts, with where they came from and how fast.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreOutcome {
    pub(crate) checkpoint: String,
    /// `I/N` when this is a shard's part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) shard: Option<String>,
    /// With a shard: the texts' indices in the file, in the order of `texts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text_indices: Option<Vec<usize>>,
    pub(crate) fingerprint: String,
    pub(crate) dtype: String,
    pub(crate) seconds: f64,
    pub(crate) tokens_per_second: f64,
    #[serde(flatten)]
    pub(crate) report: ScoreReport,
}

impl ScoreJob {
    /// The window sizes: a zero would only fail (or trip an assertion) deep inside
    /// scoring, after the model is loaded.
    pub fn check(&self) -> Result<()> {
        check_sizes(self.batch_tokens, self.max_length)
    }
}

/// `--batch-tokens` and `--max-length` at least 1 (shared with `ckpt eval`, whose
/// rolling tasks score the same way).
pub fn check_sizes(batch_tokens: usize, max_length: Option<usize>) -> Result<()> {
    if batch_tokens == 0 {
        return Err(Error::bad_value(
            "--batch-tokens",
            "--batch-tokens must be at least 1 (got 0)",
        ));
    }
    if max_length == Some(0) {
        return Err(Error::bad_value(
            "--max-length",
            "--max-length must be at least 1 (got 0)",
        ));
    }
    Ok(())
}

/// Scores the job's texts (its shard's share of them) with its checkpoint.
pub fn run(
    job: &ScoreJob,
    transfer: &dyn Progress,
    on_event: &mut dyn FnMut(ScoreEvent),
) -> Result<ScoreOutcome> {
    job.check()?;
    let ckpt = crate::sources::open_single(&job.checkpoint, transfer)?;
    let mut texts = crate::texts::read_texts(&job.text)?;
    // A shard scores its share of the texts, balanced by length; each keeps its index
    // in the file, so the shards' outputs join back in order.
    let text_indices = job.shard.map(|s| {
        let costs: Vec<u64> = texts.iter().map(|t| t.len() as u64 + 1).collect();
        let mine = s.select(&costs);
        let indices: Vec<usize> = (0..texts.len()).filter(|&i| mine[i]).collect();
        texts = indices.iter().map(|&i| texts[i].clone()).collect();
        indices
    });
    let cfg = ckpt.config()?;
    let tokenizer = TextTokenizer::load_with(
        &ckpt.dir,
        job.tokenizer.as_deref(),
        cfg.bos_token_id,
        cfg.eos_token_id,
        job.policy,
    )?;
    let model = ckpt.load_for_inference(&job.device, job.dtype)?;
    let fingerprint = ckpt.fingerprint()?;
    let opts = ScoreOptions {
        max_length: job.max_length,
        batch_tokens: job.batch_tokens,
        keep_token_logprobs: job.per_token,
    };
    let started = Instant::now();
    on_event(ScoreEvent::Started { texts: texts.len() });
    // `score_texts` reports through a shared closure; the sink is called from it alone.
    let sink = RefCell::new(on_event);
    let report = score_texts(&model, &tokenizer, &texts, &opts, &|n| {
        (sink.borrow_mut())(ScoreEvent::Scored(n))
    })
    .map_err(|e| e.map_message(|m| format!("scoring {}: {m}", job.text.display())))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(ScoreOutcome {
        checkpoint: ckpt.name(),
        shard: job.shard.map(|s| format!("{}/{}", s.index, s.count)),
        text_indices,
        fingerprint,
        dtype: job.dtype.as_str().to_string(),
        seconds,
        tokens_per_second: report.aggregate.tokens as f64 / seconds.max(1e-9),
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ScoreJob {
        ScoreJob {
            checkpoint: "ckpt".into(),
            text: "texts.txt".into(),
            per_token: false,
            tokenizer: None,
            max_length: None,
            batch_tokens: 4096,
            policy: EncodePolicy::default(),
            device: Device::Cpu,
            dtype: DType::F32,
            shard: None,
        }
    }

    #[test]
    fn check_rejects_zero_sizes() {
        assert!(job().check().is_ok());
        let zero_batch = ScoreJob {
            batch_tokens: 0,
            ..job()
        };
        let e = zero_batch.check().unwrap_err().to_string();
        assert_eq!(e, "--batch-tokens must be at least 1 (got 0)");
        let zero_window = ScoreJob {
            max_length: Some(0),
            ..job()
        };
        let e = zero_window.check().unwrap_err().to_string();
        assert_eq!(e, "--max-length must be at least 1 (got 0)");
    }
}

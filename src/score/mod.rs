//! Rolling log-likelihood of whole texts: lm-evaluation-harness's `loglikelihood_rolling`.
//!
//! A text is encoded without special tokens and scored token by token, the first token
//! conditioned on the prefix (BOS) token. Texts longer than the context are cut into
//! windows exactly as the harness's `get_rolling_token_windows` +
//! `make_disjoint_window` cut them: the first window predicts its first `max_len`
//! tokens from BOS; every later window predicts the next (at most `max_len`) tokens
//! with as much preceding text as fits in `max_len` inputs. Every token is predicted
//! exactly once.
//!
//! Windows of all texts are sorted by length and batched by a token budget; the
//! vocabulary projection and log-softmax run only on predicted positions, in chunks.
//!
//! [`job`] is `ckpt score` as a library call: a checkpoint and a file of texts in, the
//! scores out.

use crate::error::{Error, Result};
use crate::model::{select_rows, KvCache, Model};
use crate::tokenizer::TextTokenizer;
use candle_core::{DType, Tensor, D};
use serde::Serialize;

pub(crate) mod job;

/// One forward pass worth of a text: the last `targets.len()` positions of `input`
/// predict `targets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub input: Vec<u32>,
    pub targets: Vec<u32>,
}

/// Cuts `tokens` into the harness's rolling windows of at most `max_len` inputs.
pub fn rolling_windows(tokens: &[u32], prefix: u32, max_len: usize) -> Vec<Window> {
    assert!(max_len >= 1, "max_len must be at least 1");
    let n = tokens.len();
    if n == 0 {
        return Vec::new();
    }
    let first = n.min(max_len);
    let mut input = Vec::with_capacity(first);
    input.push(prefix);
    input.extend_from_slice(&tokens[..first - 1]);
    let mut windows = vec![Window {
        input,
        targets: tokens[..first].to_vec(),
    }];
    let mut predicted = first;
    while predicted < n {
        let len = (n - predicted).min(max_len);
        let end = predicted + len;
        windows.push(Window {
            input: tokens[end - max_len - 1..end - 1].to_vec(),
            targets: tokens[end - len..end].to_vec(),
        });
        predicted = end;
    }
    windows
}

/// Rows of logits held at once: bounds the `[rows, vocab]` f32 buffer to ~16 MB, under
/// the size the allocator hands back to the OS on free (larger buffers cost page
/// faults on every chunk).
const LOGIT_FLOATS_PER_CHUNK: usize = 4 << 20;

/// Log-probabilities of each window's targets, in window order.
///
/// `batch_tokens` bounds `rows x padded length` of one forward pass; `on_window` is
/// called with the number of windows finished after each batch (for progress bars).
pub fn score_windows(
    model: &Model,
    windows: &[Window],
    batch_tokens: usize,
    on_window: &dyn Fn(usize),
) -> Result<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..windows.len()).collect();
    // Longest first, so each batch's padded length is its first window's length.
    order.sort_by_key(|&i| std::cmp::Reverse(windows[i].input.len()));
    let mut results = vec![Vec::new(); windows.len()];
    let mut start = 0;
    while start < order.len() {
        let longest = windows[order[start]].input.len();
        let rows = (batch_tokens / longest.max(1)).max(1);
        let batch = &order[start..(start + rows).min(order.len())];
        let scored = score_batch(model, windows, batch)?;
        for (&i, lp) in batch.iter().zip(scored) {
            results[i] = lp;
        }
        start += batch.len();
        on_window(batch.len());
    }
    Ok(results)
}

/// Scores windows `batch` (indices into `windows`) in one right-padded forward pass.
/// Right padding never changes a real position's result: attention is causal.
fn score_batch(model: &Model, windows: &[Window], batch: &[usize]) -> Result<Vec<Vec<f32>>> {
    let dev = model.device();
    let len = batch
        .iter()
        .map(|&i| windows[i].input.len())
        .max()
        .unwrap_or(0);
    let mut ids = Vec::with_capacity(batch.len() * len);
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for (row, &i) in batch.iter().enumerate() {
        let w = &windows[i];
        ids.extend_from_slice(&w.input);
        ids.resize((row + 1) * len, 0);
        let first = w.input.len() - w.targets.len();
        positions.extend((0..w.targets.len()).map(|j| (row, first + j)));
        targets.extend_from_slice(&w.targets);
    }
    let ids = Tensor::from_vec(ids, (batch.len(), len), dev)?;
    let mut cache = KvCache::new(model.config().num_hidden_layers);
    let hidden = model.hidden_states(&ids, &mut cache)?;
    drop(cache);
    let rows = select_rows(&hidden, &positions)?;
    let logprobs = target_logprobs(model, &rows, &targets)?;

    let mut out = Vec::with_capacity(batch.len());
    let mut offset = 0;
    for &i in batch {
        let n = windows[i].targets.len();
        out.push(logprobs[offset..offset + n].to_vec());
        offset += n;
    }
    Ok(out)
}

/// `log_softmax(logits(row))[target]` for each hidden row, in f32, chunked over rows.
pub fn target_logprobs(model: &Model, rows: &Tensor, targets: &[u32]) -> Result<Vec<f32>> {
    Ok(target_scores(model, rows, targets)?
        .into_iter()
        .map(|s| s.logprob)
        .collect())
}

/// A target token's log-probability and whether greedy decoding would pick it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenScore {
    pub(crate) logprob: f32,
    /// The target is the row's argmax (the first one, on ties, as `torch.argmax`).
    pub(crate) greedy: bool,
}

/// [`TokenScore`] of each hidden row's target, in f32, chunked over rows so that the
/// `[rows, vocab]` logits stay bounded.
pub fn target_scores(model: &Model, rows: &Tensor, targets: &[u32]) -> Result<Vec<TokenScore>> {
    let n = rows.dim(0)?;
    let chunk = (LOGIT_FLOATS_PER_CHUNK / model.config().vocab_size).max(1);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let logits = model.logits(&rows.narrow(0, start, len)?)?;
        let targets = &targets[start..start + len];
        if logits.device().is_cpu() {
            out.extend(cpu_target_scores(&logits, targets)?);
        } else {
            let logits = logits.to_dtype(DType::F32)?;
            let logprobs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let index = Tensor::from_slice(targets, (len, 1), logits.device())?;
            let lp = logprobs
                .gather(&index, 1)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let argmax = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            out.extend(
                lp.iter()
                    .zip(argmax.iter().zip(targets))
                    .map(|(&logprob, (&a, &t))| TokenScore {
                        logprob,
                        greedy: a == t,
                    }),
            );
        }
        start += len;
    }
    Ok(out)
}

/// One read of each logits row on CPU (`logit[target] - logsumexp(row)`), where
/// candle's composite log-softmax would write the `[rows, vocab]` buffer three times.
/// With AVX-512F (and AVX512-BF16 for bf16 logits) the rows are read sixteen at a time.
fn cpu_target_scores(logits: &Tensor, targets: &[u32]) -> Result<Vec<TokenScore>> {
    use crate::model::avx512_rows;
    use rayon::prelude::*;
    let vector = avx512_rows::available(DType::F32);
    let logits = if avx512_rows::available(DType::BF16) && logits.dtype() == DType::BF16 {
        logits.contiguous()?
    } else {
        logits.to_dtype(DType::F32)?.contiguous()?
    };
    let vocab = logits.dim(1)?;
    let score = |stats: (usize, f32, f64), row_target: f32, target: u32| TokenScore {
        logprob: row_target - stats.1 - stats.2.ln() as f32,
        greedy: stats.0 == target as usize,
    };
    if logits.dtype() == DType::BF16 {
        let scores = avx512_rows::with_bf16(&logits, |data| {
            Ok(data
                .par_chunks(vocab)
                .zip(targets.par_iter())
                .map_init(
                    || vec![0f32; vocab],
                    |wide, (row, &target)| {
                        avx512_rows::widen_into(row, wide);
                        score(avx512_rows::row_stats(wide), wide[target as usize], target)
                    },
                )
                .collect())
        })?;
        return Ok(scores);
    }
    let (storage, layout) = logits.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        unreachable!("checked by the caller");
    };
    let data = &cpu.as_slice::<f32>()?[layout.start_offset()..];
    Ok(data
        .par_chunks(vocab)
        .zip(targets.par_iter())
        .map(|(row, &target)| {
            let stats = if vector {
                avx512_rows::row_stats(row)
            } else {
                scalar_row_stats(row)
            };
            score(stats, row[target as usize], target)
        })
        .collect())
}

/// [`crate::model::avx512_rows::row_stats`] one value at a time, for CPUs without AVX-512.
fn scalar_row_stats(row: &[f32]) -> (usize, f32, f64) {
    let (mut arg, mut max) = (0, f32::NEG_INFINITY);
    for (i, &x) in row.iter().enumerate() {
        if x > max {
            (arg, max) = (i, x);
        }
    }
    let sum: f64 = row.iter().map(|&x| (x - max).exp() as f64).sum();
    (arg, max, sum)
}

/// How to score.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Model inputs per window (the harness's `max_length`); `None`: the config's
    /// `max_position_embeddings`, as the harness reads it.
    pub max_length: Option<usize>,
    /// Upper bound on `rows x padded length` per forward pass.
    pub batch_tokens: usize,
    /// Keep every token's log-probability in the result.
    pub keep_token_logprobs: bool,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            max_length: None,
            batch_tokens: 4096,
            keep_token_logprobs: false,
        }
    }
}

/// The score of one text.
#[derive(Debug, Clone, Serialize)]
pub struct TextScore {
    /// Tokens scored: the text's tokens, with the BOS (or EOS) the tokenizer adds, as
    /// lm-eval scores them (the prefix token before them is context, not scored).
    pub tokens: usize,
    /// UTF-8 bytes of the text.
    pub(crate) bytes: usize,
    /// Words as the harness counts them (`re.split(r"\s+", text)`).
    pub(crate) words: usize,
    /// Total log-likelihood (natural log).
    pub loglikelihood: f64,
    /// Mean negative log-likelihood per token.
    pub(crate) mean_loss: f64,
    /// `exp(mean_loss)`.
    pub(crate) perplexity: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_logprobs: Option<Vec<f32>>,
}

/// Totals over all texts.
#[derive(Debug, Clone, Serialize)]
pub struct Aggregate {
    pub(crate) texts: usize,
    pub(crate) tokens: usize,
    pub(crate) bytes: usize,
    pub(crate) words: usize,
    pub(crate) loglikelihood: f64,
    /// Mean negative log-likelihood per token over all texts.
    pub(crate) mean_loss: f64,
    pub(crate) token_perplexity: f64,
    pub(crate) word_perplexity: f64,
    pub(crate) byte_perplexity: f64,
    pub(crate) bits_per_byte: f64,
}

/// Scores and totals of a set of texts.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreReport {
    pub(crate) max_length: usize,
    pub(crate) prefix_token: u32,
    pub texts: Vec<TextScore>,
    pub(crate) aggregate: Aggregate,
}

/// Scores every text with `model`.
pub fn score_texts(
    model: &Model,
    tokenizer: &TextTokenizer,
    texts: &[String],
    opts: &ScoreOptions,
    on_window: &dyn Fn(usize),
) -> Result<ScoreReport> {
    let max_length = opts
        .max_length
        .unwrap_or(model.config().max_position_embeddings);
    let encoded = texts
        .iter()
        .map(|t| tokenizer.encode_lm(t))
        .collect::<Result<Vec<_>>>()?;
    check_vocabulary(model, tokenizer, &encoded)?;
    let windows_of: Vec<Vec<Window>> = encoded
        .iter()
        .map(|tokens| rolling_windows(tokens, tokenizer.prefix_token, max_length))
        .collect();
    let flat: Vec<Window> = windows_of.iter().flatten().cloned().collect();
    let mut logprobs = score_windows(model, &flat, opts.batch_tokens, on_window)?.into_iter();

    let scores: Vec<TextScore> = texts
        .iter()
        .zip(&windows_of)
        .map(|(text, windows)| {
            let token_logprobs: Vec<f32> = windows
                .iter()
                .flat_map(|_| logprobs.next().unwrap_or_default())
                .collect();
            text_score(text, token_logprobs, opts.keep_token_logprobs)
        })
        .collect();
    // A broken model (weights that overflow in this dtype) must not print "NaN" as a
    // perplexity: name the first text it cannot score.
    if let Some((i, s)) = scores
        .iter()
        .enumerate()
        .find(|(_, s)| !s.loglikelihood.is_finite())
    {
        return Err(Error::Invalid(format!(
            "text {}: the model computes a log-likelihood of {}",
            i + 1,
            s.loglikelihood
        )));
    }
    let aggregate = aggregate(&scores);
    Ok(ScoreReport {
        max_length,
        prefix_token: tokenizer.prefix_token,
        texts: scores,
        aggregate,
    })
}

/// Token ids past the model's vocabulary mean the tokenizer belongs to another model.
fn check_vocabulary(model: &Model, tokenizer: &TextTokenizer, encoded: &[Vec<u32>]) -> Result<()> {
    let vocab = model.config().vocab_size;
    let prefix = std::iter::once(&tokenizer.prefix_token);
    match encoded
        .iter()
        .flatten()
        .chain(prefix)
        .find(|&&id| id as usize >= vocab)
    {
        Some(bad) => Err(Error::bad_file(
            tokenizer.path(),
            format!(
                "token id {bad} is outside the model's vocabulary of {vocab}: \
                 tokenizer and checkpoint do not match"
            ),
        )),
        None => Ok(()),
    }
}

/// Words as lm-evaluation-harness counts them: `len(re.split(r"\s+", text))`.
pub fn count_words(text: &str) -> usize {
    static WS: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\s+").expect("valid regex"));
    WS.split(text).count()
}

fn text_score(text: &str, token_logprobs: Vec<f32>, keep: bool) -> TextScore {
    let tokens = token_logprobs.len();
    let loglikelihood: f64 = token_logprobs.iter().map(|&x| x as f64).sum();
    let mean_loss = if tokens == 0 {
        0.0
    } else {
        -loglikelihood / tokens as f64
    };
    TextScore {
        tokens,
        bytes: text.len(),
        words: count_words(text),
        loglikelihood,
        mean_loss,
        perplexity: mean_loss.exp(),
        token_logprobs: keep.then_some(token_logprobs),
    }
}

fn aggregate(scores: &[TextScore]) -> Aggregate {
    let tokens: usize = scores.iter().map(|s| s.tokens).sum();
    let bytes: usize = scores.iter().map(|s| s.bytes).sum();
    let words: usize = scores.iter().map(|s| s.words).sum();
    let ll: f64 = scores.iter().map(|s| s.loglikelihood).sum();
    let per = |n: usize| if n == 0 { 0.0 } else { -ll / n as f64 };
    Aggregate {
        texts: scores.len(),
        tokens,
        bytes,
        words,
        loglikelihood: ll,
        mean_loss: per(tokens),
        token_perplexity: per(tokens).exp(),
        word_perplexity: per(words).exp(),
        byte_perplexity: per(bytes).exp(),
        bits_per_byte: per(bytes) / std::f64::consts::LN_2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every token is predicted exactly once, each from the token before it (or BOS).
    fn check_cover(tokens: &[u32], max_len: usize) {
        let windows = rolling_windows(tokens, 999, max_len);
        let mut predicted = Vec::new();
        for w in &windows {
            assert!(w.input.len() <= max_len && !w.targets.is_empty());
            assert!(w.targets.len() <= w.input.len());
            let first = w.input.len() - w.targets.len();
            for (j, &t) in w.targets.iter().enumerate() {
                let k = predicted.len();
                let prev = if k == 0 { 999 } else { tokens[k - 1] };
                assert_eq!(w.input[first + j], prev);
                assert_eq!(t, tokens[k]);
                predicted.push(t);
            }
        }
        assert_eq!(predicted, tokens);
    }

    #[test]
    fn windows_cover_every_token_once() {
        let tokens: Vec<u32> = (0..23).collect();
        for max_len in [1, 2, 5, 7, 22, 23, 24, 100] {
            check_cover(&tokens, max_len);
        }
        assert!(rolling_windows(&[], 0, 4).is_empty());
    }

    #[test]
    fn windows_match_the_harness() {
        // get_rolling_token_windows([0..10), prefix=-1, max_seq_len=4, context_len=1)
        // + make_disjoint_window, then input = (ctx + cont)[-5:][:-1].
        let tokens: Vec<u32> = (0..10).collect();
        let w = rolling_windows(&tokens, 99, 4);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].input, [99, 0, 1, 2]);
        assert_eq!(w[0].targets, [0, 1, 2, 3]);
        assert_eq!(w[1].input, [3, 4, 5, 6]);
        assert_eq!(w[1].targets, [4, 5, 6, 7]);
        assert_eq!(w[2].input, [5, 6, 7, 8]);
        assert_eq!(w[2].targets, [8, 9]);
    }

    #[test]
    fn words_are_counted_like_python_re_split() {
        assert_eq!(count_words("a b"), 2);
        assert_eq!(count_words(" a  b\n"), 4);
        assert_eq!(count_words(""), 1);
    }
}

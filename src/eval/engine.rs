//! Runs requests on a model: log-likelihoods as token trees, greedy generation,
//! rolling log-likelihoods.
//!
//! Tokenisation is lm-evaluation-harness 0.4.13's (see [`crate::tokenizer::policy`]):
//! `_encode_pair` moves trailing whitespace from the context to the continuation,
//! encodes the pair whole and the context alone, each with the tokenizer's special
//! tokens (BOS on Llama-style tokenizers), and splits the pair at the context's token
//! count; an empty context is the prefix token, unless the continuation itself starts
//! with it. Requests with the same context tokens (a multiple-choice doc's choices)
//! form a group, and a group is one token tree ([`TokenTree`]): the context once, each
//! continuation a branch from its last token. Many trees run in one forward pass, as
//! rows of a batch, several short trees one after another in a row, so that the weights
//! stream in once for many short documents and few tokens are padding; the passes run
//! in parallel across cores. A group's result depends only on the group, up to float
//! rounding: where its neighbours place it in a row, and the padding they add, change
//! where the vectorised sums split (at most 1e-6 relative, tested).
//!
//! ```no_run
//! # use ckpt::eval::engine::{Engine, Response};
//! # fn f(engine: &Engine, reqs: &[ckpt::eval::prompt::Request]) -> ckpt::Result<()> {
//! for r in engine.run(reqs, &|_| {})? {
//!     if let Response::Loglikelihood { logprob, is_greedy } = r { println!("{logprob} {is_greedy}"); }
//! }
//! # Ok(()) }
//! ```

use super::prompt::Request;
use crate::error::{Error, Result};
use crate::model::{select_rows, KvCache, Model, TokenTree};
use crate::score::{rolling_windows, score_windows, target_scores, TokenScore};
use crate::tokenizer::TextTokenizer;
use candle_core::{DType, Tensor, D};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable candle 0.11 reads, once, for the size of its pool of
/// threads for large element-wise operations.
const CANDLE_THREADS_VAR: &str = "CANDLE_NUM_THREADS";

/// Keeps candle's element-wise operations on the calling thread, unless the user set
/// `CANDLE_NUM_THREADS`. The engine already runs its forward passes in parallel, one
/// per core (rayon), so candle's own pool only contends with them: a whole `ckpt eval`
/// of a 135M model took 9.72-9.89 s with it kept on the caller against 9.97-10.23 s
/// without. Call it first thing in `main`, before any thread starts (it sets the
/// variable).
pub fn keep_candle_on_the_passes_threads() {
    if std::env::var_os(CANDLE_THREADS_VAR).is_none() {
        // Safety by contract: no other thread exists yet to read the environment.
        std::env::set_var(CANDLE_THREADS_VAR, "1");
    }
}

/// The model's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Loglikelihood { logprob: f64, is_greedy: bool },
    Generation { text: String },
    Rolling { logprob: f64, tokens: usize },
}

/// A greedy continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The decoded text, cut at the first stop string.
    pub(crate) text: String,
    /// The tokens of `text` (EOS and tokens past a stop string left out).
    pub tokens: Vec<GeneratedToken>,
    pub(crate) finish: Finish,
}

/// One generated token; log-probabilities only when they were asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToken {
    pub id: u32,
    /// `log p(id | everything before)`.
    pub(crate) logprob: Option<f32>,
    /// The most likely tokens at this position, most likely first.
    pub(crate) top: Vec<(u32, f32)>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// EOS or a stop string.
    Stop,
    /// The token limit or the end of the model's context.
    Length,
}

/// A model, its tokenizer and how to batch.
pub struct Engine<'a> {
    pub(crate) model: &'a Model,
    pub(crate) tokenizer: &'a TextTokenizer,
    /// Model inputs at most (the harness's `max_length`).
    pub max_length: usize,
    /// Upper bound on `rows x padded length` of one forward pass.
    pub(crate) batch_tokens: usize,
    /// Whether truncated contexts were warned about (once per engine, not per batch).
    warned_truncation: AtomicBool,
}

/// Padded tokens of one pass of token trees on CPU (see [`Engine::pass_tokens`]).
const CPU_PASS_TOKENS: usize = 1024;

/// A context's tree and the requests it answers: for each, its index, the nodes
/// whose outputs predict its continuation's tokens, and those tokens.
struct Branches {
    tree: TokenTree,
    /// The context's last node: it predicts every continuation's first token.
    trunk_end: usize,
    requests: Vec<(usize, Vec<usize>, Vec<u32>)>,
}

/// Tokens of one row of a pass, unless its first tree is longer. Rows as long as each
/// pass's longest tree (at most 81 tokens) were 19% padding on the pt suite's tasks;
/// rows of 128 shared by several trees, 2%. The whole eval (135M Llama, 2 cores, 7
/// tasks x 40 docs) took 9.7 s then, and 8.41, 8.34, 8.53 and 8.64 s with rows of 96,
/// 128, 192 and 256 tokens: longer rows attend over more masked keys.
const ROW_TOKENS: usize = 128;

/// The trees of one forward pass, as rows of a batch. Each row holds trees one after
/// another (a forest) in `width` tokens: short trees share a row instead of each
/// padding one.
struct Pass {
    rows: Vec<Vec<Branches>>,
    /// The padded length of every row.
    width: usize,
}

impl Pass {
    /// A pass whose first row starts with `tree`, the longest of those to come, in
    /// rows of [`ROW_TOKENS`] (fewer where the budget is smaller).
    fn new(tree: Branches, budget: usize) -> Self {
        let width = tree.tree.len().max(ROW_TOKENS.min(budget));
        Self {
            rows: vec![vec![tree]],
            width,
        }
    }

    /// The first row with room for a tree of `len` tokens.
    fn row_with_room(&self, len: usize) -> Option<usize> {
        self.rows
            .iter()
            .position(|row| row.iter().map(|t| t.tree.len()).sum::<usize>() + len <= self.width)
    }

    /// Whether one more row for a tree of `len` tokens keeps the pass within `budget`
    /// padded tokens.
    fn can_grow(&self, len: usize, budget: usize) -> bool {
        len <= self.width && (self.rows.len() + 1) * self.width <= budget
    }

    /// Adds `tree` to the first row with room, or else to a new row.
    fn add(&mut self, tree: Branches) {
        match self.row_with_room(tree.tree.len()) {
            Some(row) => self.rows[row].push(tree),
            None => self.rows.push(vec![tree]),
        }
    }
}

/// An encoded log-likelihood request.
struct Pair {
    index: usize,
    context: Vec<u32>,
    continuation: Vec<u32>,
}

impl<'a> Engine<'a> {
    /// An engine with the model's context length and a 4096-token batch budget.
    pub fn new(model: &'a Model, tokenizer: &'a TextTokenizer) -> Self {
        Self {
            model,
            tokenizer,
            max_length: model.config().max_position_embeddings,
            batch_tokens: 4096,
            warned_truncation: AtomicBool::new(false),
        }
    }

    /// Responses to `requests`, in order; `progress` gets the number of requests done
    /// after each piece of work.
    pub fn run(
        &self,
        requests: &[Request],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Response>> {
        let mut out: Vec<Option<Response>> = vec![None; requests.len()];
        // Encoding runs on every core: on one, it left the other idle between chunks.
        let encoded: Vec<Option<(Vec<u32>, Vec<u32>)>> = requests
            .par_iter()
            .map(|r| match r {
                Request::Loglikelihood {
                    context,
                    continuation,
                } => self.encode_pair(context, continuation).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        let mut pairs = Vec::new();
        let mut generations = Vec::new();
        let mut rolling = Vec::new();
        for (i, (r, pair)) in requests.iter().zip(encoded).enumerate() {
            match (r, pair) {
                (_, Some((context, continuation))) => pairs.push(Pair {
                    index: i,
                    context,
                    continuation,
                }),
                (Request::Generate { .. }, _) => generations.push(i),
                (Request::Rolling { .. }, _) => rolling.push(i),
                (Request::Loglikelihood { .. }, None) => unreachable!("encoded above"),
            }
        }
        self.check_pairs_fit(&pairs, requests)?;
        for (i, r) in self.loglikelihoods(pairs, progress)? {
            out[i] = Some(r);
        }
        let generated: Vec<(usize, Response)> = generations
            .par_iter()
            .map(|&i| {
                let Request::Generate {
                    context,
                    until,
                    max_gen_toks,
                } = &requests[i]
                else {
                    unreachable!("filtered above");
                };
                let text = self.generate(context, until, *max_gen_toks)?;
                progress(1);
                Ok((i, Response::Generation { text }))
            })
            .collect::<Result<_>>()?;
        for (i, r) in generated {
            out[i] = Some(r);
        }
        for i in rolling {
            let Request::Rolling { text } = &requests[i] else {
                unreachable!("filtered above");
            };
            out[i] = Some(self.rolling(text)?);
            progress(1);
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every request answered"))
            .collect())
    }

    /// Refuses a `max_length` too short to hold an answer: the harness would score only
    /// the answer's last tokens, and every choice of a task would then be compared on a
    /// different, arbitrary piece (the `--max-length 1` that scored accuracy 0). Contexts
    /// cut on the left, as the harness cuts them, are only warned about.
    fn check_pairs_fit(&self, pairs: &[Pair], requests: &[Request]) -> Result<()> {
        if let Some(p) = pairs
            .iter()
            .find(|p| p.continuation.len() > self.max_length)
        {
            let Request::Loglikelihood { continuation, .. } = &requests[p.index] else {
                unreachable!("pairs come from loglikelihood requests");
            };
            return Err(Error::bad_value(
                "--max-length",
                format!(
                    "max length (--max-length) {} is shorter than the answer {continuation:?} \
                 ({} tokens): use at least {} tokens",
                    self.max_length,
                    p.continuation.len(),
                    p.continuation.len(),
                ),
            ));
        }
        let cut = pairs
            .iter()
            .filter(|p| p.context.len() + p.continuation.len() > self.max_length + 1)
            .count();
        if cut > 0 && !self.warned_truncation.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "max length {}: {cut} of {} requests lose the start of their context",
                self.max_length,
                pairs.len()
            );
        }
        Ok(())
    }

    /// lm-eval's `loglikelihood` tokenization: `_encode_pair`, or for an empty context
    /// the continuation without special tokens after the prefix token (its own first
    /// token when that already is the prefix token).
    pub fn encode_pair(&self, context: &str, continuation: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        if context.is_empty() {
            let mut tokens = self.tokenizer.encode(continuation)?;
            let prefix = self.tokenizer.prefix_token;
            if tokens.first() == Some(&prefix) {
                let rest = tokens.split_off(1);
                return Ok((tokens, rest));
            }
            return Ok((vec![prefix], tokens));
        }
        let trimmed = context.trim_end();
        let (context, continuation) = if trimmed.len() < context.len() {
            (
                trimmed,
                format!("{}{continuation}", &context[trimmed.len()..]),
            )
        } else {
            (context, continuation.to_string())
        };
        let whole = self
            .tokenizer
            .encode_lm(&format!("{context}{continuation}"))?;
        let context_enc = self.tokenizer.encode_lm(context)?;
        let split = context_enc.len().min(whole.len());
        Ok((context_enc, whole[split..].to_vec()))
    }

    /// Every context once, its continuations as branches of one token tree
    /// ([`TokenTree`]), and many trees per forward pass: one short document alone
    /// leaves the GEMMs mostly idle while the weights stream in. Trees of similar
    /// length share a pass, longest first, up to `batch_tokens` padded tokens, and
    /// short trees share a row ([`Pass`]).
    fn loglikelihoods(
        &self,
        pairs: Vec<Pair>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<(usize, Response)>> {
        // Ordered, so that every run places the same trees side by side: in bf16 a
        // tree's roundings depend on where in its row it sits.
        let mut groups: BTreeMap<Vec<u32>, Vec<Pair>> = BTreeMap::new();
        for p in pairs {
            groups.entry(p.context.clone()).or_default().push(p);
        }
        let mut out = Vec::new();
        let mut trees = Vec::new();
        let mut too_long = Vec::new();
        for (context, group) in &groups {
            let mut fits = Vec::new();
            for p in group {
                if p.continuation.is_empty() {
                    // Nothing to score: probability one.
                    out.push((p.index, summarise(std::iter::empty())));
                } else if context.len() + p.continuation.len() > self.max_length + 1 {
                    too_long.push(p);
                } else {
                    fits.push(p);
                }
            }
            trees.extend(self.trees_of(context, &fits));
        }
        trees.sort_by_key(|t| std::cmp::Reverse(t.tree.len()));
        let passes = self.passes(trees);
        let scored: Vec<Vec<(usize, Response)>> = passes
            .par_iter()
            .with_max_len(1)
            .map(|pass| {
                let r = self.score_pass(pass)?;
                progress(r.len());
                Ok(r)
            })
            .collect::<Result<_>>()?;
        out.extend(scored.into_iter().flatten());
        // Requests too long for the model go alone, cut on the left as the harness cuts.
        let truncated: Vec<(usize, Response)> = too_long
            .par_iter()
            .with_max_len(1)
            .map(|p| {
                let r = self.score_truncated(p)?;
                progress(1);
                Ok((p.index, r))
            })
            .collect::<Result<_>>()?;
        out.extend(truncated);
        Ok(out)
    }

    /// The trees of one context: the context, then each continuation but its last
    /// token as a branch from the context's last token. A group too big for one pass
    /// is split, each part with its own copy of the context.
    fn trees_of(&self, context: &[u32], pairs: &[&Pair]) -> Vec<Branches> {
        let mut out: Vec<Branches> = Vec::new();
        for p in pairs {
            let branch = p.continuation.len() - 1;
            let full = out.last().is_none_or(|t| {
                !t.requests.is_empty() && t.tree.len() + branch > self.pass_tokens()
            });
            if full {
                let mut tree = TokenTree::new();
                let trunk = tree.push_chain(None, context);
                out.push(Branches {
                    tree,
                    trunk_end: *trunk.last().expect("contexts hold at least one token"),
                    requests: vec![],
                });
            }
            let t = out.last_mut().expect("pushed above");
            let mut nodes = vec![t.trunk_end];
            nodes.extend(
                t.tree
                    .push_chain(Some(t.trunk_end), &p.continuation[..branch]),
            );
            t.requests.push((p.index, nodes, p.continuation.clone()));
        }
        out
    }

    /// Padded tokens per pass of token trees. On CPU, passes of about a thousand
    /// tokens were fastest (135M Llama, 2 cores: 6.1 s at 1,024, 7.6 s at 4,096 for
    /// the same 846 requests): the activations stay in cache, and the passes spread over
    /// the cores. `batch_tokens` stays the upper bound.
    fn pass_tokens(&self) -> usize {
        if self.model.device().is_cpu() {
            self.batch_tokens.min(CPU_PASS_TOKENS)
        } else {
            self.batch_tokens
        }
    }

    /// Trees (longest first) in passes of at most [`Self::pass_tokens`] padded tokens.
    fn passes(&self, trees: Vec<Branches>) -> Vec<Pass> {
        let budget = self.pass_tokens();
        let mut passes: Vec<Pass> = Vec::new();
        for tree in trees {
            let len = tree.tree.len();
            if let Some(pass) = passes.iter_mut().find(|p| p.row_with_room(len).is_some()) {
                pass.add(tree);
            } else if let Some(pass) = passes.last_mut().filter(|p| p.can_grow(len, budget)) {
                pass.add(tree);
            } else {
                passes.push(Pass::new(tree, budget));
            }
        }
        passes
    }

    /// One forward pass over `pass`, and the log-likelihood of each request in it.
    fn score_pass(&self, pass: &Pass) -> Result<Vec<(usize, Response)>> {
        let mut rows = Vec::with_capacity(pass.rows.len());
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        let mut requests = Vec::new();
        for (r, trees) in pass.rows.iter().enumerate() {
            let mut forest = TokenTree::new();
            for t in trees {
                let offset = forest.append(&t.tree);
                for (index, nodes, continuation) in &t.requests {
                    positions.extend(nodes.iter().map(|&n| (r, offset + n)));
                    targets.extend_from_slice(continuation);
                    requests.push((*index, nodes.len()));
                }
            }
            rows.push(forest);
        }
        let hidden = self
            .model
            .tree_hidden_states(&rows.iter().collect::<Vec<_>>())?;
        let mut scores = self
            .scores_of(&select_rows(&hidden, &positions)?, &targets)?
            .into_iter();
        Ok(requests
            .into_iter()
            .map(|(index, n)| (index, summarise(scores.by_ref().take(n))))
            .collect())
    }

    fn scores_of(&self, rows: &Tensor, targets: &[u32]) -> Result<Vec<TokenScore>> {
        target_scores(self.model, rows, targets)
    }

    /// `(context + continuation)[-(max_length + 1):][:-1]`, scored in one pass.
    fn score_truncated(&self, p: &Pair) -> Result<Response> {
        let mut all = p.context.clone();
        all.extend_from_slice(&p.continuation);
        let start = all.len().saturating_sub(self.max_length + 1);
        let window = &all[start..all.len() - 1];
        let n = p.continuation.len().min(window.len());
        let ids = Tensor::new(window, self.model.device())?.unsqueeze(0)?;
        let hidden = self.model.hidden_states(
            &ids,
            &mut KvCache::new(self.model.config().num_hidden_layers),
        )?;
        let positions: Vec<(usize, usize)> =
            (window.len() - n..window.len()).map(|j| (0, j)).collect();
        let rows = select_rows(&hidden, &positions)?;
        let targets = &p.continuation[p.continuation.len() - n..];
        Ok(summarise(self.scores_of(&rows, targets)?.into_iter()))
    }

    /// Greedy decoding with a KV cache until a stop string, EOS or `max_gen_toks`;
    /// the text is cut at the first stop string, as the harness cuts it. A context too
    /// long for `max_length - max_gen_toks` loses its first tokens.
    pub fn generate(&self, context: &str, until: &[String], max_gen_toks: usize) -> Result<String> {
        let mut ids = self.tokenizer.encode_prompt(context)?;
        let max_context = self.max_length.saturating_sub(max_gen_toks).max(1);
        if ids.len() > max_context {
            ids.drain(..ids.len() - max_context);
        }
        Ok(self.generate_ids(ids, until, max_gen_toks, None)?.text)
    }

    /// Greedy decoding from token ids (an empty prompt starts from the prefix token),
    /// until EOS, a stop string, `max_new` tokens or the end of the model's context.
    /// With `top_logprobs: Some(k)`, each token comes with its log-probability and the
    /// `k` most likely tokens at its position.
    pub fn generate_ids(
        &self,
        mut prompt: Vec<u32>,
        until: &[String],
        max_new: usize,
        top_logprobs: Option<usize>,
    ) -> Result<Generation> {
        if prompt.is_empty() {
            prompt.push(self.tokenizer.prefix_token);
        }
        let mut cache = KvCache::new(self.model.config().num_hidden_layers);
        let mut tokens: Vec<GeneratedToken> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        let mut input = prompt;
        let mut text = String::new();
        let mut finish = Finish::Length;
        for _ in 0..max_new {
            if cache.len() + input.len() > self.max_length {
                break;
            }
            let t = Tensor::new(input.as_slice(), self.model.device())?.unsqueeze(0)?;
            let hidden = self.model.hidden_states(&t, &mut cache)?;
            let row = select_rows(&hidden, &[(0, input.len() - 1)])?;
            let logits = self.model.logits(&row)?;
            let token = match top_logprobs {
                None => GeneratedToken {
                    id: logits.argmax(D::Minus1)?.to_vec1::<u32>()?[0],
                    logprob: None,
                    top: vec![],
                },
                Some(k) => scored_token(&logits, k)?,
            };
            if self.tokenizer.stop_tokens.contains(&token.id) {
                finish = Finish::Stop;
                break;
            }
            ids.push(token.id);
            tokens.push(token);
            text = self.tokenizer.decode_text(&ids)?;
            if until
                .iter()
                .any(|s| !s.is_empty() && text.contains(s.as_str()))
            {
                finish = Finish::Stop;
                break;
            }
            input = vec![*ids.last().expect("just pushed")];
        }
        let full = text.len();
        for stop in until.iter().filter(|s| !s.is_empty()) {
            if let Some(at) = text.find(stop.as_str()) {
                text.truncate(at);
            }
        }
        // Tokens that spell (part of) the stop string go with it.
        if text.len() < full {
            let mut n = tokens.len();
            while n > 0 && self.tokenizer.decode_text(&ids[..n])?.len() > text.len() {
                n -= 1;
            }
            tokens.truncate(n);
        }
        Ok(Generation {
            text,
            tokens,
            finish,
        })
    }

    fn rolling(&self, text: &str) -> Result<Response> {
        let tokens = self.tokenizer.encode_lm(text)?;
        let windows = rolling_windows(&tokens, self.tokenizer.prefix_token, self.max_length);
        let logprobs = score_windows(self.model, &windows, self.batch_tokens, &|_| {})?;
        let logprob = logprobs.iter().flatten().map(|&x| x as f64).sum();
        Ok(Response::Rolling {
            logprob,
            tokens: tokens.len(),
        })
    }
}

/// The greedy token of a `[1, vocab]` logits row with its log-probability and the `k`
/// most likely tokens (ties: the lower id first, as the argmax picks it).
fn scored_token(logits: &Tensor, k: usize) -> Result<GeneratedToken> {
    let row: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_z = max as f64
        + row
            .iter()
            .map(|&x| ((x - max) as f64).exp())
            .sum::<f64>()
            .ln();
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.clamp(1, row.len());
    let by_logit = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    order.select_nth_unstable_by(k - 1, by_logit);
    order.truncate(k);
    order.sort_by(by_logit);
    let lp = |id: u32| (row[id as usize] as f64 - log_z) as f32;
    Ok(GeneratedToken {
        id: order[0],
        logprob: Some(lp(order[0])),
        top: order.iter().map(|&id| (id, lp(id))).collect(),
    })
}

fn summarise(scores: impl Iterator<Item = TokenScore>) -> Response {
    let (mut logprob, mut is_greedy) = (0.0f64, true);
    for s in scores {
        logprob += s.logprob as f64;
        is_greedy &= s.greedy;
    }
    Response::Loglikelihood { logprob, is_greedy }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use candle_core::{DType, Device};
    use std::path::Path;

    fn fixture() -> (Model, TextTokenizer) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/llama_gqa");
        let ckpt = Checkpoint::open(&dir).unwrap();
        let cfg = ckpt.config().unwrap();
        let tok = TextTokenizer::load(&dir, None, cfg.bos_token_id, cfg.eos_token_id).unwrap();
        (ckpt.load_model(&Device::Cpu, DType::F32).unwrap(), tok)
    }

    fn ll(context: &str, continuation: &str) -> Request {
        Request::Loglikelihood {
            context: context.into(),
            continuation: continuation.into(),
        }
    }

    fn logprob(r: &Response) -> f64 {
        match r {
            Response::Loglikelihood { logprob, .. } => *logprob,
            other => panic!("{other:?}"),
        }
    }

    /// In bf16 a tree's roundings depend on where in its row it sits, so every run of
    /// the same requests must place them alike: the log-likelihoods are the same bit
    /// for bit, run after run (many contexts of one length, whose trees tie). The
    /// fixture's model is too small for its roundings to show where a tree sits, so
    /// this one is wider and deeper.
    #[test]
    fn bf16_results_are_the_same_in_every_run() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/llama_gqa");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        for (key, value) in [
            ("hidden_size", 512),
            ("head_dim", 64),
            ("num_attention_heads", 8),
            ("num_key_value_heads", 4),
            ("num_hidden_layers", 2),
            ("intermediate_size", 1024),
        ] {
            json[key] = value.into();
        }
        let cfg = crate::model::ModelConfig::from_json(&json.to_string()).unwrap();
        let tok = TextTokenizer::load(&dir, None, cfg.bos_token_id, cfg.eos_token_id).unwrap();
        let weights = crate::model::init_weights(&cfg, 0.2, 7, DType::BF16, &Device::Cpu).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(weights, DType::BF16, &Device::Cpu);
        let mut model = Model::load(&cfg, vb).unwrap();
        model.keep_packed_weights_only();
        let engine = Engine::new(&model, &tok);
        let words = ["cat", "dog", "owl", "fox", "elk", "ram", "yak", "eel"];
        let requests: Vec<Request> = words
            .iter()
            .flat_map(|a| words.iter().map(move |b| (a, b)))
            .flat_map(|(a, b)| {
                let context = format!("Once upon a time the {a} saw the {b} by the river and");
                [ll(&context, " ran"), ll(&context, " hid")]
            })
            .collect();
        let bits = || -> Vec<u64> {
            let responses = engine.run(&requests, &|_| {}).unwrap();
            responses.iter().map(|r| logprob(r).to_bits()).collect()
        };
        let first = bits();
        for run in 1..3 {
            assert_eq!(bits(), first, "run {run}");
        }
    }

    /// The tree path against one plain forward pass per request (the truncation path
    /// with room to spare), and a group's result alone vs among others.
    #[test]
    fn tree_choices_equal_full_forward_and_do_not_depend_on_the_batch() {
        let (model, tok) = fixture();
        let engine = Engine::new(&model, &tok);
        let group = [
            ll("The cat sat on the", " mat"),
            ll("The cat sat on the", " warm blue sofa today"),
            ll("The cat sat on the ", "roof"),
        ];
        let cached = engine.run(&group, &|_| {}).unwrap();
        for (r, got) in group.iter().zip(&cached) {
            let Request::Loglikelihood {
                context,
                continuation,
            } = r
            else {
                unreachable!()
            };
            let (c, k) = engine.encode_pair(context, continuation).unwrap();
            let full = engine
                .score_truncated(&Pair {
                    index: 0,
                    context: c,
                    continuation: k,
                })
                .unwrap();
            assert!(
                (logprob(got) - logprob(&full)).abs() < 1e-4,
                "{got:?} vs {full:?}"
            );
        }
        // Among others: with the whole budget every tree shares one row, the group's
        // after the bigger fruit tree; an empty context is a one-token trunk; a pass
        // budget of 16 tokens splits the requests over several passes and pads rows.
        // The bound, 1e-6 relative, is what batching may change.
        let fruit = [
            " red apples",
            " green pears",
            " blue plums",
            " ripe dates",
            " sour limes",
        ];
        let mut mixed: Vec<Request> = fruit
            .iter()
            .map(|f| ll("A neighbour with many choices, all of them fruit:", f))
            .collect();
        mixed.push(ll("Another context entirely", " here"));
        mixed.push(ll("", " unconditional"));
        mixed.extend(group.iter().cloned());
        let n = mixed.len() - group.len();
        for budget in [4096, 16] {
            let engine = Engine {
                batch_tokens: budget,
                ..Engine::new(&model, &tok)
            };
            let together = engine.run(&mixed, &|_| {}).unwrap();
            for (a, b) in together[n..].iter().zip(&cached) {
                let (a, b) = (logprob(a), logprob(b));
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "budget {budget}: {a} alone {b}: a result depends on its neighbours"
                );
            }
        }
    }

    /// Passes stay within the budget, rows within their width, every tree goes in once,
    /// and short trees share rows: the padding is what no tree fits.
    #[test]
    fn passes_pack_short_trees_into_shared_rows_within_the_budget() {
        let (model, tok) = fixture();
        let tree = |len: usize| {
            let mut tree = TokenTree::new();
            tree.push_chain(None, &vec![7; len]);
            Branches {
                tree,
                trunk_end: len - 1,
                requests: vec![(len, vec![len - 1], vec![1])],
            }
        };
        let lens = [300, 120, 90, 70, 60, 40, 38, 30, 30, 20, 9, 5, 3, 1];
        for budget in [4096, 512, 100] {
            let engine = Engine {
                batch_tokens: budget,
                ..Engine::new(&model, &tok)
            };
            let passes = engine.passes(lens.iter().map(|&n| tree(n)).collect());
            let mut placed: Vec<usize> = Vec::new();
            let mut padded = 0;
            for pass in &passes {
                // Only a tree longer than the budget makes a pass over it, alone.
                let alone = pass.rows.len() == 1 && pass.rows[0].len() == 1;
                assert!(pass.rows.len() * pass.width <= budget || alone);
                for row in &pass.rows {
                    let used: usize = row.iter().map(|t| t.tree.len()).sum();
                    assert!(
                        used <= pass.width,
                        "budget {budget}: row of {used} in {}",
                        pass.width
                    );
                    padded += pass.width - used;
                    placed.extend(row.iter().map(|t| t.tree.len()));
                }
            }
            placed.sort_unstable_by(|a, b| b.cmp(a));
            assert_eq!(placed, lens, "budget {budget}");
            if budget == 4096 {
                // 300 alone in its row; the rest fill rows of 300 tokens: 816 in three.
                assert_eq!((passes.len(), padded), (1, 84));
            }
        }
    }

    /// lm-eval's `_encode_pair`: trailing spaces move to the continuation; an empty
    /// context is the prefix token.
    #[test]
    fn encode_pair_moves_trailing_space() {
        let (model, tok) = fixture();
        let engine = Engine::new(&model, &tok);
        let (a, b) = engine.encode_pair("Hello ", "world").unwrap();
        assert_eq!(a, tok.encode("Hello").unwrap());
        let whole = tok.encode("Hello world").unwrap();
        assert_eq!([a.clone(), b].concat(), whole);
        let (p, _) = engine.encode_pair("", " x").unwrap();
        assert_eq!(p, vec![tok.prefix_token]);
    }

    /// Log-probabilities of generated tokens (KV cache, one token at a time) equal a
    /// full forward pass over prompt + generation, and the top list is sorted with
    /// the greedy token first.
    #[test]
    fn generation_log_probabilities_match_a_full_forward() {
        let (model, tok) = fixture();
        let engine = Engine::new(&model, &tok);
        let prompt = tok.encode("Once upon a time").unwrap();
        let plain = engine.generate_ids(prompt.clone(), &[], 8, None).unwrap();
        let scored = engine
            .generate_ids(prompt.clone(), &[], 8, Some(4))
            .unwrap();
        let ids: Vec<u32> = scored.tokens.iter().map(|t| t.id).collect();
        assert_eq!(
            ids,
            plain.tokens.iter().map(|t| t.id).collect::<Vec<_>>(),
            "same greedy path"
        );
        assert_eq!(scored.text, plain.text);
        assert!(!ids.is_empty());
        let all = [prompt.clone(), ids.clone()].concat();
        let window = crate::score::Window {
            input: all[..all.len() - 1].to_vec(),
            targets: all[1..].to_vec(),
        };
        let full = crate::score::score_windows(&model, &[window], 4096, &|_| {}).unwrap();
        let tail = &full[0][prompt.len() - 1..];
        for (t, want) in scored.tokens.iter().zip(tail) {
            assert_eq!(t.top.len(), 4);
            assert_eq!(t.top[0].0, t.id);
            assert!(t.top.windows(2).all(|w| w[0].1 >= w[1].1));
            let lp = t.logprob.unwrap();
            assert_eq!(lp, t.top[0].1);
            assert!((lp - want).abs() < 1e-4, "{lp} vs {want}");
        }
    }

    #[test]
    fn greedy_generation_stops_at_the_stop_string() {
        let (model, tok) = fixture();
        let engine = Engine::new(&model, &tok);
        let free = engine.generate("Once upon a time", &[], 12).unwrap();
        assert!(!free.is_empty());
        // Cutting at a string the free generation contains gives its prefix.
        let stop: String = free
            .chars()
            .skip(free.chars().count() / 2)
            .take(2)
            .collect();
        let cut = engine
            .generate("Once upon a time", std::slice::from_ref(&stop), 12)
            .unwrap();
        assert!(
            free.starts_with(&cut) && !cut.contains(&stop),
            "{free:?} / {cut:?} / {stop:?}"
        );
        // The tokens kept spell (a prefix of) the cut text, never the stop string.
        let g = engine
            .generate_ids(
                tok.encode("Once upon a time").unwrap(),
                std::slice::from_ref(&stop),
                12,
                None,
            )
            .unwrap();
        let ids: Vec<u32> = g.tokens.iter().map(|t| t.id).collect();
        let kept = tok.decode_text(&ids).unwrap();
        assert_eq!(g.text, cut);
        assert!(
            cut.starts_with(&kept) && !kept.contains(&stop),
            "{kept:?} / {cut:?}"
        );
        assert_eq!(g.finish, Finish::Stop);
    }
}

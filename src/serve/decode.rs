//! Generation for `ckpt serve`: token ids in, tokens out one at a time over a KV cache,
//! each chosen by a [`Sampler`], with the text handed to the caller as it becomes final
//! (streaming), and, for `echo`, the prompt's own log-probabilities from the same
//! forward pass that starts the generation.
//!
//! Text is final when no stop string can still begin in it and it does not end in a
//! partial UTF-8 character: a streamed answer is exactly the non-streamed one, cut into
//! pieces.

use super::sampling::{log_softmax, top_k, Chosen, Sampler, Sampling};
use crate::error::Result;
use crate::eval::engine::Finish;
use crate::model::{select_rows, KvCache, Model};
use crate::tokenizer::TextTokenizer;
use candle_core::{DType, Tensor};

/// What to generate.
#[derive(Debug, Clone)]
pub struct DecodeRequest {
    /// The prompt's token ids (empty: start from the tokenizer's prefix token).
    pub(crate) prompt: Vec<u32>,
    /// Tokens to generate at most (0: none, as for scoring with `echo`).
    pub(crate) max_new: usize,
    pub(crate) stop: Vec<String>,
    /// Alternatives reported per token (0: none).
    pub(crate) top_logprobs: usize,
    /// Report the prompt's tokens with their log-probabilities too.
    pub(crate) echo: bool,
    pub(crate) sampling: Sampling,
    /// Which of the request's `n` choices this is.
    pub(crate) index: u64,
}

/// One token of the prompt with `log p(token | the tokens before)` (none for the first).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PromptToken {
    pub(crate) id: u32,
    pub(crate) logprob: Option<f32>,
    pub(crate) top: Vec<(u32, f32)>,
}

/// What was generated.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The prompt's tokens, when `echo` asked for them.
    pub(crate) prompt: Vec<PromptToken>,
    /// The text, cut at the first stop string.
    pub(crate) text: String,
    /// The generated tokens of `text`.
    pub(crate) tokens: Vec<Chosen>,
    pub(crate) finish: Finish,
    /// The end-of-sequence token that ended the generation: not text, but generated
    /// (it counts in the usage, and the legacy log-probabilities list it, as vLLM's and
    /// OpenAI's do; lm-eval's `echo` scoring reads past the prompt by one token).
    pub(crate) stop_token: Option<Chosen>,
    /// The client went away before the end.
    pub(crate) cancelled: bool,
}

impl Decoded {
    /// Nothing generated yet: no text, finished by length unless told otherwise.
    fn empty() -> Self {
        Self {
            prompt: vec![],
            text: String::new(),
            tokens: vec![],
            finish: Finish::Length,
            stop_token: None,
            cancelled: false,
        }
    }

    /// The answer to a client that left, with the `text` it had been sent.
    pub(crate) fn cancelled(text: String) -> Self {
        Self {
            text,
            finish: Finish::Stop,
            cancelled: true,
            ..Self::empty()
        }
    }

    /// Tokens generated, the end-of-sequence token included.
    pub(crate) fn generated(&self) -> usize {
        self.tokens.len() + usize::from(self.stop_token.is_some())
    }
}

/// Generates as `req` asks; `on_text(piece, tokens)` gets each piece of final text with
/// the tokens that completed it, and returns false to stop (a client that left).
pub fn decode(
    model: &Model,
    tokenizer: &TextTokenizer,
    req: &DecodeRequest,
    on_text: &mut dyn FnMut(&str, &[Chosen]) -> bool,
) -> Result<Decoded> {
    let mut cache = KvCache::new(model.config().num_hidden_layers);
    let mut seq = Sequence::new(req.clone());
    let mut next = seq.prefill(model, tokenizer, &mut cache)?;
    while let Some(logits) = next {
        if !seq.advance(&logits, tokenizer, on_text)? {
            break;
        }
        let t = Tensor::new(&[seq.last], model.device())?.unsqueeze(0)?;
        let hidden = model.hidden_states(&t, &mut cache)?;
        next = Some(last_logits(model, &hidden)?.remove(0));
    }
    seq.finish(on_text)
}

/// The next-token logits of each row's last position of `hidden` (`[rows, seq, h]`).
pub(crate) fn last_logits(model: &Model, hidden: &Tensor) -> Result<Vec<Vec<f32>>> {
    let (b, t, _) = hidden.dims3()?;
    let rows: Vec<(usize, usize)> = (0..b).map(|r| (r, t - 1)).collect();
    Ok(model
        .logits(&select_rows(hidden, &rows)?)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?)
}

/// One generation in progress: what it has produced, and what it hands on next. Its
/// forward passes are run by the caller, alone ([`decode`]) or batched with others
/// (`ckpt serve`'s continuous batching), so the answer is the same either way.
pub(crate) struct Sequence {
    req: DecodeRequest,
    sampler: Sampler,
    out: Decoded,
    ids: Vec<u32>,
    /// Bytes of text handed to `on_text`.
    emitted: usize,
    /// Tokens not yet handed to `on_text`.
    pending: usize,
    /// Positions the sequence holds in its cache.
    positions: usize,
    /// The token the next forward step runs.
    pub(crate) last: u32,
    max_length: usize,
}

impl Sequence {
    pub(crate) fn new(req: DecodeRequest) -> Self {
        Self {
            sampler: Sampler::new(req.sampling, req.index),
            req,
            out: Decoded::empty(),
            ids: vec![],
            emitted: 0,
            pending: 0,
            positions: 0,
            last: 0,
            max_length: 0,
        }
    }

    /// Runs the prompt into `cache` (batch 1, empty): the prompt's own log-probabilities
    /// when `echo` asks for them, and the logits the first token is drawn from (`None`:
    /// nothing to generate).
    pub(crate) fn prefill(
        &mut self,
        model: &Model,
        tokenizer: &TextTokenizer,
        cache: &mut KvCache,
    ) -> Result<Option<Vec<f32>>> {
        self.max_length = model.config().max_position_embeddings;
        if self.req.max_new == 0 && !self.req.echo {
            return Ok(None);
        }
        let mut input = self.req.prompt.clone();
        if input.is_empty() {
            input.push(tokenizer.prefix_token);
        }
        if input.len() > self.max_length {
            return Ok(None);
        }
        let t = Tensor::new(input.as_slice(), model.device())?.unsqueeze(0)?;
        let hidden = model.hidden_states(&t, cache)?;
        self.positions = input.len();
        let n = input.len();
        let rows: Vec<(usize, usize)> = if self.req.echo {
            (0..n).map(|j| (0, j)).collect()
        } else {
            vec![(0, n - 1)]
        };
        let mut logits = model
            .logits(&select_rows(&hidden, &rows)?)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        if self.req.echo {
            self.out.prompt = prompt_tokens(&self.req.prompt, &logits, self.req.top_logprobs);
        }
        if self.req.max_new == 0 {
            return Ok(None);
        }
        Ok(logits.pop())
    }

    /// Draws the next token from `logits` and hands on the text it completes; true when
    /// the sequence goes on (then [`Self::last`] is the token to run next).
    pub(crate) fn advance(
        &mut self,
        logits: &[f32],
        tokenizer: &TextTokenizer,
        on_text: &mut dyn FnMut(&str, &[Chosen]) -> bool,
    ) -> Result<bool> {
        let out = &mut self.out;
        let chosen = self.sampler.choose(logits, self.req.top_logprobs);
        if tokenizer.stop_tokens.contains(&chosen.id) {
            out.finish = Finish::Stop;
            out.stop_token = Some(chosen);
            return Ok(false);
        }
        self.ids.push(chosen.id);
        self.last = chosen.id;
        out.tokens.push(chosen);
        self.pending += 1;
        let text = tokenizer.decode_text(&self.ids)?;
        if let Some(at) = first_stop(&text, &self.req.stop) {
            out.text = text[..at].to_string();
            out.finish = Finish::Stop;
            trim_tokens(tokenizer, &self.ids, &mut out.tokens, out.text.len())?;
            return Ok(false);
        }
        let safe = safe_len(&text, &self.req.stop);
        if safe > self.emitted {
            let start = out.tokens.len() - self.pending;
            if !on_text(&text[self.emitted..safe], &out.tokens[start..]) {
                out.text = text;
                out.cancelled = true;
                return Ok(false);
            }
            self.emitted = safe;
            self.pending = 0;
        }
        out.text = text;
        // Go on while more were asked for and the token just drawn fits the context.
        let fits = self.positions < self.max_length;
        self.positions += 1;
        Ok(out.tokens.len() < self.req.max_new && fits)
    }

    /// The answer, once [`Self::advance`] said stop (the text not yet handed on goes to
    /// `on_text` first).
    pub(crate) fn finish(
        mut self,
        on_text: &mut dyn FnMut(&str, &[Chosen]) -> bool,
    ) -> Result<Decoded> {
        let out = &mut self.out;
        if !out.cancelled && (out.text.len() > self.emitted || self.pending > 0) {
            let start = out.tokens.len().saturating_sub(self.pending);
            let rest = out.text.get(self.emitted..).unwrap_or_default().to_string();
            out.cancelled = !on_text(&rest, &out.tokens[start..]);
        }
        Ok(self.out)
    }
}

/// The prompt's tokens with the log-probability each had given those before it (rows
/// of `logits`: row j predicts token j + 1).
fn prompt_tokens(prompt: &[u32], logits: &[Vec<f32>], k: usize) -> Vec<PromptToken> {
    prompt
        .iter()
        .enumerate()
        .map(
            |(j, &id)| match j.checked_sub(1).and_then(|r| logits.get(r)) {
                None => PromptToken {
                    id,
                    logprob: None,
                    top: vec![],
                },
                Some(row) => {
                    let lps = log_softmax(row, 0.0);
                    PromptToken {
                        id,
                        logprob: Some(lps[id as usize] as f32),
                        top: top_k(&lps, k),
                    }
                }
            },
        )
        .collect()
}

/// Where the first stop string begins in `text`.
fn first_stop(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// How much of `text` is final: not the start of a stop string still growing, not a
/// partial character (decoded as U+FFFD).
fn safe_len(text: &str, stop: &[String]) -> usize {
    let mut limit = text.len();
    if text.ends_with('\u{FFFD}') {
        limit -= '\u{FFFD}'.len_utf8();
    }
    let mut end = limit;
    for s in stop.iter().filter(|s| !s.is_empty()) {
        // Every suffix of the text that is a prefix of the stop string may still grow
        // into it.
        for (i, _) in text[..limit].char_indices().rev().take(s.chars().count()) {
            if s.starts_with(&text[i..limit]) {
                end = end.min(i);
            }
        }
    }
    end
}

/// Drops the tokens that spell (part of) a stop string, as the text drops it.
fn trim_tokens(
    tokenizer: &TextTokenizer,
    ids: &[u32],
    tokens: &mut Vec<Chosen>,
    text_len: usize,
) -> Result<()> {
    let mut n = tokens.len();
    while n > 0 && tokenizer.decode_text(&ids[..n])?.len() > text_len {
        n -= 1;
    }
    tokens.truncate(n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_final_unless_a_stop_string_may_begin_in_it() {
        let stop = vec!["\n\nQ:".to_string()];
        assert_eq!(safe_len("Paris is", &stop), 8);
        assert_eq!(safe_len("Paris\n", &stop), 5);
        assert_eq!(safe_len("Paris\n\n", &stop), 5);
        assert_eq!(safe_len("Paris\n\nQ", &stop), 5);
        assert_eq!(safe_len("caf\u{FFFD}", &[]), 3);
        assert_eq!(first_stop("a\n\nQ: b", &stop), Some(1));
        assert_eq!(first_stop("a", &stop), None);
    }
}

//! Continuous batching: the requests in flight are decoded together, one forward step
//! for all of them, and a request joins or leaves the batch between any two steps.
//!
//! One engine thread owns the batch. A request's handler hands it a [`DecodeRequest`]
//! and waits for its text; the engine runs the prompt alone (prefill, batch 1), draws
//! the first token, and adds the request's cache to the batch's, left-padded so that
//! every row's next token lands in the same column ([`KvCache::push_rows`]). Each step
//! then runs one token per row; a finished, stopped or abandoned row leaves the cache
//! at once ([`KvCache::keep_rows`]), freeing its place for the next waiting request.
//! Each row keeps its own sampler and stop rules ([`Sequence`]), so an answer does not
//! depend on its neighbours beyond float rounding.

use super::decode::{last_logits, DecodeRequest, Decoded, Sequence};
use super::sampling::Chosen;
use crate::error::{Error, Result};
use crate::model::{KvCache, Model};
use crate::tokenizer::TextTokenizer;
use candle_core::Tensor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// The engine thread's address: where handlers send requests.
pub(crate) struct Batcher {
    jobs: mpsc::Sender<Job>,
    max_batch: usize,
    stats: Arc<Stats>,
}

/// What the engine has done, for `/health`.
#[derive(Default)]
struct Stats {
    steps: AtomicU64,
    /// Rows decoded by those steps (rows / steps: the mean batch).
    rows: AtomicU64,
    peak: AtomicU64,
    /// Rows in the batch now.
    running: AtomicU64,
}

struct Job {
    req: DecodeRequest,
    replies: mpsc::Sender<Reply>,
}

enum Reply {
    /// A piece of final text and the tokens that completed it.
    Text(String, Vec<Chosen>),
    Done(Decoded),
    Failed(String),
}

/// A request in the batch: its generation and where its text goes.
struct Row {
    seq: Sequence,
    replies: mpsc::Sender<Reply>,
}

impl Row {
    /// Hands text to the waiting handler; false once it has gone.
    fn sender(replies: &mpsc::Sender<Reply>) -> impl FnMut(&str, &[Chosen]) -> bool + '_ {
        move |piece, tokens| {
            replies
                .send(Reply::Text(piece.to_string(), tokens.to_vec()))
                .is_ok()
        }
    }

    /// [`Sequence::advance`], its text sent to the handler.
    fn advance(&mut self, logits: &[f32], tokenizer: &TextTokenizer) -> Result<bool> {
        self.seq
            .advance(logits, tokenizer, &mut Self::sender(&self.replies))
    }

    fn finish(self) {
        let done = self.seq.finish(&mut Self::sender(&self.replies));
        let _ = self.replies.send(match done {
            Ok(out) => Reply::Done(out),
            Err(e) => Reply::Failed(e.to_string()),
        });
    }
}

impl Batcher {
    /// Starts the engine thread, decoding up to `max_batch` requests together.
    pub(crate) fn start(
        model: Arc<Model>,
        tokenizer: Arc<TextTokenizer>,
        max_batch: usize,
    ) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let max_batch = max_batch.max(1);
        let stats = Arc::new(Stats::default());
        let counts = stats.clone();
        std::thread::Builder::new()
            .name("ckpt-batch".into())
            .spawn(move || Engine::new(&model, &tokenizer, max_batch, &counts).run(&queue))
            .map_err(|e| Error::Invalid(format!("cannot start the decoding thread: {e}")))?;
        Ok(Self {
            jobs,
            max_batch,
            stats,
        })
    }

    /// Requests decoded together at most.
    pub(crate) fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The batching so far: `max_batch`, decoding `steps`, the `peak` and mean batch.
    pub(crate) fn stats(&self) -> serde_json::Value {
        let steps = self.stats.steps.load(Ordering::Relaxed);
        let rows = self.stats.rows.load(Ordering::Relaxed);
        serde_json::json!({
            "max_batch": self.max_batch,
            "steps": steps,
            "peak_batch": self.stats.peak.load(Ordering::Relaxed),
            "mean_batch": if steps == 0 { 0.0 } else { rows as f64 / steps as f64 },
            "running": self.stats.running.load(Ordering::Relaxed),
        })
    }

    /// Generates as `req` asks, in the batch: as [`super::decode::decode`] does alone.
    pub(crate) fn generate(
        &self,
        req: &DecodeRequest,
        on_text: &mut dyn FnMut(&str, &[Chosen]) -> bool,
    ) -> Result<Decoded> {
        let (replies, answers) = mpsc::channel();
        self.jobs
            .send(Job {
                req: req.clone(),
                replies,
            })
            .map_err(|_| stopped())?;
        let mut text = String::new();
        for answer in answers {
            match answer {
                Reply::Text(piece, tokens) => {
                    text.push_str(&piece);
                    if !on_text(&piece, &tokens) {
                        // Dropping `answers` tells the engine at its next piece.
                        return Ok(Decoded::cancelled(text));
                    }
                }
                Reply::Done(out) => return Ok(out),
                Reply::Failed(e) => return Err(Error::Invalid(e)),
            }
        }
        Err(stopped())
    }
}

fn stopped() -> Error {
    Error::Invalid("the decoding thread has stopped".into())
}

/// The batch: its rows and their shared cache (row `i` of the cache is `rows[i]`).
struct Engine<'a> {
    model: &'a Model,
    tokenizer: &'a TextTokenizer,
    max_batch: usize,
    rows: Vec<Row>,
    cache: KvCache,
    stats: &'a Stats,
}

impl<'a> Engine<'a> {
    fn new(
        model: &'a Model,
        tokenizer: &'a TextTokenizer,
        max_batch: usize,
        stats: &'a Stats,
    ) -> Self {
        Self {
            model,
            tokenizer,
            max_batch,
            rows: vec![],
            cache: KvCache::new(model.config().num_hidden_layers),
            stats,
        }
    }

    /// Admits and steps until every handler is gone.
    fn run(mut self, queue: &mpsc::Receiver<Job>) {
        loop {
            if self.rows.is_empty() {
                // Idle: wait for work (an error: the server has shut down).
                match queue.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => return,
                }
            }
            while self.rows.len() < self.max_batch {
                match queue.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => break,
                }
            }
            if !self.rows.is_empty() {
                self.step();
            }
            let running = self.rows.len() as u64;
            self.stats.running.store(running, Ordering::Relaxed);
        }
    }

    /// Runs a request's prompt and draws its first token; it joins the batch when it
    /// goes on.
    fn admit(&mut self, job: Job) {
        // Counted before it can send text: `running` never misses a row a client sees.
        self.stats.running.fetch_add(1, Ordering::Relaxed);
        let mut cache = KvCache::new(self.model.config().num_hidden_layers);
        let mut row = Row {
            seq: Sequence::new(job.req),
            replies: job.replies,
        };
        let first = row
            .seq
            .prefill(self.model, self.tokenizer, &mut cache)
            .and_then(|logits| match logits {
                None => Ok(false),
                Some(logits) => row.advance(&logits, self.tokenizer),
            })
            .and_then(|goes_on| {
                if goes_on {
                    self.cache.push_rows(&cache)?;
                }
                Ok(goes_on)
            });
        match first {
            Ok(true) => self.rows.push(row),
            Ok(false) => row.finish(),
            Err(e) => {
                let _ = row.replies.send(Reply::Failed(e.to_string()));
            }
        }
    }

    /// One token for every row; rows that end leave the batch.
    fn step(&mut self) {
        let logits = self.forward();
        let logits = match logits {
            Ok(logits) => logits,
            Err(e) => return self.fail_all(&e),
        };
        let mut keep = Vec::with_capacity(self.rows.len());
        let mut going = Vec::with_capacity(self.rows.len());
        for (i, (mut row, logits)) in self.rows.drain(..).zip(logits).enumerate() {
            match row.advance(&logits, self.tokenizer) {
                Ok(true) => {
                    keep.push(i);
                    going.push(row);
                }
                Ok(false) => row.finish(),
                Err(e) => {
                    let _ = row.replies.send(Reply::Failed(e.to_string()));
                }
            }
        }
        self.rows = going;
        if let Err(e) = self.cache.keep_rows(&keep) {
            self.fail_all(&e.into());
        }
    }

    /// Every row fails with `e`, and the batch starts again empty: its cache is in an
    /// unknown state.
    fn fail_all(&mut self, e: &Error) {
        for row in self.rows.drain(..) {
            let _ = row.replies.send(Reply::Failed(e.to_string()));
        }
        self.cache = KvCache::new(self.model.config().num_hidden_layers);
    }

    /// The next-token logits of every row, one token each.
    fn forward(&mut self) -> Result<Vec<Vec<f32>>> {
        let last: Vec<u32> = self.rows.iter().map(|r| r.seq.last).collect();
        let n = last.len() as u64;
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.stats.rows.fetch_add(n, Ordering::Relaxed);
        self.stats.peak.fetch_max(n, Ordering::Relaxed);
        let input = Tensor::new(last.as_slice(), self.model.device())?.unsqueeze(1)?;
        let hidden = self.model.hidden_states(&input, &mut self.cache)?;
        last_logits(self.model, &hidden)
    }
}

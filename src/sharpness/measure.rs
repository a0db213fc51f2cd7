//! Sharpness of checkpoints, one after the other: data, parameters, Hutchinson's
//! estimate (and optionally the top eigenvalue), one result each, skipping those the
//! results file already holds and resuming an interrupted one at its last probe.

use super::data::{DataOptions, TokenBatches};
use super::hutchinson::{hutchinson_block, hutchinson_trace, TraceEstimate, TraceOptions};
use super::hvp::{Hessian, Method};
use super::objective::LlamaObjective;
use super::power::top_eigenvalue;
use super::results::{block_traces, Progress, ResultsFile, SharpnessConfig, SharpnessResult};
use super::sets::{Content, DataSet};
use super::spectrum::{slq_density, top_eigenvalues, SpectralDensity};
use super::vector;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::tokenizer::TextTokenizer;
use crate::train::data::sft::{encode_conversation, template_for};
use crate::train::data::tokenizer::TrainTokenizer;
use candle_core::{DType, Device};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The paper's sequence length (Table 23), capped by the model's positions.
pub(crate) const DEFAULT_SEQ_LEN: usize = 1024;

/// Everything a measurement needs besides the checkpoint.
#[derive(Debug, Clone)]
pub struct SharpnessOptions {
    /// The chat template conversations are rendered with; `None`: `own` (the
    /// checkpoint's, Tulu's when it has none, as `ckpt train` fine-tunes), not asked for.
    pub(crate) chat_template: Option<crate::chat::TemplateChoice>,
    /// Tokens per row; `None`: [`DEFAULT_SEQ_LEN`] or the model's maximum if smaller.
    pub(crate) seq_len: Option<usize>,
    pub(crate) batch_size: usize,
    pub(crate) max_batches: Option<usize>,
    pub(crate) max_texts: Option<usize>,
    pub(crate) trace: TraceOptions,
    pub(crate) method: Method,
    /// F32 or F64.
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    /// Power-iteration products at most; `None`: no top eigenvalue.
    pub(crate) top_eigen_iters: Option<usize>,
    pub(crate) top_eigen_tol: f64,
    /// The `k` largest eigenvalues by Lanczos, and its steps.
    pub(crate) top_k: Option<(usize, usize)>,
    /// The spectral density by SLQ: runs, and Lanczos steps per run.
    pub(crate) density: Option<(usize, usize)>,
    /// A tokenizer file to use instead of each checkpoint's.
    pub(crate) tokenizer: Option<PathBuf>,
    /// Where to write the token batches (JSON or `.npy`).
    pub(crate) save_batches: Option<PathBuf>,
}

/// What happened to one checkpoint.
#[derive(Debug)]
pub enum Outcome {
    /// Measured now.
    Measured(SharpnessResult),
    /// Already in the results file (for this checkpoint, or for the same weights
    /// elsewhere: then recorded again under this checkpoint's path).
    Skipped(SharpnessResult),
    /// Failed; the others went on.
    Failed { checkpoint: PathBuf, error: Error },
}

/// Progress reports, for the command line.
pub enum Event<'a> {
    /// Starting checkpoint `index` (0-based) of `total`; `resumed` probes were done.
    Start {
        checkpoint: &'a Checkpoint,
        index: usize,
        total: usize,
        probes: usize,
        resumed: usize,
        /// The measurement set's name, when named.
        set: Option<&'a str>,
    },
    /// A probe finished.
    Probe { estimate: &'a TraceEstimate },
    /// The token batches were written to this file.
    SavedBatches(&'a Path),
}

/// Measures every checkpoint on the texts, recording into `results`. A checkpoint that
/// fails is reported in its [`Outcome`] and the others go on.
pub fn measure_all(
    checkpoints: &[Checkpoint],
    sets: &[DataSet],
    opts: &SharpnessOptions,
    results: &mut ResultsFile,
    on_event: &mut dyn FnMut(Event),
) -> Vec<Outcome> {
    let units: Vec<Unit> = checkpoints
        .iter()
        .map(|checkpoint| Unit {
            checkpoint,
            probes: None,
        })
        .collect();
    measure_units(&units, sets, opts, results, on_event)
}

/// Measures Hub revisions one after the other within `downloads`' disk budget: the
/// next revision downloads while one is measured, and the weights fetched for the sweep
/// are removed once its result is recorded.
pub fn measure_revisions(
    revisions: &[crate::hub::HubRevision],
    downloads: &mut crate::hub::sweep::Downloads,
    sets: &[DataSet],
    opts: &SharpnessOptions,
    results: &mut ResultsFile,
    on_event: &mut dyn FnMut(Event),
) -> Vec<Outcome> {
    let hub = downloads.hub().clone();
    // What each revision needs (one tree listing each); offline, its cached snapshot.
    let files: Vec<Result<Vec<crate::hub::FileEntry>>> = revisions
        .iter()
        .map(|rev| {
            if hub.is_offline() {
                return Ok(vec![]);
            }
            let tree = hub.tree(&rev.source.repo, &rev.commit)?;
            hub.checkpoint_files(rev, &tree)
        })
        .collect();
    let mut outcomes = Vec::new();
    for (i, rev) in revisions.iter().enumerate() {
        let failed = |error: String| Outcome::Failed {
            checkpoint: PathBuf::from(rev.source.to_string()),
            error: Error::Invalid(error),
        };
        let mine = match &files[i] {
            Ok(f) => f,
            Err(e) => {
                outcomes.push(failed(e.to_string()));
                continue;
            }
        };
        let dir = match downloads.get(i, rev, mine) {
            Ok(dir) => dir,
            Err(e) => {
                outcomes.push(failed(e.to_string()));
                continue;
            }
        };
        if let Some(j) = (i + 1..revisions.len()).find(|&j| files[j].is_ok()) {
            if let Ok(next) = &files[j] {
                downloads.prefetch(j, &revisions[j], next);
            }
        }
        match crate::sources::open_revision(&dir, rev) {
            Ok(checkpoint) => {
                let unit = Unit {
                    checkpoint: &checkpoint,
                    probes: None,
                };
                outcomes.extend(measure_units(&[unit], sets, opts, results, on_event));
            }
            Err(e) => outcomes.push(failed(format!("{}: {e}", rev.source))),
        }
        downloads.release(i);
    }
    outcomes
}

/// A unit of (sharded) work: a checkpoint's measurement, or a block of its probes.
pub struct Unit<'a> {
    pub(crate) checkpoint: &'a Checkpoint,
    /// `None`: the whole measurement.
    pub(crate) probes: Option<std::ops::Range<usize>>,
}

/// [`measure_all`] over units: a block records its probes' samples only
/// ([`SharpnessResult::is_block`]); a later whole measurement of the same checkpoint
/// and settings starts from the blocks recorded, so blocks measured by shards are
/// joined without measuring anything again.
pub fn measure_units(
    units: &[Unit],
    sets: &[DataSet],
    opts: &SharpnessOptions,
    results: &mut ResultsFile,
    on_event: &mut dyn FnMut(Event),
) -> Vec<Outcome> {
    let mut data = DataCache::default();
    let mut outcomes = Vec::new();
    for (index, unit) in units.iter().enumerate() {
        let ckpt = unit.checkpoint;
        for set in sets {
            let ctx = Context {
                index,
                total: units.len(),
                probes: unit.probes.clone(),
            };
            let outcome = measure_one(ckpt, set, opts, results, &mut data, &ctx, on_event);
            outcomes.push(outcome.unwrap_or_else(|error| Outcome::Failed {
                checkpoint: std::path::PathBuf::from(ckpt.name()),
                error,
            }));
        }
    }
    outcomes
}

struct Context {
    index: usize,
    total: usize,
    /// A block of the probes, or all of them.
    probes: Option<std::ops::Range<usize>>,
}

/// Token batches by tokenizer content and shape, so that the checkpoints of a run
/// tokenize the texts once; and the data hashes already saved.
#[derive(Default)]
struct DataCache {
    batches: HashMap<String, TokenBatches>,
    saved: Vec<String>,
}

fn measure_one(
    ckpt: &Checkpoint,
    set: &DataSet,
    opts: &SharpnessOptions,
    results: &mut ResultsFile,
    cache: &mut DataCache,
    ctx: &Context,
    on_event: &mut dyn FnMut(Event),
) -> Result<Outcome> {
    let cfg = ckpt.config()?;
    let seq_len = resolve_seq_len(ckpt, &cfg, opts.seq_len)?;
    let data_opts = DataOptions {
        seq_len,
        batch_size: opts.batch_size,
        max_batches: opts.max_batches,
        max_texts: opts.max_texts,
    };
    let batches = token_batches(ckpt, &cfg, set, opts, &data_opts, cache)?;
    let data_hash = batches.hash();
    if let Some(path) = &opts.save_batches {
        if !cache.saved.contains(&data_hash) {
            let path = numbered(path, cache.saved.len());
            batches.save(&path)?;
            cache.saved.push(data_hash.clone());
            on_event(Event::SavedBatches(&path));
        }
    }
    let config = sharpness_config(opts, set, &batches, data_hash);
    let id = RecordId {
        // A Hub revision is recorded as itself (`hf://org/name@rev`), not its snapshot.
        dir: match &ckpt.origin {
            Some(origin) => std::path::PathBuf::from(&origin.name),
            None => std::fs::canonicalize(&ckpt.dir).unwrap_or_else(|_| ckpt.dir.clone()),
        },
        fingerprint: ckpt.fingerprint()?,
        key: config.key(),
        config,
    };
    if let Some(range) = ctx.probes.clone() {
        let block = Block {
            cfg: &cfg,
            batches: &batches,
            range,
        };
        return measure_block(ckpt, block, opts, results, ctx, on_event, id);
    }
    if let Some(done) = results.find(&id.dir, &id.fingerprint, &id.key) {
        if done.checkpoint == id.dir {
            // Shown under the set and file asked for now (the key ignores both).
            let mut shown = done.clone();
            shown.config.set = id.config.set.clone();
            shown.config.data = id.config.data.clone();
            return Ok(Outcome::Skipped(shown));
        }
        // The same weights elsewhere (a WSD run's stable phase is its WSO twin's): the
        // number holds; it is recorded under this checkpoint too.
        let copy = SharpnessResult {
            checkpoint: id.dir,
            step: ckpt.step,
            stage: ckpt.stage().map(|s| s.to_string()),
            schedule: ckpt.meta.as_ref().and_then(|m| m.schedule.clone()),
            config: id.config.clone(),
            ..done.clone()
        };
        results.append(copy.clone())?;
        return Ok(Outcome::Skipped(copy));
    }

    let started = Instant::now();
    let objective = objective(&cfg, &batches, opts)?;
    let theta = objective.load_parameters(ckpt)?;
    let parameters = vector::len(&theta);
    let hessian = Hessian::new(&objective, theta, opts.method);
    // Probes already measured: an interrupted run's, or blocks shards measured.
    let mut progress = results.progress(&id.fingerprint, &id.key)?;
    let from_blocks = results.blocks(&id.fingerprint, &id.key);
    if from_blocks.len() > progress.estimate.len() {
        progress.estimate = from_blocks;
    }
    on_event(Event::Start {
        checkpoint: ckpt,
        index: ctx.index,
        total: ctx.total,
        probes: opts.trace.probes,
        resumed: progress.estimate.len().min(opts.trace.probes),
        set: set.name.as_deref(),
    });
    let resumed = std::mem::take(&mut progress.estimate);
    progress.estimate = hutchinson_trace(
        &hessian,
        objective.shapes(),
        &objective.blocks(),
        &opts.trace,
        resumed,
        &mut |_, est| {
            results.save_progress(&Progress {
                estimate: est.clone(),
                ..progress.clone()
            })?;
            on_event(Event::Probe { estimate: est });
            Ok(())
        },
    )
    .map_err(|e| in_checkpoint(ckpt, e))?;
    let top = match opts.top_eigen_iters {
        Some(iters) => Some(
            top_eigenvalue(
                &hessian,
                objective.shapes(),
                opts.trace.seed,
                iters,
                opts.top_eigen_tol,
            )
            .map_err(|e| in_checkpoint(ckpt, e))?,
        ),
        None => None,
    };
    spectrum(&hessian, objective.shapes(), opts, &mut progress, results)
        .map_err(|e| in_checkpoint(ckpt, e))?;
    let density = opts.density.map(|_| SpectralDensity {
        runs: std::mem::take(&mut progress.density_runs),
        dimension: parameters,
    });
    let estimate = progress.estimate;
    let result = SharpnessResult {
        top_eigenvalue: top,
        top_eigenvalues: progress.top_eigenvalues,
        density,
        ..id.record(ckpt, &batches, parameters, estimate, started)
    };
    results.append(result.clone())?;
    Ok(Outcome::Measured(result))
}

/// The top-k eigenvalues and the SLQ runs asked for and not yet in `progress`, each
/// saved in the progress file once computed (a killed run keeps them).
fn spectrum(
    hessian: &Hessian<LlamaObjective>,
    shapes: &[Vec<usize>],
    opts: &SharpnessOptions,
    progress: &mut Progress,
    results: &ResultsFile,
) -> Result<()> {
    let (dtype, device) = (opts.dtype, &opts.device);
    if let (Some((k, steps)), None) = (opts.top_k, &progress.top_eigenvalues) {
        let seed = opts.trace.seed;
        progress.top_eigenvalues = Some(top_eigenvalues(
            hessian, shapes, dtype, device, seed, k, steps,
        )?);
        results.save_progress(progress)?;
    }
    if let Some((runs, steps)) = opts.density {
        let done = std::mem::take(&mut progress.density_runs);
        let seed = opts.trace.seed;
        let density = slq_density(
            hessian,
            shapes,
            dtype,
            device,
            seed,
            runs,
            steps,
            &done,
            &mut |d| {
                results.save_progress(&Progress {
                    density_runs: d.runs.clone(),
                    ..progress.clone()
                })
            },
        )?;
        progress.density_runs = density.runs;
    }
    Ok(())
}

/// The loss whose Hessian is measured: the model on the token batches.
fn objective(
    cfg: &ModelConfig,
    batches: &TokenBatches,
    opts: &SharpnessOptions,
) -> Result<LlamaObjective> {
    let objective = LlamaObjective::new(
        cfg,
        &batches.batches,
        batches.batch_size,
        batches.seq_len,
        opts.dtype,
        &opts.device,
    )?;
    match &batches.masks {
        Some(masks) => objective.with_masks(masks),
        None => Ok(objective),
    }
}

/// What a record is kept under: the checkpoint as shown, its weights, its settings.
struct RecordId {
    dir: std::path::PathBuf,
    fingerprint: String,
    config: SharpnessConfig,
    key: String,
}

impl RecordId {
    /// The record of `estimate` (no top eigenvalue; a whole measurement).
    fn record(
        self,
        ckpt: &Checkpoint,
        batches: &TokenBatches,
        parameters: usize,
        estimate: TraceEstimate,
        started: Instant,
    ) -> SharpnessResult {
        let stderr = estimate.stderr();
        SharpnessResult {
            checkpoint: self.dir,
            fingerprint: self.fingerprint,
            step: ckpt.step,
            stage: ckpt.stage().map(|s| s.to_string()),
            schedule: ckpt.meta.as_ref().and_then(|m| m.schedule.clone()),
            config: self.config,
            config_key: self.key,
            estimate: estimate.mean(),
            stderr: stderr.is_finite().then_some(stderr),
            probes: estimate.len(),
            batches: batches.batches.len(),
            target_tokens: batches.target_tokens(),
            parameters,
            running: estimate.running_means(),
            blocks: block_traces(&estimate),
            samples: estimate.samples,
            top_eigenvalue: None,
            top_eigenvalues: None,
            density: None,
            seconds: started.elapsed().as_secs_f64(),
            ckpt_version: crate::VERSION.into(),
            probe_start: None,
        }
    }
}

/// A block of a checkpoint's probes, with what measuring it needs.
struct Block<'a> {
    cfg: &'a ModelConfig,
    batches: &'a TokenBatches,
    range: std::ops::Range<usize>,
}

/// Measures the probes of `block` (unless recorded) as a block record.
fn measure_block(
    ckpt: &Checkpoint,
    block: Block,
    opts: &SharpnessOptions,
    results: &mut ResultsFile,
    ctx: &Context,
    on_event: &mut dyn FnMut(Event),
    id: RecordId,
) -> Result<Outcome> {
    let range = block.range;
    let done = results.results().iter().find(|r| {
        r.probe_start == Some(range.start)
            && r.samples.len() == range.len()
            && r.fingerprint == id.fingerprint
            && r.config_key == id.key
    });
    if let Some(done) = done {
        return Ok(Outcome::Skipped(done.clone()));
    }
    let started = Instant::now();
    let objective = objective(block.cfg, block.batches, opts)?;
    let theta = objective.load_parameters(ckpt)?;
    let parameters = vector::len(&theta);
    let hessian = Hessian::new(&objective, theta, opts.method);
    on_event(Event::Start {
        checkpoint: ckpt,
        index: ctx.index,
        total: ctx.total,
        probes: range.len(),
        resumed: 0,
        set: None,
    });
    let estimate = hutchinson_block(
        &hessian,
        objective.shapes(),
        &objective.blocks(),
        opts.trace.seed,
        range.clone(),
        &mut |_| Ok(()),
    )
    .map_err(|e| in_checkpoint(ckpt, e))?;
    let result = SharpnessResult {
        probe_start: Some(range.start),
        ..id.record(ckpt, block.batches, parameters, estimate, started)
    };
    results.append(result.clone())?;
    Ok(Outcome::Measured(result))
}

/// The configuration recorded with (and keying) a result.
fn sharpness_config(
    opts: &SharpnessOptions,
    set: &DataSet,
    batches: &TokenBatches,
    data_hash: String,
) -> SharpnessConfig {
    let eps = match opts.method {
        Method::FiniteDifference { eps } => eps,
        Method::Exact => 0.0,
    };
    SharpnessConfig {
        data: set.path.display().to_string(),
        set: set.name.clone(),
        data_hash,
        seq_len: batches.seq_len,
        batch_size: batches.batch_size,
        batches: batches.batches.len(),
        max_batches: opts.max_batches,
        max_texts: opts.max_texts,
        samples: opts.trace.probes,
        seed: opts.trace.seed,
        method: opts.method.name().into(),
        eps,
        dtype: format!("{:?}", opts.dtype).to_lowercase(),
        rel_tol: opts.trace.rel_tol,
        min_probes: opts.trace.min_probes,
        top_eigen_iters: opts.top_eigen_iters,
        top_eigen_tol: opts.top_eigen_tol,
        top_k: opts.top_k,
        density: opts.density,
    }
}

/// The row length: as asked (at most the model's positions; at least 2, checked by
/// [`SharpnessJob::check`](super::SharpnessJob::check)), else the default capped.
fn resolve_seq_len(ckpt: &Checkpoint, cfg: &ModelConfig, asked: Option<usize>) -> Result<usize> {
    let max = cfg.max_position_embeddings;
    match asked {
        Some(n) if n > max => Err(Error::bad_file(
            ckpt.dir.join(crate::checkpoint::CONFIG_FILE),
            format!("--seq-len {n} is more than the model's max_position_embeddings ({max})"),
        )),
        Some(n) => Ok(n),
        None => Ok(DEFAULT_SEQ_LEN.min(max)),
    }
}

/// The set's token batches under the checkpoint's tokenizer (and, for conversations,
/// its chat template); cached by tokenizer, so the checkpoints of a run tokenize once.
fn token_batches(
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    set: &DataSet,
    opts: &SharpnessOptions,
    data_opts: &DataOptions,
    cache: &mut DataCache,
) -> Result<TokenBatches> {
    match &set.content {
        Content::Texts(texts) => text_batches(ckpt, cfg, set, texts, opts, data_opts, cache),
        Content::Chats(chats) => chat_batches(ckpt, cfg, set, chats, opts, data_opts, cache),
    }
}

fn text_batches(
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    set: &DataSet,
    texts: &[String],
    opts: &SharpnessOptions,
    data_opts: &DataOptions,
    cache: &mut DataCache,
) -> Result<TokenBatches> {
    let tokenizer = TextTokenizer::load(
        &ckpt.dir,
        opts.tokenizer.as_deref(),
        cfg.bos_token_id,
        cfg.eos_token_id,
    )?;
    let separator = cfg.eos_token_id.unwrap_or(tokenizer.prefix_token);
    let bytes = crate::error::read_file(tokenizer.path())?;
    let key = format!(
        "{} {} {separator} {data_opts:?}",
        set.path.display(),
        blake3::hash(&bytes).to_hex()
    );
    if let Some(b) = cache.batches.get(&key) {
        return Ok(b.clone());
    }
    let ids = texts.iter().map(|t| {
        let ids = tokenizer.encode(t)?;
        check_vocab(&ids, cfg.vocab_size, tokenizer.path())?;
        Ok(ids)
    });
    let batches = TokenBatches::pack(ids, separator, data_opts, &set.path)?;
    cache.batches.insert(key, batches.clone());
    Ok(batches)
}

/// Conversations rendered with the chat template SFT would use on this checkpoint.
fn chat_batches(
    ckpt: &Checkpoint,
    cfg: &ModelConfig,
    set: &DataSet,
    chats: &[Vec<crate::chat::Message>],
    opts: &SharpnessOptions,
    data_opts: &DataOptions,
    cache: &mut DataCache,
) -> Result<TokenBatches> {
    let source = opts.tokenizer.as_deref().unwrap_or(&ckpt.dir);
    let tok = TrainTokenizer::load(
        source,
        opts.chat_template
            .as_ref()
            .unwrap_or(&crate::chat::TemplateChoice::Own),
    )?;
    let origin = tok.chat_template.origin.clone();
    let key = format!(
        "{} {} {} {data_opts:?}",
        set.path.display(),
        blake3::hash(tok.json().as_bytes()).to_hex(),
        blake3::hash(tok.chat_template.text.as_bytes()).to_hex()
    );
    if let Some(b) = cache.batches.get(&key) {
        return Ok(b.clone());
    }
    let template = template_for(&tok).map_err(|e| Error::bad_file(&origin, e.to_string()))?;
    let examples = chats.iter().enumerate().map(|(i, messages)| {
        let example = encode_conversation(messages, &template, &tok).map_err(|e| {
            Error::bad_file(
                &set.path,
                format!(
                    "conversation {}: {e} (template: {})",
                    i + 1,
                    origin.display()
                ),
            )
        })?;
        check_vocab(&example.tokens, cfg.vocab_size, &set.path)?;
        Ok(example)
    });
    let batches = TokenBatches::pack_chats(examples, tok.pad_id(), data_opts, &set.path)?;
    cache.batches.insert(key, batches.clone());
    Ok(batches)
}

fn check_vocab(ids: &[u32], vocab: usize, source: &Path) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(bad) => Err(Error::bad_file(
            source,
            format!("token id {bad} is outside the model's vocabulary of {vocab}"),
        )),
        None => Ok(()),
    }
}

/// `path` for the first data set saved, `stem.N.ext` for the N-th other one (a
/// checkpoint with another tokenizer).
fn numbered(path: &Path, n: usize) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{n}"),
    };
    path.with_file_name(name)
}

fn in_checkpoint(ckpt: &Checkpoint, e: Error) -> Error {
    e.map_message(|m| format!("{}: {m}", ckpt.dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_paths_keep_the_extension() {
        assert_eq!(numbered(Path::new("a/b.npy"), 0), Path::new("a/b.npy"));
        assert_eq!(numbered(Path::new("a/b.npy"), 2), Path::new("a/b.2.npy"));
        assert_eq!(numbered(Path::new("b"), 1), Path::new("b.1"));
    }
}

//! From a recipe to a [`Trainer`] ready to run: a fresh start, a start from a parent
//! checkpoint (mid-training, SFT, a branched decay), or a resume.
//!
//! Everything that can be wrong with the recipe, the data or the parent is found here,
//! before the first step runs.

use super::data::{BatchLoader, Corpus, DataPosition, PretrainLoader, SftLoader, TrainTokenizer};
use super::optimizer::{AdamW, OPTIMIZER_FILE};
use super::recipe::{InitMode, Recipe, RUN_FILE};
use super::saving;
use super::trainer::{Trainer, METRICS_FILE};
use crate::chat::TemplateChoice;
use crate::checkpoint::{Checkpoint, ParentRef, ScheduleInfo, Stage};
use crate::error::{Error, Result};
use crate::model::{init_weights, parameter_shapes, ModelConfig};
use crate::schedule::ScheduleSpec;
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the run starts from.
struct Start {
    /// Weights (f32, Hugging Face names) and their config, when not from scratch.
    weights: Option<(ModelConfig, HashMap<String, Tensor>)>,
    /// Optimizer state to restore.
    optimizer: Option<PathBuf>,
    /// Data position to continue from.
    data_position: Option<serde_json::Value>,
    step: u64,
    stage_start: u64,
    tokens_seen: u64,
    parent: Option<ParentRef>,
    /// Where the tokenizer comes from when the recipe names none.
    tokenizer_dir: Option<PathBuf>,
    /// Continuing this very run: its own tokenizer, whatever the recipe says.
    resuming: bool,
}

/// Prepares `recipe`'s run. `resume`: a checkpoint, or a run directory whose latest
/// checkpoint to continue from. Without it, a run directory that already holds
/// checkpoints of the same recipe is resumed from its latest one (as torchtitan does);
/// one that holds another recipe's checkpoints is an error.
pub fn prepare(recipe: &Recipe, resume: Option<&Path>) -> Result<Trainer> {
    let run_dir = recipe.run_dir();
    let device = crate::device::parse_device(&recipe.job.device)?;
    let compute_dtype = crate::device::parse_dtype(&recipe.job.dtype)?;
    check_shape_fits(recipe, &device)?;
    let resumed = find_resume_point(recipe, &run_dir, resume)?;

    let mut start = match &resumed {
        Some(ckpt) => resume_start(ckpt)?,
        None => match &recipe.init.parent {
            Some(parent) => parent_start(recipe, parent)?,
            None => Start::fresh(),
        },
    };
    let corpus = match recipe.job.stage {
        Stage::Sft => None,
        _ => Some(Corpus::open(&recipe.data)?),
    };
    // The tokenizer is saved into the run directory; the data has been opened.
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    let tok = open_tokenizer(recipe, &start, corpus.as_ref(), &run_dir)?;
    let seq_len = recipe.training.seq_len;
    let seed = recipe.job.seed;
    let mut data: Box<dyn BatchLoader> = match corpus {
        Some(corpus) => Box::new(PretrainLoader::from_corpus(
            corpus,
            &tok,
            seq_len,
            recipe.data.shuffle,
            seed,
        )?),
        None => Box::new(SftLoader::open(&recipe.data, &tok, seq_len, seed)?),
    };
    if let Some(pos) = &start.data_position {
        let pos: DataPosition = serde_json::from_value(pos.clone())
            .map_err(|e| Error::Invalid(format!("bad data_position in ckpt.json: {e}")))?;
        data.seek(&pos)?;
    }

    let (config, weights) = match start.weights.take() {
        Some(w) => w,
        None => fresh_weights(recipe, &tok, &device)?,
    };
    check_vocab(&config, &tok)?;
    check_trainable(&config, &device)?;
    check_batch_fits(recipe, &config, &device)?;
    if recipe.training.seq_len > config.max_position_embeddings {
        return Err(Error::bad_value(
            "training.seq_len",
            format!(
                "training.seq_len = {} is longer than the model's max_position_embeddings = {}",
                recipe.training.seq_len, config.max_position_embeddings
            ),
        ));
    }
    let vars = to_vars(&config, weights, &device)?;
    let mut optimizer = AdamW::new(recipe.optimizer.clone(), vars.clone())?;
    if let Some(path) = &start.optimizer {
        optimizer.load(path)?;
    }

    let schedule = resolve_schedule(recipe, data.as_ref())?;
    let stage_steps = stage_length(recipe, &schedule, start.stage_start)?;
    check_branch_point(recipe, &schedule, &start)?;
    check_schedule_covers(recipe, &schedule, start.stage_start, stage_steps)?;
    let end_step = start.stage_start + stage_steps;
    if start.step > end_step {
        return Err(Error::bad_value(
            "training.steps",
            format!(
                "the checkpoint to resume is at step {} but the run ends at step {end_step}; \
             raise training.steps",
                start.step
            ),
        ));
    }
    // Recorded only now that the data, the parent, the model and the schedule have
    // passed their checks: a run.toml stands for a run that can start.
    crate::atomic_file::write_bytes(&run_dir.join(RUN_FILE), recipe.to_toml().as_bytes())?;
    saving::truncate_metrics(&run_dir.join(METRICS_FILE), start.step)?;
    let schedule_info = schedule_info(&schedule, &start, recipe);
    Ok(Trainer {
        run_dir: run_dir.clone(),
        config,
        vars,
        optimizer,
        data,
        lr_at: Box::new(move |step| schedule.lr(step)),
        schedule_info,
        stage: recipe.job.stage,
        parent: start.parent,
        compute_dtype,
        rows_per_micro_batch: recipe.rows_per_micro_batch(),
        grad_accum: recipe.training.grad_accum as usize,
        checkpoint_every: recipe.training.checkpoint_every,
        tokenizer_dir: run_dir,
        chat_template: (recipe.job.stage == Stage::Sft).then(|| tok.template_description()),
        step: start.step,
        stage_start: start.stage_start,
        end_step,
        tokens_seen: start.tokens_seen,
        last_saved: resumed.map(|c| c.dir),
    })
}

impl Start {
    fn fresh() -> Self {
        Start {
            weights: None,
            optimizer: None,
            data_position: None,
            step: 0,
            stage_start: 0,
            tokens_seen: 0,
            parent: None,
            tokenizer_dir: None,
            resuming: false,
        }
    }
}

/// The checkpoint to resume from, if any, after checking it belongs to this recipe.
fn find_resume_point(
    recipe: &Recipe,
    run_dir: &Path,
    resume: Option<&Path>,
) -> Result<Option<Checkpoint>> {
    let found = match resume {
        Some(path) if crate::checkpoint::is_checkpoint_dir(path) => Some(Checkpoint::open(path)?),
        Some(path) => Some(saving::latest_checkpoint(path)?.ok_or_else(|| {
            Error::bad_value(
                "--resume",
                format!("--resume {}: no checkpoint there", path.display()),
            )
        })?),
        None => saving::latest_checkpoint(run_dir)?,
    };
    let Some(ckpt) = found else {
        return Ok(None);
    };
    let saved = ckpt.dir.parent().map(|d| d.join(RUN_FILE));
    if let Some(saved) = saved.filter(|p| p.is_file()) {
        let previous = Recipe::load(&saved, &[])?;
        let differences = resume_differences(&previous, recipe);
        if !differences.is_empty() {
            return Err(Error::bad_value(
                "job.out",
                format!(
                    "{} holds a run of another recipe (it differs in {}); choose another \
                 job.out, or remove that run to start over",
                    ckpt.dir.parent().unwrap_or(run_dir).display(),
                    differences.join(", ")
                ),
            ));
        }
    }
    tracing::info!("resuming from {}", ckpt.dir.display());
    Ok(Some(ckpt))
}

/// Keys in which two recipes differ, ignoring what may change between the starts of
/// one run (how long it goes, how often it saves, where it is written).
fn resume_differences(a: &Recipe, b: &Recipe) -> Vec<String> {
    let normalise = |r: &Recipe| {
        let mut r = r.clone();
        r.training.steps = None;
        r.training.checkpoint_every = 1;
        r.job.out = None;
        r.job.description = None;
        toml::Table::try_from(&r).unwrap_or_default()
    };
    let (a, b) = (normalise(a), normalise(b));
    let mut keys = Vec::new();
    for (table, value) in &a {
        match (value, b.get(table)) {
            (toml::Value::Table(x), Some(toml::Value::Table(y))) => {
                for key in x.keys().chain(y.keys()) {
                    if x.get(key) != y.get(key) && !keys.contains(&format!("{table}.{key}")) {
                        keys.push(format!("{table}.{key}"));
                    }
                }
            }
            (x, y) if Some(x) != y => keys.push(table.clone()),
            _ => {}
        }
    }
    keys.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
    keys
}

fn resume_start(ckpt: &Checkpoint) -> Result<Start> {
    let meta = ckpt.meta.clone().ok_or_else(|| {
        Error::bad_file(
            &ckpt.dir,
            "no ckpt.json: not a checkpoint this trainer can resume",
        )
    })?;
    let optimizer = ckpt.dir.join(OPTIMIZER_FILE);
    if !optimizer.is_file() {
        return Err(Error::bad_file(
            &ckpt.dir,
            format!("no {OPTIMIZER_FILE}: cannot resume exactly"),
        ));
    }
    Ok(Start {
        weights: Some(load_weights(ckpt)?),
        optimizer: Some(optimizer),
        data_position: meta.data_position.clone(),
        step: meta.step,
        stage_start: meta.stage_start.unwrap_or(0),
        tokens_seen: meta.tokens_seen.unwrap_or(0),
        parent: meta.parent.clone(),
        tokenizer_dir: Some(ckpt.dir.clone()),
        resuming: true,
    })
}

/// Mid-training, SFT and branched decays start from a parent's weights; a branch also
/// takes its optimizer state, data position and step count.
fn parent_start(recipe: &Recipe, parent: &Path) -> Result<Start> {
    let ckpt = Checkpoint::open(parent)?;
    let meta = ckpt
        .meta
        .clone()
        .unwrap_or_else(|| crate::checkpoint::CheckpointMeta::new(ckpt.step.unwrap_or(0)));
    let parent_ref = ParentRef {
        path: parent.display().to_string(),
        step: Some(meta.step),
        fingerprint: Some(ckpt.fingerprint()?),
    };
    let mut start = Start {
        weights: Some(load_weights(&ckpt)?),
        parent: Some(parent_ref),
        tokens_seen: meta.tokens_seen.unwrap_or(0),
        tokenizer_dir: Some(ckpt.dir.clone()),
        ..Start::fresh()
    };
    match (recipe.job.stage, recipe.init.mode) {
        (_, InitMode::Branch) => {
            let optimizer = ckpt.dir.join(OPTIMIZER_FILE);
            if !optimizer.is_file() {
                return Err(Error::bad_file(
                    &ckpt.dir,
                    format!(
                        "no {OPTIMIZER_FILE}: a branch continues the parent's optimizer; \
                         use init.mode = \"weights\" to start a fresh one"
                    ),
                ));
            }
            start.optimizer = Some(optimizer);
            start.data_position = meta.data_position.clone();
            start.step = meta.step;
            start.stage_start = meta.step;
        }
        (Stage::Mid, _) => {
            let t = recipe.schedule.total_steps.unwrap_or(0);
            if meta.step != t {
                return Err(Error::bad_value(
                    "init.parent",
                    format!(
                        "init.parent is at step {} but mid-training continues from \
                     schedule.total_steps = {t}; they must agree",
                        meta.step
                    ),
                ));
            }
            start.step = t;
            start.stage_start = t;
        }
        _ => {}
    }
    Ok(start)
}

fn load_weights(ckpt: &Checkpoint) -> Result<(ModelConfig, HashMap<String, Tensor>)> {
    let config = ckpt.config()?;
    // Read as f32 onto the CPU.
    ckpt.check_memory(&config, 4, &Device::Cpu)?;
    let files = ckpt.weights()?;
    crate::checkpoint::validate_shapes(&config, &files)?;
    let tensors = parameter_shapes(&config)
        .into_iter()
        .map(|(name, _)| {
            let t = crate::checkpoint::load_parameter(
                &config,
                &files,
                &name,
                DType::F32,
                &Device::Cpu,
            )?;
            Ok((name, t))
        })
        .collect::<Result<_>>()?;
    Ok((config, tensors))
}

fn open_tokenizer(
    recipe: &Recipe,
    start: &Start,
    corpus: Option<&Corpus>,
    run_dir: &Path,
) -> Result<TrainTokenizer> {
    let template = match recipe.data.chat_template.as_deref() {
        Some(value) => TemplateChoice::parse(value)?,
        None => TemplateChoice::Own,
    };
    let template = &template;
    let max_len = recipe
        .model
        .as_ref()
        .and_then(|m| m.max_position_embeddings)
        .unwrap_or(recipe.training.seq_len);
    let given = recipe.tokenizer.path.is_some() || recipe.tokenizer.train_vocab_size.is_some();
    match &start.tokenizer_dir {
        // A resumed run keeps its vocabulary; a derived one its parent's unless told.
        Some(dir) if start.resuming || !given => {
            let tok = TrainTokenizer::load(dir, template)?;
            tok.save(run_dir)?;
            Ok(tok)
        }
        _ => super::data::open_tokenizer(
            &recipe.tokenizer,
            template,
            corpus.and_then(Corpus::documents),
            run_dir,
            max_len,
        ),
    }
}

fn fresh_weights(
    recipe: &Recipe,
    tok: &TrainTokenizer,
    device: &Device,
) -> Result<(ModelConfig, HashMap<String, Tensor>)> {
    let shape = recipe.model.as_ref().ok_or_else(|| {
        Error::bad_value("model", "model: a run from scratch needs a [model] table")
    })?;
    let config = shape.to_config(
        tok.vocab_size(),
        recipe.training.seq_len,
        tok.bos.as_ref().map(|t| t.id),
        Some(tok.eos.id),
    )?;
    check_trainable(&config, device)?;
    let weights = init_weights(&config, shape.init_std, recipe.job.seed, DType::F32, device)?;
    Ok((config, weights))
}

/// Bytes one trained parameter holds: the f32 weight, its gradient and AdamW's two
/// moments.
const TRAIN_BYTES_PER_PARAMETER: u64 = 16;

/// A fresh model's shape, checked before the tokenizer is trained: its size without the
/// embeddings (the vocabulary is not known yet) must fit in memory.
fn check_shape_fits(recipe: &Recipe, device: &Device) -> Result<()> {
    let Some(shape) = &recipe.model else {
        return Ok(());
    };
    let vocab = shape.vocab_size.unwrap_or(1);
    let config = shape.to_config(vocab, recipe.training.seq_len, None, None)?;
    check_trainable(&config, device)
}

/// Refuses to train a model whose weights, gradients and optimizer state need more
/// memory than the machine has, before allocating any (on a GPU its allocator fails
/// at once by itself).
fn check_trainable(config: &ModelConfig, device: &Device) -> Result<()> {
    if !device.is_cpu() {
        return Ok(());
    }
    let parameters = config.num_parameters() as u64;
    crate::memory::check_fits(
        &format!(
            "model: training {parameters} parameters (weights, gradients and AdamW state, \
             {TRAIN_BYTES_PER_PARAMETER} bytes each)"
        ),
        parameters.saturating_mul(TRAIN_BYTES_PER_PARAMETER),
    )
}

/// A micro-batch's token rows are allocated on the CPU, and on the CPU its logits too
/// (an f32 row of the vocabulary per token): the least a step needs beyond the
/// parameters. Refused with the number when that is more than the machine has.
fn check_batch_fits(recipe: &Recipe, config: &ModelConfig, device: &Device) -> Result<()> {
    let t = &recipe.training;
    let tokens = (recipe.rows_per_micro_batch() as u64).saturating_mul(t.seq_len as u64 + 1);
    let per_token = if device.is_cpu() {
        4u64.saturating_mul(config.vocab_size as u64 + 1)
    } else {
        4
    };
    crate::memory::check_fits(
        &format!(
            "training.batch_tokens = {} (micro-batches of {tokens} tokens with \
             training.grad_accum = {})",
            t.batch_tokens, t.grad_accum
        ),
        tokens.saturating_mul(per_token),
    )
}

/// Past its end a schedule holds its last LR; when that LR is 0 (a cosine or linear
/// decay to 0), steps past the end would run without training anything.
fn check_schedule_covers(
    recipe: &Recipe,
    schedule: &ScheduleSpec,
    stage_start: u64,
    stage_steps: u64,
) -> Result<()> {
    let Some(steps) = recipe.training.steps else {
        return Ok(());
    };
    let end = schedule.end_step();
    let last = stage_start.saturating_add(stage_steps);
    if last <= end || schedule.lr(end) > 0.0 {
        return Ok(());
    }
    let length = match schedule.mid_steps {
        Some(_) => format!("schedule.total_steps + schedule.mid_steps = {end}"),
        None => format!("schedule.total_steps = {end}"),
    };
    Err(Error::bad_value(
        "training.steps",
        format!(
            "training.steps = {steps} runs to step {last}, past the end of the schedule \
         ({length}) where the LR is 0: the last {} steps would not train; lower \
         training.steps or lengthen the schedule",
            last - end
        ),
    ))
}

fn check_vocab(config: &ModelConfig, tok: &TrainTokenizer) -> Result<()> {
    if tok.vocab_size() > config.vocab_size {
        return Err(Error::bad_value(
            "tokenizer",
            format!(
                "the tokenizer has {} tokens but the model's vocabulary holds {}",
                tok.vocab_size(),
                config.vocab_size
            ),
        ));
    }
    Ok(())
}

/// The trained variables, f32 on `device`, in the model's parameter order.
fn to_vars(
    config: &ModelConfig,
    mut weights: HashMap<String, Tensor>,
    device: &Device,
) -> Result<Vec<(String, Var)>> {
    parameter_shapes(config)
        .into_iter()
        .map(|(name, _)| {
            let t = weights
                .remove(&name)
                .ok_or_else(|| Error::Invalid(format!("no weight {name}")))?;
            let t = t.to_dtype(DType::F32)?.to_device(device)?;
            Ok((name, Var::from_tensor(&t)?))
        })
        .collect()
}

/// The recipe's schedule with `total_steps` filled in for SFT (the epochs' length).
fn resolve_schedule(recipe: &Recipe, data: &dyn BatchLoader) -> Result<ScheduleSpec> {
    let spec = &recipe.schedule;
    if spec.total_steps.is_some() {
        return Ok(spec.clone());
    }
    let steps = match recipe.training.steps {
        Some(steps) => steps,
        None => {
            let items = data.position().data.num_items;
            let per_epoch = items.div_ceil(recipe.rows_per_step() as u64);
            per_epoch * recipe.training.epochs.unwrap_or(1)
        }
    };
    let spec = spec.with_total_steps(steps);
    spec.validate()
        .map_err(|e| Error::bad_value("schedule", e.to_string()))?;
    Ok(spec)
}

/// Steps this stage runs: `training.steps`, else the schedule's length for the stage.
fn stage_length(recipe: &Recipe, schedule: &ScheduleSpec, stage_start: u64) -> Result<u64> {
    if let Some(steps) = recipe.training.steps {
        return Ok(steps);
    }
    let t = schedule.total_steps.unwrap_or(0);
    Ok(match recipe.job.stage {
        Stage::Mid => schedule.mid_steps.unwrap_or(0),
        _ => t.saturating_sub(stage_start),
    })
}

/// A decay branched from a stable checkpoint must branch where the LR is still the
/// peak, or the two runs would not share their stable phase.
fn check_branch_point(recipe: &Recipe, schedule: &ScheduleSpec, start: &Start) -> Result<()> {
    if recipe.init.mode != InitMode::Branch || start.optimizer.is_none() {
        return Ok(());
    }
    let at = start.stage_start;
    let lr = schedule.lr(at);
    if at < schedule.warmup || (lr - schedule.peak_lr).abs() > 1e-12 * schedule.peak_lr {
        return Err(Error::bad_value(
            "init.parent",
            format!(
                "init.parent is at step {at}, outside the stable phase of this schedule \
             (LR there is {lr:e}, peak {:e}); branch from a checkpoint before the decay starts",
                schedule.peak_lr
            ),
        ));
    }
    Ok(())
}

fn schedule_info(schedule: &ScheduleSpec, start: &Start, recipe: &Recipe) -> ScheduleInfo {
    let branched = recipe.init.mode == InitMode::Branch;
    ScheduleInfo {
        kind: schedule.kind.name().to_string(),
        peak_lr: Some(schedule.peak_lr),
        warmup: Some(schedule.warmup),
        total_steps: schedule.total_steps,
        stable_ratio: schedule.resolved().stable_ratio,
        alpha_pre: Some(schedule.alpha_pre()),
        alpha_mid: schedule.alpha_mid,
        mid_steps: schedule.mid_steps,
        branched_from_step: branched.then(|| {
            start
                .parent
                .as_ref()
                .and_then(|p| p.step)
                .unwrap_or(start.stage_start)
        }),
    }
}

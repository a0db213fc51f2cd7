//! `ckpt release`: publish a WSO base model with its model card to the Hugging Face
//! Hub (DESIGN.md section 10).
//!
//! ```text
//! checkpoint --checks--> CheckReport --+--> card (README.md) + LR plot --+--> Plan --> dry run (a directory)
//! ckpt.json --decay::assess--> Verdict-+    results (evals, sharpness) --+        \-> upload::publish (the Hub)
//! ```
//!
//! [`run`] takes a [`ReleaseJob`] (what `ckpt release` flags say, typed and checked)
//! through both: first everything that stays on the machine (checks, the decay
//! verdict, the card and the plan, files hashed), then a dry run's directory or the
//! upload, [`upload::publish`] over a [`crate::hub::HubClient`].

pub(crate) mod card;
pub(crate) mod checks;
pub(crate) mod decay;
mod job;
pub(crate) mod lfs;
pub(crate) mod lr_curve;
pub(crate) mod metadata;
pub mod plan;
pub(crate) mod results;
pub mod upload;

use crate::checkpoint::{open_single, Checkpoint, META_FILE};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::schedule::ScheduleSpec;
use crate::train::recipe::{Recipe, RUN_FILE};
use card::{CardContext, ModelFacts, RecipeFacts, TrainingFacts};
use checks::CheckReport;
use decay::Verdict;
pub use job::{run, Destination, Event, HubTarget, Published, ReleaseJob, ReleaseOutcome};
use plan::Plan;
use results::{CardResults, EvalStage};
use std::path::PathBuf;

/// File name of the model card in the repository.
pub(crate) const CARD_FILE: &str = "README.md";
/// File name of the LR plot in the repository.
pub(crate) const LR_PLOT_FILE: &str = "lr_schedule.png";

/// What goes into the card besides the checkpoint's own facts, as the job names it.
#[derive(Debug, Clone)]
pub(crate) struct CardOptions {
    /// SPDX-style license id of the Hub (`apache-2.0`, `mit`, `other`...).
    pub(crate) license: String,
    /// ISO 639-1 codes, optionally with a region (`en`, `pt-BR`).
    pub(crate) languages: Vec<String>,
    /// Hub ids of the training datasets.
    pub(crate) datasets: Vec<String>,
    /// Hub id of the model this one was trained from.
    pub(crate) base_model: Option<String>,
    /// Extra tags.
    pub(crate) tags: Vec<String>,
    /// A minijinja template replacing the built-in one.
    pub(crate) template: Option<PathBuf>,
    /// Evaluation and sharpness results (JSON; see the README).
    pub(crate) results: Option<PathBuf>,
    /// A results store (or a directory of stores) to read this checkpoint's results
    /// from instead; by default `ckpt.sqlite` when it exists.
    pub(crate) store: Option<PathBuf>,
}

impl Default for CardOptions {
    fn default() -> Self {
        Self {
            license: "apache-2.0".into(),
            languages: vec!["en".into()],
            datasets: Vec::new(),
            base_model: None,
            tags: Vec::new(),
            template: None,
            results: None,
            store: None,
        }
    }
}

/// What the card is rendered from besides the job: read from files and the Hub
/// before the checkpoint is hashed.
struct CardInputs {
    /// `namespace/name` (or a bare name in a dry run, before the user is known).
    repo_id: String,
    /// The text of [`CardOptions::template`].
    template: Option<String>,
    results: CardResults,
}

/// A checked checkpoint with its card and upload plan.
pub struct Prepared {
    pub(crate) checkpoint: Checkpoint,
    pub checks: CheckReport,
    pub verdict: Verdict,
    pub card: String,
    pub(crate) plan: Plan,
    /// Holds the generated files the plan points at; removed when dropped.
    _staging: tempfile::TempDir,
}

/// A checkpoint opened, with the verdict on its schedule.
struct Inspected {
    pub(crate) checkpoint: Checkpoint,
    pub(crate) verdict: Verdict,
}

/// Opens the checkpoint and refuses a decayed or unknown schedule unless allowed:
/// the quick checks, run before anything else (even before the token is checked).
fn inspect(job: &ReleaseJob) -> Result<Inspected> {
    let checkpoint = open_single(&job.checkpoint)?;
    let verdict = decay::assess(checkpoint.meta.as_ref(), raw_meta(&checkpoint)?.as_ref());
    refuse(&checkpoint, &verdict, job)?;
    Ok(Inspected {
        checkpoint,
        verdict,
    })
}

/// Checks the checkpoint (load, finite weights, tokenizer), renders and validates the
/// card, and plans the upload (hashing every file; `hashing` counts the bytes).
fn prepare(
    job: &ReleaseJob,
    inputs: &CardInputs,
    inspected: Inspected,
    hashing: &dyn Progress,
) -> Result<Prepared> {
    let Inspected {
        checkpoint: ckpt,
        verdict,
    } = inspected;
    let checks = checks::check(&ckpt)?;
    let fingerprint = ckpt.fingerprint()?;
    let staging = tempfile::Builder::new()
        .prefix("ckpt-release-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;

    let recipe = read_recipe(&ckpt);
    let spec = schedule_spec(&ckpt, recipe.as_ref());
    let step = ckpt.step.unwrap_or(0);
    let mut generated = Vec::new();
    if let Some(spec) = &spec {
        let path = staging.path().join(LR_PLOT_FILE);
        lr_curve::plot(spec, step, &path)?;
        generated.push((LR_PLOT_FILE.to_string(), path));
    }
    let ctx = context(
        job,
        inputs,
        &ckpt,
        &checks,
        &verdict,
        spec.as_ref(),
        recipe.as_ref(),
        fingerprint,
    );
    let card = card::render(inputs.template.as_deref(), &ctx)?;
    card::validate(&card)
        .map_err(|msg| Error::bad_value("card.template", format!("model card: {msg}")))?;
    let card_path = staging.path().join(CARD_FILE);
    crate::atomic_file::write_bytes(&card_path, card.as_bytes())?;
    generated.push((CARD_FILE.to_string(), card_path));

    let selected = plan::select(&ckpt.dir, &generated, &job.filters)?;
    let plan = Plan::build(selected, hashing)?;
    Ok(Prepared {
        checkpoint: ckpt,
        checks,
        verdict,
        card,
        plan,
        _staging: staging,
    })
}

/// `ckpt.json` as raw JSON, to see fields [`crate::checkpoint::CheckpointMeta`] does
/// not model.
fn raw_meta(ckpt: &Checkpoint) -> Result<Option<serde_json::Value>> {
    let path = ckpt.dir.join(META_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    crate::error::read_json(&path).map(Some)
}

fn refuse(ckpt: &Checkpoint, verdict: &Verdict, job: &ReleaseJob) -> Result<()> {
    match verdict {
        Verdict::Decayed(why) if !job.allow_decayed => Err(Error::bad_file(
            &ckpt.dir,
            format!(
                "decayed: {why}. `ckpt release` publishes WSO base models; pass --allow-decayed to release it anyway"
            ),
        )),
        Verdict::Unknown(why) if !job.allow_unknown_schedule => Err(Error::bad_file(
            &ckpt.dir,
            format!(
                "schedule unknown: {why}. Cannot tell whether the LR decayed; pass --allow-unknown-schedule to release it anyway"
            ),
        )),
        _ => Ok(()),
    }
}

/// The run's resolved recipe (`../run.toml`), when there is one that parses.
fn read_recipe(ckpt: &Checkpoint) -> Option<Recipe> {
    let path = ckpt.dir.parent()?.join(RUN_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let parsed = toml::from_str(&text)
        .map_err(|e| e.to_string())
        .and_then(Recipe::from_table);
    match parsed {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("{}: ignored ({e})", path.display());
            None
        }
    }
}

/// The schedule: the recipe's when complete, else rebuilt from `ckpt.json`.
fn schedule_spec(ckpt: &Checkpoint, recipe: Option<&Recipe>) -> Option<ScheduleSpec> {
    let info = ckpt.meta.as_ref()?.schedule.as_ref()?;
    if let Some(spec) = recipe.map(|r| &r.schedule) {
        if spec.total_steps.is_some() && spec.kind.name() == info.kind && spec.validate().is_ok() {
            return Some(spec.clone());
        }
    }
    lr_curve::spec_from_info(info)
}

fn model_facts(checks: &CheckReport) -> ModelFacts {
    let c = &checks.config;
    ModelFacts {
        architecture: c.arch.architecture().to_string(),
        model_type: c.arch.model_type().to_string(),
        parameters: checks.parameters,
        parameters_human: card::human_count(checks.parameters as u64),
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        layers: c.num_hidden_layers,
        heads: c.num_attention_heads,
        kv_heads: c.num_key_value_heads,
        head_dim: c.head_dim,
        vocab_size: c.vocab_size,
        context_length: c.max_position_embeddings,
        rope_theta: c.rope_theta,
        tie_embeddings: c.tie_word_embeddings,
        dtypes: checks.dtypes.join(", "),
        weights_size_human: card::human_bytes(checks.weight_bytes),
    }
}

fn recipe_facts(r: &Recipe) -> RecipeFacts {
    let o = &r.optimizer;
    RecipeFacts {
        job: r.job.name.clone(),
        optimizer: o.name.clone(),
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        weight_decay: o.weight_decay,
        grad_clip: o.grad_clip,
        batch_tokens: r.training.batch_tokens,
        seq_len: r.training.seq_len,
        grad_accum: r.training.grad_accum,
        dtype: r.job.dtype.clone(),
        seed: r.job.seed,
        // File names only: local paths say nothing to a reader and may be private.
        data: r
            .data
            .paths
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect(),
    }
}

fn verdict_parts(v: &Verdict) -> (&'static str, String) {
    match v {
        Verdict::NotDecayed(r) => ("not-decayed", r.clone()),
        Verdict::Decayed(r) => ("decayed", r.clone()),
        Verdict::Unknown(r) => ("unknown", r.clone()),
    }
}

fn tags(job: &ReleaseJob, model_type: &str, verdict: &Verdict, kind: Option<&str>) -> Vec<String> {
    let mut tags = vec!["ckpt".to_string(), model_type.to_string()];
    match (verdict, kind) {
        (Verdict::NotDecayed(_), _) => tags.extend(["wso".into(), "warmup-stable-only".into()]),
        (_, Some(kind)) => tags.push(format!("lr-schedule-{kind}")),
        _ => {}
    }
    tags.extend(job.card.tags.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| seen.insert(t.clone()));
    tags
}

#[allow(clippy::too_many_arguments)]
fn context(
    job: &ReleaseJob,
    inputs: &CardInputs,
    ckpt: &Checkpoint,
    checks: &CheckReport,
    verdict: &Verdict,
    spec: Option<&ScheduleSpec>,
    recipe: Option<&Recipe>,
    fingerprint: String,
) -> CardContext {
    let meta = ckpt.meta.as_ref();
    let info = meta.and_then(|m| m.schedule.as_ref());
    let (decay, decay_reason) = verdict_parts(verdict);
    let model_name = inputs
        .repo_id
        .rsplit('/')
        .next()
        .unwrap_or(&inputs.repo_id)
        .to_string();
    let (sharpness, sharpness_summary) = card::sharpness(&inputs.results);
    let tokens_seen = meta.and_then(|m| m.tokens_seen);
    let lr_at_step = meta
        .and_then(|m| m.lr)
        .or_else(|| Some(spec?.lr(ckpt.step?)));
    let model = model_facts(checks);
    CardContext {
        repo_id: inputs.repo_id.clone(),
        model_name,
        revision: job.revision.clone(),
        license: job.card.license.clone(),
        languages: job.card.languages.clone(),
        datasets: job.card.datasets.clone(),
        base_model: job.card.base_model.clone(),
        tags: tags(
            job,
            &model.model_type,
            verdict,
            info.map(|i| i.kind.as_str()),
        ),
        model,
        training: TrainingFacts {
            stage: meta.and_then(|m| m.stage).map(|s| s.to_string()),
            step: ckpt.step,
            tokens_seen,
            tokens_human: tokens_seen.map(card::human_count),
            train_loss: meta.and_then(|m| m.train_loss),
            schedule_kind: info.map(|i| i.kind.clone()),
            schedule_label: spec
                .map(ScheduleSpec::label)
                .or(info.map(|i| i.kind.clone())),
            schedule_formula: spec.map(lr_curve::formula),
            lr_plot: spec.map(|_| LR_PLOT_FILE.to_string()),
            lr_at_step,
            decay: decay.into(),
            decay_reason,
            recipe: recipe.map(recipe_facts),
        },
        model_index: card::model_index(&inputs.results),
        evals_pre: card::eval_rows(&inputs.results, EvalStage::Pre),
        evals_sft: card::eval_rows(&inputs.results, EvalStage::Sft),
        sharpness,
        sharpness_summary,
        fingerprint,
        ckpt_version: crate::VERSION.to_string(),
    }
}

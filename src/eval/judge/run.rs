//! `ckpt eval --tasks alpaca_eval`: every checkpoint answers the instruction set, a
//! judge compares each answer with the reference's, and the preferences become
//! AlpacaEval's metrics, all through the store.
//!
//! 1. Generation: each checkpoint (and a reference checkpoint) answers every
//!    instruction with its chat template, greedily, up to `max_new_tokens`; the answers
//!    are the store's responses to `Generate` requests, so a rerun generates nothing.
//! 2. Judging: one question per (checkpoint, instruction), the two answers in a seeded
//!    order; questions already answered by this judge model are not asked again
//!    (identical questions are asked once), the others run concurrently and each
//!    answer is committed as it arrives. A judge that fails after its retries ends the
//!    run with an error; what it answered stays in the store.
//! 3. Metrics and exports: preferences mapped back to "model vs reference", AlpacaEval's
//!    metrics, per-instruction samples and metrics in the store (task `alpaca_eval`),
//!    and `model_outputs.json` / `annotations.json` / `metrics.json` per checkpoint.

use super::client::JudgeClient;
use super::export::{model_outputs, write_checkpoint_exports, Annotation};
use super::instructions::{content_hash, Instruction};
use super::metrics::{win_rates, Judged, WinRates};
use super::preference::read_verdict;
use super::prompt::{JudgeTemplate, Shown, IDENTIFIERS};
use crate::chat::ChatPrompt;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result, StoreFault};
use crate::eval::engine::Response;
use crate::eval::prompt::Request;
use crate::eval::run::{answer_requests, checkpoint_row, RunOptions};
use crate::progress::{Progress, Unit};
use crate::store::{now, CheckpointRow, MetricRow, Store};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;

/// The task name results are stored under (eval's tables know it as the judged task).
pub const TASK: &str = crate::eval::headline::JUDGED_TASK;
/// The regime recorded with the results.
pub const REGIME: &str = "alpaca_eval";

/// Answers generated between two commits to the store at most: a generation takes
/// seconds, so a killed run should lose few (still enough to keep the cores busy).
const GENERATIONS_PER_COMMIT: usize = 16;

/// The judge and how it is asked.
pub struct JudgeSettings {
    /// The judge's model name on the server (part of the answers' key in the store).
    pub(crate) model: String,
    pub(crate) template: JudgeTemplate,
    /// Seed of the per-instruction order of the two answers.
    pub(crate) seed: u64,
    /// `top_logprobs` asked for (OpenAI allows up to 20).
    pub(crate) top_logprobs: usize,
    /// Judge calls in flight at once.
    pub(crate) concurrency: usize,
}

/// What the checkpoints are compared with.
pub enum Reference {
    /// Given outputs (a file, or the instruction set's own `output` fields).
    Outputs {
        generator: String,
        outputs: Vec<String>,
    },
    /// Another checkpoint, which answers the instructions like the others.
    Checkpoint(Box<Checkpoint>),
}

/// The pairwise evaluation to run.
pub struct PairwiseTask {
    pub(crate) instructions: Vec<Instruction>,
    pub(crate) reference: Reference,
    pub(crate) max_new_tokens: usize,
    /// One difficulty per instruction: `length_controlled_noreg` instead of `_minimal`.
    pub(crate) difficulty: Option<Vec<f64>>,
    /// Where the per-checkpoint AlpacaEval files go (`None`: not written).
    pub(crate) export_dir: Option<PathBuf>,
}

/// What happened to one checkpoint.
#[derive(Debug)]
pub struct JudgeOutcome {
    pub(crate) row: CheckpointRow,
    /// The checkpoint's name in the exports (`run/checkpoint`).
    pub(crate) generator: String,
    /// Answers generated in this run (0: all from the store).
    pub(crate) generated: usize,
    pub(crate) metrics: Option<WinRates>,
    /// Questions the judge answered without a readable verdict.
    pub(crate) no_verdict: usize,
    pub(crate) export: Option<PathBuf>,
    pub(crate) error: Option<String>,
}

/// The whole run.
#[derive(Debug)]
pub struct JudgeRun {
    pub(crate) outcomes: Vec<JudgeOutcome>,
    /// The reference's generator name.
    pub(crate) reference: String,
    /// Judge calls made in this run.
    pub(crate) judge_calls: usize,
    /// Questions answered from the store.
    pub(crate) cached_answers: usize,
}

/// A checkpoint that answered every instruction.
struct Answered {
    row: CheckpointRow,
    generator: String,
    outputs: Vec<String>,
    generated: usize,
}

/// Runs the three steps of the module docs over `checkpoints`.
pub fn judge_checkpoints(
    checkpoints: &[Checkpoint],
    task: &PairwiseTask,
    settings: &JudgeSettings,
    client: &JudgeClient,
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<JudgeRun> {
    let (reference, ref_outputs) = reference_outputs(task, store, opts, progress)?;
    let mut outcomes = Vec::new();
    let mut answered = Vec::new();
    for ckpt in checkpoints {
        match answer_checkpoint(ckpt, task, store, opts, progress) {
            (row, Ok((outputs, generated))) => answered.push(Answered {
                generator: generator_name(&row),
                row,
                outputs,
                generated,
            }),
            (_, Err(e)) if e.is_store() => return Err(e),
            (row, Err(e)) => {
                let fingerprint = Some(row.fingerprint.as_str()).filter(|f| !f.is_empty());
                store.put_failure(&row.path, fingerprint, Some(TASK), &e.to_string())?;
                outcomes.push(JudgeOutcome {
                    generator: generator_name(&row),
                    row,
                    generated: 0,
                    metrics: None,
                    no_verdict: 0,
                    export: None,
                    error: Some(e.to_string()),
                });
            }
        }
    }
    let questions = Questions::build(&answered, task, settings, &ref_outputs)?;
    let (judge_calls, answers) = questions.ask(settings, client, store, progress)?;
    let spec_hash = spec_hash(task, settings, &reference, &ref_outputs, &opts.policy);
    let against = Against {
        task,
        settings,
        reference: &reference,
        ref_outputs: &ref_outputs,
        spec_hash: &spec_hash,
    };
    for (a, asked) in answered.into_iter().zip(&questions.asked) {
        outcomes.push(finish(a, asked, &answers, &against, store)?);
    }
    Ok(JudgeRun {
        outcomes,
        reference,
        judge_calls,
        cached_answers: questions.unique.len() - judge_calls,
    })
}

/// The reference's generator name and its answer to every instruction.
fn reference_outputs(
    task: &PairwiseTask,
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<(String, Vec<String>)> {
    let (name, outputs) = match &task.reference {
        Reference::Outputs { generator, outputs } => (generator.clone(), outputs.clone()),
        Reference::Checkpoint(ckpt) => {
            let fingerprint = ckpt.fingerprint()?;
            let row = checkpoint_row(ckpt, &fingerprint);
            store.put_checkpoint(&row, None)?;
            let (outputs, _) = generate(ckpt, &fingerprint, task, store, opts, progress)
                .map_err(|e| e.map_message(|m| format!("reference {}: {m}", ckpt.dir.display())))?;
            (generator_name(&row), outputs)
        }
    };
    if outputs.len() != task.instructions.len() {
        return Err(Error::bad_value(
            "--reference",
            format!(
                "the reference has {} outputs for {} instructions",
                outputs.len(),
                task.instructions.len()
            ),
        ));
    }
    Ok((name, outputs))
}

/// `run/checkpoint`, the checkpoint's generator name.
pub(crate) fn generator_name(row: &CheckpointRow) -> String {
    let name = std::path::Path::new(&row.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| row.path.clone());
    if row.run.is_empty() {
        name
    } else {
        format!("{}/{name}", row.run)
    }
}

/// The checkpoint's row in the store and its answers (or why there are none).
fn answer_checkpoint(
    ckpt: &Checkpoint,
    task: &PairwiseTask,
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> (CheckpointRow, Result<(Vec<String>, usize)>) {
    let fingerprint = match ckpt.fingerprint() {
        Ok(f) => f,
        Err(e) => return (checkpoint_row(ckpt, ""), Err(e)),
    };
    let row = checkpoint_row(ckpt, &fingerprint);
    let meta = ckpt
        .meta
        .as_ref()
        .and_then(|m| serde_json::to_string(m).ok());
    let answers = store
        .put_checkpoint(&row, meta.as_deref())
        .and_then(|_| generate(ckpt, &fingerprint, task, store, opts, progress));
    (row, answers)
}

/// The checkpoint's answers to every instruction (trimmed), through the store.
fn generate(
    ckpt: &Checkpoint,
    fingerprint: &str,
    task: &PairwiseTask,
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<(Vec<String>, usize)> {
    let chat = ChatPrompt::for_checkpoint(&ckpt.dir)?;
    let requests: Vec<Request> = task
        .instructions
        .iter()
        .map(|i| {
            Ok(Request::Generate {
                context: chat.user_turn(&i.instruction)?,
                until: vec![],
                max_gen_toks: task.max_new_tokens,
            })
        })
        .collect::<Result<_>>()?;
    let opts = RunOptions {
        commit_every: opts.commit_every.clamp(1, GENERATIONS_PER_COMMIT),
        ..opts.clone()
    };
    let (responses, computed) =
        answer_requests(ckpt, fingerprint, &requests, store, &opts, progress)?;
    let outputs = responses
        .into_iter()
        .map(|r| match r {
            Response::Generation { text } => Ok(text.trim().to_string()),
            other => Err(Error::store(
                store.path(),
                StoreFault::Query,
                format!("a generation request has a stored {other:?}"),
            )),
        })
        .collect::<Result<_>>()?;
    Ok((outputs, computed))
}

/// Every question of the run: per checkpoint and instruction, its key and order.
struct Questions {
    /// `[checkpoint][instruction]`: (prompt hash, order shown).
    asked: Vec<Vec<(String, Shown)>>,
    /// Distinct questions: prompt hash and request body (without the model).
    unique: Vec<(String, Value)>,
}

impl Questions {
    fn build(
        answered: &[Answered],
        task: &PairwiseTask,
        settings: &JudgeSettings,
        ref_outputs: &[String],
    ) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        let mut unique = Vec::new();
        let mut asked = Vec::with_capacity(answered.len());
        for a in answered {
            let mut row = Vec::with_capacity(task.instructions.len());
            for (i, ins) in task.instructions.iter().enumerate() {
                let shown = Shown::for_instruction(settings.seed, &ins.instruction);
                let (first, second) = shown.order(&a.outputs[i], &ref_outputs[i]);
                let content = settings.template.render(&ins.instruction, first, second)?;
                let body = json!({
                    "messages": [{"role": "user", "content": content}],
                    "max_tokens": 1,
                    "temperature": 0.0,
                    "logprobs": true,
                    "top_logprobs": settings.top_logprobs,
                });
                let hash = blake3::hash(body.to_string().as_bytes()).to_hex()[..32].to_string();
                if seen.insert(hash.clone()) {
                    unique.push((hash.clone(), body));
                }
                row.push((hash, shown));
            }
            asked.push(row);
        }
        Ok(Self { asked, unique })
    }

    /// The judge's answers to every question: from the store, else asked (each answer
    /// committed as it arrives). Also returns the number of calls made.
    fn ask(
        &self,
        settings: &JudgeSettings,
        client: &JudgeClient,
        store: &Store,
        progress: &dyn Progress,
    ) -> Result<(usize, HashMap<String, Value>)> {
        let hashes: Vec<String> = self.unique.iter().map(|(h, _)| h.clone()).collect();
        let mut answers = HashMap::new();
        for (h, json) in store.judge_answers(&settings.model, &hashes)? {
            let v: Value = serde_json::from_str(&json).map_err(|e| {
                Error::store(
                    store.path(),
                    StoreFault::Query,
                    format!("stored judge answer {h}: {e}"),
                )
            })?;
            answers.insert(h, v);
        }
        let missing: Vec<&(String, Value)> = self
            .unique
            .iter()
            .filter(|(h, _)| !answers.contains_key(h))
            .collect();
        progress.start("judging", Unit::Items, missing.len() as u64, 0);
        let bodies: Vec<Value> = missing
            .iter()
            .map(|(_, body)| {
                let mut b = body.clone();
                b.as_object_mut()
                    .expect("bodies are objects")
                    .insert("model".into(), settings.model.clone().into());
                b
            })
            .collect();
        let mut calls = 0;
        let result = client.chat_many(&bodies, settings.concurrency, &mut |i, choice| {
            let hash = &missing[i].0;
            store.put_judge_answer(&settings.model, hash, &choice.to_string())?;
            answers.insert(hash.clone(), choice);
            calls += 1;
            progress.advance(1);
            Ok(())
        });
        if let Err(e) = result {
            return Err(e.map_message(|m| {
                format!(
                    "{m}; {} of {} judge answers are in the store: a rerun asks only the others",
                    answers.len(),
                    self.unique.len()
                )
            }));
        }
        Ok((calls, answers))
    }
}

/// Provenance of the results: everything that changes them.
fn spec_hash(
    task: &PairwiseTask,
    settings: &JudgeSettings,
    reference: &str,
    ref_outputs: &[String],
    policy: &crate::tokenizer::EncodePolicy,
) -> String {
    let spec = json!({
        "tokenization": policy.key(),
        "instructions": content_hash(&task.instructions),
        "reference": reference,
        "reference_outputs": blake3::hash(serde_json::to_string(ref_outputs).expect("strings").as_bytes()).to_hex().to_string(),
        "judge": settings.model,
        "template": settings.template.hash,
        "seed": settings.seed,
        "top_logprobs": settings.top_logprobs,
        "max_new_tokens": task.max_new_tokens,
        "difficulty": task.difficulty,
    });
    blake3::hash(spec.to_string().as_bytes()).to_hex()[..16].to_string()
}

/// What the checkpoints are judged against, and how.
struct Against<'a> {
    task: &'a PairwiseTask,
    settings: &'a JudgeSettings,
    reference: &'a str,
    ref_outputs: &'a [String],
    spec_hash: &'a str,
}

/// Verdicts, metrics, store rows and exports of one checkpoint.
fn finish(
    a: Answered,
    asked: &[(String, Shown)],
    answers: &HashMap<String, Value>,
    against: &Against,
    store: &mut Store,
) -> Result<JudgeOutcome> {
    let task = against.task;
    let mut judged = Vec::with_capacity(asked.len());
    let mut annotations = Vec::with_capacity(asked.len());
    let mut samples = Vec::with_capacity(asked.len());
    for (i, (hash, shown)) in asked.iter().enumerate() {
        let choice = answers.get(hash).cloned().unwrap_or(Value::Null);
        let verdict = read_verdict(&choice, IDENTIFIERS);
        let preference = verdict.map(|v| 1.0 + shown.model_probability(v.p_first));
        let ins = &task.instructions[i];
        let (model, reference) = (&a.outputs[i], &against.ref_outputs[i]);
        judged.push(Judged {
            preference,
            reference_chars: reference.chars().count(),
            model_chars: model.chars().count(),
        });
        samples.push((
            i,
            ins.instruction.clone(),
            json!({
                "preference": preference,
                "source": verdict.map(|v| v.source),
                "model_first": shown.model_first,
                "prompt_hash": hash,
            })
            .to_string(),
        ));
        annotations.push(Annotation {
            instruction: ins.instruction.clone(),
            output_1: reference.clone(),
            generator_1: against.reference.to_string(),
            output_2: model.clone(),
            generator_2: a.generator.clone(),
            annotator: against.settings.model.clone(),
            preference,
            raw_completion: choice,
            dataset: ins.dataset.clone(),
        });
    }
    let same = a.generator == against.reference;
    let metrics = win_rates(&judged, task.difficulty.as_deref(), same);
    let rows = metric_rows(&a.row.fingerprint, against.spec_hash, &metrics);
    store.put_task_result(&a.row.fingerprint, TASK, against.spec_hash, &samples, &rows)?;
    let export = match &task.export_dir {
        Some(dir) => {
            let dir = dir.join(&a.generator);
            let outputs = model_outputs(&task.instructions, &a.outputs, &a.generator);
            write_checkpoint_exports(&dir, &outputs, &annotations, &metrics)?;
            Some(dir)
        }
        None => None,
    };
    Ok(JudgeOutcome {
        row: a.row,
        generator: a.generator,
        generated: a.generated,
        no_verdict: judged.iter().filter(|j| j.preference.is_none()).count(),
        metrics: Some(metrics),
        export,
        error: None,
    })
}

/// The store's rows of the metrics: win rates as fractions (like every accuracy in
/// the store), counts as they are.
fn metric_rows(fingerprint: &str, spec_hash: &str, m: &WinRates) -> Vec<MetricRow> {
    let created_at = now();
    let row = |metric: &str, value: Option<f64>, stderr: Option<f64>, higher: bool| {
        value.map(|value| MetricRow {
            fingerprint: fingerprint.to_string(),
            task: TASK.to_string(),
            spec_hash: spec_hash.to_string(),
            metric: metric.to_string(),
            filter: "none".to_string(),
            value,
            stderr,
            n: m.n_total,
            higher_is_better: higher,
            num_fewshot: 0,
            regime: REGIME.to_string(),
            ckpt_version: crate::VERSION.to_string(),
            created_at: created_at.clone(),
        })
    };
    let fraction = |x: Option<f64>| x.map(|v| v / 100.0);
    [
        row(
            "win_rate",
            fraction(m.win_rate),
            fraction(m.standard_error),
            true,
        ),
        row(
            "length_controlled_winrate",
            fraction(m.length_controlled_winrate),
            fraction(m.lc_standard_error),
            true,
        ),
        row(
            "discrete_win_rate",
            fraction(m.discrete_win_rate),
            None,
            true,
        ),
        row("n_wins", Some(m.n_wins as f64), None, true),
        row("n_wins_base", Some(m.n_wins_base as f64), None, false),
        row("n_draws", Some(m.n_draws as f64), None, false),
    ]
    .into_iter()
    .flatten()
    .collect()
}

//! Every checkpoint times every task, through the store.
//!
//! For each checkpoint: its fingerprint keys everything; a task whose metrics are
//! stored under the same spec hash is done; otherwise the requests without a stored
//! response run (the model is loaded only then), in batches whose responses are
//! committed one transaction each, so a killed run resumes where it stopped and a
//! rerun with new checkpoints scores only the new ones. A checkpoint that fails to
//! load or score is recorded as a failure and the others go on.

use super::engine::{Engine, Response};
use super::prompt::Request;
use super::scoring::{aggregate, score_doc};
use super::spec::TaskSpec;
use super::task::TaskRequests;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result, StoreFault};
use crate::hub::models::weights_key;
use crate::hub::sweep::Downloads;
use crate::hub::{FileEntry, Hub, HubRevision};
use crate::progress::{Progress, Unit};
use crate::shard::Shard;
use crate::sources::Candidate;
use crate::store::{now, CheckpointRow, HubRevisionRow, MetricRow, Store, TaskInfo};
use crate::tokenizer::{EncodePolicy, TextTokenizer};
use candle_core::{DType, Device};
use std::collections::HashMap;

/// The scoring regime recorded with every result.
pub const REGIME: &str = "lm-eval";

/// Requests sent to the engine between two commits to the store, by default.
pub(crate) const REQUESTS_PER_COMMIT: usize = 512;

/// How to run the models.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How texts become token ids (lm-eval's `add_bos_token`, `prefix_token_id`).
    pub(crate) policy: EncodePolicy,
    pub(crate) device: Device,
    pub(crate) dtype: DType,
    pub(crate) batch_tokens: usize,
    /// Model inputs at most; `None`: the config's `max_position_embeddings`.
    pub(crate) max_length: Option<usize>,
    /// Requests answered between two commits to the store.
    pub(crate) commit_every: usize,
}

/// The store's key of a request's response: the request and the tokenization policy
/// it was encoded under, so a response is never reused under another policy.
pub fn request_key(policy: &EncodePolicy, request: &Request) -> String {
    keyed_hash(&policy.key(), &request.hash())
}

/// The store's key of a task's samples and metrics: its spec and the policy.
pub fn results_hash(policy: &EncodePolicy, spec: &TaskSpec) -> String {
    keyed_hash(&policy.key(), &spec.hash())
}

fn keyed_hash(policy: &str, hash: &str) -> String {
    blake3::hash(format!("{policy}\n{hash}").as_bytes()).to_hex()[..32].to_string()
}

/// What happened to one checkpoint.
#[derive(Debug)]
pub struct CheckpointOutcome {
    pub(crate) row: CheckpointRow,
    /// Requests the model answered in this run (0: everything came from the store).
    pub(crate) computed: usize,
    pub(crate) error: Option<String>,
}

/// The store's description of a checkpoint.
pub(crate) fn checkpoint_row(ckpt: &Checkpoint, fingerprint: &str) -> CheckpointRow {
    let run = ckpt.run();
    let schedule = ckpt.meta.as_ref().and_then(|m| m.schedule.as_ref());
    let stage = ckpt.stage().map(|s| s.to_string());
    let alpha = schedule.and_then(|s| {
        if stage.as_deref() == Some("mid") {
            s.alpha_mid.or(s.alpha_pre)
        } else {
            s.alpha_pre
        }
    });
    CheckpointRow {
        fingerprint: fingerprint.to_string(),
        path: ckpt.name(),
        run,
        step: ckpt.step,
        stage,
        schedule: schedule.map(|s| s.kind.clone()),
        alpha,
    }
}

/// Scores every checkpoint on every task; failures are recorded, not raised.
pub fn evaluate(
    checkpoints: &[Checkpoint],
    tasks: &[TaskRequests],
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<Vec<CheckpointOutcome>> {
    let candidates: Vec<Candidate> = checkpoints
        .iter()
        .map(|c| Candidate::Local(Box::new(c.clone())))
        .collect();
    evaluate_shard(&candidates, tasks, store, opts, progress, None, None)
}

/// [`evaluate`] over candidates, restricted to `shard`'s part of the (checkpoint, task)
/// units as [`unit_costs`] lists and costs them (`None`: everything). Hub revisions
/// need `downloads`: a revision whose results are all stored is not downloaded.
pub fn evaluate_shard(
    candidates: &[Candidate],
    tasks: &[TaskRequests],
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
    shard: Option<Shard>,
    mut downloads: Option<&mut Downloads>,
) -> Result<Vec<CheckpointOutcome>> {
    let mine = match shard {
        Some(s) => s.select(&unit_costs(candidates, tasks)),
        None => vec![true; candidates.len() * tasks.len()],
    };
    let selected: Vec<Vec<&TaskRequests>> = (0..candidates.len())
        .map(|c| {
            tasks
                .iter()
                .enumerate()
                .filter(|(t, _)| mine[c * tasks.len() + t])
                .map(|(_, task)| task)
                .collect()
        })
        .collect();
    let plans = plan_revisions(candidates, &selected, store, opts, downloads.as_deref())?;
    let mut outcomes = Vec::new();
    for (c, candidate) in candidates.iter().enumerate() {
        if selected[c].is_empty() {
            continue;
        }
        let outcome = match (candidate, &plans[c]) {
            (Candidate::Local(ckpt), _) => {
                score_checkpoint(ckpt, &selected[c], store, opts, progress)?
            }
            (Candidate::Hub(rev), Some(plan)) => {
                let Some(downloads) = downloads.as_deref_mut() else {
                    return Err(Error::Invalid("a Hub revision needs the Hub".into()));
                };
                let next =
                    (c + 1..candidates.len()).find_map(|i| match (&candidates[i], &plans[i]) {
                        (Candidate::Hub(r), Some(RevisionPlan::Fetch { files, .. })) => {
                            Some((i, r, files))
                        }
                        _ => None,
                    });
                score_revision(
                    c,
                    rev,
                    plan,
                    next,
                    &selected[c],
                    store,
                    opts,
                    progress,
                    downloads,
                )?
            }
            (Candidate::Hub(_), None) => continue,
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Scores one checkpoint on disk (its fingerprint keys everything).
fn score_checkpoint(
    ckpt: &Checkpoint,
    tasks: &[&TaskRequests],
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<CheckpointOutcome> {
    let path = ckpt.name();
    let fingerprint = match ckpt.fingerprint() {
        Ok(f) => f,
        Err(e) => {
            store.put_failure(&path, None, None, &e.to_string())?;
            return Ok(CheckpointOutcome {
                row: checkpoint_row(ckpt, ""),
                computed: 0,
                error: Some(e.to_string()),
            });
        }
    };
    score_fingerprinted(ckpt, &fingerprint, tasks, store, opts, progress)
}

fn score_fingerprinted(
    ckpt: &Checkpoint,
    fingerprint: &str,
    tasks: &[&TaskRequests],
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<CheckpointOutcome> {
    let row = checkpoint_row(ckpt, fingerprint);
    let meta = ckpt
        .meta
        .as_ref()
        .and_then(|m| serde_json::to_string(m).ok());
    store.put_checkpoint(&row, meta.as_deref())?;
    let (computed, error) =
        match evaluate_checkpoint(ckpt, fingerprint, tasks, store, opts, progress) {
            Ok(n) => (n, None),
            Err(e) if e.is_store() => return Err(e),
            Err(e) => {
                let message = named(ckpt, e.to_string());
                store.put_failure(&row.path, Some(fingerprint), None, &message)?;
                (0, Some(message))
            }
        };
    Ok(CheckpointOutcome {
        row,
        computed,
        error,
    })
}

/// `message`, led by the checkpoint's name when it names only the directory (a Hub
/// revision's snapshot says nothing to the user).
fn named(ckpt: &Checkpoint, message: String) -> String {
    let name = ckpt.name();
    if ckpt.origin.is_none() || message.contains(&name) {
        message
    } else {
        format!("{name}: {message}")
    }
}

/// What is known of a Hub revision before anything large is downloaded.
enum RevisionPlan {
    /// Every task is stored for its weights: nothing to download.
    Done {
        fingerprint: String,
        weights: Option<String>,
    },
    /// Its weights are needed: these files (none offline, where the snapshot is used).
    Fetch {
        files: Vec<FileEntry>,
        weights: Option<String>,
    },
    /// It cannot be scored (no such revision, no weights, gated...).
    Failed(String),
}

/// For each Hub revision with tasks to do: its fingerprint from the store, by commit or
/// else by the digests the tree listing gives for its weights, and whether everything
/// is stored under it.
fn plan_revisions(
    candidates: &[Candidate],
    selected: &[Vec<&TaskRequests>],
    store: &Store,
    opts: &RunOptions,
    downloads: Option<&Downloads>,
) -> Result<Vec<Option<RevisionPlan>>> {
    candidates
        .iter()
        .zip(selected)
        .map(|(candidate, tasks)| match (candidate, downloads) {
            (Candidate::Hub(rev), Some(d)) if !tasks.is_empty() => {
                match plan_revision(rev, d.hub(), tasks, store, opts) {
                    Ok(plan) => Ok(Some(plan)),
                    Err(e) if e.is_store() => Err(e),
                    Err(e) => Ok(Some(RevisionPlan::Failed(e.to_string()))),
                }
            }
            _ => Ok(None),
        })
        .collect()
}

fn plan_revision(
    rev: &HubRevision,
    hub: &Hub,
    tasks: &[&TaskRequests],
    store: &Store,
    opts: &RunOptions,
) -> Result<RevisionPlan> {
    let repo = &rev.source.repo;
    let mut fingerprint = store.hub_fingerprint_at(repo, &rev.commit)?;
    let mut listing = None;
    if fingerprint.is_none() && !hub.is_offline() {
        let files = hub.checkpoint_files(rev, &hub.tree(repo, &rev.commit)?)?;
        let weights = weights_key(&files);
        fingerprint = store.hub_fingerprint_of_weights(&weights)?;
        listing = Some((files, weights));
    }
    if let Some(fp) = fingerprint {
        if all_stored(&fp, tasks, store, opts)? {
            return Ok(RevisionPlan::Done {
                fingerprint: fp,
                weights: listing.map(|(_, w)| w),
            });
        }
    }
    let (files, weights) = match listing {
        Some((files, weights)) => (files, Some(weights)),
        None if hub.is_offline() => (vec![], None),
        None => {
            let files = hub.checkpoint_files(rev, &hub.tree(repo, &rev.commit)?)?;
            let weights = weights_key(&files);
            (files, Some(weights))
        }
    };
    Ok(RevisionPlan::Fetch { files, weights })
}

fn all_stored(
    fingerprint: &str,
    tasks: &[&TaskRequests],
    store: &Store,
    opts: &RunOptions,
) -> Result<bool> {
    for t in tasks {
        if !store.has_task_result(
            fingerprint,
            &t.spec.task,
            &results_hash(&opts.policy, &t.spec),
        )? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Scores one Hub revision as planned: from the store alone, or downloaded (the next
/// revision to download starting in the background), scored, and released.
#[allow(clippy::too_many_arguments)]
fn score_revision(
    index: usize,
    rev: &HubRevision,
    plan: &RevisionPlan,
    next: Option<(usize, &HubRevision, &Vec<FileEntry>)>,
    tasks: &[&TaskRequests],
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
    downloads: &mut Downloads,
) -> Result<CheckpointOutcome> {
    let name = rev.source.to_string();
    let revision_row = |fingerprint: &str, weights: Option<&String>| HubRevisionRow {
        repo: rev.source.repo.clone(),
        revision: rev.revision().to_string(),
        commit_sha: rev.commit.clone(),
        fingerprint: fingerprint.to_string(),
        weights: weights.cloned(),
        step: rev.position.map(|p| p.step),
        tokens: rev.position.and_then(|p| p.tokens),
    };
    let failed = |store: &Store, message: String| -> Result<CheckpointOutcome> {
        store.put_failure(&name, None, None, &message)?;
        Ok(CheckpointOutcome {
            row: revision_checkpoint_row(rev, store, ""),
            computed: 0,
            error: Some(message),
        })
    };
    match plan {
        RevisionPlan::Failed(message) => failed(store, message.clone()),
        RevisionPlan::Done {
            fingerprint,
            weights,
        } => {
            store.put_hub_revision(&revision_row(fingerprint, weights.as_ref()))?;
            Ok(CheckpointOutcome {
                row: revision_checkpoint_row(rev, store, fingerprint),
                computed: 0,
                error: None,
            })
        }
        RevisionPlan::Fetch { files, weights } => {
            let dir = match downloads.get(index, rev, files) {
                Ok(dir) => dir,
                Err(e) => return failed(store, e.to_string()),
            };
            if let Some((i, next_rev, next_files)) = next {
                downloads.prefetch(i, next_rev, next_files);
            }
            let ckpt = match crate::sources::open_revision(&dir, rev) {
                Ok(c) => c,
                Err(e) => {
                    downloads.release(index);
                    return failed(store, format!("{name}: {e}"));
                }
            };
            let outcome = match ckpt.fingerprint() {
                Ok(fingerprint) => {
                    store.put_hub_revision(&revision_row(&fingerprint, weights.as_ref()))?;
                    score_fingerprinted(&ckpt, &fingerprint, tasks, store, opts, progress)
                }
                Err(e) => failed(store, named(&ckpt, e.to_string())),
            };
            downloads.release(index);
            outcome
        }
    }
}

/// The store's row for a revision scored before: what the store knows of its weights,
/// shown as this revision.
fn revision_checkpoint_row(rev: &HubRevision, store: &Store, fingerprint: &str) -> CheckpointRow {
    let known = (!fingerprint.is_empty())
        .then(|| store.checkpoint(fingerprint).ok().flatten())
        .flatten();
    let mut row = known.unwrap_or(CheckpointRow {
        fingerprint: fingerprint.to_string(),
        path: String::new(),
        run: String::new(),
        step: None,
        stage: None,
        schedule: None,
        alpha: None,
    });
    row.path = rev.source.to_string();
    row.run = rev.source.name().to_string();
    row.step = rev.position.map(|p| p.step).or(row.step);
    row
}

/// The estimated cost of each (checkpoint, task) unit, checkpoint-major: the
/// characters the task asks the model to read or write, times the checkpoint's
/// parameters (millions; a Hub revision counts as one million, as its config is not
/// downloaded to plan). Every shard computes the same list from the same inputs.
pub fn unit_costs(candidates: &[Candidate], tasks: &[TaskRequests]) -> Vec<u64> {
    let task_cost: Vec<u64> = tasks.iter().map(task_chars).collect();
    candidates
        .iter()
        .flat_map(|candidate| {
            let millions = match candidate {
                Candidate::Local(ckpt) => ckpt
                    .config()
                    .map(|c| (c.num_parameters() as u64 / 1_000_000).max(1))
                    .unwrap_or(1),
                Candidate::Hub(_) => 1,
            };
            task_cost.iter().map(move |t| t.saturating_mul(millions))
        })
        .collect()
}

/// Characters read or written by a task's requests (a generated token counted as 4).
fn task_chars(task: &TaskRequests) -> u64 {
    task.requests
        .iter()
        .flat_map(|d| &d.requests)
        .map(|r| match r {
            Request::Loglikelihood {
                context,
                continuation,
            } => context.len() + continuation.len(),
            Request::Generate {
                context,
                max_gen_toks,
                ..
            } => context.len() + 4 * max_gen_toks,
            Request::Rolling { text } => text.len(),
        } as u64)
        .sum()
}

fn evaluate_checkpoint(
    ckpt: &Checkpoint,
    fingerprint: &str,
    tasks: &[&TaskRequests],
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<usize> {
    let pending: Vec<&TaskRequests> = tasks
        .iter()
        .copied()
        .map(|t| {
            Ok((
                t,
                store.has_task_result(
                    fingerprint,
                    &t.spec.task,
                    &results_hash(&opts.policy, &t.spec),
                )?,
            ))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|(_, done)| !done)
        .map(|(t, _)| t)
        .collect();
    if pending.is_empty() {
        return Ok(0);
    }
    // Responses already stored (a run killed mid-task) are not asked again.
    let mut stored: HashMap<String, Response> = HashMap::new();
    let mut missing = Vec::new();
    let mut queued = std::collections::HashSet::new();
    for task in &pending {
        let hashes: Vec<String> = task
            .requests
            .iter()
            .flat_map(|d| d.requests.iter().map(|r| request_key(&opts.policy, r)))
            .collect();
        stored.extend(stored_responses(store, fingerprint, &hashes)?);
        for d in &task.requests {
            for r in &d.requests {
                let h = request_key(&opts.policy, r);
                if !stored.contains_key(&h) && queued.insert(h.clone()) {
                    missing.push((h, r.clone()));
                }
            }
        }
    }
    progress.start(&ckpt.name(), Unit::Items, missing.len() as u64, 0);
    if !missing.is_empty() {
        let computed = compute(ckpt, fingerprint, &missing, store, opts, progress)?;
        stored.extend(computed);
    }
    for task in pending {
        finish_task(fingerprint, task, &stored, store, &opts.policy)?;
    }
    Ok(missing.len())
}

/// The responses the store holds for `hashes` under `fingerprint`, by hash.
fn stored_responses(
    store: &Store,
    fingerprint: &str,
    hashes: &[String],
) -> Result<HashMap<String, Response>> {
    let mut known = HashMap::new();
    for (h, json) in store.responses(fingerprint, hashes)? {
        let r: Response = serde_json::from_str(&json).map_err(|e| {
            Error::store(
                store.path(),
                StoreFault::Query,
                format!("stored response {h}: {e}"),
            )
        })?;
        known.insert(h, r);
    }
    Ok(known)
}

/// Answers to `requests` from `ckpt`, in order: those stored under `fingerprint` come
/// from the store, the others are computed (the model is loaded only then) and
/// committed batch by batch. Also returns how many were computed.
pub fn answer_requests(
    ckpt: &Checkpoint,
    fingerprint: &str,
    requests: &[super::prompt::Request],
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<(Vec<Response>, usize)> {
    let hashes: Vec<String> = requests
        .iter()
        .map(|r| request_key(&opts.policy, r))
        .collect();
    let mut known = stored_responses(store, fingerprint, &hashes)?;
    let mut queued = std::collections::HashSet::new();
    let missing: Vec<(String, super::prompt::Request)> = hashes
        .iter()
        .zip(requests)
        .filter(|(h, _)| !known.contains_key(*h) && queued.insert((*h).clone()))
        .map(|(h, r)| (h.clone(), r.clone()))
        .collect();
    progress.start(&ckpt.name(), Unit::Items, missing.len() as u64, 0);
    if !missing.is_empty() {
        known.extend(compute(ckpt, fingerprint, &missing, store, opts, progress)?);
    }
    let answers = hashes
        .iter()
        .map(|h| known.get(h).cloned().expect("every request answered"))
        .collect();
    Ok((answers, missing.len()))
}

/// Runs `missing` on the checkpoint's model, committing each batch to the store.
fn compute(
    ckpt: &Checkpoint,
    fingerprint: &str,
    missing: &[(String, super::prompt::Request)],
    store: &mut Store,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> Result<HashMap<String, Response>> {
    let cfg = ckpt.config()?;
    let tokenizer = TextTokenizer::load_with(
        &ckpt.dir,
        None,
        cfg.bos_token_id,
        cfg.eos_token_id,
        opts.policy,
    )?;
    let model = ckpt.load_for_inference(&opts.device, opts.dtype)?;
    let mut engine = Engine::new(&model, &tokenizer);
    engine.batch_tokens = opts.batch_tokens;
    if let Some(m) = opts.max_length {
        engine.max_length = m;
    }
    let mut out = HashMap::new();
    for chunk in missing.chunks(opts.commit_every.max(1)) {
        let requests: Vec<_> = chunk.iter().map(|(_, r)| r.clone()).collect();
        let responses = engine.run(&requests, &|n| progress.advance(n as u64))?;
        check_finite(ckpt, &requests, &responses)?;
        let items: Vec<(String, String)> = chunk
            .iter()
            .zip(&responses)
            .map(|((h, _), r)| {
                (
                    h.clone(),
                    serde_json::to_string(r).expect("responses serialise"),
                )
            })
            .collect();
        store.put_responses(fingerprint, &items)?;
        out.extend(chunk.iter().map(|(h, _)| h.clone()).zip(responses));
    }
    Ok(out)
}

/// A NaN or infinite log-likelihood means a broken model (weights that overflow in
/// this dtype, say): it ends this checkpoint, naming the request, before it is stored
/// and averaged into a metric that would look like a result.
fn check_finite(
    ckpt: &Checkpoint,
    requests: &[super::prompt::Request],
    responses: &[Response],
) -> Result<()> {
    for (request, response) in requests.iter().zip(responses) {
        let logprob = match response {
            Response::Loglikelihood { logprob, .. } | Response::Rolling { logprob, .. } => *logprob,
            Response::Generation { .. } => continue,
        };
        if !logprob.is_finite() {
            let text = match request {
                super::prompt::Request::Loglikelihood {
                    context,
                    continuation,
                } => {
                    format!("{context}{continuation}")
                }
                super::prompt::Request::Generate { context, .. } => context.clone(),
                super::prompt::Request::Rolling { text } => text.clone(),
            };
            let shown: String = text.chars().take(60).collect();
            return Err(Error::bad_file(
                &ckpt.dir,
                format!(
                    "the model computes a log-likelihood of {logprob} for the request {shown:?}{}",
                    if shown.len() < text.len() { "..." } else { "" }
                ),
            ));
        }
    }
    Ok(())
}

/// Scores a task's docs from the responses and stores samples and metrics.
fn finish_task(
    fingerprint: &str,
    task: &TaskRequests,
    responses: &HashMap<String, Response>,
    store: &mut Store,
    policy: &EncodePolicy,
) -> Result<()> {
    let spec = &task.spec;
    let mut scores = Vec::with_capacity(task.requests.len());
    let mut samples = Vec::with_capacity(task.requests.len());
    for (doc, raw) in task.requests.iter().zip(&task.docs) {
        let rs: Vec<Response> = doc
            .requests
            .iter()
            .map(|r| {
                responses
                    .get(&request_key(policy, r))
                    .cloned()
                    .expect("every request answered")
            })
            .collect();
        let score = score_doc(spec, raw, doc, &rs).map_err(|e| {
            Error::bad_file(
                &task.origin,
                format!("task {} doc {}: {e}", spec.task, doc.doc_id),
            )
        })?;
        samples.push((
            doc.doc_id,
            doc.prompt.clone(),
            serde_json::to_string(&score).expect("scores serialise"),
        ));
        scores.push(score);
    }
    let created_at = now();
    let spec_hash = results_hash(policy, spec);
    let metrics: Vec<MetricRow> = aggregate(spec, &scores)
        .into_iter()
        .map(|m| MetricRow {
            fingerprint: fingerprint.to_string(),
            task: spec.task.clone(),
            spec_hash: spec_hash.clone(),
            metric: m.metric,
            filter: m.filter,
            value: m.value,
            stderr: m.stderr,
            n: m.n,
            higher_is_better: m.higher_is_better,
            num_fewshot: spec.num_fewshot,
            regime: REGIME.to_string(),
            ckpt_version: crate::VERSION.to_string(),
            created_at: created_at.clone(),
        })
        .collect();
    let info = TaskInfo {
        tokenization: Some(policy.key()),
        task: spec.task.clone(),
        spec_hash: spec_hash.clone(),
        dataset_path: spec.dataset_path.clone(),
        dataset_name: spec.dataset_name.clone(),
        split: spec.eval_split().map(String::from),
        data_origin: Some(if task.from_hub {
            "hub".to_string()
        } else {
            task.origin.display().to_string()
        }),
    };
    store.put_task_info(
        &info,
        &serde_json::to_string(spec).expect("specs serialise"),
    )?;
    store.put_task_result(fingerprint, &spec.task, &spec_hash, &samples, &metrics)
}

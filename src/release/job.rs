//! [`ReleaseJob`]: a `ckpt release` as typed values, checked once, and [`run`], which
//! takes it from the checkpoint to a dry run's directory or a commit on the Hub.

use super::metadata;
use super::plan::Filters;
use super::results::{self, CardResults};
use super::upload::{self, UploadOptions, UploadReport};
use super::{card, inspect, prepare, CardInputs, CardOptions, Prepared};
use crate::error::{Error, Result};
use crate::hub::auth::{self, TokenSource};
use crate::hub::{HubClient, RepoId, RetryPolicy};
use crate::progress::{Progress, Shared};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest wait before the first retry: beyond it a release looks hung.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(600);

/// One release of one checkpoint.
#[derive(Debug, Clone)]
pub struct ReleaseJob {
    /// The checkpoint directory (config.json, weights, tokenizer.json).
    pub(crate) checkpoint: PathBuf,
    /// Target repository; without a namespace, the token's user's.
    pub(crate) repo: RepoId,
    /// Branch to commit to; created from the default branch when missing.
    pub(crate) revision: String,
    /// Release a checkpoint whose learning rate decayed (not a WSO base model).
    pub(crate) allow_decayed: bool,
    /// Release a checkpoint whose schedule is not recorded (no ckpt.json).
    pub(crate) allow_unknown_schedule: bool,
    /// What goes into the model card.
    pub(crate) card: CardOptions,
    /// Which files of the checkpoint go too.
    pub(crate) filters: Filters,
    /// A directory (dry run) or the Hub.
    pub(crate) destination: Destination,
}

/// Where the release goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Write exactly the files that would be uploaded into this directory (new or
    /// empty); upload nothing.
    DryRun(PathBuf),
    /// Commit them to the Hub (`HF_ENDPOINT`).
    Hub(HubTarget),
}

/// How to commit to the Hub.
#[derive(Debug, Clone)]
pub struct HubTarget {
    /// The token; by default `HF_TOKEN`, else the token file of `hf auth login`.
    pub(crate) token: Option<String>,
    /// Create the repository private (an existing repository keeps its visibility).
    pub(crate) private: bool,
    /// Commit summary; by default "Release <name>: step N, <schedule>".
    pub(crate) commit_message: Option<String>,
    pub(crate) commit_description: String,
    /// Open a pull request against the revision instead of committing to it.
    pub(crate) create_pr: bool,
    /// Retries per request on 408/429/5xx and broken connections.
    pub(crate) retries: u32,
    /// Wait before the first retry (it doubles up to 8 s; Retry-After wins).
    pub(crate) retry_wait: Duration,
}

/// What [`run`] tells its caller while it works.
pub enum Event<'a> {
    /// Every file is checked and hashed; nothing is written or sent yet.
    Planned(&'a Prepared),
}

/// Where the files went.
#[derive(Debug)]
pub enum Published {
    /// Written into this directory.
    DryRun(PathBuf),
    /// Sent to the Hub.
    Uploaded(UploadReport),
}

/// A finished release.
pub struct ReleaseOutcome {
    pub prepared: Prepared,
    /// `namespace/name` (a bare name in a dry run: the user is not asked for).
    pub repo_id: String,
    pub published: Published,
}

impl ReleaseJob {
    /// Checks every value the flags would have refused, and combinations of them.
    pub(crate) fn check(&self) -> Result<()> {
        let flag = |name: &str, r: std::result::Result<String, String>| {
            r.map(drop)
                .map_err(|e| Error::Invalid(format!("{name}: {e}")))
        };
        flag("--revision", metadata::parse_revision(&self.revision))?;
        flag("--license", metadata::parse_license(&self.card.license))?;
        for lang in &self.card.languages {
            flag("--language", metadata::parse_language(lang))?;
        }
        for id in &self.card.datasets {
            flag("--dataset", metadata::parse_hub_id(id))?;
        }
        if let Some(id) = &self.card.base_model {
            flag("--base-model", metadata::parse_base_model(id))?;
        }
        if self.card.results.is_some() && self.card.store.is_some() {
            return Err(Error::bad_value(
                "--results",
                "--results and --store cannot be used together",
            ));
        }
        if let Destination::Hub(hub) = &self.destination {
            let wait = hub.retry_wait;
            if wait.is_zero() || wait > MAX_RETRY_WAIT {
                return Err(Error::bad_value(
                    "--retry-wait",
                    format!(
                        "--retry-wait must be in (0, {}] seconds (got {})",
                        MAX_RETRY_WAIT.as_secs(),
                        wait.as_secs_f64()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Checks the job, the checkpoint and the card, plans the files (`hashing` counts the
/// bytes hashed), then writes them to the dry run's directory or uploads them
/// (`uploading` counts the LFS bytes sent).
pub fn run(
    job: &ReleaseJob,
    hashing: &dyn Progress,
    uploading: Shared,
    on_event: &mut dyn FnMut(Event),
) -> Result<ReleaseOutcome> {
    job.check()?;
    let mut inputs = CardInputs {
        repo_id: job.repo.full("").trim_start_matches('/').to_string(),
        template: job
            .card
            .template
            .as_deref()
            .map(card::read_template)
            .transpose()?,
        results: card_results(job)?,
    };
    // Quick local checks first, then the token (before hashing a big checkpoint).
    let inspected = inspect(job)?;
    let hub = match &job.destination {
        Destination::DryRun(_) => None,
        Destination::Hub(target) => Some((connect(target)?, target)),
    };
    if let Some(((_, user), _)) = &hub {
        inputs.repo_id = job.repo.full(user);
    }
    let mut prepared = prepare(job, &inputs, inspected, hashing)?;
    on_event(Event::Planned(&prepared));
    let repo_id = inputs.repo_id;
    let published = match (&job.destination, hub) {
        (Destination::DryRun(dir), _) => {
            prepared.plan.write_to(dir)?;
            Published::DryRun(dir.clone())
        }
        (Destination::Hub(_), Some(((client, _), target))) => {
            let opts = UploadOptions {
                repo: job.repo.clone(),
                revision: job.revision.clone(),
                private: target.private,
                commit_message: target
                    .commit_message
                    .clone()
                    .unwrap_or_else(|| default_message(&prepared, &repo_id)),
                commit_description: target.commit_description.clone(),
                create_pr: target.create_pr,
            };
            let report = upload::publish(&client, &mut prepared.plan, &opts, &uploading)
                .map_err(|e| annotate(e, |m| format!("release to {repo_id} failed: {m}")))?;
            Published::Uploaded(report)
        }
        (Destination::Hub(_), None) => unreachable!("connected when not a dry run"),
    };
    Ok(ReleaseOutcome {
        prepared,
        repo_id,
        published,
    })
}

/// The same error with its message rewritten; a network error stays one, so callers
/// can still read its status.
fn annotate(e: Error, message: impl FnOnce(String) -> String) -> Error {
    match e {
        Error::Network {
            status,
            code,
            message: m,
        } => Error::Network {
            status,
            code,
            message: message(m),
        },
        other => Error::Invalid(message(other.to_string())),
    }
}

/// A client for `HF_ENDPOINT` with the token, and the token's user (checked by
/// `whoami`).
fn connect(target: &HubTarget) -> Result<(HubClient, String)> {
    let Some((token, source)) = auth::resolve_token(target.token.as_deref()) else {
        let file = auth::token_file()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the token file".into());
        return Err(Error::bad_value("--token", format!(
            "no Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login` (which writes {file})"
        )));
    };
    let mut retry = RetryPolicy {
        max_retries: target.retries,
        ..RetryPolicy::default()
    };
    retry.base_delay = target.retry_wait;
    retry.max_delay = retry.max_delay.max(retry.base_delay);
    let endpoint = auth::endpoint();
    let client =
        HubClient::new(&endpoint, Some(token), retry).map_err(|e| Error::Invalid(e.to_string()))?;
    let user = client.whoami().map_err(|e| {
        let from = match &source {
            TokenSource::Flag => "--token".to_string(),
            other => other.to_string(),
        };
        Error::from(e).map_message(|m| format!("{m} (token from {from}, endpoint {endpoint})"))
    })?;
    Ok((client, user.name))
}

/// The results file, else the store's results for this checkpoint, else none.
fn card_results(job: &ReleaseJob) -> Result<CardResults> {
    if let Some(file) = &job.card.results {
        return CardResults::read(file);
    }
    let default = Path::new(crate::store::STORE_FILE);
    let path = match &job.card.store {
        Some(p) => p.clone(),
        None if default.is_file() => default.to_path_buf(),
        None => return Ok(CardResults::default()),
    };
    let store = crate::store::open_stores(&[path], Duration::ZERO)?;
    let ckpt = crate::checkpoint::open_single(&job.checkpoint)?;
    results::from_store(&store, &ckpt.fingerprint()?)
}

/// "Release NAME: step N, SCHEDULE (ckpt VERSION)".
fn default_message(p: &Prepared, repo_id: &str) -> String {
    let name = repo_id.rsplit('/').next().unwrap_or(repo_id);
    let step = p
        .checkpoint
        .step
        .map(|s| format!(": step {s}"))
        .unwrap_or_default();
    let kind = p
        .checkpoint
        .schedule_kind()
        .map(|k| format!(", {k}"))
        .unwrap_or_default();
    format!("Release {name}{step}{kind} (ckpt {})", crate::VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ReleaseJob {
        ReleaseJob {
            checkpoint: PathBuf::from("ckpt"),
            repo: RepoId::parse("org/model").unwrap(),
            revision: "main".into(),
            allow_decayed: false,
            allow_unknown_schedule: false,
            card: CardOptions::default(),
            filters: Filters::default(),
            destination: Destination::Hub(HubTarget {
                token: None,
                private: false,
                commit_message: None,
                commit_description: String::new(),
                create_pr: false,
                retries: 5,
                retry_wait: Duration::from_secs(1),
            }),
        }
    }

    #[test]
    fn check_names_the_flag_of_a_bad_value() {
        assert!(job().check().is_ok());
        let mut bad = job();
        bad.card.license = "no-such-license".into();
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("--license"));
        let mut bad = job();
        bad.revision = String::new();
        assert!(bad.check().unwrap_err().to_string().contains("--revision"));
        let mut bad = job();
        if let Destination::Hub(hub) = &mut bad.destination {
            hub.retry_wait = Duration::ZERO;
        }
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("--retry-wait"));
    }

    #[test]
    fn check_refuses_results_from_a_file_and_a_store_at_once() {
        let mut both = job();
        both.card.results = Some("results.json".into());
        both.card.store = Some("ckpt.sqlite".into());
        let e = both.check().unwrap_err().to_string();
        assert!(e.contains("--results") && e.contains("--store"), "{e}");
    }
}

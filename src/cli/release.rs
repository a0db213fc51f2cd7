//! `ckpt release CKPT --repo ORG/NAME [--dry-run DIR]`: checks a checkpoint, renders its
//! model card and publishes both to the Hugging Face Hub (or writes them to DIR).

use super::output::{outln, print_json, table, Ui};
use crate::hub::auth::{self, TokenSource};
use crate::hub::RepoId;
use crate::hub::{HubClient, RetryPolicy};
use crate::release::metadata;
use crate::release::plan::{Filters, Plan};
use crate::release::upload::{self, Outcome, UploadOptions, UploadReport};
use crate::release::{self, CardOptions, Prepared, ReleaseConfig};
use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The checkpoint directory (config.json, weights, tokenizer.json).
    checkpoint: PathBuf,
    /// Target repository, NAMESPACE/NAME (or NAME: the token's user).
    #[arg(long, value_name = "ORG/NAME")]
    repo: String,
    /// Branch to commit to; created from the default branch when missing.
    #[arg(long, default_value = "main", value_parser = metadata::parse_revision)]
    revision: String,
    /// Create the repository private (an existing repository keeps its visibility).
    #[arg(long)]
    private: bool,
    /// Commit summary [default: "Release <name>: step N, <schedule>"].
    #[arg(long)]
    commit_message: Option<String>,
    /// Commit description.
    #[arg(long, default_value = "")]
    commit_description: String,
    /// Open a pull request against --revision instead of committing to it.
    #[arg(long)]
    create_pr: bool,
    /// Also release checkpoint files matching GLOB (e.g. ckpt.json); repeatable.
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out files matching GLOB, generated ones included; repeatable.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Hugging Face token [default: HF_TOKEN, else the token file of `hf auth login`].
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Write exactly the files that would be uploaded into DIR (new or empty) and
    /// upload nothing.
    #[arg(long, value_name = "DIR")]
    dry_run: Option<PathBuf>,
    /// Release a checkpoint whose learning rate decayed (not a WSO base model).
    #[arg(long)]
    allow_decayed: bool,
    /// Release a checkpoint whose schedule is not recorded (no ckpt.json).
    #[arg(long)]
    allow_unknown_schedule: bool,
    /// Evaluation and sharpness results for the card (JSON; see the README).
    #[arg(long, value_name = "FILE", conflicts_with = "store")]
    results: Option<PathBuf>,
    /// Read this checkpoint's evaluation results from the results store (`ckpt eval`),
    /// or a directory of stores (the shards of a sweep), read as one;
    /// default: ckpt.sqlite in the current directory when it exists.
    #[arg(long, value_name = "FILE|DIR")]
    store: Option<PathBuf>,
    /// A minijinja template replacing the built-in model card (release/model_card.md.j2).
    #[arg(long, value_name = "FILE")]
    card_template: Option<PathBuf>,
    /// License id for the card's metadata (a Hub license id, or "other").
    #[arg(long, default_value = "apache-2.0", value_parser = metadata::parse_license)]
    license: String,
    /// Language of the model (ISO 639-1); repeatable.
    #[arg(long = "language", value_name = "LANG", default_values_t = ["en".to_string()],
          value_parser = metadata::parse_language)]
    languages: Vec<String>,
    /// Hub id of a training dataset for the card; repeatable.
    #[arg(long = "dataset", value_name = "ID", value_parser = metadata::parse_hub_id)]
    datasets: Vec<String>,
    /// Hub id of the model this one was trained from (ORG/NAME, or hf://ORG/NAME[@REV]).
    #[arg(long, value_name = "ID", value_parser = metadata::parse_base_model)]
    base_model: Option<String>,
    /// Extra tag for the card; repeatable.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Retries per request on 408/429/5xx and broken connections (the wait starts at
    /// --retry-wait and doubles up to 8 s; Retry-After wins).
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Seconds before the first retry.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = super::values::f64_above(0.0, 600.0))]
    retry_wait: f64,
    /// Print the plan and the outcome as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    checkpoint: PathBuf,
    repo: String,
    verdict: &'a release::decay::Verdict,
    checks: &'a release::checks::CheckReport,
    plan: &'a Plan,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload: Option<UploadReport>,
}

pub fn run(args: &ReleaseArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let repo = RepoId::parse(&args.repo).context("--repo")?;
    let mut cfg = ReleaseConfig {
        checkpoint: args.checkpoint.clone(),
        repo_id: repo.full("").trim_start_matches('/').to_string(),
        revision: args.revision.clone(),
        allow_decayed: args.allow_decayed,
        allow_unknown_schedule: args.allow_unknown_schedule,
        card: card_options(args)?,
        filters: Filters {
            include: args.include.clone(),
            exclude: args.exclude.clone(),
        },
    };
    // Quick local checks first, then the token (before hashing a big checkpoint).
    let inspected = release::inspect(&cfg)?;
    let hub = match &args.dry_run {
        Some(_) => None,
        None => Some(connect(args)?),
    };
    if let Some((_, user)) = &hub {
        cfg.repo_id = repo.full(user);
    }
    let repo_id = cfg.repo_id.clone();
    let hashing = ui.bar("hashing");
    let mut prepared = release::prepare(&cfg, inspected, hashing.as_ref())?;
    hashing.finish();
    if !args.json && !ui.quiet {
        print_plan(&prepared);
    }
    if let Some(dir) = &args.dry_run {
        prepared.plan.write_to(dir)?;
        if args.json {
            print_json(&output(&prepared, &repo_id, args, None))?;
        } else if !ui.quiet {
            outln!(
                "dry run: wrote {} files ({}) to {}; nothing was uploaded",
                prepared.plan.files.len(),
                release::card::human_bytes(prepared.plan.total_size()),
                dir.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (client, _) = hub.expect("connected when not a dry run");
    let opts = UploadOptions {
        repo,
        revision: args.revision.clone(),
        private: args.private,
        commit_message: args
            .commit_message
            .clone()
            .unwrap_or_else(|| default_message(&prepared, &repo_id)),
        commit_description: args.commit_description.clone(),
        create_pr: args.create_pr,
    };
    let uploading = ui.bar("uploading");
    let shared: crate::progress::Shared = uploading.clone();
    let report = upload::publish(&client, &mut prepared.plan, &opts, &shared)
        .with_context(|| format!("release to {repo_id} failed"))?;
    uploading.finish();
    if args.json {
        print_json(&output(&prepared, &repo_id, args, Some(report)))?;
    } else if !ui.quiet {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn output<'a>(
    p: &'a Prepared,
    repo_id: &str,
    args: &ReleaseArgs,
    upload: Option<UploadReport>,
) -> Output<'a> {
    Output {
        checkpoint: p.checkpoint.dir.clone(),
        repo: repo_id.to_string(),
        verdict: &p.verdict,
        checks: &p.checks,
        plan: &p.plan,
        dry_run: args.dry_run.clone(),
        upload,
    }
}

/// The token, a client for `HF_ENDPOINT`, and the token's user (checked by `whoami`).
fn connect(args: &ReleaseArgs) -> anyhow::Result<(HubClient, String)> {
    let Some((token, source)) = auth::resolve_token(args.token.as_deref()) else {
        let file = auth::token_file()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the token file".into());
        bail!(
            "no Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login` (which writes {file})"
        );
    };
    let mut retry = RetryPolicy {
        max_retries: args.retries,
        ..RetryPolicy::default()
    };
    retry.base_delay = Duration::from_secs_f64(args.retry_wait);
    retry.max_delay = retry.max_delay.max(retry.base_delay);
    let endpoint = auth::endpoint();
    let client = HubClient::new(&endpoint, Some(token), retry)?;
    let user = client.whoami().map_err(|e| {
        let from = match &source {
            TokenSource::Flag => "--token".to_string(),
            other => other.to_string(),
        };
        anyhow::anyhow!("{e} (token from {from}, endpoint {endpoint})")
    })?;
    Ok((client, user.name))
}

fn card_options(args: &ReleaseArgs) -> anyhow::Result<CardOptions> {
    let template = match &args.card_template {
        Some(p) => Some(release::card::read_template(p)?),
        None => None,
    };
    Ok(CardOptions {
        license: args.license.clone(),
        languages: args.languages.clone(),
        datasets: args.datasets.clone(),
        base_model: args.base_model.clone(),
        tags: args.tags.clone(),
        template,
        results: card_results(args)?,
    })
}

/// `--results FILE`, else the store's results for this checkpoint, else none.
fn card_results(args: &ReleaseArgs) -> anyhow::Result<release::results::CardResults> {
    if args.results.is_some() {
        return Ok(release::read_results(args.results.as_deref())?);
    }
    let default = PathBuf::from(crate::store::STORE_FILE);
    let path = match &args.store {
        Some(p) => p.clone(),
        None if default.is_file() => default,
        None => return Ok(release::read_results(None)?),
    };
    let store = crate::report::open_stores(&[path], std::time::Duration::ZERO)?;
    let ckpt = crate::checkpoint::open_single(&args.checkpoint)?;
    Ok(release::results::from_store(&store, &ckpt.fingerprint()?)?)
}

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

fn print_plan(p: &Prepared) {
    let mut t = table(&["file", "size", "mode", "sha256", "from"]);
    for f in &p.plan.files {
        t.add_row(vec![
            f.path_in_repo.clone(),
            release::card::human_bytes(f.size),
            f.mode.to_string(),
            f.sha256[..12].to_string(),
            if f.generated {
                "generated"
            } else {
                "checkpoint"
            }
            .to_string(),
        ]);
    }
    outln!("{t}");
    outln!(
        "{} files, {} ({}: {})",
        p.plan.files.len(),
        release::card::human_bytes(p.plan.total_size()),
        match &p.verdict {
            release::decay::Verdict::NotDecayed(_) => "WSO",
            release::decay::Verdict::Decayed(_) => "decayed, allowed",
            release::decay::Verdict::Unknown(_) => "schedule unknown, allowed",
        },
        match &p.verdict {
            release::decay::Verdict::NotDecayed(r)
            | release::decay::Verdict::Decayed(r)
            | release::decay::Verdict::Unknown(r) => r,
        }
    );
}

fn print_report(r: &UploadReport) {
    if !r.already_on_hub.is_empty() {
        outln!(
            "already on the Hub (not sent again): {}",
            r.already_on_hub.join(", ")
        );
    }
    if !r.unchanged.is_empty() {
        outln!("unchanged: {}", r.unchanged.join(", "));
    }
    let url = r.commit_url.as_deref().unwrap_or("");
    match r.outcome {
        Outcome::UpToDate => outln!(
            "{}@{} already holds these files: nothing to commit ({url})",
            r.repo,
            r.revision
        ),
        Outcome::Committed | Outcome::CommittedAnswerLost => match &r.pull_request_url {
            Some(pr) => outln!("opened a pull request on {}: {pr}", r.repo),
            None => outln!("released {}@{}: {url}", r.repo, r.revision),
        },
    }
}

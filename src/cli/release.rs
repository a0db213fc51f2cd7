//! `ckpt release CKPT --repo ORG/NAME [--dry-run DIR]`: checks a checkpoint, renders its
//! model card and publishes both to the Hugging Face Hub (or writes them to DIR).

use super::output::{outln, print_json, table, Ui};
use crate::hub::RepoId;
use crate::release::metadata;
use crate::release::plan::{Filters, Plan};
use crate::release::upload::{Outcome, UploadReport};
use crate::release::{
    self, CardOptions, Destination, Event, HubTarget, Prepared, Published, ReleaseJob,
    ReleaseOutcome,
};
use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub(crate) struct ReleaseArgs {
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
    checkpoint: &'a Path,
    repo: &'a str,
    verdict: &'a release::decay::Verdict,
    checks: &'a release::checks::CheckReport,
    plan: &'a Plan,
    #[serde(skip_serializing_if = "Option::is_none")]
    dry_run: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload: Option<&'a UploadReport>,
}

impl ReleaseArgs {
    /// The flags as a job.
    fn job(&self) -> anyhow::Result<ReleaseJob> {
        let destination = match &self.dry_run {
            Some(dir) => Destination::DryRun(dir.clone()),
            None => Destination::Hub(HubTarget {
                token: self.token.clone(),
                private: self.private,
                commit_message: self.commit_message.clone(),
                commit_description: self.commit_description.clone(),
                create_pr: self.create_pr,
                retries: self.retries,
                retry_wait: Duration::from_secs_f64(self.retry_wait),
            }),
        };
        Ok(ReleaseJob {
            checkpoint: self.checkpoint.clone(),
            repo: RepoId::parse(&self.repo).context("--repo")?,
            revision: self.revision.clone(),
            allow_decayed: self.allow_decayed,
            allow_unknown_schedule: self.allow_unknown_schedule,
            card: CardOptions {
                license: self.license.clone(),
                languages: self.languages.clone(),
                datasets: self.datasets.clone(),
                base_model: self.base_model.clone(),
                tags: self.tags.clone(),
                template: self.card_template.clone(),
                results: self.results.clone(),
                store: self.store.clone(),
            },
            filters: Filters {
                include: self.include.clone(),
                exclude: self.exclude.clone(),
            },
            destination,
        })
    }
}

pub(crate) fn run(args: &ReleaseArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let job = args.job()?;
    let hashing = ui.bar("hashing");
    let uploading = ui.bar("uploading");
    let outcome = release::run(
        &job,
        hashing.as_ref(),
        uploading.clone(),
        &mut |event| match event {
            Event::Planned(prepared) => {
                hashing.finish();
                if !args.json && !ui.quiet {
                    print_plan(prepared);
                }
            }
        },
    )?;
    uploading.finish();
    if args.json {
        print_json(&output(&outcome))?;
        return Ok(ExitCode::SUCCESS);
    }
    if ui.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    match &outcome.published {
        Published::DryRun(dir) => {
            let plan = &outcome.prepared.plan;
            outln!(
                "dry run: wrote {} files ({}) to {}; nothing was uploaded",
                plan.files.len(),
                release::card::human_bytes(plan.total_size()),
                dir.display()
            );
        }
        Published::Uploaded(report) => print_report(report),
    }
    Ok(ExitCode::SUCCESS)
}

fn output(o: &ReleaseOutcome) -> Output<'_> {
    let p = &o.prepared;
    let (dry_run, upload) = match &o.published {
        Published::DryRun(dir) => (Some(dir.as_path()), None),
        Published::Uploaded(report) => (None, Some(report)),
    };
    Output {
        checkpoint: &p.checkpoint.dir,
        repo: &o.repo_id,
        verdict: &p.verdict,
        checks: &p.checks,
        plan: &p.plan,
        dry_run,
        upload,
    }
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

//! Checkpoints as commands name them: directories on disk (walked for checkpoints),
//! and Hub revisions (`hf://ORG/NAME[@REV]`, or every branch `--revisions` matches).
//!
//! A sweep (`ckpt eval`) takes [`Candidate`]s and fetches a Hub revision only when its
//! results are not stored yet; other commands take [`checkpoints`], which fetches
//! every Hub revision named into the cache and keeps it; [`inspect`] reads the facts
//! of each one (`ckpt inspect`).

use crate::checkpoint::{discover, Checkpoint, Origin};
use crate::error::{Error, Result};
use crate::hub::revisions::{RevisionFilter, StepReader};
use crate::hub::{Hub, HubRevision, HubSource};
use crate::progress::Progress;
use std::path::{Path, PathBuf};

pub(crate) mod inspect;

/// How Hub sources are read.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// A glob or regex of branch names: every matching branch is a checkpoint.
    pub(crate) revisions: Option<String>,
    /// A regex whose first group is the step in a revision name.
    pub(crate) step_from: Option<String>,
}

/// A checkpoint to visit: on disk, or a Hub revision fetched when needed.
#[derive(Debug, Clone)]
pub enum Candidate {
    Local(Box<Checkpoint>),
    Hub(HubRevision),
}

impl Candidate {
    /// How it is shown and stored.
    pub fn name(&self) -> String {
        match self {
            Candidate::Local(c) => c.name(),
            Candidate::Hub(r) => r.source.to_string(),
        }
    }
}

impl HubOptions {
    /// Refuses options that select Hub revisions when no path names a Hub repository
    /// (`names_hub`: whether one does).
    pub(crate) fn check(&self, names_hub: bool) -> Result<()> {
        for (flag, set) in [
            ("--revisions selects branches", self.revisions.is_some()),
            (
                "--step-from reads steps from the names of revisions",
                self.step_from.is_some(),
            ),
        ] {
            if set && !names_hub {
                return Err(Error::Invalid(format!(
                    "{flag} of a Hub repository: name one as hf://ORG/NAME"
                )));
            }
        }
        Ok(())
    }
}

/// Whether some path names a Hub repository (`hf://ORG/NAME`).
pub fn names_hub(paths: &[PathBuf]) -> bool {
    paths.iter().any(|p| HubSource::from_path(p).is_some())
}

/// Every candidate `paths` name, local ones in discovery order, each Hub source's
/// revisions by step; the Hub, when some path names it.
pub(crate) fn candidates(
    paths: &[PathBuf],
    opts: &HubOptions,
) -> Result<(Vec<Candidate>, Option<Hub>)> {
    let (local, hub_sources) = split(paths)?;
    opts.check(!hub_sources.is_empty())?;
    let mut found: Vec<Candidate> = if local.is_empty() {
        vec![]
    } else {
        discover(&local)?
            .into_iter()
            .map(|c| Candidate::Local(Box::new(c)))
            .collect()
    };
    if hub_sources.is_empty() {
        return Ok((found, None));
    }
    let hub = Hub::from_env()?;
    let steps = StepReader::new(opts.step_from.as_deref())?;
    let filter = opts
        .revisions
        .as_deref()
        .map(RevisionFilter::parse)
        .transpose()?;
    for source in hub_sources {
        let revisions = match (&filter, &source.revision) {
            (Some(_), Some(rev)) => {
                return Err(Error::bad_value(
                    "--revisions",
                    format!(
                "{source}: names revision {rev} and --revisions selects others; give one of them"
            ),
                ))
            }
            (Some(f), None) => sweep(
                &hub,
                &source,
                f,
                &steps,
                opts.revisions.as_deref().unwrap_or(""),
            )?,
            (None, _) => {
                let mut rev = hub.pin(&source)?;
                rev.position = steps.position(rev.revision());
                vec![rev]
            }
        };
        found.extend(revisions.into_iter().map(Candidate::Hub));
    }
    Ok((found, Some(hub)))
}

/// The branches of `source` that `filter` matches, by step.
fn sweep(
    hub: &Hub,
    source: &HubSource,
    filter: &RevisionFilter,
    steps: &StepReader,
    pattern: &str,
) -> Result<Vec<HubRevision>> {
    let branches = hub.branches(&source.repo)?;
    let mut revisions = Vec::new();
    let mut unnamed = Vec::new();
    for (name, commit) in branches.iter().filter(|(n, _)| filter.matches(n)) {
        match steps.position(name) {
            Some(position) => revisions.push(HubRevision {
                source: source.at(name),
                commit: commit.clone(),
                position: Some(position),
            }),
            None => unnamed.push(name.as_str()),
        }
    }
    if let Some(first) = unnamed.first() {
        if let Err(e) = steps.require(&source.repo, first) {
            return Err(Error::bad_value(
                "--step-from",
                format!("{e} (revisions without a step: {})", unnamed.join(", ")),
            ));
        }
    }
    if revisions.is_empty() {
        let names: Vec<&str> = branches.iter().map(|(n, _)| n.as_str()).collect();
        let where_ = if hub.is_offline() {
            "in the cache (HF_HUB_OFFLINE)"
        } else {
            "on the Hub"
        };
        return Err(Error::bad_value(
            "--revisions",
            format!(
                "{source}: no branch matches --revisions {pattern:?} {where_}; branches: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ));
    }
    revisions.sort_by(|a, b| {
        (a.position.map(|p| p.step), a.revision()).cmp(&(b.position.map(|p| p.step), b.revision()))
    });
    Ok(revisions)
}

/// The local paths and the Hub sources among `paths`.
fn split(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<HubSource>)> {
    let mut local = Vec::new();
    let mut hub = Vec::new();
    for p in paths {
        match HubSource::from_path(p) {
            Some(source) => hub.push(source?),
            None => local.push(p.clone()),
        }
    }
    Ok((local, hub))
}

/// The checkpoint in a revision's snapshot directory, shown as the revision.
pub(crate) fn open_revision(dir: &Path, rev: &HubRevision) -> Result<Checkpoint> {
    let mut ckpt = Checkpoint::open(dir)?;
    // The sidecar's step, when the revision has one, is the trainer's own word.
    if ckpt.meta.is_none() {
        ckpt.step = rev.position.map(|p| p.step);
    }
    ckpt.origin = Some(Origin {
        name: rev.source.to_string(),
        run: rev.source.name().to_string(),
    });
    Ok(ckpt)
}

/// Every checkpoint `paths` name, Hub revisions fetched into the cache and kept.
pub(crate) fn checkpoints(
    paths: &[PathBuf],
    opts: &HubOptions,
    transfer: &dyn Progress,
) -> Result<Vec<Checkpoint>> {
    let (found, hub) = candidates(paths, opts)?;
    found
        .into_iter()
        .map(|c| match c {
            Candidate::Local(ckpt) => Ok(*ckpt),
            Candidate::Hub(rev) => {
                let hub = hub.as_ref().expect("a Hub candidate comes with the Hub");
                open_revision(&hub.materialize(&rev, transfer)?, &rev)
            }
        })
        .collect()
}

/// The one checkpoint `path` names (a Hub source is fetched into the cache).
pub(crate) fn open_single(path: &Path, transfer: &dyn Progress) -> Result<Checkpoint> {
    if HubSource::from_path(path).is_none() {
        return crate::checkpoint::open_single(path);
    }
    let mut found = checkpoints(&[path.to_path_buf()], &HubOptions::default(), transfer)?;
    Ok(found.remove(0))
}
/// Paths as a message names them: `a, b, c`.
pub(crate) fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

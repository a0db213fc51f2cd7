//! [`InspectJob`]: a `ckpt inspect` as typed values, checked once, and [`run`]: the
//! facts of every checkpoint found under some paths.

use super::{checkpoints, names_hub, HubOptions};
use crate::checkpoint::{Checkpoint, CheckpointMeta, StoredTensor};
use crate::error::{Error, Result};
use crate::progress::Progress;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Checkpoints to describe.
#[derive(Debug, Clone)]
pub struct InspectJob {
    /// Checkpoint directories, directories searched for them, or Hub checkpoints
    /// (`hf://ORG/NAME[@REVISION]`, fetched into the Hugging Face cache).
    pub(crate) paths: Vec<PathBuf>,
    /// Which revisions of a Hub repository are checkpoints.
    pub(crate) hub: HubOptions,
}

/// What is known of one checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointFacts {
    pub(crate) path: String,
    pub(crate) step: Option<u64>,
    pub(crate) stage: Option<String>,
    pub(crate) schedule: Option<String>,
    pub(crate) architecture: String,
    pub(crate) parameters: usize,
    /// The dtype holding the most parameters.
    pub(crate) dtype: String,
    pub(crate) fingerprint: String,
    pub(crate) meta: Option<CheckpointMeta>,
}

/// What [`run`] tells its caller while it works.
pub enum InspectEvent<'a> {
    /// This many checkpoints were found; each is inspected next.
    Found(usize),
    /// One checkpoint could not be read; the others still are.
    Failed(&'a Error),
    /// One more checkpoint done (read or failed).
    Done,
}

/// The checkpoints read, and how many could not be.
#[derive(Debug)]
pub struct InspectOutcome {
    pub(crate) rows: Vec<CheckpointFacts>,
    pub(crate) failed: usize,
}

impl InspectJob {
    /// Checks that there is something to inspect, and Hub options only with a Hub path.
    pub fn check(&self) -> Result<()> {
        if self.paths.is_empty() {
            return Err(Error::Invalid("no path to inspect".into()));
        }
        self.hub.check(names_hub(&self.paths))
    }
}

/// Finds the checkpoints (`transfer` hears about downloads) and reads each one's facts.
pub fn run(
    job: &InspectJob,
    transfer: &dyn Progress,
    on_event: &mut dyn FnMut(InspectEvent),
) -> Result<InspectOutcome> {
    job.check()?;
    let found = checkpoints(&job.paths, &job.hub, transfer)?;
    if found.is_empty() {
        let searched: Vec<String> = job.paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::Invalid(format!(
            "no checkpoint (config.json + *.safetensors or pytorch_model.bin) found under {}",
            searched.join(", ")
        )));
    }
    on_event(InspectEvent::Found(found.len()));
    let mut rows = Vec::new();
    let mut failed = 0;
    for ckpt in &found {
        match facts(ckpt) {
            Ok(r) => rows.push(r),
            Err(e) => {
                on_event(InspectEvent::Failed(&e));
                failed += 1;
            }
        }
        on_event(InspectEvent::Done);
    }
    Ok(InspectOutcome { rows, failed })
}

fn facts(ckpt: &Checkpoint) -> Result<CheckpointFacts> {
    let cfg = ckpt.config()?;
    let weights = ckpt.weights()?;
    crate::checkpoint::validate_shapes(&cfg, &weights)?;
    let tensors = weights.tensors();
    Ok(CheckpointFacts {
        path: ckpt.name(),
        step: ckpt.step,
        stage: ckpt.stage().map(|s| s.to_string()),
        schedule: ckpt.schedule_kind().map(String::from),
        architecture: cfg.arch.architecture().to_string(),
        parameters: tensors
            .values()
            .map(|t| t.shape.iter().product::<usize>())
            .sum(),
        dtype: dominant_dtype(&tensors),
        fingerprint: crate::checkpoint::fingerprint(&ckpt.dir, &weights)?,
        meta: ckpt.meta.clone(),
    })
}

/// The dtype holding the most parameters (norms are sometimes kept in f32).
fn dominant_dtype(tensors: &BTreeMap<String, StoredTensor>) -> String {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for t in tensors.values() {
        *count
            .entry(format!("{:?}", t.dtype).to_lowercase())
            .or_default() += t.shape.iter().product::<usize>();
    }
    count
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| d)
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_refuses_no_paths() {
        let job = InspectJob {
            paths: vec![],
            hub: HubOptions::default(),
        };
        assert!(job.check().unwrap_err().to_string().contains("no path"));
    }

    #[test]
    fn check_refuses_hub_revisions_without_a_hub_path() {
        let mut job = InspectJob {
            paths: vec!["runs/".into()],
            hub: HubOptions::default(),
        };
        assert!(job.check().is_ok());
        job.hub.revisions = Some("step*".into());
        let e = job.check().unwrap_err().to_string();
        assert!(e.contains("--revisions") && e.contains("hf://"), "{e}");
    }
}

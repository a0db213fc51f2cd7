//! Runs: the store's checkpoints grouped by the directory holding them, each with its
//! stage, schedule and final checkpoint. A WSM merge (`ckpt.json` has `merge`) is an
//! entry of its own, named by its directory, beside the runs it emulates a decay for.

use super::source::{Ckpt, StoreView};
use crate::checkpoint::{step_from_name, ScheduleInfo};
use crate::eval::relative::is_decayed;
pub(crate) use crate::eval::relative::schedule_label;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A run (or a merged checkpoint) as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub name: String,
    /// `pre`, `mid` or `sft` (of its final checkpoint).
    pub(crate) stage: String,
    /// `wso`, `wsd α=0.1`, `wsm (cosine)`...
    pub(crate) label: String,
    pub(crate) schedule: Option<ScheduleInfo>,
    /// Whether the LR decays (the paper's decayed baselines; a merge counts).
    pub(crate) decayed: bool,
    /// Set for a WSM merge: the emulated decay shape.
    pub(crate) merge: Option<String>,
    /// The directory holding the run's checkpoints (its `metrics.jsonl`).
    pub(crate) dir: Option<PathBuf>,
    /// Indices into [`StoreView::checkpoints`], in step order.
    #[serde(skip)]
    pub(crate) checkpoints: Vec<usize>,
    /// The last checkpoint with stored metrics (else the last one).
    #[serde(skip)]
    pub(crate) last: usize,
    pub(crate) final_step: Option<u64>,
    pub(crate) final_fingerprint: String,
}

impl Run {
    /// Its final checkpoint.
    pub(crate) fn final_ckpt<'a>(&self, view: &'a StoreView) -> &'a Ckpt {
        &view.checkpoints[self.last]
    }

    pub(crate) fn is_merge(&self) -> bool {
        self.merge.is_some()
    }
}

/// Every run of the store, by name (merges by their directory's name). Directories of
/// the same name holding different stages (`pre/wso`, `sft/wso`) are told apart by
/// their stage: `wso (sft)`.
pub(crate) fn runs(view: &StoreView) -> Vec<Run> {
    let mut grouped: BTreeMap<(String, &str), Vec<usize>> = BTreeMap::new();
    for (i, c) in view.checkpoints.iter().enumerate() {
        grouped
            .entry((entry_name(c), c.stage()))
            .or_default()
            .push(i);
    }
    let stages = |name: &str| grouped.keys().filter(|(n, _)| n == name).count();
    let named: Vec<(String, Vec<usize>)> = grouped
        .iter()
        .map(|((name, stage), idx)| {
            let name = if stages(name) > 1 {
                format!("{name} ({stage})")
            } else {
                name.clone()
            };
            (name, idx.clone())
        })
        .collect();
    named
        .into_iter()
        .map(|(name, mut idx)| {
            idx.sort_by_key(|&i| (view.checkpoints[i].row.step, i));
            make_run(view, name, idx)
        })
        .collect()
}

/// The run a checkpoint belongs to: its run directory, or for a merge its own
/// directory's name (unless that is a step directory, `runs/wsm/step-300`).
fn entry_name(c: &Ckpt) -> String {
    let merged = c.meta.as_ref().is_some_and(|m| m.merge.is_some());
    if merged {
        let dir = Path::new(&c.row.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        if let Some(dir) = dir.filter(|d| step_from_name(d).is_none()) {
            return dir;
        }
    }
    c.row.run.clone()
}

fn make_run(view: &StoreView, name: String, checkpoints: Vec<usize>) -> Run {
    let last = *checkpoints
        .iter()
        .rev()
        .find(|&&i| !view.checkpoints[i].metrics.is_empty())
        .or(checkpoints.last())
        .expect("a run has a checkpoint");
    let c = &view.checkpoints[last];
    let meta = c.meta.as_ref();
    let merge = meta.and_then(|m| m.merge.as_ref()).map(|m| m.shape.clone());
    let (kind, alpha) = (c.row.schedule.as_deref(), c.row.alpha);
    let label = match &merge {
        Some(shape) => format!("wsm ({shape})"),
        None => schedule_label(kind, alpha),
    };
    Run {
        stage: c.stage().to_string(),
        label,
        schedule: meta.and_then(|m| m.schedule.clone()),
        decayed: merge.is_some() || is_decayed(kind, alpha),
        merge,
        dir: Path::new(&c.row.path).parent().map(Path::to_path_buf),
        final_step: c.row.step,
        final_fingerprint: c.row.fingerprint.clone(),
        checkpoints,
        last,
        name,
    }
}

/// The run holding the checkpoint with `fingerprint`.
pub(crate) fn run_of<'a>(runs: &'a [Run], view: &StoreView, fingerprint: &str) -> Option<&'a Run> {
    runs.iter().find(|r| {
        r.checkpoints
            .iter()
            .any(|&i| view.checkpoints[i].row.fingerprint == fingerprint)
    })
}

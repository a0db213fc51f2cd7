//! Which checkpoints a merge takes: discovery, the step window, and the checks that
//! make their average meaningful (one architecture, the same tensors, known and
//! distinct steps, one stage).

use super::coefficients::list;
use crate::checkpoint::{Checkpoint, StoredTensor, WeightFiles, CONFIG_FILE};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which of the checkpoints found are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Every checkpoint found.
    All,
    /// Those with step >= s_last - STEPS: the merge spans STEPS training steps (the WSM
    /// paper's "merge duration"), both ends included.
    Window(u64),
    /// The last K checkpoints.
    Last(usize),
}

/// A checkpoint taken into a merge, with its weights mapped.
pub struct Source {
    pub checkpoint: Checkpoint,
    pub(crate) weights: WeightFiles,
}

impl Source {
    /// Its step (known for every source).
    pub fn step(&self) -> u64 {
        self.checkpoint.step.expect("sources have known steps")
    }
}

/// The checkpoints of a merge.
pub struct Sources {
    /// The selected checkpoints, in step order.
    pub(crate) selected: Vec<Source>,
    /// The steps of every checkpoint found, selected or not.
    pub(crate) found_steps: Vec<u64>,
    /// Merged checkpoints met while walking a directory: not sources (name one
    /// directly to merge it).
    pub(crate) skipped: Vec<PathBuf>,
}

/// Finds the checkpoints under `inputs`, orders them by step, keeps `selection` and
/// checks that they can be averaged.
pub fn select(inputs: &[PathBuf], selection: Selection) -> Result<Sources> {
    let (found, skipped) = find(inputs)?;
    let found = order_by_step(found)?;
    let found_steps: Vec<u64> = found.iter().map(|c| c.step.unwrap_or(0)).collect();
    let keep = selected_range(&found_steps, selection)?;
    let selected: Vec<Source> = found
        .into_iter()
        .skip(keep)
        .map(|checkpoint| {
            let weights = checkpoint.weights()?;
            Ok(Source {
                checkpoint,
                weights,
            })
        })
        .collect::<Result<_>>()?;
    let newest = selected.last().expect("at least two selected");
    for other in &selected[..selected.len() - 1] {
        check_compatible(other, newest)?;
    }
    check_one_stage(&selected)?;
    Ok(Sources {
        selected,
        found_steps,
        skipped,
    })
}

/// Discovers the checkpoints, leaving out merged ones that a directory walk met.
fn find(inputs: &[PathBuf]) -> Result<(Vec<Checkpoint>, Vec<PathBuf>)> {
    let named: Vec<PathBuf> = inputs.iter().filter_map(|p| canonical(p)).collect();
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    // Hub revisions (hf://ORG/NAME@REV) are fetched into the cache and kept.
    let hub = crate::sources::HubOptions::default();
    for ckpt in crate::sources::checkpoints(inputs, &hub, &crate::progress::Silent)? {
        let merged = ckpt.meta.as_ref().is_some_and(|m| m.merge.is_some());
        let named_directly = canonical(&ckpt.dir).is_some_and(|d| named.contains(&d));
        if merged && !named_directly {
            skipped.push(ckpt.dir);
        } else {
            found.push(ckpt);
        }
    }
    if found.is_empty() {
        let searched: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::bad_value(
            "checkpoints",
            format!(
                "no checkpoint (config.json + *.safetensors or pytorch_model.bin) found under {}",
                searched.join(", ")
            ),
        ));
    }
    Ok((found, skipped))
}

fn canonical(path: &Path) -> Option<PathBuf> {
    let path = if path.is_file() {
        crate::error::parent_dir(path)
    } else {
        path
    };
    std::fs::canonicalize(path).ok()
}

/// Sorts by step; every step must be known and appear once.
fn order_by_step(mut found: Vec<Checkpoint>) -> Result<Vec<Checkpoint>> {
    if let Some(c) = found.iter().find(|c| c.step.is_none()) {
        return Err(Error::bad_file(
            &c.dir,
            "step unknown: no ckpt.json and no step in the directory name (step-N, \
             checkpoint-N, global_stepN, iter_N); a merge orders checkpoints by step",
        ));
    }
    found.sort_by_key(|c| c.step);
    if let Some(w) = found.windows(2).find(|w| w[0].step == w[1].step) {
        return Err(Error::bad_value(
            "checkpoints",
            format!(
                "{} and {} are both at step {}: merge checkpoints of one run (each step once)",
                w[0].dir.display(),
                w[1].dir.display(),
                w[0].step.unwrap_or(0)
            ),
        ));
    }
    Ok(found)
}

/// The index of the first selected checkpoint; at least two must remain.
fn selected_range(steps: &[u64], selection: Selection) -> Result<usize> {
    let last = *steps.last().expect("at least one checkpoint");
    let first = match selection {
        Selection::All => 0,
        Selection::Window(w) => steps
            .iter()
            .position(|&s| s >= last.saturating_sub(w))
            .unwrap_or(steps.len()),
        Selection::Last(k) => steps.len().saturating_sub(k),
    };
    let kept = &steps[first..];
    if kept.len() >= 2 {
        return Ok(first);
    }
    let what = match selection {
        Selection::All => "only one checkpoint was found".to_string(),
        Selection::Window(w) => format!(
            "the window of {w} steps (steps {}..={last}) holds {} checkpoint(s)",
            last.saturating_sub(w),
            kept.len()
        ),
        Selection::Last(k) => format!("--last {k} selects {} checkpoint(s)", kept.len()),
    };
    Err(Error::bad_value(
        "checkpoints",
        format!(
            "{what}, but a merge needs at least 2 (steps found: {})",
            list(steps)
        ),
    ))
}

/// `a` and `b` have one architecture and the same tensors.
fn check_compatible(a: &Source, b: &Source) -> Result<()> {
    let (da, db) = (&a.checkpoint.dir, &b.checkpoint.dir);
    let both = || format!("{} and {}", da.display(), db.display());
    let mut ca = a.checkpoint.config()?;
    let mut cb = b.checkpoint.config()?;
    // The dtype a config names is checked on the tensors themselves below.
    ca.saved_dtype = None;
    cb.saved_dtype = None;
    if ca != cb {
        return Err(Error::bad_value(
            "checkpoints",
            format!(
                "{} and {} describe different models ({}): only checkpoints of one architecture \
             can be merged",
                da.join(CONFIG_FILE).display(),
                db.join(CONFIG_FILE).display(),
                config_difference(&ca.to_json(), &cb.to_json())
            ),
        ));
    }
    let (ta, tb) = (a.weights.tensors(), b.weights.tensors());
    if let Some(problem) = layout_difference(&ta, &tb) {
        return Err(Error::bad_value(
            "checkpoints",
            format!("{}: {problem}", both()),
        ));
    }
    for (name, t) in &ta {
        if !is_float(t.dtype) && a.weights.raw_bytes(name) != b.weights.raw_bytes(name) {
            return Err(Error::bad_value(
                "checkpoints",
                format!(
                    "{}: tensor {name:?} ({:?}) cannot be averaged and differs between them",
                    both(),
                    t.dtype
                ),
            ));
        }
    }
    Ok(())
}

/// The stages the sidecars record (where they do) are all the same.
fn check_one_stage(selected: &[Source]) -> Result<()> {
    let mut staged = selected
        .iter()
        .filter_map(|s| Some((s.checkpoint.stage()?, &s.checkpoint.dir)));
    let Some((first, first_dir)) = staged.next() else {
        return Ok(());
    };
    match staged.find(|(stage, _)| *stage != first) {
        Some((other, dir)) => Err(Error::bad_value(
            "checkpoints",
            format!(
                "{} and {} are from different stages ({first} and {other}): merge checkpoints \
             of one run",
                first_dir.display(),
                dir.display()
            ),
        )),
        None => Ok(()),
    }
}

/// The keys whose values differ, as `hidden_size 32 vs 64`.
fn config_difference(a: &serde_json::Value, b: &serde_json::Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return "different configurations".into();
    };
    let diffs: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k} {v} vs {}",
                b.get(k).unwrap_or(&serde_json::Value::Null)
            )
        })
        .collect();
    if diffs.is_empty() {
        "attention windows or biases differ".into()
    } else {
        diffs.join(", ")
    }
}

/// The first tensor that one side lacks or stores differently.
fn layout_difference(
    a: &BTreeMap<String, StoredTensor>,
    b: &BTreeMap<String, StoredTensor>,
) -> Option<String> {
    if let Some(name) = a.keys().find(|n| !b.contains_key(*n)) {
        return Some(format!("tensor {name:?} is only in the first"));
    }
    if let Some(name) = b.keys().find(|n| !a.contains_key(*n)) {
        return Some(format!("tensor {name:?} is only in the second"));
    }
    a.iter().find_map(|(name, ta)| {
        let tb = &b[name];
        (ta != tb).then(|| {
            format!(
                "tensor {name:?} is {:?} {:?} in the first but {:?} {:?} in the second",
                ta.dtype, ta.shape, tb.dtype, tb.shape
            )
        })
    })
}

/// Dtypes whose values a merge averages; the others (integer buffers) must agree.
pub fn is_float(dtype: safetensors::Dtype) -> bool {
    use safetensors::Dtype;
    matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_include_both_ends() {
        let steps = [100, 200, 300, 400];
        assert_eq!(selected_range(&steps, Selection::All).unwrap(), 0);
        assert_eq!(selected_range(&steps, Selection::Window(200)).unwrap(), 1);
        assert_eq!(selected_range(&steps, Selection::Window(199)).unwrap(), 2);
        assert_eq!(
            selected_range(&steps, Selection::Window(10_000)).unwrap(),
            0
        );
        assert_eq!(selected_range(&steps, Selection::Last(3)).unwrap(), 1);
        assert_eq!(selected_range(&steps, Selection::Last(9)).unwrap(), 0);
        let err = selected_range(&steps, Selection::Window(99))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("301..=400") && err.contains("100, 200, 300, 400"),
            "{err}"
        );
        assert!(selected_range(&steps, Selection::Last(1)).is_err());
        assert!(selected_range(&[7], Selection::All).is_err());
    }
}

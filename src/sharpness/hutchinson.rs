//! Hutchinson's trace estimator: `Tr(H) = E[z^T H z]` for Rademacher `z`, estimated by
//! the mean over probes, with its standard error and the running mean after each
//! probe (how a user sees it converge).
//!
//! Each probe also gives every block's trace at no extra cost: `z^T H z` is the sum
//! over parameter blocks `B` of `z_B^T (H z)_B`, and `E[z_B^T (H z)_B] = Tr(H_BB)`
//! (the off-diagonal blocks average out), so the same probes estimate the trace of the
//! embeddings, each layer's attention and MLP, the norms and the head.
//!
//! ```no_run
//! # use ckpt::sharpness::hutchinson::{hutchinson_trace, BlockMap, TraceOptions};
//! # fn run(h: &ckpt::sharpness::hvp::Hessian<dyn ckpt::sharpness::hvp::Objective>,
//! #        shapes: &[Vec<usize>]) -> ckpt::Result<()> {
//! let opts = TraceOptions { probes: 50, seed: 0, rel_tol: None, min_probes: 10 };
//! let map = BlockMap::new(&vec!["all"; shapes.len()]);
//! let est = hutchinson_trace(h, shapes, &map, &opts, Default::default(), &mut |_, _| Ok(()))?;
//! println!("Tr(H) = {} +- {}", est.mean(), est.stderr());
//! # Ok(()) }
//! ```

use super::hvp::{Hessian, Objective};
use super::vector::rademacher;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// How many probes, drawn from which seed, and when to stop early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceOptions {
    /// Probes to draw at most.
    pub probes: usize,
    /// Probe `i` is `rademacher(seed, i)`.
    pub seed: u64,
    /// Stop once `stderr / |mean|` falls below this (after `min_probes`).
    pub rel_tol: Option<f64>,
    /// Probes drawn before the tolerance is looked at.
    pub min_probes: usize,
}

/// The samples `z_i^T H z_i` drawn so far and what they say about the trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceEstimate {
    pub samples: Vec<f64>,
    /// Each block's part of every sample (`z_B^T (H z)_B`; the parts of a probe sum to
    /// its sample). Empty when the probes were measured without blocks (a run resumed
    /// from an older version's progress).
    #[serde(default)]
    pub blocks: Vec<BlockSamples>,
}

/// One block's parts of the probes: Hutchinson's estimate of the block's trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockSamples {
    pub name: String,
    pub samples: Vec<f64>,
}

/// Which block each parameter belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockMap {
    /// Block names, in the order of first appearance.
    pub names: Vec<String>,
    /// For each parameter, the index of its block in `names`.
    pub of_param: Vec<usize>,
}

impl BlockMap {
    /// The map of parameters labelled `labels` (in parameter order).
    pub fn new<L: ToString>(labels: &[L]) -> Self {
        let mut names: Vec<String> = Vec::new();
        let of_param = labels
            .iter()
            .map(|label| {
                let label = label.to_string();
                match names.iter().position(|n| *n == label) {
                    Some(i) => i,
                    None => {
                        names.push(label);
                        names.len() - 1
                    }
                }
            })
            .collect();
        Self { names, of_param }
    }

    /// Per-parameter parts summed by block.
    pub(crate) fn sum(&self, parts: &[f64]) -> Vec<f64> {
        let mut sums = vec![0.0; self.names.len()];
        for (&b, part) in self.of_param.iter().zip(parts) {
            sums[b] += part;
        }
        sums
    }
}

impl TraceEstimate {
    /// No probes yet, with empty samples for `blocks`.
    pub(crate) fn empty(blocks: &BlockMap) -> Self {
        Self {
            samples: Vec::new(),
            blocks: blocks
                .names
                .iter()
                .map(|name| BlockSamples {
                    name: name.clone(),
                    samples: Vec::new(),
                })
                .collect(),
        }
    }

    /// Adds a probe from its per-parameter parts.
    pub(crate) fn push(&mut self, parts: &[f64], map: &BlockMap) {
        self.samples.push(parts.iter().sum());
        for (block, part) in self.blocks.iter_mut().zip(map.sum(parts)) {
            block.samples.push(part);
        }
    }

    /// Whether every block has a part of every probe, under the names of `map`.
    pub(crate) fn has_blocks_of(&self, map: &BlockMap) -> bool {
        self.blocks.len() == map.names.len()
            && self
                .blocks
                .iter()
                .zip(&map.names)
                .all(|(b, name)| b.name == *name && b.samples.len() == self.samples.len())
    }

    /// The first `n` probes.
    pub fn truncate(&mut self, n: usize) {
        self.samples.truncate(n);
        for b in &mut self.blocks {
            b.samples.truncate(n);
        }
    }

    /// Number of probes.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True before the first probe.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The estimate: the mean of the samples (NaN without any).
    pub fn mean(&self) -> f64 {
        mean(&self.samples)
    }

    /// The standard error of the mean (NaN below two samples).
    pub fn stderr(&self) -> f64 {
        stderr(&self.samples)
    }

    /// The mean after each probe.
    pub fn running_means(&self) -> Vec<f64> {
        let mut sum = 0.0;
        self.samples
            .iter()
            .enumerate()
            .map(|(i, x)| {
                sum += x;
                sum / (i + 1) as f64
            })
            .collect()
    }

    /// Whether the relative standard error is below `rel_tol` after `min_probes`.
    pub(crate) fn converged(&self, opts: &TraceOptions) -> bool {
        match opts.rel_tol {
            Some(tol) if self.len() >= opts.min_probes.max(2) => {
                self.stderr() <= tol * self.mean().abs()
            }
            _ => false,
        }
    }
}

/// The mean of `samples` (NaN without any).
pub fn mean(samples: &[f64]) -> f64 {
    samples.iter().sum::<f64>() / samples.len() as f64
}

/// The standard error of the mean: sample standard deviation over `sqrt(n)` (NaN below
/// two samples).
pub fn stderr(samples: &[f64]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let m = mean(samples);
    let var = samples.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (var / n).sqrt()
}

/// Draws probes `done.len()..opts.probes` (the first ones were drawn by an interrupted
/// run and are given back in `done`) and returns all the samples, each split by the
/// blocks of `map`. Probes resumed without their blocks leave the estimate without
/// blocks. `on_probe` sees each new probe's index and the estimate so far, after it is
/// added (to save progress).
pub fn hutchinson_trace<O: Objective + ?Sized>(
    hessian: &Hessian<O>,
    shapes: &[Vec<usize>],
    map: &BlockMap,
    opts: &TraceOptions,
    done: TraceEstimate,
    on_probe: &mut dyn FnMut(usize, &TraceEstimate) -> Result<()>,
) -> Result<TraceEstimate> {
    let theta = hessian.theta();
    let (dtype, device) = match theta.first() {
        Some(t) => (t.dtype(), t.device().clone()),
        None => return Ok(TraceEstimate::default()),
    };
    let mut est = done;
    est.truncate(opts.probes);
    if est.is_empty() {
        est = TraceEstimate::empty(map);
    } else if !est.has_blocks_of(map) {
        tracing::warn!("the probes resumed have no per-block parts; no block traces this time");
        est.blocks.clear();
    }
    while est.len() < opts.probes && !est.converged(opts) {
        let i = est.len();
        let z = rademacher(shapes, opts.seed, i as u64, dtype, &device)?;
        est.push(&hessian.quadratic_form_parts(&z)?, map);
        on_probe(i, &est)?;
    }
    Ok(est)
}

/// Probes `range` alone: one shard's block of a checkpoint's probes, equal to the same
/// probes of [`hutchinson_trace`] (probe `i` is `rademacher(seed, i)` wherever it runs).
pub(crate) fn hutchinson_block<O: Objective + ?Sized>(
    hessian: &Hessian<O>,
    shapes: &[Vec<usize>],
    map: &BlockMap,
    seed: u64,
    range: std::ops::Range<usize>,
    on_probe: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<TraceEstimate> {
    let mut est = TraceEstimate::empty(map);
    let Some(first) = hessian.theta().first() else {
        return Ok(est);
    };
    let (dtype, device) = (first.dtype(), first.device().clone());
    for i in range {
        let z = rademacher(shapes, seed, i as u64, dtype, &device)?;
        est.push(&hessian.quadratic_form_parts(&z)?, map);
        on_probe(i)?;
    }
    Ok(est)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_stderr_and_running_means() {
        let est = TraceEstimate {
            samples: vec![1.0, 3.0, 2.0, 6.0],
            blocks: vec![],
        };
        assert_eq!(est.mean(), 3.0);
        // Sample variance (4 + 0 + 1 + 9) / 3 = 14/3; stderr sqrt(14/3 / 4).
        assert!((est.stderr() - (14.0f64 / 12.0).sqrt()).abs() < 1e-15);
        assert_eq!(est.running_means(), [1.0, 2.0, 2.0, 3.0]);
        assert!(TraceEstimate::default().mean().is_nan());
        let opts = |tol| TraceOptions {
            probes: 10,
            seed: 0,
            rel_tol: Some(tol),
            min_probes: 3,
        };
        assert!(est.converged(&opts(0.4)));
        assert!(!est.converged(&opts(0.3)));
    }

    #[test]
    fn blocks_split_each_probe_and_sum_to_it() {
        let map = BlockMap::new(&["embed", "attn", "attn", "head"]);
        assert_eq!(map.names, ["embed", "attn", "head"]);
        assert_eq!(map.of_param, [0, 1, 1, 2]);
        let mut est = TraceEstimate::empty(&map);
        est.push(&[1.0, 2.0, 3.0, -1.0], &map);
        est.push(&[0.5, 0.0, 1.0, 2.0], &map);
        assert_eq!(est.samples, [5.0, 3.5]);
        assert_eq!(est.blocks[1].samples, [5.0, 1.0]);
        assert!(est.has_blocks_of(&map));
        assert!(!est.has_blocks_of(&BlockMap::new(&["embed", "head"])));
        est.truncate(1);
        assert_eq!((est.len(), est.blocks[2].samples.len()), (1, 1));
    }
}

//! Splitting a sweep over processes with no coordinator: `--shard I/N` or `--shard auto`
//! (Slurm job arrays, Kubernetes Indexed Jobs, torchrun).
//!
//! Every shard lists the same units of work from the same inputs and assigns them
//! the same way (longest first, each to the least loaded shard, ties to the lowest
//! index), so N processes started with the same command line share the work without
//! talking to each other. Each writes its own store (`ckpt.shard-I-of-N.sqlite`,
//! SQLite must not be shared over NFS); `ckpt store merge` joins them.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// This process's part of the work: shard `index` (from 0) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub(crate) index: usize,
    pub(crate) count: usize,
}

impl Shard {
    /// Parses `I/N` (0 <= I < N), or `auto`: the scheduler's variables, read through
    /// `env` (`std::env::var` in the binary; a map in tests). `shards` is `--shards`,
    /// which Kubernetes needs (an Indexed Job exports the index, not the count).
    pub fn parse(
        spec: &str,
        shards: Option<usize>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        if spec.trim() == "auto" {
            return Self::from_env(shards, env);
        }
        let bad = || {
            Error::bad_value(
                "--shard",
                format!("--shard {spec:?}: expected I/N with 0 <= I < N (e.g. 0/4), or auto"),
            )
        };
        let (i, n) = spec.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        Self::new(index, count).map_err(|_| bad())
    }

    fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::bad_value(
                "--shard",
                format!("shard {index} of {count}: the index must be below the count"),
            ));
        }
        Ok(Self { index, count })
    }

    /// Slurm (`SLURM_ARRAY_TASK_ID` - `SLURM_ARRAY_TASK_MIN` of
    /// `SLURM_ARRAY_TASK_COUNT`), then Kubernetes (`JOB_COMPLETION_INDEX` of
    /// `--shards`), then torchrun (`RANK` of `WORLD_SIZE`).
    fn from_env(shards: Option<usize>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let number = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    Error::bad_value(
                        "--shard",
                        format!("--shard auto: {name}={v:?} is not a number"),
                    )
                }),
            }
        };
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let count = number("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                Error::bad_value(
                    "--shard",
                    "--shard auto: SLURM_ARRAY_TASK_ID is set but not SLURM_ARRAY_TASK_COUNT",
                )
            })?;
            let index = id.checked_sub(min).ok_or_else(|| {
                Error::bad_value(
                    "--shard",
                    format!(
                    "--shard auto: SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}"
                ),
                )
            })?;
            return Self::new(index, count).map_err(|e| with_source(e, "Slurm"));
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = shards.ok_or_else(|| {
                Error::bad_value(
                    "--shard",
                    "--shard auto: a Kubernetes Indexed Job exports JOB_COMPLETION_INDEX but not \
                     the count; give --shards N (the Job's completions)",
                )
            })?;
            return Self::new(index, count).map_err(|e| with_source(e, "Kubernetes"));
        }
        if let (Some(rank), Some(world)) = (number("RANK")?, number("WORLD_SIZE")?) {
            return Self::new(rank, world).map_err(|e| with_source(e, "torchrun"));
        }
        Err(Error::bad_value(
            "--shard",
            "--shard auto: no scheduler variables found (SLURM_ARRAY_TASK_ID, \
             JOB_COMPLETION_INDEX or RANK/WORLD_SIZE); give --shard I/N",
        ))
    }

    /// This shard's store beside `store`: `DIR/NAME.shard-I-of-N.sqlite`.
    pub fn store_path(&self, store: &Path) -> PathBuf {
        let stem = store
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ckpt".into());
        store.with_file_name(format!(
            "{stem}.shard-{}-of-{}.sqlite",
            self.index, self.count
        ))
    }

    /// Which of `costs` (one per unit of work, in the order every shard lists them)
    /// this shard runs: longest first to the least loaded shard, ties to the lowest.
    pub fn select(&self, costs: &[u64]) -> Vec<bool> {
        assign(costs, self.count)
            .into_iter()
            .map(|s| s == self.index)
            .collect()
    }
}

fn with_source(e: Error, source: &str) -> Error {
    Error::bad_value("--shard", format!("--shard auto ({source}): {e}"))
}

/// The shard of each unit: units by cost, largest first (ties by position), each to
/// the shard with the least cost so far (ties to the lowest index).
pub fn assign(costs: &[u64], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].cmp(&costs[a]).then(a.cmp(&b)));
    let mut load = vec![0u64; count.max(1)];
    let mut shard_of = vec![0; costs.len()];
    for unit in order {
        let lightest = (0..load.len()).min_by_key(|&s| (load[s], s)).unwrap_or(0);
        load[lightest] = load[lightest].saturating_add(costs[unit].max(1));
        shard_of[unit] = lightest;
    }
    shard_of
}

/// The most loaded shard's cost over the mean: 1.0 is a perfect balance.
pub fn imbalance(costs: &[u64], count: usize) -> f64 {
    let shard_of = assign(costs, count);
    let mut load = vec![0u64; count.max(1)];
    for (unit, s) in shard_of.iter().enumerate() {
        load[*s] += costs[unit].max(1);
    }
    let total: u64 = load.iter().sum();
    let max = load.iter().copied().max().unwrap_or(0);
    if total == 0 {
        1.0
    } else {
        max as f64 / (total as f64 / load.len() as f64)
    }
}

/// `cuda:auto`: the GPU of this process's `LOCAL_RANK` (torchrun, Slurm's
/// `SLURM_LOCALID`), 0 without one; any other spec unchanged.
pub fn resolve_device(spec: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    if !spec.trim().eq_ignore_ascii_case("cuda:auto") {
        return Ok(spec.to_string());
    }
    for name in ["LOCAL_RANK", "SLURM_LOCALID"] {
        if let Some(v) = env(name) {
            let rank: usize = v.trim().parse().map_err(|_| {
                Error::bad_value(
                    "--device",
                    format!("--device cuda:auto: {name}={v:?} is not a number"),
                )
            })?;
            return Ok(format!("cuda:{rank}"));
        }
    }
    Ok("cuda:0".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn explicit_and_scheduler_shards() {
        let none = env(&[]);
        assert_eq!(
            Shard::parse("2/3", None, &none).unwrap(),
            Shard { index: 2, count: 3 }
        );
        for bad in ["3/3", "1/0", "x/2", "1", "-1/2", ""] {
            assert!(Shard::parse(bad, None, &none).is_err(), "{bad}");
        }
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert_eq!(
            Shard::parse("auto", None, &slurm).unwrap(),
            Shard { index: 1, count: 3 }
        );
        let k8s = env(&[("JOB_COMPLETION_INDEX", "2")]);
        assert!(Shard::parse("auto", None, &k8s)
            .unwrap_err()
            .to_string()
            .contains("--shards"));
        assert_eq!(
            Shard::parse("auto", Some(4), &k8s).unwrap(),
            Shard { index: 2, count: 4 }
        );
        let torchrun = env(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")]);
        assert_eq!(
            Shard::parse("auto", None, &torchrun).unwrap(),
            Shard { index: 1, count: 2 }
        );
        assert!(Shard::parse("auto", None, &none).is_err());
        assert_eq!(resolve_device("cuda:auto", &torchrun).unwrap(), "cuda:1");
        assert_eq!(resolve_device("cuda:auto", &none).unwrap(), "cuda:0");
        assert_eq!(resolve_device("cpu", &torchrun).unwrap(), "cpu");
    }

    #[test]
    fn every_unit_goes_to_exactly_one_shard_and_loads_balance() {
        let costs: Vec<u64> = (0..40).map(|i| (i * 37 % 11 + 1) * 100).collect();
        for count in 1..6 {
            let shards: Vec<Vec<bool>> = (0..count)
                .map(|index| Shard { index, count }.select(&costs))
                .collect();
            for unit in 0..costs.len() {
                assert_eq!(shards.iter().filter(|s| s[unit]).count(), 1);
            }
            assert!(
                imbalance(&costs, count) < 1.1,
                "{count}: {}",
                imbalance(&costs, count)
            );
        }
        // The same inputs give the same partition.
        assert_eq!(assign(&costs, 3), assign(&costs, 3));
    }

    #[test]
    fn shard_stores_sit_beside_the_main_store() {
        let s = Shard { index: 0, count: 4 };
        assert_eq!(
            s.store_path(Path::new("out/ckpt.sqlite")),
            PathBuf::from("out/ckpt.shard-0-of-4.sqlite")
        );
    }
}

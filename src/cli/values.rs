//! Value parsers for flags whose range clap's own parsers do not express: each one
//! rejects the value at parse time with clap's usage error (exit 2), naming the flag
//! and its allowed range.

/// A count of at least 1 (`--limit 0` would do nothing, silently).
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (a whole number of at least 1)")),
    }
}

/// A count in `lo..=hi`.
pub(crate) fn usize_in(
    lo: usize,
    hi: usize,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number from {lo} to {hi}, got {s:?}"
        )),
    }
}

/// `--store-timeout SECS`: how long to wait for another process's lock on the store.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreTimeout {
    /// Seconds to wait while another process holds the results store locked.
    #[arg(long = "store-timeout", value_name = "SECS", default_value_t = 60, value_parser = at_least_one)]
    secs: usize,
}

impl StoreTimeout {
    pub(crate) fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.secs as u64)
    }
}

/// A parser for a finite number in `(lo, hi]`. `lo` is excluded: the flags it serves
/// (tolerances, steps) mean nothing at zero or below.
pub(crate) fn f64_above(
    lo: f64,
    hi: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number"))?;
        if v.is_finite() && v > lo && v <= hi {
            Ok(v)
        } else {
            Err(format!("must be in ({lo}, {hi}], got {s}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let p = usize_in(0, 20);
        assert_eq!(p("20"), Ok(20));
        assert!(p("21").unwrap_err().contains("from 0 to 20"));
    }

    #[test]
    fn counts() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").unwrap_err().contains("at least 1"));
        assert!(at_least_one("-1").is_err() && at_least_one("").is_err());
    }

    #[test]
    fn numbers_outside_the_range_are_refused_with_it() {
        let p = f64_above(0.0, 1.0);
        assert_eq!(p("0.5"), Ok(0.5));
        assert_eq!(p("1"), Ok(1.0));
        for bad in ["0", "-1e-3", "1.5", "nan", "inf"] {
            let e = p(bad).unwrap_err();
            assert!(e.contains("(0, 1]"), "{bad}: {e}");
        }
        assert!(p("x").unwrap_err().contains("not a number"));
    }
}

/// `--shard I/N|auto` and `--shards N`: this process's part of a sweep
/// ([`crate::shard`]).
#[derive(Debug, clap::Args, Clone, Default)]
pub(crate) struct ShardArgs {
    /// Run shard I of N (I from 0) of the (checkpoint, task) units, into its own store
    /// beside --store (NAME.shard-I-of-N.sqlite; join them with `ckpt store merge`).
    /// `auto` reads SLURM_ARRAY_TASK_ID/_MIN/_COUNT, JOB_COMPLETION_INDEX (with
    /// --shards) or RANK/WORLD_SIZE.
    #[arg(long, value_name = "I/N|auto", value_parser = shard_spec)]
    pub(crate) shard: Option<String>,
    /// How many shards a Kubernetes Indexed Job has (its `completions`), for --shard auto.
    #[arg(long, value_name = "N", requires = "shard", value_parser = at_least_one)]
    pub(crate) shards: Option<usize>,
}

impl ShardArgs {
    /// The shard these flags name, reading the scheduler's variables for `auto`.
    pub(crate) fn resolve(&self) -> crate::error::Result<Option<crate::shard::Shard>> {
        self.shard
            .as_deref()
            .map(|spec| crate::shard::Shard::parse(spec, self.shards, &|k| std::env::var(k).ok()))
            .transpose()
    }
}

/// `auto`, or `I/N` with 0 <= I < N (checked at parse time: a usage error).
fn shard_spec(s: &str) -> Result<String, String> {
    if s.trim() == "auto" {
        return Ok(s.to_string());
    }
    crate::shard::Shard::parse(s, None, &|_| None)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// Which revisions of `hf://ORG/NAME` are checkpoints ([`crate::sources`]).
#[derive(Debug, clap::Args, Clone, Default)]
pub(crate) struct HubSourceArgs {
    /// With hf://ORG/NAME: every branch whose name matches, one checkpoint each; a glob
    /// ('step*') or a regex ('^stage1-step\d+').
    #[arg(long, value_name = "GLOB|REGEX")]
    pub(crate) revisions: Option<String>,
    /// A regex whose first group is the step in a revision name, for names ckpt does
    /// not read itself (stepN, step-N, ...-stepN-tokensNB, ckpt_N, iter_N, global_stepN).
    #[arg(long, value_name = "REGEX")]
    pub(crate) step_from: Option<String>,
}

impl HubSourceArgs {
    /// How Hub sources are read.
    pub(crate) fn options(&self) -> crate::sources::HubOptions {
        crate::sources::HubOptions {
            revisions: self.revisions.clone(),
            step_from: self.step_from.clone(),
        }
    }
}

/// [`HubSourceArgs`], and what a sweep keeps on disk ([`crate::hub::sweep`]).
#[derive(Debug, clap::Args, Clone, Default)]
pub(crate) struct HubArgs {
    #[command(flatten)]
    pub(crate) sources: HubSourceArgs,
    /// Keep every checkpoint downloaded (default: weights fetched for this sweep are
    /// removed from the Hugging Face cache once their results are stored).
    #[arg(long)]
    pub(crate) keep_downloads: bool,
    /// Disk the weights fetched for this sweep may take at once (50GB by default).
    #[arg(long, value_name = "SIZE", value_parser = byte_size, conflicts_with = "keep_downloads")]
    pub(crate) cache_budget: Option<u64>,
}

impl HubArgs {
    /// How Hub sources are read.
    pub(crate) fn options(&self) -> crate::sources::HubOptions {
        self.sources.options()
    }

    /// What a sweep keeps on disk.
    pub(crate) fn retention(&self) -> crate::hub::sweep::Retention {
        use crate::hub::sweep::{Retention, DEFAULT_BUDGET};
        if self.keep_downloads {
            Retention::KeepAll
        } else {
            Retention::Budget(self.cache_budget.unwrap_or(DEFAULT_BUDGET))
        }
    }
}

/// A size in bytes: `50GB`, `500MiB`, `1000`; at least one byte.
fn byte_size(s: &str) -> Result<u64, String> {
    match crate::hub::sweep::parse_size(s)? {
        0 => Err("must be at least 1 byte".into()),
        n => Ok(n),
    }
}

/// How a checkpoint runs: lm-eval's tokenization flags, the device and the number type.
#[derive(Debug, clap::Args, Clone)]
pub(crate) struct ModelArgs {
    #[command(flatten)]
    pub(crate) tokenization: super::eval::TokenizationArgs,
    /// cpu, cuda or cuda:N.
    #[arg(long, env = "CKPT_DEVICE", default_value = "cpu")]
    pub(crate) device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub(crate) dtype: String,
}

//! [`MergeStoresJob`]: a `ckpt store merge` as typed values, checked once, and
//! [`merge_stores`], which joins the stores exactly.

use super::{merge, store_files, MergeSummary};
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Stores (the shards of a sweep) to join into one.
#[derive(Debug, Clone)]
pub struct MergeStoresJob {
    /// Store files, or directories (every `*.sqlite` in them).
    pub(crate) sources: Vec<PathBuf>,
    /// The store merged into: created if missing, else rewritten atomically.
    pub into: PathBuf,
    /// How long to wait while another process holds a store locked.
    pub(crate) store_timeout: Duration,
}

impl MergeStoresJob {
    /// Checks the values a library caller could get wrong (the flags cannot).
    pub fn check(&self) -> Result<()> {
        if self.sources.is_empty() {
            return Err(Error::bad_value(
                "SOURCE",
                "no store to merge (SOURCE: a file or a directory of *.sqlite)",
            ));
        }
        check_store_timeout(self.store_timeout)?;
        Ok(())
    }
}

/// Refuses a `--store-timeout` under a second: the flag counts whole seconds, and
/// not waiting at all fails at the first lock another process holds.
pub(crate) fn check_store_timeout(wait: Duration) -> Result<()> {
    if wait < Duration::from_secs(1) {
        return Err(Error::bad_value(
            "--store-timeout",
            format!(
                "--store-timeout must be at least 1 (got {})",
                wait.as_secs_f64()
            ),
        ));
    }
    Ok(())
}

/// Merges the stores `job` names into its target, exactly: a key holding different
/// results in two stores is an error naming both.
pub fn merge_stores(job: &MergeStoresJob) -> Result<MergeSummary> {
    job.check()?;
    let sources = store_files(&job.sources)?;
    merge(&sources, &job.into, job.store_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> MergeStoresJob {
        MergeStoresJob {
            sources: vec!["a.sqlite".into()],
            into: "m.sqlite".into(),
            store_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn check_refuses_a_zero_store_timeout() {
        assert!(job().check().is_ok());
        let bad = MergeStoresJob {
            store_timeout: Duration::ZERO,
            ..job()
        };
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("--store-timeout"));
    }

    #[test]
    fn check_refuses_a_merge_of_nothing() {
        let none = MergeStoresJob {
            sources: vec![],
            ..job()
        };
        assert!(none.check().unwrap_err().to_string().contains("no store"));
    }
}

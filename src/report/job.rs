//! [`ReportJob`]: a `ckpt report` as typed values, checked once, and [`run`], which
//! reads the stores, builds the report and writes its files.

use super::{build, open_stores, write, Format, Report, ReportOptions};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One report from one or more results stores.
#[derive(Debug, Clone)]
pub struct ReportJob {
    /// Store files, or directories whose `*.sqlite` files are read; several are
    /// merged, exactly, into a temporary store.
    pub(crate) stores: Vec<PathBuf>,
    /// The baseline and the judged task that picks the SFT learning rate.
    pub(crate) options: ReportOptions,
    /// Formats to write; empty: every one.
    pub(crate) formats: Vec<Format>,
    /// Output directory; default: `report/` beside the store.
    pub(crate) out: Option<PathBuf>,
    /// How long to wait while another process holds a store locked.
    pub(crate) store_timeout: Duration,
}

/// A report built and written.
#[derive(Debug)]
pub struct ReportOutcome {
    pub report: Report,
    /// The directory written to.
    pub out: PathBuf,
    /// Every file written.
    pub files: Vec<PathBuf>,
}

impl ReportJob {
    /// Checks the values a library caller could get wrong (the flags cannot).
    pub(crate) fn check(&self) -> Result<()> {
        if self.stores.is_empty() {
            return Err(Error::bad_value(
                "STORE",
                "no results store given (STORE: a file or a directory of *.sqlite)",
            ));
        }
        crate::store::check_store_timeout(self.store_timeout)?;
        Ok(())
    }

    /// The formats to write.
    fn formats(&self) -> Vec<Format> {
        if self.formats.is_empty() {
            Format::ALL.to_vec()
        } else {
            self.formats.clone()
        }
    }
}

/// Reads the stores as one, builds the report and writes it in every format asked for.
pub fn run(job: &ReportJob) -> Result<ReportOutcome> {
    job.check()?;
    let store = open_stores(&job.stores, job.store_timeout)?;
    let report = build(&store, &job.options)?;
    let out = job.out.clone().unwrap_or_else(|| default_out(store.path()));
    let files = write(&report, &out, &job.formats())?;
    Ok(ReportOutcome { report, out, files })
}

/// `report/` beside the store.
fn default_out(store: &Path) -> PathBuf {
    store
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join("report"))
        .unwrap_or_else(|| PathBuf::from("report"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ReportJob {
        ReportJob {
            stores: vec![PathBuf::from("ckpt.sqlite")],
            options: ReportOptions::default(),
            formats: vec![],
            out: None,
            store_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn check_refuses_a_report_of_no_store() {
        let none = ReportJob {
            stores: vec![],
            ..job()
        };
        assert!(none
            .check()
            .unwrap_err()
            .to_string()
            .contains("no results store"));
    }

    #[test]
    fn every_format_by_default_and_the_output_beside_the_store() {
        assert_eq!(job().formats(), Format::ALL.to_vec());
        assert_eq!(
            default_out(Path::new("runs/ckpt.sqlite")),
            Path::new("runs/report")
        );
        assert_eq!(default_out(Path::new("ckpt.sqlite")), Path::new("report"));
    }
}

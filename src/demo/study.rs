//! A study: the demo run with one seed or several, each in its own folder, and with
//! several, every finding pooled over the seeds ("holds in k of N").

use super::pipeline::{self, DemoConfig, Outcome, Progress};
use crate::error::Result;
use crate::report::pooled::{self, PooledFinding};
use std::path::PathBuf;

/// Every seed's run, and with several seeds the pooled findings.
#[derive(Debug)]
pub struct Study {
    pub runs: Vec<Outcome>,
    pub(crate) pooled: Option<Pooled>,
}

/// The findings pooled over the seeds, as written to `DIR/findings.{md,json}`.
#[derive(Debug)]
pub struct Pooled {
    pub findings: Vec<PooledFinding>,
    pub(crate) markdown: String,
    /// `DIR/findings.md`.
    pub(crate) path: PathBuf,
}

/// Runs the demo once per seed (each resuming where it stopped), then pools the
/// findings when there are several seeds.
pub fn run(cfg: &DemoConfig, progress: &dyn Progress) -> Result<Study> {
    cfg.check()?;
    let mut runs = Vec::new();
    for i in 0..cfg.seeds {
        let one = cfg.for_seed(i);
        if cfg.seeds > 1 {
            progress.seed(i + 1, cfg.seeds, one.seed);
        }
        let result = pipeline::run(&one, progress);
        progress.seed_ended(result.as_ref().ok());
        runs.push(result?);
    }
    let pooled = match cfg.seeds {
        1 => None,
        _ => Some(pool(cfg, &runs)?),
    };
    Ok(Study { runs, pooled })
}

fn pool(cfg: &DemoConfig, runs: &[Outcome]) -> Result<Pooled> {
    let per_seed: Vec<_> = runs.iter().map(|r| r.findings.clone()).collect();
    let findings = pooled::pool(&per_seed);
    let markdown = pooled::markdown(&findings);
    let path = cfg.dir.join("findings.md");
    crate::atomic_file::write_bytes(&path, markdown.as_bytes())?;
    crate::atomic_file::write_json(&cfg.dir.join("findings.json"), &findings)?;
    Ok(Pooled {
        findings,
        markdown,
        path,
    })
}

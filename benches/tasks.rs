//! Building requests: every task of the paper's suites (`pt`, `mt`, `sft`: 106 tasks)
//! turned into prompts and requests from synthetic data, as `ckpt eval` does before
//! any checkpoint is scored (loading the JSONL, preprocessing, templates, few-shot
//! sampling). No model runs.
//!
//! `cargo bench --bench tasks` writes the synthetic data (`CKPT_BENCH_DOCS` docs per
//! split, default 200) into a temporary directory, then times `build_task` over all
//! tasks of each suite, best of three. Prints one JSON line per suite.

use ckpt::eval::catalog::Catalog;
use ckpt::eval::data::DataSources;
use ckpt::eval::task::build_task;
use ckpt::synth::tasks::{write_task_data, SyntheticConfig, FEWSHOT_DIR};
use std::time::Instant;

#[allow(dead_code)] // the benchmark model is not used here
mod common;
use common::env_usize;

fn main() -> anyhow::Result<()> {
    let docs = env_usize("CKPT_BENCH_DOCS", 200);
    let catalog = Catalog::builtin()?;
    let tmp = tempfile::tempdir()?;
    let specs: Vec<_> = catalog.entries().iter().map(|e| e.spec.clone()).collect();
    let cfg = SyntheticConfig {
        docs,
        ..SyntheticConfig::default()
    };
    write_task_data(tmp.path(), &specs, &cfg)?;
    let sources = DataSources {
        data_dir: Some(tmp.path().to_path_buf()),
        ..Default::default()
    };
    let fewshot = tmp.path().join(FEWSHOT_DIR);
    for suite in ["pt", "mt", "sft"] {
        let specs = catalog.suite(suite)?;
        let mut best = f64::INFINITY;
        let (mut n_docs, mut n_requests, mut n_chars) = (0, 0, 0);
        for _ in 0..3 {
            let start = Instant::now();
            (n_docs, n_requests, n_chars) = (0, 0, 0);
            for spec in &specs {
                let task = build_task(spec, &sources, None, Some(&fewshot))?;
                n_docs += task.requests.len();
                for r in &task.requests {
                    n_requests += r.requests.len();
                    n_chars += r.prompt.len();
                }
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "{}",
            serde_json::json!({
                "suite": suite,
                "tasks": specs.len(),
                "docs": n_docs,
                "requests": n_requests,
                "prompt_mb": n_chars as f64 / 1e6,
                "seconds": best,
                "docs_per_s": n_docs as f64 / best,
                "requests_per_s": n_requests as f64 / best,
            })
        );
    }
    Ok(())
}

//! `ckpt report` from a store of 50 checkpoints x 20 tasks: five pre-training runs
//! (WSO, WSD, cosine, linear, a second WSD) of ten checkpoints each, every checkpoint
//! scored on 20 multiple-choice tasks of `CKPT_BENCH_DOCS` docs (default 200, per-doc
//! samples stored) plus validation loss, and measured for sharpness; two judged SFT
//! runs per base.
//!
//! `cargo bench --bench report` writes the store through the `Store` API into a
//! temporary directory, then times, best of three: `report::build` (reading the store,
//! headlines, paired tests on the final checkpoints' items, SFT picks, findings,
//! chart data) and `report::write`, for the data formats alone (csv, json) and for all
//! of them (markdown and HTML need the PNG figures: drawing them is most of the time).
//! Prints one JSON line per step.

use ckpt::checkpoint::{CheckpointMeta, ParentRef, ScheduleInfo, Stage};
use ckpt::report::{build, write, Format, ReportOptions};
use ckpt::sharpness::{SharpnessConfig, SharpnessResult};
use ckpt::store::{CheckpointRow, MetricRow, SharpnessRecord, Store};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

#[allow(dead_code)] // the benchmark model is not used here
mod common;
use common::env_usize;

const TASKS: usize = 20;
const STEPS: u64 = 10;
const RUNS: [(&str, &str, f64); 5] = [
    ("wso", "wso", 1.0),
    ("wsd", "wsd", 0.0),
    ("cosine", "cosine", 0.1),
    ("linear", "linear", 0.0),
    ("wsd-01", "wsd", 0.1),
];

fn main() -> anyhow::Result<()> {
    let docs = env_usize("CKPT_BENCH_DOCS", 200);
    let tmp = tempfile::tempdir()?;
    let mut store = Store::open(&tmp.path().join("ckpt.sqlite"))?;
    let started = Instant::now();
    let checkpoints = fill(&mut store, tmp.path(), docs)?;
    println!(
        "{}",
        json!({"step": "write store", "checkpoints": checkpoints, "tasks": TASKS + 1,
               "docs": docs, "seconds": started.elapsed().as_secs_f64()})
    );
    let opts = ReportOptions::default();
    best_of_three("build", || build(&store, &opts).map(|_| ()))?;
    let report = build(&store, &opts)?;
    let data = [Format::Csv, Format::Json];
    best_of_three("write csv+json", || {
        write(&report, &tmp.path().join("data"), &data).map(|_| ())
    })?;
    best_of_three("write all (md, html, csv, json, PNG figures)", || {
        write(&report, &tmp.path().join("all"), &Format::ALL).map(|_| ())
    })?;
    let files = write(&report, &tmp.path().join("all"), &Format::ALL)?;
    let bytes: u64 = files
        .iter()
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum();
    let pngs = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "png"))
        .count();
    println!(
        "{}",
        json!({"files": files.len(), "png": pngs, "bytes": bytes})
    );
    Ok(())
}

fn best_of_three(step: &str, mut f: impl FnMut() -> ckpt::Result<()>) -> anyhow::Result<()> {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{}", json!({"step": step, "seconds": best}));
    Ok(())
}

/// Writes the store; returns the number of checkpoints.
fn fill(store: &mut Store, dir: &Path, docs: usize) -> anyhow::Result<usize> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut n = 0;
    for (r, (run, kind, alpha)) in RUNS.iter().enumerate() {
        let mut last = String::new();
        for s in 1..=STEPS {
            let step = 100 * s;
            let fp = format!("{run}@{step}");
            put(
                store,
                dir,
                &fp,
                run,
                step,
                Stage::Pre,
                kind,
                *alpha,
                3e-3,
                None,
            )?;
            for t in 0..TASKS {
                let p = 0.3 + 0.03 * s as f64 + 0.02 * r as f64;
                let items: Vec<f64> = (0..docs)
                    .map(|_| f64::from(rng.random_bool(p.min(0.95)) as u8))
                    .collect();
                scored(store, &fp, &format!("task_{t:02}"), "acc", &items)?;
            }
            let losses: Vec<f64> = (0..docs)
                .map(|_| 4.0 - 0.1 * s as f64 + rng.random::<f64>())
                .collect();
            scored(store, &fp, "validation_loss", "loss", &losses)?;
            sharpness(store, dir, &fp, run, step, 20.0 + r as f64 + s as f64)?;
            last = fp;
            n += 1;
        }
        for lr in [1e-4, 1e-3] {
            let name = format!("{run}-sft-{lr:e}");
            let fp = format!("{name}@10");
            put(
                store,
                dir,
                &fp,
                &name,
                10,
                Stage::Sft,
                "cosine",
                0.0,
                lr,
                Some(&last),
            )?;
            let prefs: Vec<f64> = (0..docs).map(|_| rng.random::<f64>()).collect();
            scored(store, &fp, "alpaca_eval", "win_rate", &prefs)?;
            n += 1;
        }
    }
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
fn put(
    store: &Store,
    dir: &Path,
    fp: &str,
    run: &str,
    step: u64,
    stage: Stage,
    kind: &str,
    alpha: f64,
    lr: f64,
    parent: Option<&str>,
) -> anyhow::Result<()> {
    let mut meta = CheckpointMeta::new(step);
    meta.stage = Some(stage);
    meta.schedule = Some(ScheduleInfo {
        kind: kind.into(),
        peak_lr: Some(lr),
        warmup: Some(50),
        total_steps: Some(1000),
        stable_ratio: Some(0.75),
        alpha_pre: Some(alpha),
        ..Default::default()
    });
    meta.train_loss = Some(4.0 - step as f64 / 1000.0);
    meta.parent = parent.map(|p| ParentRef {
        path: p.into(),
        step: None,
        fingerprint: Some(p.into()),
    });
    let row = CheckpointRow {
        fingerprint: fp.into(),
        path: dir
            .join(run)
            .join(format!("step-{step}"))
            .display()
            .to_string(),
        run: run.into(),
        step: Some(step),
        stage: Some(stage.to_string()),
        schedule: Some(kind.into()),
        alpha: Some(alpha),
    };
    store.put_checkpoint(&row, Some(&serde_json::to_string(&meta)?))?;
    Ok(())
}

/// A task's per-doc samples and its mean.
fn scored(
    store: &mut Store,
    fp: &str,
    task: &str,
    metric: &str,
    items: &[f64],
) -> anyhow::Result<()> {
    let samples: Vec<(usize, String, String)> = items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let score = if task == "alpaca_eval" {
                json!({"preference": 1.0 + v})
            } else {
                json!({"doc_id": i, "metrics": {format!("{metric},none"): v}})
            };
            (i, String::new(), score.to_string())
        })
        .collect();
    let mean = items.iter().sum::<f64>() / items.len() as f64;
    let row = MetricRow {
        fingerprint: fp.into(),
        task: task.into(),
        spec_hash: "h".into(),
        metric: metric.into(),
        filter: "none".into(),
        value: mean,
        stderr: Some(0.01),
        n: items.len(),
        higher_is_better: metric != "loss",
        num_fewshot: 0,
        regime: "lm-eval".into(),
        ckpt_version: ckpt::VERSION.into(),
        created_at: ckpt::store::now(),
    };
    store.put_task_result(fp, task, "h", &samples, &[row])?;
    Ok(())
}

fn sharpness(
    store: &Store,
    dir: &Path,
    fp: &str,
    run: &str,
    step: u64,
    estimate: f64,
) -> anyhow::Result<()> {
    let config = SharpnessConfig {
        data: "validation.jsonl".into(),
        data_hash: "d".into(),
        set: None,
        seq_len: 1024,
        batch_size: 1,
        batches: 50,
        max_batches: None,
        max_texts: None,
        samples: 50,
        seed: 0,
        method: "fd".into(),
        eps: 3e-5,
        dtype: "f32".into(),
        rel_tol: None,
        min_probes: 2,
        top_eigen_iters: None,
        top_eigen_tol: 1e-3,
        top_k: None,
        density: None,
    };
    let result = SharpnessResult {
        checkpoint: dir.join(run).join(format!("step-{step}")),
        fingerprint: fp.into(),
        step: Some(step),
        stage: Some("pre".into()),
        schedule: None,
        config_key: config.key(),
        config,
        estimate,
        stderr: Some(1.0),
        probes: 50,
        batches: 50,
        target_tokens: 51200,
        parameters: 1_000_000,
        samples: vec![estimate; 50],
        running: vec![estimate; 50],
        top_eigenvalue: None,
        top_eigenvalues: None,
        density: None,
        blocks: vec![],
        seconds: 1.0,
        ckpt_version: ckpt::VERSION.into(),
        probe_start: None,
    };
    store.put_sharpness(&SharpnessRecord {
        fingerprint: fp,
        config_key: &result.config_key,
        checkpoint: &result.checkpoint.display().to_string(),
        step: result.step,
        estimate,
        stderr: result.stderr,
        result: &serde_json::to_string(&result)?,
    })?;
    Ok(())
}

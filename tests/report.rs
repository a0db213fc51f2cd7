//! `ckpt report`: stores built with the real `Store` API (every number known to the
//! test) and, end to end, by the real binary (`ckpt train` tiny runs, `ckpt eval`,
//! `ckpt sharpness`, judging through a judge server on loopback).
//!
//! References: deltas are differences of the stored values; p-values are
//! `compare::paired_test` (itself checked against scipy) on the per-doc items the test
//! stored; Pearson's r is the formula; the SFT pick is the rule applied by hand.

mod common;
#[path = "common/judge_server.rs"]
mod judge_server;

use base64::Engine;
use ckpt::checkpoint::{CheckpointMeta, MergeInfo, ParentRef, ScheduleInfo, Stage};
use ckpt::eval::compare::paired_test;
use ckpt::report::{build, write, Cell, Drawing, Format, ReportOptions, Table};
use ckpt::sharpness::{SharpnessConfig, SharpnessResult};
use ckpt::store::{CheckpointRow, MetricRow, SharpnessRecord, Store, TaskInfo};
use common::{arg, Sandbox};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------
// Stores written through the Store API

/// A store in a temporary directory, and the per-doc items the test put in it.
struct World {
    dir: tempfile::TempDir,
    store: Store,
    /// (fingerprint, task) -> per-doc values, as stored.
    items: BTreeMap<(String, String), Vec<f64>>,
    /// (fingerprint, task, metric) -> stored value.
    values: BTreeMap<(String, String, String), f64>,
}

/// How a checkpoint was trained.
struct Spec<'a> {
    run: &'a str,
    step: u64,
    stage: Stage,
    kind: &'a str,
    alpha: f64,
    peak_lr: f64,
    parent: Option<&'a str>,
}

fn pre<'a>(run: &'a str, step: u64, kind: &'a str, alpha: f64) -> Spec<'a> {
    Spec {
        run,
        step,
        stage: Stage::Pre,
        kind,
        alpha,
        peak_lr: 3e-3,
        parent: None,
    }
}

fn sft<'a>(run: &'a str, parent: &'a str, lr: f64) -> Spec<'a> {
    Spec {
        run,
        step: 10,
        stage: Stage::Sft,
        kind: "cosine",
        alpha: 0.0,
        peak_lr: lr,
        parent: Some(parent),
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn stderr_of(xs: &[f64]) -> f64 {
    let m = mean(xs);
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() as f64 - 1.0);
    (var / xs.len() as f64).sqrt()
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ckpt.sqlite")).unwrap();
        World {
            dir,
            store,
            items: BTreeMap::new(),
            values: BTreeMap::new(),
        }
    }

    fn path(&self, run: &str, step: u64) -> String {
        self.dir
            .path()
            .join(format!("runs/{run}/step-{step:07}"))
            .display()
            .to_string()
    }

    /// Records a checkpoint; its fingerprint is `run@step`.
    fn ckpt(&self, s: Spec) -> String {
        let fp = format!("{}@{}", s.run, s.step);
        let mut meta = CheckpointMeta::new(s.step);
        meta.stage = Some(s.stage);
        meta.schedule = Some(ScheduleInfo {
            kind: s.kind.into(),
            peak_lr: Some(s.peak_lr),
            warmup: Some(10),
            total_steps: Some(200),
            stable_ratio: Some(0.75),
            alpha_pre: Some(s.alpha),
            ..Default::default()
        });
        meta.train_loss = Some(5.0 - s.step as f64 / 100.0);
        meta.parent = s.parent.map(|p| {
            let (run, step) = p.split_once('@').unwrap();
            let step: u64 = step.parse().unwrap();
            ParentRef {
                path: self.path(run, step),
                step: Some(step),
                fingerprint: Some(p.to_string()),
            }
        });
        self.put(&fp, s.run, &self.path(s.run, s.step), &meta);
        fp
    }

    /// Records a WSM merge of `sources` as `dir` (its own entry).
    fn merge(&self, dir: &str, step: u64, sources: &[&str]) -> String {
        let fp = format!("{dir}@merge");
        let mut meta = CheckpointMeta::new(step);
        meta.stage = Some(Stage::Pre);
        meta.schedule = Some(ScheduleInfo {
            kind: "wsm".into(),
            alpha_pre: Some(1.0),
            ..Default::default()
        });
        meta.merge = Some(MergeInfo {
            shape: "cosine".into(),
            window: None,
            last: Some(sources.len()),
            accumulate: "f64".into(),
            sources: vec![],
        });
        let path = self.dir.path().join(dir).display().to_string();
        self.put(&fp, "merges-parent", &path, &meta);
        fp
    }

    fn put(&self, fp: &str, run: &str, path: &str, meta: &CheckpointMeta) {
        let s = meta.schedule.as_ref().unwrap();
        let row = CheckpointRow {
            fingerprint: fp.into(),
            path: path.into(),
            run: run.into(),
            step: Some(meta.step),
            stage: meta.stage.map(|s| s.to_string()),
            schedule: Some(s.kind.clone()),
            alpha: s.alpha_pre,
        };
        let json = serde_json::to_string(meta).unwrap();
        self.store.put_checkpoint(&row, Some(&json)).unwrap();
    }

    fn row(
        &mut self,
        fp: &str,
        task: &str,
        metric: &str,
        value: f64,
        stderr: Option<f64>,
        n: usize,
    ) -> MetricRow {
        self.values
            .insert((fp.into(), task.into(), metric.into()), value);
        MetricRow {
            fingerprint: fp.into(),
            task: task.into(),
            spec_hash: format!("h-{task}"),
            metric: metric.into(),
            filter: "none".into(),
            value,
            stderr,
            n,
            higher_is_better: metric != "loss" && metric != "bits_per_byte",
            num_fewshot: 0,
            regime: "lm-eval".into(),
            ckpt_version: "test".into(),
            created_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    fn spec(&self, task: &str, metrics: &[&str]) {
        let spec = json!({
            "task": task,
            "metric_list": metrics.iter().map(|m| json!({"metric": m})).collect::<Vec<_>>(),
            "filter_list": [],
        });
        let info = TaskInfo {
            task: task.into(),
            spec_hash: format!("h-{task}"),
            dataset_path: "synthetic".into(),
            dataset_name: None,
            split: Some("test".into()),
            data_origin: None,
            tokenization: None,
        };
        self.store.put_task_info(&info, &spec.to_string()).unwrap();
    }

    /// A 0/1 task (`acc`, plus an `acc_norm` that the spec lists second).
    fn accuracy(&mut self, fp: &str, task: &str, items: &[f64]) {
        self.spec(task, &["acc", "acc_norm"]);
        let samples: Vec<(usize, String, String)> = items
            .iter()
            .enumerate()
            .map(|(i, v)| (i, format!("q{i}"), json!({"doc_id": i, "metrics": {"acc,none": v, "acc_norm,none": 0.0}, "detail": null}).to_string()))
            .collect();
        let n = items.len();
        let rows = vec![
            self.row(fp, task, "acc", mean(items), Some(stderr_of(items)), n),
            self.row(fp, task, "acc_norm", 0.0, Some(0.0), n),
        ];
        self.store
            .put_task_result(fp, task, &format!("h-{task}"), &samples, &rows)
            .unwrap();
        self.items.insert((fp.into(), task.into()), items.to_vec());
    }

    /// Validation loss from per-doc log-likelihoods of 10 tokens each.
    fn validation(&mut self, fp: &str, losses: &[f64]) {
        let task = "validation_loss";
        self.spec(task, &["loss", "bits_per_byte"]);
        let samples: Vec<(usize, String, String)> = losses
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let m = json!({"loglikelihood,none": -10.0 * l, "tokens,none": 10.0, "bytes,none": 40.0});
                (i, String::new(), json!({"doc_id": i, "metrics": m, "detail": null}).to_string())
            })
            .collect();
        let n = losses.len();
        // Equal token counts: the token-weighted loss is the mean of the docs' losses.
        let rows = vec![
            self.row(fp, task, "loss", mean(losses), None, n),
            self.row(fp, task, "bits_per_byte", 0.1, None, n),
        ];
        self.store
            .put_task_result(fp, task, &format!("h-{task}"), &samples, &rows)
            .unwrap();
        self.items.insert((fp.into(), task.into()), losses.to_vec());
    }

    /// AlpacaEval-style judging: per-instruction p(model wins), and an LC win rate.
    fn judged(&mut self, fp: &str, p: &[f64], lc: Option<f64>) {
        let task = "alpaca_eval";
        let samples: Vec<(usize, String, String)> = p
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    i,
                    format!("i{i}"),
                    json!({"preference": 1.0 + p}).to_string(),
                )
            })
            .collect();
        let n = p.len();
        let mut rows = vec![self.row(fp, task, "win_rate", mean(p), Some(stderr_of(p)), n)];
        if let Some(lc) = lc {
            rows.push(self.row(fp, task, "length_controlled_winrate", lc, Some(0.01), n));
        }
        self.store
            .put_task_result(fp, task, &format!("h-{task}"), &samples, &rows)
            .unwrap();
        self.items.insert((fp.into(), task.into()), p.to_vec());
    }

    fn sharpness(&self, fp: &str, step: u64, estimate: f64, stderr: f64) {
        let (run, _) = fp.split_once('@').unwrap();
        let config = SharpnessConfig {
            data: "data/validation.jsonl".into(),
            data_hash: "d".into(),
            set: None,
            seq_len: 32,
            batch_size: 1,
            batches: 2,
            max_batches: None,
            max_texts: None,
            samples: 4,
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
            checkpoint: PathBuf::from(self.path(run, step)),
            fingerprint: fp.into(),
            step: Some(step),
            stage: Some("pre".into()),
            schedule: None,
            config_key: config.key(),
            config,
            estimate,
            stderr: Some(stderr),
            probes: 4,
            batches: 2,
            target_tokens: 64,
            parameters: 1000,
            samples: vec![estimate; 4],
            running: vec![estimate; 4],
            top_eigenvalue: None,
            top_eigenvalues: None,
            density: None,
            blocks: vec![],
            seconds: 0.1,
            ckpt_version: "test".into(),
            probe_start: None,
        };
        let json = serde_json::to_string(&result).unwrap();
        self.store
            .put_sharpness(&SharpnessRecord {
                fingerprint: fp,
                config_key: &result.config_key,
                checkpoint: &result.checkpoint.display().to_string(),
                step: result.step,
                estimate,
                stderr: Some(stderr),
                result: &json,
            })
            .unwrap();
    }

    fn value(&self, fp: &str, task: &str, metric: &str) -> f64 {
        self.values[&(fp.to_string(), task.to_string(), metric.to_string())]
    }

    fn items(&self, fp: &str, task: &str) -> &[f64] {
        &self.items[&(fp.to_string(), task.to_string())]
    }
}

/// `n` 0/1 items, each 1 with probability `p` (seeded).
fn bernoulli(n: usize, p: f64, seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| f64::from(rng.random_bool(p) as u8))
        .collect()
}

/// `n` values around `center` (seeded).
fn around(n: usize, center: f64, spread: f64, seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| center + spread * (rng.random::<f64>() - 0.5))
        .collect()
}

fn table<'a>(report: &'a ckpt::report::Report, id: &str) -> &'a Table {
    report
        .tables()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("no table {id}"))
}

/// The row of `table` whose first cell is `run`.
fn row<'a>(t: &'a Table, run: &str) -> &'a [Cell] {
    t.rows
        .iter()
        .find(|r| r[0] == Cell::text(run))
        .unwrap_or_else(|| panic!("no row {run} in {}", t.id))
}

fn col(t: &Table, starts: &str) -> usize {
    t.columns
        .iter()
        .position(|c| c.starts_with(starts))
        .unwrap_or_else(|| panic!("no column {starts} in {:?}", t.columns))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
}

/// Three pre-training runs (WSO, WSD, cosine) with ARC and validation loss, a WSM merge.
fn pretraining_world() -> (World, BTreeMap<&'static str, String>) {
    let mut w = World::new();
    let mut fps = BTreeMap::new();
    let runs = [
        ("wso", "wso", 1.0, 0.55, 3.30),
        ("wsd", "wsd", 0.1, 0.70, 3.10),
        ("cosine", "cosine", 0.1, 0.62, 3.05),
    ];
    for (i, (run, kind, alpha, acc, loss)) in runs.into_iter().enumerate() {
        let seed = 10 * i as u64;
        let early = w.ckpt(pre(run, 100, kind, alpha));
        w.accuracy(&early, "arc_easy", &bernoulli(60, 0.4, seed + 1));
        let last = w.ckpt(pre(run, 200, kind, alpha));
        w.accuracy(&last, "arc_easy", &bernoulli(60, acc, seed + 2));
        w.validation(&last, &around(30, loss, 0.4, seed + 3));
        fps.insert(run, last);
    }
    let merged = w.merge("wso-wsm", 200, &["wso@100", "wso@200"]);
    w.accuracy(&merged, "arc_easy", &bernoulli(60, 0.6, 99));
    w.validation(&merged, &around(30, 3.2, 0.4, 98));
    fps.insert("wso-wsm", merged);
    (w, fps)
}

#[test]
fn relative_table_deltas_and_p_values_come_from_the_stored_items() {
    let (w, fps) = pretraining_world();
    let report = build(&w.store, &ReportOptions::default()).unwrap();
    let t = table(&report, "relative_pretraining");
    for (task, metric, higher) in [
        ("arc_easy", "acc", true),
        ("validation_loss", "loss", false),
    ] {
        // The baseline: the best decayed run (the merge counts as decayed).
        let decayed = ["wsd", "cosine", "wso-wsm"];
        let best = decayed
            .iter()
            .copied()
            .max_by(|a, b| {
                let (va, vb) = (
                    w.value(&fps[a], task, metric),
                    w.value(&fps[b], task, metric),
                );
                if higher {
                    va.total_cmp(&vb)
                } else {
                    vb.total_cmp(&va)
                }
            })
            .unwrap();
        let c = col(
            t,
            if task == "arc_easy" {
                "arc_easy acc"
            } else {
                "validation loss"
            },
        );
        assert!(
            t.columns[c].ends_with(&format!("vs {best}")),
            "{}",
            t.columns[c]
        );
        for run in ["wso", "wsd", "cosine", "wso-wsm"] {
            let Cell::Delta { delta, test, .. } = &row(t, run)[c] else {
                panic!("{run} {task}: not a delta");
            };
            let want = w.value(&fps[run], task, metric) - w.value(&fps[best], task, metric);
            assert!(close(*delta, want), "{run} {task}: {delta} vs {want}");
            if run == best {
                assert!(test.is_none(), "the baseline against itself");
                continue;
            }
            let reference =
                paired_test(w.items(&fps[run], task), w.items(&fps[best], task)).unwrap();
            let got = test.unwrap();
            assert!(close(got.p_value, reference.p_value), "{run} {task}");
            assert_eq!((got.method, got.n), (reference.method, reference.n));
        }
    }
    // The per-run table shows the stored values of each run's final checkpoint, with
    // the spec's first metric as the headline (loss, not bits_per_byte).
    let t = table(&report, "pretraining");
    let c = col(t, "validation loss");
    assert_eq!(t.columns[c], "validation loss");
    for run in ["wso", "wsd", "cosine"] {
        let Cell::Number { value, .. } = row(t, run)[c] else {
            panic!()
        };
        assert!(close(value, w.value(&fps[run], "validation_loss", "loss")));
    }
    assert_eq!(row(t, "wso-wsm")[1], Cell::text("wsm (cosine)"));
    assert_eq!(row(t, "wso")[2], Cell::int(200));

    // --baseline: every delta from that run.
    let opts = ReportOptions {
        baseline: Some("wso".into()),
        ..Default::default()
    };
    let report = build(&w.store, &opts).unwrap();
    let t = table(&report, "relative_pretraining");
    let c = col(t, "arc_easy acc");
    assert!(t.columns[c].ends_with("vs wso"));
    let Cell::Delta { delta, .. } = &row(t, "wsd")[c] else {
        panic!()
    };
    let want = w.value(&fps["wsd"], "arc_easy", "acc") - w.value(&fps["wso"], "arc_easy", "acc");
    assert!(close(*delta, want));

    let opts = ReportOptions {
        baseline: Some("nope".into()),
        ..Default::default()
    };
    let err = build(&w.store, &opts).err().unwrap().to_string();
    for name in ["nope", "wso", "wsd", "cosine", "wso-wsm"] {
        assert!(err.contains(name), "{err}");
    }
}

/// Base runs with SFT sweeps: `wso` judged (LC win rates), `wsd` through mid-training
/// and judged, `cosine` not judged (the suite-mean fallback).
fn sft_world(flip: bool) -> (World, BTreeMap<&'static str, String>) {
    let (mut w, mut fps) = pretraining_world();
    let wso = fps["wso"].clone();
    let wsd = fps["wsd"].clone();
    let cosine = fps["cosine"].clone();
    // wso: LR 1e-4, 1e-3, 1e-2; LC 0.40, 0.70, 0.70 (a tie: the smaller LR wins).
    for (lr, p, lc) in [(1e-4, 0.8, 0.40), (1e-3, 0.5, 0.70), (1e-2, 0.6, 0.70)] {
        let name: &'static str = Box::leak(format!("wso-sft-{lr:e}").into_boxed_str());
        let fp = w.ckpt(sft(name, &wso, lr));
        let lc = if flip { lc - 0.4 } else { lc };
        w.judged(&fp, &around(40, p, 0.3, (lr * 1e5) as u64), Some(lc));
        fps.insert(name, fp);
    }
    // wsd: mid-training first, then two LRs.
    let mid = w.ckpt(Spec {
        run: "wsd-mid",
        step: 250,
        stage: Stage::Mid,
        kind: "wsd",
        alpha: 0.0,
        peak_lr: 3e-3,
        parent: Some(&wsd),
    });
    for (lr, p, lc) in [(1e-4, 0.3, 0.45), (1e-3, 0.4, 0.55)] {
        let name: &'static str = Box::leak(format!("wsd-sft-{lr:e}").into_boxed_str());
        let fp = w.ckpt(sft(name, &mid, lr));
        w.judged(&fp, &around(40, p, 0.3, 7 + (lr * 1e5) as u64), Some(lc));
        fps.insert(name, fp);
    }
    // cosine: not judged. truthfulqa_mc1 (in the sft suite) picks; arc_easy (not in
    // it) would pick the other LR.
    for (lr, tqa, arc) in [(1e-4, 0.3, 0.9), (1e-3, 0.6, 0.2)] {
        let name: &'static str = Box::leak(format!("cosine-sft-{lr:e}").into_boxed_str());
        let fp = w.ckpt(sft(name, &cosine, lr));
        w.accuracy(&fp, "truthfulqa_mc1", &bernoulli(50, tqa, 3));
        w.accuracy(&fp, "arc_easy", &bernoulli(50, arc, 4));
        fps.insert(name, fp);
    }
    fps.insert("wsd-mid", mid);
    (w, fps)
}

#[test]
fn the_sft_lr_is_picked_by_the_judged_score_else_the_suite_mean() {
    let (w, fps) = sft_world(false);
    let picks = ckpt::report::sft_picks(&w.store, &ReportOptions::default()).unwrap();
    let by_base: BTreeMap<&str, &ckpt::report::SftPick> =
        picks.iter().map(|p| (p.base_run.as_str(), p)).collect();
    assert_eq!(by_base.len(), 3, "{picks:#?}");
    // LC 0.70 at 1e-3 and 1e-2: the smaller LR; not the best raw win rate (1e-4).
    let wso = by_base["wso"];
    assert_eq!(wso.run, "wso-sft-1e-3");
    assert_eq!(wso.lr, Some(1e-3));
    assert_eq!(
        serde_json::to_value(&wso.criterion).unwrap(),
        json!({"kind": "judged", "task": "alpaca_eval", "metric": "length_controlled_winrate"})
    );
    assert!(close(wso.score, 0.70));
    assert_eq!(wso.candidates.len(), 3);
    // Through mid-training to the pre-training run.
    let wsd = by_base["wsd"];
    assert_eq!(
        (wsd.run.as_str(), wsd.base_step),
        ("wsd-sft-1e-3", Some(200))
    );
    assert!(wsd.base_decayed);
    // The fallback: the sft suite's truthfulqa_mc1, not arc_easy.
    let cosine = by_base["cosine"];
    let want = if w.value(&fps["cosine-sft-1e-4"], "truthfulqa_mc1", "acc")
        >= w.value(&fps["cosine-sft-1e-3"], "truthfulqa_mc1", "acc")
    {
        "cosine-sft-1e-4"
    } else {
        "cosine-sft-1e-3"
    };
    assert_eq!(cosine.run, want);
    assert_eq!(
        serde_json::to_value(&cosine.criterion).unwrap(),
        json!({"kind": "suite_mean", "tasks": ["truthfulqa_mc1"]})
    );
    // The report states the rule, marks the picks and uses them after SFT.
    let report = build(&w.store, &ReportOptions::default()).unwrap();
    let sweep = table(&report, "sft_sweep");
    assert!(sweep
        .notes
        .iter()
        .any(|n| n.contains("Ties go to the smaller LR")));
    let picked = sweep.columns.len() - 1;
    let marked: Vec<&Cell> = sweep
        .rows
        .iter()
        .filter(|r| r[picked] == Cell::text("✓"))
        .map(|r| &r[2])
        .collect();
    assert_eq!(
        marked,
        [
            &Cell::text(want),
            &Cell::text("wsd-sft-1e-3"),
            &Cell::text("wso-sft-1e-3")
        ]
    );
    let after = table(&report, "relative_sft");
    let c = col(after, "alpaca_eval length_controlled_winrate");
    assert!(after.columns[c].ends_with("vs wsd"), "{}", after.columns[c]);
    let Cell::Delta { delta, test, .. } = &row(after, "wso")[c] else {
        panic!()
    };
    assert!(close(*delta, 0.70 - 0.55));
    let reference = paired_test(
        w.items(&fps["wso-sft-1e-3"], "alpaca_eval"),
        w.items(&fps["wsd-sft-1e-3"], "alpaca_eval"),
    )
    .unwrap();
    assert!(close(test.unwrap().p_value, reference.p_value));

    // Without an LC win rate for one judged run, every sweep is picked by win rate.
    let mut w = w;
    w.judged(&fps["wso-sft-1e-2"], &[0.1; 40], None);
    let picks = ckpt::report::sft_picks(&w.store, &ReportOptions::default()).unwrap();
    let wso = picks.iter().find(|p| p.base_run == "wso").unwrap();
    assert_eq!(wso.run, "wso-sft-1e-4", "the best raw win rate");
    assert!(close(
        wso.score,
        mean(w.items(&fps["wso-sft-1e-4"], "alpaca_eval"))
    ));
}

/// Runs are directories: two of one name holding different stages stay apart.
#[test]
fn same_named_run_directories_of_different_stages_are_told_apart() {
    let (mut w, fps) = pretraining_world();
    let fp = w.ckpt(sft("wso", &fps["wso"], 1e-3));
    w.judged(&fp, &[0.5; 10], Some(0.5));
    let report = build(&w.store, &ReportOptions::default()).unwrap();
    let names: Vec<&str> = report.runs.iter().map(|r| r.name.as_str()).collect();
    assert!(
        names.contains(&"wso (pre)") && names.contains(&"wso (sft)"),
        "{names:?}"
    );
    assert_eq!(report.sft_picks.len(), 1);
    assert_eq!(
        (
            report.sft_picks[0].base_run.as_str(),
            report.sft_picks[0].run.as_str()
        ),
        ("wso (pre)", "wso (sft)")
    );
}

#[test]
fn sharpness_against_sft_score_has_pearsons_r() {
    let (w, fps) = sft_world(false);
    let sharp = [("wso", 10.0), ("wsd", 30.0), ("cosine", 17.0)];
    for (run, s) in sharp {
        w.sharpness(&fps[run], 200, s, 1.0);
    }
    let report = build(&w.store, &ReportOptions::default()).unwrap();
    let fig = report
        .figures()
        .find(|f| f.file == "sharpness_vs_sft.png")
        .expect("figure 4");
    let Drawing::SftScatter(corr) = &fig.drawing else {
        panic!()
    };
    // The formula, on the picks' scores.
    let picks = &report.sft_picks;
    let xs: Vec<f64> = sharp.iter().map(|(_, s)| *s).collect();
    let ys: Vec<f64> = sharp
        .iter()
        .map(|(run, _)| 100.0 * picks.iter().find(|p| p.base_run == *run).unwrap().score)
        .collect();
    let (mx, my) = (mean(&xs), mean(&ys));
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let syy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    let r = sxy / (sxx * syy).sqrt();
    assert!(
        close(corr.pearson_r.unwrap(), r),
        "{:?} vs {r}",
        corr.pearson_r
    );
    assert_eq!(corr.points.len(), 3);
    assert!(
        fig.caption.contains(&format!("Pearson r = {r:.3}")),
        "{}",
        fig.caption
    );
}

/// The paper's direction (`flip`: its opposite) in loss, sharpness and SFT.
fn findings_world(flip: bool) -> World {
    let (w, fps) = sft_world(flip);
    let (wso, wsd) = if flip { (30.0, 10.0) } else { (10.0, 30.0) };
    for step in [100, 200] {
        w.sharpness(&format!("wso@{step}"), step, wso + step as f64, 1.0);
        w.sharpness(&format!("wsd@{step}"), step, wsd + step as f64, 1.0);
    }
    let _ = fps;
    w
}

fn holds(report: &ckpt::report::Report) -> Vec<Option<bool>> {
    report.findings.iter().map(|f| f.holds).collect()
}

#[test]
fn findings_follow_the_data() {
    let w = findings_world(false);
    let report = build(&w.store, &ReportOptions::default()).unwrap();
    // Loss: wso 3.30 vs wsd 3.10 and cosine 3.05 (their stored means decide).
    let loss = |run: &str| w.value(&format!("{run}@200"), "validation_loss", "loss");
    let lower = loss("wsd") < loss("wso") && loss("cosine") < loss("wso");
    let f = &report.findings[0];
    assert_eq!(f.holds, Some(lower), "{}", f.text);
    assert!(
        f.text.contains(&format!("{:.4}", loss("wso"))),
        "{}",
        f.text
    );
    // Sharpness: wsd / wso at step 200 = 230 / 210, with the delta method's SE.
    let f = &report.findings[1];
    assert_eq!(f.holds, Some(true), "{}", f.text);
    let r = &f.details["ratios"][0];
    assert_eq!(r["step"], 200);
    assert!(close(r["ratio"].as_f64().unwrap(), 230.0 / 210.0));
    let se = 230.0 / 210.0 * ((1.0f64 / 230.0).powi(2) + (1.0f64 / 210.0).powi(2)).sqrt();
    assert!(close(r["stderr"].as_f64().unwrap(), se));
    // SFT: WSO's pick (LC 0.70) against the best decayed base's (wsd, 0.55).
    let f = &report.findings[2];
    assert_eq!(f.holds, Some(true), "{}", f.text);
    assert!(close(f.details["delta"].as_f64().unwrap(), 0.70 - 0.55));
    assert!(f.text.contains("+15.0 points"), "{}", f.text);

    // The opposite data, the opposite findings (the loss one does not flip with the
    // SFT and sharpness data: flip the losses by hand).
    let mut w = findings_world(true);
    w.validation("wsd@200", &[3.5; 30]);
    let report = build(&w.store, &ReportOptions::default()).unwrap();
    assert_eq!(holds(&report), [Some(false), Some(false), Some(false)]);
    assert!(
        report.findings[0].text.starts_with("No: wsd"),
        "{}",
        report.findings[0].text
    );

    // No sharpness, no SFT: those findings say what is missing.
    let (w, _) = pretraining_world();
    let report = build(&w.store, &ReportOptions::default()).unwrap();
    assert_eq!(report.findings[1].holds, None);
    assert!(report.findings[1].text.starts_with("Not measured"));
    assert!(report.findings[2].text.starts_with("Not measured"));
    let md = ckpt::report::markdown(&report, false);
    assert!(
        md.contains("Not measured: the store has no sharpness"),
        "{md}"
    );
    assert!(md.contains("Not measured: no SFT run"), "{md}");
}

// ---------------------------------------------------------------------------------
// Formats

/// RFC 4180 fields of a CSV text.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    rows
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2f;")
}

#[test]
fn every_format_carries_the_same_tables_and_the_html_stands_alone() {
    let w = findings_world(false);
    let report = build(&w.store, &ReportOptions::default()).unwrap();
    let out = w.dir.path().join("out");
    let files = write(&report, &out, &Format::ALL).unwrap();
    assert!(files.iter().all(|f| f.starts_with(&out) && f.is_file()));

    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let tables: Vec<&Value> = json["sections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["tables"].as_array().unwrap())
        .collect();
    let ids: Vec<&str> = tables.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "pretraining",
            "relative_pretraining",
            "sft_sweep",
            "relative_sft",
            "sharpness",
            "metrics_by_step"
        ]
    );
    for (t, shown) in tables.iter().zip(report.tables()) {
        let id = t["id"].as_str().unwrap();
        let csv = parse_csv(&std::fs::read_to_string(out.join(format!("{id}.csv"))).unwrap());
        assert_eq!(csv.len(), 1 + t["rows"].as_array().unwrap().len(), "{id}");
        let header = &csv[0];
        for (i, row) in t["rows"].as_array().unwrap().iter().enumerate() {
            let fields = &csv[1 + i];
            assert_eq!(fields.len(), header.len(), "{id} row {i}");
            for (j, cell) in row.as_array().unwrap().iter().enumerate() {
                let name = t["columns"][j].as_str().unwrap();
                let at = header.iter().position(|h| h == name).unwrap();
                let field = &fields[at];
                // serde_json reads floats to within an ulp (no float_roundtrip).
                let same = |f: &str, v: f64| {
                    assert!(close(f.parse::<f64>().unwrap(), v), "{id}: {f} vs {v}")
                };
                match cell["kind"].as_str().unwrap() {
                    "text" => assert_eq!(field, cell["text"].as_str().unwrap()),
                    "number" => {
                        same(field, cell["value"].as_f64().unwrap());
                        if let Some(se) = cell["stderr"].as_f64() {
                            let at = header
                                .iter()
                                .position(|h| *h == format!("{name} stderr"))
                                .unwrap();
                            same(&fields[at], se);
                        }
                    }
                    "delta" => {
                        same(field, cell["delta"].as_f64().unwrap());
                        let at = header
                            .iter()
                            .position(|h| *h == format!("{name} p"))
                            .unwrap();
                        match cell["test"]["p_value"].as_f64() {
                            Some(p) => same(&fields[at], p),
                            None => assert_eq!(fields[at], ""),
                        }
                    }
                    _ => assert_eq!(field, ""),
                }
            }
        }
        // Markdown and HTML show the same rounded cells.
        assert!(md.contains(&format!("### {}", shown.title)), "{id}");
        assert!(html.contains(&html_escape(&shown.title)), "{id}");
        for r in shown.displayed() {
            let line = format!(
                "| {} |",
                r.iter()
                    .map(|c| c.replace('|', "\\|"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            assert!(md.contains(&line), "{id}: {line}");
            for c in r.iter().filter(|c| !c.is_empty()) {
                assert!(
                    html.contains(&format!(">{}</td>", html_escape(c))),
                    "{id}: {c}"
                );
            }
        }
    }
    // Findings in every format.
    for f in &report.findings {
        assert!(html.contains(&html_escape(&f.text)), "{}", f.text);
    }
    assert_eq!(json["findings"].as_array().unwrap().len(), 3);

    // One self-contained HTML file: every figure embedded as a PNG data URI, nothing
    // fetched from elsewhere.
    let figures: Vec<&str> = report.figures().map(|f| f.file.as_str()).collect();
    for file in [
        "lr_schedules.png",
        "training_loss.png",
        "sharpness.png",
        "sharpness_vs_sft.png",
        "sft_lr_sweep.png",
    ] {
        assert!(figures.contains(&file), "{file} missing: {figures:?}");
    }
    let prefix = "src=\"data:image/png;base64,";
    let uris: Vec<&str> = html
        .match_indices(prefix)
        .map(|(i, _)| {
            let rest = &html[i + prefix.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert_eq!(uris.len(), figures.len());
    for (uri, file) in uris.iter().zip(&figures) {
        let png = base64::engine::general_purpose::STANDARD
            .decode(uri)
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(png, std::fs::read(out.join(file)).unwrap(), "{file}");
        assert!(md.contains(&format!("]({file})")), "{file} not linked");
    }
    for external in ["src=\"http", "href=\"http", "<link", "<script", "url("] {
        assert!(!html.contains(external), "{external}");
    }

    // One format alone writes only it.
    let only = w.dir.path().join("only-json");
    let files = write(&report, &only, &[Format::Json]).unwrap();
    assert_eq!(files, [only.join("report.json")]);
}

// ---------------------------------------------------------------------------------
// Through the binary

use common::SMALL_RECIPE as SMALL;

fn recipe(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("trainer/{name}.toml"))
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn train(sb: &Sandbox, name: &str, sets: &[&str]) {
    let mut args = vec!["-q".to_string(), "train".into(), arg(&recipe(name)).into()];
    for s in sets {
        args.extend(["--set".into(), s.to_string()]);
    }
    ok(&sb.run(&args));
}

/// A judged SFT: LR sweep on WSO, one LR on the WSD branch.
fn sft_run(sb: &Sandbox, base: &str, lr: &str) {
    let parent = format!("init.parent=runs/{base}/step-0000024");
    let name = format!("job.name=\"{base}-sft-{lr}\"");
    let lr = format!("schedule.peak_lr={lr}");
    train(
        sb,
        "tiny-sft",
        &[
            &parent,
            &name,
            &lr,
            "training.batch_tokens=512",
            "training.seq_len=32",
            "schedule.warmup=2",
        ],
    );
}

#[test]
fn the_binary_reports_trained_evaluated_measured_and_judged_runs() {
    let sb = Sandbox::new();
    sb.small_world();
    train(&sb, "tiny-wso", &SMALL);
    let branch = [
        "init.parent=runs/tiny-wso/step-0000012",
        "schedule.decay_steps=6",
        "schedule.warmup=4",
        "schedule.total_steps=24",
        "training.seq_len=32",
        "training.batch_tokens=512",
        "training.checkpoint_every=12",
    ];
    train(&sb, "tiny-wsd-branch", &branch);
    for (base, lr) in [
        ("tiny-wso", "1e-3"),
        ("tiny-wso", "3e-3"),
        ("tiny-wsd-branch", "1e-3"),
    ] {
        sft_run(&sb, base, lr);
    }
    let eval = sb.run_json([
        "eval",
        "runs",
        "--tasks",
        "validation_loss",
        "--data",
        "validation_loss=data/synth/validation.jsonl",
        "--json",
    ]);
    ok(&sb.run([
        "sharpness",
        "runs/tiny-wso",
        "runs/tiny-wsd-branch",
        "--data",
        "data/synth/validation.jsonl",
        "--seq-len",
        "32",
        "--max-batches",
        "2",
        "--samples",
        "4",
        "--seed",
        "3",
        "--store",
        "ckpt.sqlite",
    ]));
    let judge = judge_server::JudgeServer::start();
    let instructions: Vec<Value> = [
        "Name a colour.",
        "Say hello.",
        "Count to three.",
        "Give a fruit.",
    ]
    .iter()
    .map(|i| json!({"instruction": i, "output": "A short reference answer.", "generator": "ref"}))
    .collect();
    sb.write(
        "instructions.json",
        serde_json::to_string(&instructions).unwrap(),
    );
    let sft_dirs: Vec<String> = [
        "tiny-wso-sft-1e-3",
        "tiny-wso-sft-3e-3",
        "tiny-wsd-branch-sft-1e-3",
    ]
    .iter()
    .map(|d| format!("runs/{d}"))
    .collect();
    let mut args: Vec<String> = vec!["eval".into()];
    args.extend(sft_dirs.iter().cloned());
    args.extend(
        [
            "--tasks",
            "alpaca_eval",
            "--judge-url",
            &judge.url,
            "--instructions",
            "instructions.json",
            "--max-new-tokens",
            "4",
            "--json",
        ]
        .map(String::from),
    );
    let judged = sb.run_json(&args);

    let out = sb.run(["report"]);
    let stdout = ok(&out);
    assert!(
        stdout.contains("### Pre-training runs: final checkpoints"),
        "{stdout}"
    );
    assert!(stdout.contains("| tiny-wso | wso | 24 |"), "{stdout}");
    let dir = sb.path().join("report");
    for f in [
        "report.md",
        "report.html",
        "report.json",
        "pretraining.csv",
        "sft_sweep.csv",
        "lr_schedules.png",
        "training_loss.png",
        "sharpness.png",
        "metric_01_validation_loss.png",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    // The validation-loss finding reads the values `ckpt eval` stored.
    let stored = |run: &str| {
        eval["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|c| c["run"] == run)
            .and_then(|c| {
                c["metrics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["metric"] == "loss")
            })
            .map(|m| m["value"].as_f64().unwrap())
            .unwrap()
    };
    let f = &report["findings"][0];
    assert_eq!(f["details"]["wso"].as_f64().unwrap(), stored("tiny-wso"));
    assert_eq!(
        f["details"]["decayed"][0]["loss"].as_f64().unwrap(),
        stored("tiny-wsd-branch")
    );
    assert_eq!(f["holds"], stored("tiny-wsd-branch") < stored("tiny-wso"));
    assert!(
        report["findings"][1]["holds"].is_boolean(),
        "{}",
        report["findings"][1]
    );
    // The WSO sweep's pick: the better judged score of its two LRs.
    // The LC win rate when every judged checkpoint has one, else the win rate.
    let judged_runs = judged["alpaca_eval"]["checkpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("{judged}"));
    let lc = judged_runs
        .iter()
        .all(|c| c["metrics"]["length_controlled_winrate"].is_f64());
    let score = |run: &str| {
        let c = judged_runs.iter().find(|c| c["run"] == run).unwrap();
        let metric = if lc {
            "length_controlled_winrate"
        } else {
            "win_rate"
        };
        c["metrics"][metric].as_f64().unwrap()
    };
    let pick = report["sft_picks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["base_run"] == "tiny-wso")
        .unwrap();
    let want = if score("tiny-wso-sft-1e-3") >= score("tiny-wso-sft-3e-3") {
        "tiny-wso-sft-1e-3"
    } else {
        "tiny-wso-sft-3e-3"
    };
    assert_eq!(pick["run"], want, "{pick}");
    assert_eq!(pick["criterion"]["kind"], "judged");

    // Training loss from each run's log; with the run directories moved away, from the
    // checkpoints' sidecars.
    let caption = |report: &Value| {
        report["sections"][0]["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"] == "training_loss.png")
            .map(|f| f["caption"].as_str().unwrap().to_string())
            .unwrap()
    };
    let c = caption(&report);
    assert!(
        c.contains("metrics.jsonl: tiny-wsd-branch, tiny-wso") && !c.contains("ckpt.json"),
        "{c}"
    );
    std::fs::rename(sb.path().join("runs"), sb.path().join("moved")).unwrap();
    let out = sb.run([
        "report",
        "ckpt.sqlite",
        "--format",
        "md,json",
        "--out",
        "again",
        "-q",
    ]);
    ok(&out);
    assert!(sb.path().join("again/training_loss.png").is_file());
    assert!(!sb.path().join("again/report.html").exists());
    let again: Value =
        serde_json::from_slice(&std::fs::read(sb.path().join("again/report.json")).unwrap())
            .unwrap();
    let c = caption(&again);
    assert!(
        c.contains("ckpt.json (no run log found): tiny-wsd-branch, tiny-wso"),
        "{c}"
    );
}

fn failed(out: &std::process::Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_inputs_are_clear_errors() {
    let sb = Sandbox::new();
    // No store.
    let err = failed(&sb.run(["report"]), 1);
    assert!(
        err.contains("ckpt.sqlite") && err.contains("no results store"),
        "{err}"
    );
    assert!(
        !sb.path().join("ckpt.sqlite").exists(),
        "a missing store was created"
    );
    // Not a store.
    sb.write("junk.sqlite", vec![7u8; 4096]);
    let err = failed(&sb.run(["report", "junk.sqlite"]), 1);
    assert!(
        err.contains("junk.sqlite") && err.contains("corrupt"),
        "{err}"
    );
    // An empty store.
    drop(Store::open(&sb.path().join("empty.sqlite")).unwrap());
    let err = failed(&sb.run(["report", "empty.sqlite"]), 1);
    assert!(
        err.contains("empty.sqlite") && err.contains("no checkpoints"),
        "{err}"
    );
    // An unknown baseline lists the runs; a store directory is read as DIR/ckpt.sqlite.
    let (w, _) = pretraining_world();
    let dir = arg(w.dir.path());
    let err = failed(&sb.run(["report", dir, "--baseline", "nope"]), 1);
    assert!(
        err.contains("nope") && err.contains("wso, ") && err.contains("cosine"),
        "{err}"
    );
    // A bad format is a usage error.
    let err = failed(&sb.run(["report", dir, "--format", "pdf"]), 2);
    assert!(err.contains("pdf"), "{err}");
    // A store without sharpness or judging still reports, saying so.
    let stdout = ok(&sb.run(["report", dir, "--out", "r"]));
    assert!(stdout.contains("Not measured"), "{stdout}");
    assert!(sb.path().join("r/report.html").is_file());
}

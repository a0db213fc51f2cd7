//! Exports of stored results, in the shapes other tools read:
//! - `results_<run>_<step>.json` per checkpoint, laid out like lm-evaluation-harness's
//!   results file (`results` with `metric,filter` and `metric_stderr,filter` keys,
//!   `n-shot`, `n-samples`, `versions`, `configs`);
//! - `samples_<task>_<run>_<step>.jsonl`: one line per doc (doc id, prompt, target,
//!   per-choice log-likelihoods or generations, metrics);
//! - `results.csv`: one row per checkpoint x task x metric.
//!
//! Every file is written atomically.

use super::run::results_hash;
use super::task::TaskRequests;
use crate::atomic_file::write_bytes as write_atomic;
use crate::error::{Error, Result};
use crate::store::{CheckpointRow, MetricRow, Store};
use crate::tokenizer::EncodePolicy;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Writes every export for `checkpoints` on `tasks` into `dir`; returns the files.
pub fn export_all(
    dir: &Path,
    store: &Store,
    checkpoints: &[CheckpointRow],
    tasks: &[TaskRequests],
    policy: &EncodePolicy,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    let mut csv = String::from(
        "run,step,schedule,alpha,checkpoint,task,metric,filter,value,stderr,n,num_fewshot\n",
    );
    for c in checkpoints.iter().filter(|c| !c.fingerprint.is_empty()) {
        let metrics: Vec<MetricRow> = store
            .metrics(Some(&c.fingerprint))?
            .into_iter()
            .filter(|m| {
                tasks
                    .iter()
                    .any(|t| t.spec.task == m.task && results_hash(policy, &t.spec) == m.spec_hash)
            })
            .collect();
        let stem = format!(
            "{}_{}",
            sanitize(&c.run),
            c.step.map(|s| s.to_string()).unwrap_or_else(|| "na".into())
        );
        let results = dir.join(format!("results_{stem}.json"));
        let body = serde_json::to_vec_pretty(&results_json(c, &metrics, tasks)).expect("JSON");
        write_atomic(&results, &body)?;
        written.push(results);
        for t in tasks {
            let samples =
                store.samples(&c.fingerprint, &t.spec.task, &results_hash(policy, &t.spec))?;
            if samples.is_empty() {
                continue;
            }
            let file = dir.join(format!("samples_{}_{stem}.jsonl", sanitize(&t.spec.task)));
            write_atomic(&file, samples_jsonl(t, &samples).as_bytes())?;
            written.push(file);
        }
        for m in &metrics {
            csv.push_str(&csv_row(c, m));
        }
    }
    let file = dir.join("results.csv");
    write_atomic(&file, csv.as_bytes())?;
    written.push(file);
    Ok(written)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// lm-eval's results layout for one checkpoint.
fn results_json(c: &CheckpointRow, metrics: &[MetricRow], tasks: &[TaskRequests]) -> Value {
    let mut results = Map::new();
    for m in metrics {
        let entry = results
            .entry(m.task.clone())
            .or_insert_with(|| json!({"alias": m.task}));
        entry[format!("{},{}", m.metric, m.filter)] = json!(m.value);
        entry[format!("{}_stderr,{}", m.metric, m.filter)] = match m.stderr {
            Some(se) => json!(se),
            None => json!("N/A"),
        };
    }
    let by_task = |f: &dyn Fn(&TaskRequests) -> Value| -> Map<String, Value> {
        tasks
            .iter()
            .filter(|t| results.contains_key(&t.spec.task))
            .map(|t| (t.spec.task.clone(), f(t)))
            .collect()
    };
    json!({
        "results": results,
        "n-shot": by_task(&|t| json!(t.spec.num_fewshot)),
        "n-samples": by_task(&|t| json!({"original": t.docs.len(), "effective": t.requests.len()})),
        "versions": by_task(&|t| json!(t.spec.version())),
        "configs": by_task(&|t| serde_json::to_value(&t.spec).unwrap_or(Value::Null)),
        "model_name": c.path,
        "checkpoint": {"run": c.run, "step": c.step, "stage": c.stage, "schedule": c.schedule, "alpha": c.alpha, "fingerprint": c.fingerprint},
        "regime": metrics.first().map(|m| m.regime.clone()),
        "ckpt_version": crate::VERSION,
    })
}

fn samples_jsonl(t: &TaskRequests, samples: &[(usize, String, String)]) -> String {
    let mut out = String::new();
    for (doc_id, prompt, score) in samples {
        let score: Value = serde_json::from_str(score).unwrap_or(Value::Null);
        let doc = t.requests.get(*doc_id);
        let line = json!({
            "doc_id": doc_id,
            "prompt": prompt,
            "choices": doc.map(|d| &d.choices),
            "target": doc.map(|d| serde_json::to_value(&d.gold).unwrap_or(Value::Null)),
            "responses": score["detail"],
            "metrics": score["metrics"],
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

fn csv_row(c: &CheckpointRow, m: &MetricRow) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{}\n",
        field(&c.run),
        c.step.map(|s| s.to_string()).unwrap_or_default(),
        field(c.schedule.as_deref().unwrap_or("")),
        opt(c.alpha),
        field(&c.path),
        field(&m.task),
        field(&m.metric),
        field(&m.filter),
        m.value,
        opt(m.stderr),
        m.n,
        m.num_fewshot
    )
}

//! `ckpt store merge` and `ckpt store status` end to end through the binary: stores
//! written apart (as the shards of a sweep write them) merge into the store one process
//! writes, so that `ckpt eval` computes nothing more and `ckpt report` reports the same;
//! and bad input.

mod common;

use common::{arg, Sandbox};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A synthetic task in ARC's schema, named `name`.
fn task(name: &str) -> String {
    format!(
        r#"
task = "{name}"
dataset_path = "synthetic/arc"
output_type = "multiple_choice"
test_split = "test"
doc_to_text = "Question: {{{{question}}}}\nAnswer:"
doc_to_target = "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice = "{{{{choices.text}}}}"
metric_list = [{{ metric = "acc" }}, {{ metric = "acc_norm" }}]
"#
    )
}

const WORDS: [&str; 8] = [
    "blue", "stone", "river", "lamp", "green", "cloud", "seven", "bird",
];

/// `n` docs in the Hub's ARC schema.
fn docs(n: usize, salt: usize) -> String {
    (0..n)
        .map(|i| {
            let w = |k: usize| WORDS[(i * 3 + k * 5 + salt) % WORDS.len()];
            let key = ["A", "B", "C"][i % 3];
            json!({
                "id": format!("syn-{i}"),
                "question": format!("Which {} is {} number {i}?", w(0), w(1)),
                "choices": {"text": [w(2), w(3), w(4)], "label": ["A", "B", "C"]},
                "answerKey": key,
            })
            .to_string()
                + "\n"
        })
        .collect()
}

/// Runs `runs/a/step-1`, `runs/b/step-2`, `runs/b/step-3`; tasks `one` and `two`.
struct World {
    sb: Sandbox,
    runs: PathBuf,
}

impl World {
    fn new() -> Self {
        let sb = Sandbox::new();
        let runs = sb.path().join("runs");
        common::copy_dir(
            &common::fixture_in("trained", "tiny-wso"),
            &runs.join("a/step-1"),
        );
        common::copy_dir(&common::fixture("llama_gqa"), &runs.join("b/step-2"));
        common::copy_dir(&common::fixture("llama_tied"), &runs.join("b/step-3"));
        sb.write("one.toml", task("one"));
        sb.write("two.toml", task("two"));
        sb.write("one.jsonl", docs(6, 0));
        sb.write("two.jsonl", docs(5, 1));
        Self { sb, runs }
    }

    /// `ckpt eval PATHS --tasks TASKS --store STORE --json`, checked to succeed.
    fn eval(&self, paths: &[&str], tasks: &[&str], store: &str) -> Value {
        let mut args: Vec<String> = vec!["eval".into()];
        args.extend(paths.iter().map(|p| arg(&self.runs.join(p)).to_string()));
        let files: Vec<String> = tasks.iter().map(|t| format!("{t}.toml")).collect();
        args.extend(["--tasks".into(), files.join(",")]);
        for t in tasks {
            args.extend(["--data".into(), format!("{t}={t}.jsonl")]);
        }
        args.extend(["--store".into(), store.into(), "--json".into()]);
        self.sb.run_json(&args)
    }

    fn ckpt(&self, args: &[&str]) -> std::process::Output {
        self.sb.run(args)
    }

    fn json(&self, args: &[&str]) -> Value {
        self.sb.run_json(args)
    }

    /// `ckpt report STORES --json`, without what names the store.
    fn report(&self, stores: &[&str], out: &str) -> Value {
        let mut args = vec!["report"];
        args.extend(stores);
        args.extend(["--out", out, "--json", "--format", "json,csv"]);
        let mut r = self.json(&args);
        r.as_object_mut().unwrap().remove("store");
        r
    }
}

fn computed(eval: &Value) -> i64 {
    eval["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["computed_requests"].as_i64().unwrap())
        .sum()
}

/// Each checkpoint's metrics, without when and by which version they were computed.
fn results(eval: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for c in eval["checkpoints"].as_array().unwrap() {
        let mut metrics = c["metrics"].clone();
        for m in metrics.as_array_mut().unwrap() {
            let m = m.as_object_mut().unwrap();
            m.remove("created_at");
            m.remove("ckpt_version");
        }
        out.push(json!({"path": c["path"], "fingerprint": c["fingerprint"], "metrics": metrics}));
    }
    out
}

fn added(merge: &Value, table: &str) -> i64 {
    merge["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["table"] == table)
        .unwrap()["added"]
        .as_i64()
        .unwrap()
}

/// The CSV files of a report directory, by name.
fn csvs(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn stores_written_apart_merge_into_the_store_one_process_writes() {
    let w = World::new();
    // One process, everything; then the same work split as shards split it.
    let all = w.eval(&["a", "b"], &["one", "two"], "all.sqlite");
    assert!(computed(&all) > 0);
    w.eval(&["a", "b"], &["one"], "shards/ckpt.shard-0-of-2.sqlite");
    w.eval(&["b"], &["two"], "shards/ckpt.shard-1-of-2.sqlite");
    w.eval(&["a"], &["two"], "a-two.sqlite");

    let merged = w.json(&[
        "store",
        "merge",
        "shards",
        "a-two.sqlite",
        "--into",
        "m.sqlite",
        "--json",
    ]);
    assert_eq!(merged["changed"], true);
    assert_eq!(added(&merged, "checkpoints"), 3, "{merged}");
    assert_eq!(
        added(&merged, "metrics"),
        12,
        "3 checkpoints x 2 tasks x 2 metrics"
    );

    // Nothing is left to compute, and the results are those of one process.
    let again = w.eval(&["a", "b"], &["one", "two"], "m.sqlite");
    assert_eq!(computed(&again), 0, "{again}");
    assert_eq!(results(&again), results(&all));

    // The report of the merged store is the report of the store one process wrote,
    // and so is the report of the shards read as one, without merging.
    let one = w.report(&["all.sqlite"], "rep-all");
    assert_eq!(w.report(&["m.sqlite"], "rep-m"), one);
    assert_eq!(w.report(&["shards", "a-two.sqlite"], "rep-shards"), one);
    let dir = w.sb.path();
    assert_eq!(csvs(&dir.join("rep-m")), csvs(&dir.join("rep-all")));

    // Merging again, or into itself, changes nothing.
    let before = std::fs::read(dir.join("m.sqlite")).unwrap();
    let out = w.ckpt(&["store", "merge", "shards", "m.sqlite", "--into", "m.sqlite"]);
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains("unchanged"), "{line}");
    assert_eq!(std::fs::read(dir.join("m.sqlite")).unwrap(), before);

    // The one-line summary.
    let out = w.ckpt(&["store", "merge", "shards", "--into", "s.sqlite"]);
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with("merged 2 stores into s.sqlite: checkpoints +3")
            && line.contains("metrics +10")
            && line.lines().count() == 1,
        "{line}"
    );
}

#[test]
fn status_says_what_is_done_failed_and_missing() {
    let w = World::new();
    w.eval(&["a", "b/step-2"], &["one"], "s.sqlite");
    // Every checkpoint of the store, every task with a result: all done.
    let status = w.json(&["store", "status", "s.sqlite", "--json"]);
    assert_eq!(status["tasks"], json!(["one"]));
    assert_eq!(
        (status["done"].as_i64(), status["missing"].as_i64()),
        (Some(2), Some(0))
    );

    // Asked about both tasks and every checkpoint under runs/: `two` is missing
    // everywhere, and b/step-3 (not in the store) misses both.
    let args = [
        "store",
        "status",
        "s.sqlite",
        "--tasks",
        "one.toml,two.toml",
        "--checkpoints",
        "runs",
    ];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let status = w.json(&json_args);
    assert_eq!(
        (status["done"].as_i64(), status["missing"].as_i64()),
        (Some(2), Some(4))
    );
    let step3 = status["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"].as_str().unwrap().ends_with("step-3"))
        .unwrap();
    assert_eq!(step3["tasks"], json!({"one": "missing", "two": "missing"}));
    let table = String::from_utf8_lossy(&w.ckpt(&args).stdout).into_owned();
    assert!(
        table.contains("3 checkpoints x 2 tasks in s.sqlite: 2 done, 0 failed, 4 missing"),
        "{table}"
    );

    // A checkpoint that fails (its config broken, its weights and so its fingerprint
    // intact) is failed, until another store has its result: a rerun elsewhere.
    let config = w.runs.join("b/step-3/config.json");
    let good = std::fs::read(&config).unwrap();
    std::fs::write(&config, b"{\"model_type\": \"llama\"}").unwrap();
    let out = w.ckpt(&[
        "eval",
        "runs/b/step-3",
        "--tasks",
        "one.toml",
        "--data",
        "one=one.jsonl",
        "--store",
        "s.sqlite",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let status = w.json(&["store", "status", "s.sqlite", "--json"]);
    let failed: Vec<&Value> = status["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["tasks"]["one"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{status}");
    assert!(failed[0]["error"].as_str().unwrap().contains("hidden_size"));
    std::fs::write(&config, good).unwrap();
    w.eval(&["b/step-3"], &["one"], "other.sqlite");
    let status = w.json(&["store", "status", "s.sqlite", "other.sqlite", "--json"]);
    assert_eq!(
        (status["done"].as_i64(), status["failed"].as_i64()),
        (Some(3), Some(0)),
        "{status}"
    );
    // Merged, the failure stays in the log and is no failure either.
    w.json(&[
        "store",
        "merge",
        "s.sqlite",
        "other.sqlite",
        "--into",
        "m.sqlite",
        "--json",
    ]);
    let status = w.json(&["store", "status", "m.sqlite", "--json"]);
    assert_eq!(status["failed"], 0, "{status}");
}

#[test]
fn a_conflict_is_one_error_line_naming_both_stores() {
    let w = World::new();
    w.eval(&["a"], &["one"], "x.sqlite");
    // The same task on other docs: the same key, another score.
    w.sb.write("one.jsonl", docs(6, 3));
    w.eval(&["a"], &["one"], "y.sqlite");
    let out = w.ckpt(&[
        "store", "merge", "x.sqlite", "y.sqlite", "--into", "m.sqlite",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("x.sqlite") && err.contains("y.sqlite") && err.contains("task=\"one\""),
        "{err}"
    );
    assert!(!w.sb.path().join("m.sqlite").exists());
    // Reading both as one is the same error.
    let out = w.ckpt(&["report", "x.sqlite", "y.sqlite"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("y.sqlite"));
}

#[test]
fn bad_input_is_one_error_line_or_a_usage_error() {
    let w = World::new();
    w.eval(&["a"], &["one"], "x.sqlite");
    w.sb.write("junk.sqlite", vec![7u8; 4096]);
    w.sb.write("empty/notes.txt", "");
    for (args, names) in [
        (vec!["nope.sqlite", "--into", "m.sqlite"], "nope.sqlite"),
        (vec!["junk.sqlite", "--into", "m.sqlite"], "junk.sqlite"),
        (vec!["empty", "--into", "m.sqlite"], "empty"),
        (vec!["x.sqlite", "--into", "missing/m.sqlite"], "missing"),
        (vec!["x.sqlite", "--into", "junk.sqlite"], "junk.sqlite"),
    ] {
        let mut full = vec!["store", "merge"];
        full.extend(&args);
        let out = w.ckpt(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.lines().count() == 1,
            "{err}"
        );
        assert!(err.contains(names), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!w.sb.path().join("m.sqlite").exists());
    for usage in [
        vec!["store", "merge", "x.sqlite"],
        vec!["store", "merge", "--into", "m.sqlite"],
        vec!["store"],
        vec!["store", "status", "--tasks", "one", "--suite", "pt"],
    ] {
        assert_eq!(w.ckpt(&usage).status.code(), Some(2), "{usage:?}");
    }
    let out = w.ckpt(&["store", "status", "nope.sqlite"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!w.sb.path().join("nope.sqlite").exists());
}

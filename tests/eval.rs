//! `ckpt eval` end to end through the binary: a synthetic multiple-choice task in ARC's
//! schema over two runs, the store's resume (rerun, kill -9), and bad input.

mod common;

use common::{arg, Sandbox};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A task spec in lm-eval's ARC form, read from a file (built-ins are tested apart).
const TASK: &str = r#"
task = "synthetic_arc"
dataset_path = "synthetic/arc"
output_type = "multiple_choice"
test_split = "test"
doc_to_text = "Question: {{question}}\nAnswer:"
doc_to_target = "{{choices.label.index(answerKey)}}"
doc_to_choice = "{{choices.text}}"
metric_list = [{ metric = "acc" }, { metric = "acc_norm" }]
"#;

const WORDS: [&str; 12] = [
    "blue", "stone", "river", "lamp", "green", "cloud", "seven", "bird", "glass", "tree", "salt",
    "moon",
];

/// `n` docs in the Hub's ARC schema, made of nonsense questions.
fn arc_docs(n: usize) -> String {
    (0..n)
        .map(|i| {
            let w = |k: usize| WORDS[(i * 7 + k * 5) % WORDS.len()];
            let key = ["A", "B", "C", "D"][i % 4];
            json!({
                "id": format!("syn-{i}"),
                "question": format!("Which {} is {} number {i}?", w(0), w(1)),
                "choices": {"text": [w(2), format!("{} {}", w(3), w(4)), w(5), w(6)], "label": ["A", "B", "C", "D"]},
                "answerKey": key,
            })
            .to_string()
                + "\n"
        })
        .collect()
}

/// Two runs: `runs/a/step-1` (a trained tiny model) and `runs/b/step-2` (another).
/// `--format`: a table too wide for the terminal (`COLUMNS`) prints long, one line per
/// metric as lm-eval prints; markdown, CSV and JSON carry the same cells.
#[test]
fn tables_fit_the_terminal_and_print_in_every_format() {
    let sb = Sandbox::new();
    let (runs, task, data) = setup(&sb, 4);
    let mut args = eval_args(&runs, &task, arg(&data), "s.sqlite");
    args.pop(); // --json
    let run = |format: &str, columns: &str| -> String {
        let mut a = args.clone();
        a.extend(["--format".to_string(), format.to_string()]);
        let out = sb.ckpt(&a).env("COLUMNS", columns).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let wide = run("table", "400");
    assert!(
        wide.contains("synthetic_arc acc") && !wide.contains("metric"),
        "{wide}"
    );
    let narrow = run("table", "30");
    assert!(
        narrow.contains("metric") && narrow.contains("value"),
        "{narrow}"
    );
    assert_eq!(
        narrow
            .lines()
            .filter(|l| l.contains("synthetic_arc acc"))
            .count(),
        2,
        "a line per checkpoint and metric: {narrow}"
    );
    assert_eq!(run("long", "400"), narrow);
    let csv = run("csv", "30");
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), "run,step,schedule,synthetic_arc acc");
    assert_eq!(lines.count(), 2, "{csv}");
    let md = run("md", "30");
    assert!(md.starts_with("| run | step | schedule |"), "{md}");
    let json: Value = serde_json::from_str(&run("json", "30")).unwrap();
    assert_eq!(json["checkpoints"].as_array().unwrap().len(), 2);

    // The other tables: inspect's and store status's.
    let csv_of = |args: &[&str]| -> Vec<String> {
        let out = sb.ckpt(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    let inspect = csv_of(&["inspect", arg(&runs), "--format", "csv"]);
    assert_eq!(
        inspect[0],
        "path,step,stage,schedule,arch,params,dtype,fingerprint"
    );
    assert_eq!(inspect.len(), 3);
    let status = csv_of(&["store", "status", "s.sqlite", "--format", "csv"]);
    assert_eq!(status[0], "run,step,checkpoint,done,failed,missing");
    assert_eq!(status.len(), 3, "{status:?}");
}

fn setup(sb: &Sandbox, docs: usize) -> (PathBuf, PathBuf, PathBuf) {
    let runs = sb.path().join("runs");
    common::copy_dir(
        &common::fixture_in("trained", "tiny-wso"),
        &runs.join("a/step-1"),
    );
    common::copy_dir(&common::fixture("llama_gqa"), &runs.join("b/step-2"));
    let task = sb.write("arc.toml", TASK);
    let data = sb.write("arc.jsonl", arc_docs(docs));
    (runs, task, data)
}

fn eval_args(runs: &Path, task: &Path, data: &str, store: &str) -> Vec<String> {
    vec![
        "eval".into(),
        arg(runs).into(),
        "--tasks".into(),
        arg(task).into(),
        "--data".into(),
        format!("synthetic_arc={data}"),
        "--store".into(),
        store.into(),
        "--json".into(),
    ]
}

fn metric(report: &Value, ckpt: usize, name: &str) -> Value {
    report["checkpoints"][ckpt]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[test]
fn scores_every_checkpoint_and_resumes_from_the_store() {
    let sb = Sandbox::new();
    let (runs, task, data) = setup(&sb, 12);
    let args = eval_args(&runs, &task, arg(&data), "s.sqlite");
    let first = sb.run_json(&args);
    let cks = first["checkpoints"].as_array().unwrap();
    assert_eq!(cks.len(), 2, "{first}");
    assert_eq!(cks[0]["run"], "a");
    assert_eq!(cks[1]["run"], "b");
    for (i, c) in cks.iter().enumerate() {
        // 12 docs x 4 choices, each answered once.
        assert_eq!(c["computed_requests"], 48, "{c}");
        let acc = metric(&first, i, "acc");
        assert_eq!(acc["n"], 12);
        let p = acc["value"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        // lm-eval's mean_stderr of 0/1 items: sqrt(p (1 - p) / (n - 1)).
        let se = (p * (1.0 - p) / 11.0).sqrt();
        assert!(
            (acc["stderr"].as_f64().unwrap() - se).abs() < 1e-12,
            "{acc}"
        );
    }
    // A rerun computes nothing and reports the same numbers.
    let again = sb.run_json(&args);
    for i in 0..2 {
        assert_eq!(again["checkpoints"][i]["computed_requests"], 0);
        assert_eq!(
            metric(&again, i, "acc_norm")["value"],
            metric(&first, i, "acc_norm")["value"]
        );
    }
    // A new checkpoint in a run is the only one scored.
    common::copy_dir(&common::fixture("llama_tied"), &runs.join("b/step-3"));
    let third = sb.run_json(&args);
    let computed: Vec<i64> = third["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["computed_requests"].as_i64().unwrap())
        .collect();
    assert_eq!(computed, vec![0, 0, 48]);
}

#[test]
fn the_table_groups_runs_and_names_the_store() {
    let sb = Sandbox::new();
    let (runs, task, data) = setup(&sb, 4);
    let mut args = eval_args(&runs, &task, arg(&data), "s.sqlite");
    args.pop();
    let out = sb.run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("synthetic_arc acc"), "{stdout}");
    assert!(stdout.contains("s.sqlite"), "{stdout}");
}

#[test]
fn kill_nine_mid_run_loses_nothing_and_scores_nothing_twice() {
    let sb = Sandbox::new();
    let (runs, task, data) = setup(&sb, 150);
    let reference = sb.run_json(eval_args(&runs, &task, arg(&data), "clean.sqlite"));

    let mut args = eval_args(&runs, &task, arg(&data), "killed.sqlite");
    args.extend(["--commit-every".into(), "16".into()]);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ckpt"))
        .current_dir(sb.path())
        .env("CKPT_CACHE_DIR", sb.cache_dir())
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let store = sb.path().join("killed.sqlite");
    let started = std::time::Instant::now();
    // Kill as soon as some, but not all, responses are committed.
    loop {
        let n = stored_responses(&store);
        if n > 0 || started.elapsed().as_secs() > 120 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = stored_responses(&store);
    assert!(
        before > 0 && before < 1200,
        "{before} responses stored before the kill"
    );

    let resumed = sb.run_json(&args);
    let computed: i64 = resumed["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["computed_requests"].as_i64().unwrap())
        .sum();
    assert_eq!(
        computed as usize + before,
        1200,
        "each request answered exactly once"
    );
    for i in 0..2 {
        for m in ["acc", "acc_norm"] {
            assert_eq!(
                metric(&resumed, i, m)["value"],
                metric(&reference, i, m)["value"]
            );
        }
    }
}

/// `ckpt sharpness PATH` with the tiny settings of these tests, into store `s.sqlite`.
fn tiny_sharpness(path: &str, more: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "sharpness",
        path,
        "--data",
        "texts.jsonl",
        "--seq-len",
        "16",
    ]
    .iter()
    .chain(&[
        "--max-batches",
        "1",
        "--samples",
        "2",
        "--store",
        "s.sqlite",
    ])
    .map(|s| s.to_string())
    .collect();
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

fn stored_responses(store: &std::path::Path) -> usize {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row("SELECT COUNT(*) FROM responses", [], |r| r.get::<_, i64>(0))
        .map(|n| n as usize)
        .unwrap_or(0)
}

#[test]
fn a_checkpoint_that_fails_is_reported_and_the_others_go_on() {
    let sb = Sandbox::new();
    let (runs, task, data) = setup(&sb, 4);
    std::fs::write(runs.join("b/step-2/model.safetensors"), b"not safetensors").unwrap();
    let out = sb.run(eval_args(&runs, &task, arg(&data), "s.sqlite"));
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["checkpoints"][0]["error"].is_null());
    assert_eq!(metric(&report, 0, "acc")["n"], 4);
    let err = report["checkpoints"][1]["error"].as_str().unwrap();
    assert!(err.contains("model.safetensors"), "{err}");
}

fn stderr_of(sb: &Sandbox, args: &[String]) -> String {
    let out = sb.run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_gets_clear_errors() {
    let sb = Sandbox::new();
    let (runs, task, data) = setup(&sb, 4);

    let mut unknown = eval_args(&runs, &task, arg(&data), "s.sqlite");
    unknown[3] = "no_such_task".into();
    assert!(stderr_of(&sb, &unknown).contains("no_such_task"));

    // A template naming a column the data lacks: the column and the field are named.
    let broken = sb.write("broken.toml", TASK.replace("{{question}}", "{{questoin}}"));
    let stderr = stderr_of(&sb, &eval_args(&runs, &broken, arg(&data), "s.sqlite"));
    assert!(
        stderr.contains("doc_to_text") && stderr.contains("questoin"),
        "{stderr}"
    );

    let empty = sb.write("empty.jsonl", "");
    let stderr = stderr_of(&sb, &eval_args(&runs, &task, arg(&empty), "s.sqlite"));
    assert!(
        stderr.contains("empty.jsonl") && stderr.contains("no documents"),
        "{stderr}"
    );

    let corrupt = sb.write("corrupt.sqlite", vec![42u8; 8192]);
    let stderr = stderr_of(&sb, &eval_args(&runs, &task, arg(&data), arg(&corrupt)));
    assert!(stderr.contains("corrupt.sqlite"), "{stderr}");

    let bad_toml = sb.write("bad.toml", TASK.replace("doc_to_choice", "doc_to_choise"));
    let stderr = stderr_of(&sb, &eval_args(&runs, &bad_toml, arg(&data), "s.sqlite"));
    assert!(
        stderr.contains("bad.toml") && stderr.contains("doc_to_choise"),
        "{stderr}"
    );
}

/// A WSM merge is an ordinary checkpoint to `ckpt eval` (issue 8's "done when").
#[test]
fn a_merged_checkpoint_is_scored_like_any_other() {
    let sb = Sandbox::new();
    let run = sb.path().join("wso");
    let fixture_run =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/merge/run");
    for step in std::fs::read_dir(&fixture_run).unwrap() {
        let step = step.unwrap();
        common::copy_dir(&step.path(), &run.join(step.file_name()));
    }
    let merged = sb.path().join("merged/wsm-cosine");
    let out = sb.run([
        "merge",
        arg(&run),
        "--emulate",
        "cosine",
        "--window",
        "200",
        "--out",
        arg(&merged),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task = sb.write("arc.toml", TASK);
    let data = sb.write("arc.jsonl", arc_docs(6));
    let report = sb.run_json(eval_args(
        &sb.path().join("merged"),
        &task,
        arg(&data),
        "s.sqlite",
    ));
    let c = &report["checkpoints"][0];
    assert_eq!(c["schedule"], "wsm", "{c}");
    let last = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(|e| ckpt::checkpoint::step_from_name(&e.unwrap().file_name().to_string_lossy()))
        .max();
    assert_eq!(
        c["step"].as_u64(),
        last,
        "the merge carries the newest source's step"
    );
    assert_eq!(metric(&report, 0, "acc")["n"], 6);
}

/// The paper's relative table: each run's final checkpoint against the best decayed one,
/// with the paired test on the same items.
#[test]
fn relative_table_compares_with_the_best_decayed_run() {
    let sb = Sandbox::new();
    let (runs, task, data) = setup(&sb, 12);
    std::fs::write(
        runs.join("b/step-2/ckpt.json"),
        r#"{"step": 2, "stage": "pre", "schedule": {"kind": "wsd", "alpha_pre": 0.1}}"#,
    )
    .unwrap();
    let report = sb.run_json(eval_args(&runs, &task, arg(&data), "s.sqlite"));
    let rel = &report["relative"];
    assert_eq!(rel["baselines"][0], "b", "{rel}");
    let row_a = &rel["rows"][0];
    assert_eq!(row_a[0], "a");
    let acc = |i| metric(&report, i, "acc")["value"].as_f64().unwrap();
    let delta = row_a[2][0]["delta"].as_f64().unwrap();
    assert!((delta - (acc(0) - acc(1))).abs() < 1e-12);
    assert_eq!(row_a[2][0]["test"]["n"], 12);
    assert_eq!(row_a[2][0]["test"]["method"], "mcnemar");
    let mut args = eval_args(&runs, &task, arg(&data), "s.sqlite");
    args.extend(["--baseline".into(), "nope".into()]);
    assert!(stderr_of(&sb, &args).contains("nope"));
}

/// Exports: lm-eval's results layout, per-sample lines, a CSV.
#[test]
fn exports_results_samples_and_csv() {
    let sb = Sandbox::new();
    let (runs, task, data) = setup(&sb, 5);
    let mut args = eval_args(&runs, &task, arg(&data), "s.sqlite");
    args.extend(["--output".into(), "out".into()]);
    let report = sb.run_json(&args);
    let out = sb.path().join("out");
    let step = report["checkpoints"][0]["step"].as_u64().unwrap();
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join(format!("results_a_{step}.json"))).unwrap(),
    )
    .unwrap();
    let acc = metric(&report, 0, "acc");
    assert_eq!(
        results["results"]["synthetic_arc"]["acc,none"],
        acc["value"]
    );
    assert_eq!(
        results["results"]["synthetic_arc"]["acc_stderr,none"],
        acc["stderr"]
    );
    assert_eq!(results["n-shot"]["synthetic_arc"], 0);
    let samples =
        std::fs::read_to_string(out.join(format!("samples_synthetic_arc_a_{step}.jsonl"))).unwrap();
    let lines: Vec<Value> = samples
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(
        lines[0]["responses"].as_array().unwrap().len(),
        4,
        "one log-likelihood per choice"
    );
    let mean: f64 = lines
        .iter()
        .map(|l| l["metrics"]["acc,none"].as_f64().unwrap())
        .sum::<f64>()
        / 5.0;
    assert!((mean - acc["value"].as_f64().unwrap()).abs() < 1e-12);
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 2 * 2,
        "header + 2 checkpoints x 2 metrics"
    );
}

/// `ckpt release` reads this checkpoint's scores from the store into the card's
/// `model-index`.
#[test]
fn release_cards_take_their_results_from_the_store() {
    let sb = Sandbox::new();
    let (runs, task, data) = setup(&sb, 6);
    let report = sb.run_json(eval_args(&runs, &task, arg(&data), "s.sqlite"));
    let acc = metric(&report, 0, "acc")["value"].as_f64().unwrap();
    let ckpt_dir = runs.join("a/step-1");
    std::fs::copy(
        common::fixture_in("trained", "texts.jsonl"),
        sb.path().join("texts.jsonl"),
    )
    .unwrap();
    let sharp = sb.run_json(tiny_sharpness(arg(&ckpt_dir), &["--json"]));
    let out = sb.run([
        "release",
        arg(&ckpt_dir),
        "--repo",
        "org/tiny-wso",
        "--dry-run",
        "preview",
        "--store",
        "s.sqlite",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let card = std::fs::read_to_string(sb.path().join("preview/README.md")).unwrap();
    assert!(card.contains("model-index"), "{card}");
    assert!(
        card.contains("synthetic/arc") && card.contains("synthetic_arc"),
        "{card}"
    );
    // The docs were a local file: the card does not pass them off as the Hub dataset.
    assert!(
        card.contains("(local files, not the Hub dataset)"),
        "{card}"
    );
    assert!(
        card.contains(&format!("{acc}")) || card.contains(&format!("{:.4}", acc)),
        "{card}"
    );
    assert!(
        card.contains("(this model)"),
        "the store's sharpness is in the card: {card}"
    );
    assert!(sharp[0]["estimate"].is_number());
}

/// The paper's Figure 4 from the store: sharpness of pre-training checkpoints against
/// their fine-tunes' score, with Pearson's r (checked against the formula here).
#[test]
fn sharpness_against_sft_scores_with_pearson_r() {
    let sb = Sandbox::new();
    std::fs::copy(
        common::fixture_in("trained", "texts.jsonl"),
        sb.path().join("texts.jsonl"),
    )
    .unwrap();
    let task = sb.write("arc.toml", TASK);
    let data = sb.write("arc.jsonl", arc_docs(8));
    let parents = ["llama_gqa", "llama_tied", "qwen2_bias"];
    let children = ["llama3_rope", "mistral_sharded", "llama_gqa"];
    let mut sharp = Vec::new();
    for (i, name) in parents.iter().enumerate() {
        let dir = sb.path().join(format!("pre/run{i}/step-10"));
        common::copy_dir(&common::fixture(name), &dir);
        let r = sb.run_json(tiny_sharpness(arg(&dir), &["--json"]));
        sharp.push((
            r[0]["fingerprint"].as_str().unwrap().to_string(),
            r[0]["estimate"].as_f64().unwrap(),
        ));
    }
    let mut scores = Vec::new();
    for (i, name) in children.iter().enumerate() {
        let dir = sb.path().join(format!("sft/run{i}/step-5"));
        common::copy_dir(&common::fixture(name), &dir);
        if i == 2 {
            // Same weights as parent 0 would share its fingerprint: perturb one byte.
            let f = dir.join("model.safetensors");
            let mut bytes = std::fs::read(&f).unwrap();
            let n = bytes.len();
            bytes[n - 1] ^= 1;
            std::fs::write(&f, bytes).unwrap();
        }
        let meta =
            json!({"step": 5, "stage": "sft", "parent": {"path": "x", "fingerprint": sharp[i].0}});
        std::fs::write(dir.join("ckpt.json"), meta.to_string()).unwrap();
        let report = sb.run_json(eval_args(&dir, &task, arg(&data), "s.sqlite"));
        scores.push(metric(&report, 0, "acc")["value"].as_f64().unwrap());
    }
    let out = sb.run(tiny_sharpness(
        "pre",
        &["--sft-plot", "fig4.svg", "--sft-task", "synthetic_arc:acc"],
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let svg = std::fs::read_to_string(sb.path().join("fig4.svg")).unwrap();
    assert!(
        svg.contains("Pearson r") || stderr.contains("too few"),
        "{stderr}"
    );
    let xs: Vec<f64> = sharp.iter().map(|s| s.1).collect();
    let (mx, my) = (
        xs.iter().sum::<f64>() / 3.0,
        scores.iter().sum::<f64>() / 3.0,
    );
    let cov: f64 = xs
        .iter()
        .zip(&scores)
        .map(|(x, y)| (x - mx) * (y - my))
        .sum();
    let vx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let vy: f64 = scores.iter().map(|y| (y - my).powi(2)).sum();
    if vy > 0.0 {
        let r = cov / (vx * vy).sqrt();
        assert!(
            stderr.contains(&format!("Pearson r = {r:.3}")),
            "r = {r:.3}: {stderr}"
        );
    }
}

/// The issue's "done when": the paper's `pt` suite over a directory of runs, on
/// synthetic data in each benchmark's Hub schema, with the relative table.
#[test]
fn the_pt_suite_over_several_runs_prints_both_tables() {
    let sb = Sandbox::new();
    common::wso_and_decayed_runs(sb.path());
    let out = sb.run(["synth", "--eval-tasks", "evaldata", "--eval-docs", "12"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = [
        "eval",
        "runs",
        "--suite",
        "pt",
        "--data-dir",
        "evaldata",
        "--limit",
        "6",
    ];
    let out = sb.run(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for task in [
        "arc_easy",
        "arc_challenge",
        "boolq",
        "hellaswag",
        "openbookqa",
        "piqa",
        "winogrande",
        "validation_loss",
    ] {
        assert!(stdout.contains(task), "{task} missing: {stdout}");
    }
    assert!(
        stdout.contains("Relative to the best decayed schedule") && stdout.contains("Δ vs wsd"),
        "{stdout}"
    );
    let again = sb.run(args);
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 requests computed"));
}

/// MMLU's 57 subjects are one column: lm-eval's size-weighted group mean.
#[test]
fn groups_are_one_size_weighted_column() {
    let sb = Sandbox::new();
    common::copy_dir(
        &common::fixture("llama_gqa"),
        &sb.path().join("runs/a/step-1"),
    );
    let out = sb.run(["synth", "--eval-tasks", "evaldata", "--eval-docs", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = [
        "eval",
        "runs",
        "--tasks",
        "mmlu",
        "--data-dir",
        "evaldata",
        "--limit",
        "3",
        "--num-fewshot",
        "0",
    ];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let report = sb.run_json(&json_args);
    let metrics = report["checkpoints"][0]["metrics"].as_array().unwrap();
    let subjects: Vec<&Value> = metrics
        .iter()
        .filter(|m| m["task"].as_str().unwrap().starts_with("mmlu_") && m["metric"] == "acc")
        .collect();
    assert_eq!(subjects.len(), 57);
    let group = metrics
        .iter()
        .find(|m| m["task"] == "mmlu" && m["metric"] == "acc")
        .expect("group row");
    let n: f64 = subjects.iter().map(|m| m["n"].as_f64().unwrap()).sum();
    let mean: f64 = subjects
        .iter()
        .map(|m| m["n"].as_f64().unwrap() * m["value"].as_f64().unwrap())
        .sum::<f64>()
        / n;
    assert!((group["value"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert_eq!(group["n"].as_f64().unwrap(), n);
    let table = String::from_utf8_lossy(&sb.run(args).stdout).into_owned();
    assert!(
        table.contains("mmlu acc") && !table.contains("mmlu_anatomy"),
        "{table}"
    );
}

/// A store another process holds locked: a clear error after the wait, no hang.
#[test]
fn a_locked_store_is_a_clear_error() {
    let sb = Sandbox::new();
    let (runs, task, data) = setup(&sb, 2);
    sb.run_json(eval_args(&runs, &task, arg(&data), "s.sqlite"));
    let holder = rusqlite::Connection::open(sb.path().join("s.sqlite")).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::fs::write(sb.path().join("arc.jsonl"), arc_docs(3)).unwrap();
    let mut args = eval_args(&runs, &task, arg(&data), "s.sqlite");
    args.extend(["--store-timeout".to_string(), "1".to_string()]);
    let started = std::time::Instant::now();
    let out = sb.ckpt(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed().as_secs_f64() < 10.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // First what is happening, then the error naming the store.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].contains("is locked by") && lines[0].contains("waiting up to 1 s"),
        "{stderr}"
    );
    // This test process holds the lock: the store names it.
    assert!(
        lines[0].contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("error:")
            && lines[1].contains("s.sqlite")
            && lines[1].contains("locked by"),
        "{stderr}"
    );
}

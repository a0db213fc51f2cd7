//! The built-in benchmark tasks through the real binary: `ckpt tasks` lists them and
//! the suites, and `ckpt tasks --show` renders exactly the requests
//! lm-evaluation-harness 0.4.13 builds on the same synthetic data (the fixture
//! `tests/fixtures/eval/parity_prompts.json`, made by `scripts/eval_parity.py`).

mod common;

use common::{arg, Sandbox};
use serde_json::Value;
use std::path::Path;

fn fixture() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/parity_prompts.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `ckpt synth --eval-tasks` into the sandbox with the fixture's settings.
fn synthetic_data(sb: &Sandbox, synth: &Value) -> std::path::PathBuf {
    let dir = sb.path().join("data");
    let n = |k: &str| synth[k].as_u64().unwrap().to_string();
    let args = [
        "synth",
        "--eval-tasks",
        arg(&dir),
        "--seed",
        &n("seed"),
        "--entities",
        &n("entities"),
    ];
    sb.ckpt(args)
        .args(["--eval-docs", &n("eval_docs"), "-q"])
        .assert()
        .success();
    dir
}

fn show_lines(out: &std::process::Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "ckpt tasks --show failed: {}",
        stderr(out)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn prompts_are_lm_evals_byte_for_byte() {
    let reference = fixture();
    let sb = Sandbox::new();
    let data = synthetic_data(&sb, &reference["synth"]);
    let fewshot = data.join("fewshot");
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let task = case["task"].as_str().unwrap();
        let limit = case["limit"].to_string();
        let mut cmd = sb.ckpt(["tasks", "--show", task, "--limit", &limit]);
        cmd.args(["--data-dir", arg(&data), "--fewshot-dir", arg(&fewshot)]);
        if let Some(n) = case["num_fewshot"].as_u64() {
            cmd.args(["--num-fewshot", &n.to_string()]);
        }
        let ours = show_lines(&cmd.output().unwrap());
        let theirs = case["lines"].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{task}: docs");
        for (a, b) in ours.iter().zip(theirs) {
            assert_eq!(
                a, b,
                "{task} ({} shots) doc {} differs from lm-eval's; if the synthetic data changed on \
                 purpose, rerun scripts/eval_parity.py",
                case["num_fewshot"], b["doc_id"]
            );
        }
    }
}

#[test]
fn lists_tasks_groups_and_suites() {
    let sb = Sandbox::new();
    let all = sb.run_json(["tasks", "--json"]);
    let rows = all.as_array().unwrap();
    assert_eq!(rows.len(), 106, "7 zero-shot + 57 MMLU + 2 TruthfulQA + 2 GSM8K + DROP + 27 BBH + 9 AGIEval + validation loss");
    let row = |name: &str| rows.iter().find(|r| r["task"] == name).unwrap().clone();
    assert_eq!(row("mmlu_anatomy")["group"], "mmlu");
    assert_eq!(row("mmlu_anatomy")["fewshot_split"], "dev");
    assert_eq!(row("gsm8k_cot")["fewshot_split"], "file");
    assert_eq!(row("hellaswag")["split"], "validation");
    assert_eq!(row("drop")["metrics"], serde_json::json!(["em", "f1"]));
    assert_eq!(row("arc_easy")["version"], "1.0");

    let sft = sb.run_json(["tasks", "--suite", "sft", "--json"]);
    let shots = |name: &str| {
        sft.as_array()
            .unwrap()
            .iter()
            .find(|r| r["task"] == name)
            .unwrap()["num_fewshot"]
            .clone()
    };
    assert_eq!(shots("mmlu_world_religions"), 5);
    assert_eq!(shots("bbh_cot_fewshot_navigate"), 3);
    assert_eq!(
        shots("truthfulqa_mc1"),
        6,
        "the preamble is never overridden"
    );

    let table = sb.ckpt(["tasks", "--suite", "pt"]).assert().success();
    let text = String::from_utf8_lossy(&table.get_output().stdout).into_owned();
    assert!(
        text.contains("validation_loss") && text.contains("8 tasks"),
        "{text}"
    );
}

#[test]
fn unknown_names_and_missing_inputs_are_explained() {
    let sb = Sandbox::new();
    let out = sb.run(["tasks", "hellaswg"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("did you mean hellaswag"),
        "{}",
        stderr(&out)
    );
    let out = sb.run(["tasks", "--suite", "nope"]);
    assert!(
        stderr(&out).contains("unknown suite `nope`"),
        "{}",
        stderr(&out)
    );

    let out = sb.run(["tasks", "--show", "arc_easy", "--data-dir", "nowhere"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--data-dir nowhere: no such directory"),
        "{}",
        stderr(&out)
    );
    // A data directory without the task's files names where they would be.
    std::fs::create_dir_all(sb.path().join("empty")).unwrap();
    let out = sb.run(["tasks", "--show", "arc_easy", "--data-dir", "empty"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("allenai/ai2_arc/ARC-Easy/test"),
        "{}",
        stderr(&out)
    );

    let data = sb.write(
        "gsm.jsonl",
        "{\"question\": \"One?\", \"answer\": \"#### 1\"}\n",
    );
    let out = sb.run([
        "tasks",
        "--show",
        "gsm8k_cot",
        "--data",
        &format!("gsm8k_cot={}", arg(&data)),
    ]);
    assert!(stderr(&out).contains("--fewshot-dir"), "{}", stderr(&out));

    let bad = sb.write(
        "bad.jsonl",
        "{\"question\": \"Q\", \"choices\": {\"text\": [\"a\"], \"label\": [\"A\"]}}\n",
    );
    let out = sb.run([
        "tasks",
        "--show",
        "arc_easy",
        "--data",
        &format!("arc_easy={}", arg(&bad)),
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("tasks/arc_easy.toml") && err.contains("answerKey"),
        "{err}"
    );
}

#[test]
fn user_specs_and_text_files() {
    let sb = Sandbox::new();
    sb.write(
        "specs/arc_easy.toml",
        "task = \"arc_easy\"\ndataset_path = \"allenai/ai2_arc\"\noutput_type = \"multiple_choice\"\n\
         test_split = \"test\"\ndoc_to_text = \"Q: {{ question }\"\ndoc_to_target = \"{{answerKey}}\"\n\
         doc_to_choice = \"{{choices.text}}\"\n",
    );
    let data = sb.write(
        "arc.jsonl",
        "{\"id\": \"x\", \"question\": \"Q\", \"choices\": {\"text\": [\"a\", \"b\"], \"label\": [\"A\", \"B\"]}, \"answerKey\": \"B\"}\n",
    );
    let out = sb.run([
        "tasks",
        "--show",
        "arc_easy",
        "--tasks-dir",
        "specs",
        "--data",
        &format!("arc_easy={}", arg(&data)),
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("specs/arc_easy.toml") && err.contains("doc_to_text line 1"),
        "{err}"
    );

    let texts = sb.write(
        "val.jsonl",
        "{\"text\": \"Alpha beta.\"}\n{\"text\": \"Gamma.\"}\n",
    );
    let out = sb.run([
        "tasks",
        "--show",
        "validation_loss",
        "--data",
        &format!("validation_loss={}", arg(&texts)),
    ]);
    let lines = show_lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[1]["requests"],
        serde_json::json!([{"type": "rolling", "text": "Gamma."}])
    );
}

//! Bad input found by the sweep of malformed values, files and streams: closed stdout,
//! task specs that do not fit their docs, out-of-range flags, files where directories
//! are expected, records of the wrong JSON type, serve requests and release metadata.
//! Each case goes through the real binary where it is about a command.

mod common;

use common::bad_input::*;
use common::{arg, copy_dir, fixture, fixture_in, texts_jsonl, Sandbox};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

// ----- a closed stdout -----

/// Runs `ckpt ARGS` with its stdout a pipe whose reader is gone before it prints (as
/// in `ckpt tasks | head` once `head` has exited).
fn run_with_closed_stdout(sb: &Sandbox, args: &[&str]) -> Output {
    let mut child = std_command(sb, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The child is still starting up: nothing it prints can reach the pipe before this.
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

/// `ckpt ARGS` as a std command (to spawn and watch), set up as `run` sets it up.
fn std_command(sb: &Sandbox, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ckpt"));
    cmd.current_dir(sb.path())
        .env("CKPT_CACHE_DIR", sb.cache_dir())
        .env("RUST_BACKTRACE", "1")
        .env_remove("CKPT_DEVICE")
        .env_remove("CKPT_LOG")
        .args(args);
    cmd
}

/// A closed stdout ends the command quietly: exit code 0 (or 141, killed by SIGPIPE, as
/// Unix tools are), nothing on stderr but what it says before printing.
#[track_caller]
fn assert_quiet_on_closed_stdout(sb: &Sandbox, args: &[&str]) {
    let out = run_with_closed_stdout(sb, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_clean(&stderr);
    assert!(
        !stderr.to_lowercase().contains("broken pipe"),
        "{args:?}: {stderr}"
    );
    assert!(
        matches!(out.status.code(), Some(0) | Some(141) | None),
        "{args:?}: exit {:?}; stderr:\n{stderr}",
        out.status
    );
}

/// An ARC-style task over 4 synthetic docs and two tiny checkpoints under `runs/`.
fn eval_setup(sb: &Sandbox) -> PathBuf {
    let runs = sb.path().join("runs");
    copy_dir(&fixture_in("trained", "tiny-wso"), &runs.join("a/step-1"));
    sb.write(
        "arc.toml",
        r#"
task = "synthetic_arc"
dataset_path = "synthetic/arc"
output_type = "multiple_choice"
test_split = "test"
doc_to_text = "Question: {{question}}\nAnswer:"
doc_to_target = "{{choices.label.index(answerKey)}}"
doc_to_choice = "{{choices.text}}"
metric_list = [{ metric = "acc" }]
"#,
    );
    let docs: String = (0..4)
        .map(|i| {
            let key = ["A", "B", "C"][i % 3];
            serde_json::json!({
                "question": format!("Which number is {i}?"),
                "choices": {"text": ["one two three four five", "six", "seven eight"], "label": ["A", "B", "C"]},
                "answerKey": key,
            })
            .to_string()
                + "\n"
        })
        .collect();
    sb.write("arc.jsonl", docs);
    runs
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let sb = Sandbox::new();
    let runs = eval_setup(&sb);
    let ckpt = runs.join("a/step-1");
    let texts = sb.path().join("texts.jsonl");
    std::fs::copy(fixture_in("trained", "texts.jsonl"), &texts).unwrap();
    let merge_run = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/merge/run");

    assert_quiet_on_closed_stdout(&sb, &["tasks"]);
    #[rustfmt::skip]
    let show = ["tasks", "--show", "arc_easy", "--data", "arc_easy=arc.jsonl", "--limit", "1"];
    assert_quiet_on_closed_stdout(&sb, &show);
    assert_quiet_on_closed_stdout(&sb, &["inspect", arg(&runs)]);
    assert_quiet_on_closed_stdout(&sb, &["score", arg(&ckpt), "--text", arg(&texts)]);
    #[rustfmt::skip]
    let eval = ["eval", arg(&runs), "--tasks", "arc.toml", "--data", "synthetic_arc=arc.jsonl", "--store", "s.sqlite"];
    assert_quiet_on_closed_stdout(&sb, &eval);
    assert_quiet_on_closed_stdout(&sb, &["report", "s.sqlite", "--out", "rep"]);
    #[rustfmt::skip]
    let sharpness = ["sharpness", arg(&ckpt), "--data", "texts.jsonl", "--seq-len", "16", "--max-batches", "1", "--samples", "2", "--store", "s.sqlite"];
    assert_quiet_on_closed_stdout(&sb, &sharpness);
    assert_quiet_on_closed_stdout(&sb, &["merge", arg(&merge_run), "--emulate", "cosine"]);
    #[rustfmt::skip]
    let synth = ["synth", "--out", "w", "--entities", "4", "--pretrain-docs", "10", "--midtrain-docs", "4", "--sft-chats", "4", "--validation-docs", "2"];
    assert_quiet_on_closed_stdout(&sb, &synth);
    #[rustfmt::skip]
    let tokenize = ["tokenize", "texts.jsonl", "--tokenizer", arg(&ckpt), "--out", "shards"];
    assert_quiet_on_closed_stdout(&sb, &tokenize);
    #[rustfmt::skip]
    let release = ["release", arg(&ckpt), "--repo", "org/tiny", "--dry-run", "preview"];
    assert_quiet_on_closed_stdout(&sb, &release);
}

// ----- sharpness flags -----

/// A usage error from clap: exit code 2, the flag and `must` named, no panic.
#[track_caller]
fn assert_usage_error(out: Output, flag: &str, must: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr:\n{stderr}");
    assert_clean(&stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: "), "{stderr}");
    assert!(first.contains(flag) && first.contains(must), "{stderr}");
}

/// `ckpt sharpness <llama_gqa> --data texts.jsonl MORE...`.
fn sharpness(sb: &Sandbox, more: &[&str]) -> Output {
    let dir = sb.copy_fixture("llama_gqa");
    let texts = texts_jsonl();
    let mut args = vec!["sharpness", arg(&dir), "--data", arg(&texts)];
    args.extend(more);
    run(sb, &args)
}

#[test]
fn sharpness_eps_too_small_for_the_dtype_is_refused() {
    let sb = Sandbox::new();
    let line = assert_bad_input(
        sharpness(&sb, &["--eps", "1e-300"]),
        &["--eps", "1e-6", "f32"],
        &["must be in"],
    );
    assert!(line.contains("0.1"), "{line}");
    assert_bad_input(
        sharpness(&sb, &["--eps", "1e-300", "--dtype", "f64"]),
        &["--eps", "1e-12", "f64"],
        &["must be in"],
    );
    assert_bad_input(sharpness(&sb, &["--eps", "5"]), &["--eps"], &["must be in"]);
}

#[test]
fn sharpness_eigen_iters_and_tolerances_are_ranged() {
    let sb = Sandbox::new();
    let cases: [(&[&str], &str, &str); 5] = [
        (
            &["--top-eigen", "--eigen-iters", "0"],
            "--eigen-iters",
            "1..",
        ),
        (&["--eigen-tol=-1e-3"], "--eigen-tol", "(0, 1]"),
        (&["--eigen-tol", "0"], "--eigen-tol", "(0, 1]"),
        (&["--rel-tol=-0.1"], "--rel-tol", "(0, 1]"),
        (&["--rel-tol", "nan"], "--rel-tol", "(0, 1]"),
    ];
    for (flags, flag, range) in cases {
        assert_usage_error(sharpness(&sb, flags), flag, range);
    }
}

// ----- tokenize -----

#[test]
fn tokenize_refuses_an_input_without_documents() {
    let sb = Sandbox::new();
    let tokenizer = fixture("llama_gqa");
    for (name, content) in [("empty.jsonl", ""), ("blank.txt", "  \n")] {
        let input = sb.write(name, content);
        #[rustfmt::skip]
        let out = run(&sb, &["tokenize", arg(&input), "--tokenizer", arg(&tokenizer), "--out", "shards"]);
        assert_bad_input(out, &[name], &["no documents"]);
        assert!(!sb.path().join("shards").exists(), "{name}: wrote shards");
    }
}

// ----- eval flags -----

#[test]
fn eval_max_length_too_short_for_an_answer_is_refused() {
    let sb = Sandbox::new();
    let runs = eval_setup(&sb);
    #[rustfmt::skip]
    let out = run(&sb, &["eval", arg(&runs), "--tasks", "arc.toml", "--data", "synthetic_arc=arc.jsonl", "--store", "s.sqlite", "--max-length", "1"]);
    assert_bad_input(
        out,
        &["--max-length", "at least"],
        &["shorter than the answer"],
    );
    // Long enough for every answer but not for the questions: scored, with a warning.
    #[rustfmt::skip]
    let out = run(&sb, &["eval", arg(&runs), "--tasks", "arc.toml", "--data", "synthetic_arc=arc.jsonl", "--store", "s.sqlite", "--max-length", "30"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warnings = stderr.matches("lose the start of their context").count();
    assert_eq!(warnings, 1, "one warning per checkpoint:\n{stderr}");
}

// ----- records of the wrong JSON type -----

/// An AlpacaEval set whose second line is a JSON array, not a record.
fn set_with_an_array_line(sb: &Sandbox) -> PathBuf {
    sb.write(
        "set.jsonl",
        "{\"instruction\": \"Say hi.\", \"output\": \"hi\"}\n[\"a\", \"b\"]\n",
    )
}

/// Runs `cmd` for at most `secs` seconds (a server that wrongly starts is killed).
fn output_within(mut cmd: std::process::Command, secs: u64) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn an_array_line_is_not_an_alpaca_eval_record() {
    let sb = Sandbox::new();
    let set = set_with_an_array_line(&sb);
    let runs = eval_setup(&sb);
    #[rustfmt::skip]
    let out = run(&sb, &["eval", arg(&runs), "--tasks", "alpaca_eval", "--instructions", arg(&set), "--judge-url", "http://127.0.0.1:9/v1"]);
    assert_bad_input(out, &["set.jsonl", "line 2"], &["not an object"]);

    let serve = std_command(&sb, &["serve", "--oracle", arg(&set), "--port", "0"]);
    let out = output_within(serve, 20);
    assert_bad_input(out, &["set.jsonl", "line 2"], &["not an object"]);
}

// ----- serve -----

/// `ckpt serve` of tiny-wso on a free port, killed on drop.
struct Server(common::Served);

impl Server {
    fn start(sb: &Sandbox) -> Self {
        let dir = sb.path().join("served");
        copy_dir(&fixture_in("trained", "tiny-wso"), &dir);
        Server(sb.serve([arg(&dir)]))
    }

    fn chat(&self, messages: serde_json::Value) -> (u16, serde_json::Value) {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/chat/completions", self.0.url))
            .json(&serde_json::json!({"messages": messages, "max_tokens": 2}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    }
}

#[test]
fn serve_refuses_unknown_roles_and_prompts_too_long_to_tokenize() {
    use serde_json::json;
    let sb = Sandbox::new();
    let server = Server::start(&sb);
    for role in ["wizard", ""] {
        let messages = json!([{"role": "user", "content": "Hi."}, {"role": role, "content": "x"}]);
        let (status, body) = server.chat(messages);
        assert_eq!(status, 400, "{role:?}: {body}");
        let error = &body["error"];
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert_eq!(error["param"], "messages[1].role", "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(&format!("{role:?}")), "{message}");
    }
    // 10 MB cannot fit the context: refused before it is tokenized (which takes seconds).
    let huge = "word ".repeat(2_000_000);
    let started = std::time::Instant::now();
    let (status, body) = server.chat(json!([{"role": "user", "content": huge}]));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length"),
        "{body}"
    );
    assert!(
        started.elapsed().as_secs_f64() < 3.0,
        "{:?}",
        started.elapsed()
    );
    let (status, body) = server.chat(json!([{"role": "user", "content": "Hi."}]));
    assert_eq!(status, 200, "{body}");
}

// ----- task specs against their docs -----

/// `ckpt eval` of the tiny checkpoint on `arc.toml` edited by `edit`, over `docs`.
fn eval_spec(sb: &Sandbox, edit: impl Fn(&str) -> String, docs: Option<&str>) -> Output {
    let runs = eval_setup(sb);
    let spec = std::fs::read_to_string(sb.path().join("arc.toml")).unwrap();
    sb.write("arc.toml", edit(&spec));
    if let Some(docs) = docs {
        sb.write("arc.jsonl", docs);
    }
    #[rustfmt::skip]
    let out = run(sb, &["eval", arg(&runs), "--tasks", "arc.toml", "--data", "synthetic_arc=arc.jsonl", "--store", "s.sqlite"]);
    out
}

#[test]
fn a_gold_answer_outside_the_choices_is_refused() {
    for (target, value) in [("99", "99"), ("-1", "\"-1\""), ("maybe", "\"maybe\"")] {
        let sb = Sandbox::new();
        let edit = |s: &str| s.replace("{{choices.label.index(answerKey)}}", target);
        let line = assert_bad_input(
            eval_spec(&sb, edit, None),
            &["arc.jsonl", "document 0", "synthetic_arc", value],
            &["not one of the 3 choices"],
        );
        assert!(line.contains("doc_to_target"), "{line}");
    }
    // An answer key that is not a label: `index()` fails, as it does in Python, and the
    // error names the document.
    let sb = Sandbox::new();
    let doc = r#"{"question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"}
"#;
    assert_bad_input(
        eval_spec(&sb, |s| s.to_string(), Some(doc)),
        &["arc.toml", "doc_to_target", "document 0", "arc.jsonl"],
        &["not in list"],
    );
    // An answer key past the choices.
    let sb = Sandbox::new();
    let doc = r#"{"question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"}
{"question": "R?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"}
"#;
    let edit = |s: &str| s.replace("{{choices.label.index(answerKey)}}", "{{answerKey}}");
    assert_bad_input(
        eval_spec(&sb, edit, Some(doc)),
        &["arc.jsonl", "document 0", "\"B\""],
        &["not one of the 2 choices"],
    );
}

#[test]
fn unknown_aggregations_and_empty_metric_lists_are_refused() {
    let sb = Sandbox::new();
    let edit = |s: &str| {
        s.replace(
            "metric_list = [{ metric = \"acc\" }]",
            "metric_list = [{ metric = \"acc\", aggregation = \"geomean\" }]",
        )
    };
    assert_bad_input(
        eval_spec(&sb, edit, None),
        &[
            "arc.toml",
            "synthetic_arc",
            "geomean",
            "mean, median, nanmean",
        ],
        &["unknown aggregation"],
    );
    let sb = Sandbox::new();
    let edit = |s: &str| s.replace("metric_list = [{ metric = \"acc\" }]", "metric_list = []");
    assert_bad_input(
        eval_spec(&sb, edit, None),
        &["arc.toml", "synthetic_arc", "metric_list"],
        &["empty"],
    );
}

#[test]
fn an_empty_text_is_not_scored_as_perplexity_one() {
    let sb = Sandbox::new();
    let texts = sb.write("t.jsonl", "{\"text\": \"a real text\"}\n{\"text\": \"\"}\n");
    let ckpt = sb.copy_fixture("llama_gqa");
    assert_bad_input(
        run(&sb, &["score", arg(&ckpt), "--text", arg(&texts)]),
        &["t.jsonl", "line 2", "text"],
        &["empty"],
    );
    let runs = eval_setup(&sb);
    #[rustfmt::skip]
    let out = run(&sb, &["eval", arg(&runs), "--tasks", "validation_loss", "--data", "validation_loss=t.jsonl", "--store", "s.sqlite"]);
    assert_bad_input(
        out,
        &["t.jsonl", "document 1", "validation_loss"],
        &["empty text"],
    );
}

// ----- a file where a checkpoint directory is expected -----

#[test]
fn a_file_is_not_a_directory_of_checkpoints() {
    let sb = Sandbox::new();
    sb.copy_fixture_to("llama_gqa", "runs/a/step-1");
    let notes = sb.write("runs/notes.txt", "not a checkpoint");
    let texts = texts_jsonl();
    // The file's directory holds a checkpoint: it must not be measured instead.
    #[rustfmt::skip]
    let commands: [Vec<&str>; 2] = [
        vec!["inspect", arg(&notes)],
        vec!["sharpness", arg(&notes), "--data", arg(&texts), "--samples", "1"],
    ];
    for args in commands {
        assert_bad_input(
            run(&sb, &args),
            &["notes.txt"],
            &["is a file, not a checkpoint directory"],
        );
    }
    assert!(!sb.path().join("runs/sharpness.jsonl").exists());
}

#[test]
fn a_bare_file_name_is_named_in_every_command() {
    let sb = Sandbox::new();
    sb.write("notes.txt", "not a checkpoint");
    let texts = texts_jsonl();
    #[rustfmt::skip]
    let commands: [Vec<&str>; 6] = [
        vec!["inspect", "notes.txt"],
        vec!["score", "notes.txt", "--text", arg(&texts)],
        vec!["eval", "notes.txt", "--tasks", "arc_easy", "--limit", "1"],
        vec!["sharpness", "notes.txt", "--data", arg(&texts)],
        vec!["merge", "notes.txt", "--emulate", "cosine"],
        vec!["release", "notes.txt", "--repo", "org/x", "--dry-run", "out"],
    ];
    for args in commands {
        let line = assert_bad_input(run(&sb, &args), &["notes.txt"], &["file", "checkpoint"]);
        assert!(!line.contains("on :"), "{args:?}: {line}");
    }
}

// ----- release metadata (dry run) -----

/// `ckpt release` dry run of a WSO copy of llama_gqa with `more` flags.
fn release(sb: &Sandbox, more: &[&str]) -> Output {
    let dir = sb.path().join("runs/wso/step-300");
    if !dir.exists() {
        copy_dir(&fixture("llama_gqa"), &dir);
        std::fs::write(
            dir.join("ckpt.json"),
            r#"{"step": 300, "tokens_seen": 1228800, "stage": "pre",
  "schedule": {"kind": "wso", "peak_lr": 0.003, "warmup": 20, "total_steps": 300, "alpha_pre": 1.0},
  "lr": 0.003, "train_loss": 3.21, "ckpt_version": "0.1.0"}"#,
        )
        .unwrap();
    }
    let mut args = vec![
        "release",
        arg(&dir),
        "--repo",
        "org/tiny",
        "--dry-run",
        "preview",
    ];
    args.extend(more);
    run(sb, &args)
}

#[test]
fn release_names_the_repo_flag() {
    let sb = Sandbox::new();
    let dir = sb.copy_fixture("llama_gqa");
    #[rustfmt::skip]
    let out = run(&sb, &["release", arg(&dir), "--repo", "../x", "--dry-run", "preview", "--allow-unknown-schedule"]);
    assert_bad_input(out, &["--repo", "../x"], &["invalid repository id"]);
}

#[test]
fn release_metadata_is_checked_like_the_hub() {
    let sb = Sandbox::new();
    let cases: [(&[&str], &str, &str); 6] = [
        (&["--revision", ""], "--revision", "empty"),
        (
            &["--revision", "../../main"],
            "--revision",
            "not a branch name",
        ),
        (&["--license", "0"], "--license", "not a Hub license id"),
        (
            &["--language", "english"],
            "--language",
            "not a language code",
        ),
        (
            &["--dataset", "../data"],
            "--dataset",
            "invalid repository id",
        ),
        (
            &["--dataset", "/tmp/x"],
            "--dataset",
            "invalid repository id",
        ),
    ];
    for (flags, flag, must) in cases {
        assert_usage_error(release(&sb, flags), flag, must);
    }
    assert!(!sb.path().join("preview").exists());
}

#[test]
fn release_refuses_results_out_of_range_and_a_release_without_weights() {
    let sb = Sandbox::new();
    let results = sb.write(
        "results.json",
        r#"{"evals": [{"task": "arc_easy", "dataset_type": "allenai/ai2_arc",
            "dataset_name": "ARC-Easy", "metric": "acc", "value": -0.4, "stage": "pre"}]}"#,
    );
    assert_bad_input(
        release(&sb, &["--results", arg(&results)]),
        &["results.json", "evals[0]", "acc", "-0.4"],
        &["out of [0, 1]"],
    );
    assert_bad_input(
        release(&sb, &["--exclude", "model.safetensors"]),
        &["--exclude", "model.safetensors"],
        &["removes the weights"],
    );
    assert!(!sb.path().join("preview").exists());
}

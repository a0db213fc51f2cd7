//! Pairwise judging (`ckpt eval --tasks alpaca_eval`) and `ckpt serve`, end to end
//! through the binary: a judge server on loopback (`common/judge_server.rs`) with
//! deterministic log-probabilities and injected faults, the store's resume after a
//! kill, the API key kept out of everything, and `ckpt serve` of a tiny checkpoint as
//! the judge. The metrics are checked against alpaca_eval's own functions through the
//! fixture `scripts/check_alpaca_metrics.py` wrote.

mod common;
#[path = "common/judge_server.rs"]
mod judge_server;

use ckpt::eval::judge::metrics::{win_rates, Judged};
use common::{arg, Sandbox};
use judge_server::{Fault, JudgeServer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Synthetic instructions and reference answers of varied lengths.
const INSTRUCTIONS: [(&str, &str); 6] = [
    ("Name a colour.", "Blue."),
    ("Say hello.", "Hello there, how are you doing today?"),
    ("Count to three.", "One, two, three."),
    (
        "What is a river?",
        "A river is a long natural stream of water flowing to the sea.",
    ),
    ("Give a fruit.", "Apple"),
    (
        "Describe the moon.",
        "The moon is bright and round at night.",
    ),
];

/// Two runs (`runs/a/step-1`: tiny-wso, `runs/b/step-2`: llama_gqa), the instruction
/// set and a reference outputs file.
fn setup(sb: &Sandbox) -> (PathBuf, PathBuf, PathBuf) {
    let runs = sb.path().join("runs");
    common::copy_dir(
        &common::fixture_in("trained", "tiny-wso"),
        &runs.join("a/step-1"),
    );
    common::copy_dir(&common::fixture("llama_gqa"), &runs.join("b/step-2"));
    let instructions: Vec<Value> = INSTRUCTIONS
        .iter()
        .map(|(i, _)| json!({"instruction": i, "dataset": "synthetic"}))
        .collect();
    let reference: Vec<Value> = INSTRUCTIONS
        .iter()
        .map(|(i, o)| json!({"instruction": i, "output": o, "generator": "ref-model"}))
        .collect();
    let ins = sb.write(
        "instructions.json",
        serde_json::to_string(&instructions).unwrap(),
    );
    let refs = sb.write("reference.json", serde_json::to_string(&reference).unwrap());
    (runs, ins, refs)
}

fn judge_args(runs: &Path, ins: &Path, refs: &Path, url: &str, store: &str) -> Vec<String> {
    [
        "eval",
        arg(runs),
        "--tasks",
        "alpaca_eval",
        "--judge-url",
        url,
        "--instructions",
        arg(ins),
        "--reference",
        arg(refs),
        "--max-new-tokens",
        "6",
        "--store",
        store,
        "--judge-backoff-ms",
        "10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A checkpoint's export directory (relative paths are the sandbox's).
fn export_dir(sb: &Sandbox, checkpoint: &Value) -> PathBuf {
    sb.path().join(checkpoint["export"].as_str().unwrap())
}

/// The alpaca_eval report of `ckpt eval --json`.
fn judged(report: &Value) -> &Vec<Value> {
    report["alpaca_eval"]["checkpoints"].as_array().unwrap()
}

/// ckpt's metrics equal alpaca_eval's (`get_winrate`, `get_length_controlled_winrate`
/// with the minimal and noreg GLMs) on the fixture's annotations: 1e-6 on win rates
/// and standard errors, 1e-3 on the LC win rate (1e-6 on it once liblinear is run to
/// convergence at the penalty alpaca_eval picked), counts exactly.
#[test]
fn metrics_equal_alpaca_evals_own() {
    let path = common::fixture_in("judge", "alpaca_metrics.json");
    let fixture = read_json(&path);
    for case in fixture["cases"].as_array().unwrap() {
        let anns = case["annotations"].as_array().unwrap();
        let items: Vec<Judged> = anns
            .iter()
            .map(|a| Judged {
                preference: a["preference"].as_f64(),
                reference_chars: a["output_1"].as_str().unwrap().chars().count(),
                model_chars: a["output_2"].as_str().unwrap().chars().count(),
            })
            .collect();
        let difficulty: Option<Vec<f64>> = case["difficulty"]
            .as_array()
            .map(|d| d.iter().map(|x| x.as_f64().unwrap()).collect());
        let same = anns[0]["generator_1"] == anns[0]["generator_2"];
        let ours = serde_json::to_value(win_rates(&items, difficulty.as_deref(), same)).unwrap();
        let theirs = &case["expected"];
        let name = case["name"].as_str().unwrap();
        for (key, tol) in [
            ("win_rate", 1e-6),
            ("standard_error", 1e-6),
            ("discrete_win_rate", 1e-6),
            ("length_controlled_winrate", 1e-3),
            ("lc_standard_error", 1e-3),
        ] {
            let (a, b) = (ours[key].as_f64(), theirs[key].as_f64());
            let close = match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() <= tol,
                (a, b) => a == b,
            };
            assert!(close, "{name}: {key} ckpt {a:?} vs alpaca_eval {b:?}");
        }
        for key in ["n_wins", "n_wins_base", "n_draws", "n_total"] {
            assert_eq!(ours[key], theirs[key], "{name}: {key}");
        }
        // liblinear stops at tolerance 1e-4; refit to 1e-12 it meets ckpt's exact solver.
        let (a, b) = (
            ours["length_controlled_winrate"].as_f64().unwrap(),
            theirs["lc_converged"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-6,
            "{name}: converged LC ckpt {a} vs liblinear {b}"
        );
    }
}

/// Every checkpoint answers, the judge compares, the order is mapped back: each
/// preference is 1 + the judge's p(longer answer) for the model's answer, computed
/// here from the exported outputs. A rerun asks the judge nothing.
#[test]
fn judges_every_checkpoint_and_maps_the_order_back() {
    let sb = Sandbox::new();
    let (runs, ins, refs) = setup(&sb);
    let judge = JudgeServer::start();
    let args = judge_args(&runs, &ins, &refs, &judge.url, "s.sqlite");
    let report = sb.run_json(with(args.clone(), &["--json"]));
    let n = INSTRUCTIONS.len();
    let cks = judged(&report);
    assert_eq!(cks.len(), 2);
    assert_eq!(
        report["alpaca_eval"]["judge"],
        judge_server::MODEL,
        "found in /v1/models"
    );
    assert_eq!(report["alpaca_eval"]["reference"], "ref-model");
    let calls = report["alpaca_eval"]["judge_calls"].as_u64().unwrap() as usize;
    assert_eq!(calls, judge.call_count());
    assert!(calls <= 2 * n && calls >= n, "{calls} calls");
    let mut firsts = 0;
    for c in cks {
        let dir = export_dir(&sb, c);
        assert!(
            dir.starts_with(sb.path().join("alpaca_eval")),
            "{}",
            dir.display()
        );
        let anns = read_json(&dir.join("annotations.json"));
        let outputs = read_json(&dir.join("model_outputs.json"));
        let anns = anns.as_array().unwrap();
        assert_eq!(anns.len(), n);
        let mut expected = 0.0;
        for (k, a) in anns.iter().enumerate() {
            assert_eq!(a["instruction"], INSTRUCTIONS[k].0);
            assert_eq!(a["output_1"], INSTRUCTIONS[k].1);
            assert_eq!(a["generator_1"], "ref-model");
            assert_eq!(a["generator_2"], c["generator"]);
            assert_eq!(a["output_2"], outputs[k]["output"]);
            assert_eq!(a["annotator"], judge_server::MODEL);
            let (m, r) = (
                a["output_2"].as_str().unwrap(),
                a["output_1"].as_str().unwrap(),
            );
            let p = judge_server::p_first(m, r);
            let pref = a["preference"].as_f64().unwrap();
            assert!(
                (pref - (1.0 + p)).abs() < 1e-9,
                "{k}: {pref} vs {}",
                1.0 + p
            );
            assert!(a["raw_completion"]["logprobs"]["content"][0]["top_logprobs"].is_array());
            expected += p;
        }
        let m = &c["metrics"];
        let wr = 100.0 * expected / n as f64;
        assert!(
            (m["win_rate"].as_f64().unwrap() - wr).abs() < 1e-9,
            "{m} vs {wr}"
        );
        assert!(m["length_controlled_winrate"].is_number(), "{m}");
        assert_eq!(read_json(&dir.join("metrics.json")), *m);
        assert_eq!(outputs[0]["generator"], c["generator"]);
        assert_eq!(outputs[0]["dataset"], "synthetic");
        firsts += judge
            .calls()
            .iter()
            .filter(|call| {
                outputs
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|o| o["output"] == call.answer_a.as_str())
            })
            .count();
    }
    assert!(
        firsts > 0 && firsts < judge.call_count(),
        "both orders are shown ({firsts})"
    );

    // A rerun: every generation and judge answer comes from the store.
    let before = judge.call_count();
    let out = sb.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("win rate") && text.contains("LC win rate"),
        "{text}"
    );
    assert!(text.contains("0 judge calls"), "{text}");
    assert_eq!(judge.call_count(), before);
}

/// Errors that may pass are retried (500, 429 honouring Retry-After, malformed JSON,
/// a timeout); an answer without log-probabilities is read from its text.
#[test]
fn faults_are_retried_and_missing_logprobs_fall_back_to_the_answer() {
    let sb = Sandbox::new();
    let (runs, ins, refs) = setup(&sb);
    let judge = JudgeServer::start();
    judge.fail_next(&[
        Fault::Status(500),
        Fault::RetryAfter(1),
        Fault::Malformed,
        Fault::Delay(Duration::from_secs(4)),
        Fault::NoLogprobs,
    ]);
    let args = with(
        judge_args(&runs.join("a"), &ins, &refs, &judge.url, "s.sqlite"),
        &["--json", "--concurrency", "1", "--judge-timeout", "1.5"],
    );
    let report = sb.run_json(&args);
    let n = INSTRUCTIONS.len();
    // Four failed attempts, then one answer per question.
    assert_eq!(judge.call_count(), n + 4);
    let calls = judge.calls();
    let gap = calls[2].at - calls[1].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 waited {gap:?}"
    );
    let c = &judged(&report)[0];
    let anns = read_json(&export_dir(&sb, c).join("annotations.json"));
    // The fifth call (the first to succeed) had no log-probabilities.
    let parsed: Vec<&Value> = anns
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["raw_completion"]["logprobs"].is_null())
        .collect();
    assert_eq!(parsed.len(), 1);
    let a = parsed[0];
    let p = judge_server::p_first(
        a["output_2"].as_str().unwrap(),
        a["output_1"].as_str().unwrap(),
    );
    let want = if p >= 0.5 { 2.0 } else { 1.0 };
    assert_eq!(a["preference"].as_f64(), Some(want));
    assert_eq!(c["metrics"]["n_total"], n);
}

/// An endpoint that is down: retries, then one clear error; the generations are kept.
#[test]
fn endpoint_down_is_a_clear_error() {
    let sb = Sandbox::new();
    let (runs, ins, refs) = setup(&sb);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let args = with(
        judge_args(&runs.join("a"), &ins, &refs, &url, "s.sqlite"),
        &["--judge-model", "m", "--judge-retries", "2"],
    );
    let out = sb.run(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect") && err.contains(&url),
        "{err}"
    );
    assert!(
        err.contains("after 3 attempts") && err.contains("rerun"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Without --judge-model, /v1/models is asked first and fails as clearly.
    let out = sb.run(judge_args(&runs.join("a"), &ins, &refs, &url, "s.sqlite"));
    let err = stderr(&out);
    assert!(
        err.contains("/v1/models") && err.contains("cannot connect"),
        "{err}"
    );
}

/// A fatal error (401) fails at once, keeps the answers already in, and never prints
/// the key, even when the server echoes it; the key is in no output, log, store or
/// export. A rerun asks only the questions left.
#[test]
fn api_key_stays_secret_and_a_failed_run_resumes() {
    let key = "sk-test-VerySecretKey-0123456789";
    let sb = Sandbox::new();
    let (runs, ins, refs) = setup(&sb);
    let judge = JudgeServer::start();
    judge.require_key(key);
    judge.fail_next(&[
        Fault::Delay(Duration::ZERO),
        Fault::Delay(Duration::ZERO),
        Fault::EchoAuth401,
    ]);
    let args = with(
        judge_args(&runs.join("a"), &ins, &refs, &judge.url, "s.sqlite"),
        &[
            "--concurrency",
            "1",
            "--judge-key-env",
            "MY_JUDGE_KEY",
            "-vv",
        ],
    );
    let out = sb.ckpt(&args).env("MY_JUDGE_KEY", key).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("401") && err.contains("Incorrect API key provided: Bearer ***"),
        "{err}"
    );
    assert!(
        err.contains("2 of 6 judge answers are in the store"),
        "{err}"
    );
    assert_eq!(judge.call_count(), 3, "a 401 is not retried");
    assert!(judge
        .calls()
        .iter()
        .all(|c| c.authorization.as_deref() == Some(&format!("Bearer {key}")[..])));
    let mut seen = vec![out.stdout.clone(), out.stderr.clone()];

    let out = sb
        .ckpt(with(args, &["--json"]))
        .env("MY_JUDGE_KEY", key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        judge.call_count(),
        3 + INSTRUCTIONS.len() - 2,
        "answered questions are not asked again"
    );
    seen.extend([out.stdout.clone(), out.stderr.clone()]);
    for entry in walkdir::WalkDir::new(sb.path())
        .into_iter()
        .filter_map(Result::ok)
    {
        if entry.file_type().is_file() {
            seen.push(std::fs::read(entry.path()).unwrap());
        }
    }
    for bytes in seen {
        let found = bytes.windows(key.len()).any(|w| w == key.as_bytes())
            || bytes.windows(20).any(|w| w == &key.as_bytes()[8..28]);
        assert!(
            !found,
            "the key leaked: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // Without the key the server refuses: a clear error, not a retry loop.
    let out = sb.run(judge_args(
        &runs.join("b"),
        &ins,
        &refs,
        &judge.url,
        "s.sqlite",
    ));
    assert!(
        stderr(&out).contains("missing or wrong API key"),
        "{}",
        stderr(&out)
    );
}

/// `kill -9` while the judge is answering: the rerun asks only what was not answered.
#[test]
fn killed_run_resumes_without_repeating_a_call() {
    let sb = Sandbox::new();
    let (runs, ins, refs) = setup(&sb);
    let judge = JudgeServer::start();
    judge.fail_next(&[
        Fault::Delay(Duration::ZERO),
        Fault::Delay(Duration::ZERO),
        Fault::Delay(Duration::ZERO),
        Fault::Hang,
    ]);
    let args = with(
        judge_args(&runs.join("a"), &ins, &refs, &judge.url, "s.sqlite"),
        &["--concurrency", "1"],
    );
    let mut child = spawn(&sb, &args);
    let started = Instant::now();
    while judge.call_count() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run never reached the judge"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let out = sb.run(with(args, &["--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["alpaca_eval"]["cached_answers"], 3);
    assert_eq!(judge.call_count(), 4 + INSTRUCTIONS.len() - 3);
    assert_eq!(
        judged(&report)[0]["generated"],
        0,
        "the generations were kept too"
    );
}

/// Several judge calls are in flight at once, never more than asked.
#[test]
fn judge_calls_run_concurrently() {
    let sb = Sandbox::new();
    let (runs, ins, refs) = setup(&sb);
    let judge = JudgeServer::start();
    judge.set_delay(Duration::from_millis(300));
    let args = with(
        judge_args(&runs, &ins, &refs, &judge.url, "s.sqlite"),
        &["--concurrency", "3"],
    );
    let out = sb.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let max = judge.max_in_flight();
    assert!((2..=3).contains(&max), "{max} calls in flight");
}

/// `--instructions ORG/NAME` reads the Hub dataset's `alpaca_eval.json` through the
/// Hugging Face cache (offline here); without `--reference`, the set's own `output`
/// fields are the reference, under their `generator` name.
#[test]
fn instructions_from_the_hub_cache_with_their_own_reference() {
    let sb = Sandbox::new();
    let (runs, _, _) = setup(&sb);
    let repo = sb
        .path()
        .join("hf-home/hub/datasets--synthetic-org--instructions");
    let sha = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), sha).unwrap();
    let set: Vec<Value> = INSTRUCTIONS
        .iter()
        .map(|(i, o)| json!({"instruction": i, "output": o, "generator": "gold", "dataset": "syn"}))
        .collect();
    let file = repo.join("snapshots").join(sha).join("alpaca_eval.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, serde_json::to_string(&set).unwrap()).unwrap();
    let judge = JudgeServer::start();
    let out = sb
        .ckpt([
            "eval",
            arg(&runs.join("a")),
            "--tasks",
            "alpaca_eval",
            "--judge-url",
            &judge.url,
            "--instructions",
            "synthetic-org/instructions",
            "--max-new-tokens",
            "4",
            "--limit",
            "4",
            "--store",
            "s.sqlite",
            "--json",
        ])
        .env("HF_HOME", sb.path().join("hf-home"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["alpaca_eval"]["reference"], "gold");
    let c = &judged(&report)[0];
    assert_eq!(c["metrics"]["n_total"], 4, "--limit keeps the first 4");
    let anns = read_json(&export_dir(&sb, c).join("annotations.json"));
    assert_eq!(anns[3]["output_1"], INSTRUCTIONS[3].1);
    assert_eq!(judge.call_count(), 4);
}

#[test]
fn bad_input_is_a_clear_error() {
    let sb = Sandbox::new();
    let (runs, ins, refs) = setup(&sb);
    let judge = JudgeServer::start();
    let base = judge_args(&runs.join("a"), &ins, &refs, &judge.url, "s.sqlite");
    // No judge.
    let out = sb.run(["eval", arg(&runs), "--tasks", "alpaca_eval"]);
    assert!(stderr(&out).contains("--judge-url"), "{}", stderr(&out));
    // A reference without one of the instructions.
    let partial = sb.write(
        "partial.json",
        r#"[{"instruction": "Name a colour.", "output": "Red."}]"#,
    );
    let mut args = base.clone();
    let at = args.iter().position(|a| a == "--reference").unwrap();
    args[at + 1] = arg(&partial).to_string();
    let err = stderr(&sb.run(&args));
    assert!(
        err.contains("partial.json") && err.contains("instruction 1"),
        "{err}"
    );
    // An instruction file that is not AlpacaEval's layout.
    let bad = sb.write("bad.jsonl", "{\"prompt\": \"x\"}\n");
    let mut args = base.clone();
    let at = args.iter().position(|a| a == "--instructions").unwrap();
    args[at + 1] = arg(&bad).to_string();
    let err = stderr(&sb.run(&args));
    assert!(
        err.contains("bad.jsonl") && err.contains("line 1") && err.contains("instruction"),
        "{err}"
    );
    // A judge template that does not show both answers.
    let t = sb.write("t.j2", "{{ instruction }} {{ output_a }}");
    let err = stderr(&sb.run(with(base.clone(), &["--judge-template", arg(&t)])));
    assert!(err.contains("t.j2") && err.contains("output_b"), "{err}");
    // No reference and instructions without outputs.
    let mut args = base.clone();
    let at = args.iter().position(|a| a == "--reference").unwrap();
    args.drain(at..at + 2);
    let err = stderr(&sb.run(&args));
    assert!(
        err.contains("no --reference") && err.contains("instruction 0"),
        "{err}"
    );
    // A difficulty file of the wrong length.
    let d = sb.write("d.csv", "index,instruction_difficulty\n0,0.5\n");
    let err = stderr(&sb.run(with(base, &["--difficulty", arg(&d)])));
    assert!(
        err.contains("d.csv") && err.contains("1 difficulties for 6"),
        "{err}"
    );
    assert_eq!(judge.call_count(), 0);
}

fn spawn(sb: &Sandbox, args: &[String]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("ckpt"))
        .current_dir(sb.path())
        .env("CKPT_CACHE_DIR", sb.cache_dir())
        .env_remove("CKPT_DEVICE")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `ckpt serve` on a free port; returns the process and its base URL.
fn serve(sb: &Sandbox, ckpt: &Path, extra: &[&str]) -> (common::Served, String) {
    let served = sb.serve(std::iter::once(arg(ckpt)).chain(extra.iter().copied()));
    let url = served.url.clone();
    (served, url)
}

fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::blocking::Client::new()
        .post(url)
        .json(&body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap())
}

/// A copy of tiny-wso that accepts long prompts (its RoPE has no learned length limit;
/// the copy only raises `max_position_embeddings`).
fn long_context_tiny(sb: &Sandbox, rel: &str) -> PathBuf {
    let dir = sb.path().join(rel);
    common::copy_dir(&common::fixture_in("trained", "tiny-wso"), &dir);
    let mut cfg = read_json(&dir.join("config.json"));
    cfg["max_position_embeddings"] = json!(2048);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

/// The OpenAI schema of `ckpt serve`: models, chat completions with log-probabilities
/// over the whole vocabulary (they sum to one), completions, stop strings, errors.
#[test]
fn serve_answers_the_openai_schema() {
    let sb = Sandbox::new();
    let dir = long_context_tiny(&sb, "judge/step-9");
    let (_server, url) = serve(&sb, &dir, &["--model-name", "tiny"]);
    let models: Value = reqwest::blocking::get(format!("{url}/models"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");

    let vocab = 320;
    let (status, chat) = post(
        &format!("{url}/chat/completions"),
        json!({"model": "tiny", "messages": [{"role": "user", "content": "Say a word."}],
               "max_tokens": 3, "logprobs": true, "top_logprobs": vocab, "temperature": 0}),
    );
    assert_eq!(status, 200, "{chat}");
    assert_eq!(chat["object"], "chat.completion");
    let choice = &chat["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let content = choice["logprobs"]["content"].as_array().unwrap();
    assert!(!content.is_empty() && content.len() <= 3);
    for t in content {
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), vocab);
        let mass: f64 = top
            .iter()
            .map(|x| x["logprob"].as_f64().unwrap().exp())
            .sum();
        assert!((mass - 1.0).abs() < 1e-4, "probabilities sum to {mass}");
        assert_eq!(top[0]["token"], t["token"], "greedy: the most likely token");
        assert_eq!(top[0]["logprob"], t["logprob"]);
    }
    let text: String = content
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(choice["message"]["content"], text.as_str());
    assert_eq!(chat["usage"]["completion_tokens"], content.len());

    // Completions: greedy, so the same prompt gives the same text; a stop string cuts it.
    let (status, c) = post(
        &format!("{url}/completions"),
        json!({"prompt": "Once upon a time", "max_tokens": 8, "logprobs": 2, "temperature": 0}),
    );
    assert_eq!(status, 200, "{c}");
    let full = c["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(
        c["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    let stop: String = full.chars().skip(2).take(2).collect();
    if !stop.trim().is_empty() {
        let (_, cut) = post(
            &format!("{url}/completions"),
            json!({"prompt": "Once upon a time", "max_tokens": 8, "stop": [stop], "temperature": 0}),
        );
        let cut = cut["choices"][0]["text"].as_str().unwrap();
        assert!(
            full.starts_with(cut) && !cut.contains(&stop),
            "{full:?} {cut:?} {stop:?}"
        );
    }

    // Errors in OpenAI's shape.
    let (status, e) = post(
        &format!("{url}/completions"),
        json!({"model": "other", "prompt": "x"}),
    );
    assert_eq!(status, 404);
    assert!(e["error"]["message"].as_str().unwrap().contains("`other`"));
    let (status, e) = post(
        &format!("{url}/chat/completions"),
        json!({"messages": [], "stream": false}),
    );
    assert_eq!(status, 400, "{e}");
    let (status, _) = post(
        &format!("{url}/chat/completions"),
        json!({"messages": [{"role": "user", "content": "x"}], "n": 0}),
    );
    assert_eq!(status, 400);
    let (status, _) = post(&format!("{url}/embeddings"), json!({}));
    assert_eq!(status, 404);
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/chat/completions"))
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

/// `ckpt serve` of a tiny checkpoint is the judge of `ckpt eval --tasks alpaca_eval`
/// (every preference comes from its log-probabilities of `A` and `B`), and one of the
/// checkpoints is the reference: it answers once, and judged against itself its LC win
/// rate is 50 by construction.
#[test]
fn serve_is_the_judge_end_to_end() {
    let sb = Sandbox::new();
    let (runs, ins, _) = setup(&sb);
    let dir = long_context_tiny(&sb, "judges/tiny");
    let (_server, url) = serve(&sb, &dir, &[]);
    let reference = runs.join("b/step-2");
    let args = with(
        judge_args(&runs, &ins, &reference, &url, "s.sqlite"),
        &[
            "--json",
            "--judge-top-logprobs",
            "320",
            "--concurrency",
            "2",
        ],
    );
    let report = sb.run_json(&args);
    assert_eq!(report["alpaca_eval"]["judge"], "judges/tiny");
    assert_eq!(report["alpaca_eval"]["reference"], "b/step-2");
    let cks = judged(&report);
    let itself = cks.iter().find(|c| c["generator"] == "b/step-2").unwrap();
    assert_eq!(
        itself["generated"], 0,
        "the reference's answers are its own"
    );
    assert_eq!(itself["metrics"]["length_controlled_winrate"], 50.0);
    for c in cks {
        let m = &c["metrics"];
        assert_eq!(m["n_total"], INSTRUCTIONS.len(), "{c}");
        let wr = m["win_rate"].as_f64().unwrap();
        assert!(wr > 0.0 && wr < 100.0, "{m}");
        let anns = read_json(&export_dir(&sb, c).join("annotations.json"));
        for a in anns.as_array().unwrap() {
            let p = a["preference"].as_f64().unwrap();
            assert!(
                p > 1.0 && p < 2.0,
                "a probability, not a parsed answer: {p}"
            );
            let top = a["raw_completion"]["logprobs"]["content"][0]["top_logprobs"]
                .as_array()
                .unwrap();
            let lp = |id: &str| {
                top.iter()
                    .filter(|t| t["token"].as_str().unwrap().trim() == id)
                    .map(|t| t["logprob"].as_f64().unwrap().exp())
                    .sum::<f64>()
            };
            let p_a = lp("A") / (lp("A") + lp("B"));
            // Either order: the preference is p(A) or 1 - p(A), mapped back.
            let d = (p - 1.0 - p_a).abs().min((p - 2.0 + p_a).abs());
            assert!(d < 1e-6, "{p} vs p(A) = {p_a}");
            if c["generator"] == "b/step-2" {
                assert_eq!(a["output_1"], a["output_2"]);
            }
        }
    }
}

//! Bad numbers through the real binary: zeros, huge values, NaN and out-of-domain
//! settings in flags, recipes and config.json. The rule is the one of
//! `tests/common/bad_input.rs`: one `error:` line naming the flag, key or file and the
//! allowed range, exit code 1 (clap's usage errors: 2), never a panic or a hang.

mod common;

use common::bad_input::*;
use common::{arg, texts_jsonl, Sandbox};
use std::path::Path;
use std::process::Output;

/// `ckpt eval DIR --tasks validation_loss --data validation_loss=texts.jsonl EXTRA...`.
fn eval_validation_loss(sb: &Sandbox, dir: &Path, extra: &[&str]) -> Output {
    let data = format!("validation_loss={}", arg(&texts_jsonl()));
    let mut args = vec![
        "eval",
        arg(dir),
        "--tasks",
        "validation_loss",
        "--data",
        &data,
    ];
    args.extend_from_slice(extra);
    run(sb, &args)
}

// ----- ckpt eval / ckpt score window sizes -----

#[test]
fn eval_rejects_max_length_zero() {
    let sb = Sandbox::new();
    let dir = sb.copy_fixture("llama_gqa");
    let out = eval_validation_loss(&sb, &dir, &["--max-length", "0"]);
    assert_bad_input(out, &["--max-length"], &["at least 1"]);
}

#[test]
fn eval_rejects_batch_tokens_zero() {
    let sb = Sandbox::new();
    let dir = sb.copy_fixture("llama_gqa");
    let out = eval_validation_loss(&sb, &dir, &["--batch-tokens", "0"]);
    assert_bad_input(out, &["--batch-tokens"], &["at least 1"]);
}

#[test]
fn score_names_the_zero_flag() {
    let sb = Sandbox::new();
    let dir = sb.copy_fixture("llama_gqa");
    let text = texts_jsonl();
    let out = run(
        &sb,
        &[
            "score",
            arg(&dir),
            "--text",
            arg(&text),
            "--max-length",
            "0",
        ],
    );
    let line = assert_bad_input(out, &["--max-length"], &["at least 1"]);
    assert!(!line.contains("--batch-tokens"), "{line}");
}

// ----- ckpt eval --tasks alpaca_eval: the judge flags -----

/// A usage error: exit code 2, no panic, the flag named on the first line.
#[track_caller]
fn assert_usage_error(out: Output, flag: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "exit code; stderr:\n{stderr}");
    assert_clean(&stderr);
    let first = stderr.lines().next().unwrap_or_default().to_string();
    assert!(first.starts_with("error: "), "{stderr}");
    assert!(first.contains(flag), "must name {flag}: {stderr}");
    first
}

fn judge(sb: &Sandbox, extra: &[&str]) -> Output {
    let dir = sb.copy_fixture("llama_gqa");
    let mut args = vec!["eval", arg(&dir), "--tasks", "alpaca_eval"];
    args.extend_from_slice(extra);
    run(sb, &args)
}

#[test]
fn judge_url_that_does_not_parse_is_a_usage_error() {
    let sb = Sandbox::new();
    for url in [
        "http://[::1",
        "http://exa mple.com/v1",
        "http://",
        "localhost:8000",
    ] {
        let out = judge(&sb, &["--judge-url", url]);
        assert_usage_error(out, "--judge-url");
    }
}

#[test]
fn judge_timeout_must_be_positive() {
    let sb = Sandbox::new();
    for t in ["0", "-1", "nan", "inf", "1e300"] {
        let flag = format!("--judge-timeout={t}");
        let out = judge(&sb, &["--judge-url", "http://127.0.0.1:9", &flag]);
        let line = assert_usage_error(out, "--judge-timeout");
        assert!(line.contains("positive"), "{line}");
    }
}

// ----- ckpt schedule: huge step counts -----

#[test]
fn schedule_mid_steps_that_overflow_the_total_are_refused() {
    let sb = Sandbox::new();
    let out = run(
        &sb,
        &[
            "schedule",
            "--kind",
            "wsd",
            "--peak-lr",
            "1e-3",
            "--steps",
            "100",
            "--mid-steps",
            "18446744073709551565",
            "--alpha-mid",
            "0.1",
        ],
    );
    assert_bad_input(out, &["--steps", "--mid-steps"], &["overflows"]);
}

/// JSON streams like CSV: under a 1 GB address-space limit, a curve of 10^12 steps
/// starts printing at once instead of being collected (16 bytes a point) first.
#[test]
fn schedule_json_streams_a_huge_curve() {
    use std::io::Read;
    let sb = Sandbox::new();
    let script = format!(
        "ulimit -v 1000000; exec {} schedule --kind constant --peak-lr 1 --steps 1000000000000 --format json",
        env!("CARGO_BIN_EXE_ckpt")
    );
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(sb.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = vec![0u8; 1 << 20];
    let mut got = 0;
    let mut stdout = child.stdout.take().unwrap();
    while got < head.len() {
        match stdout.read(&mut head[got..]).unwrap() {
            0 => break,
            n => got += n,
        }
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_clean(&stderr);
    assert_eq!(got, head.len(), "{status:?}, stderr: {stderr}");
    let text = String::from_utf8_lossy(&head[..200]);
    assert!(
        text.starts_with('[') && text.contains("\"points\""),
        "{text}"
    );
}

// ----- config.json: sizes and domains -----

/// Rewrites `dir/config.json` through `edit`.
fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(cfg.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
}

fn score(sb: &Sandbox, dir: &Path) -> Output {
    run(sb, &["score", arg(dir), "--text", arg(&texts_jsonl())])
}

#[test]
fn huge_sizes_in_config_json_are_refused() {
    let sb = Sandbox::new();
    for (key, value) in [
        ("num_hidden_layers", 10_000_000_000_000_000_000u64),
        ("vocab_size", 10_000_000_000_000_000_000),
        ("hidden_size", 1 << 40),
        ("intermediate_size", 1 << 50),
    ] {
        let dir = sb.copy_fixture_to("llama_gqa", key);
        edit_config(&dir, |c| {
            c.insert(key.into(), value.into());
        });
        assert_bad_input(
            score(&sb, &dir),
            &["config.json", key],
            &["more than", "at most"],
        );
    }
}

#[test]
fn inspect_lists_the_others_when_one_config_is_huge() {
    let sb = Sandbox::new();
    sb.copy_fixture_to("llama_gqa", "runs/good");
    let bad = sb.copy_fixture_to("llama_gqa", "runs/bad");
    edit_config(&bad, |c| {
        c.insert(
            "num_hidden_layers".into(),
            10_000_000_000_000_000_000u64.into(),
        );
    });
    let out = run(&sb, &["inspect", arg(&sb.path().join("runs"))]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = assert_bad_input(out, &["bad", "num_hidden_layers"], &["more than"]);
    assert!(
        stdout.contains("good") && !stdout.contains("bad"),
        "{stdout}\n{line}"
    );
}

#[test]
fn config_values_outside_their_domain_are_refused() {
    let sb = Sandbox::new();
    // The fixture is in the transformers 5 dialect: theta lives in rope_parameters.
    let theta = |t: i32| serde_json::json!({"rope_type": "default", "rope_theta": t});
    let cases: [(&str, serde_json::Value); 4] = [
        ("rope_parameters", theta(0)),
        ("rope_parameters", theta(-1)),
        ("rms_norm_eps", (-1e-6).into()),
        ("head_dim", 0.into()),
    ];
    for (i, (key, value)) in cases.into_iter().enumerate() {
        let dir = sb.copy_fixture_to("llama_gqa", &format!("c{i}"));
        edit_config(&dir, |c| {
            c.insert(key.into(), value);
        });
        let named = key.replace("rope_parameters", "rope_theta");
        assert_bad_input(score(&sb, &dir), &["config.json", &named], &["positive"]);
    }
}

/// Every float of `model.safetensors` (an f32 fixture) set to NaN.
fn nan_weights(dir: &Path) {
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for b in bytes[8 + header..].chunks_exact_mut(4) {
        b.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn nan_weights_are_an_error_for_score() {
    let sb = Sandbox::new();
    let dir = sb.copy_fixture("llama_gqa");
    nan_weights(&dir);
    assert_bad_input(score(&sb, &dir), &["model.safetensors"], &["non-finite"]);
}

/// `ckpt eval` records the broken checkpoint's failure and still scores the good one.
#[test]
fn nan_weights_fail_their_checkpoint_in_eval_and_the_others_go_on() {
    let sb = Sandbox::new();
    sb.copy_fixture_to("llama_gqa", "runs/good");
    let bad = sb.copy_fixture_to("llama_gqa", "runs/bad");
    nan_weights(&bad);
    let out = eval_validation_loss(&sb, &sb.path().join("runs"), &["--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_clean(&stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_path = |p: &str| {
        report["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"].as_str().unwrap().ends_with(p))
            .unwrap()
            .clone()
    };
    let error = by_path("bad")["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("model.safetensors") && error.contains("non-finite"),
        "{error}"
    );
    assert!(by_path("bad")["metrics"].as_array().unwrap().is_empty());
    assert!(by_path("good")["error"].is_null());
    assert!(!by_path("good")["metrics"].as_array().unwrap().is_empty());
}

// ----- ckpt synth -----

#[test]
fn synth_refuses_more_entities_than_it_can_hold() {
    let sb = Sandbox::new();
    let out = run(
        &sb,
        &["synth", "--out", "w", "--entities", "18446744073709551615"],
    );
    assert_bad_input(out, &["entities", "1000000"], &["more than"]);
}

// ----- ckpt train: recipes -----

/// `ckpt train trainer/NAME.toml` with the small-test overrides and `sets`.
fn train(sb: &Sandbox, name: &str, sets: &[&str]) -> Output {
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("trainer")
        .join(format!("{name}.toml"));
    let mut args = vec!["train".to_string(), arg(&recipe).to_string()];
    for set in common::SMALL_RECIPE.iter().chain(sets) {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(sb, &args)
}

#[test]
fn train_head_dim_zero_is_refused() {
    let sb = Sandbox::new();
    let out = train(&sb, "tiny-wsd", &["model.head_dim=0"]);
    assert_bad_input(out, &["model.head_dim"], &["positive even"]);
}

#[test]
fn train_rope_theta_and_rms_norm_eps_must_be_positive_and_finite() {
    let sb = Sandbox::new();
    for (key, value) in [
        ("model.rope_theta", "nan"),
        ("model.rope_theta", "0.0"),
        ("model.rms_norm_eps", "nan"),
        ("model.rms_norm_eps", "-1e-5"),
    ] {
        let out = train(&sb, "tiny-wsd", &[&format!("{key}={value}")]);
        assert_bad_input(out, &[key], &["positive, finite"]);
    }
}

#[test]
fn train_job_name_must_stay_inside_runs() {
    let sb = Sandbox::new();
    for name in ["../..", "/tmp/escape", "a/../../b", ".."] {
        let out = train(&sb, "tiny-wsd", &[&format!("job.name=\"{name}\"")]);
        assert_bad_input(out, &["job.name"], &["plain folder name"]);
    }
}

#[test]
fn train_refuses_shapes_this_machine_cannot_hold() {
    let sb = Sandbox::new();
    for set in [
        "model.hidden_size=1000000000",
        "model.num_hidden_layers=1000000000",
        "model.vocab_size=4000000000",
        "model.head_dim=100000000",
    ] {
        let out = train(&sb, "tiny-wsd", &[set]);
        assert_bad_input(out, &["model"], &["memory", "at most", "more than"]);
    }
}

#[test]
fn train_refuses_a_batch_this_machine_cannot_hold() {
    let sb = Sandbox::new();
    sb.small_world();
    // 2^63 - 32: a multiple of training.seq_len = 32.
    let out = train(
        &sb,
        "tiny-wsd",
        &["training.batch_tokens=9223372036854775776"],
    );
    assert_bad_input(out, &["training.batch_tokens"], &["memory"]);
}

#[test]
fn train_checks_the_data_before_writing_run_toml() {
    let sb = Sandbox::new();
    let out = train(&sb, "tiny-wsd", &["data.paths=[\"data/none.jsonl\"]"]);
    assert_bad_input(out, &["none.jsonl"], &["no such", "not found", "missing"]);
    assert!(!sb.path().join("runs/tiny-wsd/run.toml").exists());
}

#[test]
fn train_steps_past_a_decay_to_zero_are_refused() {
    let sb = Sandbox::new();
    sb.small_world();
    let out = train(
        &sb,
        "tiny-cosine",
        &["schedule.alpha=0.0", "training.steps=30"],
    );
    assert_bad_input(
        out,
        &["training.steps", "schedule.total_steps"],
        &["LR is 0"],
    );
}

#[test]
fn train_vocab_size_larger_than_the_data_allows_is_warned() {
    let sb = Sandbox::new();
    sb.small_world();
    let out = train(
        &sb,
        "tiny-wsd",
        &["tokenizer.train_vocab_size=1000000", "training.steps=1"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert_clean(&stderr);
    assert!(
        stderr.contains("train_vocab_size = 1000000") && stderr.contains("allows only"),
        "{stderr}"
    );
}

//! `ckpt demo --size tiny` end to end through the real binary: interrupted with Ctrl-C
//! during pre-training, resumed to the end, then run again (nothing left to do); and
//! the output folder's bad cases.

mod common;

use common::Sandbox;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn demo_cmd(sb: &Sandbox, out: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ckpt"));
    cmd.current_dir(sb.path())
        .env("CKPT_CACHE_DIR", sb.cache_dir())
        .env_remove("CKPT_LOG")
        .args(["demo", "--size", "tiny", "--out", out]);
    cmd
}

fn wait_for(path: &Path, timeout: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < timeout,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// Steps logged in a run's metrics.jsonl, in file order.
fn logged_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn tiny_demo_survives_ctrl_c_resumes_and_reruns_nothing() {
    let sb = Sandbox::new();
    let dir = sb.path().join("demo");

    // Ctrl-C once the WSO run has saved its first checkpoint.
    let child = demo_cmd(&sb, "demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        &dir.join("runs/wso/step-0000060/model.safetensors"),
        Duration::from_secs(300),
    );
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
    let ledger = read_json(&dir.join("demo.json"));
    assert!(ledger["stages"].get("world").is_some(), "{ledger}");
    assert!(ledger["stages"].get("report").is_none(), "{ledger}");

    // The same command finishes the demo.
    let started = Instant::now();
    let out = demo_cmd(&sb, "demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(done earlier)"), "{stdout}");
    eprintln!("resumed demo: {:.1} s", started.elapsed().as_secs_f64());

    // Every run trained each step exactly once, interrupted or not.
    for run in ["wso", "cosine-a0.1", "linear-a0"] {
        let steps = logged_steps(&dir.join("runs").join(run));
        assert_eq!(steps, (1..=240).collect::<Vec<u64>>(), "{run}");
    }
    let logs: String = ["wso", "cosine-a0.1", "linear-a0"]
        .iter()
        .map(|r| std::fs::read_to_string(dir.join(format!("logs/train-{r}.log"))).unwrap())
        .collect();
    assert!(logs.contains("interrupted at step"), "{logs}");

    check_outputs(&dir);

    // A third run has nothing left to do.
    let out = demo_cmd(&sb, "demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.matches("(done earlier)").count(), 12, "{stdout}");
    assert!(!stdout.contains("$ ckpt"), "{stdout}");
}

/// What a finished demo folder holds.
fn check_outputs(dir: &Path) {
    for run in ["wso", "wsd-a0", "wsd-a0.1", "cosine-a0.1", "linear-a0"] {
        assert!(
            dir.join(format!("runs/{run}/step-0000240")).is_dir(),
            "{run}"
        );
    }
    assert!(dir
        .join("runs/wso-wsm/step-0000240/model.safetensors")
        .is_file());
    assert!(dir.join("release/README.md").is_file());
    // Figure 3 on both held-out sets, the per-layer heat map, the final spectrum.
    for figure in [
        "sharpness.png",
        "sharpness-sft.png",
        "sharpness_blocks.png",
        "spectrum.png",
    ] {
        assert!(dir.join("report").join(figure).is_file(), "{figure}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/report.json")).unwrap())
            .unwrap();
    let ids: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "validation_loss",
            "sharpness_ratio",
            "sharpness_ratio:sft",
            "sft_comparison"
        ]
    );
}

#[test]
fn refuses_a_folder_that_is_not_a_demo() {
    let sb = Sandbox::new();
    sb.write("mine/notes.txt", "keep me");
    let out = demo_cmd(&sb, "mine").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("mine: exists and is not a ckpt demo folder"),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(sb.path().join("mine")).unwrap().count(),
        1
    );
}

#[test]
fn refuses_a_demo_of_another_size_and_a_corrupt_ledger() {
    let sb = Sandbox::new();
    sb.write(
        "other/demo.json",
        r#"{"size": "small", "ckpt_version": "0", "stages": {"world": 1.0}}"#,
    );
    let out = demo_cmd(&sb, "other").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("holds a --size small demo"), "{stderr}");

    sb.write("broken/demo.json", "{ not json");
    let out = demo_cmd(&sb, "broken").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("demo.json: is not a demo ledger"),
        "{stderr}"
    );
}

#[test]
fn a_failing_stage_names_its_command_and_log_and_keeps_the_ledger() {
    let sb = Sandbox::new();
    sb.write(
        "demo/demo.json",
        r#"{"size": "tiny", "ckpt_version": "0", "stages": {}}"#,
    );
    // `ckpt synth --out data` cannot write into a file called data.
    sb.write("demo/data", "in the way");
    let out = demo_cmd(&sb, "demo").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("`ckpt synth --out data"), "{stderr}");
    assert!(stderr.contains("logs/synth.log ends with"), "{stderr}");
    let ledger = read_json(&sb.path().join("demo/demo.json"));
    assert_eq!(ledger["stages"], serde_json::json!({}));
}

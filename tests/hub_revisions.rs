//! A Hub repository's revisions as a run: `ckpt eval hf://org/suite --revisions 'step*'`
//! against a Hub stand-in on loopback (refs, tree listings with LFS sha256, resolve
//! redirects to a "CDN", byte ranges, injected faults). Scores equal those of local
//! copies; a second run downloads and computes nothing; a moved branch is re-scored
//! alone; downloads stay within the budget, resume after a dropped connection or a
//! `kill -9`, and work offline from the cache; access errors are one clear line.

mod common;
#[path = "common/hub_server.rs"]
mod hub_server;
#[path = "common/hub_suite.rs"]
mod hub_suite;

use common::Sandbox;
use hub_server::{Fault, FaultAction, HubServer, Options};
use hub_suite::{checkpoint_files, hf_ckpt, json_of};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REPO: &str = "ckpt-org/suite";
/// Pythia's branch names.
const STEPS: [u64; 5] = [0, 100, 200, 300, 400];
/// A file the sweep must never download: the Hub keeps optimizer states beside weights.
const OPTIMIZER: &str = "optimizer.pt";

/// Puts the five revisions on the Hub (with an optimizer state and a README each) and
/// the same checkpoints on disk under `local/suite/stepN`.
fn publish_suite(sb: &Sandbox, hub: &HubServer, repo: &str) {
    for (k, step) in STEPS.iter().enumerate() {
        let mut files = checkpoint_files(k as u32);
        for (name, bytes) in &files {
            sb.write(&format!("local/suite/step{step}/{name}"), bytes);
        }
        files.push((OPTIMIZER, vec![7u8; 300_000]));
        files.push(("README.md", format!("step {step}\n").into_bytes()));
        hub.put_revision(repo, &format!("step{step}"), &files);
    }
}

fn setup() -> (Sandbox, HubServer) {
    let sb = Sandbox::new();
    let out = sb.run(["synth", "--eval-tasks", "evaldata", "--eval-docs", "6"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hub = HubServer::start(Options::default(), None);
    publish_suite(&sb, &hub, REPO);
    (sb, hub)
}

/// `ckpt ARGS...` with the Hub stand-in as `HF_ENDPOINT`, the sandbox's cache as
/// `HF_HOME`, no token unless a test sets one, and info-level logs.
fn hub_ckpt<I, S>(sb: &Sandbox, hub: &HubServer, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = hf_ckpt(sb, &hub.url, args);
    cmd.env("CKPT_LOG", "info");
    cmd
}

const TASKS: [&str; 6] = [
    "--tasks",
    "arc_easy,piqa",
    "--data-dir",
    "evaldata",
    "--limit",
    "4",
];

fn sweep_args(store: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["eval", &format!("hf://{REPO}"), "--revisions", "step*"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(TASKS.iter().map(|s| s.to_string()));
    args.extend(["--store", store, "--json"].iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// (step, task, metric, filter) -> value.
type Metrics = BTreeMap<(u64, String, String, String), f64>;

/// The metrics of a `--json` eval report, and each checkpoint's fingerprint by step.
fn metrics_by_step(report: &Value) -> (Metrics, BTreeMap<u64, String>) {
    let mut metrics = BTreeMap::new();
    let mut fingerprints = BTreeMap::new();
    for c in report["checkpoints"].as_array().unwrap() {
        let step = c["step"].as_u64().unwrap();
        fingerprints.insert(step, c["fingerprint"].as_str().unwrap().to_string());
        for m in c["metrics"].as_array().unwrap() {
            let key = |k: &str| m[k].as_str().unwrap().to_string();
            metrics.insert(
                (step, key("task"), key("metric"), key("filter")),
                m["value"].as_f64().unwrap(),
            );
        }
    }
    (metrics, fingerprints)
}

fn computed(report: &Value) -> u64 {
    report["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["computed_requests"].as_u64().unwrap())
        .sum()
}

/// Bytes of the weight blobs (complete or not) in the sandbox's Hugging Face cache.
fn weight_bytes_in_cache(sb: &Sandbox) -> u64 {
    let blobs = sb.path().join("hf/hub/models--ckpt-org--suite/blobs");
    let Ok(entries) = std::fs::read_dir(blobs) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .filter(|&len| len > 50_000)
        .sum()
}

#[test]
fn a_suite_of_revisions_scores_as_its_local_copies_and_a_rerun_fetches_nothing() {
    let (sb, hub) = setup();
    let local = json_of(
        &sb.run(["eval", "local/suite"].iter().chain(&TASKS).chain(&[
            "--store",
            "local.sqlite",
            "--json",
        ])),
    );
    let out = hub_ckpt(&sb, &hub, sweep_args("hub.sqlite", &[]))
        .output()
        .unwrap();
    let swept = json_of(&out);
    let (local_metrics, local_fps) = metrics_by_step(&local);
    let (hub_metrics, hub_fps) = metrics_by_step(&swept);
    assert_eq!(hub_fps.keys().copied().collect::<Vec<_>>(), STEPS);
    assert_eq!(
        hub_fps, local_fps,
        "the same weights, the same fingerprints"
    );
    assert_eq!(hub_metrics, local_metrics);
    assert_eq!(hub_metrics.len(), local_metrics.len());
    for c in swept["checkpoints"].as_array().unwrap() {
        let step = c["step"].as_u64().unwrap();
        assert_eq!(c["path"], format!("hf://{REPO}@step{step}"));
        assert_eq!(c["run"], "suite");
    }
    // Only what a checkpoint needs was downloaded: never the optimizer state or README.
    for e in hub.log() {
        assert!(
            !e.target.contains(OPTIMIZER) && !e.target.contains("README"),
            "{}",
            e.target
        );
    }
    assert_eq!(hub.ok_count("refs"), 1);
    // The weights fetched for the sweep are gone; the small files stay.
    assert_eq!(weight_bytes_in_cache(&sb), 0);
    let snapshots = sb.path().join("hf/hub/models--ckpt-org--suite/snapshots");
    assert_eq!(std::fs::read_dir(&snapshots).unwrap().count(), 5);
    let refs = sb
        .path()
        .join("hf/hub/models--ckpt-org--suite/refs/step300");
    assert_eq!(std::fs::read_to_string(refs).unwrap().trim().len(), 40);

    // A second run: the refs are listed, nothing is downloaded or computed.
    hub.clear_log();
    let again = json_of(
        &hub_ckpt(&sb, &hub, sweep_args("hub.sqlite", &[]))
            .output()
            .unwrap(),
    );
    assert_eq!(computed(&again), 0);
    assert_eq!(metrics_by_step(&again).0, local_metrics);
    let routes: Vec<&str> = hub.log().iter().map(|e| e.route).collect();
    assert_eq!(routes, ["refs"], "only the refs are asked for");

    // The report links every point to its revision on the Hub.
    let out = hub_ckpt(
        &sb,
        &hub,
        [
            "report",
            "hub.sqlite",
            "--out",
            "rep",
            "--format",
            "md,html",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(sb.path().join("rep/report.md")).unwrap();
    let html = std::fs::read_to_string(sb.path().join("rep/report.html")).unwrap();
    for step in STEPS {
        let url = format!("{}/{REPO}/tree/step{step}", hub.url);
        assert!(md.contains(&format!("[{REPO}@step{step}]({url})")), "{md}");
        assert!(html.contains(&format!("<a href=\"{url}\">")), "step {step}");
    }

    // Offline, from the cache and the store alone.
    hub.clear_log();
    let offline = json_of(
        &hub_ckpt(&sb, &hub, sweep_args("hub.sqlite", &[]))
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap(),
    );
    assert_eq!(computed(&offline), 0);
    assert_eq!(metrics_by_step(&offline).0, local_metrics);
    assert!(
        hub.log().is_empty(),
        "offline asks nothing: {:?}",
        hub.log()
    );
}

#[test]
fn a_moved_branch_is_rescored_and_only_it() {
    let (sb, hub) = setup();
    let first = json_of(
        &hub_ckpt(&sb, &hub, sweep_args("s.sqlite", &[]))
            .output()
            .unwrap(),
    );
    let (_, before) = metrics_by_step(&first);
    // step200 gets new weights; step300 a new commit that changes only its README.
    let mut moved = checkpoint_files(9);
    moved.push(("README.md", b"retrained\n".to_vec()));
    hub.put_revision(REPO, "step200", &moved);
    hub.put_revision(REPO, "step300", &[("README.md", b"typo fixed\n".to_vec())]);
    // `ckpt store status` knows which revisions are done without downloading any.
    hub.clear_log();
    let status = json_of(
        &hub_ckpt(
            &sb,
            &hub,
            [
                "store",
                "status",
                "s.sqlite",
                "--tasks",
                "arc_easy,piqa",
                "--json",
            ],
        )
        .args([
            "--checkpoints",
            &format!("hf://{REPO}"),
            "--revisions",
            "step*",
        ])
        .output()
        .unwrap(),
    );
    for c in status["checkpoints"].as_array().unwrap() {
        let want = if c["step"] == 200 { "missing" } else { "done" };
        assert_eq!(c["tasks"]["arc_easy"], want, "{c}");
        assert_eq!(c["tasks"]["piqa"], want, "{c}");
    }
    assert_eq!(status["missing"], 2);
    assert!(hub.requests_for("cdn").is_empty() && hub.requests_for("resolve").is_empty());
    hub.clear_log();
    let second = json_of(
        &hub_ckpt(&sb, &hub, sweep_args("s.sqlite", &[]))
            .output()
            .unwrap(),
    );
    let (_, after) = metrics_by_step(&second);
    for c in second["checkpoints"].as_array().unwrap() {
        let step = c["step"].as_u64().unwrap();
        let computed = c["computed_requests"].as_u64().unwrap();
        assert_eq!(computed > 0, step == 200, "step {step} computed {computed}");
    }
    assert_ne!(after[&200], before[&200]);
    assert_eq!(after[&300], before[&300]);
    // step300's weights were known by their sha256: listed, not downloaded.
    let weights: Vec<_> = hub
        .requests_for("cdn")
        .into_iter()
        .filter(|e| e.method == "GET")
        .collect();
    assert_eq!(weights.len(), 1, "only step200's new weights: {weights:?}");
    let trees = hub.requests_for("tree");
    assert_eq!(
        trees.len(),
        2,
        "the two moved branches are listed: {trees:?}"
    );
}

/// Runs a sweep while sampling the bytes of weights in the cache; returns the output
/// and the peak.
fn sweep_measuring_disk(
    sb: &Sandbox,
    hub: &HubServer,
    store: &str,
    extra: &[&str],
) -> (Output, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        let dir = sb.path().to_path_buf();
        std::thread::spawn(move || {
            let sandbox_view = SandboxPath(dir);
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(sandbox_view.weight_bytes(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let out = hub_ckpt(sb, hub, sweep_args(store, extra))
        .output()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    (out, peak.load(Ordering::SeqCst))
}

struct SandboxPath(PathBuf);

impl SandboxPath {
    fn weight_bytes(&self) -> u64 {
        let blobs = self.0.join("hf/hub/models--ckpt-org--suite/blobs");
        std::fs::read_dir(blobs)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .filter(|&len| len > 50_000)
                    .sum()
            })
            .unwrap_or(0)
    }
}

#[test]
fn downloads_stay_within_the_budget() {
    let (sb, hub) = setup();
    let one = checkpoint_files(0)[3].1.len() as u64;
    // Room for two checkpoints: the next one downloads while one is scored.
    let budget = 2 * one + one / 2;
    let (out, peak) = sweep_measuring_disk(
        &sb,
        &hub,
        "a.sqlite",
        &["--cache-budget", &budget.to_string()],
    );
    let report = json_of(&out);
    assert_eq!(report["checkpoints"].as_array().unwrap().len(), 5);
    assert!(peak <= budget, "peak {peak} > budget {budget}");
    assert!(peak >= one, "the watcher saw the downloads ({peak})");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in the background"), "{stderr}");

    // Room for one: no prefetch, one checkpoint on disk at a time.
    std::fs::remove_dir_all(sb.path().join("hf")).unwrap();
    let budget = one + one / 2;
    let (out, peak) = sweep_measuring_disk(
        &sb,
        &hub,
        "b.sqlite",
        &["--cache-budget", &budget.to_string()],
    );
    json_of(&out);
    assert!(peak <= budget, "peak {peak} > budget {budget}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("in the background"));

    // Room for none: every revision fails, by name, and the command says so.
    std::fs::remove_dir_all(sb.path().join("hf")).unwrap();
    let out = hub_ckpt(
        &sb,
        &hub,
        sweep_args("c.sqlite", &["--cache-budget", "100kB"]),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for c in report["checkpoints"].as_array().unwrap() {
        let error = c["error"].as_str().unwrap();
        assert!(
            error.contains("--cache-budget") && error.contains(c["path"].as_str().unwrap()),
            "{error}"
        );
    }
    assert_eq!(weight_bytes_in_cache(&sb), 0);

    // --keep-downloads keeps them all.
    let out = hub_ckpt(&sb, &hub, sweep_args("d.sqlite", &["--keep-downloads"]))
        .output()
        .unwrap();
    json_of(&out);
    assert_eq!(weight_bytes_in_cache(&sb), 5 * one);
}

#[test]
fn a_dropped_connection_resumes_where_it_stopped() {
    let (sb, hub) = setup();
    hub.fault(Fault::new("cdn", FaultAction::DropMidBody(60_000)).times(2));
    let out = hub_ckpt(&sb, &hub, sweep_args("s.sqlite", &["--keep-downloads"]))
        .output()
        .unwrap();
    let swept = json_of(&out);
    let local = json_of(
        &sb.run(["eval", "local/suite"].iter().chain(&TASKS).chain(&[
            "--store",
            "local.sqlite",
            "--json",
        ])),
    );
    assert_eq!(metrics_by_step(&swept), metrics_by_step(&local));
    let cdn = hub.requests_for("cdn");
    let status = |s: u16| cdn.iter().filter(|e| e.status == s).count();
    assert_eq!(status(0), 2, "two transfers were cut");
    assert_eq!(status(206), 1, "the third asked for the rest only");
}

#[test]
fn a_download_killed_midway_resumes_and_nothing_is_computed_twice() {
    let (sb, hub) = setup();
    hub.fault(Fault::new("cdn", FaultAction::StallMidBody(80_000)));
    let mut child = hub_ckpt(&sb, &hub, sweep_args("s.sqlite", &["--keep-downloads"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let blobs = sb.path().join("hf/hub/models--ckpt-org--suite/blobs");
    let started = Instant::now();
    let partial = loop {
        let found = std::fs::read_dir(&blobs).ok().and_then(|entries| {
            entries.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                p.extension().is_some_and(|x| x == "incomplete")
                    && std::fs::metadata(p).is_ok_and(|m| m.len() >= 80_000)
            })
        });
        if let Some(p) = found {
            break p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no partial download appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(partial.is_file(), "the partial download survives the kill");

    hub.clear_log();
    let swept = json_of(
        &hub_ckpt(&sb, &hub, sweep_args("s.sqlite", &["--keep-downloads"]))
            .output()
            .unwrap(),
    );
    let first = &hub.requests_for("cdn")[0];
    assert_eq!(first.status, 206, "the rerun asks for the rest only");
    assert!(!partial.exists());
    let local = json_of(
        &sb.run(["eval", "local/suite"].iter().chain(&TASKS).chain(&[
            "--store",
            "local.sqlite",
            "--json",
        ])),
    );
    assert_eq!(metrics_by_step(&swept), metrics_by_step(&local));
    assert_eq!(
        computed(&swept),
        computed(&local),
        "nothing was computed before the kill, nothing twice after"
    );
}

/// The one error line of a failed command.
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
        .to_string()
}

#[test]
fn access_errors_are_one_clear_line_and_never_show_the_token() {
    let (sb, hub) = setup();
    let private = "ckpt-org/private";
    hub.put_revision(private, "main", &checkpoint_files(1));
    hub.set_private(private, true);
    let inspect = |source: &str| hub_ckpt(&sb, &hub, ["inspect", source, "--json"]);

    let out = inspect(&format!("hf://{private}")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains("401") && line.contains(private) && line.contains("HF_TOKEN"),
        "{line}"
    );

    let wrong = "hf_WrongTokenThatMustNotBePrinted";
    let out = inspect(&format!("hf://{private}"))
        .env("HF_TOKEN", wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(wrong), "{all}");
    assert!(error_line(&out).contains("401"), "{all}");

    // With the token: the checkpoint, shown as the revision.
    let out = inspect(&format!("hf://{private}"))
        .env("HF_TOKEN", hub.token())
        .output()
        .unwrap();
    let rows = json_of(&out);
    assert_eq!(rows[0]["path"], format!("hf://{private}@main"));

    let gated = "ckpt-org/gated";
    hub.put_revision(gated, "main", &checkpoint_files(1));
    hub.set_gated(gated, true);
    let line = error_line(&inspect(&format!("hf://{gated}")).output().unwrap());
    assert!(line.contains("gated") && line.contains(gated), "{line}");

    let line = error_line(&inspect("hf://ckpt-org/nothing-here").output().unwrap());
    assert!(
        line.contains("ckpt-org/nothing-here") && line.contains("does not exist"),
        "{line}"
    );

    let line = error_line(&inspect(&format!("hf://{REPO}@step999")).output().unwrap());
    assert!(
        line.contains("step999") && line.contains("does not exist"),
        "{line}"
    );

    let out = hub_ckpt(
        &sb,
        &hub,
        ["eval", &format!("hf://{REPO}"), "--revisions", "ckpt_*"],
    )
    .args(TASKS)
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains("no branch matches") && line.contains("step100"),
        "{line}"
    );

    // main gives no step: a sweep over every branch says how to read one.
    let out = hub_ckpt(
        &sb,
        &hub,
        ["eval", &format!("hf://{REPO}"), "--revisions", "*"],
    )
    .args(TASKS)
    .output()
    .unwrap();
    let line = error_line(&out);
    assert!(
        line.contains("@main") && line.contains("--step-from"),
        "{line}"
    );
}

#[test]
fn broken_revisions_fail_alone_and_are_listed() {
    let (sb, hub) = setup();
    let config = checkpoint_files(0)[0].1.clone();
    // step500: a config and no weights; step600: an architecture ckpt does not run.
    hub.put_revision(REPO, "step500", &[("config.json", config.clone())]);
    let mut mamba: Value = serde_json::from_slice(&config).unwrap();
    mamba["model_type"] = "mamba".into();
    mamba["architectures"] = serde_json::json!(["MambaForCausalLM"]);
    let mut files = checkpoint_files(7);
    files[0].1 = serde_json::to_vec(&mamba).unwrap();
    hub.put_revision(REPO, "step600", &files);
    let out = hub_ckpt(&sb, &hub, sweep_args("s.sqlite", &[]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_path: BTreeMap<String, Value> = report["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap().to_string(), c["error"].clone()))
        .collect();
    assert_eq!(by_path.len(), 7);
    for step in STEPS {
        assert!(by_path[&format!("hf://{REPO}@step{step}")].is_null());
    }
    let no_weights = by_path[&format!("hf://{REPO}@step500")]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        no_weights.contains("step500") && no_weights.contains("no weights"),
        "{no_weights}"
    );
    let unsupported = by_path[&format!("hf://{REPO}@step600")]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        unsupported.starts_with(&format!("hf://{REPO}@step600: "))
            && unsupported.contains("MambaForCausalLM"),
        "{unsupported}"
    );
}

#[test]
fn every_command_takes_a_hub_revision() {
    let (sb, hub) = setup();
    let source = format!("hf://{REPO}@step100");
    let rows = json_of(
        &hub_ckpt(&sb, &hub, ["inspect", &source, "--json"])
            .output()
            .unwrap(),
    );
    let local = sb.run_json(["inspect", "local/suite/step100", "--json"]);
    assert_eq!(rows[0]["fingerprint"], local[0]["fingerprint"]);
    assert_eq!(rows[0]["step"], 100);
    assert_eq!(rows[0]["path"], source);

    // Steps read from other suites' names with --step-from.
    hub.put_revision(REPO, "ep7", &checkpoint_files(3));
    let rows = json_of(
        &hub_ckpt(
            &sb,
            &hub,
            [
                "inspect",
                &format!("hf://{REPO}"),
                "--revisions",
                "ep*",
                "--step-from",
                r"ep(\d+)",
                "--json",
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(rows[0]["step"], 7);

    sb.write(
        "texts.jsonl",
        "{\"text\": \"the stone sits by the river\"}\n",
    );
    let hub_score = json_of(
        &hub_ckpt(
            &sb,
            &hub,
            ["score", &source, "--text", "texts.jsonl", "--json"],
        )
        .output()
        .unwrap(),
    );
    let local_score = sb.run_json([
        "score",
        "local/suite/step100",
        "--text",
        "texts.jsonl",
        "--json",
    ]);
    assert_eq!(hub_score["texts"], local_score["texts"]);
    assert_eq!(hub_score["checkpoint"], source);

    // Offline, a revision already in the cache loads; one never fetched is a clear error.
    let out = hub_ckpt(&sb, &hub, ["inspect", &source, "--json"])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    json_of(&out);
    let out = hub_ckpt(
        &sb,
        &hub,
        ["inspect", &format!("hf://{REPO}@step300"), "--json"],
    )
    .env("HF_HUB_OFFLINE", "1")
    .output()
    .unwrap();
    let line = error_line(&out);
    assert!(
        line.contains("HF_HUB_OFFLINE") && line.contains("step300"),
        "{line}"
    );
}

/// `ckpt sharpness` over a suite's revisions: the same measurements as of the local
/// copies, within the disk budget, the weights gone afterwards.
#[test]
fn sharpness_sweeps_revisions_within_the_budget() {
    let (sb, hub) = setup();
    std::fs::copy(
        common::fixture_in("arch", "texts.jsonl"),
        sb.path().join("texts.jsonl"),
    )
    .unwrap();
    let measure = |paths: &[&str], out: &str, extra: &[&str]| -> Vec<String> {
        let mut more = vec!["--out", out];
        more.extend(extra);
        common::small_sharpness(paths, 2, 3, &more)
    };
    let by_step = |report: &Value| -> BTreeMap<u64, Value> {
        report
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["step"].as_u64().unwrap(), r["samples"].clone()))
            .collect()
    };
    let local = sb.run_json(measure(&["local/suite"], "local.jsonl", &[]));
    let one = checkpoint_files(0)[3].1.len() as u64;
    let budget = (2 * one + one / 2).to_string();
    let source = format!("hf://{REPO}");
    let out = hub_ckpt(
        &sb,
        &hub,
        measure(
            &[&source],
            "hub.jsonl",
            &["--revisions", "step*", "--cache-budget", &budget],
        ),
    )
    .output()
    .unwrap();
    let swept = json_of(&out);
    assert_eq!(by_step(&swept), by_step(&local));
    assert_eq!(by_step(&swept).len(), 5);
    assert_eq!(
        weight_bytes_in_cache(&sb),
        0,
        "weights removed after measuring"
    );
    for r in swept.as_array().unwrap() {
        assert!(r["checkpoint"].as_str().unwrap().starts_with(&source));
    }
}

/// Revisions in the layouts real repositories have: sharded safetensors (index and
/// shards, beside a stray `consolidated.safetensors` the index does not name), one
/// PyTorch `.bin`, sharded `.bin`. Each loads with the local copy's fingerprint, and
/// only the files the index names are downloaded.
#[test]
fn sharded_and_bin_revisions_load_as_their_local_copies() {
    let (sb, hub) = setup();
    let repo = "ckpt-org/formats";
    let layouts = [
        ("sharded", common::fixture_in("parity", "mistral_sharded")),
        ("bin", common::fixture_in("bin", "gpt_neox_parallel_bin")),
        (
            "bin-sharded",
            common::fixture_in("bin", "llama_gqa_bin_sharded"),
        ),
    ];
    for (branch, dir) in &layouts {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect();
        files.push(("consolidated.safetensors".into(), vec![1u8; 4096]));
        let files: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        hub.put_revision(repo, branch, &files);
    }
    for (branch, dir) in &layouts {
        let local = sb.run_json(["inspect", common::arg(dir), "--json"]);
        let source = format!("hf://{repo}@{branch}");
        let remote = json_of(
            &hub_ckpt(&sb, &hub, ["inspect", &source, "--json"])
                .output()
                .unwrap(),
        );
        assert_eq!(
            remote[0]["fingerprint"], local[0]["fingerprint"],
            "{branch}"
        );
        assert_eq!(remote[0]["parameters"], local[0]["parameters"], "{branch}");
    }
    let stray = hub
        .log()
        .iter()
        .filter(|e| e.target.contains("consolidated"))
        .count();
    assert_eq!(stray, 0, "a file no index names is never downloaded");
}

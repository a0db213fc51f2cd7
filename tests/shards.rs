//! Sweeps split over processes (`--shard`), as Slurm arrays, Kubernetes Indexed Jobs
//! and torchrun start them, then joined with `ckpt store merge`: the merged store
//! holds exactly what one process computes, a killed shard reruns alone without
//! computing anything twice, and the shipped launch examples are valid.

mod common;

use common::Sandbox;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

/// Six checkpoints of six architectures (`runs/<arch>/step-1`) and the synthetic
/// evaluation data.
fn sweep() -> Sandbox {
    let sb = Sandbox::new();
    for name in [
        "gpt_neox_parallel",
        "olmo2",
        "olmo3",
        "qwen3",
        "gemma2",
        "smollm3",
    ] {
        common::copy_dir(
            &common::fixture_in("arch", name),
            &sb.path().join(format!("runs/{name}/step-1")),
        );
    }
    let out = sb.run(["synth", "--eval-tasks", "evaldata", "--eval-docs", "6"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sb
}

const EVAL: [&str; 8] = [
    "eval",
    "runs",
    "--suite",
    "pt",
    "--data-dir",
    "evaldata",
    "--limit",
    "3",
];

/// `ckpt eval` as Slurm array element `id` of `count` (ids from 1, as `--array=1-N`).
fn slurm_shard(sb: &Sandbox, id: usize, count: usize, store: &str) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("ckpt"));
    cmd.current_dir(sb.path())
        .env("CKPT_CACHE_DIR", sb.cache_dir())
        .env_remove("CKPT_DEVICE")
        .args(EVAL)
        .args(["--shard", "auto", "--store", store, "--json"])
        .env("SLURM_ARRAY_TASK_ID", id.to_string())
        .env("SLURM_ARRAY_TASK_MIN", "1")
        .env("SLURM_ARRAY_TASK_COUNT", count.to_string());
    cmd
}

fn json_of(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (fingerprint, task, metric, filter) -> (value, stderr, n).
type Metrics = BTreeMap<(String, String, String, String), (Value, Value, Value)>;

/// The metrics of a `--json` eval report.
fn metrics(report: &Value) -> Metrics {
    let mut out = BTreeMap::new();
    for c in report["checkpoints"].as_array().unwrap() {
        for m in c["metrics"].as_array().unwrap() {
            let key = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            out.insert(
                (
                    key("fingerprint"),
                    key("task"),
                    key("metric"),
                    key("filter"),
                ),
                (m["value"].clone(), m["stderr"].clone(), m["n"].clone()),
            );
        }
    }
    out
}

fn computed(report: &Value) -> u64 {
    report["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["computed_requests"].as_u64().unwrap())
        .sum()
}

#[test]
fn three_shards_merged_equal_one_process() {
    let sb = sweep();
    let one = json_of(sb.run(EVAL.iter().chain(&["--store", "one.sqlite", "--json"])));
    let mut shard_metrics = BTreeMap::new();
    let mut shard_work = 0;
    for id in 1..=3 {
        let report = json_of(slurm_shard(&sb, id, 3, "sharded.sqlite").output().unwrap());
        shard_work += computed(&report);
        shard_metrics.extend(metrics(&report));
        assert!(sb
            .path()
            .join(format!("sharded.shard-{}-of-3.sqlite", id - 1))
            .is_file());
    }
    // The shards did the work once between them, each unit in exactly one shard.
    assert_eq!(shard_work, computed(&one));
    assert_eq!(shard_metrics, metrics(&one));

    let merged = sb.run([
        "store",
        "merge",
        "sharded.shard-0-of-3.sqlite",
        "sharded.shard-1-of-3.sqlite",
        "sharded.shard-2-of-3.sqlite",
        "--into",
        "merged.sqlite",
    ]);
    assert!(
        merged.status.success(),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    // Read back through the merged store: nothing to compute, the same numbers.
    let again = json_of(sb.run(EVAL.iter().chain(&["--store", "merged.sqlite", "--json"])));
    assert_eq!(computed(&again), 0);
    assert_eq!(metrics(&again), metrics(&one));
    // A directory of the shards' stores, as a Slurm array leaves it: `ckpt eval --store
    // DIR` merges them into DIR/ckpt.sqlite and prints without computing anything.
    std::fs::create_dir_all(sb.path().join("results")).unwrap();
    for i in 0..3 {
        for suffix in ["", "-wal", "-shm"] {
            let from = sb
                .path()
                .join(format!("sharded.shard-{i}-of-3.sqlite{suffix}"));
            if from.exists() {
                let to = format!("results/ckpt.shard-{i}-of-3.sqlite{suffix}");
                std::fs::copy(&from, sb.path().join(to)).unwrap();
            }
        }
    }
    let printed = json_of(sb.run(EVAL.iter().chain(&["--store", "results", "--json"])));
    assert_eq!(computed(&printed), 0);
    assert_eq!(metrics(&printed), metrics(&one));
    assert!(sb.path().join("results/ckpt.sqlite").is_file());
    // And the report: every table and figure, byte for byte but the store's name.
    for store in ["one", "merged"] {
        let out = sb.run(["report", &format!("{store}.sqlite"), "--out", store, "-q"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for file in [
        "metrics_by_step.csv",
        "pretraining.csv",
        "report.md",
        "metric_01_arc_challenge.png",
    ] {
        let read = |dir: &str| {
            let bytes = std::fs::read(sb.path().join(dir).join(file)).unwrap();
            String::from_utf8_lossy(&bytes).replace("merged.sqlite", "one.sqlite")
        };
        assert_eq!(read("merged"), read("one"), "{file}");
    }
}

#[test]
fn a_killed_shard_reruns_alone_and_computes_nothing_twice() {
    let sb = sweep();
    let total = computed(&json_of(sb.run(EVAL.iter().chain(&[
        "--store",
        "one.sqlite",
        "--json",
    ]))));
    // Shard 0 of 2, killed once its store has answers in it (commits every 8 requests).
    let store = sb.path().join("s.shard-0-of-2.sqlite");
    let mut child = slurm_shard(&sb, 1, 2, "s.sqlite")
        .args(["--commit-every", "8"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while responses(&store) < 16 && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    let kept = responses(&store);
    let first = json_of(slurm_shard(&sb, 1, 2, "s.sqlite").output().unwrap());
    let second = json_of(slurm_shard(&sb, 2, 2, "s.sqlite").output().unwrap());
    // Everything the killed run committed was kept and not asked again.
    assert_eq!(kept as u64 + computed(&first) + computed(&second), total);
    let mut all = metrics(&first);
    all.extend(metrics(&second));
    let one = json_of(sb.run(EVAL.iter().chain(&["--store", "one.sqlite", "--json"])));
    assert_eq!(all, metrics(&one));
}

fn responses(store: &Path) -> usize {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row("SELECT count(*) FROM responses", [], |r| r.get::<_, i64>(0))
        .map(|n| n as usize)
        .unwrap_or(0)
}

#[test]
fn shard_flags_say_what_is_wrong() {
    let sb = Sandbox::new();
    for (args, code, expected) in [
        (vec!["--shard", "3/3"], 2, "0 <= I < N"),
        (vec!["--shard", "x"], 2, "expected I/N"),
        (vec!["--shards", "2"], 2, "--shard"),
        (vec!["--shard", "auto"], 1, "no scheduler variables"),
    ] {
        let out = sb
            .ckpt(["eval", "runs", "--tasks", "arc_easy"].iter().chain(&args))
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("RANK")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // Kubernetes exports the index only: --shards gives the count.
    let out = sb
        .ckpt(["eval", "runs", "--tasks", "arc_easy", "--shard", "auto"])
        .env("JOB_COMPLETION_INDEX", "1")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shards N"));
}

/// The launch examples parse (bash -n; the manifest as YAML), and the ckpt command
/// lines in them are accepted by the binary's own parser.
#[test]
fn launch_examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for script in ["slurm-eval-array.sh", "one-node-multi-gpu.sh"] {
        let status = Command::new("bash")
            .arg("-n")
            .arg(dir.join(script))
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
    }
    let text = std::fs::read_to_string(dir.join("k8s-eval-indexed-job.yaml")).unwrap();
    let job: Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--shard=auto"));
    // The manifest's flags are ckpt's: the run fails on the missing data (exit 1),
    // not on a flag (exit 2).
    let sb = Sandbox::new();
    let out = sb
        .ckpt(&args)
        .env("JOB_COMPLETION_INDEX", "0")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ckpt sharpness runs` on `texts.jsonl`: short windows, one batch, `samples` probes
/// from seed 7, JSON out, results in `out`.
fn sharpness_args(samples: usize, out: &str, extra: &[&str]) -> Vec<String> {
    let mut more = vec!["--out", out];
    more.extend(extra);
    common::small_sharpness(&["runs"], samples, 7, &more)
}

/// Sharpness split by checkpoint: two shards measure what one process measures, probe
/// for probe, each into its own results file.
#[test]
fn sharded_sharpness_equals_one_process() {
    let sb = sweep();
    std::fs::copy(
        common::fixture_in("arch", "texts.jsonl"),
        sb.path().join("texts.jsonl"),
    )
    .unwrap();
    let args = |out: &str| sharpness_args(3, out, &[]);
    let by_checkpoint = |report: &Value| -> BTreeMap<String, Value> {
        report
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["fingerprint"].as_str().unwrap().to_string(),
                    r["samples"].clone(),
                )
            })
            .collect()
    };
    let one = by_checkpoint(&json_of(sb.run(args("one.jsonl"))));
    assert_eq!(one.len(), 6);
    let mut sharded = BTreeMap::new();
    for i in 0..2 {
        let mut a = args("s.jsonl");
        a.extend(["--shard".into(), format!("{i}/2")]);
        sharded.extend(by_checkpoint(&json_of(sb.run(a))));
        assert!(sb.path().join(format!("s.shard-{i}-of-2.jsonl")).is_file());
    }
    assert_eq!(sharded, one);
}

/// `ckpt score --shard I/N`: each shard scores its share of the texts (balanced by
/// length), with their indices in the file; together they are the unsharded scores.
#[test]
fn score_shards_split_the_texts() {
    let sb = Sandbox::new();
    let ckpt = common::fixture_in("arch", "gpt_neox_parallel");
    let texts = common::fixture_in("arch", "texts.jsonl");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "score",
            common::arg(&ckpt),
            "--text",
            common::arg(&texts),
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let whole = sb.run_json(args(&[]));
    let all = whole["texts"].as_array().unwrap();
    let mut seen = vec![false; all.len()];
    for i in 0..2 {
        let part = sb.run_json(args(&["--shard", &format!("{i}/2")]));
        assert_eq!(part["shard"], format!("{i}/2"));
        let indices = part["text_indices"].as_array().unwrap();
        let scored = part["texts"].as_array().unwrap();
        assert_eq!(indices.len(), scored.len());
        for (index, score) in indices.iter().zip(scored) {
            let index = index.as_u64().unwrap() as usize;
            assert!(!seen[index], "text {index} in two shards");
            seen[index] = true;
            assert_eq!(score["loglikelihood"], all[index]["loglikelihood"]);
        }
    }
    assert!(seen.iter().all(|&s| s), "every text in a shard");
}

/// Fewer checkpoints than shards: each checkpoint's probes are cut into blocks, one
/// per shard; a run without `--shard` then joins the blocks beside its `--out` (or in
/// its store) without measuring a probe, and equals one process probe for probe.
#[test]
fn sharpness_blocks_of_probes_join_into_one_measurement() {
    let sb = Sandbox::new();
    common::copy_dir(
        &common::fixture_in("arch", "qwen3"),
        &sb.path().join("runs/qwen3/step-1"),
    );
    std::fs::copy(
        common::fixture_in("arch", "texts.jsonl"),
        sb.path().join("texts.jsonl"),
    )
    .unwrap();
    let args = |out: &str, extra: &[&str]| sharpness_args(6, out, extra);
    let one = json_of(sb.run(args("one.jsonl", &[])));
    let one = &one.as_array().unwrap()[0];
    let mut starts = Vec::new();
    for i in 0..3 {
        let part = json_of(sb.run(args("s.jsonl", &["--shard", &format!("{i}/3")])));
        let block = &part.as_array().unwrap()[0];
        let start = block["probe_start"].as_u64().unwrap() as usize;
        let samples = block["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 2, "six probes in three blocks");
        assert_eq!(
            samples[..],
            one["samples"].as_array().unwrap()[start..start + 2]
        );
        starts.push(start);
    }
    starts.sort();
    assert_eq!(starts, [0, 2, 4]);
    // Joined: the same estimate, probe for probe, and no probe measured again.
    let joined = sb
        .ckpt(args("s.jsonl", &[]))
        .env("CKPT_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&joined.stderr).to_string();
    let joined = json_of(joined);
    let joined = &joined.as_array().unwrap()[0];
    assert_eq!(joined["samples"], one["samples"]);
    assert_eq!(joined["estimate"], one["estimate"]);
    assert!(joined["probe_start"].is_null());
    assert!(stderr.contains("resuming after 6 probes"), "{stderr}");
}

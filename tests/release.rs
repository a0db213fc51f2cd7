//! `ckpt release` end to end against a Hub stand-in on loopback (`common/hub_server.rs`):
//! upload with basic and multipart LFS transfers, download back with the hf-hub crate
//! (bytes identical), retries on injected faults, reruns that finish a failed upload
//! without resending objects or committing twice, the token kept out of every output,
//! the dry run, the model card's metadata, and bad input.

mod common;
#[path = "common/hub_server.rs"]
mod hub_server;

use common::{arg, copy_dir, fixture, Sandbox};
use hub_server::{Fault, FaultAction, HubServer, Options};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A WSO sidecar as the trainer writes it (step 300 of a 300-step run).
const WSO_META: &str = r#"{"step": 300, "tokens_seen": 1228800, "stage": "pre",
  "schedule": {"kind": "wso", "peak_lr": 0.003, "warmup": 20, "total_steps": 300, "alpha_pre": 1.0},
  "lr": 0.003, "train_loss": 3.21, "ckpt_version": "0.1.0"}"#;

/// The parity fixture `llama_gqa` as `runs/wso/step-300` of the sandbox, with `meta`
/// as its `ckpt.json` (none when `None`).
fn checkpoint(sb: &Sandbox, meta: Option<&str>) -> PathBuf {
    let dir = sb.path().join("runs/wso/step-300");
    copy_dir(&fixture("llama_gqa"), &dir);
    if let Some(meta) = meta {
        std::fs::write(dir.join("ckpt.json"), meta).unwrap();
    }
    dir
}

/// A server where `model.safetensors` (~165 KiB) goes multipart in 32 KiB parts and
/// the LR plot (~75 KiB) by a basic transfer.
fn server() -> HubServer {
    HubServer::start(
        Options {
            multipart_threshold: 100 * 1024,
            chunk_size: 32 * 1024,
            ..Options::default()
        },
        None,
    )
}

/// `ckpt release ARGS` against `hub` with its token in HF_TOKEN, no other token
/// source, and short retry waits.
fn release(sb: &Sandbox, hub: &HubServer, args: &[&str]) -> Output {
    release_with_token(sb, hub, Some(&hub.token()), args)
}

fn release_with_token(sb: &Sandbox, hub: &HubServer, token: Option<&str>, args: &[&str]) -> Output {
    let quick = ["--retry-wait", "0.05"];
    let mut cmd = sb.ckpt(["release"].iter().chain(args).chain(&quick));
    cmd.env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", sb.path().join("hf-home"))
        .env_remove("HF_TOKEN_PATH")
        .env_remove("HUGGING_FACE_HUB_TOKEN")
        .env_remove("HF_TOKEN");
    if let Some(t) = token {
        cmd.env("HF_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: &Output) -> Value {
    assert!(out.status.success(), "ckpt release failed:\n{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a failure:\n{}",
        text(out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file of `dir`, by name.
fn dir_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Downloads `files` of `repo` at `revision` with the hf-hub crate.
fn download(
    hub: &HubServer,
    repo: &str,
    revision: &str,
    files: &[String],
    token: Option<String>,
    cache: &Path,
) -> Vec<(String, Vec<u8>)> {
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_endpoint(hub.url.clone())
        .with_cache_dir(cache.to_path_buf())
        .with_token(token)
        .with_progress(false)
        .build()
        .unwrap();
    let repo = api.repo(hf_hub::Repo::with_revision(
        repo.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    ));
    files
        .iter()
        .map(|f| {
            let path = repo.get(f).unwrap_or_else(|e| panic!("download {f}: {e}"));
            (f.clone(), std::fs::read(path).unwrap())
        })
        .collect()
}

/// The expected release: what a dry run writes.
fn dry_run(sb: &Sandbox, ckpt: &Path, extra: &[&str]) -> PathBuf {
    let out_dir = sb
        .path()
        .join(format!("dry-{}", dir_files(sb.path()).len()));
    let mut args = vec![
        "release",
        arg(ckpt),
        "--repo",
        "tester/tiny-wso",
        "--dry-run",
        arg(&out_dir),
    ];
    args.extend(extra);
    let out = sb
        .ckpt(&args)
        .env_remove("HF_TOKEN")
        .env("HF_HOME", sb.path().join("hf-home"))
        .output()
        .unwrap();
    ok(&out);
    out_dir
}

fn front_matter(card: &str) -> Value {
    let rest = card.strip_prefix("---\n").expect("front matter");
    let end = rest.find("\n---\n").expect("closing ---");
    serde_yaml_ng::from_str(&rest[..end]).expect("valid YAML")
}

#[test]
fn dry_run_writes_exactly_the_planned_files() {
    let sb = Sandbox::new();
    let ckpt = checkpoint(&sb, Some(WSO_META));
    let out_dir = sb.path().join("out");
    let out = sb
        .ckpt([
            "release",
            arg(&ckpt),
            "--repo",
            "org/tiny-wso",
            "--dry-run",
            arg(&out_dir),
            "--json",
        ])
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    let json = ok(&out);
    let planned: Vec<String> = json["plan"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path_in_repo"].as_str().unwrap().to_string())
        .collect();
    let expected = [
        "README.md",
        "config.json",
        "lr_schedule.png",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ];
    assert_eq!(planned, expected);
    assert_eq!(dir_files(&out_dir), expected, "exactly the planned files");
    // Checkpoint files are copied byte for byte; ckpt.json stays home.
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(out_dir.join(f)).unwrap(),
            std::fs::read(ckpt.join(f)).unwrap(),
            "{f}"
        );
    }
    // Sizes, hashes and predicted modes are those of the written files.
    for f in json["plan"]["files"].as_array().unwrap() {
        let bytes = std::fs::read(out_dir.join(f["path_in_repo"].as_str().unwrap())).unwrap();
        assert_eq!(f["size"], bytes.len());
        use sha2::Digest;
        assert_eq!(
            f["sha256"].as_str().unwrap(),
            format!("{:x}", sha2::Sha256::digest(&bytes))
        );
    }
    let modes: Vec<&str> = json["plan"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["mode"].as_str().unwrap())
        .collect();
    assert_eq!(
        modes,
        ["regular", "regular", "lfs", "lfs", "regular", "regular"]
    );
    assert_eq!(
        &std::fs::read(out_dir.join("lr_schedule.png")).unwrap()[..4],
        b"\x89PNG"
    );
    assert_eq!(json["verdict"]["verdict"], "not-decayed");

    let card = std::fs::read_to_string(out_dir.join("README.md")).unwrap();
    let meta = front_matter(&card);
    assert_eq!(meta["library_name"], "transformers");
    assert_eq!(meta["pipeline_tag"], "text-generation");
    assert_eq!(meta["license"], "apache-2.0");
    assert!(meta["tags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("wso")));
    assert!(
        meta.get("model-index").is_none(),
        "no results, no model-index"
    );
    assert!(card.contains("No evaluation results were recorded"));
    assert!(card.contains("![Learning-rate schedule](lr_schedule.png)"));
    assert!(
        card.contains("η = 3e-3, W = 20, T = 300"),
        "the schedule's formula"
    );
    assert!(card.contains("AutoModelForCausalLM.from_pretrained(\"org/tiny-wso\")"));

    // A dry run never overwrites: the directory must be new or empty.
    let again = sb
        .ckpt([
            "release",
            arg(&ckpt),
            "--repo",
            "org/tiny-wso",
            "--dry-run",
            arg(&out_dir),
        ])
        .output()
        .unwrap();
    assert!(failed(&again).contains("not empty"));

    // A custom template that keeps the Hub's rules is used as is.
    let tmpl = sb.write(
        "card.j2",
        "---\nlicense: {{ license | yaml }}\nlanguage: en\nlibrary_name: transformers\npipeline_tag: text-generation\n---\n# {{ model_name }} at step {{ training.step }}\n",
    );
    let custom = sb.path().join("custom");
    ok(&sb
        .ckpt([
            "release",
            arg(&ckpt),
            "--repo",
            "org/tiny-wso",
            "--dry-run",
            arg(&custom),
            "--card-template",
            arg(&tmpl),
            "--license",
            "mit",
        ])
        .output()
        .unwrap());
    assert_eq!(
        std::fs::read_to_string(custom.join("README.md")).unwrap(),
        "---\nlicense: \"mit\"\nlanguage: en\nlibrary_name: transformers\npipeline_tag: text-generation\n---\n# tiny-wso at step 300\n"
    );

    // --include adds checkpoint files, --exclude removes any.
    let other = sb.path().join("other");
    let out = sb
        .ckpt([
            "release",
            arg(&ckpt),
            "--repo",
            "org/tiny-wso",
            "--dry-run",
            arg(&other),
            "--include",
            "ckpt.json",
            "--exclude",
            "*.png",
            "--exclude",
            "tokenizer_config.json",
        ])
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(
        dir_files(&other),
        [
            "README.md",
            "ckpt.json",
            "config.json",
            "model.safetensors",
            "tokenizer.json"
        ]
    );
}

#[test]
fn release_then_download_with_hf_hub_gives_identical_bytes() {
    let sb = Sandbox::new();
    let ckpt = checkpoint(&sb, Some(WSO_META));
    let expected_dir = dry_run(&sb, &ckpt, &[]);
    let hub = server();
    let json = ok(&release(
        &sb,
        &hub,
        &[arg(&ckpt), "--repo", "tiny-wso", "--json"],
    ));
    let upload = &json["upload"];
    assert_eq!(upload["outcome"], "committed");
    assert_eq!(
        upload["repo"], "tester/tiny-wso",
        "the namespace is the token's user"
    );
    assert_eq!(upload["created_repo"], true);

    let files = dir_files(&expected_dir);
    let mut in_repo = hub.files("tester/tiny-wso", "main");
    in_repo.retain(|f| f != ".gitattributes");
    assert_eq!(in_repo, files);
    assert_eq!(
        hub.is_lfs("tester/tiny-wso", "main", "model.safetensors"),
        Some(true)
    );
    assert_eq!(
        hub.is_lfs("tester/tiny-wso", "main", "lr_schedule.png"),
        Some(true)
    );
    assert_eq!(
        hub.is_lfs("tester/tiny-wso", "main", "config.json"),
        Some(false)
    );

    // The protocol as huggingface_hub speaks it: one commit, the weights in 6 parts of
    // 32 KiB completed once, the plot in one PUT, both verified.
    let weights = std::fs::metadata(ckpt.join("model.safetensors"))
        .unwrap()
        .len();
    assert_eq!(hub.ok_count("part") as u64, weights.div_ceil(32 * 1024));
    assert_eq!(hub.ok_count("complete"), 1);
    assert_eq!(hub.ok_count("upload"), 1);
    assert_eq!(hub.ok_count("verify"), 2);
    assert_eq!(hub.ok_count("commit"), 1);
    assert_eq!(hub.history_len("tester/tiny-wso", "main"), 2);
    for e in hub.log() {
        if matches!(
            e.route,
            "whoami" | "create" | "revision" | "preupload" | "batch" | "commit" | "verify"
        ) {
            assert!(e.authorized, "{} {} without the token", e.method, e.target);
        }
    }

    // Downloaded by the Hub's Rust client: the same bytes as the dry run's.
    let cache = sb.path().join("hf-cache");
    for (name, bytes) in download(&hub, "tester/tiny-wso", "main", &files, None, &cache) {
        assert_eq!(
            bytes,
            std::fs::read(expected_dir.join(&name)).unwrap(),
            "{name}"
        );
    }

    // A second release of the same checkpoint finds everything in place: no upload,
    // no commit.
    hub.clear_log();
    let json = ok(&release(
        &sb,
        &hub,
        &[arg(&ckpt), "--repo", "tester/tiny-wso", "--json"],
    ));
    assert_eq!(json["upload"]["outcome"], "up-to-date");
    assert_eq!(
        json["upload"]["unchanged"].as_array().unwrap().len(),
        files.len()
    );
    assert_eq!(
        hub.count("commit") + hub.count("part") + hub.count("upload") + hub.count("batch"),
        0
    );
    assert_eq!(hub.history_len("tester/tiny-wso", "main"), 2);
}

#[test]
fn faults_are_retried_per_request() {
    let sb = Sandbox::new();
    let ckpt = checkpoint(&sb, Some(WSO_META));
    let hub = server();
    hub.fault(Fault::new("batch", FaultAction::RetryAfter(1)));
    hub.fault(Fault::new("part", FaultAction::Status(500)).part(2));
    hub.fault(Fault::new("part", FaultAction::Drop).part(4));
    hub.fault(Fault::new("upload", FaultAction::Drop));
    hub.fault(Fault::new("verify", FaultAction::Status(503)));
    hub.fault(Fault::new("preupload", FaultAction::Status(502)));
    let out = release(&sb, &hub, &[arg(&ckpt), "--repo", "ckpt-org/tiny-wso"]);
    ok(&out);
    let log = hub.log();
    // Retry-After: 1 was honoured.
    let batches: Vec<_> = log.iter().filter(|e| e.route == "batch").collect();
    assert_eq!(
        batches.iter().map(|e| e.status).collect::<Vec<_>>(),
        [429, 200]
    );
    assert!(batches[1].at - batches[0].at >= std::time::Duration::from_secs(1));
    // Each failed request was sent again, and only it.
    let parts = |n: u32| {
        log.iter()
            .filter(|e| e.route == "part" && e.part == Some(n))
            .map(|e| e.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(parts(1), [200]);
    assert_eq!(parts(2), [500, 200]);
    assert_eq!(parts(4), [0, 200]);
    assert_eq!(hub.count("upload"), 2);
    assert_eq!(hub.ok_count("commit"), 1);
    let cache = sb.path().join("hf-cache");
    let got = download(
        &hub,
        "ckpt-org/tiny-wso",
        "main",
        &["model.safetensors".into()],
        None,
        &cache,
    );
    assert_eq!(
        got[0].1,
        std::fs::read(ckpt.join("model.safetensors")).unwrap()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HTTP 429") && stderr.contains("retrying"),
        "{stderr}"
    );
}

#[test]
fn a_rerun_finishes_a_failed_upload_without_resending_objects() {
    let sb = Sandbox::new();
    let ckpt = checkpoint(&sb, Some(WSO_META));
    let hub = server();
    let repo = "tester/tiny-wso";

    // Part 3 fails on every attempt: the release stops, naming it; nothing committed.
    hub.fault(
        Fault::new("part", FaultAction::Status(500))
            .part(3)
            .times(2),
    );
    let out = release(&sb, &hub, &[arg(&ckpt), "--repo", repo, "--retries", "1"]);
    let err = failed(&out);
    assert!(err.contains("part 3/") && err.contains("HTTP 500"), "{err}");
    assert_eq!(hub.count("commit"), 0);
    assert_eq!(hub.history_len(repo, "main"), 1);

    // The commit fails on every attempt: all objects are uploaded, nothing committed.
    hub.clear_log();
    hub.fault(Fault::new("commit", FaultAction::Status(500)).times(2));
    let err = failed(&release(
        &sb,
        &hub,
        &[arg(&ckpt), "--repo", repo, "--retries", "1"],
    ));
    assert!(err.contains("nothing was committed"), "{err}");
    assert_eq!(
        hub.count("commit"),
        2,
        "resent only after checking the branch did not move"
    );
    assert_eq!(hub.history_len(repo, "main"), 1);

    // The rerun sends no object again (the Hub has them all) and commits once.
    hub.clear_log();
    let json = ok(&release(&sb, &hub, &[arg(&ckpt), "--repo", repo, "--json"]));
    assert_eq!(
        hub.count("part") + hub.count("upload") + hub.count("complete"),
        0
    );
    let mut skipped: Vec<&str> = json["upload"]["already_on_hub"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    skipped.sort();
    assert_eq!(skipped, ["lr_schedule.png", "model.safetensors"]);
    assert_eq!(hub.ok_count("commit"), 1);
    assert_eq!(hub.history_len(repo, "main"), 2);
}

#[test]
fn a_lost_commit_answer_is_not_committed_twice() {
    let sb = Sandbox::new();
    let ckpt = checkpoint(&sb, Some(WSO_META));
    let hub = server();
    hub.fault(Fault::new("commit", FaultAction::DropAfterHandling));
    let json = ok(&release(
        &sb,
        &hub,
        &[arg(&ckpt), "--repo", "tester/m", "--json"],
    ));
    assert_eq!(json["upload"]["outcome"], "committed-answer-lost");
    assert_eq!(hub.count("commit"), 1, "the commit was not sent again");
    assert_eq!(hub.history_len("tester/m", "main"), 2);
    assert_eq!(
        json["upload"]["commit_oid"].as_str(),
        hub.head("tester/m", "main").as_deref()
    );

    // Someone else commits while we do: refused by parentCommit, reported, not retried.
    let hub = server();
    hub.fault(Fault::new("commit", FaultAction::ConcurrentCommit));
    let err = failed(&release(&sb, &hub, &[arg(&ckpt), "--repo", "tester/m"]));
    assert!(
        err.contains("HTTP 412") && err.contains("branch moved"),
        "{err}"
    );
    assert_eq!(hub.count("commit"), 1);
    assert_eq!(
        hub.head_message("tester/m", "main").as_deref(),
        Some("concurrent")
    );
}

#[test]
fn the_token_never_appears_in_output() {
    let sb = Sandbox::new();
    let ckpt = checkpoint(&sb, Some(WSO_META));
    let hub = server();
    let token = hub.token();
    hub.fault(Fault::new("part", FaultAction::Status(500)).part(1));
    hub.fault(Fault::new("commit", FaultAction::DropAfterHandling));
    let out = release(
        &sb,
        &hub,
        &["-vv", arg(&ckpt), "--repo", "tester/m", "--json"],
    );
    ok(&out);
    let all = text(&out);
    assert!(all.contains("HTTP 500"), "the -vv log is there: {all}");
    assert!(!all.contains(&token), "token leaked:\n{all}");

    // A server that echoes the Authorization header in its error: redacted.
    hub.fault(Fault::new("preupload", FaultAction::EchoAuthorization(400)));
    let out = release(&sb, &hub, &["-vv", arg(&ckpt), "--repo", "tester/m2"]);
    let err = failed(&out);
    assert!(err.contains("Authorization: Bearer hf_***"), "{err}");
    assert!(!text(&out).contains(&token));

    // Passed as --token: the same.
    let out = release_with_token(
        &sb,
        &hub,
        None,
        &["-vv", arg(&ckpt), "--repo", "tester/m3", "--token", &token],
    );
    ok(&out);
    assert!(!text(&out).contains(&token));
}

#[test]
fn private_repos_branches_and_pull_requests() {
    let sb = Sandbox::new();
    let ckpt = checkpoint(&sb, Some(WSO_META));
    let hub = server();
    let cache = sb.path().join("hf-cache");
    let files = vec!["config.json".to_string()];

    ok(&release(
        &sb,
        &hub,
        &[arg(&ckpt), "--repo", "tester/private", "--private"],
    ));
    let anonymous = hf_hub::api::sync::ApiBuilder::new()
        .with_endpoint(hub.url.clone())
        .with_cache_dir(cache.clone())
        .with_token(None)
        .with_progress(false)
        .build()
        .unwrap();
    assert!(anonymous
        .model("tester/private".into())
        .get("config.json")
        .is_err());
    let got = download(
        &hub,
        "tester/private",
        "main",
        &files,
        Some(hub.token()),
        &cache,
    );
    assert_eq!(got[0].1, std::fs::read(ckpt.join("config.json")).unwrap());

    // --revision BRANCH creates the branch; main keeps its one commit.
    ok(&release(
        &sb,
        &hub,
        &[
            arg(&ckpt),
            "--repo",
            "tester/b",
            "--revision",
            "v1",
            "--commit-message",
            "first cut",
        ],
    ));
    assert_eq!(hub.history_len("tester/b", "main"), 1);
    assert_eq!(
        hub.head_message("tester/b", "v1").as_deref(),
        Some("first cut")
    );
    let got = download(&hub, "tester/b", "v1", &files, None, &cache);
    assert_eq!(got[0].1, std::fs::read(ckpt.join("config.json")).unwrap());

    // --create-pr opens refs/pr/1 and leaves main alone.
    let out = release(
        &sb,
        &hub,
        &[arg(&ckpt), "--repo", "tester/b", "--create-pr"],
    );
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("/tester/b/discussions/1"));
    assert_eq!(hub.history_len("tester/b", "main"), 1);
    assert!(hub
        .files("tester/b", "refs/pr/1")
        .contains(&"model.safetensors".to_string()));
}

#[test]
fn decayed_and_unknown_schedules_are_refused_unless_allowed() {
    let sb = Sandbox::new();
    let wsd = r#"{"step": 300, "stage": "pre", "schedule": {"kind": "wsd", "peak_lr": 0.003,
        "warmup": 20, "total_steps": 300, "stable_ratio": 0.75, "alpha_pre": 0.1}, "lr": 0.0003}"#;
    let ckpt = checkpoint(&sb, Some(wsd));
    let out = sb
        .ckpt(["release", arg(&ckpt), "--repo", "o/m", "--dry-run", "x"])
        .output()
        .unwrap();
    let err = failed(&out);
    assert!(
        err.contains("decayed") && err.contains("alpha_pre=0.1") && err.contains("--allow-decayed"),
        "{err}"
    );
    assert!(err.contains("step-300"), "names the checkpoint: {err}");
    assert!(!sb.path().join("x").exists());

    let dir = dry_run(&sb, &ckpt, &["--allow-decayed"]);
    let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let tags = front_matter(&card)["tags"].clone();
    assert!(tags
        .as_array()
        .unwrap()
        .contains(&Value::from("lr-schedule-wsd")));
    assert!(!tags.as_array().unwrap().contains(&Value::from("wso")));
    assert!(
        card.contains("decayed during training") && card.contains("S = 230"),
        "{card}"
    );

    // A merged checkpoint (ckpt merge) counts as decayed.
    std::fs::write(
        ckpt.join("ckpt.json"),
        r#"{"step": 300, "schedule": {"kind": "wso"}, "merge": {"shape": "cosine", "accumulate": "f32", "sources": []}}"#,
    )
    .unwrap();
    let err = failed(
        &sb.ckpt(["release", arg(&ckpt), "--repo", "o/m", "--dry-run", "y"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("merged") && err.contains("cosine"), "{err}");

    // No ckpt.json: unknown, refused unless --allow-unknown-schedule.
    std::fs::remove_file(ckpt.join("ckpt.json")).unwrap();
    let err = failed(
        &sb.ckpt(["release", arg(&ckpt), "--repo", "o/m", "--dry-run", "z"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("schedule unknown") && err.contains("--allow-unknown-schedule"),
        "{err}"
    );
    let dir = dry_run(&sb, &ckpt, &["--allow-unknown-schedule"]);
    assert!(
        !dir.join("lr_schedule.png").exists(),
        "no schedule, no plot"
    );
    let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(card.contains("not recorded"));
}

#[test]
fn bad_input_fails_with_clear_errors() {
    let sb = Sandbox::new();
    let ckpt = checkpoint(&sb, Some(WSO_META));
    let hub = server();

    // Not a checkpoint, invalid repository ids: before any request.
    let notes = sb.write("notes/README.txt", "not a checkpoint");
    let err = failed(&release(
        &sb,
        &hub,
        &[arg(notes.parent().unwrap()), "--repo", "o/m"],
    ));
    assert!(
        err.contains("notes") && err.contains("no checkpoint found"),
        "{err}"
    );
    let err = failed(&release(
        &sb,
        &hub,
        &[arg(&sb.path().join("missing")), "--repo", "o/m"],
    ));
    assert!(err.contains("missing") && err.contains("no such"), "{err}");
    let err = failed(&release(&sb, &hub, &[arg(&ckpt), "--repo", "o/bad name"]));
    assert!(
        err.contains("invalid repository id") && err.contains("' '"),
        "{err}"
    );
    let err = failed(&release(&sb, &hub, &[arg(&ckpt), "--repo", "a/b/c"]));
    assert!(err.contains("invalid repository id"), "{err}");
    assert!(hub.log().is_empty(), "nothing was sent");

    // No token anywhere.
    let err = failed(&release_with_token(
        &sb,
        &hub,
        None,
        &[arg(&ckpt), "--repo", "o/m"],
    ));
    assert!(
        err.contains("no Hugging Face token") && err.contains("HF_TOKEN"),
        "{err}"
    );

    // 401: a wrong token, named by where it came from.
    let err = failed(&release_with_token(
        &sb,
        &hub,
        Some("hf_wrong"),
        &[arg(&ckpt), "--repo", "o/m"],
    ));
    assert!(
        err.contains("HTTP 401") && err.contains("token was rejected") && err.contains("HF_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("hf_wrong"));

    // 403: another user's namespace.
    let err = failed(&release(
        &sb,
        &hub,
        &[arg(&ckpt), "--repo", "someone-else/m"],
    ));
    assert!(
        err.contains("HTTP 403") && err.contains("someone-else"),
        "{err}"
    );

    // 403 on an existing repository the token may not write to (creation's 403 is
    // forgiven when the repository exists, the write is not).
    hub.create_repo("someone-else/shared", false);
    let err = failed(&release(
        &sb,
        &hub,
        &[arg(&ckpt), "--repo", "someone-else/shared"],
    ));
    assert!(err.contains("preupload: HTTP 403"), "{err}");

    // 404: a pull request against a branch that does not exist.
    let err = failed(&release(
        &sb,
        &hub,
        &[
            arg(&ckpt),
            "--repo",
            "tester/m",
            "--create-pr",
            "--revision",
            "nope",
        ],
    ));
    assert!(
        err.contains("HTTP 404") && err.contains("does not exist"),
        "{err}"
    );

    // 409 on the commit.
    hub.fault(Fault::new("commit", FaultAction::Status(409)));
    let err = failed(&release(&sb, &hub, &[arg(&ckpt), "--repo", "tester/m"]));
    assert!(
        err.contains("HTTP 409") && err.contains("conflict"),
        "{err}"
    );

    // A weight that is NaN.
    let broken = sb.path().join("broken/step-300");
    copy_dir(&ckpt, &broken);
    poison(&broken.join("model.safetensors"), "model.norm.weight");
    let err = failed(
        &sb.ckpt(["release", arg(&broken), "--repo", "o/m", "--dry-run", "d1"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("model.safetensors")
            && err.contains("model.norm.weight")
            && err.contains("non-finite"),
        "{err}"
    );

    // No tokenizer.
    let no_tok = sb.path().join("notok/step-300");
    copy_dir(&ckpt, &no_tok);
    std::fs::remove_file(no_tok.join("tokenizer.json")).unwrap();
    let err = failed(
        &sb.ckpt(["release", arg(&no_tok), "--repo", "o/m", "--dry-run", "d2"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("tokenizer.json") && err.contains("missing"),
        "{err}"
    );

    // A results file that is not in the documented format.
    let results = sb.write("results.json", r#"{"evals": [{"task": "x", "value": 1}]}"#);
    let err = failed(
        &sb.ckpt([
            "release",
            arg(&ckpt),
            "--repo",
            "o/m",
            "--dry-run",
            "d3",
            "--results",
            arg(&results),
        ])
        .output()
        .unwrap(),
    );
    assert!(
        err.contains("results.json") && err.contains("evals[0]"),
        "{err}"
    );

    // A card template that breaks the Hub's metadata rules.
    let tmpl = sb.write("card.j2", "---\nlanguage: en\nlibrary_name: transformers\npipeline_tag: text-generation\n---\n# {{ model_name }}\n");
    let err = failed(
        &sb.ckpt([
            "release",
            arg(&ckpt),
            "--repo",
            "o/m",
            "--dry-run",
            "d4",
            "--card-template",
            arg(&tmpl),
        ])
        .output()
        .unwrap(),
    );
    assert!(
        err.contains("model card") && err.contains("license"),
        "{err}"
    );
}

/// Writes a NaN over the first element of tensor `name`.
fn poison(file: &Path, name: &str) {
    let mut bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize + 8 + n;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
}

/// The card with results, against the committed sample that
/// `scripts/check_model_card.py` validated with huggingface_hub.
#[test]
fn card_with_results_keeps_the_validated_metadata() {
    let sb = Sandbox::new();
    let ckpt = checkpoint(&sb, Some(WSO_META));
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/release");
    let results = fixtures.join("results.json");
    let dir = dry_run(
        &sb,
        &ckpt,
        &[
            "--results",
            arg(&results),
            "--dataset",
            "ckpt/synthetic-world",
            "--tag",
            "tiny",
        ],
    );
    let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let meta = front_matter(&card);
    let sample = std::fs::read_to_string(fixtures.join("model_card.md")).unwrap();
    assert_eq!(
        meta,
        front_matter(&sample),
        "regenerate tests/fixtures/release/model_card.md and rerun scripts/check_model_card.py"
    );

    // The keys huggingface_hub requires of every model-index result.
    for m in [&meta, &front_matter(&sample)] {
        let results = m["model-index"][0]["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "arc_easy's two metrics are one result");
        for r in results {
            assert_eq!(r["task"]["type"], "text-generation");
            for key in ["type", "name"] {
                assert!(r["dataset"][key].as_str().is_some_and(|s| !s.is_empty()));
            }
            for metric in r["metrics"].as_array().unwrap() {
                assert!(metric["type"].is_string() && metric["value"].is_number());
            }
        }
        assert_eq!(m["model-index"][0]["name"], "tiny-wso");
        assert_eq!(m["datasets"], serde_json::json!(["ckpt/synthetic-world"]));
    }
    let arc = &meta["model-index"][0]["results"][0];
    assert_eq!(arc["dataset"]["type"], "allenai/ai2_arc");
    assert_eq!(arc["dataset"]["config"], "ARC-Easy");
    assert_eq!(arc["metrics"][1]["value"], 0.4125);
    // SFT scores are in the body, not in model-index; sharpness is relative to this model.
    assert!(card.contains("After supervised fine-tuning"));
    assert!(card.contains("| ifeval |"));
    assert!(!serde_json::to_string(&meta).unwrap().contains("ifeval"));
    assert!(
        card.contains("2.38×") && card.contains("2.38× to 2.91×"),
        "{card}"
    );
}

/// `ckpt release runs/tiny-wso/step-N` on a fresh `ckpt train` run: the card carries
/// the run's hyperparameters, and what is downloaded loads in `ckpt score`.
#[test]
fn a_trained_run_is_released_and_loads_back() {
    let sb = Sandbox::new();
    let synth = sb.run([
        "synth",
        "--out",
        "data/synth",
        "--entities",
        "20",
        "--pretrain-docs",
        "300",
        "--midtrain-docs",
        "50",
        "--sft-chats",
        "50",
        "--validation-docs",
        "10",
    ]);
    assert!(synth.status.success(), "{}", text(&synth));
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/tiny-wso.toml");
    let mut args = vec!["train".to_string(), arg(&recipe).to_string()];
    for set in [
        "model.hidden_size=32",
        "model.intermediate_size=86",
        "model.num_hidden_layers=2",
        "tokenizer.train_vocab_size=320",
        "training.seq_len=32",
        "training.batch_tokens=512",
        "schedule.warmup=4",
        "schedule.total_steps=12",
        "training.checkpoint_every=12",
    ] {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    let train = sb.run(&args);
    assert!(train.status.success(), "{}", text(&train));
    let step = sb.path().join("runs/tiny-wso/step-0000012");
    assert!(
        step.join("ckpt.json").is_file(),
        "{:?}",
        dir_files(&sb.path().join("runs/tiny-wso"))
    );

    let hub = server();
    let json = ok(&release(
        &sb,
        &hub,
        &[arg(&step), "--repo", "ckpt-org/tiny-wso", "--json"],
    ));
    assert_eq!(json["verdict"]["verdict"], "not-decayed");
    let files: Vec<String> = json["plan"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path_in_repo"].as_str().unwrap().to_string())
        .collect();
    let cache = sb.path().join("hf-cache");
    let got = download(&hub, "ckpt-org/tiny-wso", "main", &files, None, &cache);
    let back = sb.path().join("downloaded");
    std::fs::create_dir_all(&back).unwrap();
    for (name, bytes) in &got {
        if name != "README.md" && name != "lr_schedule.png" {
            assert_eq!(bytes, &std::fs::read(step.join(name)).unwrap(), "{name}");
        }
        std::fs::write(back.join(name), bytes).unwrap();
    }
    let card = std::fs::read_to_string(back.join("README.md")).unwrap();
    assert!(
        card.contains("| Batch | 512 tokens per step (sequence length 32"),
        "{card}"
    );
    assert!(
        card.contains("pretrain.jsonl") && !card.contains(arg(sb.path())),
        "file names, not local paths"
    );
    let texts = sb.write("t.txt", "The quick brown fox.\n");
    let score = sb.run(["score", arg(&back), "--text", arg(&texts), "--json"]);
    assert!(
        score.status.success(),
        "the downloaded model loads: {}",
        text(&score)
    );
}

//! The Hugging Face cache `ckpt` writes is the cache huggingface_hub reads, and the
//! other way round. The reference is huggingface_hub 2.4.0 (what transformers 5.24
//! uses), through `scripts/check_hf_cache.py`; its output is committed under
//! `tests/fixtures/hub_cache/` (see the README there for how it was made) and replayed
//! here without Python:
//!
//! - `huggingface_hub_view.json`: what huggingface_hub (`scan_cache_dir`,
//!   `try_to_load_from_cache`) saw in a cache `ckpt eval --keep-downloads` wrote from
//!   the suite below; a fresh run must write a cache with the same view, computed here
//!   from the layout as huggingface_hub computes it;
//! - `written_by_huggingface_hub/`: a cache `hf_hub_download` wrote from the same suite,
//!   and `huggingface_hub_view_of_its_own.json`, what huggingface_hub sees in it; `ckpt`
//!   reads it offline, checkpoints and branches.
//!
//! `serve_the_suite_for_scripts` (ignored) serves the suite for the script. Its commit
//! ids are deterministic: the same suite published the same way gets the same ids.

mod common;
#[path = "common/hub_server.rs"]
mod hub_server;
#[path = "common/hub_suite.rs"]
mod hub_suite;

use common::Sandbox;
use hub_server::{HubServer, Options};
use hub_suite::{checkpoint_files, hf_ckpt, json_of};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// The reference the fixtures were made with.
const HUGGINGFACE_HUB: &str = "2.4.0";
const REPO: &str = "ckpt-org/suite";
const STEPS: [u64; 2] = [0, 100];
const TASKS: [&str; 6] = [
    "--tasks",
    "arc_easy,piqa",
    "--data-dir",
    "evaldata",
    "--limit",
    "4",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hub_cache")
}

fn fixture_json(name: &str) -> Value {
    let path = fixtures().join(name);
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap()
}

/// The stand-in with the suite on it: `stepN` branches holding checkpoint `k` plus an
/// optimizer state and a README that neither client downloads. LFS downloads redirect
/// to another host name, as the Hub's do (huggingface_hub 2.x needs it).
fn serve_suite() -> HubServer {
    let hub = HubServer::start(
        Options {
            cdn_host: Some("localhost".into()),
            ..Options::default()
        },
        None,
    );
    for (k, step) in STEPS.iter().enumerate() {
        let mut files = checkpoint_files(k as u32);
        files.push(("optimizer.pt", vec![7u8; 30_000]));
        files.push(("README.md", format!("step {step}\n").into_bytes()));
        hub.put_revision(REPO, &format!("step{step}"), &files);
    }
    hub
}

/// The suite's checkpoints on disk under `local/suite/stepN`, and the eval data.
fn local_suite(sb: &Sandbox) {
    for (k, step) in STEPS.iter().enumerate() {
        for (name, bytes) in checkpoint_files(k as u32) {
            sb.write(&format!("local/suite/step{step}/{name}"), bytes);
        }
    }
    let out = sb.run(["synth", "--eval-tasks", "evaldata", "--eval-docs", "6"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn eval_args(source: &str, store: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["eval".into(), source.into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(TASKS.iter().map(|s| s.to_string()));
    args.extend(["--store", store, "--json"].map(String::from));
    args
}

/// path -> (fingerprint, error, metrics as (task, metric, filter) -> value) of a
/// `--json` eval report.
type Scores = BTreeMap<String, (Value, Value, BTreeMap<(String, String, String), f64>)>;

fn scores(report: &Value) -> Scores {
    let mut out = BTreeMap::new();
    for c in report["checkpoints"].as_array().unwrap() {
        let mut metrics = BTreeMap::new();
        for m in c["metrics"].as_array().into_iter().flatten() {
            let key = |k: &str| m[k].as_str().unwrap().to_string();
            metrics.insert(
                (key("task"), key("metric"), key("filter")),
                m["value"].as_f64().unwrap(),
            );
        }
        out.insert(
            c["path"].as_str().unwrap().to_string(),
            (c["fingerprint"].clone(), c["error"].clone(), metrics),
        );
    }
    out
}

// ----- the cache as huggingface_hub 2.4.0 reads it (utils/_cache_manager.py) -----

/// What `scripts/check_hf_cache.py view` prints, less the version, computed from the
/// layout as huggingface_hub computes it: `scan_cache_dir` (repo folders
/// `TYPE--ORG--NAME` beside `.locks`; a ref is a file under `refs/` whose whole content,
/// unstripped, is a commit that must have a snapshot; each file under
/// `snapshots/<commit>/` resolves its symlink one hop, lexically, to a blob that must
/// exist, of the blob's size) and `try_to_load_from_cache` (the ref file's content
/// names the snapshot holding the file).
fn hf_view(root: &Path) -> Value {
    let ignored = [".DS_Store", "Thumbs.db", "desktop.ini"];
    let mut repos = Vec::new();
    let mut loads = Vec::new();
    let mut warnings = Vec::new();
    let mut incomplete = Vec::new();
    for repo_path in sorted_dir(root) {
        let name = file_name(&repo_path);
        if ignored.contains(&name.as_str()) || [".locks", "CACHEDIR.TAG"].contains(&name.as_str()) {
            continue;
        }
        if name == "blobs" && repo_path.join(".huggingface-shared-blobs").exists() {
            continue;
        }
        for blob in sorted_dir(&repo_path.join("blobs")) {
            if file_name(&blob).ends_with(".incomplete") {
                incomplete.push(relative(&blob, root));
            }
        }
        if !repo_path.is_dir() {
            warnings.push(format!("Repo path is not a directory: {name}"));
            continue;
        }
        let Some((prefix, id)) = name.split_once("--") else {
            warnings.push(format!("not a HuggingFace cache directory: {name}"));
            continue;
        };
        let repo_type = match prefix {
            "models" => "model",
            "datasets" => "dataset",
            "spaces" => "space",
            "kernels" => "kernel",
            _ => {
                warnings.push(format!("repo type {prefix}: {name}"));
                continue;
            }
        };
        let repo_id = id.replace("--", "/");
        let snapshots = repo_path.join("snapshots");
        if !snapshots.is_dir() {
            warnings.push(format!(
                "Snapshots dir doesn't exist in cached repo: {name}"
            ));
            continue;
        }
        let refs_dir = repo_path.join("refs");
        let mut refs_by_commit: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in walk_files(&refs_dir) {
            if ignored.contains(&file_name(&file).as_str()) {
                continue;
            }
            let commit = std::fs::read_to_string(&file).unwrap();
            refs_by_commit
                .entry(commit)
                .or_default()
                .insert(relative(&file, &refs_dir));
        }
        let mut revisions = Vec::new();
        let mut broken = false;
        for snapshot in sorted_dir(&snapshots) {
            let commit = file_name(&snapshot);
            if ignored.contains(&commit.as_str()) {
                continue;
            }
            if !snapshot.is_dir() {
                warnings.push(format!(
                    "Snapshots folder corrupted. Found a file: {commit}"
                ));
                broken = true;
                break;
            }
            let mut files = Vec::new();
            for file in walk_files(&snapshot) {
                let blob = match std::fs::read_link(&file) {
                    Ok(target) => lexical(&parent_of(&file).join(target)),
                    Err(_) => file.clone(),
                };
                let Ok(meta) = std::fs::metadata(&blob) else {
                    warnings.push(format!(
                        "Blob missing (broken symlink): {}",
                        blob.strip_prefix(root).unwrap_or(&blob).display()
                    ));
                    broken = true;
                    continue;
                };
                files.push(json!({
                    "file_name": file_name(&file),
                    "file_path": relative(&file, &snapshot),
                    "size_on_disk": meta.len(),
                    "blob_path": relative(&blob, &repo_path),
                }));
            }
            files.sort_by(|a, b| a["file_path"].as_str().cmp(&b["file_path"].as_str()));
            let refs: Vec<String> = refs_by_commit
                .remove(&commit)
                .unwrap_or_default()
                .into_iter()
                .collect();
            for r in &refs {
                for f in &files {
                    let filename = f["file_path"].as_str().unwrap();
                    loads.push(json!({
                        "repo_id": repo_id,
                        "revision": r,
                        "filename": filename,
                        "path": try_to_load_from_cache(root, &repo_path, r, filename),
                    }));
                }
            }
            revisions.push(json!({"commit_hash": commit, "refs": refs, "files": files}));
        }
        if !refs_by_commit.is_empty() {
            warnings.push(format!(
                "Reference(s) refer to missing commit hashes: {refs_by_commit:?} ({name})."
            ));
            broken = true;
        }
        if broken {
            continue;
        }
        repos.push(json!({
            "repo_id": repo_id,
            "repo_type": repo_type,
            "repo_path": name,
            "revisions": revisions,
        }));
    }
    loads.sort_by_key(|l| {
        ["repo_id", "revision", "filename"].map(|k| l[k].as_str().unwrap().to_string())
    });
    incomplete.sort();
    warnings.sort();
    json!({
        "repos": repos,
        "try_to_load_from_cache": loads,
        "warnings": warnings,
        "incomplete_files": incomplete,
    })
}

fn try_to_load_from_cache(root: &Path, repo_path: &Path, revision: &str, file: &str) -> Value {
    let revision = std::fs::read_to_string(repo_path.join("refs").join(revision))
        .unwrap_or_else(|_| revision.to_string());
    if repo_path
        .join(".no_exist")
        .join(&revision)
        .join(file)
        .is_file()
    {
        return "<object object>".into(); // _CACHED_NO_EXIST, as the script prints it
    }
    let cached = repo_path.join("snapshots").join(&revision).join(file);
    if cached.is_file() {
        relative(&cached, root).into()
    } else {
        "None".into()
    }
}

/// The fixture's view less what only the reference knows (its version).
fn layout_part(view: &Value) -> Value {
    let mut view = view.clone();
    view.as_object_mut().unwrap().remove("huggingface_hub");
    view
}

/// JSON with its keys sorted, as the script prints it: a readable diff.
fn pretty(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let by_key: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, sorted(v))).collect();
                Value::Object(by_key.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string_pretty(&sorted(value)).unwrap()
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// `os.path.abspath`: `..` and `.` removed without following links.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn relative(path: &Path, base: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or_else(|_| {
        panic!(
            "{} is outside {}: not a layout huggingface_hub writes",
            path.display(),
            base.display()
        )
    });
    rel.to_string_lossy().replace('\\', "/")
}

fn sorted_dir(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    entries.sort();
    entries
}

/// Everything under `dir` that is not a directory (links followed, as Python's
/// `is_dir` follows them).
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in sorted_dir(dir) {
        if entry.is_dir() {
            out.extend(walk_files(&entry));
        } else {
            out.push(entry);
        }
    }
    out
}

/// Copies `src` to `dst`, symbolic links as links.
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            let target = std::fs::read_link(entry.path()).unwrap();
            std::os::unix::fs::symlink(target, &to).unwrap();
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

// ----- the tests -----

#[test]
fn ckpts_cache_is_the_one_huggingface_hub_reads() {
    let reference = fixture_json("huggingface_hub_view.json");
    assert_eq!(reference["huggingface_hub"], HUGGINGFACE_HUB);
    assert_eq!(
        reference["warnings"],
        json!([]),
        "the reference saw a sound cache"
    );

    let sb = Sandbox::new();
    local_suite(&sb);
    let hub = serve_suite();
    let out = hf_ckpt(
        &sb,
        &hub.url,
        eval_args(
            &format!("hf://{REPO}"),
            "s.sqlite",
            &["--revisions", "step*", "--keep-downloads"],
        ),
    )
    .output()
    .unwrap();
    let report = json_of(&out);
    assert_eq!(report["checkpoints"].as_array().unwrap().len(), STEPS.len());
    // The weights came through the cross-host redirect.
    assert_eq!(hub.ok_count("cdn"), STEPS.len(), "{:?}", hub.log());

    let cache = sb.path().join("hf/hub");
    let view = hf_view(&cache);
    assert_eq!(
        pretty(&view),
        pretty(&layout_part(&reference)),
        "what huggingface_hub {HUGGINGFACE_HUB} would see in ckpt's cache (left) differs from what it saw (right)"
    );
    // Each ref file is exactly the commit (huggingface_hub reads it unstripped).
    for step in STEPS {
        let text =
            std::fs::read_to_string(cache.join(format!("models--ckpt-org--suite/refs/step{step}")))
                .unwrap();
        assert_eq!(hub.head(REPO, &format!("step{step}")), Some(text));
    }
}

#[test]
fn ckpts_cache_is_the_one_huggingface_hub_writes() {
    // The reference saw the same cache in both: what ckpt wrote, and what it wrote itself
    // from the same suite.
    let of_ckpt = fixture_json("huggingface_hub_view.json");
    let of_its_own = fixture_json("huggingface_hub_view_of_its_own.json");
    assert_eq!(of_its_own["huggingface_hub"], HUGGINGFACE_HUB);
    assert_eq!(of_its_own, of_ckpt);
    // And the view computed here is the reference's, on the reference's own cache.
    let written = fixtures().join("written_by_huggingface_hub");
    assert_eq!(
        pretty(&hf_view(&written)),
        pretty(&layout_part(&of_its_own))
    );
}

#[test]
fn ckpt_reads_the_cache_huggingface_hub_wrote() {
    let sb = Sandbox::new();
    local_suite(&sb);
    let cache = sb.path().join("hf-cache");
    copy_tree(&fixtures().join("written_by_huggingface_hub"), &cache);
    let before = hf_view(&cache);
    // Offline, and nothing listens there anyway.
    let offline = |args: Vec<String>| {
        hf_ckpt(&sb, "http://127.0.0.1:9", args)
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HUB_CACHE", &cache)
            .output()
            .unwrap()
    };
    let source = format!("hf://{REPO}@step100");
    let rows = json_of(&offline(
        ["inspect", &source, "--json"].map(String::from).to_vec(),
    ));
    let local = sb.run_json(["inspect", "local/suite/step100", "--json"]);
    assert_eq!(rows[0]["path"], source);
    assert_eq!(rows[0]["step"], 100);
    assert_eq!(rows[0]["fingerprint"], local[0]["fingerprint"]);

    // A sweep lists the branches from the cache's refs and scores as the local copies.
    let swept = json_of(&offline(eval_args(
        &format!("hf://{REPO}"),
        "hub.sqlite",
        &["--revisions", "step*"],
    )));
    let local = json_of(&sb.run(eval_args("local/suite", "local.sqlite", &[])));
    let swept = scores(&swept);
    let local = scores(&local);
    assert_eq!(
        swept.keys().cloned().collect::<Vec<_>>(),
        STEPS.map(|s| format!("hf://{REPO}@step{s}"))
    );
    for step in STEPS {
        let hub = &swept[&format!("hf://{REPO}@step{step}")];
        let disk = &local[&format!("local/suite/step{step}")];
        assert!(hub.1.is_null(), "step{step}: {}", hub.1);
        assert_eq!(hub.0, disk.0, "step{step}: the same checkpoint");
        assert!(!hub.2.is_empty());
        assert_eq!(hub.2, disk.2, "step{step}: the same scores");
    }
    // ckpt left huggingface_hub's cache as it found it.
    assert_eq!(pretty(&hf_view(&cache)), pretty(&before));

    // Online, what huggingface_hub downloaded is not downloaded again.
    let hub = serve_suite();
    let rows = json_of(
        &hf_ckpt(
            &sb,
            &hub.url,
            [
                "inspect",
                &format!("hf://{REPO}"),
                "--revisions",
                "step*",
                "--json",
            ],
        )
        .env("HF_HUB_CACHE", &cache)
        .env("CKPT_CACHE_DIR", sb.path().join("fresh-fingerprints"))
        .output()
        .unwrap(),
    );
    assert_eq!(rows.as_array().unwrap().len(), STEPS.len());
    let step100 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == source)
        .unwrap();
    assert_eq!(step100["fingerprint"], local["local/suite/step100"].0);
    let downloads: Vec<_> = hub
        .log()
        .into_iter()
        .filter(|e| matches!(e.route, "resolve" | "cdn"))
        .collect();
    assert!(downloads.is_empty(), "{downloads:?}");
    assert_eq!(pretty(&hf_view(&cache)), pretty(&before));
}

/// Serves the suite for `scripts/check_hf_cache.py download` until told to stop: writes
/// the URL to `$HUB_SERVE_URL_FILE` (and stdout), then waits until
/// `$HUB_SERVE_STOP_FILE` exists (at most an hour). See
/// tests/fixtures/hub_cache/README.md.
#[test]
#[ignore = "a server for scripts/check_hf_cache.py, run by hand"]
fn serve_the_suite_for_scripts() {
    let hub = serve_suite();
    let heads: BTreeMap<String, Option<String>> = STEPS
        .iter()
        .map(|s| (format!("step{s}"), hub.head(REPO, &format!("step{s}"))))
        .collect();
    println!("serving {REPO} at {} : {heads:?}", hub.url);
    let (Some(url_file), Some(stop_file)) = (
        std::env::var_os("HUB_SERVE_URL_FILE"),
        std::env::var_os("HUB_SERVE_STOP_FILE"),
    ) else {
        panic!("set HUB_SERVE_URL_FILE and HUB_SERVE_STOP_FILE");
    };
    let url_file = PathBuf::from(url_file);
    let tmp = url_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", hub.url)).unwrap();
    std::fs::rename(&tmp, &url_file).unwrap();
    let started = Instant::now();
    while !Path::new(&stop_file).exists() && started.elapsed() < Duration::from_secs(3600) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

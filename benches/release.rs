//! Upload throughput and memory of `ckpt release`'s Hub client: one 2 GiB file pushed
//! to the loopback Hub stand-in of the tests (multipart LFS, 64 MiB parts), hashed
//! first, then streamed from disk and hashed again on the way out.
//!
//! The uploader runs in a child process (this binary again, `CKPT_BENCH_CHILD=1`), so
//! its peak resident memory (`VmHWM`) is the client's alone; the server runs here and
//! stores the parts on disk under `target/bench/release/`. The file is sparse (reads
//! cost no disk I/O): the numbers are the client's CPU and HTTP cost, not a disk's.
//! `CKPT_BENCH_MB` changes the size. Prints one JSON line.

use ckpt::hub::auth::Token;
use ckpt::hub::RepoId;
use ckpt::hub::{HubClient, RetryPolicy};
use ckpt::release::plan::{Plan, Selected};
use ckpt::release::upload::{publish, UploadOptions};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[path = "../tests/common/hub_server.rs"]
mod hub_server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The uploader: hashes and publishes one file, prints its timings and memory.
fn child() -> anyhow::Result<()> {
    ckpt::alloc::configure();
    let file = PathBuf::from(std::env::var("CKPT_BENCH_FILE")?);
    let endpoint = std::env::var("CKPT_BENCH_ENDPOINT")?;
    let token = Token::new(&std::env::var("CKPT_BENCH_TOKEN")?).expect("token");
    let rss_start = status_kib("VmRSS:");

    let t = Instant::now();
    let selected = vec![Selected {
        path_in_repo: "model.safetensors".into(),
        source: file,
        generated: false,
    }];
    let mut plan = Plan::build(selected, &ckpt::progress::Silent)?;
    let hash_s = t.elapsed().as_secs_f64();

    let client = HubClient::new(&endpoint, Some(token), RetryPolicy::default())?;
    let opts = UploadOptions {
        repo: RepoId::parse("tester/bench")?,
        revision: "main".into(),
        private: false,
        commit_message: "bench".into(),
        commit_description: String::new(),
        create_pr: false,
    };
    let t = Instant::now();
    let report = publish(&client, &mut plan, &opts, &ckpt::progress::silent())?;
    let upload_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(report.uploaded == ["model.safetensors"], "{report:?}");
    println!(
        "{}",
        serde_json::json!({
            "hash_s": hash_s,
            "upload_s": upload_s,
            "rss_start_kib": rss_start,
            "peak_rss_kib": status_kib("VmHWM:"),
        })
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("CKPT_BENCH_CHILD").is_some() {
        return child();
    }
    let mb: u64 = std::env::var("CKPT_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let bytes = mb << 20;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/release");
    std::fs::create_dir_all(&dir)?;
    let work = tempfile::tempdir_in(&dir)?;
    let file = work.path().join("model.safetensors");
    std::fs::File::create(&file)?.set_len(bytes)?;

    let chunk = 64u64 << 20;
    let hub = hub_server::HubServer::start(
        hub_server::Options {
            multipart_threshold: 10 << 20,
            chunk_size: chunk,
            ..hub_server::Options::default()
        },
        Some(work.path()),
    );
    let out = Command::new(std::env::current_exe()?)
        .env("CKPT_BENCH_CHILD", "1")
        .env("CKPT_BENCH_FILE", &file)
        .env("CKPT_BENCH_ENDPOINT", &hub.url)
        .env("CKPT_BENCH_TOKEN", hub.token())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "uploader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    anyhow::ensure!(hub.ok_count("part") as u64 == bytes.div_ceil(chunk));
    anyhow::ensure!(hub.ok_count("commit") == 1);

    let mib = bytes as f64 / (1u64 << 20) as f64;
    let hash_s = child["hash_s"].as_f64().unwrap_or(f64::NAN);
    let upload_s = child["upload_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "{}",
        serde_json::json!({
            "bench": "release-upload",
            "file_mib": mb,
            "part_mib": chunk >> 20,
            "parts": bytes.div_ceil(chunk),
            "hash_mib_per_s": (mib / hash_s * 10.0).round() / 10.0,
            "upload_mib_per_s": (mib / upload_s * 10.0).round() / 10.0,
            "hash_s": (hash_s * 100.0).round() / 100.0,
            "upload_s": (upload_s * 100.0).round() / 100.0,
            "client_rss_start_mib": child["rss_start_kib"].as_u64().unwrap_or(0) / 1024,
            "client_peak_rss_mib": child["peak_rss_kib"].as_u64().unwrap_or(0) / 1024,
        })
    );
    Ok(())
}

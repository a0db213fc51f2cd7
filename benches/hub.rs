//! Sweeping a checkpoint suite on the Hub: `ckpt eval hf://bench/suite --revisions
//! 'step*'` against the loopback Hub stand-in of the tests, five revisions of the
//! ~22M-parameter benchmark model (87 MB of f32 weights each), two synthetic tasks.
//!
//! Times, each in a fresh Hugging Face cache:
//! - the first sweep with the default budget (revision k+1 downloads while k is scored);
//! - the same sweep with a budget of one checkpoint (no prefetch: download, then score);
//! - the same command again (nothing to download or compute);
//! - downloads alone: `ckpt inspect` of every revision (download, verify, fingerprint);
//! - the peer, when `CKPT_BENCH_PYTHON` names a Python with huggingface_hub: its
//!   `snapshot_download` of the same files of every revision, then again from the cache
//!   (`scripts/bench_hub_download.py`), as a loop over `lm_eval --model_args
//!   revision=...` would fetch them.
//!
//! Prints one JSON line per measurement, with the requests each made to the Hub.
//! `CKPT_BENCH_REVISIONS` and `CKPT_BENCH_DOCS` change the sizes.

mod common;
#[path = "../tests/common/hub_server.rs"]
mod hub_server;

use candle_core::{DType, Device};
use ckpt::checkpoint::write_checkpoint;
use ckpt::model::init_weights;
use common::{config, env_usize};
use hub_server::{HubServer, Options};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const REPO: &str = "bench/suite";

fn main() -> anyhow::Result<()> {
    let revisions = env_usize("CKPT_BENCH_REVISIONS", 5);
    let docs = env_usize("CKPT_BENCH_DOCS", 40);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/hub");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    // The CDN on another host name, as the real Hub's: huggingface_hub follows only
    // cross-host redirects of its metadata request to the end.
    let opts = Options {
        cdn_host: Some("localhost".into()),
        ..Options::default()
    };
    let hub = HubServer::start(opts, Some(&out));
    publish(&hub, &out, revisions)?;
    let ckpt = env!("CARGO_BIN_EXE_ckpt");
    run(Command::new(ckpt)
        .current_dir(&out)
        .args(["synth", "--eval-tasks", "evaldata", "--eval-docs"])
        .arg(docs.to_string()))?;
    let sweep = |name: &str, cache: &str, extra: &[&str]| -> anyhow::Result<()> {
        let mut cmd = ckpt_cmd(ckpt, &out, &hub, cache);
        cmd.args(["eval", &format!("hf://{REPO}"), "--revisions", "step*"])
            .args(["--tasks", "arc_easy,piqa", "--data-dir", "evaldata"])
            .args(["--store", &format!("{cache}.sqlite")])
            .args(extra);
        measure(&hub, name, revisions, &mut cmd)
    };
    let one = std::fs::metadata(out.join("model-0/model.safetensors"))?.len();
    sweep("ckpt_sweep_prefetch", "a", &[])?;
    // The same command again: its store and cache.
    sweep("ckpt_sweep_again", "a", &[])?;
    let budget = (one + one / 2).to_string();
    sweep("ckpt_sweep_no_prefetch", "b", &["--cache-budget", &budget])?;
    let mut inspect = ckpt_cmd(ckpt, &out, &hub, "ckpt_download");
    inspect.args([
        "inspect",
        &format!("hf://{REPO}"),
        "--revisions",
        "step*",
        "--json",
    ]);
    measure(&hub, "ckpt_download", revisions, &mut inspect)?;

    match std::env::var("CKPT_BENCH_PYTHON") {
        Ok(python) => {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_hub_download.py");
            let revs: Vec<String> = (0..revisions)
                .map(|k| format!("step{}", k * 1000))
                .collect();
            let cache = out.join("hf-peer");
            for pass in ["huggingface_hub_download", "huggingface_hub_again"] {
                let mut cmd = Command::new(&python);
                cmd.arg(&script)
                    .args([&hub.url, cache.to_str().unwrap(), REPO])
                    .args(&revs)
                    .env_remove("HF_TOKEN");
                measure(&hub, pass, revisions, &mut cmd)?;
            }
        }
        Err(_) => eprintln!(
            "CKPT_BENCH_PYTHON is not set: the huggingface_hub peer is skipped \
             (a Python with huggingface_hub: ~/.venvs/ckpt-ref/bin/python)"
        ),
    }
    Ok(())
}

/// Five revisions `step0`, `step1000`, ... of the benchmark model, each with its own
/// random weights, one tokenizer.
fn publish(hub: &HubServer, out: &Path, revisions: usize) -> anyhow::Result<()> {
    let cfg = config()?;
    let corpus: Vec<String> = (0..500)
        .map(|i| format!("the stone number {i} sits by the river and the bird {i} sings"))
        .collect();
    let tokenizer = ckpt::train::data::train_bpe(&corpus, 512)?;
    for k in 0..revisions {
        let dir = out.join(format!("model-{k}"));
        let weights = init_weights(&cfg, 0.02, k as u64, DType::F32, &Device::Cpu)?;
        write_checkpoint(&dir, &cfg, &weights, None)?;
        tokenizer
            .save(dir.join("tokenizer.json"), false)
            .map_err(anyhow::Error::msg)?;
        let files: Vec<(&str, Vec<u8>)> = ["config.json", "tokenizer.json", "model.safetensors"]
            .into_iter()
            .map(|f| Ok((f, std::fs::read(dir.join(f))?)))
            .collect::<std::io::Result<_>>()?;
        hub.put_revision(REPO, &format!("step{}", k * 1000), &files);
    }
    Ok(())
}

/// `ckpt` with the stand-in as its Hub and a cache of its own (`hf-NAME`).
fn ckpt_cmd(ckpt: &str, out: &Path, hub: &HubServer, name: &str) -> Command {
    let mut cmd = Command::new(ckpt);
    cmd.current_dir(out)
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", out.join(format!("hf-{name}")))
        .env("CKPT_CACHE_DIR", out.join(format!("cache-{name}")))
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE");
    cmd
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{:?} failed:\n{}",
            cmd,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs `cmd`, then prints its wall time and what it asked of the Hub.
fn measure(hub: &HubServer, name: &str, revisions: usize, cmd: &mut Command) -> anyhow::Result<()> {
    hub.clear_log();
    let started = Instant::now();
    run(cmd)?;
    let seconds = started.elapsed().as_secs_f64();
    let log = hub.log();
    let bytes = hub.objects_served();
    println!(
        "{}",
        serde_json::json!({
            "bench": "hub_sweep",
            "impl": name,
            "revisions": revisions,
            "seconds": seconds,
            "requests": log.len(),
            "weights_downloaded_mb": bytes as f64 / 1e6,
            "mb_per_second": if bytes > 0 { bytes as f64 / 1e6 / seconds } else { 0.0 },
        })
    );
    Ok(())
}

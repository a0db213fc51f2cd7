//! `ckpt merge` time and peak memory: eight bf16 checkpoints of a 100M-parameter Llama
//! (vocab 32000, hidden 768, FFN 2048, 12 layers, GQA 12/4, tied embeddings; 200 MB
//! each), merged with cosine coefficients.
//!
//! `cargo bench --bench merge` writes the checkpoints into a temporary directory, then
//! runs each merge in a child process (this executable again) so that the peak
//! resident memory it reports is the merge's alone: the peak of anonymous memory
//! (buffers) and of file-backed pages (the memory-mapped sources), sampled every
//! 2 ms, and the kernel's high-water mark VmHWM. The first merge fingerprints the
//! sources (a BLAKE3 pass over each, then cached); the second finds them cached.
//! The sources sit in the page cache (just written). Prints one JSON line per merge.
//! `CKPT_BENCH_CHECKPOINTS` changes the number of checkpoints, `CKPT_BENCH_MODEL=1b` the
//! model to the paper's 1B shape (hidden 2048, FFN 8192, 16 layers, GQA 32/8, vocab
//! 128256, tied: 1.24B parameters, 2.5 GB each).

use candle_core::{Device, Tensor};
use ckpt::checkpoint::{write_checkpoint, CheckpointMeta, Stage};
use ckpt::merge::{plan, DecayShape, MergeOptions, Selection, Weighting};
use ckpt::model::{parameter_shapes, ModelConfig};
use half::bf16;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[allow(dead_code)] // the shared benchmark model is not the one merged here
mod common;
use common::env_usize;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHILD: &str = "CKPT_BENCH_MERGE_DIR";

/// The benchmark model: 110M parameters, or the paper's 1B shape.
fn config(model: &str) -> anyhow::Result<ModelConfig> {
    let (vocab, hidden, ffn, layers, heads, kv) = match model {
        "1b" => (128256, 2048, 8192, 16, 32, 8),
        _ => (32000, 768, 2048, 12, 12, 4),
    };
    let json = format!(
        r#"{{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":{vocab},
        "hidden_size":{hidden},"intermediate_size":{ffn},"num_hidden_layers":{layers},
        "num_attention_heads":{heads},"num_key_value_heads":{kv},
        "max_position_embeddings":2048,"tie_word_embeddings":true,"torch_dtype":"bfloat16",
        "bos_token_id":0,"eos_token_id":1}}"#
    );
    ModelConfig::from_json(&json).map_err(anyhow::Error::msg)
}

fn main() -> anyhow::Result<()> {
    ckpt::alloc::configure();
    if let Ok(dir) = std::env::var(CHILD) {
        return merge_child(Path::new(&dir));
    }
    let count = env_usize("CKPT_BENCH_CHECKPOINTS", 8);
    let cfg = config(&std::env::var("CKPT_BENCH_MODEL").unwrap_or_default())?;
    let tmp = tempfile::tempdir()?;
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    for i in 0..count {
        let step = 1000 * (i as u64 + 1);
        let tensors: HashMap<String, Tensor> = parameter_shapes(&cfg)
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let values: Vec<bf16> = (0..n)
                    .map(|_| bf16::from_f32(rng.random_range(-0.05f32..0.05)))
                    .collect();
                Ok((name, Tensor::from_vec(values, shape, &Device::Cpu)?))
            })
            .collect::<anyhow::Result<_>>()?;
        let meta = CheckpointMeta {
            stage: Some(Stage::Pre),
            ..CheckpointMeta::new(step)
        };
        let dir = tmp.path().join(format!("run/step-{step:07}"));
        write_checkpoint(&dir, &cfg, &tensors, Some(&meta))?;
    }
    eprintln!(
        "wrote {count} checkpoints of {:.1}M parameters in {:.1}s",
        cfg.num_parameters() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    for run in ["cold fingerprints", "cached fingerprints"] {
        let out = std::process::Command::new(std::env::current_exe()?)
            .env(CHILD, tmp.path())
            .env("CKPT_CACHE_DIR", tmp.path().join("cache"))
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "merge failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout)?;
        let mut v: serde_json::Value = serde_json::from_str(line.trim())?;
        v["run"] = run.into();
        println!("{v}");
        std::fs::remove_dir_all(tmp.path().join("merged"))?;
    }
    Ok(())
}

/// One merge, timed, with this process's peak memory.
fn merge_child(root: &Path) -> anyhow::Result<()> {
    let sampler = Sampler::start();
    let started = Instant::now();
    let plan = plan(
        &[root.join("run")],
        Selection::All,
        &Weighting::Emulate(DecayShape::Cosine),
    )?;
    let planned = started.elapsed().as_secs_f64();
    let fingerprinted = Instant::now();
    for source in plan.selected() {
        source.checkpoint.fingerprint()?;
    }
    let fingerprint_s = fingerprinted.elapsed().as_secs_f64();
    let merging = Instant::now();
    plan.write(&root.join("merged"), &MergeOptions::default(), &|_| {})?;
    let merge_s = merging.elapsed().as_secs_f64();
    let (anon, file) = sampler.stop();
    let bytes: u64 = plan
        .selected()
        .iter()
        .map(|s| {
            std::fs::metadata(s.checkpoint.dir.join("model.safetensors"))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    let report = serde_json::json!({
        "bench": "merge",
        "checkpoints": plan.selected().len(),
        "parameters": plan.elements(),
        "dtype": "bf16",
        "source_bytes": bytes,
        "plan_s": planned,
        "fingerprint_s": fingerprint_s,
        "merge_s": merge_s,
        "read_gb_per_s": bytes as f64 / merge_s / 1e9,
        "peak_rss_anon_mb": anon as f64 / 1e6,
        "peak_rss_file_mb": file as f64 / 1e6,
        "vm_hwm_mb": status_kb("VmHWM").unwrap_or(0) as f64 * 1024.0 / 1e6,
        "threads": rayon::current_num_threads(),
    });
    println!("{report}");
    Ok(())
}

/// A `/proc/self/status` field in kB.
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples the peaks of anonymous and file-backed resident memory on a thread.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut anon, mut file) = (0u64, 0u64);
            while !flag.load(Ordering::Relaxed) {
                anon = anon.max(status_kb("RssAnon").unwrap_or(0) * 1024);
                file = file.max(status_kb("RssFile").unwrap_or(0) * 1024);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            (anon, file)
        });
        Self { stop, handle }
    }

    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or((0, 0))
    }
}

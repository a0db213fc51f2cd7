//! Scoring throughput (tokens/s) of a ~22M-parameter Llama on CPU, f32 and bf16.
//!
//! `cargo bench --bench score` writes the random model and its token windows to
//! `target/bench/score/` so `scripts/bench_score_transformers.py` can time
//! transformers on exactly the same work, and prints one JSON line per dtype.
//! Set `CKPT_BENCH_WINDOWS` / `CKPT_BENCH_LEN` / `CKPT_BENCH_BATCH_TOKENS` to change the
//! workload, `CKPT_BENCH_DTYPE=f32|bf16` to run one dtype.

use candle_core::{DType, Device};
use ckpt::checkpoint::{write_checkpoint, Checkpoint};
use ckpt::model::init_weights;
use ckpt::score::{score_windows, Window};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

mod common;
use common::{config, env_usize};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    ckpt::alloc::configure();
    // `cargo bench` passes `--bench`; ignore arguments.
    let windows_n = env_usize("CKPT_BENCH_WINDOWS", 16);
    let len = env_usize("CKPT_BENCH_LEN", 512);
    let batch_tokens = env_usize("CKPT_BENCH_BATCH_TOKENS", 4096);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/score");
    let model_dir = out.join("model");

    let cfg = config()?;
    let weights = init_weights(&cfg, 0.02, 0, DType::F32, &Device::Cpu)?;
    write_checkpoint(&model_dir, &cfg, &weights, None)?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let windows: Vec<Window> = (0..windows_n)
        .map(|_| {
            let tokens: Vec<u32> = (0..=len).map(|_| rng.random_range(2..8192)).collect();
            Window {
                input: tokens[..len].to_vec(),
                targets: tokens[1..].to_vec(),
            }
        })
        .collect();
    // Each window's whole token run (inputs plus the last target), for the Python side.
    let runs: Vec<Vec<u32>> = windows
        .iter()
        .map(|w| [w.input.as_slice(), &w.targets[len - 1..]].concat())
        .collect();
    std::fs::write(out.join("windows.json"), serde_json::to_vec(&runs)?)?;

    let ckpt = Checkpoint::open(&model_dir)?;
    let tokens = windows_n * len;
    let only = std::env::var("CKPT_BENCH_DTYPE").ok();
    for (name, dtype) in [("f32", DType::F32), ("bf16", DType::BF16)] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let model = ckpt.load_model(&Device::Cpu, dtype)?;
        score_windows(&model, &windows[..1], batch_tokens, &|_| {})?; // warm-up
        let mut best = f64::INFINITY;
        let mut checksum = 0.0;
        for _ in 0..3 {
            let started = Instant::now();
            let lp = score_windows(&model, &windows, batch_tokens, &|_| {})?;
            best = best.min(started.elapsed().as_secs_f64());
            checksum = lp.iter().flatten().map(|&x| x as f64).sum::<f64>();
        }
        println!(
            "{}",
            serde_json::json!({
                "bench": "score", "impl": "ckpt", "dtype": name,
                "params": cfg.num_parameters(), "tokens": tokens, "window": len,
                "threads": rayon::current_num_threads(),
                "seconds": best, "tokens_per_second": tokens as f64 / best,
                "sum_logprob": checksum,
            })
        );
    }
    Ok(())
}

//! Training throughput (tokens/s) on CPU: forward, backward and AdamW step of a
//! ~22M-parameter Llama, f32, batch 8 x 256 tokens.
//!
//! `cargo bench --bench train` writes the random model and its batches to
//! `target/bench/train/` so `scripts/bench_train_pytorch.py` times PyTorch eager on
//! exactly the same work, and prints one JSON line. `CKPT_BENCH_ROWS`,
//! `CKPT_BENCH_LEN` and `CKPT_BENCH_STEPS` change the workload.

use candle_core::{DType, Device, Var};
use ckpt::checkpoint::write_checkpoint;
use ckpt::model::{init_weights, parameter_shapes};
use ckpt::train::data::Batch;
use ckpt::train::optimizer::{AdamW, OptimizerConfig};
use ckpt::train::trainer::{build_model, optimizer_step};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

mod common;
use common::{config, env_usize};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    ckpt::alloc::configure();
    let rows = env_usize("CKPT_BENCH_ROWS", 8);
    let len = env_usize("CKPT_BENCH_LEN", 256);
    let steps = env_usize("CKPT_BENCH_STEPS", 5);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/train");

    let cfg = config()?;
    let weights = init_weights(&cfg, 0.02, 0, DType::F32, &Device::Cpu)?;
    write_checkpoint(&out.join("model"), &cfg, &weights, None)?;
    let vars: Vec<(String, Var)> = parameter_shapes(&cfg)
        .into_iter()
        .map(|(name, _)| Ok((name.clone(), Var::from_tensor(&weights[&name])?)))
        .collect::<anyhow::Result<_>>()?;

    // One warm-up step, then `steps` timed ones, each on its own random batch.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let batches: Vec<Batch> = (0..=steps)
        .map(|_| Batch {
            rows,
            len: len + 1,
            tokens: (0..rows * (len + 1))
                .map(|_| rng.random_range(2..8192))
                .collect(),
            loss_mask: None,
        })
        .collect();
    let runs: Vec<&[u32]> = batches.iter().map(|b| b.tokens.as_slice()).collect();
    let saved = serde_json::json!({"rows": rows, "len": len + 1, "batches": runs});
    std::fs::write(out.join("batches.json"), serde_json::to_vec(&saved)?)?;

    let mut opt = AdamW::new(OptimizerConfig::default(), vars.clone())?;
    let model = build_model(&cfg, &vars, DType::F32)?;
    let mut losses = Vec::new();
    let mut started = Instant::now();
    for (i, batch) in batches.iter().enumerate() {
        if i == 1 {
            started = Instant::now();
        }
        let (loss, _) = optimizer_step(
            &model,
            &vars,
            &mut opt,
            std::slice::from_ref(batch),
            3e-4,
            i as u64 + 1,
        )?;
        losses.push(loss);
    }
    let seconds = started.elapsed().as_secs_f64();
    let tokens = steps * rows * len;
    println!(
        "{}",
        serde_json::json!({
            "bench": "train", "impl": "ckpt", "dtype": "f32",
            "params": cfg.num_parameters(), "rows": rows, "seq_len": len, "steps": steps,
            "threads": rayon::current_num_threads(),
            "seconds_per_step": seconds / steps as f64,
            "tokens_per_second": tokens as f64 / seconds,
            "losses": losses,
        })
    );
    Ok(())
}

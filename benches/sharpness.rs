//! One Hessian-vector product (`z^T H z` of a Rademacher probe) of the ~22M-parameter
//! benchmark Llama on CPU, f32, 8 x 256 tokens: central differences of gradients (the
//! production path) and candle's double backward (the in-repo reference, on fewer rows:
//! it keeps the whole graph of the first backward).
//!
//! `cargo bench --bench sharpness` writes the random model, its batch and the probe to
//! `target/bench/sharpness/` so `scripts/bench_hvp_pytorch.py` times PyTorch's double
//! backward on exactly the same work, and prints one JSON line. `CKPT_BENCH_ROWS`,
//! `CKPT_BENCH_LEN`, `CKPT_BENCH_REPS` and `CKPT_BENCH_EXACT_ROWS` (0: skip) change it.

use candle_core::{DType, Device, Tensor};
use ckpt::checkpoint::write_checkpoint;
use ckpt::model::init_weights;
use ckpt::sharpness::vector::rademacher;
use ckpt::sharpness::{Hessian, LlamaObjective, Method};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
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
    let reps = env_usize("CKPT_BENCH_REPS", 3);
    let exact_rows = env_usize("CKPT_BENCH_EXACT_ROWS", 2).min(rows);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/sharpness");

    let cfg = config()?;
    let weights = init_weights(&cfg, 0.02, 0, DType::F32, &Device::Cpu)?;
    write_checkpoint(&out.join("model"), &cfg, &weights, None)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let ids: Vec<u32> = (0..rows * len).map(|_| rng.random_range(2..8192)).collect();

    let objective = LlamaObjective::new(
        &cfg,
        std::slice::from_ref(&ids),
        rows,
        len,
        DType::F32,
        &Device::Cpu,
    )?;
    let theta: Vec<Tensor> = objective
        .names()
        .iter()
        .map(|n| weights[n].clone())
        .collect();
    let z = rademacher(objective.shapes(), 0, 0, DType::F32, &Device::Cpu)?;
    save_probe(&out, objective.names(), &z)?;
    let saved = serde_json::json!({"rows": rows, "len": len, "exact_rows": exact_rows, "ids": ids});
    std::fs::write(out.join("batch.json"), serde_json::to_vec(&saved)?)?;

    // Finite differences: one warm-up product, then `reps` timed ones.
    let fd = Hessian::new(
        &objective,
        theta.clone(),
        Method::FiniteDifference { eps: 3e-5 },
    );
    let zhz_fd = fd.quadratic_form(&z)?;
    let started = Instant::now();
    for _ in 0..reps {
        fd.quadratic_form(&z)?;
    }
    let fd_seconds = started.elapsed().as_secs_f64() / reps as f64;

    // Double backward on the first `exact_rows` rows, once (plus FD there to compare).
    let exact = if exact_rows > 0 {
        let part = LlamaObjective::new(
            &cfg,
            &[ids[..exact_rows * len].to_vec()],
            exact_rows,
            len,
            DType::F32,
            &Device::Cpu,
        )?;
        let started = Instant::now();
        let zhz = Hessian::new(&part, theta.clone(), Method::Exact).quadratic_form(&z)?;
        let seconds = started.elapsed().as_secs_f64();
        let fd_part = Hessian::new(&part, theta, Method::FiniteDifference { eps: 3e-5 });
        let started = Instant::now();
        let zhz_fd = fd_part.quadratic_form(&z)?;
        let fd_seconds = started.elapsed().as_secs_f64();
        serde_json::json!({"rows": exact_rows, "seconds": seconds, "zhz": zhz,
                           "fd_seconds": fd_seconds, "fd_zhz": zhz_fd})
    } else {
        serde_json::Value::Null
    };
    println!(
        "{}",
        serde_json::json!({
            "bench": "hvp", "impl": "ckpt", "dtype": "f32",
            "params": cfg.num_parameters(), "rows": rows, "seq_len": len, "reps": reps,
            "threads": rayon::current_num_threads(),
            "fd_seconds": fd_seconds, "fd_zhz": zhz_fd,
            "exact": exact,
        })
    );
    Ok(())
}

/// The probe as uint8 bits (1: +1) keyed by parameter name, for the PyTorch side.
fn save_probe(out: &std::path::Path, names: &[String], z: &[Tensor]) -> anyhow::Result<()> {
    let bits: HashMap<String, Tensor> = names
        .iter()
        .zip(z)
        .map(|(n, t)| Ok((n.clone(), t.affine(0.5, 0.5)?.to_dtype(DType::U8)?)))
        .collect::<anyhow::Result<_>>()?;
    ckpt::checkpoint::write_safetensors(&out.join("probe.safetensors"), &bits)?;
    Ok(())
}

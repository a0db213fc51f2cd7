//! Greedy generation tokens/s of the ~22M-parameter Llama on CPU with the KV cache
//! (`Engine::generate_ids`, what `ckpt eval --tasks alpaca_eval` and `ckpt serve`
//! run), against recomputing the whole sequence at each token; and judge calls/s
//! against a loopback judge that takes 50 ms per answer, one call at a time vs 8 in
//! flight (`JudgeClient::chat_many`).
//!
//! `cargo bench --bench generate` prints one JSON line per measurement. Set
//! `CKPT_BENCH_PROMPT` / `CKPT_BENCH_NEW` (default 128 / 128) to change the workload,
//! `CKPT_BENCH_DTYPE=f32|bf16` to run one dtype.

use candle_core::{DType, Device, Tensor, D};
use ckpt::checkpoint::{write_checkpoint, Checkpoint};
use ckpt::eval::engine::Engine;
use ckpt::eval::judge::client::{ClientConfig, JudgeClient};
use ckpt::model::{init_weights, select_rows, KvCache, Model};
use ckpt::tokenizer::TextTokenizer;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::{config, env_usize};

#[path = "../tests/common/judge_server.rs"]
mod judge_server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    ckpt::alloc::configure();
    let prompt_len = env_usize("CKPT_BENCH_PROMPT", 128);
    let new = env_usize("CKPT_BENCH_NEW", 128);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/generate");
    let model_dir = out.join("model");
    let cfg = config()?;
    let weights = init_weights(&cfg, 0.02, 0, DType::F32, &Device::Cpu)?;
    write_checkpoint(&model_dir, &cfg, &weights, None)?;
    let tokenizer = word_tokenizer(&out, cfg.vocab_size)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let prompt: Vec<u32> = (0..prompt_len).map(|_| rng.random_range(2..8192)).collect();

    let ckpt = Checkpoint::open(&model_dir)?;
    let only = std::env::var("CKPT_BENCH_DTYPE").ok();
    for (name, dtype) in [("f32", DType::F32), ("bf16", DType::BF16)] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let model = ckpt.load_model(&Device::Cpu, dtype)?;
        let engine = Engine::new(&model, &tokenizer);
        engine.generate_ids(prompt.clone(), &[], 4, None)?; // warm-up
        let mut best = f64::INFINITY;
        let mut ids = vec![];
        for _ in 0..3 {
            let started = Instant::now();
            let g = engine.generate_ids(prompt.clone(), &[], new, None)?;
            best = best.min(started.elapsed().as_secs_f64());
            ids = g.tokens.iter().map(|t| t.id).collect::<Vec<_>>();
        }
        // Without the cache, every token reruns the whole sequence: fewer tokens do.
        let uncached_n = (new / 4).max(1);
        let started = Instant::now();
        let uncached = greedy_without_cache(&model, &prompt, uncached_n)?;
        let uncached_s = started.elapsed().as_secs_f64();
        assert_eq!(
            uncached,
            ids[..uncached_n],
            "both paths decode the same tokens"
        );
        println!(
            "{}",
            serde_json::json!({
                "bench": "generate", "dtype": name, "params": cfg.num_parameters(),
                "prompt_tokens": prompt_len, "new_tokens": ids.len(),
                "threads": rayon::current_num_threads(),
                "kv_cache_seconds": best, "kv_cache_tokens_per_second": ids.len() as f64 / best,
                "no_cache_tokens": uncached_n,
                "no_cache_tokens_per_second": uncached_n as f64 / uncached_s,
            })
        );
    }
    judge_calls()
}

/// A word-level tokenizer over the model's vocabulary (`t0`, `t1`, ...), without EOS so
/// generation runs to its token limit.
fn word_tokenizer(dir: &Path, vocab: usize) -> anyhow::Result<TextTokenizer> {
    let words: serde_json::Map<String, serde_json::Value> =
        (0..vocab).map(|i| (format!("t{i}"), i.into())).collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": words, "unk_token": "t2"},
    });
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, serde_json::to_vec(&json)?)?;
    Ok(TextTokenizer::load(dir, Some(&path), Some(0), None)?)
}

/// Greedy decoding that recomputes the whole sequence for every token.
fn greedy_without_cache(model: &Model, prompt: &[u32], n: usize) -> anyhow::Result<Vec<u32>> {
    let mut ids = prompt.to_vec();
    for _ in 0..n {
        let t = Tensor::new(ids.as_slice(), model.device())?.unsqueeze(0)?;
        let mut cache = KvCache::new(model.config().num_hidden_layers);
        let hidden = model.hidden_states(&t, &mut cache)?;
        let row = select_rows(&hidden, &[(0, ids.len() - 1)])?;
        ids.push(model.logits(&row)?.argmax(D::Minus1)?.to_vec1::<u32>()?[0]);
    }
    Ok(ids[prompt.len()..].to_vec())
}

/// Judge calls/s with 50 ms answers, one at a time and 8 in flight.
fn judge_calls() -> anyhow::Result<()> {
    let server = judge_server::JudgeServer::start();
    server.set_delay(Duration::from_millis(50));
    let client = JudgeClient::new(ClientConfig::new(&server.url))?;
    let bodies: Vec<serde_json::Value> = (0..32)
        .map(|i| {
            serde_json::json!({"model": judge_server::MODEL, "max_tokens": 1, "logprobs": true,
                "messages": [{"role": "user", "content": format!("question {i}")}]})
        })
        .collect();
    for concurrency in [1, 8] {
        let started = Instant::now();
        client.chat_many(&bodies, concurrency, &mut |_, _| Ok(()))?;
        let s = started.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({"bench": "judge_calls", "latency_ms": 50, "calls": bodies.len(),
                "concurrency": concurrency, "seconds": s, "calls_per_second": bodies.len() as f64 / s})
        );
    }
    Ok(())
}

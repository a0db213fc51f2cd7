//! Multiple-choice scoring throughput of `ckpt eval`'s engine (requests/s, tokens/s) on
//! the ~22M-parameter benchmark Llama on CPU.
//!
//! `cargo bench --bench eval` writes the random model (with a byte-level BPE tokenizer
//! trained on the synthetic text) and the requests to `target/bench/eval/`, so
//! `scripts/bench_eval_lmeval.py` can time lm-evaluation-harness's HF backend on the
//! same checkpoint and the same (context, continuation) pairs and compare the scores.
//! `CKPT_BENCH_DOCS` (default 200) docs of 4 choices each.

use candle_core::{DType, Device};
use ckpt::checkpoint::{write_checkpoint, Checkpoint};
use ckpt::eval::engine::{Engine, Response};
use ckpt::eval::prompt::Request;
use ckpt::model::init_weights;
use ckpt::tokenizer::TextTokenizer;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

mod common;
use common::{config, env_usize};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORDS: &[&str] = &[
    "river", "stone", "lamp", "cloud", "green", "bird", "salt", "moon", "glass", "tree", "seven",
    "quiet", "north", "bread", "window", "silver", "garden", "small", "under", "across", "because",
    "morning", "bridge", "carries", "finds", "water", "through", "the", "a", "of", "and", "is",
];

fn words(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> anyhow::Result<()> {
    ckpt::alloc::configure();
    let docs = env_usize("CKPT_BENCH_DOCS", 200);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/eval");
    let model_dir = out.join("model");
    let cfg = config()?;
    let weights = init_weights(&cfg, 0.02, 0, DType::F32, &Device::Cpu)?;
    write_checkpoint(&model_dir, &cfg, &weights, None)?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let corpus: Vec<String> = (0..2000).map(|_| words(&mut rng, 30)).collect();
    let tokenizer = ckpt::train::data::train_bpe(&corpus, 2048)?;
    tokenizer
        .save(model_dir.join("tokenizer.json"), false)
        .map_err(anyhow::Error::msg)?;
    // BOS/EOS by name, so transformers' tokenizer (lm-eval's prefix token) knows them.
    let eot = ckpt::train::data::bpe::END_OF_TEXT;
    std::fs::write(
        model_dir.join("tokenizer_config.json"),
        serde_json::json!({"bos_token": eot, "eos_token": eot, "tokenizer_class": "PreTrainedTokenizerFast"}).to_string(),
    )?;

    let mut requests = Vec::new();
    for _ in 0..docs {
        let context = format!("Question: {}?\nAnswer:", words(&mut rng, 60));
        for _ in 0..4 {
            let n = rng.random_range(2..8);
            requests.push(Request::Loglikelihood {
                context: context.clone(),
                continuation: format!(" {}", words(&mut rng, n)),
            });
        }
    }
    let pairs: Vec<(String, String)> = requests
        .iter()
        .map(|r| match r {
            Request::Loglikelihood {
                context,
                continuation,
            } => (context.clone(), continuation.clone()),
            _ => unreachable!(),
        })
        .collect();
    std::fs::write(out.join("requests.json"), serde_json::to_vec(&pairs)?)?;

    let ckpt = Checkpoint::open(&model_dir)?;
    let model = ckpt.load_model(&Device::Cpu, DType::F32)?;
    let tok = TextTokenizer::load(&model_dir, None, cfg.bos_token_id, cfg.eos_token_id)?;
    let tokens: usize = pairs
        .iter()
        .map(|(c, k)| tok.encode(&format!("{c}{k}")).map(|t| t.len()))
        .sum::<ckpt::Result<usize>>()?;
    let engine = Engine::new(&model, &tok);
    engine.run(&requests[..4], &|_| {})?; // warm-up
    let mut best = f64::INFINITY;
    let mut logprobs = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let responses = engine.run(&requests, &|_| {})?;
        best = best.min(started.elapsed().as_secs_f64());
        logprobs = responses
            .iter()
            .map(|r| match r {
                Response::Loglikelihood { logprob, .. } => *logprob,
                _ => f64::NAN,
            })
            .collect();
    }
    std::fs::write(
        out.join("ckpt_logprobs.json"),
        serde_json::to_vec(&logprobs)?,
    )?;
    println!(
        "{}",
        serde_json::json!({
            "bench": "eval_multiple_choice", "impl": "ckpt", "dtype": "f32",
            "params": cfg.num_parameters(), "docs": docs, "requests": requests.len(),
            "tokens": tokens, "threads": rayon::current_num_threads(), "seconds": best,
            "requests_per_second": requests.len() as f64 / best,
            "tokens_per_second": tokens as f64 / best,
        })
    );
    Ok(())
}

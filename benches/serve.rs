//! `ckpt serve` under concurrent clients: the ~22M-parameter benchmark Llama served on
//! loopback, 1, 4 and 16 clients each asking for greedy completions (64 new tokens,
//! `temperature: 0`), decoded one at a time (`--max-batch 1`) and together (continuous
//! batching, `--max-batch 4` and `16`); generated tokens per second over the whole run,
//! against one client at a time. Every answer is checked against the one-at-a-time
//! answer to the same prompt: concurrency must not change a greedy text.
//!
//! `cargo bench --bench serve` prints one JSON line per configuration.
//! `CKPT_BENCH_REQUESTS` (per client, default 4) and `CKPT_BENCH_NEW` change the load.

mod common;

use candle_core::{DType, Device};
use ckpt::checkpoint::write_checkpoint;
use ckpt::model::init_weights;
use common::{config, env_usize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(model: &std::path::Path, max_batch: usize) -> anyhow::Result<Server> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(["serve"])
        .arg(model)
        .args(["--port", "0", "--model-name", "bench", "--max-batch"])
        .arg(max_batch.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(Server(child, url))
}

fn prompt(i: usize) -> String {
    format!(
        "the stone number {i} sits by the river and the bird number {} sings",
        i * 7
    )
}

fn complete(url: &str, prompt: &str, new: usize) -> anyhow::Result<(String, usize)> {
    let r: Value = reqwest::blocking::Client::new()
        .post(format!("{url}/completions"))
        .json(&json!({"prompt": prompt, "max_tokens": new, "temperature": 0}))
        .send()?
        .json()?;
    let text = r["choices"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let tokens = r["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
    Ok((text, tokens))
}

fn main() -> anyhow::Result<()> {
    let per_client = env_usize("CKPT_BENCH_REQUESTS", 4);
    let new = env_usize("CKPT_BENCH_NEW", 64);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/serve");
    let model = out.join("model");
    let cfg = config()?;
    let weights = init_weights(&cfg, 0.02, 0, DType::F32, &Device::Cpu)?;
    write_checkpoint(&model, &cfg, &weights, None)?;
    let corpus: Vec<String> = (0..500).map(prompt).collect();
    ckpt::train::data::train_bpe(&corpus, 512)?
        .save(model.join("tokenizer.json"), false)
        .map_err(anyhow::Error::msg)?;

    // The reference: every prompt answered one at a time.
    let server = serve(&model, 1)?;
    let prompts: Vec<String> = (0..16 * per_client).map(prompt).collect();
    let mut reference = HashMap::new();
    let started = Instant::now();
    let mut tokens = 0;
    for p in &prompts[..per_client] {
        let (text, n) = complete(&server.1, p, new)?;
        tokens += n;
        reference.insert(p.clone(), text);
    }
    report(
        "one at a time",
        1,
        1,
        tokens,
        started.elapsed().as_secs_f64(),
        true,
    );
    for p in &prompts[per_client..] {
        reference.insert(p.clone(), complete(&server.1, p, new)?.0);
    }
    drop(server);

    for max_batch in [1, 4, 16] {
        let server = serve(&model, max_batch)?;
        for clients in [1, 4, 16] {
            let started = Instant::now();
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let url = server.1.clone();
                    let mine: Vec<String> = prompts[c * per_client..(c + 1) * per_client].to_vec();
                    std::thread::spawn(move || {
                        mine.iter()
                            .map(|p| complete(&url, p, new).map(|(t, n)| (p.clone(), t, n)))
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            let mut tokens = 0;
            let mut same = true;
            for h in handles {
                for (p, text, n) in h.join().expect("client thread")? {
                    tokens += n;
                    same &= reference[&p] == text;
                }
            }
            report(
                "concurrent",
                clients,
                max_batch,
                tokens,
                started.elapsed().as_secs_f64(),
                same,
            );
        }
    }
    Ok(())
}

fn report(mode: &str, clients: usize, max_batch: usize, tokens: usize, seconds: f64, same: bool) {
    println!(
        "{}",
        json!({
            "bench": "serve_completions", "mode": mode, "clients": clients, "max_batch": max_batch,
            "generated_tokens": tokens, "seconds": seconds,
            "tokens_per_second": tokens as f64 / seconds,
            "greedy_texts_equal_one_at_a_time": same,
        })
    );
}

//! `ckpt serve CKPT [--port P]`: one checkpoint behind an OpenAI-compatible API;
//! `ckpt serve --oracle instructions.json`: the ground-truth judge behind the same API.

use super::output::{outln, Ui};
use crate::eval::run::checkpoint_row;
use crate::judge::oracle::{Oracle, DEFAULT_K};
use crate::judge::run::generator_name;
use crate::serve::oracle::{OracleJudge, DEFAULT_NAME};
use crate::serve::{ServeConfig, Served, Server};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The checkpoint directory.
    #[arg(required_unless_present = "oracle", conflicts_with = "oracle")]
    ckpt: Option<PathBuf>,
    /// Serve the ground-truth judge of this instruction set instead of a checkpoint (an
    /// AlpacaEval-layout file whose `output`s are the true answers, e.g. the
    /// instructions.json of `ckpt synth`): it answers the pairwise prompts of
    /// `ckpt eval --tasks alpaca_eval`, preferring the answer closer to the truth.
    #[arg(long, value_name = "FILE")]
    oracle: Option<PathBuf>,
    /// With --oracle: the slope k of p = sigmoid(k (F1_A - F1_B)).
    #[arg(long, default_value_t = DEFAULT_K, requires = "oracle")]
    oracle_k: f64,
    /// Address to listen on (loopback by default; elsewhere, set --api-key).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Require `Authorization: Bearer KEY` on every route (never logged).
    #[arg(
        long,
        env = "CKPT_SERVE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,
    /// Requests waiting for a place at most; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 256, value_name = "N", value_parser = super::values::at_least_one)]
    max_queue: usize,
    /// Port (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The model id clients name [default: RUN/CHECKPOINT, or ground-truth-oracle].
    #[arg(long)]
    model_name: Option<String>,
    /// With --oracle: requests answered at once.
    #[arg(long, default_value_t = 1, value_parser = super::values::at_least_one, requires = "oracle")]
    workers: usize,
    /// Requests decoded together, one forward step for all (continuous batching); more
    /// wait in the queue (--max-queue). 1: one request at a time.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = super::values::at_least_one)]
    max_batch: usize,
    #[command(flatten)]
    tokenization: super::eval::TokenizationArgs,
    #[arg(long, env = "CKPT_DEVICE", default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn run(args: &ServeArgs, _ui: &Ui) -> anyhow::Result<ExitCode> {
    let server = Server::bind(&ServeConfig {
        host: args.host.clone(),
        port: args.port,
        api_key: args.api_key.clone(),
        max_queue: args.max_queue,
    })?;
    if !server.addr().ip().is_loopback() && args.api_key.is_none() {
        tracing::warn!(
            "listening on {}: anyone who can reach it may use the model",
            server.addr()
        );
    }
    match (&args.oracle, &args.ckpt) {
        (Some(file), _) => {
            let oracle = Oracle::read(file, args.oracle_k)?;
            let name = args.model_name.as_deref().unwrap_or(DEFAULT_NAME);
            tracing::info!(
                "the ground truth of {} instructions from {}",
                oracle.len(),
                file.display()
            );
            announce(name, &server)?;
            let judge = OracleJudge {
                oracle,
                name: name.to_string(),
            };
            server.run(std::sync::Arc::new(judge), args.workers)?;
        }
        (None, Some(dir)) => {
            let device = crate::device::parse_device(&args.device)?;
            let dtype = crate::device::parse_dtype(&args.dtype)?;
            let ckpt = crate::sources::open_single(dir, &crate::progress::Silent)?;
            let name = match &args.model_name {
                Some(n) => n.clone(),
                None => generator_name(&checkpoint_row(&ckpt, "")),
            };
            let served = Served::load(&ckpt, &name, &device, dtype, args.tokenization.policy())?
                .batched(args.max_batch)?;
            announce(&name, &server)?;
            let concurrency = served.concurrency();
            server.run(std::sync::Arc::new(served), concurrency)?;
        }
        (None, None) => unreachable!("clap requires one of them"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The line clients (and tests) read the URL from.
fn announce(name: &str, server: &Server) -> anyhow::Result<()> {
    outln!("serving {name} at {}", server.url()); // flushed: clients wait for it
    Ok(())
}

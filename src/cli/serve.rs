//! `ckpt serve CKPT [--port P]`: one checkpoint behind an OpenAI-compatible API;
//! `ckpt serve --oracle instructions.json`: the ground-truth judge behind the same API.

use super::output::{outln, Ui};
use crate::eval::judge::oracle::DEFAULT_K;
use crate::serve::{Backend, Event, Listen, ServeConfig};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
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
    model: super::values::ModelArgs,
}

impl ServeArgs {
    /// The flags as a config.
    fn job(&self) -> anyhow::Result<ServeConfig> {
        let backend = match (&self.oracle, &self.ckpt) {
            (Some(file), _) => Backend::Oracle {
                file: file.clone(),
                k: self.oracle_k,
                workers: self.workers,
            },
            (None, Some(dir)) => Backend::Checkpoint {
                dir: dir.clone(),
                device: crate::device::parse_device(&self.model.device)?,
                dtype: crate::device::parse_dtype(&self.model.dtype)?,
                policy: self.model.tokenization.policy(),
                max_batch: self.max_batch,
            },
            (None, None) => unreachable!("clap requires one of them"),
        };
        Ok(ServeConfig {
            listen: Listen {
                host: self.host.clone(),
                port: self.port,
                api_key: self.api_key.clone(),
                max_queue: self.max_queue,
            },
            model_name: self.model_name.clone(),
            backend,
        })
    }
}

pub(crate) fn run(args: &ServeArgs, _ui: &Ui) -> anyhow::Result<ExitCode> {
    crate::serve::run(&args.job()?, &mut |event| match event {
        // The line clients (and tests) read the URL from; flushed: clients wait for it.
        Event::Serving { name, url } => outln!("serving {name} at {url}"),
    })?;
    Ok(ExitCode::SUCCESS)
}

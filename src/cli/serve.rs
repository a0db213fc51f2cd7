//! `ckpt serve CKPT [--port P]`: one checkpoint behind an OpenAI-compatible API.

use super::output::Ui;
use crate::checkpoint::open_single;
use crate::eval::run::checkpoint_row;
use crate::judge::run::generator_name;
use crate::serve::{ServeConfig, Served, Server};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The checkpoint directory.
    ckpt: PathBuf,
    /// Address to listen on (loopback by default: the API has no authentication).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The model id clients name [default: RUN/CHECKPOINT].
    #[arg(long)]
    model_name: Option<String>,
    /// Requests served at once.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    #[arg(long, env = "CKPT_DEVICE", default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn run(args: &ServeArgs, _ui: &Ui) -> anyhow::Result<ExitCode> {
    let device = crate::device::parse_device(&args.device)?;
    let dtype = crate::device::parse_dtype(&args.dtype)?;
    let ckpt = open_single(&args.ckpt)?;
    let name = match &args.model_name {
        Some(n) => n.clone(),
        None => generator_name(&checkpoint_row(&ckpt, "")),
    };
    let served = Served::load(&ckpt, &name, &device, dtype)?;
    let server = Server::bind(&ServeConfig {
        host: args.host.clone(),
        port: args.port,
    })?;
    if !server.addr().ip().is_loopback() {
        tracing::warn!(
            "listening on {}: anyone who can reach it may use the model",
            server.addr()
        );
    }
    println!("serving {name} at {}", server.url());
    std::io::stdout().flush()?;
    server.run(std::sync::Arc::new(served), args.workers)?;
    Ok(ExitCode::SUCCESS)
}

//! [`ServeConfig`]: a `ckpt serve` as typed values, checked once, and [`run`], which
//! binds the address, loads what answers and serves until the process ends.

use super::oracle::{OracleJudge, DEFAULT_NAME};
use super::{Listen, Served, Server};
use crate::error::{Error, Result};
use crate::eval::judge::oracle::Oracle;
use crate::eval::judge::run::generator_name;
use crate::eval::run::checkpoint_row;
use crate::tokenizer::EncodePolicy;
use candle_core::{DType, Device};
use std::path::PathBuf;
use std::sync::Arc;

/// Where to listen, who may ask, and what answers.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub(crate) listen: Listen,
    /// The model id clients name; default: RUN/CHECKPOINT, or [`DEFAULT_NAME`].
    pub(crate) model_name: Option<String>,
    pub(crate) backend: Backend,
}

/// What answers the requests.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A checkpoint, decoding requests together.
    Checkpoint {
        /// A checkpoint directory, or `hf://ORG/NAME[@REV]`.
        dir: PathBuf,
        device: Device,
        dtype: DType,
        policy: EncodePolicy,
        /// Requests decoded together, one forward step for all; 1: one at a time.
        max_batch: usize,
    },
    /// The ground-truth judge of an instruction set (AlpacaEval layout, `output`s
    /// true).
    Oracle {
        file: PathBuf,
        /// The slope k of p = sigmoid(k (F1_A - F1_B)).
        k: f64,
        /// Requests answered at once.
        workers: usize,
    },
}

/// What [`run`] tells its caller.
pub enum Event<'a> {
    /// Everything is loaded; requests are answered from now on.
    Serving { name: &'a str, url: &'a str },
}

impl ServeConfig {
    /// Checks every count and the oracle's slope.
    pub(crate) fn check(&self) -> Result<()> {
        at_least_one("--max-queue", self.listen.max_queue)?;
        match &self.backend {
            Backend::Checkpoint { max_batch, .. } => at_least_one("--max-batch", *max_batch),
            Backend::Oracle { file, k, workers } => {
                at_least_one("--workers", *workers)?;
                // As the oracle says it, naming its file (the slope belongs to it).
                if !(k.is_finite() && *k > 0.0) {
                    return Err(Error::bad_file(
                        file,
                        format!("the preference slope k must be positive, not {k}"),
                    ));
                }
                Ok(())
            }
        }
    }
}

fn at_least_one(flag: &str, n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::bad_value(
            flag,
            format!("{flag} must be at least 1 (got 0)"),
        ));
    }
    Ok(())
}

/// Binds the address, loads the checkpoint (or the oracle) and answers requests until
/// the process ends; `on_event` hears when it starts answering.
pub fn run(cfg: &ServeConfig, on_event: &mut dyn FnMut(Event)) -> Result<()> {
    cfg.check()?;
    let server = Server::bind(&cfg.listen)?;
    if !server.addr().ip().is_loopback() && cfg.listen.api_key.is_none() {
        tracing::warn!(
            "listening on {}: anyone who can reach it may use the model",
            server.addr()
        );
    }
    let url = server.url();
    match &cfg.backend {
        Backend::Oracle { file, k, workers } => {
            let oracle = Oracle::read(file, *k)?;
            let name = cfg.model_name.as_deref().unwrap_or(DEFAULT_NAME);
            tracing::info!(
                "the ground truth of {} instructions from {}",
                oracle.len(),
                file.display()
            );
            on_event(Event::Serving { name, url: &url });
            let judge = OracleJudge {
                oracle,
                name: name.to_string(),
            };
            server.run(Arc::new(judge), *workers)
        }
        Backend::Checkpoint {
            dir,
            device,
            dtype,
            policy,
            max_batch,
        } => {
            let ckpt = crate::sources::open_single(dir, &crate::progress::Silent)?;
            let name = match &cfg.model_name {
                Some(n) => n.clone(),
                None => generator_name(&checkpoint_row(&ckpt, "")),
            };
            let served =
                Served::load(&ckpt, &name, device, *dtype, *policy)?.batched(*max_batch)?;
            on_event(Event::Serving {
                name: &name,
                url: &url,
            });
            let concurrency = served.concurrency();
            server.run(Arc::new(served), concurrency)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oracle(k: f64, workers: usize) -> ServeConfig {
        ServeConfig {
            listen: Listen::default(),
            model_name: None,
            backend: Backend::Oracle {
                file: "truth.json".into(),
                k,
                workers,
            },
        }
    }

    #[test]
    fn check_refuses_zero_counts_naming_the_flag() {
        assert!(oracle(10.0, 1).check().is_ok());
        let e = oracle(10.0, 0).check().unwrap_err().to_string();
        assert!(e.contains("--workers"), "{e}");
        let mut cfg = oracle(10.0, 1);
        cfg.listen.max_queue = 0;
        assert!(cfg.check().unwrap_err().to_string().contains("--max-queue"));
    }

    #[test]
    fn check_refuses_an_oracle_slope_that_is_not_positive() {
        for k in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = oracle(k, 1).check().unwrap_err().to_string();
            assert!(e.contains("truth.json") && e.contains("positive"), "{e}");
        }
    }
}

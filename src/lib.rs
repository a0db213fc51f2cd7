//! `ckpt`: train, score, measure and publish LLM checkpoints.
//!
//! The modules in layers; each uses only those on the lines above it (and [`error`]):
//!
//! ```text
//! error, http, records, texts, progress, plot, ...     foundations
//! tokenizer, chat, schedule, shard, device             text, templates, run settings
//! model -> checkpoint -> store -> hub -> sources       weights on disk or on the Hub
//!                                                      -> a Model; results by fingerprint
//! score -> eval (tasks, engine, judge) -> serve       what a checkpoint answers
//! train, merge, sharpness                              new checkpoints, measurements
//! release -> report                                    results -> cards, tables, figures
//! synth, demo                                          synthetic data, the paper in small
//! cli                                                  flags -> jobs for the modules above
//! ```
//!
//! Every command is a job beside the code that does it (`eval::job::EvalJob`,
//! `train::job::TrainJob`, `sharpness::job::SharpnessJob`, `release::ReleaseJob`,
//! `serve::ServeConfig`...): typed fields, a `check()` that validates every value once,
//! and a `run` that does the work, reports through typed events or
//! [`progress::Progress`], and returns a typed outcome. `cli/` only turns flags into
//! jobs and renders what comes back; the binary in `main.rs` is a thin shell over it.

pub mod alloc;
pub mod atomic_file;
pub mod chat;
pub mod checkpoint;
pub mod cli;
pub mod demo;
pub mod device;
pub mod error;
pub mod eval;
pub mod http;
pub mod hub;
pub mod memory;
pub mod merge;
pub mod model;
pub mod plot;
pub mod progress;
pub mod records;
pub mod release;
pub mod report;
pub mod schedule;
pub mod score;
pub mod serve;
pub mod shard;
pub mod sharpness;
pub mod sources;
pub mod store;
pub mod synth;
pub mod texts;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};

/// Version of this build, recorded in everything `ckpt` writes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

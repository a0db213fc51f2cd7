//! `ckpt eval`: lm-evaluation-harness's benchmarks over whole directories of
//! checkpoints (DESIGN.md section 6).
//!
//! Tasks are data (`tasks/*.toml`, [`spec`]); docs come from files or the Hub
//! ([`data`], [`hub`]); [`prompt`] turns docs into requests exactly as lm-eval does;
//! the engine runs requests on a model; metrics score the responses; the store keeps
//! everything so a rerun scores nothing twice.

pub mod data;
pub mod engine;
pub mod hub;
pub mod prompt;
pub mod pyrandom;
pub mod spec;
pub mod template;

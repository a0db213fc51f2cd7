//! `ckpt eval`: lm-evaluation-harness's benchmarks over whole directories of
//! checkpoints (DESIGN.md section 6).
//!
//! Tasks are data (`tasks/*.toml`, [`spec`], [`template`]), built in ([`builtin`]) or
//! the user's, named by task, group or suite ([`catalog`]); docs come from files or the
//! Hub ([`data`], [`hub`]), or are made up in each dataset's schema (`crate::synth::tasks`);
//! [`task`] loads and preprocesses a task's docs and has [`prompt`] turn them into
//! requests exactly as lm-eval does, with Python's random generator and samplers
//! ([`pyrandom`]) and the named document preprocessors ([`preprocess`]); the
//! [`engine`] runs requests on a model; answers are extracted ([`filters`], with
//! Python's regex and string semantics: [`pyregex`], [`pystr`]) and scored
//! ([`metrics`], [`drop`]). [`results`] is what a run reports, with the relative
//! table ([`relative`]); [`judge`] is AlpacaEval-style pairwise judging, the one task
//! answered by generating; [`job`] is the command `ckpt eval` as a typed, checked job.

pub mod builtin;
pub mod catalog;
pub mod compare;
pub mod data;
pub mod drop;
pub mod engine;
pub(crate) mod export;
pub mod filters;
pub(crate) mod headline;
pub(crate) mod hub;
pub(crate) mod job;
pub mod judge;
pub(crate) mod listing;
pub mod metrics;
pub mod preprocess;
pub mod prompt;
pub mod pyrandom;
pub mod pyregex;
pub mod pystr;
pub(crate) mod relative;
pub(crate) mod results;
pub mod run;
pub(crate) mod scoring;
pub(crate) mod spec;
pub(crate) mod status;
pub mod task;
pub(crate) mod template;

//! Evaluation on standard benchmarks, scored as lm-evaluation-harness scores them.
//!
//! The pure logic that must match the harness bit for bit: Python's random generator
//! and the few-shot samplers ([`pyrandom`]), Python string and regex semantics
//! ([`pystr`], [`pyregex`]), answer-extraction filters ([`filters`]), metrics and
//! standard errors ([`metrics`]), DROP's F1 ([`drop`]) and the named document
//! preprocessors ([`preprocess`]).

pub mod drop;
pub mod filters;
pub mod metrics;
pub mod preprocess;
pub mod pyrandom;
pub mod pyregex;
pub mod pystr;

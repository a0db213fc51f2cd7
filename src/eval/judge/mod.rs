//! AlpacaEval-style pairwise judging through an OpenAI-compatible endpoint
//! (DESIGN.md section 7).
//!
//! The instruction set ([`instructions`]) is answered by each checkpoint with its chat
//! template ([`chat`]); a judge model behind any OpenAI-compatible server ([`client`])
//! is asked which of two answers is better ([`prompt`]), the preference is read from
//! its log-probabilities ([`preference`]), and AlpacaEval's metrics, length-controlled
//! win rate included, are computed as alpaca_eval computes them ([`metrics`]) and
//! exported in its formats ([`export`]). [`run`] ties it together through the store;
//! [`job`] is the command's typed settings and report.
//! [`oracle`] is a judge that knows each instruction's true answer (the synthetic
//! world's), for the demo and the tests.

pub mod client;
pub(crate) mod export;
pub mod instructions;
pub(crate) mod job;
pub mod metrics;
pub mod oracle;
pub mod preference;
pub mod prompt;
pub mod run;

//! The trainer: recipes, data, optimizer, the loop and its checkpoints.
//!
//! ```text
//! recipe.toml --TrainJob::load--> TrainJob --job::run--> setup::prepare --> Trainer
//!    (Recipe + overrides, validated)               (data, tokenizer, weights,
//!                                                   optimizer, schedule)
//!                                                  --Trainer::run--> step-N/ ...
//! ```

pub mod data;
pub mod job;
pub mod optimizer;
pub mod recipe;
pub(crate) mod saving;
pub(crate) mod setup;
pub mod trainer;

pub use job::{TrainEvent, TrainJob, TrainOutcome};

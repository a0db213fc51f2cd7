//! The trainer: recipes, data, optimizer, the loop and its checkpoints.
//!
//! ```text
//! recipe.toml --Recipe::load--> Recipe --setup::prepare--> Trainer --run--> step-N/ ...
//!                                          (data, tokenizer, weights, optimizer, schedule)
//! ```

pub mod data;
pub mod optimizer;
pub mod recipe;
pub mod saving;
pub mod setup;
pub mod trainer;

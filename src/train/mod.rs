//! The trainer: recipes, data, optimizer, the loop and its checkpoints.

pub mod optimizer;
pub mod recipe;
pub mod saving;
pub mod stubs;
pub mod trainer;

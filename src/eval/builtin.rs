//! Built-in tasks (`tasks/*.toml`, embedded). Filled in by the `tasks` branch.

use super::spec::TaskSpec;
use crate::error::{Error, Result};

/// The tasks `name` stands for (a task or a group).
pub fn lookup(name: &str) -> Result<Vec<TaskSpec>> {
    Err(Error::Invalid(format!("unknown task `{name}`")))
}

/// The tasks of a suite.
pub fn suite(name: &str) -> Result<Vec<TaskSpec>> {
    Err(Error::Invalid(format!("unknown suite `{name}`")))
}

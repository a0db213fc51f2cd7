//! The library's error type.
//!
//! Every error that comes from bad input names the file it came from and says what is
//! wrong with it in one line, so the CLI can print it as is.

use std::path::{Path, PathBuf};

/// Errors raised by the `ckpt` library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file exists but its content is wrong (bad JSON, missing field, wrong shape...).
    #[error("{}: {message}", path.display())]
    BadFile { path: PathBuf, message: String },
    /// A file could not be read or written.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// A tensor operation failed (a bug or an impossible request, not bad input).
    #[error("tensor error: {}", candle_message(.0))]
    Candle(#[from] candle_core::Error),
    /// A request that cannot be served (unsupported option, inconsistent arguments).
    #[error("{0}")]
    Invalid(String),
    /// Training diverged: a loss or gradient norm became NaN or infinite.
    #[error("{what} is {value} at step {step}")]
    NonFinite {
        what: &'static str,
        value: f64,
        step: u64,
    },
    /// Ctrl-C stopped a long job; what it finished is saved and a rerun resumes.
    #[error("{0}")]
    Interrupted(String),
    /// Two results stores hold different results under the same key (`ckpt store
    /// merge`): which one is right is the user's call, never made silently.
    #[error("{0}")]
    MergeConflict(Box<Conflict>),
    /// A request over the network failed (the Hub's API or a download). The message
    /// names the request, says what came back and what to change; callers may read the
    /// HTTP status and the server's error code (the Hub's `X-Error-Code`).
    #[error("{message}")]
    Network {
        status: Option<u16>,
        code: Option<String>,
        message: String,
    },
}

/// A key holding different values in two results stores.
#[derive(Debug, thiserror::Error)]
#[error(
    "{table} conflict at {key}: {column} is {first_value} in {} but {second_value} in {}; nothing was merged (leave one of them out, or delete that row from it)",
    first.display(),
    second.display()
)]
pub struct Conflict {
    pub table: String,
    /// The key, as `column=value, ...`.
    pub key: String,
    /// The first column that differs.
    pub column: String,
    pub first: PathBuf,
    pub first_value: String,
    pub second: PathBuf,
    pub second_value: String,
}

/// Result alias used across the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A problem with the content of `path`.
    pub fn bad_file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// An I/O failure on `path`.
    pub fn io(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            err,
        }
    }
}

/// The message of a candle error on one line, without the backtrace candle attaches
/// when `RUST_BACKTRACE` is set.
pub fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => candle_message(inner),
        E::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        E::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        other => other.to_string().replace('\n', " "),
    }
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads and parses a JSON file, naming it in the error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::bad_file(path, format!("invalid JSON: {e}")))
}

/// The directory holding `path`: `.` for a bare file name, whose `parent()` is the empty
/// path that every file call rejects (with an error naming no file).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_file_name_lives_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("notes.txt")), Path::new("."));
        assert_eq!(parent_dir(Path::new("runs/notes.txt")), Path::new("runs"));
        assert_eq!(parent_dir(Path::new("/notes.txt")), Path::new("/"));
        assert_eq!(parent_dir(Path::new("/")), Path::new("."));
    }
}

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
    /// A flag, a configuration field or an argument has a wrong value (out of range,
    /// malformed, contradicting another). `name` is what it is about (`--batch-tokens`,
    /// `training.seq_len`), for callers to match on; `message` says it all, name included.
    #[error("{message}")]
    BadValue { name: String, message: String },
    /// A valid request this build cannot serve: an architecture, a dtype on a device, an
    /// option that is not implemented.
    #[error("{0}")]
    Unsupported(String),
    /// The results store failed: locked by another process, not a store, written by a
    /// newer ckpt, or a query or stored value that failed. Such errors end a run, as
    /// nothing more can be saved; `fault` tells which.
    #[error("{}: {message}", path.display())]
    Store {
        path: PathBuf,
        fault: StoreFault,
        message: String,
    },
    /// A run that cannot go on for a reason that is not in its input: a thread that
    /// could not start or panicked, a computation that did not converge, a value that
    /// could not be serialised.
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

/// What went wrong with a results store ([`Error::Store`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// Another process holds it locked (past the wait, where there was one).
    Locked,
    /// Not a ckpt store, damaged, or of a schema newer than this ckpt reads.
    Unreadable,
    /// A named store file is missing, or none is given.
    Missing,
    /// A query failed or a stored value does not read back.
    Query,
}

/// A key holding different values in two results stores.
#[derive(Debug, thiserror::Error)]
#[error(
    "{table} conflict at {key}: {column} is {first_value} in {} but {second_value} in {}; nothing was merged (leave one of them out, or delete that row from it)",
    first.display(),
    second.display()
)]
pub struct Conflict {
    pub(crate) table: String,
    /// The key, as `column=value, ...`.
    pub(crate) key: String,
    /// The first column that differs.
    pub(crate) column: String,
    pub(crate) first: PathBuf,
    pub(crate) first_value: String,
    pub(crate) second: PathBuf,
    pub(crate) second_value: String,
}

/// Result alias used across the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A problem with the content of `path`.
    pub(crate) fn bad_file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// A wrong value of `name` (a flag or configuration field); `message` is the whole
    /// line shown to the user.
    pub(crate) fn bad_value(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadValue {
            name: name.into(),
            message: message.into(),
        }
    }

    /// A request this build cannot serve.
    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Error::Unsupported(message.into())
    }

    /// A failure of the results store at `path`.
    pub(crate) fn store(
        path: impl AsRef<Path>,
        fault: StoreFault,
        message: impl Into<String>,
    ) -> Self {
        Error::Store {
            path: path.as_ref().to_path_buf(),
            fault,
            message: message.into(),
        }
    }

    /// A network failure with no HTTP status to report (a connection, a digest, a
    /// server's answer that does not read).
    pub(crate) fn network(message: impl Into<String>) -> Self {
        Error::Network {
            status: None,
            code: None,
            message: message.into(),
        }
    }

    /// The same error with its message rewritten by `f` (context added before or
    /// after), keeping its kind where the message is all it shows; other kinds become
    /// [`Error::Invalid`] with `f` applied to their whole text.
    pub(crate) fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            Error::BadValue { name, message } => Error::BadValue {
                name,
                message: f(message),
            },
            Error::Unsupported(message) => Error::Unsupported(f(message)),
            Error::Network {
                status,
                code,
                message,
            } => Error::Network {
                status,
                code,
                message: f(message),
            },
            Error::Invalid(message) => Error::Invalid(f(message)),
            other => Error::Invalid(f(other.to_string())),
        }
    }

    /// Whether this is a failure of the results store, which ends a run.
    pub fn is_store(&self) -> bool {
        matches!(self, Error::Store { .. })
    }

    /// An I/O failure on `path`.
    pub(crate) fn io(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            err,
        }
    }
}

/// The message of a candle error on one line, without the backtrace candle attaches
/// when `RUST_BACKTRACE` is set.
pub(crate) fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => candle_message(inner),
        E::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        E::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        other => other.to_string().replace('\n', " "),
    }
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads and parses a JSON file, naming it in the error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::bad_file(path, format!("invalid JSON: {e}")))
}

/// The directory holding `path`: `.` for a bare file name, whose `parent()` is the empty
/// path that every file call rejects (with an error naming no file).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers tell the kinds apart: a wrong value by the flag or field it is about, an
    /// unsupported request, a store failure.
    #[test]
    fn callers_tell_the_kinds_apart() {
        let shard = crate::shard::Shard::parse("5/4", None, &|_| None)
            .err()
            .unwrap();
        assert!(
            matches!(&shard, Error::BadValue { name, .. } if name == "--shard"),
            "{shard:?}"
        );
        assert_eq!(
            shard.to_string(),
            "--shard \"5/4\": expected I/N with 0 <= I < N (e.g. 0/4), or auto"
        );
        let dtype = crate::device::parse_dtype("f8").err().unwrap();
        assert!(matches!(&dtype, Error::BadValue { name, .. } if name == "--dtype"));

        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, r#"{"architectures":["GPT2LMHeadModel"]}"#).unwrap();
        let arch = crate::model::ModelConfig::from_file(&config).err().unwrap();
        assert!(matches!(arch, Error::Unsupported(_)), "{arch:?}");
        assert!(arch.to_string().starts_with(&format!(
            "{}: unsupported architecture GPT2LMHeadModel",
            config.display()
        )));

        std::fs::write(&config, r#"{"architectures":["LlamaForCausalLM"]}"#).unwrap();
        let bad = crate::model::ModelConfig::from_file(&config).err().unwrap();
        assert!(matches!(bad, Error::BadFile { .. }), "{bad:?}");

        let store = Error::store("s.sqlite", StoreFault::Locked, "locked");
        assert!(store.is_store() && !shard.is_store());
        assert_eq!(store.to_string(), "s.sqlite: locked");
    }

    /// Context added to a message keeps the kind where the message is all it shows.
    #[test]
    fn a_reworded_error_keeps_its_kind() {
        let e = Error::bad_value("--eps", "bad").map_message(|m| format!("ckpt: {m}"));
        assert!(
            matches!(&e, Error::BadValue { name, message } if name == "--eps" && message == "ckpt: bad")
        );
        let e = Error::Network {
            status: Some(429),
            code: None,
            message: "slow down".into(),
        }
        .map_message(|m| format!("{m}; rerun"));
        assert!(matches!(
            &e,
            Error::Network {
                status: Some(429),
                ..
            }
        ));
        assert_eq!(e.to_string(), "slow down; rerun");
        let e = Error::bad_file("a.json", "bad").map_message(|m| format!("x: {m}"));
        assert_eq!(e.to_string(), "x: a.json: bad");
    }

    #[test]
    fn a_bare_file_name_lives_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("notes.txt")), Path::new("."));
        assert_eq!(parent_dir(Path::new("runs/notes.txt")), Path::new("runs"));
        assert_eq!(parent_dir(Path::new("/notes.txt")), Path::new("/"));
        assert_eq!(parent_dir(Path::new("/")), Path::new("."));
    }
}

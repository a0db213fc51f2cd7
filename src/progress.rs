//! How long jobs tell their caller how far they are: evaluation (requests),
//! downloads and uploads (bytes), hashing before a release (bytes).
//!
//! The library only counts; the CLI draws every count with one bar style
//! (`cli::output`), and tests and library callers pass [`Silent`].

/// What a count counts, so the caller can print it (`12/40`, or `1.2 GB/3.0 GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Items,
    Bytes,
}

/// Told how far a job is. Calls may come from several threads.
pub trait Progress: Sync {
    /// A piece of work starts (a checkpoint to score, a file to fetch): `total` units,
    /// of which `done` are done already (a resumed download).
    fn start(&self, what: &str, unit: Unit, total: u64, done: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// `n` units counted already will be counted again (a retried upload's bytes).
    fn rewind(&self, n: u64) {
        let _ = n;
    }
}

/// Tells no one.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: Unit, _: u64, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// A [`Progress`] that work on other threads (a request body being sent) can hold.
pub(crate) type Shared = std::sync::Arc<dyn Progress + Send + Sync>;

/// A [`Shared`] that tells no one.
pub fn silent() -> Shared {
    std::sync::Arc::new(Silent)
}

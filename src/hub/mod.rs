//! The Hugging Face Hub: its HTTP API ([`client`]), who we are to it ([`auth`]), and
//! checkpoints kept on it as revisions of a model repository.
//!
//! ```text
//! hf://org/suite --revisions 'step*'
//!    |  source::HubSource        what the user named
//!    |  models::Hub::refs        the refs API: branch -> commit
//!    |  revisions                steps (and tokens) from the branch names
//!    |  models::Hub::tree        the files, with each LFS file's sha256
//!    v  models::Hub::fetch       only what a command reads, into the HF cache (cache)
//! snapshots/<commit>/            a checkpoint directory like any other
//! ```
//!
//! Downloads land in the cache huggingface_hub uses (`HF_HUB_CACHE`, `HF_HOME`), laid
//! out as it lays them out, so other tools find them and `ckpt` finds theirs.
//! `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE` mean what they mean there.

pub mod auth;
pub(crate) mod cache;
pub mod client;
mod download;
pub(crate) mod models;
pub(crate) mod repo_id;
pub(crate) mod revisions;
pub(crate) mod source;
pub(crate) mod sweep;

pub use cache::HubCache;
pub use client::{HubClient, HubError, RetryPolicy};
pub use models::{Downloaded, Fetched, FileEntry, Hub, HubRevision};
pub use repo_id::{RepoId, RepoKind};
pub(crate) use source::HubSource;

/// Whether `HF_HUB_OFFLINE` asks for the cache alone (`1`, `true`, `yes`, `on`, as
/// huggingface_hub reads it).
pub(crate) fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

//! Which Hub revisions the store has seen, and the fingerprint each one's weights have.
//!
//! A revision is keyed by (repo, revision, commit): a branch that moved gets a new
//! row, so its new weights are scored and its old results stay. `weights` lists the
//! weight files with the digest the Hub gave for each (`path=sha256;...`), so that a
//! commit that changed nothing in the weights (a new README) is known by its
//! fingerprint before anything is downloaded.

use super::{now, Store};
use crate::error::Result;
use rusqlite::{params, OptionalExtension};

/// A revision as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub struct HubRevisionRow {
    pub(crate) repo: String,
    pub(crate) revision: String,
    pub(crate) commit_sha: String,
    pub(crate) fingerprint: String,
    /// The weight files and their digests; `None` when unknown (offline).
    pub(crate) weights: Option<String>,
    pub(crate) step: Option<u64>,
    pub(crate) tokens: Option<u64>,
}

impl Store {
    /// Records a revision (a row already there keeps its first sighting).
    pub fn put_hub_revision(&self, row: &HubRevisionRow) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO hub_revisions (repo, revision, commit_sha, fingerprint, weights, step, tokens, seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(repo, revision, commit_sha) DO UPDATE SET
                    weights = COALESCE(hub_revisions.weights, ?5)",
                params![
                    row.repo,
                    row.revision,
                    row.commit_sha,
                    row.fingerprint,
                    row.weights,
                    row.step.map(|s| s as i64),
                    row.tokens.map(|t| t as i64),
                    now()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The fingerprint of `repo`'s weights at `commit`, when some revision at that
    /// commit was recorded.
    pub fn hub_fingerprint_at(&self, repo: &str, commit: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT fingerprint FROM hub_revisions WHERE repo = ?1 AND commit_sha = ?2 LIMIT 1",
                params![repo, commit],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The fingerprint of weights with these files and digests, wherever they were seen.
    pub fn hub_fingerprint_of_weights(&self, weights: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT fingerprint FROM hub_revisions WHERE weights = ?1 LIMIT 1",
                params![weights],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every revision recorded, by repo, step and revision.
    pub fn hub_revisions(&self) -> Result<Vec<HubRevisionRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT repo, revision, commit_sha, fingerprint, weights, step, tokens FROM hub_revisions
                 ORDER BY repo, step, revision, seen_at",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(HubRevisionRow {
                    repo: r.get(0)?,
                    revision: r.get(1)?,
                    commit_sha: r.get(2)?,
                    fingerprint: r.get(3)?,
                    weights: r.get(4)?,
                    step: r.get::<_, Option<i64>>(5)?.map(|s| s as u64),
                    tokens: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_found_by_commit_and_by_weights() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.sqlite")).unwrap();
        let row = HubRevisionRow {
            repo: "org/suite".into(),
            revision: "step1".into(),
            commit_sha: "c1".into(),
            fingerprint: "f1".into(),
            weights: Some("model.safetensors=aa".into()),
            step: Some(1),
            tokens: None,
        };
        store.put_hub_revision(&row).unwrap();
        store.put_hub_revision(&row).unwrap();
        assert_eq!(
            store
                .hub_fingerprint_at("org/suite", "c1")
                .unwrap()
                .as_deref(),
            Some("f1")
        );
        assert_eq!(store.hub_fingerprint_at("org/suite", "c2").unwrap(), None);
        assert_eq!(store.hub_fingerprint_at("org/other", "c1").unwrap(), None);
        assert_eq!(
            store
                .hub_fingerprint_of_weights("model.safetensors=aa")
                .unwrap()
                .as_deref(),
            Some("f1")
        );
        // The branch moved: a second row, the first stays.
        store
            .put_hub_revision(&HubRevisionRow {
                commit_sha: "c2".into(),
                fingerprint: "f2".into(),
                ..row.clone()
            })
            .unwrap();
        let all = store.hub_revisions().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], row);
    }
}

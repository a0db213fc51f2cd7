//! `hf://ORG/NAME[@REVISION]`: a checkpoint on the Hub, named where a path would be.

use super::repo_id::RepoId;
use crate::error::{Error, Result};
use std::path::Path;

/// The prefix that marks a Hub checkpoint.
pub(crate) const SCHEME: &str = "hf://";

/// A model repository, at one revision or (`None`) as the command decides: `main`, or
/// every branch `--revisions` matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HubSource {
    /// `org/name` (or a legacy un-namespaced `name`).
    pub(crate) repo: String,
    /// A branch, tag or commit.
    pub(crate) revision: Option<String>,
}

impl HubSource {
    /// Reads `hf://ORG/NAME[@REV]`; `None` when `text` does not start with `hf://`.
    pub fn parse(text: &str) -> Option<Result<Self>> {
        let rest = text.strip_prefix(SCHEME)?;
        Some(Self::parse_rest(text, rest))
    }

    /// [`HubSource::parse`] of a path given on the command line.
    pub(crate) fn from_path(path: &Path) -> Option<Result<Self>> {
        Self::parse(path.to_str()?)
    }

    fn parse_rest(text: &str, rest: &str) -> Result<Self> {
        let bad = |why: String| Error::bad_value("source", format!("{text}: {why}"));
        // A revision may itself hold '/' (`refs/pr/1`), a repo id never holds '@'.
        let (repo, revision) = match rest.split_once('@') {
            Some((repo, rev)) => (repo, Some(rev)),
            None => (rest.trim_end_matches('/'), None),
        };
        let id = RepoId::parse(repo).map_err(|e| bad(e.to_string()))?;
        if let Some(rev) = revision {
            if rev.trim().is_empty() {
                return Err(bad("empty revision after '@'".into()));
            }
            if rev.contains("..") || rev.chars().any(|c| c.is_control() || c == ' ') {
                return Err(bad(format!("{rev:?} is not a valid revision name")));
            }
        }
        Ok(Self {
            repo: match id.namespace {
                Some(ns) => format!("{ns}/{}", id.name),
                None => id.name,
            },
            revision: revision.map(String::from),
        })
    }

    /// The same repository at `revision`.
    pub(crate) fn at(&self, revision: &str) -> Self {
        Self {
            repo: self.repo.clone(),
            revision: Some(revision.to_string()),
        }
    }

    /// The repository's name without its namespace: the run label of its revisions.
    pub fn name(&self) -> &str {
        self.repo.rsplit('/').next().unwrap_or(&self.repo)
    }

    /// The revision named, else `main`.
    pub(crate) fn revision_or_main(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The page of this revision on the Hub at `endpoint`.
    pub(crate) fn web_url(&self, endpoint: &str) -> String {
        let base = format!("{}/{}", endpoint.trim_end_matches('/'), self.repo);
        match &self.revision {
            Some(rev) => format!("{base}/tree/{}", super::repo_id::quote_revision(rev)),
            None => base,
        }
    }
}

impl std::fmt::Display for HubSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}", self.repo)?;
        if let Some(rev) = &self.revision {
            write!(f, "@{rev}")?;
        }
        Ok(())
    }
}

/// Whether a command-line path names a Hub checkpoint.
pub fn is_hub_path(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.starts_with(SCHEME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_read_repo_and_revision() {
        let s = HubSource::parse("hf://EleutherAI/pythia-70m@step1000")
            .unwrap()
            .unwrap();
        assert_eq!(s.repo, "EleutherAI/pythia-70m");
        assert_eq!(s.revision.as_deref(), Some("step1000"));
        assert_eq!(s.name(), "pythia-70m");
        assert_eq!(s.to_string(), "hf://EleutherAI/pythia-70m@step1000");
        let pr = HubSource::parse("hf://org/m@refs/pr/3").unwrap().unwrap();
        assert_eq!(pr.revision.as_deref(), Some("refs/pr/3"));
        assert_eq!(
            pr.web_url("https://huggingface.co"),
            "https://huggingface.co/org/m/tree/refs%2Fpr%2F3"
        );
        let main = HubSource::parse("hf://gpt2").unwrap().unwrap();
        assert_eq!(
            (main.repo.as_str(), main.revision_or_main()),
            ("gpt2", "main")
        );
        assert!(HubSource::parse("runs/wso").is_none());
    }

    #[test]
    fn bad_sources_name_the_problem() {
        for (text, want) in [
            ("hf://", "empty"),
            ("hf://a/b/c", "single '/'"),
            ("hf://org/m@", "empty revision"),
            ("hf://org/m@a..b", "not a valid revision"),
            ("hf://org/m o", "invalid repository id"),
        ] {
            let err = HubSource::parse(text).unwrap().unwrap_err().to_string();
            assert!(err.contains(text) && err.contains(want), "{text}: {err}");
        }
    }
}

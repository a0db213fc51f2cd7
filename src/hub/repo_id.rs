//! Hub repository ids (`namespace/name`), checked with the Hub's rules before any
//! request, and the URL-quoting of revisions.

use crate::error::{Error, Result};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What a repository holds. The Hub keeps models and datasets apart in its URLs, and
/// huggingface_hub's cache keeps them apart on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RepoKind {
    #[default]
    Model,
    Dataset,
}

impl RepoKind {
    /// `models` or `datasets`: the API's `/api/{plural}/...` and the cache's
    /// `{plural}--org--name`.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Self::Model => "models",
            Self::Dataset => "datasets",
        }
    }

    /// What precedes the repository id in a file's URL: nothing for a model,
    /// `datasets/` for a dataset.
    pub(crate) fn url_prefix(self) -> &'static str {
        match self {
            Self::Model => "",
            Self::Dataset => "datasets/",
        }
    }
}

/// Longest repository name the Hub accepts.
const MAX_NAME: usize = 96;

/// A validated repository id; the namespace may be left for the token's user to fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
}

impl RepoId {
    /// Parses `org/name` or `name`; the error says which rule was broken.
    pub fn parse(id: &str) -> Result<Self> {
        let bad =
            |why: &str| Error::bad_value("repo", format!("invalid repository id {id:?}: {why}"));
        let parts: Vec<&str> = id.split('/').collect();
        let (namespace, name) = match parts.as_slice() {
            [name] => (None, *name),
            [ns, name] => (Some(*ns), *name),
            _ => return Err(bad("expected NAMESPACE/NAME with a single '/'")),
        };
        for part in namespace.iter().chain([&name]) {
            check_part(part).map_err(|why| bad(&why))?;
        }
        if name.len() > MAX_NAME {
            return Err(bad(&format!(
                "the name is longer than {MAX_NAME} characters"
            )));
        }
        if name.ends_with(".git") {
            return Err(bad("the name cannot end in .git"));
        }
        Ok(Self {
            namespace: namespace.map(String::from),
            name: name.to_string(),
        })
    }

    /// `namespace/name`, with `user` as the namespace when none was given.
    pub(crate) fn full(&self, user: &str) -> String {
        format!(
            "{}/{}",
            self.namespace.as_deref().unwrap_or(user),
            self.name
        )
    }
}

fn check_part(part: &str) -> std::result::Result<(), String> {
    if part.is_empty() {
        return Err("empty namespace or name".into());
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{c:?} is not allowed (letters, digits, '-', '_' and '.' only)"
        ));
    }
    let edge = |c: char| c == '-' || c == '.';
    if part.starts_with(edge) || part.ends_with(edge) {
        return Err(format!("{part:?} cannot start or end with '-' or '.'"));
    }
    if part.contains("--") || part.contains("..") {
        return Err(format!("{part:?} cannot contain '--' or '..'"));
    }
    Ok(())
}

/// Everything but `A-Z a-z 0-9 - _ . ~` is escaped, as Python's `quote(s, safe="")`.
const QUOTE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A revision as one URL path segment (`refs/pr/1` -> `refs%2Fpr%2F1`).
pub(crate) fn quote_revision(revision: &str) -> String {
    utf8_percent_encode(revision, QUOTE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hub_ids_and_names_the_broken_rule() {
        let id = RepoId::parse("my-org/tiny_wso.v1").unwrap();
        assert_eq!(id.full("me"), "my-org/tiny_wso.v1");
        assert_eq!(RepoId::parse("model").unwrap().full("me"), "me/model");
        for (bad, why) in [
            ("a/b/c", "single '/'"),
            ("org/", "empty"),
            ("org/na me", "' '"),
            ("org/-name", "start or end"),
            ("org/name.", "start or end"),
            ("org/a--b", "'--'"),
            ("org/a..b", "'..'"),
            ("org/x.git", ".git"),
        ] {
            let err = RepoId::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
        let long = format!("org/{}", "a".repeat(97));
        assert!(RepoId::parse(&long).is_err());
    }

    #[test]
    fn revisions_are_one_path_segment() {
        assert_eq!(quote_revision("main"), "main");
        assert_eq!(quote_revision("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(quote_revision("v1.0 rc"), "v1.0%20rc");
    }
}

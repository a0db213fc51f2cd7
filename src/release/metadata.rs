//! The card metadata and revision given on the command line, checked as the Hub checks
//! them, before any work: a branch name git accepts, a license id from the Hub's list,
//! language codes shaped like ISO 639, dataset and model ids shaped like repository ids.

use crate::hub::RepoId;

/// The license ids the Hub's model card metadata accepts
/// (https://huggingface.co/docs/hub/repositories-licenses).
pub(crate) const HUB_LICENSES: &[&str] = &[
    "apache-2.0",
    "mit",
    "openrail",
    "bigscience-openrail-m",
    "creativeml-openrail-m",
    "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m",
    "afl-3.0",
    "artistic-2.0",
    "bsl-1.0",
    "bsd",
    "bsd-2-clause",
    "bsd-3-clause",
    "bsd-3-clause-clear",
    "c-uda",
    "cc",
    "cc0-1.0",
    "cc-by-2.0",
    "cc-by-2.5",
    "cc-by-3.0",
    "cc-by-4.0",
    "cc-by-sa-3.0",
    "cc-by-sa-4.0",
    "cc-by-nc-2.0",
    "cc-by-nc-3.0",
    "cc-by-nc-4.0",
    "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0",
    "cc-by-nc-sa-2.0",
    "cc-by-nc-sa-3.0",
    "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0",
    "cdla-permissive-1.0",
    "cdla-permissive-2.0",
    "wtfpl",
    "ecl-2.0",
    "epl-1.0",
    "epl-2.0",
    "etalab-2.0",
    "eupl-1.1",
    "eupl-1.2",
    "agpl-3.0",
    "gfdl",
    "gpl",
    "gpl-2.0",
    "gpl-3.0",
    "lgpl",
    "lgpl-2.1",
    "lgpl-3.0",
    "isc",
    "h-research",
    "intel-research",
    "lppl-1.3c",
    "ms-pl",
    "apple-ascl",
    "apple-amlr",
    "mpl-2.0",
    "odc-by",
    "odbl",
    "openrail++",
    "osl-3.0",
    "postgresql",
    "ofl-1.1",
    "ncsa",
    "unlicense",
    "zlib",
    "pddl",
    "lgpl-lr",
    "deepfloyd-if-license",
    "fair-noncommercial-research-license",
    "llama2",
    "llama3",
    "llama3.1",
    "llama3.2",
    "llama3.3",
    "llama4",
    "gemma",
    "unknown",
    "other",
];

/// `--license`: one of the Hub's ids (`other` for anything else).
pub(crate) fn parse_license(s: &str) -> Result<String, String> {
    if HUB_LICENSES.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a Hub license id (e.g. apache-2.0, mit, cc-by-4.0, llama3, other)"
        ))
    }
}

/// `--language`: an ISO 639-1, -2 or -3 code (2 or 3 lowercase letters), with an
/// optional region or script (`en`, `fra`, `pt-BR`, `zh-Hans`), as the Hub's card
/// metadata takes them.
pub(crate) fn parse_language(s: &str) -> Result<String, String> {
    let mut parts = s.split('-');
    let code = parts.next().unwrap_or_default();
    let code_ok = (2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase());
    let subtags_ok =
        parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if code_ok && subtags_ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a language code (ISO 639: 2 or 3 lowercase letters, e.g. en, fr, yue)"
        ))
    }
}

/// `--base-model`: a Hub repository id, or a checkpoint source `hf://ORG/NAME[@REV]`,
/// which the card names by its repository (the card's `base_model` has no revision).
pub(crate) fn parse_base_model(s: &str) -> Result<String, String> {
    match crate::hub::HubSource::parse(s) {
        Some(source) => source.map(|s| s.repo).map_err(|e| e.to_string()),
        None => parse_hub_id(s),
    }
}

/// `--dataset` / `--base-model`: a Hub repository id (`org/name` or `name`).
pub(crate) fn parse_hub_id(s: &str) -> Result<String, String> {
    RepoId::parse(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// `--revision`: a branch name as git and the Hub accept it (`main`, `v1.0`,
/// `refs/pr/3`): no empty or `.`-led component, no `..`, no spaces or `~^:?*[\`.
pub(crate) fn parse_revision(s: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("{s:?} is not a branch name: {why}"));
    if s.is_empty() {
        return bad("empty");
    }
    if s.contains("..") || s.contains("@{") || s == "@" {
        return bad("'..', '@{' and '@' are not allowed");
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(*c))
    {
        return bad(&format!("{c:?} is not allowed"));
    }
    if s.split('/')
        .any(|part| part.is_empty() || part.starts_with('.') || part.ends_with(".lock"))
    {
        return bad("a '/'-separated part is empty, starts with '.' or ends with '.lock'");
    }
    if s.ends_with('.') {
        return bad("it cannot end with '.'");
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_metadata_is_checked_like_the_hub() {
        assert!(parse_license("apache-2.0").is_ok());
        assert!(parse_license("0")
            .unwrap_err()
            .contains("not a Hub license"));
        // "nan" is ISO 639-3's Min Nan Chinese, not a float: the Hub takes it.
        for ok in ["en", "fra", "nan", "pt-BR", "zh-Hans"] {
            assert!(parse_language(ok).is_ok(), "{ok}");
        }
        for bad in ["0", "english", "EN", "", "e1", "en_US"] {
            assert!(parse_language(bad).is_err(), "{bad}");
        }
        for ok in ["main", "v1.0", "refs/pr/3", "dev-branch"] {
            assert!(parse_revision(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../../main",
            "a b",
            "/main",
            "main/",
            "x.lock",
            ".hidden",
            "a:b",
        ] {
            assert!(parse_revision(bad).is_err(), "{bad}");
        }
        assert!(parse_hub_id("org/data").is_ok());
        assert!(parse_hub_id("../data").is_err());
        assert!(parse_hub_id("/tmp/x").is_err());
    }
}

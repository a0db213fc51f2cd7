//! lm-evaluation-harness answer-extraction filters, as data.
//!
//! A task's `filter_list` holds named pipelines; each step maps the document's list
//! of responses (one per repeat) to a new list, and `take_first` keeps the first. The
//! TOML mirrors lm-eval's YAML:
//!
//! ```toml
//! [[filter_list]]
//! name = "flexible-extract"
//! [[filter_list.filter]]
//! function = "regex"
//! group_select = -1
//! regex_pattern = '(-?[$0-9.,]{2,})|(-?[0-9]+)'
//! [[filter_list.filter]]
//! function = "take_first"
//! ```
//!
//! `regex` runs Python's `re.findall` ([`PyRegex`]), takes the `group_select`-th
//! match (negative counts from the end), and for a pattern with several groups the
//! first non-empty group of that match (the fallback when all are empty); the result
//! is stripped. No match gives the fallback (`"[invalid]"` by default).

use super::pyregex::{Found, PyRegex};
use super::pystr;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// One filter step, tagged by lm-eval's `function` name.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "function", rename_all = "snake_case", deny_unknown_fields)]
pub enum FilterStep {
    /// `regex`: extract with a Python pattern.
    Regex {
        #[serde(rename = "regex_pattern", default = "default_pattern")]
        pattern: PyRegex,
        #[serde(default)]
        group_select: i64,
        #[serde(default = "default_fallback")]
        fallback: String,
    },
    /// `take_first`: keep the first response.
    TakeFirst,
    /// `lowercase`: Python `str.lower`.
    Lowercase,
    /// `uppercase`: Python `str.upper`.
    Uppercase,
    /// `remove_whitespace`: Python `str.strip`.
    RemoveWhitespace,
}

fn default_pattern() -> PyRegex {
    PyRegex::new(r"#### (\-?[0-9\.\,]+)").expect("lm-eval's default pattern compiles")
}

fn default_fallback() -> String {
    "[invalid]".to_string()
}

/// A named pipeline (`filter_list` entry): `name` keys the metrics (`acc,strict-match`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterPipeline {
    pub(crate) name: String,
    pub(crate) filter: Vec<FilterStep>,
}

/// Runs `steps` over one document's responses and returns the filtered answer (the
/// first remaining response; pipelines normally end with `take_first`).
pub fn apply(steps: &[FilterStep], responses: &[String]) -> Result<String> {
    let mut current = responses.to_vec();
    for step in steps {
        current = apply_step(step, current)?;
    }
    current
        .into_iter()
        .next()
        .ok_or_else(|| Error::Invalid("filter pipeline left no response".into()))
}

fn apply_step(step: &FilterStep, responses: Vec<String>) -> Result<Vec<String>> {
    Ok(match step {
        FilterStep::Regex {
            pattern,
            group_select,
            fallback,
        } => responses
            .iter()
            .map(|r| extract(pattern, *group_select, fallback, r))
            .collect::<Result<_>>()?,
        FilterStep::TakeFirst => responses.into_iter().take(1).collect(),
        FilterStep::Lowercase => responses.iter().map(|r| pystr::lower(r)).collect(),
        FilterStep::Uppercase => responses.iter().map(|r| r.to_uppercase()).collect(),
        FilterStep::RemoveWhitespace => responses
            .iter()
            .map(|r| pystr::strip(r).to_string())
            .collect(),
    })
}

/// lm-eval's `RegexFilter` on one response.
pub fn extract(
    pattern: &PyRegex,
    group_select: i64,
    fallback: &str,
    response: &str,
) -> Result<String> {
    let found = pattern.findall(response)?;
    if found.is_empty() {
        return Ok(fallback.to_string());
    }
    let n = found.len() as i64;
    let index = if group_select < 0 {
        n + group_select
    } else {
        group_select
    };
    let Some(item) = usize::try_from(index).ok().and_then(|i| found.get(i)) else {
        return Err(Error::bad_value(
            "group_select",
            format!(
                "regex filter {:?}: group_select {group_select} but only {n} matches",
                pattern.as_str()
            ),
        ));
    };
    let text = match item {
        Found::Text(t) => t.as_str(),
        Found::Groups(groups) => groups
            .iter()
            .find(|g| !g.is_empty())
            .map_or(fallback, String::as_str),
    };
    Ok(pystr::strip(text).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(toml_text: &str) -> Vec<FilterStep> {
        #[derive(Deserialize)]
        struct Doc {
            filter_list: Vec<FilterPipeline>,
        }
        let doc: Doc = toml::from_str(toml_text).unwrap();
        doc.filter_list.into_iter().next().unwrap().filter
    }

    #[test]
    fn gsm8k_strict_and_flexible() {
        let strict = pipeline(
            r#"
            [[filter_list]]
            name = "strict-match"
            filter = [{ function = "regex", regex_pattern = '#### (\-?[0-9\.\,]+)' }, { function = "take_first" }]
            "#,
        );
        let flexible = pipeline(
            r#"
            [[filter_list]]
            name = "flexible-extract"
            filter = [{ function = "regex", group_select = -1, regex_pattern = '(-?[$0-9.,]{2,})|(-?[0-9]+)' }, { function = "take_first" }]
            "#,
        );
        let resp = vec!["3 + 4 = 7 so #### 7\n".to_string(), "ignored".to_string()];
        assert_eq!(apply(&strict, &resp).unwrap(), "7");
        assert_eq!(apply(&flexible, &resp).unwrap(), "7");
        assert_eq!(
            apply(&strict, &["no number".to_string()]).unwrap(),
            "[invalid]"
        );
        assert_eq!(
            apply(&flexible, &["costs $12.50.".to_string()]).unwrap(),
            "$12.50."
        );
    }

    #[test]
    fn bad_pattern_and_unknown_function_are_errors() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Doc {
            filter: Vec<FilterStep>,
        }
        let bad =
            toml::from_str::<Doc>(r#"filter = [{ function = "regex", regex_pattern = "(" }]"#);
        assert!(bad.unwrap_err().to_string().contains("regex"));
        assert!(toml::from_str::<Doc>(r#"filter = [{ function = "majority" }]"#).is_err());
    }

    #[test]
    fn out_of_range_group_select_is_an_error() {
        let re = PyRegex::new("a").unwrap();
        assert!(extract(&re, 3, "x", "aa").is_err());
        assert_eq!(extract(&re, -2, "x", "aa").unwrap(), "a");
    }
}

//! Python `re` patterns, run with Python's matching rules.
//!
//! lm-evaluation-harness writes its answer-extraction and exact-match patterns for
//! Python's `re`. Most of the syntax is shared with Rust, but a few constructs mean
//! something else, so a pattern is translated before [`fancy_regex`] compiles it:
//!
//! * `$` (without MULTILINE) also matches before a final newline: `(?=\n?\z)`;
//!   `\Z` is Rust's `\z`.
//! * `\s` also matches U+001C..U+001F; `\w` is `[\p{L}\p{N}_]` (`str.isalnum` or `_`,
//!   no combining marks), and `\b`/`\B` are rebuilt from that `\w` (`\B` never
//!   matches in an empty string).
//! * `{` that does not start a valid repetition is a literal; `{,n}` means `{0,n}`.
//! * Inside a class, `[`, `&&`, `~~` are literals, and `\b` is a backspace.
//! * Escaped punctuation (`\,`, `\-`, `\ `) is a literal.
//!
//! [`PyRegex::findall`] and [`PyRegex::sub`] iterate like CPython 3.7+: after an empty
//! match the next match must not be empty at the same position, but an empty match
//! right after a non-empty one is allowed. (At a position where the preferred match
//! is empty, CPython can still find a longer alternative there; here the search moves
//! on one character instead. None of the harness's patterns can tell the difference.)
//!
//! ```
//! use ckpt::eval::pyregex::{Found, PyRegex};
//! let re = PyRegex::new(r"#### (\-?[0-9\.\,]+)").unwrap();
//! assert_eq!(re.findall("so #### 1,234").unwrap(), [Found::Text("1,234".into())]);
//! ```

use crate::error::{Error, Result};

/// `[\p{L}\p{N}_]` without brackets: Python's Unicode `\w`.
const WORD: &str = r"\p{L}\p{N}_";
/// Python's `str.isspace` characters beyond Rust's `\s`.
const EXTRA_SPACE: &str = r"\x1C-\x1F";

/// A compiled Python regular expression.
#[derive(Debug, Clone)]
pub struct PyRegex {
    source: String,
    // Shared: compiled programs are large and filters are cloned with task specs.
    re: std::sync::Arc<fancy_regex::Regex>,
    groups: usize,
}

/// One item of `re.findall`: the whole match (no groups), the group (one group), or
/// all groups (several; non-participating groups are empty strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Text(String),
    Groups(Vec<String>),
}

impl PyRegex {
    /// Compiles a Python pattern; the error names the pattern.
    pub fn new(pattern: &str) -> Result<Self> {
        let translated = translate(pattern)?;
        let re = fancy_regex::Regex::new(&translated)
            .map_err(|e| Error::bad_value("regex_pattern", format!("regex {pattern:?}: {e}")))?;
        let groups = re.captures_len() - 1;
        Ok(PyRegex {
            source: pattern.to_string(),
            re: std::sync::Arc::new(re),
            groups,
        })
    }

    /// The Python source of the pattern.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// `re.findall(pattern, text)`.
    pub fn findall(&self, text: &str) -> Result<Vec<Found>> {
        let mut out = Vec::new();
        self.for_each_match(text, |caps| {
            let group = |i: usize| {
                caps.get(i)
                    .map_or(String::new(), |m| m.as_str().to_string())
            };
            out.push(match self.groups {
                0 => Found::Text(group(0)),
                1 => Found::Text(group(1)),
                n => Found::Groups((1..=n).map(group).collect()),
            });
        })?;
        Ok(out)
    }

    /// `re.sub(pattern, repl, text)` with a literal replacement (no group references).
    pub fn sub(&self, text: &str, repl: &str) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        self.for_each_match(text, |caps| {
            let m = caps.get(0).expect("group 0 always participates");
            out.push_str(&text[last..m.start()]);
            out.push_str(repl);
            last = m.end();
        })?;
        out.push_str(&text[last..]);
        Ok(out)
    }

    /// Calls `f` on every match, scanning as CPython's `findall`/`sub` do.
    fn for_each_match<'t>(
        &self,
        text: &'t str,
        mut f: impl FnMut(&fancy_regex::Captures<'t>),
    ) -> Result<()> {
        let mut pos = 0;
        let mut must_advance = false;
        while pos <= text.len() {
            let Some(mut caps) = self.captures_at(text, pos)? else {
                break;
            };
            let mut m = caps.get(0).expect("group 0 always participates");
            if must_advance && m.start() == pos && m.end() == pos {
                let Some(next) = next_char_boundary(text, pos) else {
                    break;
                };
                match self.captures_at(text, next)? {
                    Some(c) => caps = c,
                    None => break,
                }
                m = caps.get(0).expect("group 0 always participates");
            }
            f(&caps);
            must_advance = m.start() == m.end();
            pos = m.end();
        }
        Ok(())
    }

    fn captures_at<'t>(
        &self,
        text: &'t str,
        pos: usize,
    ) -> Result<Option<fancy_regex::Captures<'t>>> {
        self.re
            .captures_from_pos(text, pos)
            .map_err(|e| Error::bad_value("regex_pattern", format!("regex {:?}: {e}", self.source)))
    }
}

/// Deserialises from the Python pattern text, compiling it (the error names it).
impl<'de> serde::Deserialize<'de> for PyRegex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let pattern = String::deserialize(d)?;
        PyRegex::new(&pattern).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for PyRegex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn next_char_boundary(text: &str, pos: usize) -> Option<usize> {
    text[pos..].chars().next().map(|c| pos + c.len_utf8())
}

/// Rewrites a Python pattern into fancy-regex syntax with the same meaning.
fn translate(pattern: &str) -> Result<String> {
    let multiline = leading_flags(pattern).contains('m');
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let Some(&e) = chars.get(i + 1) else {
                return Err(Error::bad_value(
                    "regex_pattern",
                    format!("regex {pattern:?}: trailing backslash"),
                ));
            };
            out.push_str(&translate_escape(e, in_class));
            i += 2;
            continue;
        }
        if in_class {
            match c {
                ']' => {
                    in_class = false;
                    out.push(']');
                }
                '[' | '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                }
                _ => out.push(c),
            }
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                out.push('[');
                if chars.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                // A `]` right after the opening bracket is a literal in Python.
                if chars.get(i + 1) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
            }
            '$' if !multiline => out.push_str(r"(?=\n?\z)"),
            '{' => match repetition(&chars[i..]) {
                Some((text, len)) => {
                    out.push_str(&text);
                    i += len;
                    continue;
                }
                None => out.push_str("\\{"),
            },
            '}' => out.push_str("\\}"),
            _ => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// The letters of a leading inline-flag group such as `(?sm)`.
fn leading_flags(pattern: &str) -> &str {
    pattern
        .strip_prefix("(?")
        .map(|rest| {
            let end = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .unwrap_or("")
}

/// A Python repetition `{m}`, `{m,}`, `{,n}`, `{m,n}` at the start of `chars`, as
/// Rust syntax and its length in characters.
fn repetition(chars: &[char]) -> Option<(String, usize)> {
    let close = chars.iter().position(|&c| c == '}')?;
    let body: String = chars[1..close].iter().collect();
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let text = match body.split_once(',') {
        None if !body.is_empty() && digits(&body) => format!("{{{body}}}"),
        Some((lo, hi)) if digits(lo) && digits(hi) && !(lo.is_empty() && hi.is_empty()) => {
            let lo = if lo.is_empty() { "0" } else { lo };
            format!("{{{lo},{hi}}}")
        }
        _ => return None,
    };
    Some((text, close + 1))
}

fn translate_escape(e: char, in_class: bool) -> String {
    let boundary = format!("(?:(?<=[{WORD}])(?![{WORD}])|(?<![{WORD}])(?=[{WORD}]))");
    // Python's `\B` never matches in an empty string.
    let non_boundary = format!(
        r"(?:(?<=[{WORD}])(?=[{WORD}])|(?<![{WORD}])(?![{WORD}])(?:(?<=[\s\S])|(?=[\s\S])))"
    );
    match (e, in_class) {
        ('s', false) => format!(r"[\s{EXTRA_SPACE}]"),
        ('s', true) => format!(r"\s{EXTRA_SPACE}"),
        ('S', _) => format!(r"[^\s{EXTRA_SPACE}]"),
        ('w', false) => format!("[{WORD}]"),
        ('w', true) => WORD.to_string(),
        ('W', _) => format!("[^{WORD}]"),
        ('b', false) => boundary,
        ('b', true) => r"\x08".to_string(),
        ('B', false) => non_boundary,
        ('Z', false) => r"\z".to_string(),
        _ if e.is_ascii_alphanumeric() => format!("\\{e}"),
        _ if !e.is_ascii() || e == ' ' => e.to_string(),
        _ if r"\.+*?()|[]{}^$#&-~".contains(e) => format!("\\{e}"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(found: Vec<Found>) -> Vec<String> {
        found
            .into_iter()
            .map(|f| match f {
                Found::Text(t) => t,
                Found::Groups(g) => g.join("|"),
            })
            .collect()
    }

    #[test]
    fn empty_matches_follow_python() {
        let re = PyRegex::new(r"\d*").unwrap();
        // Python 3.7+: ['12', '', '']
        assert_eq!(texts(re.findall("12a").unwrap()), ["12", "", ""]);
        assert_eq!(
            PyRegex::new("x*").unwrap().sub("abxd", "-").unwrap(),
            "-a-b--d-"
        );
    }

    #[test]
    fn dollar_matches_before_final_newline() {
        let re = PyRegex::new(r"\.$").unwrap();
        assert_eq!(re.sub("12.\n", "").unwrap(), "12\n");
        assert_eq!(re.sub("1.2.", "").unwrap(), "1.2");
    }

    #[test]
    fn groups_and_lookaround() {
        let re = PyRegex::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)").unwrap();
        assert_eq!(
            texts(re.findall("a 7 and $1,000.").unwrap()),
            ["|7", "$1,000.|"]
        );
        let bbh = PyRegex::new(r"(?<=the answer is )(.*)(?=.)").unwrap();
        assert_eq!(
            texts(bbh.findall("So the answer is (B).").unwrap()),
            ["(B)"]
        );
    }

    #[test]
    fn python_literals() {
        assert_eq!(PyRegex::new("a{").unwrap().sub("a{b", "").unwrap(), "b");
        assert_eq!(
            PyRegex::new("x{,2}").unwrap().sub("xxx", "-").unwrap(),
            "---"
        );
        assert_eq!(PyRegex::new("[]a]").unwrap().sub("]ab", "").unwrap(), "b");
        assert_eq!(
            PyRegex::new(r"\w+")
                .unwrap()
                .sub("é\u{301}x_1", "-")
                .unwrap(),
            "-\u{301}-"
        );
        assert!(PyRegex::new("(").is_err());
    }
}

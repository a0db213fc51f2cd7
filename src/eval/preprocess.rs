//! Named document preprocessors: the few lm-evaluation-harness tasks whose documents
//! are transformed in Python code rather than in the prompt template.
//!
//! * `hellaswag`: `process_docs` adds `query` (`activity_label: ctx_a Ctx_b`, where
//!   `ctx_b` gets Python's `str.capitalize`), `choices` (the cleaned endings) and
//!   `gold` (`int(label)`); cleaning strips, turns `" [title]"` into `". "`, drops
//!   `[...]` brackets and halves double spaces.
//! * `winogrande`: partial scoring. The sentence is cut at its first `_`: each option
//!   completes the left part into one context, and the shared continuation is the
//!   stripped right part. Adds `contexts`, `continuation` and `gold` (answer `"1"` ->
//!   0, `"2"` -> 1). See [`WinograndeParts`] for how lm-eval builds the requests.
//! * `drop`: `process_docs` adds `id` and `answers` ([`super::drop::process_doc`]).
//!
//! Fields of the input document are kept, as `datasets.map` keeps them.
//!
//! ```
//! use ckpt::eval::preprocess::preprocess;
//! let doc = serde_json::json!({"activity_label": "Cooking", "ctx_a": "A man stirs.",
//!     "ctx_b": "then he", "endings": ["adds salt [title] Done"], "label": "0"});
//! let out = preprocess("hellaswag", &doc).unwrap();
//! assert_eq!(out["query"], "Cooking: A man stirs. Then he");
//! assert_eq!(out["choices"][0], "adds salt. Done");
//! ```

use super::pyregex::PyRegex;
use super::pystr;
use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::sync::LazyLock;

/// The names [`preprocess`] knows.
pub const PREPROCESSORS: &[&str] = &["hellaswag", "winogrande", "drop"];

/// Applies the preprocessor `name` to one document.
pub fn preprocess(name: &str, doc: &Value) -> Result<Value> {
    match name {
        "hellaswag" => hellaswag(doc),
        "winogrande" => {
            let parts = winogrande(doc)?;
            let mut out = object(doc, name)?;
            out.insert("contexts".into(), json!(parts.contexts));
            out.insert("continuation".into(), json!(parts.continuation));
            out.insert("gold".into(), json!(parts.gold));
            Ok(Value::Object(out))
        }
        "drop" => super::drop::process_doc(doc),
        other => Err(Error::bad_value(
            "process_docs",
            format!(
                "unknown preprocessor `{other}` (known: {})",
                PREPROCESSORS.join(", ")
            ),
        )),
    }
}

fn object(doc: &Value, task: &str) -> Result<Map<String, Value>> {
    doc.as_object()
        .cloned()
        .ok_or_else(|| Error::bad_value("document", format!("{task} document is not an object")))
}

fn str_field<'a>(doc: &'a Value, name: &str, task: &str) -> Result<&'a str> {
    match doc.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Error::bad_value(
            name,
            format!("{task} document: field `{name}` is not a string: {other}"),
        )),
        None => Err(Error::bad_value(
            name,
            format!("{task} document: missing field `{name}`"),
        )),
    }
}

static BRACKETS: LazyLock<PyRegex> =
    LazyLock::new(|| PyRegex::new(r"\[.*?\]").expect("static pattern"));

/// HellaSwag's text cleaning (lm-eval `hellaswag/utils.py: preprocess`).
pub fn hellaswag_clean(text: &str) -> Result<String> {
    let text = pystr::strip(text).replace(" [title]", ". ");
    let text = BRACKETS.sub(&text, "")?;
    Ok(text.replace("  ", " "))
}

fn hellaswag(doc: &Value) -> Result<Value> {
    const TASK: &str = "hellaswag";
    let ctx = format!(
        "{} {}",
        str_field(doc, "ctx_a", TASK)?,
        pystr::capitalize(str_field(doc, "ctx_b", TASK)?)
    );
    let query = hellaswag_clean(&format!(
        "{}: {ctx}",
        str_field(doc, "activity_label", TASK)?
    ))?;
    let endings = doc
        .get("endings")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Error::bad_value(
                "endings",
                "hellaswag document: `endings` is missing or not a list",
            )
        })?;
    let choices = endings
        .iter()
        .map(|e| match e {
            Value::String(s) => hellaswag_clean(s),
            other => Err(Error::bad_value(
                "endings",
                format!("hellaswag document: ending is not a string: {other}"),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let gold = python_int(doc.get("label"), "hellaswag document: `label`")?;
    let mut out = object(doc, TASK)?;
    out.insert("query".into(), json!(query));
    out.insert("choices".into(), json!(choices));
    out.insert("gold".into(), json!(gold));
    Ok(Value::Object(out))
}

/// Python `int(x)` of a JSON string or integer.
fn python_int(v: Option<&Value>, what: &str) -> Result<i64> {
    let parsed = match v {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => {
            let t = pystr::strip(s).replace('_', "");
            t.parse::<i64>().ok()
        }
        _ => None,
    };
    parsed.ok_or_else(|| {
        Error::bad_value(
            what,
            format!("{what} is not an integer: {}", v.unwrap_or(&Value::Null)),
        )
    })
}

/// A WinoGrande document split for partial scoring.
///
/// lm-eval scores `len(contexts)` requests `(prompt_i, target_delimiter +
/// continuation)`, where `prompt_i` = description + few-shot examples + `contexts[i]`
/// (no delimiter after it): the context varies, the continuation is shared, and
/// `acc` is the argmax of the continuation's log-likelihoods. A few-shot example is
/// `contexts[gold] + target_delimiter + continuation + fewshot_delimiter`. `acc_norm`,
/// if asked for, divides by the length of `contexts[i]` (lm-eval's "choices").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WinograndeParts {
    /// The sentence up to its first `_`, completed by each option.
    pub contexts: Vec<String>,
    /// The sentence after the first `_`, stripped.
    pub continuation: String,
    /// The index of the right option.
    pub gold: usize,
}

/// lm-eval's `preprocess_winogrande.py` (`doc_to_choice`, `doc_to_target`, `doc_to_text`).
pub fn winogrande(doc: &Value) -> Result<WinograndeParts> {
    const TASK: &str = "winogrande";
    let sentence = str_field(doc, "sentence", TASK)?;
    let blank = sentence.find('_').ok_or_else(|| {
        Error::bad_value(
            "sentence",
            "winogrande document: `sentence` has no `_` blank",
        )
    })?;
    let (left, right) = (&sentence[..blank], &sentence[blank + 1..]);
    let contexts = ["option1", "option2"]
        .iter()
        .map(|k| Ok(format!("{left}{}", str_field(doc, k, TASK)?)))
        .collect::<Result<Vec<_>>>()?;
    let gold = match str_field(doc, "answer", TASK)? {
        "1" => 0,
        "2" => 1,
        other => {
            return Err(Error::bad_value(
                "answer",
                format!("winogrande document: `answer` is {other:?}, expected \"1\" or \"2\""),
            ))
        }
    };
    Ok(WinograndeParts {
        contexts,
        continuation: pystr::strip(right).to_string(),
        gold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellaswag_cleaning() {
        assert_eq!(
            hellaswag_clean("  a [title] b [x] c  d ").unwrap(),
            "a. b c d"
        );
        assert_eq!(hellaswag_clean("[a]b[c]").unwrap(), "b");
        assert_eq!(hellaswag_clean("x   y").unwrap(), "x  y");
    }

    #[test]
    fn hellaswag_errors_name_the_field() {
        let err = preprocess("hellaswag", &json!({"ctx_a": "a"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ctx_b"), "{err}");
        let err = preprocess(
            "hellaswag",
            &json!({"ctx_a": "a", "ctx_b": "b", "activity_label": "l", "endings": [], "label": ""}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("label"), "{err}");
    }

    #[test]
    fn winogrande_parts() {
        let doc = json!({"sentence": "Sam gave Kim a book because _ was kind. Yes_no",
                         "option1": "Sam", "option2": "Kim", "answer": "2"});
        let p = winogrande(&doc).unwrap();
        assert_eq!(
            p.contexts,
            [
                "Sam gave Kim a book because Sam",
                "Sam gave Kim a book because Kim"
            ]
        );
        assert_eq!(p.continuation, "was kind. Yes_no");
        assert_eq!(p.gold, 1);
        assert!(winogrande(
            &json!({"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"})
        )
        .is_err());
        assert!(preprocess("nope", &doc)
            .unwrap_err()
            .to_string()
            .contains("hellaswag"));
    }
}

//! Jinja prompt fields rendered the way lm-evaluation-harness renders them.
//!
//! lm-eval renders `doc_to_text` / `doc_to_target` / `doc_to_choice` with jinja2
//! (strict undefined, trailing newline kept) and then reinterprets the string: a field
//! that names a column is that column, a target made of digits is an index, a choice
//! list is `ast.literal_eval`'d. Here a field that is a single `{{ expression }}` is
//! evaluated to a value directly, which gives the same list or index without the
//! round trip through Python's repr. Python's string methods (`.strip()`,
//! `.split()`) come from minijinja-contrib's pycompat, plus `list.index`, which lm-eval's
//! ARC template uses.

use crate::error::{Error, Result};
use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, ErrorKind, State, UndefinedBehavior};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// A prompt field's value: text, a choice index, or a list (choices, several targets).
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Text(String),
    Index(usize),
    List(Vec<Json>),
}

impl Field {
    /// The text, or the `Python str()` of an index.
    pub fn as_text(&self) -> String {
        match self {
            Field::Text(s) => s.clone(),
            Field::Index(i) => i.to_string(),
            Field::List(v) => python_repr_json(&Json::Array(v.clone())),
        }
    }
}

/// Renders task fields against docs; errors name the spec file and the field.
pub struct Templates {
    env: Environment<'static>,
    origin: PathBuf,
}

static SINGLE_EXPRESSION: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^\s*\{\{(.*)\}\}\s*$").expect("valid regex"));

impl Templates {
    /// An environment for the spec read from `origin` (used in error messages).
    pub fn new(origin: &Path) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("default delimiters are valid");
        env.set_syntax(syntax);
        env.set_unknown_method_callback(python_methods);
        env.set_formatter(python_formatter);
        env.add_filter("regex_replace", regex_replace);
        Self {
            env,
            origin: origin.to_path_buf(),
        }
    }

    /// Makes `name` visible to every template, below the doc's own columns (which win).
    /// The task's `dataset_name` is one: MMLU's description names the subject with it.
    pub fn set_global(&mut self, name: &'static str, value: &str) {
        self.env.add_global(name, Value::from(value));
    }

    /// `template` rendered against `doc` (lm-eval's `apply_template`).
    pub fn render(&self, field: &str, template: &str, doc: &Json) -> Result<String> {
        self.env
            .render_str(template, Value::from(minijinja::value::Serde(doc)))
            .map_err(|e| self.error(field, template, &e, doc))
    }

    /// A field as lm-eval's `doc_to_text` / `doc_to_target` reads it: a column name,
    /// else the rendered template, digits read as an index when the task has choices.
    pub fn field(
        &self,
        field: &str,
        template: &str,
        doc: &Json,
        has_choices: bool,
    ) -> Result<Field> {
        if let Some(v) = doc.get(template) {
            return Ok(json_field(v));
        }
        if let Some(expr) = single_expression(template) {
            let value = self.eval(field, template, expr, doc)?;
            let as_json: Json = serde_json::to_value(&value).unwrap_or(Json::Null);
            return Ok(match as_json {
                Json::Array(items) => Field::List(items),
                Json::String(s) => text_field(s, has_choices),
                Json::Number(n) if n.as_u64().is_some() && has_choices => {
                    Field::Index(n.as_u64().unwrap_or(0) as usize)
                }
                other => text_field(python_repr_json(&other), has_choices),
            });
        }
        let text = self.render(field, template, doc)?;
        Ok(text_field(text, has_choices))
    }

    /// `doc_to_choice`: a list column, or a single expression yielding a list.
    pub fn choices(&self, template: &str, doc: &Json) -> Result<Vec<String>> {
        let list = match self.field("doc_to_choice", template, doc, false)? {
            Field::List(items) => items,
            other => {
                return Err(Error::bad_file(
                    &self.origin,
                    format!("doc_to_choice: expected a list, got {:?}", other.as_text()),
                ))
            }
        };
        Ok(list
            .iter()
            .map(|v| match v {
                Json::String(s) => s.clone(),
                other => python_repr_json(other),
            })
            .collect())
    }

    fn eval(&self, field: &str, template: &str, expr: &str, doc: &Json) -> Result<Value> {
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| self.error(field, template, &e, doc))?;
        compiled
            .eval(Value::from(minijinja::value::Serde(doc)))
            .map_err(|e| self.error(field, template, &e, doc))
    }

    fn error(&self, field: &str, template: &str, e: &minijinja::Error, doc: &Json) -> Error {
        let line = e.line().map(|l| format!(" line {l}")).unwrap_or_default();
        let missing = self.missing_columns(template, doc);
        let detail = match (e.kind(), missing.is_empty()) {
            (_, false) => format!("{e} (column {} missing from the data)", missing.join(", ")),
            (ErrorKind::UndefinedError, true) => {
                format!("{e} (a column the template needs is missing from the data)")
            }
            _ => e.to_string(),
        };
        Error::bad_file(
            &self.origin,
            format!("{field}{line}: {detail} in template {template:?}"),
        )
    }
}

impl Templates {
    /// The variables `template` reads that are neither columns of `doc` nor globals.
    fn missing_columns(&self, template: &str, doc: &Json) -> Vec<String> {
        let Ok(t) = self.env.template_from_str(template) else {
            return vec![];
        };
        let mut names: Vec<String> = t
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| doc.get(v).is_none() && self.env.globals().all(|(g, _)| g != v.as_str()))
            .collect();
        names.sort();
        names.into_iter().map(|n| format!("`{n}`")).collect()
    }
}

fn single_expression(template: &str) -> Option<&str> {
    let caps = SINGLE_EXPRESSION.captures(template)?;
    let inner = caps.get(1)?.as_str();
    // `{{ a }} and {{ b }}` is two expressions, not one.
    (!inner.contains("}}") && !inner.contains("{{")).then_some(inner)
}

fn text_field(s: String, has_choices: bool) -> Field {
    if has_choices && !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        if let Ok(i) = s.parse() {
            return Field::Index(i);
        }
    }
    Field::Text(s)
}

fn json_field(v: &Json) -> Field {
    match v {
        Json::String(s) => Field::Text(s.clone()),
        Json::Number(n) if n.as_u64().is_some() => Field::Index(n.as_u64().unwrap_or(0) as usize),
        Json::Array(items) => Field::List(items.clone()),
        other => Field::Text(python_repr_json(other)),
    }
}

/// `list.index(x)` (lm-eval's ARC target), then Python's string methods.
fn python_methods(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    if method == "index" && value.kind() == ValueKind::Seq {
        let [needle] = args else {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "list.index takes one argument",
            ));
        };
        for (i, item) in value.try_iter()?.enumerate() {
            if &item == needle {
                return Ok(Value::from(i));
            }
        }
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("{needle} is not in list"),
        ));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Values print as Python prints them (`None`, `True`, `['a', 'b']`), as in lm-eval.
fn python_formatter(
    out: &mut minijinja::Output,
    state: &mut State,
    value: &Value,
) -> std::result::Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::None => out.write_str("None")?,
        ValueKind::Bool => out.write_str(if value.is_true() { "True" } else { "False" })?,
        ValueKind::Seq | ValueKind::Map => {
            let json = serde_json::to_value(value).unwrap_or(Json::Null);
            out.write_str(&python_repr_json(&json))?
        }
        _ => minijinja::escape_formatter(out, state, value)?,
    }
    Ok(())
}

/// jinja2's `regex_replace` filter as lm-eval registers it.
fn regex_replace(
    s: String,
    pattern: String,
    replacement: String,
) -> std::result::Result<String, minijinja::Error> {
    let re = regex::Regex::new(&pattern)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(re.replace_all(&s, replacement.as_str()).into_owned())
}

/// Python's `repr` of a JSON value (strings in single quotes unless they hold one).
pub fn python_repr_json(v: &Json) -> String {
    match v {
        Json::Null => "None".into(),
        Json::Bool(b) => if *b { "True" } else { "False" }.into(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => python_repr_str(s),
        Json::Array(items) => {
            let inner: Vec<String> = items.iter().map(python_repr_json).collect();
            format!("[{}]", inner.join(", "))
        }
        Json::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", python_repr_str(k), python_repr_json(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

fn python_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t() -> Templates {
        Templates::new(Path::new("task.toml"))
    }

    #[test]
    fn arc_target_is_an_index_and_choices_a_list() {
        let doc = json!({"question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"});
        let target = t()
            .field(
                "doc_to_target",
                "{{choices.label.index(answerKey)}}",
                &doc,
                true,
            )
            .unwrap();
        assert_eq!(target, Field::Index(1));
        assert_eq!(
            t().choices("{{choices.text}}", &doc).unwrap(),
            vec!["a", "b"]
        );
        let text = t()
            .render("doc_to_text", "Question: {{question}}\nAnswer:", &doc)
            .unwrap();
        assert_eq!(text, "Question: Q?\nAnswer:");
    }

    #[test]
    fn python_string_methods_and_columns() {
        let doc = json!({"question": "  padded  ", "label": "2"});
        let text = t()
            .render("doc_to_text", "{{question.strip()}}|", &doc)
            .unwrap();
        assert_eq!(text, "padded|");
        assert_eq!(
            t().field("doc_to_target", "label", &doc, true).unwrap(),
            Field::Text("2".into())
        );
        assert_eq!(
            t().field("doc_to_target", "{{label}}", &doc, true).unwrap(),
            Field::Index(2)
        );
    }

    #[test]
    fn missing_column_names_file_and_field() {
        let err = t()
            .render("doc_to_text", "{{nope}}", &json!({"a": 1}))
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("task.toml") && msg.contains("doc_to_text"),
            "{msg}"
        );
        assert!(msg.contains("column `nope` missing"), "{msg}");
        let doc = json!({"choices": {"label": ["A"]}});
        let err = t()
            .field(
                "doc_to_target",
                "{{choices.label.index(answerKey)}}",
                &doc,
                true,
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("column `answerKey` missing"),
            "{err}"
        );
    }

    #[test]
    fn values_print_like_python() {
        let doc = json!({"b": true, "n": null, "l": ["x", "it's"]});
        let text = t().render("f", "{{b}} {{n}} {{l}}", &doc).unwrap();
        assert_eq!(text, "True None ['x', \"it's\"]");
    }
}

//! Chat templates rendered as transformers 5's `apply_chat_template` renders them, on
//! minijinja:
//! - the environment: `trim_blocks`, `lstrip_blocks`, loop controls (`break`,
//!   `continue`), Python string/dict methods (`.strip()`, `.get()`...);
//! - the globals: `raise_exception(msg)`, `strftime_now(format)`;
//! - `tojson` as Python's `json.dumps(x, ensure_ascii=False)` with `indent`,
//!   `separators` and `sort_keys`;
//! - the variables: `messages` (content a string or a list of parts, every field of a
//!   message kept), the special tokens' texts (`bos_token`, `eos_token`...),
//!   `add_generation_prompt`, and `tools`/`documents` as `none`;
//! - `{% generation %}...{% endgeneration %}` blocks, whose output is the assistant
//!   text `return_assistant_tokens_mask` marks: rendered here as a filter block that
//!   brackets its output with two private-use markers, found and removed afterwards.

use crate::error::{Error, Result};
use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Opens a `{% generation %}` block's output (removed from the rendered text).
const GENERATION_START: char = '\u{E000}';
/// Closes it.
const GENERATION_END: char = '\u{E001}';

/// One message of a conversation (the Tulu / OpenAI form with text content).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub(crate) role: String,
    pub(crate) content: String,
}

/// A rendered conversation and the byte spans `{% generation %}` blocks produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub generation_spans: Vec<Range<usize>>,
}

/// A compiled chat template with the special-token variables it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    variables: Vec<(String, String)>,
    /// Whether the template has `{% generation %}` blocks.
    pub(crate) has_generation_blocks: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("variables", &self.variables)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `bos` and `eos` are the texts of `bos_token` / `eos_token`
    /// (empty: undefined).
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        let vars = [("bos_token", bos), ("eos_token", eos)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()));
        Self::with_variables(source, vars.collect())
    }

    /// Compiles `source` with these special-token variables (`("bos_token", "<s>")`...).
    pub fn with_variables(source: &str, variables: Vec<(String, String)>) -> Result<Self> {
        let (source, has_generation_blocks) = generation_as_filter(source);
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(template_error)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", strftime_now);
        env.set_formatter(python_formatter);
        env.add_filter("tojson", tojson);
        env.add_filter("__generation", |body: String| {
            format!("{GENERATION_START}{body}{GENERATION_END}")
        });
        env.add_template_owned("chat", source)
            .map_err(template_error)?;
        Ok(Self {
            env,
            variables,
            has_generation_blocks,
        })
    }

    /// The text of `messages`, followed by the assistant's header when
    /// `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        Ok(self.render_spans(messages, add_generation_prompt)?.text)
    }

    /// As [`render`](Self::render), with the spans of `{% generation %}` output.
    pub(crate) fn render_spans(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Rendered> {
        let messages = Value::from(minijinja::value::Serde(messages));
        self.render_values(
            &messages,
            add_generation_prompt,
            vec![],
            &serde_json::Map::new(),
        )
    }

    /// Renders messages given as JSON (content may be a list of parts; other fields
    /// such as `tool_calls` are passed through).
    pub fn render_json(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
    ) -> Result<Rendered> {
        self.render_with(
            messages,
            add_generation_prompt,
            None,
            &serde_json::Map::new(),
        )
    }

    /// As transformers' `apply_chat_template(messages, tools=..., add_generation_prompt=...,
    /// **kwargs)`: messages lose their `null` fields and carry `reasoning_content` /
    /// `thinking` as transformers copies them; `kwargs` override the special tokens.
    pub fn render_with(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Rendered> {
        let messages = as_transformers_passes(messages);
        let ctx = vec![("tools".into(), Value::from(minijinja::value::Serde(tools)))];
        self.render_values(
            &Value::from(minijinja::value::Serde(&messages)),
            add_generation_prompt,
            ctx,
            kwargs,
        )
    }

    fn render_values(
        &self,
        messages: &Value,
        add_generation_prompt: bool,
        mut extra: Vec<(String, Value)>,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Rendered> {
        let mut ctx: Vec<(String, Value)> = self
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        ctx.push(("messages".into(), messages.clone()));
        ctx.push(("tools".into(), Value::from(())));
        ctx.push(("documents".into(), Value::from(())));
        ctx.push((
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        ));
        ctx.append(&mut extra);
        for (k, v) in kwargs {
            ctx.push((k.clone(), Value::from(minijinja::value::Serde(v))));
        }
        // Later entries win: the caller's `tools` and kwargs over the defaults.
        let ctx: std::collections::BTreeMap<String, Value> = ctx.into_iter().collect();
        let ctx = Value::from(ctx);
        let raw = self
            .env
            .get_template("chat")
            .and_then(|t| t.render(ctx))
            .map_err(template_error)?;
        Ok(take_generation_spans(&raw))
    }
}

/// transformers' `return_assistant_tokens_mask`: a token (its byte `offsets` in the
/// rendered text) is an assistant token when it overlaps a generation span, so a token
/// straddling a span's edge counts and one that only touches it does not.
pub fn assistant_mask(offsets: &[(usize, usize)], spans: &[Range<usize>]) -> Vec<bool> {
    offsets
        .iter()
        .map(|&(start, end)| spans.iter().any(|s| start < s.end && end > s.start))
        .collect()
}

/// The messages as transformers hands them to the template: fields whose value is
/// `null` removed, and a message's reasoning (`reasoning_content`, `thinking` or
/// `reasoning`, the first present) under both `thinking` and `reasoning_content`.
fn as_transformers_passes(messages: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    let Some(list) = messages.as_array() else {
        return messages.clone();
    };
    let fix = |m: &J| -> J {
        let Some(obj) = m.as_object() else {
            return m.clone();
        };
        let kept: serde_json::Map<String, J> = obj
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let reasoning = ["reasoning_content", "thinking", "reasoning"]
            .iter()
            .find_map(|k| kept.get(*k).cloned());
        let Some(r) = reasoning else {
            return J::Object(kept);
        };
        let mut out = serde_json::Map::new();
        out.insert("thinking".into(), r.clone());
        for (k, v) in kept {
            out.insert(k, v);
        }
        out.insert("reasoning_content".into(), r);
        J::Object(out)
    };
    J::Array(list.iter().map(fix).collect())
}

/// `{%- generation -%}` -> `{%- filter __generation -%}` (whitespace control kept), and
/// `endgeneration` -> `endfilter`; also says whether there was any.
fn generation_as_filter(source: &str) -> (String, bool) {
    let open = regex::Regex::new(r"\{%([-+]?)\s*generation\s*([-+]?)%\}").expect("valid regex");
    let close = regex::Regex::new(r"\{%([-+]?)\s*endgeneration\s*([-+]?)%\}").expect("valid regex");
    let found = open.is_match(source);
    let s = open.replace_all(source, "{%$1 filter __generation $2%}");
    let s = close.replace_all(&s, "{%$1 endfilter $2%}");
    (s.into_owned(), found)
}

/// The text without the generation markers, and the byte spans they bracketed.
fn take_generation_spans(raw: &str) -> Rendered {
    let mut text = String::with_capacity(raw.len());
    let mut spans = Vec::new();
    let mut open: Option<usize> = None;
    for c in raw.chars() {
        match c {
            GENERATION_START => open = Some(text.len()),
            GENERATION_END => {
                if let Some(start) = open.take() {
                    spans.push(start..text.len());
                }
            }
            c => text.push(c),
        }
    }
    Rendered {
        text,
        generation_spans: spans,
    }
}

fn template_error(e: minijinja::Error) -> Error {
    // The template's own `raise_exception` message, as transformers shows it.
    if e.kind() == ErrorKind::InvalidOperation {
        if let Some(detail) = e.detail() {
            return Error::bad_value("chat_template", format!("chat template raised: {detail}"));
        }
    }
    let mut msg = format!("chat template: {e}");
    if let Some(line) = e.line() {
        if !msg.contains("line") {
            msg.push_str(&format!(" (line {line})"));
        }
    }
    Error::bad_value("chat_template", msg)
}

/// `{{ x }}` as Jinja2 prints Python values: `None`, `True`, `False`.
fn python_formatter(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &Value,
) -> std::result::Result<(), minijinja::Error> {
    let text = match value.kind() {
        minijinja::value::ValueKind::None => "None",
        minijinja::value::ValueKind::Bool if value.is_true() => "True",
        minijinja::value::ValueKind::Bool => "False",
        _ => return minijinja::escape_formatter(out, state, value),
    };
    out.write_str(text)
        .map_err(|e| minijinja::Error::new(ErrorKind::WriteFailure, e.to_string()))
}

/// `strftime_now(format)`: the local time now, formatted by the C library's strftime
/// (Python's `datetime.now().strftime` uses the same directives).
fn strftime_now(format: String) -> std::result::Result<String, minijinja::Error> {
    let bad = || minijinja::Error::new(ErrorKind::InvalidOperation, "strftime_now: bad format");
    let c_format = std::ffi::CString::new(format).map_err(|_| bad())?;
    let mut buf = vec![0u8; 256];
    // SAFETY: `tm` is filled by localtime_r from a valid time_t; strftime writes at most
    // `buf.len()` bytes into `buf` and returns how many it wrote.
    let written = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return Err(bad());
        }
        libc::strftime(buf.as_mut_ptr().cast(), buf.len(), c_format.as_ptr(), &tm)
    };
    buf.truncate(written);
    String::from_utf8(buf).map_err(|_| bad())
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=..., separators=...,
/// sort_keys=...)`.
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_string(),
            None => " ".repeat(usize::try_from(v).unwrap_or(0)),
        }),
    };
    let (item, key) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let style = PyJson {
        indent,
        item,
        key,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    style.write(&json, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

/// Python's `json.dumps` layout.
struct PyJson {
    indent: Option<String>,
    item: String,
    key: String,
    sort_keys: bool,
}

impl PyJson {
    fn write(&self, v: &serde_json::Value, depth: usize, out: &mut String) {
        use serde_json::Value as J;
        match v {
            J::Array(items) if !items.is_empty() => {
                out.push('[');
                for (i, x) in items.iter().enumerate() {
                    self.separate(i, depth + 1, out);
                    self.write(x, depth + 1, out);
                }
                self.close(depth, out);
                out.push(']');
            }
            J::Object(map) if !map.is_empty() => {
                let mut entries: Vec<_> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, x)) in entries.into_iter().enumerate() {
                    self.separate(i, depth + 1, out);
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push_str(&self.key);
                    self.write(x, depth + 1, out);
                }
                self.close(depth, out);
                out.push('}');
            }
            J::Number(n) if n.is_f64() => out.push_str(&python_float(n.as_f64().unwrap_or(0.0))),
            other => out.push_str(&other.to_string()),
        }
    }

    fn separate(&self, i: usize, depth: usize, out: &mut String) {
        if i > 0 {
            out.push_str(&self.item);
        }
        if let Some(ind) = &self.indent {
            out.push('\n');
            out.push_str(&ind.repeat(depth));
        }
    }

    fn close(&self, depth: usize, out: &mut String) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            out.push_str(&ind.repeat(depth));
        }
    }
}

/// Python's `repr(float)` for the values JSON can hold.
fn python_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        let s = format!("{x:?}");
        s.replace("e", "e+").replace("e+-", "e-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(turns: &[(&str, &str)]) -> Vec<Message> {
        turns
            .iter()
            .map(|(r, c)| Message {
                role: r.to_string(),
                content: c.to_string(),
            })
            .collect()
    }

    #[test]
    fn tojson_is_pythons_json_dumps() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ {'b': 1.5, 'a': [1, 'é<']} | tojson(sort_keys=true) }}",
            "",
            "",
        )
        .unwrap();
        let out = t.render(&msgs(&[("user", "a\"b\n")]), false).unwrap();
        assert_eq!(
            out,
            "{\"role\": \"user\", \"content\": \"a\\\"b\\n\"}|{\n  \"role\": \"user\",\n  \"content\": \"a\\\"b\\n\"\n}|{\"a\": [1, \"é<\"], \"b\": 1.5}"
        );
    }

    #[test]
    fn generation_blocks_give_spans_and_keep_whitespace_control() {
        let src = "{% for m in messages %}{{ m.role }}:\n{%- if m.role == 'assistant' %}\n{% generation %}{{ m.content }}!{% endgeneration %}\n{%- else %}{{ m.content }}{% endif %}\n{% endfor %}";
        let plain = src
            .replace("{% generation %}", "")
            .replace("{% endgeneration %}", "");
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert!(t.has_generation_blocks);
        let conv = msgs(&[("user", "hi"), ("assistant", "yo")]);
        let r = t.render_spans(&conv, false).unwrap();
        let expected = ChatTemplate::new(&plain, "", "")
            .unwrap()
            .render(&conv, false)
            .unwrap();
        assert_eq!(r.text, expected);
        assert_eq!(r.generation_spans.len(), 1);
        assert_eq!(&r.text[r.generation_spans[0].clone()], "yo!");
    }

    #[test]
    fn raise_exception_shows_its_message_and_loop_controls_work() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}{% if m.role == 'stop' %}{% break %}{% endif %}{{ m.content.strip() }}{% endfor %}{% if messages|length > 3 %}{{ raise_exception('too many: ' ~ messages|length) }}{% endif %}",
            "",
            "",
        )
        .unwrap();
        let out = t
            .render(
                &msgs(&[("u", " a "), ("skip", "b"), ("u", "c"), ("stop", "d")]),
                false,
            )
            .unwrap_err()
            .to_string();
        assert_eq!(out, "chat template raised: too many: 4");
        let out = t
            .render(&msgs(&[("u", " a "), ("skip", "b"), ("stop", "d")]), false)
            .unwrap();
        assert_eq!(out, "a");
        let year = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
        let y: u32 = year.render(&[], false).unwrap().parse().unwrap();
        assert!(y >= 2024);
    }
}

//! The report as one self-contained HTML file (`report.html.j2`, minijinja): tables,
//! findings, and every figure embedded as a base64 `data:` URI, with inline CSS, so it
//! opens offline and travels as a single file.

use super::table::Cell;
use super::Report;
use crate::error::{Error, Result};
use base64::Engine;
use minijinja::{context, Environment, Value};
use std::collections::HashMap;

const TEMPLATE: &str = include_str!("report.html.j2");

/// Renders the report; `images` maps each figure's file name to its PNG bytes (a figure
/// without bytes is left out).
pub(crate) fn to_html(report: &Report, images: &HashMap<String, Vec<u8>>) -> Result<String> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("report.html", TEMPLATE)
        .map_err(|e| Error::Invalid(format!("report template: {e}")))?;
    let findings: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let holds = match f.holds {
                Some(true) => "yes",
                Some(false) => "no",
                None => "none",
            };
            context! { question => &f.question, text => &f.text, holds => holds }
        })
        .collect();
    let sections: Vec<Value> = report
        .sections
        .iter()
        .map(|s| {
            let tables: Vec<Value> = s
                .tables
                .iter()
                .map(|t| {
                    let rows: Vec<Vec<Value>> = t
                        .rows
                        .iter()
                        .map(|r| {
                            r.iter()
                                .map(|c| {
                                    let text = matches!(c, Cell::Text { .. } | Cell::Link { .. });
                                    context! { shown => c.display(), text => text, url => c.url().map(href) }
                                })
                                .collect()
                        })
                        .collect();
                    context! { id => &t.id, title => &t.title, notes => &t.notes,
                    columns => &t.columns, rows => rows }
                })
                .collect();
            let figures: Vec<Value> = s
                .figures
                .iter()
                .filter_map(|f| {
                    let png = images.get(&f.file)?;
                    let uri = format!(
                        "data:image/png;base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(png)
                    );
                    // Base64 needs no escaping; as safe text it stays byte for byte.
                    Some(context! { caption => &f.caption, uri => Value::from_safe_string(uri) })
                })
                .collect();
            context! { id => &s.id, title => &s.title, text => &s.text,
            tables => tables, figures => figures }
        })
        .collect();
    let ctx = context! {
        title => "Checkpoint report",
        store => report.store.display().to_string(),
        version => &report.ckpt_version,
        findings => findings,
        sections => sections,
    };
    env.get_template("report.html")
        .and_then(|t| t.render(ctx))
        .map_err(|e| Error::Invalid(format!("report template: {e}")))
}

/// A link target as the page shows it: minijinja's escaping would write `/` as
/// `&#x2f;`, which browsers read but readers of the source do not; a URL without
/// characters that need escaping goes in as it is.
fn href(url: &str) -> Value {
    if url.contains(['"', '\'', '<', '>', '&']) {
        Value::from(url)
    } else {
        Value::from_safe_string(url.to_string())
    }
}

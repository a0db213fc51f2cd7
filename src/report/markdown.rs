//! The report as markdown (GitHub's tables), for a README or the terminal.

use super::table::Table;
use super::Report;
use std::fmt::Write;

/// The report as markdown; `images` adds each figure as an image link (files beside
/// `report.md`), else the text is what `ckpt report` prints.
pub fn markdown(report: &Report, images: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Checkpoint report\n");
    let _ = writeln!(
        out,
        "From `{}` (ckpt {}).\n",
        report.store.display(),
        report.ckpt_version
    );
    let _ = writeln!(out, "## Findings\n");
    for f in &report.findings {
        let _ = writeln!(out, "- **{}** {}", escape(&f.question), escape(&f.text));
    }
    out.push('\n');
    for s in &report.sections {
        let _ = writeln!(out, "## {}\n", s.title);
        for p in &s.text {
            let _ = writeln!(out, "{}\n", escape(p));
        }
        for t in &s.tables {
            table(&mut out, t);
        }
        if images {
            for f in &s.figures {
                let _ = writeln!(out, "![{}]({})\n", escape(&f.caption), f.file);
            }
        }
    }
    out
}

fn table(out: &mut String, t: &Table) {
    let _ = writeln!(out, "### {}\n", t.title);
    for n in &t.notes {
        let _ = writeln!(out, "{}\n", escape(n));
    }
    let row = |cells: Vec<String>| format!("| {} |", cells.join(" | "));
    let _ = writeln!(out, "{}", row(t.columns.iter().map(|c| cell(c)).collect()));
    let _ = writeln!(
        out,
        "{}",
        row(t.columns.iter().map(|_| "---".to_string()).collect())
    );
    for r in &t.rows {
        let cells = r.iter().map(|c| match c.url() {
            Some(url) => format!("[{}]({url})", cell(&c.display())),
            None => cell(&c.display()),
        });
        let _ = writeln!(out, "{}", row(cells.collect()));
    }
    out.push('\n');
}

/// A table cell: pipes escaped, line breaks as spaces.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Prose: asterisks (the significance legend) shown as written, not as emphasis.
fn escape(s: &str) -> String {
    s.replace('*', "\\*")
}

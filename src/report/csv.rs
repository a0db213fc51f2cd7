//! A report table as CSV (RFC 4180): the stored numbers unrounded (fractions, not
//! points); a column with standard errors gains a `<column> stderr` column, a column
//! of differences a `<column> p` column (the paired test's p-value).

use super::table::{Cell, Table};

/// What one table column becomes in CSV.
struct Layout {
    stderr: bool,
    delta: bool,
}

/// The table as CSV text.
pub(crate) fn to_csv(t: &Table) -> String {
    let layouts: Vec<Layout> = (0..t.columns.len())
        .map(|j| {
            let cells = || t.rows.iter().filter_map(|r| r.get(j));
            Layout {
                stderr: cells().any(|c| {
                    matches!(
                        c,
                        Cell::Number {
                            stderr: Some(_),
                            ..
                        }
                    )
                }),
                delta: cells().any(|c| matches!(c, Cell::Delta { .. })),
            }
        })
        .collect();
    let mut header = Vec::new();
    for (name, l) in t.columns.iter().zip(&layouts) {
        header.push(name.clone());
        if l.delta {
            header.push(format!("{name} p"));
        } else if l.stderr {
            header.push(format!("{name} stderr"));
        }
    }
    let mut out = line(&header);
    for row in &t.rows {
        let mut fields = Vec::new();
        for (cell, l) in row.iter().zip(&layouts) {
            fields.extend(cell_fields(cell, l));
        }
        out.push_str(&line(&fields));
    }
    out
}

fn cell_fields(cell: &Cell, l: &Layout) -> Vec<String> {
    let num = |x: f64| x.to_string();
    let opt = |x: Option<f64>| x.map(num).unwrap_or_default();
    let (main, extra) = match cell {
        Cell::Empty | Cell::NotMeasured => (String::new(), String::new()),
        Cell::Text { text } | Cell::Link { text, .. } => (text.clone(), String::new()),
        Cell::Number { value, stderr, .. } => (num(*value), opt(*stderr)),
        Cell::Delta { delta, test, .. } => (num(*delta), opt(test.map(|t| t.p_value))),
    };
    if l.delta || l.stderr {
        vec![main, extra]
    } else {
        vec![main]
    }
}

fn line(fields: &[String]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| field(f)).collect();
    format!("{}\r\n", quoted.join(","))
}

/// A field, quoted when it holds a comma, a quote or a line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::compare::{PairedMethod, PairedTest};
    use crate::report::table::Style;

    #[test]
    fn numbers_stay_unrounded_with_their_extra_columns() {
        let mut t = Table::new("t", "T", vec!["run".into(), "acc".into(), "Δ".into()]);
        let test = PairedTest {
            delta: 0.1,
            p_value: 0.25,
            method: PairedMethod::Mcnemar,
            n: 8,
        };
        t.rows.push(vec![
            Cell::text("a, b"),
            Cell::number(0.123456, Some(0.01), Style::Percent),
            Cell::Delta {
                delta: 0.1,
                test: Some(test),
                style: Style::Percent,
            },
        ]);
        t.rows
            .push(vec![Cell::text("c"), Cell::Empty, Cell::NotMeasured]);
        assert_eq!(
            to_csv(&t),
            "run,acc,acc stderr,Δ,Δ p\r\n\"a, b\",0.123456,0.01,0.1,0.25\r\nc,,,,\r\n"
        );
    }
}

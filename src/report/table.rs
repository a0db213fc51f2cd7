//! A report table: typed cells that each format renders its own way (markdown and
//! HTML show rounded text; CSV and JSON keep the stored numbers, so every format
//! carries the same data).

use crate::eval::compare::PairedTest;
use serde::Serialize;

/// How a number is shown (CSV and JSON keep it unrounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// A fraction shown in points with one decimal (accuracies, win rates).
    Percent,
    /// Four decimals (losses).
    Fixed,
    /// Four significant digits (sharpness, ratios).
    Significant,
    /// Scientific notation (learning rates).
    Scientific,
    /// An integer (steps).
    Integer,
}

/// One cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cell {
    Empty,
    Text {
        text: String,
    },
    /// Text that links somewhere (a Hub revision's page).
    Link {
        text: String,
        url: String,
    },
    Number {
        value: f64,
        stderr: Option<f64>,
        style: Style,
    },
    /// A difference from a baseline, with the paired test of the two on the same items.
    Delta {
        delta: f64,
        test: Option<PairedTest>,
        style: Style,
    },
    /// Data the report needs but the store does not have.
    NotMeasured,
}

impl Cell {
    pub fn text(s: impl Into<String>) -> Self {
        Cell::Text { text: s.into() }
    }

    pub(crate) fn number(value: f64, stderr: Option<f64>, style: Style) -> Self {
        Cell::Number {
            value,
            stderr,
            style,
        }
    }

    pub fn int(value: u64) -> Self {
        Cell::number(value as f64, None, Style::Integer)
    }

    pub(crate) fn link(text: impl Into<String>, url: impl Into<String>) -> Self {
        Cell::Link {
            text: text.into(),
            url: url.into(),
        }
    }

    /// Where the cell links to, if anywhere.
    pub fn url(&self) -> Option<&str> {
        match self {
            Cell::Link { url, .. } => Some(url),
            _ => None,
        }
    }

    /// A step, or empty when unknown.
    pub(crate) fn step(step: Option<u64>) -> Self {
        step.map(Cell::int).unwrap_or(Cell::Empty)
    }

    /// The cell as markdown and HTML show it.
    pub(crate) fn display(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text { text } | Cell::Link { text, .. } => text.clone(),
            Cell::NotMeasured => "not measured".into(),
            Cell::Number {
                value,
                stderr,
                style,
            } => match stderr {
                Some(se) => format!("{} ± {}", show(*value, *style), show(*se, *style)),
                None => show(*value, *style),
            },
            Cell::Delta { delta, test, style } => {
                let d = match style {
                    Style::Percent => format!("{:+.1}", 100.0 * delta),
                    _ => format!(
                        "{}{}",
                        if *delta >= 0.0 { "+" } else { "" },
                        show(*delta, *style)
                    ),
                };
                match test {
                    Some(t) => format!("{d} (p={}{})", p_value(t.p_value), marker(t.p_value)),
                    None => d,
                }
            }
        }
    }
}

/// A number in a style, rounded for reading.
pub(crate) fn show(value: f64, style: Style) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    match style {
        Style::Percent => format!("{:.1}", 100.0 * value),
        Style::Fixed => format!("{value:.4}"),
        Style::Significant => significant(value, 4),
        Style::Scientific => format!("{value:e}"),
        Style::Integer => format!("{value:.0}"),
    }
}

/// `value` with `digits` significant digits, without an exponent in the usual range.
fn significant(value: f64, digits: i32) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let magnitude = value.abs().log10().floor() as i32;
    if !(-4..6).contains(&magnitude) {
        return format!("{:.*e}", (digits - 1) as usize, value);
    }
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    format!("{value:.decimals$}")
}

/// A p-value to two significant digits (`0.031`, `4.2e-5`).
pub(crate) fn p_value(p: f64) -> String {
    if p >= 0.01 {
        format!("{p:.2}")
    } else if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

/// `*` p < 0.05, `**` p < 0.01, `***` p < 0.001.
pub(crate) fn marker(p: f64) -> &'static str {
    if p < 0.001 {
        "***"
    } else if p < 0.01 {
        "**"
    } else if p < 0.05 {
        "*"
    } else {
        ""
    }
}

/// A titled table; `id` names its CSV file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub id: String,
    pub title: String,
    /// Sentences under the title: what the cells are, how they were computed.
    pub notes: Vec<String>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(id: &str, title: &str, columns: Vec<String>) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            notes: Vec::new(),
            columns,
            rows: Vec::new(),
        }
    }

    /// Cells as displayed, row by row.
    pub fn displayed(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|r| r.iter().map(Cell::display).collect())
            .collect()
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::compare::PairedMethod;

    #[test]
    fn cells_display_rounded() {
        assert_eq!(
            Cell::number(0.6123, Some(0.0141), Style::Percent).display(),
            "61.2 ± 1.4"
        );
        assert_eq!(
            Cell::number(1234.567, None, Style::Significant).display(),
            "1235"
        );
        assert_eq!(
            Cell::number(0.012345, None, Style::Significant).display(),
            "0.01235"
        );
        assert_eq!(
            Cell::number(1e-3, None, Style::Scientific).display(),
            "1e-3"
        );
        let test = PairedTest {
            delta: -0.05,
            p_value: 0.004,
            method: PairedMethod::Mcnemar,
            n: 100,
        };
        let d = Cell::Delta {
            delta: -0.05,
            test: Some(test),
            style: Style::Percent,
        };
        assert_eq!(d.display(), "-5.0 (p=0.004**)");
        let loss = Cell::Delta {
            delta: 0.1234,
            test: None,
            style: Style::Fixed,
        };
        assert_eq!(loss.display(), "+0.1234");
    }
}

//! A table as rows of text, printed the way `--format` asks: a terminal table that
//! fits the terminal, markdown, CSV or JSON.
//!
//! A table wider than the terminal (or than `COLUMNS`, when stdout is not one) is
//! printed long, as lm-eval prints its results: one line per row and column, the
//! row's key columns first, then the column's name and its value.

use super::output::table;
use std::io::IsTerminal;

/// How a table is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TableFormat {
    /// A terminal table, long when the wide one does not fit.
    Table,
    /// One row per line however wide.
    Wide,
    /// One line per row and column (lm-eval's layout).
    Long,
    /// A markdown table.
    Md,
    /// Comma-separated values, with a header line.
    Csv,
    /// JSON.
    Json,
}

/// Rows of text under a header; the first `keys` columns say which row it is.
#[derive(Debug, Clone)]
pub(crate) struct Grid {
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    pub(crate) keys: usize,
}

impl Grid {
    /// The table as `format` prints it (`Json`: an array of objects by column name).
    pub(crate) fn render(&self, format: TableFormat) -> String {
        match format {
            TableFormat::Table => match terminal_width() {
                Some(width) if self.width() > width => self.long().wide(),
                _ => self.wide(),
            },
            TableFormat::Wide => self.wide(),
            TableFormat::Long => self.long().wide(),
            TableFormat::Md => self.markdown(),
            TableFormat::Csv => self.csv(),
            TableFormat::Json => self.json(),
        }
    }

    /// Characters of the widest line of the wide table (borders and padding included).
    pub(crate) fn width(&self) -> usize {
        let columns = self.header.len();
        (0..columns)
            .map(|c| {
                let cells = self.rows.iter().filter_map(|r| r.get(c));
                cells
                    .chain([&self.header[c]])
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
                    + 3
            })
            .sum::<usize>()
            + 1
    }

    fn wide(&self) -> String {
        let header: Vec<&str> = self.header.iter().map(String::as_str).collect();
        let mut t = table(&header);
        for row in &self.rows {
            t.add_row(row.clone());
        }
        t.to_string()
    }

    /// One row per (row, column) past the keys, empty cells left out.
    pub(crate) fn long(&self) -> Grid {
        let keys = self.keys.min(self.header.len());
        let mut header: Vec<String> = self.header[..keys].to_vec();
        header.extend(["metric".to_string(), "value".to_string()]);
        let rows = self
            .rows
            .iter()
            .flat_map(|row| {
                (keys..self.header.len()).filter_map(move |c| {
                    let value = row.get(c).filter(|v| !v.is_empty())?;
                    let mut line = row[..keys.min(row.len())].to_vec();
                    line.extend([self.header[c].clone(), value.clone()]);
                    Some(line)
                })
            })
            .collect();
        Grid { header, rows, keys }
    }

    fn markdown(&self) -> String {
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(&self.header);
        out.push_str(&line(&vec!["---".to_string(); self.header.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }

    fn csv(&self) -> String {
        let field = |s: &String| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.clone()
            }
        };
        std::iter::once(&self.header)
            .chain(&self.rows)
            .map(|r| r.iter().map(field).collect::<Vec<_>>().join(",") + "\n")
            .collect()
    }

    fn json(&self) -> String {
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = self
            .rows
            .iter()
            .map(|r| {
                self.header
                    .iter()
                    .zip(r)
                    .map(|(h, v)| (h.clone(), serde_json::Value::from(v.as_str())))
                    .collect()
            })
            .collect();
        serde_json::to_string_pretty(&rows).unwrap_or_default()
    }
}

/// Columns to fit: the terminal's when stdout is one, else `COLUMNS` when set.
pub(crate) fn terminal_width() -> Option<usize> {
    if std::io::stdout().is_terminal() {
        if let Some(w) = tty_width() {
            return Some(w);
        }
    }
    std::env::var("COLUMNS").ok()?.trim().parse().ok()
}

#[cfg(unix)]
fn tty_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize struct for a terminal file descriptor and
    // fails (returning -1) for anything else; `ws` is a valid, owned struct.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

#[cfg(not(unix))]
fn tty_width() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid {
            header: vec![
                "run".into(),
                "step".into(),
                "arc acc".into(),
                "piqa acc".into(),
            ],
            rows: vec![
                vec!["wso".into(), "100".into(), "41.0".into(), "60.5".into()],
                vec!["wsd".into(), "100".into(), "".into(), "61.0".into()],
            ],
            keys: 2,
        }
    }

    #[test]
    fn long_has_a_line_per_value() {
        let long = grid().long();
        assert_eq!(long.header, ["run", "step", "metric", "value"]);
        assert_eq!(long.rows.len(), 3, "the empty cell is left out");
        assert_eq!(long.rows[2], ["wsd", "100", "piqa acc", "61.0"]);
    }

    #[test]
    fn formats_carry_the_same_cells() {
        let g = grid();
        assert_eq!(
            g.render(TableFormat::Csv),
            "run,step,arc acc,piqa acc\nwso,100,41.0,60.5\nwsd,100,,61.0\n"
        );
        assert!(g
            .render(TableFormat::Md)
            .starts_with("| run | step | arc acc | piqa acc |\n| --- |"));
        let json: serde_json::Value = serde_json::from_str(&g.render(TableFormat::Json)).unwrap();
        assert_eq!(json[1]["piqa acc"], "61.0");
        assert!(g.width() > 20);
    }
}

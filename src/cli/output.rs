//! Everything the CLI prints goes through here: tables, JSON, progress bars, errors.

use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Output settings shared by the commands.
pub struct Ui {
    pub quiet: bool,
}

impl Ui {
    /// A progress bar over `len` items, drawn only on a terminal and when not quiet.
    pub fn progress(&self, len: u64, what: &str) -> ProgressBar {
        if self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed_precise} < {eta}]")
                .expect("valid template"),
        );
        bar.set_message(what.to_string());
        bar
    }
}

/// A table with a header row, ready to print.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    t
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints an error (with its causes) as one line on stderr.
pub fn error(e: &anyhow::Error) {
    let msg = format!("{e:#}").replace('\n', " ");
    eprintln!("error: {msg}");
}

//! Everything the CLI prints goes through here: tables, JSON, progress bars, errors.
//!
//! Lines for stdout go through [`outln!`] / [`out!`], never `println!`: `println!`
//! panics when stdout is closed (`ckpt tasks | head`), and a closed stdout must end the
//! program quietly instead, as it does for every Unix tool.

use crate::progress::{Progress, Unit};
use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};

/// `println!` for the CLI: a closed stdout ends the program quietly (see [`stdout_failed`]).
macro_rules! outln {
    () => {
        $crate::cli::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}
/// `print!` for the CLI: a closed stdout ends the program quietly (see [`stdout_failed`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!($($arg)*))
    };
}
pub(crate) use {out, outln};

/// Writes to stdout and flushes, so that a closed stdout is noticed here, at once.
pub(crate) fn write_stdout(args: std::fmt::Arguments) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        stdout_failed(e)
    }
}

/// Ends the program after a failed write to stdout. A closed pipe (EPIPE: the reader,
/// `head` or a pager, has seen enough) is not an error: exit code 0 and nothing on
/// stderr, as ripgrep and `ckpt schedule` do. Anything else (a full disk) is one error
/// line and exit code 1.
pub(crate) fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to stdout: {e}");
    std::process::exit(1)
}

/// Output settings shared by the commands.
pub(crate) struct Ui {
    pub(crate) quiet: bool,
}

/// Every bar looks the same: what it counts, the bar, the count, time spent and left.
const ITEMS: &str = "{msg} {bar:30} {pos}/{len} [{elapsed_precise} < {eta}]";
/// The same for bytes, with the rate.
const BYTES: &str =
    "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} [{elapsed_precise} < {eta}]";

impl Ui {
    /// A progress bar over `len` items, drawn only on a terminal and when not quiet.
    pub(crate) fn progress(&self, len: u64, what: &str) -> ProgressBar {
        if self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(style(Unit::Items));
        bar.set_message(what.to_string());
        bar
    }

    /// The library's progress reports (requests, downloads, uploads), drawn as a bar
    /// labelled `what` until the first piece of work names itself.
    pub(crate) fn bar(&self, what: &str) -> std::sync::Arc<Bar> {
        std::sync::Arc::new(Bar(self.progress(0, what)))
    }
}

fn style(unit: Unit) -> ProgressStyle {
    let template = match unit {
        Unit::Items => ITEMS,
        Unit::Bytes => BYTES,
    };
    ProgressStyle::with_template(template).expect("valid template")
}

/// A [`Progress`] on a terminal bar; off a terminal, a log line per file moved.
pub(crate) struct Bar(ProgressBar);

impl Bar {
    pub(crate) fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, unit: Unit, total: u64, done: u64) {
        if self.0.is_hidden() {
            if unit == Unit::Bytes {
                let resumed = if done > 0 {
                    format!(", resuming at {}", crate::hub::sweep::human(done))
                } else {
                    String::new()
                };
                tracing::info!("{what} ({}{resumed})", crate::hub::sweep::human(total));
            }
            return;
        }
        self.0.set_style(style(unit));
        self.0.set_length(total);
        self.0.set_position(done);
        self.0.set_message(what.to_string());
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn rewind(&self, n: u64) {
        self.0.dec(n);
    }
}

/// A table with a header row, ready to print.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    t
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints an error (with its causes) as one line on stderr.
pub(crate) fn error(e: &anyhow::Error) {
    let msg = format!("{e:#}").replace('\n', " ");
    eprintln!("error: {msg}");
}

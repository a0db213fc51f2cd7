//! `ckpt demo [--out DIR] [--size tiny|small]`: the whole pipeline in miniature.

use super::output::Ui;
use crate::demo::commands::Invocation;
use crate::demo::pipeline::{self, DemoConfig, Progress};
use crate::demo::Size;
use crate::error::Error;
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The demo folder; a demo already there is resumed where it stopped.
    #[arg(long, default_value = "ckpt-demo")]
    out: PathBuf,
    /// tiny: under two minutes; small: a few minutes, clearer differences.
    #[arg(long, value_enum, default_value_t = Size::Small)]
    size: Size,
    /// Start over in a folder holding an earlier demo (its files are removed), or
    /// write into a folder that is not a demo folder.
    #[arg(long)]
    force: bool,
    /// Commands run at once where a stage allows it (default: the CPU cores).
    #[arg(long)]
    jobs: Option<usize>,
}

/// Exit code after Ctrl-C, as shells report a SIGINT.
const INTERRUPTED: u8 = 130;

pub fn run(args: &DemoArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the ckpt executable")?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let cfg = DemoConfig {
        dir: args.out.clone(),
        size: args.size,
        force: args.force,
        jobs,
        exe,
    };
    let printer = Printer { quiet: ui.quiet };
    match pipeline::run(&cfg, &printer) {
        Ok(outcome) => {
            if !ui.quiet {
                print_summary(&outcome);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(Error::Interrupted(msg)) => {
            eprintln!("\n{msg}");
            Ok(ExitCode::from(INTERRUPTED))
        }
        Err(e) => Err(e.into()),
    }
}

/// Prints one line per stage and the commands it runs.
struct Printer {
    quiet: bool,
}

impl Progress for Printer {
    fn stage(&self, index: usize, total: usize, title: &str, done_earlier: bool) {
        if self.quiet {
            return;
        }
        let state = if done_earlier {
            "  (done earlier)\n"
        } else {
            "\n"
        };
        print!("[{index:>2}/{total}] {title}{state}");
        let _ = std::io::stdout().flush();
    }

    fn command(&self, inv: &Invocation, log: &Path) {
        if !self.quiet {
            let name = log
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            println!("        $ {}    > logs/{name}", inv.display());
        }
    }

    fn note(&self, text: &str) {
        if !self.quiet {
            println!("        ({text})");
        }
    }

    fn finished(&self, seconds: f64) {
        if !self.quiet {
            println!("        {seconds:.1} s");
        }
    }
}

/// What the demo showed, measured, and where to look.
fn print_summary(outcome: &pipeline::Outcome) {
    println!("\nWhat this run shows:");
    for f in &outcome.findings {
        let verdict = match f.holds {
            Some(true) => "as in the paper",
            Some(false) => "NOT as in the paper",
            None => "not measured",
        };
        println!("- {} ({verdict})\n  {}", f.question, f.text);
    }
    let dir = outcome.dir.display();
    println!(
        "\nReport: {dir}/report/report.html (tables and plots), {dir}/report/report.md\n\
         Release (dry run) of the WSO model: {dir}/release/\n\
         Demo finished in {:.0} s{}.",
        outcome.seconds,
        if outcome.resumed { " (resumed)" } else { "" },
    );
}

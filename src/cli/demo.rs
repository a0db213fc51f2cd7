//! `ckpt demo [--out DIR] [--size tiny|small]`: the whole pipeline in miniature.

use super::output::{outln, Ui};
use crate::demo::commands::Invocation;
use crate::demo::pipeline::{self, DemoConfig, Progress};
use crate::demo::{study, Size};
use crate::error::Error;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// The demo folder; a demo already there is resumed where it stopped.
    #[arg(long, default_value = "ckpt-demo")]
    out: PathBuf,
    /// tiny: under two minutes; small: a few minutes, clearer differences.
    #[arg(long, value_enum, default_value_t = Size::Small)]
    size: Size,
    /// The seed of the synthetic world and of every run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run the study with this many seeds (--seed, --seed + 1, ...), each in
    /// OUT/seed-S, then report each finding as "holds in k of N" with its effect
    /// pooled over the seeds (OUT/findings.md, OUT/findings.json).
    #[arg(long, default_value_t = 1, value_parser = super::values::usize_in(1, 100))]
    seeds: usize,
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

impl DemoArgs {
    /// The flags as a config: the executable found, the job count resolved.
    fn job(&self) -> anyhow::Result<DemoConfig> {
        Ok(DemoConfig {
            dir: self.out.clone(),
            size: self.size,
            seed: self.seed,
            seeds: self.seeds,
            force: self.force,
            jobs: self
                .jobs
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            exe: std::env::current_exe().context("cannot find the ckpt executable")?,
        })
    }
}

pub(crate) fn run(args: &DemoArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let printer = Printer {
        quiet: ui.quiet,
        spinner: RefCell::new(None),
    };
    let study = match study::run(&args.job()?, &printer) {
        Ok(study) => study,
        Err(Error::Interrupted(msg)) => {
            eprintln!("\n{msg}");
            return Ok(ExitCode::from(INTERRUPTED));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(pooled) = study.pooled.filter(|_| !ui.quiet) {
        outln!("\n{}", pooled.markdown);
        outln!("Pooled findings: {}", pooled.path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints one line per stage and the commands it runs; on a terminal, a spinner with
/// the elapsed time while a stage runs.
struct Printer {
    quiet: bool,
    spinner: RefCell<Option<ProgressBar>>,
}

impl Printer {
    fn start_spinner(&self) {
        if self.quiet || !std::io::stdout().is_terminal() {
            return;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("        {spinner} {elapsed}").expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.spinner.borrow_mut() = Some(bar);
    }

    fn stop_spinner(&self) {
        if let Some(bar) = self.spinner.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }

    /// Prints a line above the spinner (or plainly without one).
    fn line(&self, text: &str) {
        match &*self.spinner.borrow() {
            Some(bar) => bar.println(text),
            None => outln!("{text}"),
        }
    }
}

impl Progress for Printer {
    fn stage(&self, index: usize, total: usize, title: &str, done_earlier: bool) {
        if self.quiet {
            return;
        }
        let state = if done_earlier { "  (done earlier)" } else { "" };
        outln!("[{index:>2}/{total}] {title}{state}");
        if !done_earlier {
            self.start_spinner();
        }
    }

    fn command(&self, inv: &Invocation, log: &Path) {
        if !self.quiet {
            let name = log
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            self.line(&format!("        $ {}    > logs/{name}", inv.display()));
        }
    }

    fn note(&self, text: &str) {
        if !self.quiet {
            self.line(&format!("        ({text})"));
        }
    }

    fn finished(&self, seconds: f64) {
        self.stop_spinner();
        if !self.quiet {
            outln!("        {seconds:.1} s");
        }
    }

    fn seed(&self, index: usize, total: usize, seed: u64) {
        if !self.quiet {
            outln!("\n== seed {seed} ({index} of {total}) ==");
        }
    }

    fn seed_ended(&self, outcome: Option<&pipeline::Outcome>) {
        self.stop_spinner();
        if let Some(outcome) = outcome.filter(|_| !self.quiet) {
            print_summary(outcome);
        }
    }
}

/// What the demo showed, measured, and where to look.
fn print_summary(outcome: &pipeline::Outcome) {
    outln!("\nWhat this run shows:");
    for f in &outcome.findings {
        let verdict = match f.holds {
            Some(true) => "as in the paper",
            Some(false) => "NOT as in the paper",
            None => "not measured",
        };
        outln!("- {} ({verdict})\n  {}", f.question, f.text);
    }
    let dir = outcome.dir.display();
    outln!(
        "\nReport: {dir}/report/report.html (tables and plots), {dir}/report/report.md\n\
         Release (dry run) of the WSO model: {dir}/release/\n\
         Demo finished in {:.0} s{}.",
        outcome.seconds,
        if outcome.resumed { " (resumed)" } else { "" },
    );
}

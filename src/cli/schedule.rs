//! `ckpt schedule RECIPE.toml...` or `ckpt schedule --kind wsd --peak-lr ...`: the LR
//! curve of each schedule as CSV or JSON, and optionally as a plot.

//! The flags become a [`ScheduleJob`]; [`crate::schedule::job::run`] does the work.

use super::output::Ui;
use crate::schedule::{DataFormat, Kind, ScheduleJob, ScheduleSpec, Schedules};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    ckpt schedule trainer/wsd.toml trainer/wso.toml --plot lr.png\n  \
    ckpt schedule --kind wsd --peak-lr 3e-4 --warmup 1000 --steps 80000 --alpha 0.1 --every 1000")]
pub(crate) struct ScheduleArgs {
    /// Training recipes (TOML) whose [schedule] tables to draw, overlaid.
    #[arg(conflicts_with = "kind", required_unless_present = "kind")]
    recipes: Vec<PathBuf>,
    /// Data format on stdout or in --out [default: csv].
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Print every N-th step (the last step of each schedule is always printed).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    every: u64,
    /// Write the data to FILE (atomically) instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Draw the curves into FILE.png or FILE.svg. The data is then printed only if
    /// --format or --out asks for it.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Title of the plot.
    #[arg(long, default_value = "Learning-rate schedule")]
    title: String,
    #[command(
        flatten,
        next_help_heading = "One schedule from flags (instead of RECIPES)"
    )]
    flags: SpecFlags,
}

/// One schedule from flags; the names are the keys of a recipe's [schedule] table.
#[derive(Debug, Args)]
struct SpecFlags {
    /// Schedule kind: wso, wsd, cosine, linear, constant, inv-sqrt, cyclic.
    #[arg(long, value_parser = parse_kind, requires_all = ["peak_lr", "steps"])]
    kind: Option<Kind>,
    /// Peak learning rate.
    #[arg(long, requires = "kind")]
    peak_lr: Option<f64>,
    /// Warmup steps.
    #[arg(long, requires = "kind")]
    warmup: Option<u64>,
    /// Total pre-training steps T.
    #[arg(long, requires = "kind")]
    steps: Option<u64>,
    /// WSD: fraction of T - warmup spent stable [default: 0.75].
    #[arg(long, requires = "kind")]
    stable_ratio: Option<f64>,
    /// WSD: decay length in steps, instead of --stable-ratio.
    #[arg(long, requires = "kind")]
    decay_steps: Option<u64>,
    /// Minimum LR factor [default: 0; WSO: 1].
    #[arg(long, requires = "kind")]
    alpha: Option<f64>,
    /// Cyclic: length of the first cycle in steps.
    #[arg(long, requires = "kind")]
    cycle: Option<u64>,
    /// Cyclic: growth factor of each next cycle [default: 1].
    #[arg(long, requires = "kind")]
    mult: Option<f64>,
    /// Mid-training steps M after T (with --alpha-mid).
    #[arg(long, requires = "kind")]
    mid_steps: Option<u64>,
    /// Mid-training minimum factor, relative to the LR at T.
    #[arg(long, requires = "kind")]
    alpha_mid: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Csv,
    Json,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    s.parse()
}

impl SpecFlags {
    /// The spec the flags describe (checked by [`ScheduleJob::check`]).
    fn spec(&self) -> Option<ScheduleSpec> {
        let kind = self.kind?;
        Some(ScheduleSpec {
            kind,
            peak_lr: self.peak_lr.unwrap_or_default(),
            warmup: self.warmup.unwrap_or(0),
            total_steps: self.steps,
            stable_ratio: self.stable_ratio,
            decay_steps: self.decay_steps,
            alpha: self.alpha,
            cycle: self.cycle,
            mult: self.mult,
            mid_steps: self.mid_steps,
            alpha_mid: self.alpha_mid,
        })
    }
}

impl ScheduleArgs {
    /// The typed job these flags ask for: the data is printed unless only a plot is
    /// asked for.
    fn job(&self) -> ScheduleJob {
        let print_data = self.plot.is_none() || self.format.is_some() || self.out.is_some();
        ScheduleJob {
            schedules: match self.flags.spec() {
                Some(spec) => Schedules::Flags(spec),
                None => Schedules::Recipes(self.recipes.clone()),
            },
            data: print_data.then(|| match self.format.unwrap_or(Format::Csv) {
                Format::Csv => DataFormat::Csv,
                Format::Json => DataFormat::Json,
            }),
            every: self.every,
            out: self.out.clone(),
            plot: self.plot.clone(),
            title: self.title.clone(),
        }
    }
}

pub(crate) fn run(args: &ScheduleArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let done = crate::schedule::job::run(&args.job(), &mut w)?;
    if let Some(path) = &done.plot {
        if !ui.quiet {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `ckpt schedule RECIPE.toml...` or `ckpt schedule --kind wsd --peak-lr ...`: the LR
//! curve of each schedule as CSV or JSON, and optionally as a plot.

use crate::plot::{line_chart, LineChart, Series, VLine};
use crate::schedule::{Kind, ScheduleSpec, SpecError};
use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::output::Ui;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    ckpt schedule trainer/wsd.toml trainer/wso.toml --plot lr.png\n  \
    ckpt schedule --kind wsd --peak-lr 3e-4 --warmup 1000 --steps 80000 --alpha 0.1 --every 1000")]
pub struct ScheduleArgs {
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
    /// The spec the flags describe, validated; errors name the flag.
    fn spec(&self) -> anyhow::Result<Option<ScheduleSpec>> {
        let Some(kind) = self.kind else {
            return Ok(None);
        };
        let spec = ScheduleSpec {
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
        };
        spec.validate().map_err(|e| {
            let flag = match e.key() {
                _ if matches!(e, SpecError::TooManySteps { .. }) => {
                    return anyhow::anyhow!("{e} (flags --steps and --mid-steps)");
                }
                "total_steps" => "steps".to_string(),
                key => key.replace('_', "-"),
            };
            anyhow::anyhow!("{e} (flag --{flag})")
        })?;
        Ok(Some(spec))
    }
}

/// A schedule to print or draw, with its legend label.
struct Curve {
    label: String,
    spec: ScheduleSpec,
}

#[derive(Serialize)]
struct JsonCurve<'a> {
    label: &'a str,
    spec: ScheduleSpec,
    points: Points<'a>,
}

/// The sampled points of one curve, serialized as they are computed: a curve of 10^12
/// steps streams like the CSV does instead of being held in memory.
struct Points<'a> {
    spec: &'a ScheduleSpec,
    every: u64,
}

impl Serialize for Points<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            sampled_steps(self.spec.end_step(), self.every).map(|step| Point {
                step,
                lr: self.spec.lr(step),
            }),
        )
    }
}

#[derive(Serialize)]
struct Point {
    step: u64,
    lr: f64,
}

pub fn run(args: &ScheduleArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    // Check the plot's file name before any work, so a typo costs nothing.
    if let Some(path) = &args.plot {
        crate::plot::ImageFormat::from_path(path)?;
    }
    let curves = curves(args)?;
    let print_data = args.plot.is_none() || args.format.is_some() || args.out.is_some();
    if print_data {
        let format = args.format.unwrap_or(Format::Csv);
        let fill = |w: &mut dyn Write| match format {
            Format::Csv => write_csv(w, &curves, args.every),
            Format::Json => write_json(w, &curves, args.every),
        };
        match &args.out {
            Some(path) => crate::atomic_file::write_with(path, fill)?,
            None => {
                let stdout = std::io::stdout();
                let mut w = std::io::BufWriter::new(stdout.lock());
                match fill(&mut w).and_then(|()| w.flush()) {
                    // `ckpt schedule ... | head` is fine.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                    other => other.context("writing to stdout")?,
                }
            }
        }
    }
    if let Some(path) = &args.plot {
        line_chart(path, &chart(&args.title, &curves))?;
        if !ui.quiet {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The schedules of the recipes or of the flags, labelled; labels that would collide
/// in a legend get the recipe's file name.
fn curves(args: &ScheduleArgs) -> anyhow::Result<Vec<Curve>> {
    let mut curves = Vec::new();
    if let Some(spec) = args.flags.spec()? {
        let spec = with_steps(spec, "--steps")?;
        curves.push(Curve {
            label: spec.label(),
            spec,
        });
        return Ok(curves);
    }
    let mut names = Vec::new();
    for path in &args.recipes {
        let spec = ScheduleSpec::read_recipe(path)?;
        let spec = with_steps(spec, &path.display().to_string())?;
        names.push(path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        ));
        curves.push(Curve {
            label: spec.label(),
            spec,
        });
    }
    let labels: Vec<String> = curves.iter().map(|c| c.label.clone()).collect();
    for (curve, name) in curves.iter_mut().zip(names) {
        if labels.iter().filter(|l| **l == curve.label).count() > 1 {
            curve.label = format!("{} [{name}]", curve.label);
        }
    }
    Ok(curves)
}

/// Drawing a curve needs `T`: an SFT recipe that leaves it to the trainer cannot be drawn.
fn with_steps(spec: ScheduleSpec, source: &str) -> anyhow::Result<ScheduleSpec> {
    spec.require_total_steps()
        .with_context(|| format!("{source}: cannot draw the curve"))?;
    Ok(spec)
}

/// Steps `0, N, 2N, ...` up to `end`, and `end`.
fn sampled_steps(end: u64, every: u64) -> impl Iterator<Item = u64> {
    (0..=end)
        .step_by(every.try_into().unwrap_or(usize::MAX))
        .chain(std::iter::once(end))
        .scan(None, |last, s| {
            let fresh = *last != Some(s);
            *last = Some(s);
            Some(fresh.then_some(s))
        })
        .flatten()
}

fn write_csv(w: &mut dyn Write, curves: &[Curve], every: u64) -> std::io::Result<()> {
    if let [curve] = curves {
        writeln!(w, "step,lr")?;
        for step in sampled_steps(curve.spec.end_step(), every) {
            writeln!(w, "{step},{}", curve.spec.lr(step))?;
        }
        return Ok(());
    }
    let header: Vec<String> = curves.iter().map(|c| csv_field(&c.label)).collect();
    writeln!(w, "step,{}", header.join(","))?;
    // Every schedule's own last step is a row; past its end a schedule's cell is empty.
    let mut steps: BTreeSet<u64> = BTreeSet::new();
    let ends: Vec<u64> = curves.iter().map(|c| c.spec.end_step()).collect();
    let last = ends.iter().copied().max().unwrap_or(0);
    steps.extend(sampled_steps(last, every));
    steps.extend(&ends);
    for step in steps {
        write!(w, "{step}")?;
        for (curve, &end) in curves.iter().zip(&ends) {
            if step <= end {
                write!(w, ",{}", curve.spec.lr(step))?;
            } else {
                write!(w, ",")?;
            }
        }
        writeln!(w)?;
    }
    Ok(())
}

fn write_json(w: &mut dyn Write, curves: &[Curve], every: u64) -> std::io::Result<()> {
    let out: Vec<JsonCurve> = curves
        .iter()
        .map(|c| JsonCurve {
            label: &c.label,
            spec: c.spec.resolved(),
            points: Points {
                spec: &c.spec,
                every,
            },
        })
        .collect();
    serde_json::to_writer_pretty(&mut *w, &out)?;
    writeln!(w)
}

/// A CSV cell, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The curves on one chart, like the paper's Figures 1 and 2: about a thousand points
/// per curve plus its corners, and a dashed line at `T` where mid-training follows.
fn chart(title: &str, curves: &[Curve]) -> LineChart {
    let mut chart = LineChart::new(title, "step", "learning rate");
    let mut mid_starts = BTreeSet::new();
    for curve in curves {
        let spec = &curve.spec;
        let end = spec.end_step();
        let mut steps: BTreeSet<u64> = sampled_steps(end, (end / 1000).max(1)).collect();
        for b in spec.breakpoints() {
            // Both sides of a corner, so that restarts draw as jumps.
            steps.extend([b.saturating_sub(1), b, (b + 1).min(end)]);
        }
        let points = steps.into_iter().map(|s| (s as f64, spec.lr(s))).collect();
        chart.series.push(Series::new(curve.label.clone(), points));
        if spec.mid_steps.is_some() {
            mid_starts.extend(spec.total_steps);
        }
    }
    let peak = curves.iter().map(|c| c.spec.peak_lr).fold(0.0, f64::max);
    chart.y_range = Some((0.0, peak * 1.08));
    chart.vlines = mid_starts
        .into_iter()
        .map(|t| VLine {
            x: t as f64,
            label: Some("mid-training".into()),
        })
        .collect();
    chart
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_keeps_the_ends() {
        let v: Vec<u64> = sampled_steps(10, 4).collect();
        assert_eq!(v, [0, 4, 8, 10]);
        let v: Vec<u64> = sampled_steps(8, 4).collect();
        assert_eq!(v, [0, 4, 8]);
        let v: Vec<u64> = sampled_steps(0, 1).collect();
        assert_eq!(v, [0]);
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_field("WSD (α=0.1)"), "WSD (α=0.1)");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
    }
}

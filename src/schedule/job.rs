//! `ScheduleJob`: which LR curves `ckpt schedule` prints or draws, checked in one
//! place; [`run`] samples them into CSV or JSON and draws them like the paper's
//! Figures 1 and 2.
//!
//! ```no_run
//! use ckpt::schedule::{job, DataFormat, Kind, ScheduleJob, ScheduleSpec, Schedules};
//! let job = ScheduleJob {
//!     schedules: Schedules::Flags(ScheduleSpec::new(Kind::Wsd, 3e-4, 1000, 80_000)),
//!     data: Some(DataFormat::Csv),
//!     every: 1000,
//!     out: None,
//!     plot: Some("lr.png".into()),
//!     title: "Learning-rate schedule".into(),
//! };
//! job::run(&job, &mut std::io::stdout())?;
//! # Ok::<(), ckpt::Error>(())
//! ```

use super::{ScheduleSpec, SpecError};
use crate::error::{Error, Result};
use crate::plot::{line_chart, LineChart, Series, VLine};
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

/// Which schedules to print or draw.
#[derive(Debug, Clone)]
pub enum Schedules {
    /// The `[schedule]` tables of these recipes, overlaid.
    Recipes(Vec<PathBuf>),
    /// One schedule given by flags (`--kind`, `--peak-lr`, ...): its errors name them.
    Flags(ScheduleSpec),
}

/// How the sampled curves are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// `step,lr` (one curve) or `step,LABEL,...` (several).
    Csv,
    /// An array of `{label, spec, points}`.
    Json,
}

/// LR curves to print and draw.
#[derive(Debug, Clone)]
pub struct ScheduleJob {
    pub schedules: Schedules,
    /// The data written; `None`: none (the plot only).
    pub data: Option<DataFormat>,
    /// Every N-th step is sampled (the last step of each schedule always is); at
    /// least 1.
    pub every: u64,
    /// Write the data to this file (atomically) instead of the caller's writer.
    pub out: Option<PathBuf>,
    /// Draw the curves into this PNG or SVG file.
    pub plot: Option<PathBuf>,
    /// Title of the plot.
    pub title: String,
}

/// What a run wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleOutcome {
    /// The legend label of each curve.
    pub(crate) labels: Vec<String>,
    /// The plot drawn.
    pub(crate) plot: Option<PathBuf>,
}

impl ScheduleJob {
    /// The plot's name, the sampling step and a schedule given by flags.
    pub fn check(&self) -> Result<()> {
        // The plot's file name first, so a typo costs nothing.
        if let Some(path) = &self.plot {
            crate::plot::ImageFormat::from_path(path)?;
        }
        if self.every == 0 {
            return Err(Error::bad_value(
                "--every",
                "--every must be at least 1 (got 0)",
            ));
        }
        match &self.schedules {
            Schedules::Flags(spec) => check_flags(spec),
            Schedules::Recipes(paths) if paths.is_empty() => Err(Error::bad_value(
                "--kind",
                "give recipes, or one schedule with --kind",
            )),
            Schedules::Recipes(_) => Ok(()),
        }
    }
}

/// A spec from flags, validated; errors name the flag.
fn check_flags(spec: &ScheduleSpec) -> Result<()> {
    spec.validate().map_err(|e| {
        let flag = match e.key() {
            _ if matches!(e, SpecError::TooManySteps { .. }) => {
                return Error::bad_value("--steps", format!("{e} (flags --steps and --mid-steps)"));
            }
            "total_steps" => "steps".to_string(),
            key => key.replace('_', "-"),
        };
        Error::Invalid(format!("{e} (flag --{flag})"))
    })?;
    with_steps(spec, "--steps")
}

/// Checks the job, writes the sampled curves (to `out`, else to `stdout`; a reader
/// that closed the pipe early is not an error) and draws the plot.
pub fn run(job: &ScheduleJob, stdout: &mut dyn Write) -> Result<ScheduleOutcome> {
    job.check()?;
    let curves = curves(&job.schedules)?;
    if let Some(format) = job.data {
        let fill = |w: &mut dyn Write| match format {
            DataFormat::Csv => write_csv(w, &curves, job.every),
            DataFormat::Json => write_json(w, &curves, job.every),
        };
        match &job.out {
            Some(path) => crate::atomic_file::write_with(path, fill)?,
            None => match fill(stdout).and_then(|()| stdout.flush()) {
                // `ckpt schedule ... | head` is fine.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(Error::Invalid(format!("writing to stdout: {e}"))),
                Ok(()) => {}
            },
        }
    }
    if let Some(path) = &job.plot {
        line_chart(path, &chart(&job.title, &curves))?;
    }
    Ok(ScheduleOutcome {
        labels: curves.into_iter().map(|c| c.label).collect(),
        plot: job.plot.clone(),
    })
}

/// A schedule to print or draw, with its legend label.
struct Curve {
    label: String,
    spec: ScheduleSpec,
}

/// The schedules, labelled; labels that would collide in a legend get the recipe's
/// file name.
fn curves(schedules: &Schedules) -> Result<Vec<Curve>> {
    let paths = match schedules {
        Schedules::Flags(spec) => {
            return Ok(vec![Curve {
                label: spec.label(),
                spec: spec.clone(),
            }])
        }
        Schedules::Recipes(paths) => paths,
    };
    let mut curves = Vec::new();
    let mut names = Vec::new();
    for path in paths {
        let spec = ScheduleSpec::read_recipe(path)?;
        with_steps(&spec, &path.display().to_string())?;
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
fn with_steps(spec: &ScheduleSpec, source: &str) -> Result<()> {
    spec.require_total_steps()
        .map_err(|e| Error::Invalid(format!("{source}: cannot draw the curve: {e}")))?;
    Ok(())
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
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
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

    fn flags(spec: ScheduleSpec) -> ScheduleJob {
        ScheduleJob {
            schedules: Schedules::Flags(spec),
            data: Some(DataFormat::Csv),
            every: 1,
            out: None,
            plot: None,
            title: "t".into(),
        }
    }

    fn wsd() -> ScheduleSpec {
        ScheduleSpec::new(super::super::Kind::Wsd, 3e-4, 10, 100)
    }

    #[test]
    fn a_bad_value_is_refused_naming_the_flag() {
        flags(wsd()).check().unwrap();
        let mut spec = wsd();
        spec.alpha = Some(1.5);
        let err = flags(spec).check().unwrap_err().to_string();
        assert!(err.contains("(flag --alpha)"), "{err}");
        let job = ScheduleJob {
            every: 0,
            ..flags(wsd())
        };
        assert!(job.check().unwrap_err().to_string().contains("--every"));
    }

    #[test]
    fn a_bad_combination_is_refused() {
        let mut spec = wsd();
        spec.stable_ratio = Some(0.5);
        spec.decay_steps = Some(10);
        let err = flags(spec).check().unwrap_err().to_string();
        assert!(err.contains("give one of them"), "{err}");
        let job = ScheduleJob {
            schedules: Schedules::Recipes(vec![]),
            ..flags(wsd())
        };
        assert!(job.check().is_err());
    }
}

//! `ckpt merge CKPT... --emulate SHAPE|--weights C,... [--window STEPS|--last K] --out DIR`:
//! WSM checkpoint merging; prints the coefficients and the LR decay they emulate.

use super::output::{outln, print_json, table, Ui};
use crate::merge::{plan, Accumulate, DecayShape, MergeOptions, MergePlan, Selection, Weighting};
use crate::plot::{line_chart, LineChart, Series};
use anyhow::Context;
use clap::{ArgGroup, Args, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("coefficients").required(true).args(["emulate", "weights"])))]
#[command(after_help = "Examples:\n  \
    ckpt merge runs/wso --emulate cosine --window 2000 --out merged/\n  \
    ckpt merge runs/wso --emulate linear --last 4 --plot lr.png   # coefficients only\n  \
    ckpt merge runs/wso/step-0001000 runs/wso/step-0002000 --weights 0.3,0.7 --out merged/")]
pub struct MergeArgs {
    /// Checkpoints, or run directories whose checkpoints to merge (ordered by step).
    #[arg(required = true, value_name = "CKPT")]
    checkpoints: Vec<PathBuf>,
    /// The LR decay to emulate: uniform, linear, cosine, inv-sqrt or 1-sqrt.
    #[arg(long, value_name = "SHAPE", value_parser = parse_shape)]
    emulate: Option<DecayShape>,
    /// Explicit coefficients, one per selected checkpoint in step order, comma-separated;
    /// non-negative and summing to 1.
    #[arg(long, value_name = "C,C,...", allow_hyphen_values = true)]
    weights: Option<String>,
    /// Merge the checkpoints of the last STEPS training steps (step >= last step - STEPS).
    #[arg(long, value_name = "STEPS", conflicts_with = "last")]
    window: Option<u64>,
    /// Merge the last K checkpoints.
    #[arg(long, value_name = "K")]
    last: Option<usize>,
    /// Output checkpoint directory; without it the coefficients are only printed.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replace DIR if it exists.
    #[arg(long, requires = "out")]
    force: bool,
    /// Precision of the weighted sums (the output keeps the sources' dtype).
    #[arg(long, value_enum, default_value = "f32")]
    accumulate: AccumulateArg,
    /// Draw the emulated LR multiplier against step into FILE.png or FILE.svg.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AccumulateArg {
    F32,
    F64,
}

fn parse_shape(s: &str) -> Result<DecayShape, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

/// One selected checkpoint as printed.
#[derive(Serialize)]
struct Row {
    path: PathBuf,
    step: u64,
    coefficient: f64,
    multiplier: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
}

#[derive(Serialize)]
struct Output {
    shape: &'static str,
    window: Option<u64>,
    last: Option<usize>,
    found_steps: Vec<u64>,
    skipped: Vec<PathBuf>,
    sources: Vec<Row>,
    /// The LR multiplier of the last interval: where the emulated decay ends.
    final_multiplier: f64,
    out: Option<PathBuf>,
    fingerprint: Option<String>,
    seconds: Option<f64>,
}

pub fn run(args: &MergeArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let selection = match (args.window, args.last) {
        (Some(w), _) => Selection::Window(w),
        (_, Some(k)) => Selection::Last(k),
        _ => Selection::All,
    };
    let weighting = match (&args.weights, args.emulate) {
        (Some(w), _) => Weighting::Explicit(parse_weights(w)?),
        (None, Some(shape)) => Weighting::Emulate(shape),
        (None, None) => anyhow::bail!("give --emulate SHAPE or --weights"),
    };
    let plan = plan(&args.checkpoints, selection, &weighting)?;
    for dir in &plan.sources.skipped {
        if !ui.quiet {
            eprintln!(
                "note: skipping {} (a merged checkpoint; name it to merge it)",
                dir.display()
            );
        }
    }
    if let Some(path) = &args.plot {
        draw(&plan, path)?;
    }
    let mut out = output(&plan, args);
    if let Some(dir) = &args.out {
        let opts = MergeOptions {
            accumulate: match args.accumulate {
                AccumulateArg::F32 => Accumulate::F32,
                AccumulateArg::F64 => Accumulate::F64,
            },
            force: args.force,
        };
        let started = Instant::now();
        let bar = ui.progress(plan.elements() * plan.selected().len() as u64, "merging");
        let sources = plan.selected().len() as u64;
        let meta = plan.write(dir, &opts, &|n| bar.inc(n * sources))?;
        bar.finish_and_clear();
        out.seconds = Some(started.elapsed().as_secs_f64());
        let merged = crate::checkpoint::Checkpoint::open(dir)?;
        out.fingerprint = Some(merged.fingerprint()?);
        if let Some(info) = meta.merge {
            for (row, source) in out.sources.iter_mut().zip(info.sources) {
                row.fingerprint = Some(source.fingerprint);
            }
        }
    }
    if args.json {
        print_json(&out)?;
    } else {
        print_table(&out);
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_weights(text: &str) -> anyhow::Result<Vec<f64>> {
    text.split(',')
        .map(|w| {
            w.trim()
                .parse::<f64>()
                .with_context(|| format!("--weights: {w:?} is not a number"))
        })
        .collect()
}

fn output(plan: &MergePlan, args: &MergeArgs) -> Output {
    let w = &plan.weights;
    Output {
        shape: plan.weighting.name(),
        window: args.window,
        last: args.last,
        found_steps: plan.sources.found_steps.clone(),
        skipped: plan.sources.skipped.clone(),
        sources: plan
            .selected()
            .iter()
            .enumerate()
            .map(|(j, s)| Row {
                path: s.checkpoint.dir.clone(),
                step: s.step(),
                coefficient: w.coefficients[j],
                multiplier: w.multipliers[j],
                fingerprint: None,
            })
            .collect(),
        final_multiplier: w.final_multiplier(),
        out: args.out.clone(),
        fingerprint: None,
        seconds: None,
    }
}

fn print_table(out: &Output) {
    let mut t = table(&["checkpoint", "step", "coefficient", "LR multiplier"]);
    for r in &out.sources {
        t.add_row(vec![
            r.path.display().to_string(),
            r.step.to_string(),
            format!("{:.6}", r.coefficient),
            format!("{:.6}", r.multiplier),
        ]);
    }
    outln!("{t}");
    let (first, last) = (out.sources[0].step, out.sources[out.sources.len() - 1].step);
    outln!(
        "{} checkpoints of {} found (steps {first}..={last}), {}: the emulated LR decays to \
         {:.4} of the constant LR",
        out.sources.len(),
        out.found_steps.len(),
        match out.shape {
            "explicit" => "explicit weights".to_string(),
            shape => format!("emulating {shape} decay"),
        },
        out.final_multiplier
    );
    match (&out.out, &out.fingerprint) {
        (Some(dir), Some(fp)) => outln!(
            "wrote {} ({}) in {:.1}s",
            dir.display(),
            &fp[..12],
            out.seconds.unwrap_or(0.0)
        ),
        _ => outln!("nothing written (no --out)"),
    }
}

fn draw(plan: &MergePlan, path: &std::path::Path) -> anyhow::Result<()> {
    let mut chart = LineChart::new(
        &format!("LR decay emulated by merging ({})", plan.weighting.name()),
        "step",
        "LR multiplier",
    );
    chart
        .series
        .push(Series::new("emulated by the merge", plan.lr_curve()));
    if let Some(target) = plan.target_curve(200) {
        chart.series.push(Series::new(
            format!("{} decay", plan.weighting.name()),
            target,
        ));
    }
    chart.y_range = Some((0.0, 1.05));
    line_chart(path, &chart)?;
    Ok(())
}

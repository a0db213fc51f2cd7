//! `ckpt merge CKPT... --emulate SHAPE|--weights C,... [--window STEPS|--last K] --out DIR`:
//! WSM checkpoint merging; prints the coefficients and the LR decay they emulate.

//! The flags become a [`MergeJob`]; [`crate::merge::job::run`] does the work.

use super::output::{outln, print_json, table, Ui};
use crate::merge::{
    Accumulate, DecayShape, MergeEvent, MergeJob, MergeOptions, MergeOutcome, Selection, Weighting,
};
use anyhow::Context;
use clap::{ArgGroup, Args, ValueEnum};
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("coefficients").required(true).args(["emulate", "weights"])))]
#[command(after_help = "Examples:\n  \
    ckpt merge runs/wso --emulate cosine --window 2000 --out merged/\n  \
    ckpt merge runs/wso --emulate linear --last 4 --plot lr.png   # coefficients only\n  \
    ckpt merge runs/wso/step-0001000 runs/wso/step-0002000 --weights 0.3,0.7 --out merged/")]
pub(crate) struct MergeArgs {
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

impl MergeArgs {
    /// The typed job these flags ask for (values parsed, not yet checked).
    fn job(&self) -> anyhow::Result<MergeJob> {
        let selection = match (self.window, self.last) {
            (Some(w), _) => Selection::Window(w),
            (_, Some(k)) => Selection::Last(k),
            _ => Selection::All,
        };
        let weighting = match (&self.weights, self.emulate) {
            (Some(w), _) => Weighting::Explicit(parse_weights(w)?),
            (None, Some(shape)) => Weighting::Emulate(shape),
            (None, None) => anyhow::bail!("give --emulate SHAPE or --weights"),
        };
        Ok(MergeJob {
            checkpoints: self.checkpoints.clone(),
            selection,
            weighting,
            out: self.out.clone(),
            options: MergeOptions {
                accumulate: match self.accumulate {
                    AccumulateArg::F32 => Accumulate::F32,
                    AccumulateArg::F64 => Accumulate::F64,
                },
                force: self.force,
            },
            plot: self.plot.clone(),
        })
    }
}

pub(crate) fn run(args: &MergeArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let job = args.job()?;
    let mut bar: Option<ProgressBar> = None;
    let done = crate::merge::job::run(&job, &mut |event| match event {
        MergeEvent::SkippedMerged(dir) => {
            if !ui.quiet {
                eprintln!(
                    "note: skipping {} (a merged checkpoint; name it to merge it)",
                    dir.display()
                );
            }
        }
        MergeEvent::Writing { elements } => bar = Some(ui.progress(elements, "merging")),
        MergeEvent::Summed(n) => {
            if let Some(b) = &bar {
                b.inc(n)
            }
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if args.json {
        print_json(&done)?;
    } else {
        print_table(&done);
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

fn print_table(out: &MergeOutcome) {
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

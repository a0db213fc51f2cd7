//! `ckpt inspect PATH...`: one row per checkpoint found.

use super::grid::{Grid, TableFormat};
use super::output::{out, outln, print_json, Ui};
use crate::sources::inspect::{self, InspectEvent, InspectJob, InspectOutcome};
use clap::Args;
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// Checkpoint directories, directories to search for checkpoints, or Hub
    /// checkpoints (hf://ORG/NAME[@REVISION], fetched into the Hugging Face cache).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    hub: super::values::HubSourceArgs,
    /// Print JSON instead of a table (the same as --format json).
    #[arg(long)]
    json: bool,
    /// table (long when wider than the terminal), wide, long, md, csv or json.
    #[arg(long, value_enum, default_value = "table")]
    format: TableFormat,
}

impl InspectArgs {
    /// The flags as a job.
    fn job(&self) -> anyhow::Result<InspectJob> {
        Ok(InspectJob {
            paths: self.paths.clone(),
            hub: self.hub.options(),
        })
    }
}

pub(crate) fn run(args: &InspectArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let transfer = ui.bar("downloading");
    let mut bar = ProgressBar::hidden();
    let InspectOutcome { rows, failed } =
        inspect::run(&args.job()?, transfer.as_ref(), &mut |event| match event {
            InspectEvent::Found(n) => bar = ui.progress(n as u64, "inspecting"),
            InspectEvent::Failed(e) => bar.suspend(|| eprintln!("error: {e}")),
            InspectEvent::Done => bar.inc(1),
        })?;
    bar.finish_and_clear();
    if args.json || args.format == TableFormat::Json {
        print_json(&rows)?;
    } else {
        let header = [
            "path",
            "step",
            "stage",
            "schedule",
            "arch",
            "params",
            "dtype",
            "fingerprint",
        ];
        let mut grid = Grid {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: vec![],
            keys: 1,
        };
        for r in &rows {
            grid.rows.push(vec![
                r.path.clone(),
                r.step.map_or("-".into(), |s| s.to_string()),
                r.stage.clone().unwrap_or_else(|| "-".into()),
                r.schedule.clone().unwrap_or_else(|| "-".into()),
                r.architecture.trim_end_matches("ForCausalLM").to_string(),
                human_count(r.parameters),
                r.dtype.clone(),
                r.fingerprint[..12].to_string(),
            ]);
        }
        out!("{}", grid.render(args.format).trim_end_matches('\n'));
        outln!();
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn human_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

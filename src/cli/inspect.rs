//! `ckpt inspect PATH...`: one row per checkpoint found.

use super::grid::{Grid, TableFormat};
use super::output::{out, outln, print_json, Ui};
use crate::checkpoint::{Checkpoint, StoredTensor};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct InspectArgs {
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

/// What `inspect` reports of one checkpoint.
#[derive(Debug, Serialize)]
struct Row {
    path: String,
    step: Option<u64>,
    stage: Option<String>,
    schedule: Option<String>,
    architecture: String,
    parameters: usize,
    dtype: String,
    fingerprint: String,
    meta: Option<crate::checkpoint::CheckpointMeta>,
}

fn row(ckpt: &Checkpoint) -> crate::Result<Row> {
    let cfg = ckpt.config()?;
    let weights = ckpt.weights()?;
    crate::checkpoint::validate_shapes(&cfg, &weights)?;
    let tensors = weights.tensors();
    Ok(Row {
        path: ckpt.name(),
        step: ckpt.step,
        stage: ckpt.stage().map(|s| s.to_string()),
        schedule: ckpt.schedule_kind().map(String::from),
        architecture: cfg.arch.architecture().to_string(),
        parameters: tensors
            .values()
            .map(|t| t.shape.iter().product::<usize>())
            .sum(),
        dtype: dominant_dtype(&tensors),
        fingerprint: crate::checkpoint::fingerprint(&ckpt.dir, &weights)?,
        meta: ckpt.meta.clone(),
    })
}

/// The dtype holding the most parameters (norms are sometimes kept in f32).
fn dominant_dtype(tensors: &BTreeMap<String, StoredTensor>) -> String {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for t in tensors.values() {
        *count
            .entry(format!("{:?}", t.dtype).to_lowercase())
            .or_default() += t.shape.iter().product::<usize>();
    }
    count
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| d)
        .unwrap_or_else(|| "-".into())
}

pub fn run(args: &InspectArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let found = crate::sources::checkpoints(
        &args.paths,
        &args.hub.options(),
        ui.bar("downloading").as_ref(),
    )?;
    if found.is_empty() {
        let searched: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
        anyhow::bail!(
            "no checkpoint (config.json + *.safetensors or pytorch_model.bin) found under {}",
            searched.join(", ")
        );
    }
    let bar = ui.progress(found.len() as u64, "inspecting");
    let mut rows = Vec::new();
    let mut failed = 0;
    for ckpt in &found {
        match row(ckpt) {
            Ok(r) => rows.push(r),
            Err(e) => {
                bar.suspend(|| eprintln!("error: {e}"));
                failed += 1;
            }
        }
        bar.inc(1);
    }
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

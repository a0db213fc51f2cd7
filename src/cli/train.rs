//! `ckpt train RECIPE [--set k=v]... [--resume DIR]`: runs a training recipe.

use super::output::Ui;
use crate::train::recipe::{Recipe, RUN_FILE};
use crate::train::setup::prepare;
use crate::train::trainer::{Outcome, StepMetrics};
use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The recipe (TOML). May be left out with --resume RUN_DIR: the run's run.toml.
    recipe: Option<PathBuf>,
    /// Override a recipe field, e.g. `--set training.steps=200 --set schedule.alpha=0`;
    /// `--set table.key=` (empty) removes a field.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue from this checkpoint, or from the latest checkpoint of this run directory.
    /// Without it, a run directory holding checkpoints of the same recipe is resumed.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
}

/// Exit code after Ctrl-C, as shells report a SIGINT.
const INTERRUPTED: u8 = 130;

pub fn run(args: &TrainArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let recipe_path = recipe_path(args)?;
    let recipe = Recipe::load(&recipe_path, &args.sets)?;
    let mut trainer = prepare(&recipe, args.resume.as_deref())
        .with_context(|| format!("cannot start {}", recipe.job.name))?;
    let stop = install_ctrl_c()?;
    let bar = progress_bar(ui, trainer.step(), trainer.end_step(), &recipe.job.name);
    // Without a terminal (CI logs, nohup) a line per checkpoint interval instead.
    let log_lines = bar.is_hidden() && !ui.quiet;
    let (every, end) = (recipe.training.checkpoint_every, trainer.end_step());
    let mut on_step = |m: &StepMetrics| {
        let status = format!(
            "loss {:.4}  lr {:.2e}  {:.0} tok/s",
            m.loss, m.lr, m.tokens_per_s
        );
        if log_lines && (m.step.is_multiple_of(every) || m.step == end) {
            eprintln!("step {}/{end}  {status}", m.step);
        }
        bar.set_position(m.step);
        bar.set_message(status);
    };
    let outcome = trainer.run(stop, &mut on_step);
    bar.finish_and_clear();
    match outcome? {
        Outcome::Finished(dir) => {
            if !ui.quiet {
                eprintln!("finished at step {}: {}", trainer.step(), dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Interrupted(dir) => {
            eprintln!(
                "interrupted at step {}; saved {} (run the same command to resume)",
                trainer.step(),
                dir.display()
            );
            Ok(ExitCode::from(INTERRUPTED))
        }
    }
}

/// The recipe file: given, or the `run.toml` of the run being resumed.
fn recipe_path(args: &TrainArgs) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.recipe {
        return Ok(path.clone());
    }
    let Some(resume) = &args.resume else {
        bail!("give a recipe, or --resume RUN_DIR to continue a run");
    };
    let run_dir = if crate::checkpoint::is_checkpoint_dir(resume) {
        crate::error::parent_dir(resume).to_path_buf()
    } else {
        resume.clone()
    };
    let path = run_dir.join(RUN_FILE);
    if !path.is_file() {
        bail!("{}: no {RUN_FILE}; give the recipe", run_dir.display());
    }
    Ok(path)
}

/// Raised by Ctrl-C; the trainer polls it between steps.
static STOP: AtomicBool = AtomicBool::new(false);

/// First Ctrl-C: save a checkpoint, then stop. Second: stop at once.
fn install_ctrl_c() -> anyhow::Result<&'static AtomicBool> {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                std::process::exit(INTERRUPTED as i32);
            }
            eprintln!("\nstopping: saving a checkpoint first (Ctrl-C again to quit now)");
        })
        .map_err(|e| e.to_string())
    });
    if let Err(e) = installed {
        bail!("cannot install the Ctrl-C handler: {e}");
    }
    STOP.store(false, Ordering::SeqCst);
    Ok(&STOP)
}

fn progress_bar(ui: &Ui, start: u64, end: u64, name: &str) -> ProgressBar {
    if ui.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(end);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} {bar:25} step {pos}/{len} {msg} [{elapsed_precise} < {eta}]",
        )
        .expect("valid template"),
    );
    bar.set_prefix(name.to_string());
    bar.set_position(start);
    bar.reset_eta();
    bar
}

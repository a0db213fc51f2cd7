//! `ckpt train RECIPE [--set k=v]... [--resume DIR]`: runs a training recipe.
//! The flags become a [`TrainJob`]; [`crate::train::job::run`] trains.

use super::output::Ui;
use crate::train::{TrainEvent, TrainJob};
use anyhow::bail;
use clap::Args;
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
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

impl TrainArgs {
    /// The typed job: the recipe read (or the resumed run's), overrides applied.
    fn job(&self) -> anyhow::Result<TrainJob> {
        Ok(TrainJob::load(
            self.recipe.as_deref(),
            &self.sets,
            self.resume.clone(),
        )?)
    }
}

pub(crate) fn run(args: &TrainArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let job = args.job()?;
    let stop = install_ctrl_c()?;
    let mut bar = ProgressBar::hidden();
    // Without a terminal (CI logs, nohup) a line per checkpoint interval instead.
    let mut log_every = None;
    let mut label = String::new();
    let done = crate::train::job::run(&job, stop, &mut |event| match event {
        TrainEvent::Started {
            name,
            step,
            end_step,
            checkpoint_every,
        } => {
            bar = progress_bar(ui, step, end_step, name);
            label = name.to_string();
            log_every = (bar.is_hidden() && !ui.quiet).then_some((checkpoint_every, end_step));
        }
        TrainEvent::Step(m) => {
            let status = format!(
                "loss {:.4}  lr {:.2e}  {:.0} tok/s",
                m.loss, m.lr, m.tokens_per_s
            );
            if let Some((every, end)) = log_every {
                if m.step.is_multiple_of(every) || m.step == end {
                    eprintln!("step {}/{end}  {status}", m.step);
                }
            }
            bar.set_position(m.step);
            bar.set_message(format!("{label}  {status}"));
        }
    });
    bar.finish_and_clear();
    let done = done?;
    if done.interrupted {
        eprintln!(
            "interrupted at step {}; saved {} (run the same command to resume)",
            done.step,
            done.checkpoint.display()
        );
        return Ok(ExitCode::from(INTERRUPTED));
    }
    if !ui.quiet {
        eprintln!(
            "finished at step {}: {}",
            done.step,
            done.checkpoint.display()
        );
    }
    Ok(ExitCode::SUCCESS)
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

/// The one bar style (`Ui::progress`), over steps, resumed at `start`.
fn progress_bar(ui: &Ui, start: u64, end: u64, name: &str) -> ProgressBar {
    let bar = ui.progress(end, name);
    bar.set_position(start);
    bar.reset_eta();
    bar
}

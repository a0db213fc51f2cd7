//! The command line: clap parses flags into typed arguments, each command turns them
//! into library calls. Errors end here: one line on stderr, exit code 1 (usage errors:
//! exit code 2, from clap).

mod demo;
mod eval;
mod grid;
mod inspect;
mod judge;
mod merge;
mod output;
mod release;
mod report;
mod schedule;
mod score;
mod serve;
mod sharpness;
mod store;
mod synth;
mod tasks;
mod tokenize;
mod train;
mod values;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Train, score, measure and publish LLM checkpoints.
#[derive(Debug, Parser)]
#[command(name = "ckpt", version, about, long_about = None)]
pub(crate) struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors on stderr; no progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pre-train, mid-train or fine-tune a model from a recipe; writes checkpoints.
    Train(train::TrainArgs),
    /// List the checkpoints found under each path.
    Inspect(inspect::InspectArgs),
    /// Score every checkpoint under the paths on benchmark tasks (lm-eval compatible).
    Eval(Box<eval::EvalArgs>),
    /// Log-likelihood, perplexity and bits per byte of texts under a checkpoint.
    Score(score::ScoreArgs),
    /// Merge checkpoints (WSM): a weighted average that emulates an LR decay.
    Merge(merge::MergeArgs),
    /// Hessian-trace sharpness (Hutchinson) of every checkpoint found, with plots.
    Sharpness(sharpness::SharpnessArgs),
    /// Print (CSV/JSON) or plot the learning-rate curve of recipes or flags.
    Schedule(schedule::ScheduleArgs),
    /// Pre-tokenize a corpus into .npy token shards for training.
    Tokenize(tokenize::TokenizeArgs),
    /// Generate the synthetic world and its corpora (pre-/mid-training, SFT, validation).
    Synth(synth::SynthArgs),
    /// List the benchmark tasks and suites, or print a task's prompts (--show).
    Tasks(tasks::TasksArgs),
    /// Tables, findings and plots (markdown, HTML, CSV, JSON, PNG) from the results store.
    Report(report::ReportArgs),
    /// Merge the results stores of a sweep run on many machines, or list what is done in them.
    Store(store::StoreArgs),
    /// Check a checkpoint, write its model card and publish both to the Hugging Face Hub.
    Release(release::ReleaseArgs),
    /// The whole pipeline in miniature, offline, on a CPU: train, evaluate, judge, report.
    Demo(demo::DemoArgs),
    /// Serve a checkpoint through an OpenAI-compatible HTTP API (models, chat, completions).
    Serve(serve::ServeArgs),
}

/// Runs the command line; the binary's `main` is this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Sharpness(args) = &cli.command {
        if args.needs_gradient_graphs() {
            // Before any thread starts: the environment is read by every thread.
            crate::sharpness::keep_gradient_graphs_from_start();
        }
    }
    if let Command::Eval(_) = &cli.command {
        // Before any thread starts, as above.
        crate::eval::engine::keep_candle_on_the_passes_threads();
    }
    init_logging(cli.verbose, cli.quiet);
    let ui = output::Ui { quiet: cli.quiet };
    let result = match &cli.command {
        Command::Train(args) => train::run(args, &ui),
        Command::Inspect(args) => inspect::run(args, &ui),
        Command::Eval(args) => eval::run(args, &ui),
        Command::Score(args) => score::run(args, &ui),
        Command::Merge(args) => merge::run(args, &ui),
        Command::Sharpness(args) => sharpness::run(args, &ui),
        Command::Schedule(args) => schedule::run(args, &ui),
        Command::Synth(args) => synth::run(args, &ui),
        Command::Tokenize(args) => tokenize::run(args, &ui),
        Command::Tasks(args) => tasks::run(args, &ui),
        Command::Report(args) => report::run(args, &ui),
        Command::Store(args) => store::run(args, &ui),
        Command::Release(args) => release::run(args, &ui),
        Command::Serve(args) => serve::run(args, &ui),
        Command::Demo(args) => demo::run(args, &ui),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            output::error(&e);
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CKPT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

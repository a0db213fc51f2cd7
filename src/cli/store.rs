//! `ckpt store merge SOURCE... --into STORE` and `ckpt store status [STORE...]`: the
//! results stores of a sweep run on many machines, joined exactly (`crate::store`), and
//! what is done, failed or missing in them.

use super::grid::{Grid, TableFormat};
use super::output::{out, outln, print_json, Ui};
use crate::eval::status::StatusJob;
use crate::store::{merge_stores, MergeStoresJob, MergeSummary, State, Status, STORE_FILE};
use clap::{ArgGroup, Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Merge stores (the shards of a sweep) into one, exactly: a key holding different
    /// results in two stores is an error naming both.
    Merge(MergeArgs),
    /// Per checkpoint and task: done, failed or missing.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    ckpt store merge results/ --into ckpt.sqlite   # every results/*.sqlite: the shards\n  \
    ckpt store merge a.sqlite b.sqlite --into m.sqlite --json")]
pub(crate) struct MergeArgs {
    /// Stores to merge: files, or directories (every *.sqlite in them).
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<PathBuf>,
    /// The store to merge into: created if missing, else rewritten atomically (a
    /// conflict or a crash leaves it as it was).
    #[arg(long, value_name = "STORE")]
    into: PathBuf,
    #[command(flatten)]
    store_timeout: super::values::StoreTimeout,
    /// Print what was merged as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("task_list").args(["tasks", "suite"])))]
#[command(after_help = "Examples:\n  \
    ckpt store status                      # ckpt.sqlite: its checkpoints x tasks with results\n  \
    ckpt store status results/ --suite pt --checkpoints runs/   # shards as one; runs/ unscored too\n  \
    ckpt store status ckpt.sqlite --tasks arc_easy,hellaswag --json")]
pub(crate) struct StatusArgs {
    /// Stores: files, or directories whose *.sqlite files are read as one.
    #[arg(default_value = STORE_FILE, value_name = "STORE")]
    stores: Vec<PathBuf>,
    /// Tasks to check (names, groups or task TOML files; default: every task with a
    /// result in the stores).
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    /// A suite of the paper to check: pt, mt or sft.
    #[arg(long, conflicts_with = "tasks")]
    suite: Option<String>,
    /// Directory of task TOML files (as for ckpt eval), for --tasks or --suite.
    #[arg(long, requires = "task_list")]
    tasks_dir: Option<PathBuf>,
    /// Checkpoints, or directories searched for them, to check whether or not the
    /// stores know them (repeat or comma-separate; default: every checkpoint in the
    /// stores); hf://ORG/NAME[@REV] too, with --revisions for a run of branches.
    #[arg(long, value_delimiter = ',', value_name = "PATH")]
    checkpoints: Vec<PathBuf>,
    #[command(flatten)]
    hub: super::values::HubSourceArgs,
    #[command(flatten)]
    store_timeout: super::values::StoreTimeout,
    /// Print the status as JSON (the same as --format json).
    #[arg(long)]
    json: bool,
    /// table (long when wider than the terminal), wide, long, md, csv or json.
    #[arg(long, value_enum, default_value = "table")]
    format: TableFormat,
}

impl MergeArgs {
    /// The flags as a job.
    fn job(&self) -> anyhow::Result<MergeStoresJob> {
        Ok(MergeStoresJob {
            sources: self.sources.clone(),
            into: self.into.clone(),
            store_timeout: self.store_timeout.duration(),
        })
    }
}

impl StatusArgs {
    /// The flags as a job.
    fn job(&self) -> anyhow::Result<StatusJob> {
        Ok(StatusJob {
            stores: self.stores.clone(),
            tasks: self.tasks.clone(),
            suite: self.suite.clone(),
            tasks_dir: self.tasks_dir.clone(),
            checkpoints: self.checkpoints.clone(),
            hub: self.hub.options(),
            store_timeout: self.store_timeout.duration(),
        })
    }
}

pub(crate) fn run(args: &StoreArgs, _ui: &Ui) -> anyhow::Result<ExitCode> {
    match &args.command {
        StoreCommand::Merge(a) => run_merge(a),
        StoreCommand::Status(a) => run_status(a),
    }
}

fn run_merge(args: &MergeArgs) -> anyhow::Result<ExitCode> {
    let summary = merge_stores(&args.job()?)?;
    if args.json {
        print_json(&summary)?;
    } else {
        outln!("{}", merge_line(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

/// `merged N stores into STORE: checkpoints +2, ...` (or that nothing changed).
fn merge_line(s: &MergeSummary) -> String {
    let n = s.sources.len();
    let stores = if n == 1 { "store" } else { "stores" };
    if !s.changed {
        let differing: Vec<String> = s
            .tables
            .iter()
            .filter(|c| c.differing > 0)
            .map(|c| format!(" ({} {} differing, first kept)", c.differing, c.table))
            .collect();
        return format!(
            "{} already holds every row of the {n} {stores}: unchanged{}",
            s.into.display(),
            differing.concat()
        );
    }
    let tables: Vec<String> = s
        .tables
        .iter()
        .map(|c| {
            let mut cell = format!("{} +{}", c.table, c.added);
            if c.updated > 0 {
                cell.push_str(&format!(" ({} updated)", c.updated));
            }
            if c.differing > 0 {
                cell.push_str(&format!(" ({} differing, first kept)", c.differing));
            }
            cell
        })
        .collect();
    format!(
        "merged {n} {stores} into {}: {}",
        s.into.display(),
        tables.join(", ")
    )
}

fn run_status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let done = crate::eval::status::run(&args.job()?)?;
    if args.json || args.format == TableFormat::Json {
        print_json(&done.status)?;
    } else {
        print_status(&done.status, &done.store.display().to_string(), args.format);
    }
    Ok(ExitCode::SUCCESS)
}

/// A list of task names, the first few of a long one.
fn names(tasks: &[&str]) -> String {
    const SHOWN: usize = 6;
    if tasks.len() <= SHOWN {
        return tasks.join(", ");
    }
    format!(
        "{}, +{} more",
        tasks[..SHOWN].join(", "),
        tasks.len() - SHOWN
    )
}

fn print_status(status: &Status, store: &str, format: TableFormat) {
    let header = ["run", "step", "checkpoint", "done", "failed", "missing"];
    let mut grid = Grid {
        header: header.iter().map(|h| h.to_string()).collect(),
        rows: vec![],
        keys: 3,
    };
    for c in &status.checkpoints {
        grid.rows.push(vec![
            c.run.clone(),
            c.step.map(|s| s.to_string()).unwrap_or_default(),
            c.path.clone(),
            format!("{}/{}", c.in_state(State::Done).len(), c.tasks.len()),
            names(&c.in_state(State::Failed)),
            names(&c.in_state(State::Missing)),
        ]);
    }
    out!("{}", grid.render(format).trim_end_matches('\n'));
    outln!();
    // Data formats hold the one table.
    if matches!(format, TableFormat::Md | TableFormat::Csv) {
        return;
    }
    for c in status.checkpoints.iter().filter(|c| c.error.is_some()) {
        outln!(
            "failed: {}: {}",
            c.path,
            c.error.as_deref().unwrap_or_default()
        );
    }
    outln!(
        "{} checkpoints x {} tasks in {store}: {} done, {} failed, {} missing",
        status.checkpoints.len(),
        status.tasks.len(),
        status.done,
        status.failed,
        status.missing
    );
}

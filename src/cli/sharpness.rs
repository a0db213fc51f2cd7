//! `ckpt sharpness PATH... --data FILE`: Hessian-trace sharpness of every checkpoint
//! found, a table, a JSONL results file (resumable) and the paper's Figure 3.
//! The flags become a [`SharpnessJob`]; [`crate::sharpness::job::run`] does the work.

use super::grid::{Grid, TableFormat};
use super::output::{out, outln, print_json, Ui};
use super::values::f64_above;
use crate::checkpoint::Checkpoint;
use crate::sharpness::job::default_lanczos_steps;
use crate::sharpness::{
    Event, Method, Outcome, SftPlot, SharpnessJob, SharpnessOptions, SharpnessResult, TraceOptions,
};
use anyhow::bail;
use candle_core::DType;
use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MethodArg {
    /// Central differences of gradients (fast; 1e-4 to 5e-4 relative per probe in f32).
    Fd,
    /// Double backward (exact; several times slower and hungrier: a reference).
    Exact,
}

#[derive(Debug, Args)]
pub(crate) struct SharpnessArgs {
    /// Checkpoint directories, directories to search for checkpoints, or Hub
    /// checkpoints (hf://ORG/NAME[@REVISION]; with --revisions, a run of branches,
    /// fetched into the Hugging Face cache and kept).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    hub: super::values::HubArgs,
    /// The results store: finished measurements found there are not repeated, and new
    /// ones are recorded there (for `ckpt release` and reports) as well as in --out.
    #[arg(long)]
    store: Option<PathBuf>,
    #[command(flatten)]
    store_timeout: super::values::StoreTimeout,
    /// With --store: plot sharpness against the fine-tunes' score (the paper's Figure 4,
    /// with Pearson's r and p) into this PNG/SVG; --sft-task names the score.
    #[arg(long, requires_all = ["store", "sft_task"])]
    sft_plot: Option<PathBuf>,
    /// The SFT score for --sft-plot: TASK or TASK:METRIC (default metric acc).
    #[arg(long, requires = "sft_plot")]
    sft_task: Option<String>,
    /// A measurement set, [NAME=]FILE; repeat for several (--data pt=val.jsonl --data
    /// sft=chat.jsonl), each measured and recorded apart. Texts: .txt (one per line),
    /// .jsonl / .json / .parquet records with "text". Conversations (records with
    /// "messages"): rendered with the chat template, loss on the assistant's tokens.
    #[arg(long, required = true, value_name = "[NAME=]FILE")]
    data: Vec<String>,
    /// The template conversations are rendered with: own (the checkpoint's, Tulu's
    /// when it has none, as `ckpt train` fine-tunes), tulu, chatml, or a Jinja file
    /// [default: own].
    #[arg(long)]
    chat_template: Option<String>,
    /// Tokens per row [default: 1024, or the model's max_position_embeddings if less].
    #[arg(long)]
    seq_len: Option<usize>,
    /// Rows per batch.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Hutchinson probes (Rademacher vectors) per checkpoint.
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// Batches at most; every probe runs over all of them (the data's Hessian).
    #[arg(long, default_value_t = 4096)]
    max_batches: usize,
    /// Texts read at most, from the start of the file.
    #[arg(long, default_value_t = 16192)]
    max_texts: usize,
    /// Seed of the probes (probe i is the same whatever ran before it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How Hessian-vector products are computed.
    #[arg(long, value_enum, default_value = "fd")]
    method: MethodArg,
    /// Finite-difference step per entry of a probe: in [1e-6, 0.1] in f32, [1e-12, 0.1]
    /// in f64 (a smaller step is lost in the weights' rounding: the trace reads 0).
    #[arg(long, default_value_t = 3e-5)]
    eps: f64,
    /// f32 or f64.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Stop early once stderr / |estimate| falls below this, in (0, 1].
    #[arg(long, value_parser = f64_above(0.0, 1.0))]
    rel_tol: Option<f64>,
    /// Probes drawn before --rel-tol is looked at (a standard error needs two).
    #[arg(long, default_value_t = 10, value_parser = super::values::usize_in(2, 1_000_000))]
    min_probes: usize,
    /// Also estimate the top Hessian eigenvalue by power iteration.
    #[arg(long)]
    top_eigen: bool,
    /// Power-iteration products at most (at least 1: none gives no eigenvalue).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    eigen_iters: u32,
    /// Relative change of the eigenvalue that ends power iteration, in (0, 1].
    #[arg(long, default_value_t = 1e-3, value_parser = f64_above(0.0, 1.0))]
    eigen_tol: f64,
    /// Also find the K largest Hessian eigenvalues (1 to 20) by Lanczos with full
    /// reorthogonalisation, each with its residual bound.
    #[arg(long, value_name = "K", value_parser = super::values::usize_in(1, 20))]
    top_k: Option<usize>,
    /// Lanczos steps for --top-k (Hessian-vector products; memory: one copy of the
    /// parameters per step) [default: max(3 K, 30)].
    #[arg(long, requires = "top_k", value_parser = super::values::usize_in(1, 10_000))]
    lanczos_steps: Option<usize>,
    /// Also estimate the eigenvalue density by stochastic Lanczos quadrature
    /// (PyHessian's density(), with real eigenvalues and weights from the first
    /// eigenvector components).
    #[arg(long)]
    density: bool,
    /// SLQ runs (random starts) for --density.
    #[arg(long, default_value_t = 4, value_parser = super::values::usize_in(1, 10_000))]
    slq_runs: usize,
    /// Lanczos steps per SLQ run (memory: one copy of the parameters per step).
    #[arg(long, default_value_t = 30, value_parser = super::values::usize_in(1, 10_000))]
    slq_steps: usize,
    /// Plot the eigenvalue density of every checkpoint measured with --density (.png
    /// or .svg).
    #[arg(long, requires = "density")]
    density_plot: Option<PathBuf>,
    /// Results file (JSONL; finished checkpoints are skipped on a rerun)
    /// [default: sharpness.jsonl in the first PATH, or beside it if it is a checkpoint].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Plot sharpness against step, one line per run (.png or .svg).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Plot each layer's trace (attention + MLP + norms) as a heat map of layer against
    /// step, one panel per run (.png or .svg).
    #[arg(long)]
    block_plot: Option<PathBuf>,
    /// Also print every parameter block's trace (embeddings, each layer's attention,
    /// MLP and norms, the final norm, the head), from the same probes.
    #[arg(long)]
    blocks: bool,
    /// Write the token batches measured on (.npy: u32 [batches, rows, seq]; else JSON).
    #[arg(long)]
    save_batches: Option<PathBuf>,
    /// Tokenizer file to use instead of each checkpoint's tokenizer.json.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// cpu, cuda, cuda:N or cuda:auto (LOCAL_RANK's GPU).
    #[arg(long, env = "CKPT_DEVICE", default_value = "cpu")]
    device: String,
    /// Print the results as JSON instead of a table (the same as --format json).
    #[arg(long)]
    json: bool,
    /// table (long when wider than the terminal), wide, long, md, csv or json.
    #[arg(long, value_enum, default_value = "table")]
    format: TableFormat,
    #[command(flatten)]
    shard: super::values::ShardArgs,
}

impl SharpnessArgs {
    /// Whether the run takes exact Hessian-vector products, for which the process must
    /// keep gradient graphs from its start.
    pub(crate) fn needs_gradient_graphs(&self) -> bool {
        matches!(self.method, MethodArg::Exact)
    }

    /// The typed job these flags ask for (values parsed, not yet checked).
    fn job(&self) -> anyhow::Result<SharpnessJob> {
        let dtype = match self.dtype.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => DType::F32,
            "f64" | "float64" => DType::F64,
            other => bail!("--dtype {other:?}: sharpness runs in f32 or f64"),
        };
        let chat_template = self
            .chat_template
            .as_deref()
            .map(crate::chat::TemplateChoice::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--chat-template: {e}"))?;
        let measure = SharpnessOptions {
            chat_template,
            seq_len: self.seq_len,
            batch_size: self.batch_size,
            max_batches: Some(self.max_batches),
            max_texts: Some(self.max_texts),
            trace: TraceOptions {
                probes: self.samples,
                seed: self.seed,
                rel_tol: self.rel_tol,
                min_probes: self.min_probes,
            },
            method: match self.method {
                MethodArg::Fd => Method::FiniteDifference { eps: self.eps },
                MethodArg::Exact => Method::Exact,
            },
            dtype,
            device: crate::device::parse_device(&self.device)?,
            top_eigen_iters: self.top_eigen.then_some(self.eigen_iters as usize),
            top_eigen_tol: self.eigen_tol,
            top_k: self.top_k.map(|k| {
                let steps = self.lanczos_steps;
                (k, steps.unwrap_or_else(|| default_lanczos_steps(k)))
            }),
            density: self.density.then_some((self.slq_runs, self.slq_steps)),
            tokenizer: self.tokenizer.clone(),
            save_batches: self.save_batches.clone(),
        };
        let sft_plot = match (&self.sft_plot, &self.sft_task) {
            (Some(path), Some(spec)) => {
                let (task, metric) = spec.split_once(':').unwrap_or((spec.as_str(), "acc"));
                Some(SftPlot {
                    path: path.clone(),
                    task: task.into(),
                    metric: metric.into(),
                })
            }
            _ => None,
        };
        Ok(SharpnessJob {
            paths: self.paths.clone(),
            hub: self.hub.options(),
            retention: self.hub.retention(),
            store: self.store.clone(),
            store_timeout: self.store_timeout.duration(),
            sft_plot,
            data: self
                .data
                .iter()
                .map(|d| crate::sharpness::sets::parse_spec(d))
                .collect(),
            measure,
            out: self.out.clone(),
            plot: self.plot.clone(),
            block_plot: self.block_plot.clone(),
            density_plot: self.density_plot.clone(),
            shard: self.shard.resolve()?,
        })
    }
}

pub(crate) fn run(args: &SharpnessArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let job = args.job()?;
    let mut bar: Option<ProgressBar> = None;
    let mut on_event = |event: Event| match event {
        Event::Start {
            checkpoint,
            index,
            total,
            probes,
            resumed,
            set,
        } => {
            let label = progress_label(checkpoint, index, total, set);
            let b = ui.progress(probes as u64, &label);
            b.set_position(resumed as u64);
            if resumed > 0 {
                tracing::info!(
                    "{}: resuming after {resumed} probes",
                    checkpoint.dir.display()
                );
            }
            bar = Some(b);
        }
        Event::Probe { estimate } => {
            if let Some(b) = &bar {
                b.set_position(estimate.len() as u64);
            }
        }
        Event::SavedBatches(path) => {
            tracing::info!("token batches written to {}", path.display());
        }
    };
    let done = crate::sharpness::job::run(&job, ui.bar("downloading"), &mut on_event)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let (Some(corr), Some(plot)) = (&done.sft, &job.sft_plot) {
        let (task, metric, path) = (&corr.task, &corr.metric, plot.path.display());
        match (corr.pearson_r, corr.p_value) {
            (Some(r), Some(p)) => eprintln!(
                "sharpness vs SFT {task} {metric}: Pearson r = {r:.3} (p = {p:.3}, {} checkpoints); plot in {path}",
                corr.points.len(),
            ),
            _ => eprintln!(
                "sharpness vs SFT {task} {metric}: {} checkpoints, too few for a correlation; plot in {path}",
                corr.points.len(),
            ),
        }
    }

    let mut shown: Vec<(&SharpnessResult, bool)> = Vec::new();
    let mut failed = 0;
    for outcome in &done.outcomes {
        match outcome {
            Outcome::Measured(r) => shown.push((r, false)),
            Outcome::Skipped(r) => shown.push((r, true)),
            Outcome::Failed { checkpoint, error } => {
                failed += 1;
                // Errors from the checkpoint's own files already name it.
                let msg = error.to_string();
                if msg.contains(&checkpoint.display().to_string()) {
                    eprintln!("error: {msg}");
                } else {
                    eprintln!("error: {}: {msg}", checkpoint.display());
                }
            }
        }
    }
    if args.json || args.format == TableFormat::Json {
        let all: Vec<&SharpnessResult> = shown.iter().map(|(r, _)| *r).collect();
        print_json(&all)?;
    } else if !shown.is_empty() {
        print_table(&shown, args.format);
        if args.blocks {
            print_blocks(&shown, args.format);
        }
        if !matches!(args.format, TableFormat::Md | TableFormat::Csv) {
            outln!("results: {}", done.out.display());
        }
    }
    for (what, path) in &done.skipped_plots {
        eprintln!(
            "warning: no result with {what} to plot; {} not written",
            path.display()
        );
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn progress_label(ckpt: &Checkpoint, index: usize, total: usize, set: Option<&str>) -> String {
    let name = ckpt
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match set {
        Some(set) => format!("[{}/{total}] {name} {set} probes", index + 1),
        None => format!("[{}/{total}] {name} probes", index + 1),
    }
}

/// `path` relative to the working directory when it lies below it.
fn shown_path(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}

/// Every block's trace, one row per checkpoint and block.
fn print_blocks(rows: &[(&SharpnessResult, bool)], format: TableFormat) {
    let mut grid = Grid {
        header: ["checkpoint", "block", "Tr(H_B)", "stderr", "share"]
            .map(String::from)
            .to_vec(),
        rows: vec![],
        keys: 2,
    };
    for (r, _) in rows {
        for b in &r.blocks {
            grid.rows.push(vec![
                shown_path(&r.checkpoint).display().to_string(),
                b.name.clone(),
                format!("{:.4}", b.estimate),
                b.stderr.map_or_else(|| "-".into(), |s| format!("{s:.4}")),
                format!("{:.1}%", 100.0 * b.estimate / r.estimate),
            ]);
        }
    }
    if grid.rows.is_empty() {
        eprintln!("note: no block traces recorded (measured by an older version)");
        return;
    }
    outln!();
    out!("{}", grid.render(format).trim_end_matches('\n'));
    outln!();
}

fn print_table(rows: &[(&SharpnessResult, bool)], format: TableFormat) {
    let top = rows.iter().any(|(r, _)| r.top_eigenvalue.is_some());
    let top_k = rows.iter().any(|(r, _)| r.top_eigenvalues.is_some());
    let sets = rows.iter().any(|(r, _)| r.config.set.is_some());
    let mut header = vec![
        "checkpoint",
        "set",
        "step",
        "schedule",
        "Tr(H)",
        "stderr",
        "probes",
        "batches",
        "seconds",
    ];
    if top {
        header.push("top eigenvalue");
    }
    if top_k {
        header.push("top eigenvalues (Lanczos)");
    }
    if !sets {
        header.remove(1);
    }
    let mut grid = Grid {
        header: header.iter().map(|h| h.to_string()).collect(),
        rows: vec![],
        keys: if sets { 4 } else { 3 },
    };
    for (r, skipped) in rows {
        let mut row = vec![shown_path(&r.checkpoint).display().to_string()];
        if sets {
            row.push(r.config.set.clone().unwrap_or_else(|| "-".into()));
        }
        row.extend([
            r.step.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            r.schedule
                .as_ref()
                .map(|s| s.kind.clone())
                .unwrap_or_else(|| "-".into()),
            format!("{:.4}", r.estimate),
            r.stderr
                .map(|s| format!("{s:.4}"))
                .unwrap_or_else(|| "-".into()),
            match r.probe_start {
                // A shard's block: which probes.
                Some(a) => format!("{a}..{}", a + r.probes),
                None => r.probes.to_string(),
            },
            r.batches.to_string(),
            if *skipped {
                "done before".into()
            } else {
                format!("{:.1}", r.seconds)
            },
        ]);
        if top {
            row.push(
                r.top_eigenvalue
                    .as_ref()
                    .map(|e| format!("{:.4}", e.value))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        if top_k {
            row.push(r.top_eigenvalues.as_ref().map_or_else(
                || "-".into(),
                |t| {
                    let shown: Vec<String> =
                        t.values.iter().take(3).map(|v| format!("{v:.4}")).collect();
                    let more = if t.values.len() > 3 { ", ..." } else { "" };
                    format!("{}{more}", shown.join(", "))
                },
            ));
        }
        grid.rows.push(row);
    }
    out!("{}", grid.render(format).trim_end_matches('\n'));
    outln!();
    if let Some((r, _)) = rows.first() {
        outln!(
            "data {} ({} tokens of {} x {} per batch, hash {}), {} probes, {} ({})",
            r.config.data,
            r.target_tokens,
            r.config.batch_size,
            r.config.seq_len,
            &r.config.data_hash[..12],
            r.config.samples,
            r.config.method,
            r.config.dtype
        );
    }
}

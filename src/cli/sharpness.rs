//! `ckpt sharpness PATH... --data FILE`: Hessian-trace sharpness of every checkpoint
//! found, a table, a JSONL results file (resumable) and the paper's Figure 3.

use super::grid::{Grid, TableFormat};
use super::output::{out, outln, print_json, Ui};
use super::values::f64_above;
use crate::checkpoint::{is_checkpoint_dir, Checkpoint};
use crate::hub::sweep::Downloads;
use crate::sharpness::figure::sharpness_chart;
use crate::sharpness::sets::DataSet;
use crate::sharpness::{
    measure_revisions, measure_units, Event, Method, Outcome, ResultsFile, SharpnessOptions,
    SharpnessResult, TraceOptions, Unit,
};
use crate::sources::Candidate;
use anyhow::{bail, Context};
use candle_core::DType;
use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// File name of the results file when `--out` is not given.
pub const DEFAULT_OUT: &str = "sharpness.jsonl";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MethodArg {
    /// Central differences of gradients (fast; 1e-4 to 5e-4 relative per probe in f32).
    Fd,
    /// Double backward (exact; several times slower and hungrier: a reference).
    Exact,
}

#[derive(Debug, Args)]
pub struct SharpnessArgs {
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
    pub fn needs_gradient_graphs(&self) -> bool {
        matches!(self.method, MethodArg::Exact)
    }
}

pub fn run(args: &SharpnessArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    // A plot is drawn at the end: its format is checked before hours of measuring.
    for plot in [
        &args.plot,
        &args.sft_plot,
        &args.block_plot,
        &args.density_plot,
    ]
    .into_iter()
    .flatten()
    {
        crate::plot::ImageFormat::from_path(plot)?;
    }
    let opts = options(args)?;
    let specs: Vec<_> = args
        .data
        .iter()
        .map(|d| crate::sharpness::sets::parse_spec(d))
        .collect();
    crate::sharpness::sets::check_names(&specs)?;
    for (_, path) in &specs {
        if !path.is_file() {
            bail!("{}: no such file (--data)", path.display());
        }
    }
    let shard = args.shard.resolve()?;
    let (candidates, hub) = crate::sources::candidates(&args.paths, &args.hub.options())?;
    if candidates.is_empty() {
        bail!(
            "no checkpoint (config.json + *.safetensors or pytorch_model.bin) under {}",
            join_paths(&args.paths)
        );
    }
    let mut checkpoints = Vec::new();
    let mut revisions = Vec::new();
    for candidate in candidates {
        match candidate {
            Candidate::Local(c) => checkpoints.push(*c),
            Candidate::Hub(rev) => revisions.push(rev),
        }
    }
    if let Some(s) = shard {
        // Every revision of a suite has one size: equal costs.
        let mine = s.select(&vec![1; revisions.len()]);
        revisions = revisions
            .into_iter()
            .zip(mine)
            .filter_map(|(r, m)| m.then_some(r))
            .collect();
    }
    let units = match shard {
        Some(s) => shard_units(&checkpoints, s, &opts),
        None => checkpoints
            .iter()
            .map(|checkpoint| Unit {
                checkpoint,
                probes: None,
            })
            .collect(),
    };
    let sets = specs
        .into_iter()
        .map(|(name, path)| DataSet::open(name, &path))
        .collect::<Result<Vec<_>, _>>()?;
    if args.chat_template.is_some() && !sets.iter().any(DataSet::is_chat) {
        bail!("--chat-template: no --data set holds conversations (records with \"messages\") to render");
    }
    let mut out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.paths[0]));
    if let Some(s) = shard {
        out = beside(&out, s, "jsonl");
    }
    let mut results = ResultsFile::open(&out)?;
    let store = match &args.store {
        Some(p) => Some(crate::store::Store::open_waiting(
            &shard.map_or_else(|| p.clone(), |s| s.store_path(p)),
            args.store_timeout.duration(),
        )?),
        None => None,
    };
    if let Some(store) = &store {
        results.adopt(ResultsFile::from_store(store)?);
    }
    if shard.is_none() {
        // The blocks shards measured beside --out are joined, not measured again.
        for sibling in shard_files(&out)? {
            results.adopt(ResultsFile::open(&sibling)?.results().to_vec());
        }
    }

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
    let mut outcomes = measure_units(&units, &sets, &opts, &mut results, &mut on_event);
    if let Some(hub) = hub {
        let mut downloads = Downloads::new(hub, args.hub.retention(), ui.bar("downloading"));
        outcomes.extend(measure_revisions(
            &revisions,
            &mut downloads,
            &sets,
            &opts,
            &mut results,
            &mut on_event,
        ));
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(store) = &store {
        results.save_to_store(store)?;
        if let (Some(path), Some(spec)) = (&args.sft_plot, &args.sft_task) {
            let (task, metric) = spec.split_once(':').unwrap_or((spec.as_str(), "acc"));
            let corr = crate::sharpness::sft::sft_correlation(store, task, metric)?;
            crate::sharpness::sft::plot(path, &corr)?;
            match (corr.pearson_r, corr.p_value) {
                (Some(r), Some(p)) => eprintln!(
                    "sharpness vs SFT {task} {metric}: Pearson r = {r:.3} (p = {p:.3}, {} checkpoints); plot in {}",
                    corr.points.len(),
                    path.display()
                ),
                _ => eprintln!(
                    "sharpness vs SFT {task} {metric}: {} checkpoints, too few for a correlation; plot in {}",
                    corr.points.len(),
                    path.display()
                ),
            }
        }
    }

    let mut shown: Vec<(&SharpnessResult, bool)> = Vec::new();
    let mut failed = 0;
    for outcome in &outcomes {
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
            outln!("results: {}", out.display());
        }
    }
    let names: Vec<Option<String>> = sets.iter().map(|s| s.name.clone()).collect();
    for name in &names {
        let of_set: Vec<SharpnessResult> = shown
            .iter()
            .filter(|(r, _)| !r.is_block() && (names.len() == 1 || r.config.set == *name))
            .map(|(r, _)| (*r).clone())
            .collect();
        let set = if names.len() > 1 {
            name.as_deref()
        } else {
            None
        };
        draw_plots(args, &of_set, set)?;
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The plots asked for, of one set's results; with several sets, each file is
/// `NAME.SET.EXT` (the paper's Figure 3 has one panel per set).
fn draw_plots(
    args: &SharpnessArgs,
    done: &[SharpnessResult],
    set: Option<&str>,
) -> anyhow::Result<()> {
    let named = |path: &Path| match set {
        Some(set) => {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let ext = path.extension().unwrap_or_default().to_string_lossy();
            path.with_file_name(format!("{stem}.{set}.{ext}"))
        }
        None => path.to_path_buf(),
    };
    let skipped = |what: &str, path: &Path| {
        eprintln!(
            "warning: no result with {what} to plot; {} not written",
            path.display()
        )
    };
    if let Some(path) = args.plot.as_deref().map(named) {
        if done.iter().any(|r| r.step.is_some()) {
            let mut chart = sharpness_chart(done);
            if let Some(set) = set {
                chart.title = format!("{} ({set})", chart.title);
            }
            crate::plot::line_chart(&path, &chart)
                .with_context(|| format!("plotting {}", path.display()))?;
        } else {
            skipped("a step", &path);
        }
    }
    if let Some(path) = args.density_plot.as_deref().map(named) {
        match crate::sharpness::figure::density_chart(done) {
            Some(chart) => crate::plot::line_chart(&path, &chart)
                .with_context(|| format!("plotting {}", path.display()))?,
            None => skipped("a density", &path),
        }
    }
    if let Some(path) = args.block_plot.as_deref().map(named) {
        let maps = crate::sharpness::figure::block_heat_maps(done);
        if maps.is_empty() {
            skipped("a step and block traces", &path);
        } else {
            let title = match set {
                Some(set) => format!("Hessian trace per layer ({set})"),
                None => "Hessian trace per layer (Hutchinson)".into(),
            };
            crate::plot::heat_maps(&path, &title, &maps)
                .with_context(|| format!("plotting {}", path.display()))?;
        }
    }
    Ok(())
}

/// The library's options from the flags, checked.
fn options(args: &SharpnessArgs) -> anyhow::Result<SharpnessOptions> {
    if args.samples == 0 || args.batch_size == 0 || args.max_batches == 0 || args.max_texts == 0 {
        bail!("--samples, --batch-size, --max-batches and --max-texts must be positive");
    }
    let dtype = match args.dtype.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => DType::F32,
        "f64" | "float64" => DType::F64,
        other => bail!("--dtype {other:?}: sharpness runs in f32 or f64"),
    };
    let method = match args.method {
        MethodArg::Fd => Method::FiniteDifference {
            eps: checked_eps(args.eps, dtype)?,
        },
        MethodArg::Exact => Method::Exact,
    };
    Ok(SharpnessOptions {
        chat_template: crate::chat::TemplateChoice::parse(
            args.chat_template.as_deref().unwrap_or("own"),
        )
        .map_err(|e| anyhow::anyhow!("--chat-template: {e}"))?,
        seq_len: args.seq_len,
        batch_size: args.batch_size,
        max_batches: Some(args.max_batches),
        max_texts: Some(args.max_texts),
        trace: TraceOptions {
            probes: args.samples,
            seed: args.seed,
            rel_tol: args.rel_tol,
            min_probes: args.min_probes,
        },
        method,
        dtype,
        device: crate::device::parse_device(&args.device)?,
        top_eigen_iters: args.top_eigen.then_some(args.eigen_iters as usize),
        top_eigen_tol: args.eigen_tol,
        top_k: args
            .top_k
            .map(|k| (k, args.lanczos_steps.unwrap_or((3 * k).max(30)))),
        density: args.density.then_some((args.slq_runs, args.slq_steps)),
        tokenizer: args.tokenizer.clone(),
        save_batches: args.save_batches.clone(),
    })
}

/// `--eps`, checked against the dtype: a step below a few units in the last place of
/// the weights perturbs nothing, and the finite difference reads Tr(H) = 0 +- 0.
fn checked_eps(eps: f64, dtype: DType) -> anyhow::Result<f64> {
    let (min, name) = match dtype {
        DType::F64 => (1e-12, "f64"),
        _ => (1e-6, "f32"),
    };
    const MAX: f64 = 0.1;
    if !(eps.is_finite() && (min..=MAX).contains(&eps)) {
        bail!("--eps must be in [{min:e}, {MAX}] in {name}, got {eps:e}");
    }
    Ok(eps)
}

/// The checkpoints shard `s` measures: a checkpoint is the unit, its parameter count
/// the cost.
/// This shard's units. With at least as many checkpoints as shards, a unit is a
/// checkpoint; with fewer, each checkpoint's probes are cut into `ceil(N / checkpoints)`
/// blocks so every shard has work (not with `--rel-tol`, whose stopping rule needs all
/// of a checkpoint's probes in one place). Cost: parameters x probes.
fn shard_units<'a>(
    checkpoints: &'a [crate::checkpoint::Checkpoint],
    s: crate::shard::Shard,
    opts: &SharpnessOptions,
) -> Vec<Unit<'a>> {
    let probes = opts.trace.probes.max(1);
    let per_checkpoint = if opts.trace.rel_tol.is_some() || checkpoints.is_empty() {
        1
    } else {
        s.count.div_ceil(checkpoints.len()).clamp(1, probes)
    };
    let mut units = Vec::new();
    let mut costs = Vec::new();
    for checkpoint in checkpoints {
        let parameters = checkpoint
            .config()
            .map(|c| c.num_parameters() as u64)
            .unwrap_or(1);
        for b in 0..per_checkpoint {
            let range = (b * probes / per_checkpoint)..((b + 1) * probes / per_checkpoint);
            costs.push(parameters.saturating_mul(range.len() as u64));
            units.push(Unit {
                checkpoint,
                probes: (per_checkpoint > 1).then_some(range),
            });
        }
    }
    let mine = s.select(&costs);
    units
        .into_iter()
        .zip(mine)
        .filter_map(|(u, m)| m.then_some(u))
        .collect()
}

/// The shards' results files beside `out` (`NAME.shard-I-of-N.jsonl`).
fn shard_files(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let stem = out
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = crate::error::parent_dir(out);
    let pattern = regex::Regex::new(&format!(
        r"^{}\.shard-\d+-of-\d+\.jsonl$",
        regex::escape(&stem)
    ))?;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(vec![]);
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| pattern.is_match(&n.to_string_lossy()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// `DIR/NAME.shard-I-of-N.EXT` beside `path`.
fn beside(path: &Path, s: crate::shard::Shard, ext: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sharpness".into());
    path.with_file_name(format!("{stem}.shard-{}-of-{}.{ext}", s.index, s.count))
}

/// `sharpness.jsonl` in `first` when it is a directory of checkpoints, beside the
/// checkpoint when it is one (or a file in one).
fn default_out(first: &Path) -> PathBuf {
    if crate::hub::source::is_hub_path(first) {
        // Beside nothing on disk: in the working directory.
        return PathBuf::from(DEFAULT_OUT);
    }
    let dir = if first.is_file() {
        crate::error::parent_dir(first)
    } else {
        first
    };
    if is_checkpoint_dir(dir) {
        crate::error::parent_dir(dir).join(DEFAULT_OUT)
    } else {
        dir.join(DEFAULT_OUT)
    }
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

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
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

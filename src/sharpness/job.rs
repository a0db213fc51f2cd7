//! `SharpnessJob`: what `ckpt sharpness` asks for, as typed values, checked in one
//! place; [`run`] finds the checkpoints, measures them (resuming from the results file
//! and the store), records the results and draws the plots.
//!
//! ```no_run
//! # fn demo(job: &ckpt::sharpness::SharpnessJob) -> ckpt::Result<()> {
//! let transfer = std::sync::Arc::new(ckpt::progress::Silent);
//! let done = ckpt::sharpness::job::run(job, transfer, &mut |_event| {})?;
//! println!("{} checkpoints, results in {}", done.outcomes.len(), done.out.display());
//! # Ok(()) }
//! ```

use super::measure::{measure_revisions, measure_units, Event, Outcome, SharpnessOptions, Unit};
use super::results::{ResultsFile, SharpnessResult};
use super::sets::DataSet;
use super::Method;
use crate::checkpoint::{is_checkpoint_dir, Checkpoint};
use crate::error::{Error, Result};
use crate::hub::sweep::{Downloads, Retention};
use crate::shard::Shard;
use crate::sources::{Candidate, HubOptions};
use candle_core::DType;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File name of the results file when no `out` is given.
pub const DEFAULT_OUT: &str = "sharpness.jsonl";

/// A sharpness sweep: which checkpoints, on which texts, measured how, written where.
#[derive(Debug, Clone)]
pub struct SharpnessJob {
    /// Checkpoint directories, directories to search, or Hub checkpoints
    /// (`hf://ORG/NAME[@REVISION]`).
    pub paths: Vec<PathBuf>,
    /// How Hub sources are read (revisions, steps).
    pub hub: HubOptions,
    /// What a sweep of Hub revisions keeps on disk.
    pub retention: Retention,
    /// The results store: finished measurements there are not repeated, new ones are
    /// recorded there too.
    pub store: Option<PathBuf>,
    /// How long to wait for another process's lock on the store.
    pub store_timeout: Duration,
    /// Sharpness against the fine-tunes' score (needs `store`).
    pub sft_plot: Option<SftPlot>,
    /// The measurement sets: an optional name and a file each.
    pub data: Vec<(Option<String>, PathBuf)>,
    /// How each checkpoint is measured.
    pub measure: SharpnessOptions,
    /// The results file (JSONL); `None`: [`DEFAULT_OUT`] in or beside the first path.
    pub out: Option<PathBuf>,
    /// Sharpness against step, one line per run (.png or .svg).
    pub plot: Option<PathBuf>,
    /// Each layer's trace as a heat map of layer against step.
    pub block_plot: Option<PathBuf>,
    /// The eigenvalue densities (needs `measure.density`).
    pub density_plot: Option<PathBuf>,
    /// This process's part of a sharded sweep.
    pub shard: Option<Shard>,
}

/// The plot of sharpness against an SFT score.
#[derive(Debug, Clone)]
pub struct SftPlot {
    /// The PNG or SVG file.
    pub path: PathBuf,
    pub task: String,
    /// The score's metric (`acc` when the flag names none).
    pub metric: String,
}

/// What a sweep did.
#[derive(Debug)]
pub struct SharpnessOutcome {
    /// One per checkpoint (and set), in the order measured.
    pub outcomes: Vec<Outcome>,
    /// The results file written.
    pub out: PathBuf,
    /// The measurement sets' names, in the order given.
    pub sets: Vec<Option<String>>,
    /// The correlation plotted into `sft_plot`.
    pub sft: Option<super::sft::SftCorrelation>,
    /// Plots asked for but not drawn: what their results lacked, and the file.
    pub skipped_plots: Vec<(&'static str, PathBuf)>,
}

impl SharpnessJob {
    /// Every value and combination, checked before hours of measuring.
    pub fn check(&self) -> Result<()> {
        // A plot is drawn at the end: its format is checked first.
        let sft = self.sft_plot.as_ref().map(|s| &s.path);
        for plot in [&self.plot, &self.block_plot, &self.density_plot]
            .into_iter()
            .flatten()
            .chain(sft)
        {
            crate::plot::ImageFormat::from_path(plot)?;
        }
        let m = &self.measure;
        if m.trace.probes == 0
            || m.batch_size == 0
            || m.max_batches == Some(0)
            || m.max_texts == Some(0)
        {
            return invalid(
                "--samples, --batch-size, --max-batches and --max-texts must be positive",
            );
        }
        self.check_precision()?;
        self.check_ranges()?;
        self.check_combinations()?;
        super::sets::check_names(&self.data)?;
        for (_, path) in &self.data {
            if !path.is_file() {
                return invalid(format!("{}: no such file (--data)", path.display()));
            }
        }
        Ok(())
    }

    /// `dtype`, and `--eps` against it: a step below a few units in the last place of
    /// the weights perturbs nothing, and the finite difference reads Tr(H) = 0 +- 0.
    fn check_precision(&self) -> Result<()> {
        let (min, name) = match self.measure.dtype {
            DType::F32 => (1e-6, "f32"),
            DType::F64 => (1e-12, "f64"),
            other => {
                return invalid(format!(
                    "--dtype {:?}: sharpness runs in f32 or f64",
                    other.as_str()
                ))
            }
        };
        const MAX: f64 = 0.1;
        match self.measure.method {
            Method::FiniteDifference { eps }
                if !(eps.is_finite() && (min..=MAX).contains(&eps)) =>
            {
                invalid(format!(
                    "--eps must be in [{min:e}, {MAX}] in {name}, got {eps:e}"
                ))
            }
            _ => Ok(()),
        }
    }

    /// The ranges the flags' parsers enforce, again for library callers.
    fn check_ranges(&self) -> Result<()> {
        let m = &self.measure;
        if let Some(n) = m.seq_len.filter(|&n| n < 2) {
            return invalid(format!("--seq-len must be at least 2, got {n}"));
        }
        let unit = |flag: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                invalid(format!("{flag} must be in (0, 1], got {v}"))
            }
        };
        if let Some(tol) = m.trace.rel_tol {
            unit("--rel-tol", tol)?;
        }
        unit("--eigen-tol", m.top_eigen_tol)?;
        in_range("--min-probes", m.trace.min_probes, 2, 1_000_000)?;
        if m.top_eigen_iters == Some(0) {
            return invalid("--eigen-iters must be at least 1 (none gives no eigenvalue)");
        }
        if let Some((k, steps)) = m.top_k {
            in_range("--top-k", k, 1, 20)?;
            in_range("--lanczos-steps", steps, 1, 10_000)?;
        }
        if let Some((runs, steps)) = m.density {
            in_range("--slq-runs", runs, 1, 10_000)?;
            in_range("--slq-steps", steps, 1, 10_000)?;
        }
        Ok(())
    }

    /// Options that need another one.
    fn check_combinations(&self) -> Result<()> {
        if self.paths.is_empty() {
            return invalid("give at least one checkpoint path");
        }
        if self.data.is_empty() {
            return invalid("give at least one --data set");
        }
        if self.sft_plot.is_some() && self.store.is_none() {
            return invalid("--sft-plot needs --store (the fine-tunes' scores are read there)");
        }
        if self.density_plot.is_some() && self.measure.density.is_none() {
            return invalid("--density-plot needs --density");
        }
        Ok(())
    }

    /// Whether the run takes exact Hessian-vector products, for which the process must
    /// keep gradient graphs from its start
    /// ([`keep_gradient_graphs_from_start`](super::keep_gradient_graphs_from_start)).
    pub fn needs_gradient_graphs(&self) -> bool {
        self.measure.method == Method::Exact
    }
}

/// Lanczos steps for the top `k` eigenvalues when none are asked for (the
/// `--lanczos-steps` default): `max(3 k, 30)`.
pub fn default_lanczos_steps(k: usize) -> usize {
    (3 * k).max(30)
}

fn invalid(message: impl Into<String>) -> Result<()> {
    Err(Error::Invalid(message.into()))
}

fn in_range(flag: &str, n: usize, lo: usize, hi: usize) -> Result<()> {
    if (lo..=hi).contains(&n) {
        Ok(())
    } else {
        invalid(format!(
            "{flag} must be a whole number from {lo} to {hi}, got {n}"
        ))
    }
}

/// Runs the sweep: checks the job, measures every checkpoint found (local ones first,
/// then Hub revisions, downloaded through `transfer`), records the results in the
/// results file and the store, and draws the plots. A checkpoint that fails is
/// reported in its [`Outcome`] and the others go on.
pub fn run(
    job: &SharpnessJob,
    transfer: crate::progress::Shared,
    on_event: &mut dyn FnMut(Event),
) -> Result<SharpnessOutcome> {
    job.check()?;
    let (candidates, hub) = crate::sources::candidates(&job.paths, &job.hub)?;
    if candidates.is_empty() {
        return Err(Error::bad_value(
            "PATH",
            format!(
                "no checkpoint (config.json + *.safetensors or pytorch_model.bin) under {}",
                crate::sources::join_paths(&job.paths)
            ),
        ));
    }
    let (checkpoints, revisions) = split_candidates(candidates, job.shard);
    let units = match job.shard {
        Some(s) => shard_units(&checkpoints, s, &job.measure),
        None => checkpoints
            .iter()
            .map(|checkpoint| Unit {
                checkpoint,
                probes: None,
            })
            .collect(),
    };
    let sets = job
        .data
        .iter()
        .map(|(name, path)| DataSet::open(name.clone(), path))
        .collect::<Result<Vec<_>>>()?;
    if job.measure.chat_template.is_some() && !sets.iter().any(DataSet::is_chat) {
        return Err(Error::bad_value("--chat-template", "--chat-template: no --data set holds conversations (records with \"messages\") to render"));
    }
    let out = results_path(job);
    let mut results = ResultsFile::open(&out)?;
    let store = open_store(job)?;
    if let Some(store) = &store {
        results.adopt(ResultsFile::from_store(store)?);
    }
    if job.shard.is_none() {
        // The blocks shards measured beside the results file are joined, not measured
        // again.
        for sibling in shard_files(&out)? {
            results.adopt(ResultsFile::open(&sibling)?.results().to_vec());
        }
    }
    let mut outcomes = measure_units(&units, &sets, &job.measure, &mut results, on_event);
    if let Some(hub) = hub {
        let mut downloads = Downloads::new(hub, job.retention, transfer);
        outcomes.extend(measure_revisions(
            &revisions,
            &mut downloads,
            &sets,
            &job.measure,
            &mut results,
            on_event,
        ));
    }
    let mut sft = None;
    if let Some(store) = &store {
        results.save_to_store(store)?;
        if let Some(plot) = &job.sft_plot {
            let corr = super::sft::sft_correlation(store, &plot.task, &plot.metric)?;
            super::sft::plot(&plot.path, &corr)?;
            sft = Some(corr);
        }
    }
    let names: Vec<Option<String>> = sets.iter().map(|s| s.name.clone()).collect();
    let skipped_plots = draw_all_plots(job, &outcomes, &names)?;
    Ok(SharpnessOutcome {
        outcomes,
        out,
        sets: names,
        sft,
        skipped_plots,
    })
}

/// Local checkpoints and Hub revisions apart; with a shard, its part of the revisions.
fn split_candidates(
    candidates: Vec<Candidate>,
    shard: Option<Shard>,
) -> (Vec<Checkpoint>, Vec<crate::hub::HubRevision>) {
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
    (checkpoints, revisions)
}

/// The results file: as asked or the default, a shard's own beside it.
fn results_path(job: &SharpnessJob) -> PathBuf {
    let out = job
        .out
        .clone()
        .unwrap_or_else(|| default_out(&job.paths[0]));
    match job.shard {
        Some(s) => beside(&out, s, "jsonl"),
        None => out,
    }
}

/// The results store (a shard's own beside it), waiting for another process's lock.
fn open_store(job: &SharpnessJob) -> Result<Option<crate::store::Store>> {
    job.store
        .as_ref()
        .map(|p| {
            let path = job.shard.map_or_else(|| p.clone(), |s| s.store_path(p));
            crate::store::Store::open_waiting(&path, job.store_timeout)
        })
        .transpose()
}

/// The plots of every set's results (measured now or before); a plot with nothing to
/// show is listed, not drawn.
fn draw_all_plots(
    job: &SharpnessJob,
    outcomes: &[Outcome],
    names: &[Option<String>],
) -> Result<Vec<(&'static str, PathBuf)>> {
    let mut skipped = Vec::new();
    for name in names {
        let of_set: Vec<SharpnessResult> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Measured(r) | Outcome::Skipped(r) => Some(r),
                Outcome::Failed { .. } => None,
            })
            .filter(|r| !r.is_block() && (names.len() == 1 || r.config.set == *name))
            .cloned()
            .collect();
        let set = if names.len() > 1 {
            name.as_deref()
        } else {
            None
        };
        draw_plots(job, &of_set, set, &mut skipped)?;
    }
    Ok(skipped)
}

/// The plots asked for, of one set's results; with several sets, each file is
/// `NAME.SET.EXT` (the paper's Figure 3 has one panel per set).
fn draw_plots(
    job: &SharpnessJob,
    done: &[SharpnessResult],
    set: Option<&str>,
    skipped: &mut Vec<(&'static str, PathBuf)>,
) -> Result<()> {
    let named = |path: &Path| match set {
        Some(set) => {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let ext = path.extension().unwrap_or_default().to_string_lossy();
            path.with_file_name(format!("{stem}.{set}.{ext}"))
        }
        None => path.to_path_buf(),
    };
    let plotting = |path: &Path| {
        let path = path.to_path_buf();
        move |e: Error| Error::Invalid(format!("plotting {}: {e}", path.display()))
    };
    if let Some(path) = job.plot.as_deref().map(named) {
        if done.iter().any(|r| r.step.is_some()) {
            let mut chart = super::figure::sharpness_chart(done);
            if let Some(set) = set {
                chart.title = format!("{} ({set})", chart.title);
            }
            crate::plot::line_chart(&path, &chart).map_err(plotting(&path))?;
        } else {
            skipped.push(("a step", path));
        }
    }
    if let Some(path) = job.density_plot.as_deref().map(named) {
        match super::figure::density_chart(done) {
            Some(chart) => crate::plot::line_chart(&path, &chart).map_err(plotting(&path))?,
            None => skipped.push(("a density", path)),
        }
    }
    if let Some(path) = job.block_plot.as_deref().map(named) {
        let maps = super::figure::block_heat_maps(done);
        if maps.is_empty() {
            skipped.push(("a step and block traces", path));
        } else {
            let title = match set {
                Some(set) => format!("Hessian trace per layer ({set})"),
                None => "Hessian trace per layer (Hutchinson)".into(),
            };
            crate::plot::heat_maps(&path, &title, &maps).map_err(plotting(&path))?;
        }
    }
    Ok(())
}

/// This shard's units. With at least as many checkpoints as shards, a unit is a
/// checkpoint; with fewer, each checkpoint's probes are cut into `ceil(N / checkpoints)`
/// blocks so every shard has work (not with a relative tolerance, whose stopping rule
/// needs all of a checkpoint's probes in one place). Cost: parameters x probes.
fn shard_units<'a>(
    checkpoints: &'a [Checkpoint],
    s: Shard,
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
fn shard_files(out: &Path) -> Result<Vec<PathBuf>> {
    let stem = out
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = crate::error::parent_dir(out);
    let pattern = regex::Regex::new(&format!(
        r"^{}\.shard-\d+-of-\d+\.jsonl$",
        regex::escape(&stem)
    ))
    .map_err(|e| Error::Invalid(e.to_string()))?;
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
fn beside(path: &Path, s: Shard, ext: &str) -> PathBuf {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharpness::TraceOptions;

    fn job(dir: &Path) -> SharpnessJob {
        let data = dir.join("val.txt");
        std::fs::write(&data, "a text\n").unwrap();
        SharpnessJob {
            paths: vec![dir.to_path_buf()],
            hub: HubOptions::default(),
            retention: Retention::KeepAll,
            store: None,
            store_timeout: Duration::from_secs(1),
            sft_plot: None,
            data: vec![(None, data)],
            measure: SharpnessOptions {
                chat_template: None,
                seq_len: None,
                batch_size: 1,
                max_batches: Some(1),
                max_texts: Some(1),
                trace: TraceOptions {
                    probes: 2,
                    seed: 0,
                    rel_tol: None,
                    min_probes: 2,
                },
                method: Method::FiniteDifference { eps: 3e-5 },
                dtype: DType::F32,
                device: candle_core::Device::Cpu,
                top_eigen_iters: None,
                top_eigen_tol: 1e-3,
                top_k: None,
                density: None,
                tokenizer: None,
                save_batches: None,
            },
            out: None,
            plot: None,
            block_plot: None,
            density_plot: None,
            shard: None,
        }
    }

    fn error(job: &SharpnessJob) -> String {
        job.check().unwrap_err().to_string()
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let good = job(dir.path());
        good.check().unwrap();
        let mut bad = good.clone();
        bad.measure.method = Method::FiniteDifference { eps: 1e-9 };
        assert!(error(&bad).contains("--eps must be in [1e-6, 0.1] in f32"));
        bad.measure.dtype = DType::F64;
        bad.check().unwrap();
        bad.measure.dtype = DType::BF16;
        assert!(error(&bad).contains("sharpness runs in f32 or f64"));
        let mut bad = good.clone();
        bad.measure.seq_len = Some(1);
        assert!(error(&bad).contains("--seq-len must be at least 2, got 1"));
        let mut bad = good.clone();
        bad.measure.top_eigen_tol = f64::NAN;
        assert!(error(&bad).contains("--eigen-tol must be in (0, 1]"));
        let mut bad = good;
        bad.measure.trace.probes = 0;
        assert!(error(&bad).contains("--samples"));
    }

    #[test]
    fn options_that_need_another_are_refused_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = job(dir.path());
        bad.sft_plot = Some(SftPlot {
            path: dir.path().join("sft.png"),
            task: "gsm8k".into(),
            metric: "acc".into(),
        });
        assert!(error(&bad).contains("--sft-plot needs --store"));
        let mut bad = job(dir.path());
        bad.density_plot = Some(dir.path().join("density.png"));
        assert!(error(&bad).contains("--density-plot needs --density"));
        let mut bad = job(dir.path());
        bad.data.push((None, dir.path().join("val.txt")));
        assert!(error(&bad).contains("name each one"));
    }
}

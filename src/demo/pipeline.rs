//! The demo's stages in order. Each is an ordinary `ckpt` command (or a few run at
//! once), so what the demo shows can be repeated by hand from the demo folder; each
//! resumes on its own (training from its checkpoints, evaluation and sharpness from the
//! store), and the ledger skips the finished ones.

use super::commands::{catch_ctrl_c, Commands, Invocation};
use super::ledger::{Ledger, Start};
use super::plan::{Plan, Size};
use crate::error::{Error, Result};
use crate::eval::judge::oracle::{Oracle, DEFAULT_K};
use crate::report::{self, Finding, ReportOptions};
use crate::serve::oracle::{start_oracle, DEFAULT_NAME};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The demo folder's store (relative to the folder).
pub const STORE: &str = "ckpt.sqlite";
/// The instruction set the SFT models are judged on (written by `ckpt synth`).
pub const INSTRUCTIONS: &str = "data/instructions.json";

/// What `ckpt demo` was asked.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The demo folder; with several seeds, each seed's run is in DIR/seed-S.
    pub(crate) dir: PathBuf,
    pub size: Size,
    /// The seed of the world and of every run (the first one, with several seeds).
    pub(crate) seed: u64,
    /// How many seeds the study runs with: `seed`, `seed + 1`, ...
    pub(crate) seeds: usize,
    pub force: bool,
    /// Commands at once where a stage allows (the training runs).
    pub(crate) jobs: usize,
    /// The `ckpt` executable the stages run.
    pub exe: PathBuf,
}

/// Most seeds a study runs with: each one is a whole demo.
pub const MAX_SEEDS: usize = 100;

impl DemoConfig {
    /// Checks the counts, and that every seed of the study is a number.
    pub fn check(&self) -> Result<()> {
        if !(1..=MAX_SEEDS).contains(&self.seeds) {
            return Err(Error::bad_value(
                "--seeds",
                format!(
                    "--seeds must be a whole number from 1 to {MAX_SEEDS} (got {})",
                    self.seeds
                ),
            ));
        }
        if self.jobs == 0 {
            return Err(Error::bad_value(
                "--jobs",
                "--jobs must be at least 1 (got 0)",
            ));
        }
        if self.seed.checked_add(self.seeds as u64 - 1).is_none() {
            return Err(Error::bad_value(
                "--seed",
                format!(
                    "--seed {} with --seeds {}: the last seed would exceed {}",
                    self.seed,
                    self.seeds,
                    u64::MAX
                ),
            ));
        }
        Ok(())
    }

    /// The run of the `i`th seed (from 0): in the folder itself when it is the only one.
    pub fn for_seed(&self, i: usize) -> DemoConfig {
        let seed = self.seed + i as u64;
        DemoConfig {
            dir: match self.seeds {
                1 => self.dir.clone(),
                _ => self.dir.join(format!("seed-{seed}")),
            },
            seed,
            seeds: 1,
            ..self.clone()
        }
    }
}

/// Told about each stage as it runs.
pub trait Progress {
    fn stage(&self, index: usize, total: usize, title: &str, done_earlier: bool);
    fn command(&self, inv: &Invocation, log: &Path);
    /// Something a stage does in-process, as the command that would do it by hand.
    fn note(&self, text: &str);
    fn finished(&self, seconds: f64);
    /// A seed's run starts (`index` from 1 of `total`; only when there are several).
    fn seed(&self, index: usize, total: usize, seed: u64);
    /// A seed's run ended, finished or not.
    fn seed_ended(&self, outcome: Option<&Outcome>);
}

/// Where the results went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub(crate) dir: PathBuf,
    pub(crate) resumed: bool,
    pub(crate) seconds: f64,
    /// The report's findings: what the demo shows, measured.
    pub(crate) findings: Vec<Finding>,
}

/// The stages: ledger name and what it does.
const STAGES: &[(&str, &str)] = &[
    (
        "world",
        "synthetic world, benchmark-shaped tasks and instructions",
    ),
    ("tokenizer", "byte-level BPE tokenizer"),
    (
        "pretrain",
        "pre-training: WSO, cosine and linear from scratch",
    ),
    ("decay", "WSD decays branched from WSO's stable phase"),
    ("merge", "WSM: WSO's last checkpoints merged"),
    (
        "eval-pt",
        "pre-training evaluation (pt suite, validation loss)",
    ),
    (
        "sharpness",
        "sharpness (Hessian trace) of the pre-training checkpoints on both held-out sets; the final checkpoints' spectrum",
    ),
    ("sft", "SFT learning-rate sweep of each final checkpoint"),
    ("judge", "pairwise judging of every SFT model on loopback"),
    (
        "eval-sft",
        "post-SFT evaluation (sft suite) of the best LR per run",
    ),
    ("report", "report: tables and plots"),
    ("release", "release of the WSO model (dry run)"),
];

/// Runs the demo of one seed (`cfg.seed`, in `cfg.dir`), resuming where it stopped.
pub fn run(cfg: &DemoConfig, progress: &dyn Progress) -> Result<Outcome> {
    cfg.check()?;
    let started = Instant::now();
    let (mut ledger, start) = Ledger::open(&cfg.dir, cfg.size, cfg.seed, cfg.force)?;
    let plan = Plan {
        seed: cfg.seed,
        ..Plan::new(cfg.size)
    };
    let needed = match start {
        Start::Fresh => plan.disk_bytes,
        Start::Resume => plan.disk_bytes / 10,
    };
    super::check_free_space(&cfg.dir, needed)?;
    catch_ctrl_c()?;
    let demo = Demo {
        plan,
        commands: Commands {
            exe: cfg.exe.clone(),
            dir: cfg.dir.clone(),
            jobs: cfg.jobs,
        },
        progress,
    };
    for (i, (name, title)) in STAGES.iter().enumerate() {
        let done = ledger.is_done(name);
        progress.stage(i + 1, STAGES.len(), title, done);
        if done {
            continue;
        }
        let t = Instant::now();
        demo.stage(name)?;
        let seconds = t.elapsed().as_secs_f64();
        ledger.finish(name, seconds)?;
        progress.finished(seconds);
    }
    let store = report::open_store(&cfg.dir.join(STORE), crate::store::DEFAULT_LOCK_WAIT)?;
    let findings = report::build(&store, &ReportOptions::default())?.findings;
    Ok(Outcome {
        dir: cfg.dir.clone(),
        resumed: start == Start::Resume,
        seconds: started.elapsed().as_secs_f64(),
        findings,
    })
}

struct Demo<'a> {
    plan: Plan,
    commands: Commands,
    progress: &'a dyn Progress,
}

impl Demo<'_> {
    fn stage(&self, name: &str) -> Result<()> {
        match name {
            "world" => self.world(),
            "tokenizer" => self.tokenizer(),
            "pretrain" => self.pretrain(false),
            "decay" => self.pretrain(true),
            "merge" => self.merge(),
            "eval-pt" => self.eval_pt(),
            "sharpness" => self.sharpness(),
            "sft" => self.sft(),
            "judge" => self.judge(),
            "eval-sft" => self.eval_sft(),
            "report" => self.report(),
            "release" => self.release(),
            other => Err(Error::bad_value(
                "stage",
                format!("unknown demo stage {other}"),
            )),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.commands.dir.join(rel)
    }

    fn run(&self, invocations: &[Invocation]) -> Result<()> {
        for inv in invocations {
            self.progress
                .command(inv, &self.commands.log_path(&inv.label));
        }
        self.commands.run_all(invocations)
    }

    fn world(&self) -> Result<()> {
        let p = &self.plan;
        let n = |x: usize| x.to_string();
        self.run(&[Invocation::new(
            "synth",
            &[
                "synth",
                "--out",
                "data",
                "--eval-tasks",
                "data/eval",
                "--seed",
                &p.seed.to_string(),
                "--entities",
                &n(p.entities),
                "--pretrain-docs",
                &n(p.pretrain_docs),
                "--sft-chats",
                &n(p.sft_chats),
                "--validation-docs",
                &n(p.validation_docs),
                "--eval-docs",
                &n(p.eval_docs),
                "--instructions",
                &n(p.instructions),
            ],
        )])
    }

    fn tokenizer(&self) -> Result<()> {
        let p = &self.plan;
        self.progress.note(&format!(
            "in-process: {} tokens trained on data/pretrain.jsonl -> tokenizer/tokenizer.json",
            p.vocab_size
        ));
        let max_len = p.seq_len.max(256);
        super::train_tokenizer(
            &self.path("data/pretrain.jsonl"),
            p.vocab_size,
            &self.path("tokenizer"),
            max_len,
        )
    }

    /// The runs from scratch (`branched == false`) or the decays branched from WSO.
    fn pretrain(&self, branched: bool) -> Result<()> {
        let mut invocations = Vec::new();
        for run in self.plan.pretrain_runs() {
            if run.branch_from.is_some() != branched {
                continue;
            }
            let recipe = format!("recipes/{}.toml", run.name);
            write_recipe(&self.path(&recipe), &self.plan.pretrain_recipe(&run))?;
            invocations.push(Invocation::new(
                format!("train-{}", run.name),
                &["train", &recipe],
            ));
        }
        self.run(&invocations)
    }

    fn merge(&self) -> Result<()> {
        let p = &self.plan;
        let out = format!("runs/wso-wsm/step-{:07}", p.steps);
        self.run(&[Invocation::new(
            "merge",
            &[
                "merge",
                "runs/wso",
                "--emulate",
                "cosine",
                "--window",
                &p.decay_steps().to_string(),
                "--out",
                &out,
                "--force",
                "--plot",
                "runs/wso-wsm/weights.png",
            ],
        )])
    }

    /// Every pre-training checkpoint (metrics against step) and the merge.
    fn pretrain_dirs(&self) -> Vec<String> {
        let mut dirs: Vec<String> = self
            .plan
            .pretrain_runs()
            .iter()
            .map(|r| format!("runs/{}", r.name))
            .collect();
        dirs.push("runs/wso-wsm".into());
        dirs
    }

    fn eval_pt(&self) -> Result<()> {
        let mut args: Vec<String> = vec!["eval".into()];
        args.extend(self.pretrain_dirs());
        args.extend(
            ["--suite", "pt", "--data-dir", "data/eval", "--store", STORE].map(String::from),
        );
        self.run(&[Invocation {
            label: "eval-pt".into(),
            args,
        }])
    }

    /// Every pre-training checkpoint on both held-out sets (the paper's two panels),
    /// then the spectrum (top eigenvalues, SLQ density) of each run's final checkpoint.
    fn sharpness(&self) -> Result<()> {
        let p = &self.plan;
        let measure = |paths: Vec<String>, more: &[&str]| {
            let mut args: Vec<String> = vec!["sharpness".into()];
            args.extend(paths);
            let common = [
                "--seq-len",
                &p.seq_len.to_string(),
                "--samples",
                &p.probes.to_string(),
                "--max-batches",
                &p.sharpness_batches.to_string(),
                "--store",
                STORE,
            ]
            .map(String::from);
            args.extend(common);
            args.extend(more.iter().map(|s| s.to_string()));
            args
        };
        let sets = [
            "--data",
            "pt=data/validation.jsonl",
            "--data",
            "sft=data/sft_validation.jsonl",
            "--out",
            "sharpness.jsonl",
        ];
        let finals: Vec<String> = p
            .pretrain_runs()
            .iter()
            .map(|r| p.final_checkpoint(&r.name))
            .collect();
        let spectrum = [
            "--data",
            "pt=data/validation.jsonl",
            "--top-k",
            "5",
            "--density",
            "--out",
            "spectrum.jsonl",
        ];
        self.run(&[Invocation {
            label: "sharpness".into(),
            args: measure(self.pretrain_dirs(), &sets),
        }])?;
        self.run(&[Invocation {
            label: "spectrum".into(),
            args: measure(finals, &spectrum),
        }])
    }

    fn sft(&self) -> Result<()> {
        let mut invocations = Vec::new();
        for run in self.plan.pretrain_runs() {
            for &lr in &self.plan.sft_lrs {
                let name = Plan::sft_run(&run.name, lr);
                let recipe = format!("recipes/{name}.toml");
                write_recipe(&self.path(&recipe), &self.plan.sft_recipe(&run.name, lr))?;
                invocations.push(Invocation::new(
                    format!("train-{name}"),
                    &["train", &recipe],
                ));
            }
        }
        self.run(&invocations)
    }

    fn sft_dirs(&self) -> Vec<String> {
        let mut dirs = Vec::new();
        for run in self.plan.pretrain_runs() {
            for &lr in &self.plan.sft_lrs {
                dirs.push(format!("runs/{}", Plan::sft_run(&run.name, lr)));
            }
        }
        dirs
    }

    /// Every SFT model answers the held-out instructions; a judge that knows their
    /// ground truth, served on loopback behind the OpenAI schema, compares each answer
    /// with the reference (the truth itself, so 50% is the ceiling).
    fn judge(&self) -> Result<()> {
        let oracle = Oracle::read(&self.path(INSTRUCTIONS), DEFAULT_K)?;
        let server = start_oracle(oracle, DEFAULT_NAME)?;
        self.progress.note(&format!(
            "in-process at {}, as `ckpt serve --oracle {INSTRUCTIONS}` would serve it",
            server.url()
        ));
        let mut args: Vec<String> = vec!["eval".into()];
        args.extend(self.sft_dirs());
        args.extend(
            [
                "--tasks",
                "alpaca_eval",
                "--judge-url",
                server.url(),
                "--instructions",
                INSTRUCTIONS,
                "--max-new-tokens",
                &self.plan.max_new_tokens.to_string(),
                "--store",
                STORE,
            ]
            .map(String::from),
        );
        let result = self.run(&[Invocation {
            label: "judge".into(),
            args,
        }]);
        server.shutdown()?;
        result
    }

    /// The paper's post-SFT evaluation, on each run's SFT model at the learning rate
    /// the judge liked best (the report's pick rule).
    fn eval_sft(&self) -> Result<()> {
        let store = report::open_store(&self.path(STORE), crate::store::DEFAULT_LOCK_WAIT)?;
        let picks = report::sft_picks(&store, &ReportOptions::default())?;
        drop(store);
        if picks.is_empty() {
            return Err(Error::Invalid(
                "no SFT model was judged: nothing to pick the learning rates from".into(),
            ));
        }
        for pick in &picks {
            self.progress.note(&format!(
                "{}: best SFT run {} ({} {:.1})",
                pick.base_run,
                pick.run,
                pick.criterion.label(),
                100.0 * pick.score
            ));
        }
        let mut args: Vec<String> = vec!["eval".into()];
        args.extend(picks.iter().map(|p| self.relative_path(Path::new(&p.path))));
        args.extend(
            [
                "--suite",
                "sft",
                "--limit",
                &self.plan.sft_limit.to_string(),
                "--max-gen-toks",
                &self.plan.max_gen_toks.to_string(),
                "--data-dir",
                "data/eval",
                "--fewshot-dir",
                "data/eval/fewshot",
                "--store",
                STORE,
            ]
            .map(String::from),
        );
        self.run(&[Invocation {
            label: "eval-sft".into(),
            args,
        }])
    }

    /// A path the store recorded, relative to the demo folder where it lies inside.
    fn relative_path(&self, path: &Path) -> String {
        let dir = self
            .commands
            .dir
            .canonicalize()
            .unwrap_or(self.commands.dir.clone());
        let abs = path.canonicalize().unwrap_or(path.to_path_buf());
        abs.strip_prefix(&dir).unwrap_or(&abs).display().to_string()
    }

    fn report(&self) -> Result<()> {
        self.run(&[Invocation::new(
            "report",
            &["report", STORE, "--out", "report"],
        )])
    }

    fn release(&self) -> Result<()> {
        let p = &self.plan;
        let repo = format!("ckpt-demo/wso-{}", p.size.name());
        self.run(&[Invocation::new(
            "release",
            &[
                "release",
                &p.final_checkpoint("wso"),
                "--repo",
                &repo,
                "--dry-run",
                "release",
                "--store",
                STORE,
            ],
        )])
    }
}

fn write_recipe(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::atomic_file::write_bytes(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DemoConfig {
        DemoConfig {
            dir: "demo".into(),
            size: Size::Tiny,
            seed: 0,
            seeds: 1,
            force: false,
            jobs: 2,
            exe: "ckpt".into(),
        }
    }

    #[test]
    fn check_refuses_counts_out_of_range() {
        assert!(cfg().check().is_ok());
        for seeds in [0, MAX_SEEDS + 1] {
            let e = DemoConfig { seeds, ..cfg() }.check().unwrap_err();
            assert!(e.to_string().contains("--seeds"), "{e}");
        }
        let e = DemoConfig { jobs: 0, ..cfg() }.check().unwrap_err();
        assert!(e.to_string().contains("--jobs"), "{e}");
    }

    #[test]
    fn check_refuses_seeds_past_the_last_number() {
        let last = DemoConfig {
            seed: u64::MAX,
            ..cfg()
        };
        assert!(last.check().is_ok());
        let e = DemoConfig { seeds: 2, ..last }.check().unwrap_err();
        assert!(e.to_string().contains("--seed"), "{e}");
    }

    #[test]
    fn each_seed_of_several_has_its_own_folder() {
        assert_eq!(cfg().for_seed(0).dir, Path::new("demo"));
        let study = DemoConfig {
            seed: 7,
            seeds: 3,
            ..cfg()
        };
        let third = study.for_seed(2);
        assert_eq!((third.seed, third.seeds), (9, 1));
        assert_eq!(third.dir, Path::new("demo/seed-9"));
    }
}

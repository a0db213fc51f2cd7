//! What the demo runs at each size: the synthetic world's size, the model's shape, the
//! schedules and their lengths, the SFT learning-rate sweep, and how much of each
//! evaluation runs. Recipes are written from the plan as ordinary `ckpt train` TOML, so
//! every run of the demo can be repeated by hand.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// `--size`: `tiny` (under two minutes, the test suite's end-to-end run) or `small`
/// (the default: a few minutes, clearer differences between the schedules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Tiny,
    Small,
}

impl Size {
    pub fn name(self) -> &'static str {
        match self {
            Size::Tiny => "tiny",
            Size::Small => "small",
        }
    }
}

/// One pre-training run: WSO, or a decayed variant (branched from WSO's stable phase
/// where the schedule allows, as the paper's WSD runs share WSO's first 75%).
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainRun {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) alpha: Option<f64>,
    /// Branched from this WSO step (the decay start); `None`: trained from scratch.
    pub(crate) branch_from: Option<u64>,
}

/// The knobs of one demo size.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub(crate) size: Size,
    pub(crate) seed: u64,
    // The synthetic world (`ckpt synth`).
    pub(crate) entities: usize,
    pub(crate) pretrain_docs: usize,
    pub(crate) sft_chats: usize,
    pub(crate) validation_docs: usize,
    pub(crate) eval_docs: usize,
    pub(crate) instructions: usize,
    // The model (a Llama) and its byte-level BPE tokenizer.
    pub(crate) vocab_size: usize,
    pub(crate) hidden_size: usize,
    pub(crate) intermediate_size: usize,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    // Pre-training.
    pub(crate) steps: u64,
    pub(crate) warmup: u64,
    pub(crate) peak_lr: f64,
    pub(crate) batch_tokens: u64,
    pub(crate) seq_len: usize,
    pub(crate) checkpoint_every: u64,
    // SFT: one epoch per learning rate of the sweep.
    pub(crate) sft_lrs: Vec<f64>,
    pub(crate) sft_batch_tokens: u64,
    // Evaluation: docs per task of the sft suite, tokens per judged answer.
    pub(crate) sft_limit: usize,
    /// New tokens per answer of the sft suite's generative tasks (BBH's chains of
    /// thought run to 256 otherwise, the model's whole context).
    pub(crate) max_gen_toks: usize,
    pub(crate) max_new_tokens: usize,
    // Sharpness.
    pub(crate) probes: usize,
    pub(crate) sharpness_batches: usize,
    /// Bytes the demo writes at most, checked against the free space before starting.
    pub(crate) disk_bytes: u64,
}

impl Plan {
    pub fn new(size: Size) -> Plan {
        match size {
            Size::Tiny => Plan {
                size,
                seed: 0,
                entities: 30,
                pretrain_docs: 1500,
                sft_chats: 300,
                validation_docs: 60,
                eval_docs: 60,
                instructions: 24,
                vocab_size: 512,
                hidden_size: 64,
                intermediate_size: 172,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                steps: 240,
                warmup: 10,
                peak_lr: 1e-2,
                batch_tokens: 1024,
                seq_len: 64,
                checkpoint_every: 60,
                sft_lrs: vec![1e-3, 3e-3],
                sft_batch_tokens: 1024,
                sft_limit: 5,
                max_gen_toks: 32,
                max_new_tokens: 32,
                probes: 8,
                sharpness_batches: 2,
                disk_bytes: 100 << 20,
            },
            Size::Small => Plan {
                size,
                seed: 0,
                entities: 60,
                pretrain_docs: 4000,
                sft_chats: 600,
                validation_docs: 200,
                eval_docs: 100,
                instructions: 64,
                vocab_size: 1024,
                hidden_size: 96,
                intermediate_size: 256,
                layers: 3,
                heads: 4,
                kv_heads: 2,
                steps: 300,
                warmup: 20,
                peak_lr: 1e-2,
                batch_tokens: 2048,
                seq_len: 128,
                checkpoint_every: 75,
                sft_lrs: vec![3e-4, 1e-3, 3e-3],
                sft_batch_tokens: 2048,
                sft_limit: 20,
                max_gen_toks: 48,
                max_new_tokens: 48,
                probes: 12,
                sharpness_batches: 4,
                disk_bytes: 600 << 20,
            },
        }
    }

    /// The decay phase of the branched WSD runs: the last 25%, as in the paper.
    pub fn decay_steps(&self) -> u64 {
        self.steps / 4
    }

    /// WSO and the decayed schedules the issue names: WSD alpha 0 and 0.1 branched from
    /// WSO, cosine alpha 0.1, linear alpha 0.
    pub fn pretrain_runs(&self) -> Vec<PretrainRun> {
        let branch = Some(self.steps - self.decay_steps());
        let run = |name: &str, kind, alpha, branch_from| PretrainRun {
            name: name.to_string(),
            kind,
            alpha,
            branch_from,
        };
        vec![
            run("wso", "wso", None, None),
            run("wsd-a0", "wsd", Some(0.0), branch),
            run("wsd-a0.1", "wsd", Some(0.1), branch),
            run("cosine-a0.1", "cosine", Some(0.1), None),
            run("linear-a0", "linear", Some(0.0), None),
        ]
    }

    /// The run directory of a pre-training run's final checkpoint.
    pub fn final_checkpoint(&self, run: &str) -> String {
        format!("runs/{run}/step-{:07}", self.steps)
    }

    /// The name of the SFT run of `base` at learning rate `lr`.
    pub fn sft_run(base: &str, lr: f64) -> String {
        format!("{base}-sft-lr{lr:e}")
    }

    /// The `ckpt train` recipe of a pre-training run (paths relative to the demo folder).
    pub fn pretrain_recipe(&self, run: &PretrainRun) -> String {
        let mut t = String::new();
        job(&mut t, &run.name, "pre", self.seed);
        if run.branch_from.is_none() {
            let _ = write!(
                t,
                "[model]\nhidden_size = {}\nintermediate_size = {}\nnum_hidden_layers = {}\n\
                 num_attention_heads = {}\nnum_key_value_heads = {}\n\
                 max_position_embeddings = {}\ntie_word_embeddings = true\n\n\
                 [tokenizer]\npath = \"tokenizer/tokenizer.json\"\n\n",
                self.hidden_size,
                self.intermediate_size,
                self.layers,
                self.heads,
                self.kv_heads,
                self.seq_len.max(256),
            );
        }
        let _ = write!(
            t,
            "[data]\npaths = [\"data/pretrain.jsonl\"]\n\n\
             [optimizer]\nweight_decay = 0.1\ngrad_clip = 1.0\n\n\
             [schedule]\nkind = \"{}\"\npeak_lr = {:e}\nwarmup = {}\ntotal_steps = {}\n",
            run.kind, self.peak_lr, self.warmup, self.steps
        );
        if run.kind == "wsd" {
            let _ = writeln!(t, "decay_steps = {}", self.decay_steps());
        }
        if let Some(alpha) = run.alpha {
            let _ = writeln!(t, "alpha = {alpha}");
        }
        // A branch saves three checkpoints during its decay, so its curves have a shape.
        let every = match run.branch_from {
            Some(_) => self.decay_steps() / 3,
            None => self.checkpoint_every,
        };
        training(&mut t, self.batch_tokens, self.seq_len, every, None);
        if let Some(step) = run.branch_from {
            let _ = write!(
                t,
                "\n[init]\nparent = \"runs/wso/step-{step:07}\"\nmode = \"branch\"\n"
            );
        }
        t
    }

    /// The SFT recipe of one (base run, learning rate): one epoch of the chats, cosine to
    /// zero after a short warmup, no weight decay (the paper's SFT, scaled down).
    pub fn sft_recipe(&self, base: &str, lr: f64) -> String {
        let mut t = String::new();
        job(&mut t, &Self::sft_run(base, lr), "sft", self.seed);
        let _ = write!(
            t,
            "[data]\npaths = [\"data/sft.jsonl\"]\n\n\
             [optimizer]\nweight_decay = 0.0\ngrad_clip = 1.0\n\n\
             [schedule]\nkind = \"cosine\"\npeak_lr = {lr:e}\nwarmup = 3\nalpha = 0.0\n"
        );
        training(
            &mut t,
            self.sft_batch_tokens,
            self.seq_len,
            100_000,
            Some(1),
        );
        let _ = write!(
            t,
            "\n[init]\nparent = \"{}\"\n",
            self.final_checkpoint(base)
        );
        t
    }
}

fn job(t: &mut String, name: &str, stage: &str, seed: u64) {
    let _ = write!(
        t,
        "# Written by `ckpt demo`; run it again with `ckpt train` from the demo folder.\n\n\
         [job]\nname = \"{name}\"\nstage = \"{stage}\"\nseed = {seed}\n\n"
    );
}

fn training(t: &mut String, batch: u64, seq_len: usize, every: u64, epochs: Option<u64>) {
    let _ = write!(
        t,
        "\n[training]\nbatch_tokens = {batch}\nseq_len = {seq_len}\ncheckpoint_every = {every}\n"
    );
    if let Some(e) = epochs {
        let _ = writeln!(t, "epochs = {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::recipe::Recipe;

    fn parses(text: &str) -> Recipe {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, text).unwrap();
        Recipe::load(&path, &[]).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn every_recipe_is_a_valid_train_recipe() {
        for size in [Size::Tiny, Size::Small] {
            let plan = Plan::new(size);
            for run in plan.pretrain_runs() {
                let r = parses(&plan.pretrain_recipe(&run));
                assert_eq!(r.job.name, run.name);
                assert_eq!(r.schedule.kind.name(), run.kind);
            }
            for lr in &plan.sft_lrs {
                let r = parses(&plan.sft_recipe("wso", *lr));
                assert_eq!(r.schedule.peak_lr, *lr);
            }
        }
    }

    #[test]
    fn branches_start_at_a_saved_stable_checkpoint() {
        for size in [Size::Tiny, Size::Small] {
            let plan = Plan::new(size);
            let start = plan.steps - plan.decay_steps();
            assert_eq!(start % plan.checkpoint_every, 0, "{size:?}");
            assert_eq!(plan.decay_steps() % 3, 0, "{size:?}");
            assert_eq!(plan.steps % plan.checkpoint_every, 0, "{size:?}");
        }
    }
}

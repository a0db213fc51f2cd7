//! `ckpt synth --out DIR`: generate the synthetic world and its corpora;
//! `ckpt synth --eval-tasks DIR`: benchmark data about the same world for every
//! built-in task, in each dataset's schema (`--data-dir DIR --fewshot-dir DIR/fewshot`).

//! The flags become a [`SynthJob`]; [`crate::synth::job::run`] does the work.

use super::output::{outln, print_json, table, Ui};
use crate::synth::job::CorporaWritten;
use crate::synth::tasks::SyntheticConfig;
use crate::synth::{SynthConfig, SynthJob};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(crate) struct SynthArgs {
    /// Directory to write world.json, pretrain/midtrain/validation/sft .jsonl and
    /// instructions.json into.
    #[arg(long, required_unless_present = "eval_tasks")]
    out: Option<PathBuf>,
    /// Directory to write synthetic data for every built-in benchmark task into, laid
    /// out for `--data-dir`, with exemplar files in DIR/fewshot.
    #[arg(long, value_name = "DIR")]
    eval_tasks: Option<PathBuf>,
    /// With --eval-tasks: docs per split.
    #[arg(long, default_value_t = SyntheticConfig::default().docs, requires = "eval_tasks",
          value_parser = super::values::at_least_one)]
    eval_docs: usize,
    /// Seed of the world and of every corpus drawn from it.
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    seed: u64,
    /// People, towns and animals in the world.
    #[arg(long, default_value_t = SynthConfig::default().entities)]
    entities: usize,
    /// Pre-training documents.
    #[arg(long, default_value_t = SynthConfig::default().pretrain_docs)]
    pretrain_docs: usize,
    /// Mid-training documents.
    #[arg(long, default_value_t = SynthConfig::default().midtrain_docs)]
    midtrain_docs: usize,
    /// SFT chats (Tulu format).
    #[arg(long, default_value_t = SynthConfig::default().sft_chats)]
    sft_chats: usize,
    /// Held-out validation texts (validation.jsonl), and as many held-out chats
    /// (sft_validation.jsonl).
    #[arg(long, default_value_t = SynthConfig::default().validation_docs)]
    validation_docs: usize,
    /// Held-out instructions with ground-truth answers (instructions.json, AlpacaEval's
    /// layout) for `ckpt eval --tasks alpaca_eval` and `ckpt serve --oracle`.
    #[arg(long, default_value_t = SynthConfig::default().instructions)]
    instructions: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

impl SynthArgs {
    /// The typed job these flags ask for.
    fn job(&self) -> SynthJob {
        SynthJob {
            out: self.out.clone(),
            config: SynthConfig {
                seed: self.seed,
                entities: self.entities,
                pretrain_docs: self.pretrain_docs,
                midtrain_docs: self.midtrain_docs,
                sft_chats: self.sft_chats,
                validation_docs: self.validation_docs,
                instructions: self.instructions,
            },
            eval_tasks: self.eval_tasks.clone(),
            eval_docs: self.eval_docs,
        }
    }
}

pub(crate) fn run(args: &SynthArgs, ui: &Ui) -> anyhow::Result<ExitCode> {
    let done = crate::synth::job::run(&args.job())?;
    if let Some(written) = &done.task_data {
        if args.json {
            print_json(written)?;
        } else if !ui.quiet {
            let dir = written.eval_tasks.display();
            outln!(
                "wrote {} docs in {} files for {} tasks to {dir} (--data-dir {dir} --fewshot-dir {dir}/fewshot)",
                written.docs,
                written.files,
                written.tasks,
            );
        }
    }
    if let Some(summary) = &done.corpora {
        if args.json {
            print_json(summary)?;
        } else if !ui.quiet {
            print_summary(summary);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &CorporaWritten) {
    let mut t = table(&["part", "items", "characters", "distinct words"]);
    for p in &s.stats.parts {
        t.add_row(vec![
            p.name.clone(),
            p.items.to_string(),
            p.characters.to_string(),
            p.distinct_words.to_string(),
        ]);
    }
    outln!("{t}");
    outln!(
        "world: {} entities, {} facts (seed {}); {} distinct words in all",
        s.stats.entities,
        s.stats.facts,
        s.config.seed,
        s.stats.distinct_words
    );
    outln!(
        "wrote {} to {} in {:.2}s",
        s.files.join(", "),
        s.out.display(),
        s.seconds
    );
}

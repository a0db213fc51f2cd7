//! A synthetic world generated from a seed, and the corpora the demo and the tests
//! train on: a pre-training corpus, a cleaner mid-training mix, SFT chats in the Tulu
//! format and held-out validation texts, all stating the same facts; and a held-out
//! instruction set with ground-truth answers for pairwise judging ([`instructions`]).
//!
//! The vocabulary is small and closed (invented names built from syllables, fixed
//! attribute values, small numbers) and the templates are regular, so a model of a few
//! million parameters learns the world on a CPU in minutes. The world's structure is
//! public ([`world::World`], [`world::Fact`], [`arithmetic::Problem`]) so benchmark-shaped
//! tasks can ask about exactly what the corpora state.
//!
//! ```
//! use ckpt::synth::{generate, SynthConfig};
//! let cfg = SynthConfig { entities: 12, pretrain_docs: 50, midtrain_docs: 10,
//!                         sft_chats: 10, validation_docs: 5, ..SynthConfig::default() };
//! let corpus = generate(&cfg);
//! assert_eq!(corpus.pretrain.len(), 50);
//! assert_eq!(corpus.world.entities.len(), 12);
//! ```
//!
//! Output is a pure function of the config: the same config gives byte-identical files
//! (for a given `rand` version: `StdRng`'s algorithm is pinned by `Cargo.lock`). Each
//! part draws from its own random stream, so changing one count leaves the world and
//! the other parts as they were (validation texts excepted: they avoid the pre-training
//! documents).

pub mod arithmetic;
pub(crate) mod chats;
pub(crate) mod documents;
pub mod instructions;
pub mod job;
pub(crate) mod stories;
pub mod tasks;
pub mod text;
pub mod world;

pub use chats::{Chat, Message};
pub use job::{SynthJob, SynthOutcome};
pub use world::{Entity, Fact, Kind, World};

use crate::error::{Error, Result};
use crate::eval::judge::instructions::Instruction;
use documents::EntityCycle;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;

/// What to generate: the seed and the size of each part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    pub seed: u64,
    /// People, towns and animals (about 2 : 1 : 1).
    pub entities: usize,
    pub pretrain_docs: usize,
    pub midtrain_docs: usize,
    pub sft_chats: usize,
    pub validation_docs: usize,
    /// Held-out instructions for pairwise judging ([`instructions::held_out`]).
    pub instructions: usize,
}

impl Default for SynthConfig {
    /// A size a model of a few million parameters learns on a CPU in minutes.
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            entities: 60,
            pretrain_docs: 4000,
            midtrain_docs: 800,
            sft_chats: 600,
            validation_docs: 200,
            instructions: 64,
        }
    }
}

/// The most entities a world may have: each is a few hundred bytes with its facts, and
/// the demo's worlds have tens.
pub const MAX_ENTITIES: usize = 1_000_000;

impl SynthConfig {
    /// Rejects configs that cannot make a world worth training on.
    pub fn validate(&self) -> Result<()> {
        if self.entities == 0 {
            return Err(Error::bad_value(
                "entities",
                "a synthetic world needs at least one entity",
            ));
        }
        if self.entities > MAX_ENTITIES {
            return Err(Error::bad_value(
                "entities",
                format!(
                    "entities = {} is more than {MAX_ENTITIES}: the whole world is built in memory",
                    self.entities
                ),
            ));
        }
        Ok(())
    }
}

/// Everything generated from one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    /// The ground truth every text below was rendered from.
    pub world: World,
    pub pretrain: Vec<String>,
    pub(crate) midtrain: Vec<String>,
    pub sft: Vec<Chat>,
    /// Held out: the pre-training distribution, none identical to a pre-training
    /// document or to another validation text (so fewer than asked only in a world too
    /// small to have that many distinct documents).
    pub(crate) validation: Vec<String>,
    /// Held out: chats of the SFT distribution from a stream of their own, as many as
    /// `validation_docs` (the SFT validation set sharpness is measured on).
    pub(crate) sft_validation: Vec<Chat>,
    /// Held out from the SFT chats, with their ground-truth answers
    /// ([`instructions::held_out`]).
    pub instructions: Vec<Instruction>,
}

/// Generates the world and every part of the corpus from `cfg`.
pub fn generate(cfg: &SynthConfig) -> Corpus {
    let world = World::generate(cfg.seed, cfg.entities);
    let n = world.entities.len();

    let mut rng = stream(cfg.seed, "pretrain");
    let mut cycle = EntityCycle::new(n);
    let pretrain: Vec<String> = (0..cfg.pretrain_docs)
        .map(|_| documents::pretrain_document(&mut rng, &world, &mut cycle))
        .collect();

    let mut rng = stream(cfg.seed, "midtrain");
    let mut cycle = EntityCycle::new(n);
    let midtrain = (0..cfg.midtrain_docs)
        .map(|_| documents::midtrain_document(&mut rng, &world, &mut cycle))
        .collect();

    let mut rng = stream(cfg.seed, "sft");
    let mut cycle = EntityCycle::new(n);
    let sft: Vec<Chat> = (0..cfg.sft_chats)
        .map(|_| chats::chat(&mut rng, &world, &mut cycle))
        .collect();

    let validation = validation(cfg, &world, &pretrain);
    let mut rng = stream(cfg.seed, "sft-validation");
    let mut cycle = EntityCycle::new(n);
    let sft_validation = (0..cfg.validation_docs)
        .map(|_| chats::chat(&mut rng, &world, &mut cycle))
        .collect();
    let instructions = instructions::held_out(&world, &sft, cfg.seed, cfg.instructions);
    Corpus {
        world,
        pretrain,
        midtrain,
        sft,
        validation,
        sft_validation,
        instructions,
    }
}

/// Pre-training-distribution documents from a stream of their own, skipping any that
/// repeat a pre-training document or each other. Descriptions repeat often in a small
/// world, but worked problems and stories almost never do, so this ends quickly; the
/// cap on attempts only guards against a degenerate world.
fn validation(cfg: &SynthConfig, world: &World, pretrain: &[String]) -> Vec<String> {
    let mut rng = stream(cfg.seed, "validation");
    let mut cycle = EntityCycle::new(world.entities.len());
    let seen: HashSet<&str> = pretrain.iter().map(String::as_str).collect();
    let mut out: Vec<String> = Vec::with_capacity(cfg.validation_docs);
    let mut fresh = HashSet::new();
    let mut attempts = 0;
    while out.len() < cfg.validation_docs && attempts < 1000 * (cfg.validation_docs + 1) {
        attempts += 1;
        let doc = documents::pretrain_document(&mut rng, world, &mut cycle);
        if !seen.contains(doc.as_str()) && fresh.insert(doc.clone()) {
            out.push(doc);
        }
    }
    out
}

/// A random stream for one part of the corpus, independent of the other parts and of
/// the world's (which draws from the plain seed).
pub(crate) fn stream(seed: u64, part: &str) -> StdRng {
    StdRng::seed_from_u64(stream_seed(seed, part))
}

/// Mixes the part's name into the seed: FNV-1a over the name, then a SplitMix64
/// finaliser, both fixed algorithms (std's hashers promise no stable output).
fn stream_seed(seed: u64, part: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in part.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = seed ^ h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One line of a text JSONL file: the Hub datasets' `text` column.
#[derive(Serialize)]
struct TextRecord<'a> {
    text: &'a str,
}

/// `world.json`: the world and, for readers that do not want to derive them, its facts.
#[derive(Serialize)]
struct WorldFile<'a> {
    #[serde(flatten)]
    world: &'a World,
    facts: Vec<Fact>,
}

/// The files [`Corpus::write`] creates.
pub const FILES: [&str; 7] = [
    "world.json",
    "pretrain.jsonl",
    "midtrain.jsonl",
    "sft.jsonl",
    "validation.jsonl",
    "sft_validation.jsonl",
    instructions::FILE,
];

impl Corpus {
    /// Writes `world.json`, `pretrain.jsonl`, `midtrain.jsonl`, `validation.jsonl` (one
    /// `{"text": ...}` per line), `sft.jsonl` and `sft_validation.jsonl` (one Tulu chat
    /// per line) and
    /// `instructions.json` (AlpacaEval's layout: a JSON list of `{"instruction",
    /// "output", "generator", "dataset"}`) into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let world = WorldFile {
            world: &self.world,
            facts: self.world.facts(),
        };
        crate::atomic_file::write_json(&dir.join("world.json"), &world)?;
        write_texts(&dir.join("pretrain.jsonl"), &self.pretrain)?;
        write_texts(&dir.join("midtrain.jsonl"), &self.midtrain)?;
        write_texts(&dir.join("validation.jsonl"), &self.validation)?;
        write_jsonl(&dir.join("sft.jsonl"), &self.sft)?;
        write_jsonl(&dir.join("sft_validation.jsonl"), &self.sft_validation)?;
        crate::atomic_file::write_json(&dir.join(instructions::FILE), &self.instructions)
    }

    /// Counts for a summary.
    pub fn stats(&self) -> CorpusStats {
        let chat_text: Vec<&str> = self
            .sft
            .iter()
            .flat_map(|c| &c.messages)
            .map(|m| m.content.as_str())
            .collect();
        let instruction_text: Vec<&str> = self
            .instructions
            .iter()
            .flat_map(|i| std::iter::once(&i.instruction).chain(&i.output))
            .map(String::as_str)
            .collect();
        let parts = [
            ("pretrain", self.pretrain.len(), as_strs(&self.pretrain)),
            ("midtrain", self.midtrain.len(), as_strs(&self.midtrain)),
            ("sft", self.sft.len(), chat_text),
            (
                "validation",
                self.validation.len(),
                as_strs(&self.validation),
            ),
            ("instructions", self.instructions.len(), instruction_text),
        ];
        let all_words: BTreeSet<&str> = parts
            .iter()
            .flat_map(|(_, _, texts)| texts.iter().flat_map(|t| t.split_whitespace()))
            .collect();
        CorpusStats {
            entities: self.world.entities.len(),
            facts: self.world.facts().len(),
            distinct_words: all_words.len(),
            parts: parts
                .iter()
                .map(|(name, items, texts)| PartStats::of(name, *items, texts))
                .collect(),
        }
    }
}

/// Summary counts of a corpus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorpusStats {
    pub(crate) entities: usize,
    pub(crate) facts: usize,
    pub(crate) parts: Vec<PartStats>,
    /// Distinct whitespace-separated words over all parts.
    pub(crate) distinct_words: usize,
}

/// Counts of one part of a corpus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PartStats {
    pub(crate) name: String,
    /// Documents, chats for `sft`, instructions for `instructions`.
    pub(crate) items: usize,
    pub(crate) characters: usize,
    /// Distinct whitespace-separated words.
    pub(crate) distinct_words: usize,
}

impl PartStats {
    fn of(name: &str, items: usize, texts: &[&str]) -> PartStats {
        let words: BTreeSet<&str> = texts.iter().flat_map(|t| t.split_whitespace()).collect();
        PartStats {
            name: name.to_string(),
            items,
            characters: texts.iter().map(|t| t.chars().count()).sum(),
            distinct_words: words.len(),
        }
    }
}

fn as_strs(texts: &[String]) -> Vec<&str> {
    texts.iter().map(String::as_str).collect()
}

fn write_texts(path: &Path, texts: &[String]) -> Result<()> {
    let records: Vec<TextRecord> = texts.iter().map(|t| TextRecord { text: t }).collect();
    write_jsonl(path, &records)
}

fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    crate::atomic_file::write_with(path, |w| {
        for item in items {
            serde_json::to_writer(&mut *w, item)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests;

//! A held-out instruction set for pairwise judging (DESIGN.md section 7), in
//! AlpacaEval's layout: single-turn user requests of the kinds the SFT chats hold
//! (facts, yes/no, arithmetic, lists, descriptions), each with its ground-truth answer
//! in the canonical phrasing the chats use as `output`.
//!
//! Held out means no instruction is textually identical to a user message of the SFT
//! chats, so a fine-tuned model is judged on questions it was not trained to answer
//! verbatim (about facts it has seen). Instructions are distinct, so AlpacaEval's
//! merge of outputs by instruction text, and a judge that looks the truth up by it,
//! are unambiguous.
//!
//! ```
//! use ckpt::synth::{generate, instructions::held_out, SynthConfig};
//! let corpus = generate(&SynthConfig { entities: 12, pretrain_docs: 0, midtrain_docs: 0,
//!                                      sft_chats: 20, validation_docs: 0, instructions: 0,
//!                                      seed: 0 });
//! let set = held_out(&corpus.world, &corpus.sft, 0, 8);
//! assert_eq!(set.len(), 8);
//! assert!(set.iter().all(|i| i.output.is_some()));
//! ```

use super::chats::{turn, Chat};
use super::documents::EntityCycle;
use super::world::World;
use crate::eval::judge::instructions::Instruction;
use std::collections::HashSet;

/// The file [`crate::synth::Corpus::write`] writes the set to.
pub const FILE: &str = "instructions.json";
/// The `generator` of the ground-truth answers.
pub const GENERATOR: &str = "ground_truth";
/// The `dataset` of every record.
pub const DATASET: &str = "synthetic";

/// `n` distinct instructions about `world`, none a user message of `sft`, drawn from
/// their own random stream of `seed` (so the other parts of a corpus do not change
/// with `n`). Fewer than `n` only in a world too small to have that many questions.
pub fn held_out(world: &World, sft: &[Chat], seed: u64, n: usize) -> Vec<Instruction> {
    let trained: HashSet<&str> = sft
        .iter()
        .flat_map(|c| &c.messages)
        .filter(|m| m.role == "user")
        .map(|m| m.content.as_str())
        .collect();
    let mut rng = super::stream(seed, "instructions");
    let mut cycle = EntityCycle::new(world.entities.len());
    let mut taken = HashSet::new();
    let mut out = Vec::with_capacity(n);
    // The cap only guards against a degenerate world (see `super::validation`).
    let mut attempts = 0;
    while out.len() < n && attempts < 1000 * (n + 1) {
        attempts += 1;
        let focus = cycle.next(&mut rng);
        let (instruction, answer) = turn(&mut rng, world, focus);
        if trained.contains(instruction.as_str()) || !taken.insert(instruction.clone()) {
            continue;
        }
        out.push(Instruction {
            instruction,
            output: Some(answer),
            generator: Some(GENERATOR.to_string()),
            dataset: Some(DATASET.to_string()),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::judge::instructions::read_records;
    use crate::synth::{generate, SynthConfig};

    fn corpus() -> crate::synth::Corpus {
        generate(&SynthConfig {
            seed: 5,
            entities: 20,
            pretrain_docs: 0,
            midtrain_docs: 0,
            sft_chats: 150,
            validation_docs: 0,
            instructions: 60,
        })
    }

    #[test]
    fn seeded_distinct_and_held_out_from_the_chats() {
        let c = corpus();
        assert_eq!(c.instructions.len(), 60);
        assert_eq!(c.instructions, held_out(&c.world, &c.sft, 5, 60));
        assert_ne!(c.instructions, held_out(&c.world, &c.sft, 6, 60));
        let texts: HashSet<&str> = c
            .instructions
            .iter()
            .map(|i| i.instruction.as_str())
            .collect();
        assert_eq!(texts.len(), 60, "distinct");
        let users: HashSet<&str> = c
            .sft
            .iter()
            .flat_map(|ch| &ch.messages)
            .filter(|m| m.role == "user")
            .map(|m| m.content.as_str())
            .collect();
        assert!(texts.is_disjoint(&users), "held out");
        // The test is not vacuous: without the filter, the same stream would repeat
        // some chats' questions (a world of 20 entities has few fact questions).
        let unfiltered = held_out(&c.world, &[], 5, 60);
        assert!(unfiltered
            .iter()
            .any(|i| users.contains(i.instruction.as_str())));
    }

    #[test]
    fn every_kind_occurs_with_its_canonical_answer() {
        let c = corpus();
        let users: Vec<&str> = c
            .instructions
            .iter()
            .map(|i| i.instruction.as_str())
            .collect();
        for needle in ["How many", "Is it true that", "List the", "?"] {
            assert!(users.iter().any(|u| u.contains(needle)), "no {needle:?}");
        }
        let describe = ["Describe ", "Tell me about ", "What do you know about "];
        assert!(users
            .iter()
            .any(|u| describe.iter().any(|d| u.starts_with(d))));
        for i in &c.instructions {
            let answer = i.output.as_deref().unwrap();
            assert!(!answer.trim().is_empty());
            if i.instruction.starts_with("Is it true that") {
                assert!(answer.starts_with("Yes. ") || answer.starts_with("No. "));
            }
            assert_eq!(i.generator.as_deref(), Some(GENERATOR));
            assert_eq!(i.dataset.as_deref(), Some(DATASET));
        }
    }

    #[test]
    fn written_in_alpaca_evals_layout() {
        let c = corpus();
        let dir = tempfile::tempdir().unwrap();
        c.write(dir.path()).unwrap();
        let path = dir.path().join(FILE);
        assert_eq!(read_records(&path).unwrap(), c.instructions);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let first = json.as_array().unwrap()[0].as_object().unwrap();
        let keys: Vec<&str> = first.keys().map(String::as_str).collect();
        assert_eq!(keys, ["instruction", "output", "generator", "dataset"]);
    }

    #[test]
    fn tiny_worlds_and_empty_sets() {
        let world = World::generate(1, 1);
        let set = held_out(&world, &[], 0, 30);
        assert!(!set.is_empty() && set.len() <= 30);
        assert!(held_out(&world, &[], 0, 0).is_empty());
    }
}

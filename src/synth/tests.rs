//! Corpus-level tests: determinism, sizes, held-out validation, file formats, and that
//! what the corpora state agrees with the world.

use super::*;
use std::collections::HashMap;

fn small() -> SynthConfig {
    SynthConfig {
        seed: 42,
        entities: 24,
        pretrain_docs: 600,
        midtrain_docs: 150,
        sft_chats: 120,
        validation_docs: 60,
        instructions: 20,
    }
}

/// The sentences of some documents, split after each full stop, question mark or line
/// break, so template sentences can be looked up exactly.
fn sentences<'a>(docs: impl IntoIterator<Item = &'a String>) -> HashSet<&'a str> {
    docs.into_iter()
        .flat_map(|d| d.split_inclusive(['.', '?', '\n']))
        .map(|s| {
            s.trim()
                .trim_start_matches("- ")
                .trim_start_matches("Answer: ")
        })
        .collect()
}

/// Every statement the templates can make about every (entity, attribute) slot of the
/// world, with whether it is true.
fn all_statements(world: &World) -> HashMap<String, bool> {
    let mut out = HashMap::new();
    for f in world.facts() {
        for v in world.candidates(f.kind, &f.attribute) {
            let claim = world.claim(f.entity, &f.attribute, &v);
            let holds = world.holds(&claim);
            for s in text::statements(&claim) {
                out.insert(s, holds);
            }
        }
    }
    out
}

#[test]
fn same_config_same_corpus_other_seed_other_corpus() {
    let a = generate(&small());
    assert_eq!(a, generate(&small()));
    let b = generate(&SynthConfig {
        seed: 43,
        ..small()
    });
    assert_ne!(a.world, b.world);
    assert_ne!(a.pretrain, b.pretrain);
    assert_ne!(a.sft, b.sft);
}

#[test]
fn written_files_are_byte_identical_across_runs() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    generate(&small()).write(d1.path()).unwrap();
    generate(&small()).write(d2.path()).unwrap();
    for f in FILES {
        let read = |d: &tempfile::TempDir| std::fs::read(d.path().join(f)).unwrap();
        assert_eq!(read(&d1), read(&d2), "{f}");
    }
}

#[test]
fn parts_draw_from_independent_streams() {
    let a = generate(&small());
    let b = generate(&SynthConfig {
        pretrain_docs: 100,
        sft_chats: 20,
        ..small()
    });
    assert_eq!(a.world, b.world);
    assert_eq!(a.midtrain, b.midtrain);
    assert_eq!(a.pretrain[..100], b.pretrain[..]);
    assert_eq!(a.sft[..20], b.sft[..]);
}

#[test]
fn sizes_are_honoured() {
    for cfg in [
        small(),
        SynthConfig {
            entities: 3,
            pretrain_docs: 7,
            midtrain_docs: 0,
            sft_chats: 2,
            validation_docs: 1,
            instructions: 3,
            seed: 1,
        },
    ] {
        let c = generate(&cfg);
        assert_eq!(c.world.entities.len(), cfg.entities);
        assert_eq!(c.pretrain.len(), cfg.pretrain_docs);
        assert_eq!(c.midtrain.len(), cfg.midtrain_docs);
        assert_eq!(c.sft.len(), cfg.sft_chats);
        assert_eq!(c.validation.len(), cfg.validation_docs);
        assert_eq!(c.instructions.len(), cfg.instructions);
        assert!(c
            .pretrain
            .iter()
            .chain(&c.midtrain)
            .all(|d| !d.trim().is_empty()));
    }
}

#[test]
fn validation_is_held_out() {
    let c = generate(&small());
    let train: HashSet<&String> = c.pretrain.iter().collect();
    let val: HashSet<&String> = c.validation.iter().collect();
    assert_eq!(val.len(), c.validation.len(), "validation texts repeat");
    assert!(val.iter().all(|v| !train.contains(v)));
}

#[test]
fn validation_follows_the_pretraining_distribution() {
    let c = generate(&small());
    let starts = |docs: &[String], what: &str| docs.iter().filter(|d| d.contains(what)).count();
    // Each document kind appears in both, in broadly similar proportions.
    for marker in [
        " is a person.",
        " is a town.",
        "The answer is",
        " went back home",
    ] {
        let (p, v) = (starts(&c.pretrain, marker), starts(&c.validation, marker));
        assert!(p > 0 && v > 0, "{marker}: {p} / {v}");
    }
}

#[test]
fn files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c = generate(&small());
    c.write(dir.path()).unwrap();
    let texts = |name: &str| -> Vec<String> {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v.as_object().unwrap().len(), 1, "only a text field");
                v["text"].as_str().unwrap().to_string()
            })
            .collect()
    };
    assert_eq!(texts("pretrain.jsonl"), c.pretrain);
    assert_eq!(texts("midtrain.jsonl"), c.midtrain);
    assert_eq!(texts("validation.jsonl"), c.validation);
    let sft: Vec<Chat> = std::fs::read_to_string(dir.path().join("sft.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sft, c.sft);
    let world_path = dir.path().join("world.json");
    assert_eq!(World::read(&world_path).unwrap(), c.world);
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&world_path).unwrap()).unwrap();
    let facts: Vec<Fact> = serde_json::from_value(raw["facts"].clone()).unwrap();
    assert_eq!(facts, c.world.facts());
}

#[test]
fn sft_chats_alternate_and_end_with_the_assistant() {
    for chat in generate(&small()).sft {
        let roles: Vec<&str> = chat.messages.iter().map(|m| m.role.as_str()).collect();
        let turns = roles.strip_prefix(&["system"]).unwrap_or(&roles);
        assert!(
            !turns.is_empty() && turns.len().is_multiple_of(2),
            "{roles:?}"
        );
        assert!(
            turns.chunks(2).all(|p| p == ["user", "assistant"]),
            "{roles:?}"
        );
    }
}

#[test]
fn every_fact_is_stated_in_pretraining() {
    let c = generate(&SynthConfig::default());
    let said = sentences(&c.pretrain);
    for f in c.world.facts() {
        let stated = text::statements(&f)
            .iter()
            .any(|s| said.contains(s.as_str()));
        assert!(stated, "never stated: {f:?}");
    }
}

#[test]
fn no_document_states_a_false_fact() {
    let c = generate(&small());
    let truth = all_statements(&c.world);
    let chat_text: Vec<String> = c
        .sft
        .iter()
        .flat_map(|ch| &ch.messages)
        .map(|m| m.content.clone())
        .collect();
    for (part, docs) in [
        ("pretrain", &c.pretrain),
        ("midtrain", &c.midtrain),
        ("validation", &c.validation),
        ("sft", &chat_text),
    ] {
        let mut checked = 0;
        for s in sentences(docs.iter()) {
            if let Some(&holds) = truth.get(s) {
                assert!(holds, "{part} states a false fact: {s}");
                checked += 1;
            }
        }
        assert!(checked > 20, "{part}: only {checked} fact sentences found");
    }
}

#[test]
fn worked_arithmetic_is_correct_everywhere() {
    let c = generate(&small());
    let eq = regex::Regex::new(r"(\d+) ([-+*/]) (\d+) = (\d+)").unwrap();
    let chat_text = c.sft.iter().flat_map(|ch| &ch.messages).map(|m| &m.content);
    let mut checked = 0;
    for doc in c.pretrain.iter().chain(&c.midtrain).chain(chat_text) {
        for cap in eq.captures_iter(doc) {
            let n = |i: usize| cap[i].parse::<i64>().unwrap();
            let expected = match &cap[2] {
                "+" => n(1) + n(3),
                "-" => n(1) - n(3),
                "*" => n(1) * n(3),
                _ => n(1) / n(3),
            };
            assert_eq!(n(4), expected, "{}", &cap[0]);
            checked += 1;
        }
    }
    assert!(checked > 100);
}

#[test]
fn midtraining_is_cleaner_than_pretraining() {
    let c = generate(&small());
    let noisy = |docs: &[String]| {
        docs.iter()
            .filter(|d| documents::FILLERS.iter().any(|f| d.contains(f)))
            .count()
    };
    assert!(noisy(&c.pretrain) > 0);
    assert_eq!(noisy(&c.midtrain), 0);
    assert!(c.midtrain.iter().any(|d| d.starts_with("Question: ")));
}

#[test]
fn vocabulary_is_small() {
    let c = generate(&SynthConfig::default());
    let stats = c.stats();
    let pretrain = &stats.parts[0];
    assert_eq!(pretrain.name, "pretrain");
    assert!(
        pretrain.distinct_words < 1500,
        "{} words",
        pretrain.distinct_words
    );
    assert!(
        stats.distinct_words < 2000,
        "{} words",
        stats.distinct_words
    );
}

#[test]
fn unknown_config_fields_are_rejected_and_missing_ones_defaulted() {
    let cfg: SynthConfig = serde_json::from_str(r#"{"seed": 5}"#).unwrap();
    assert_eq!(
        cfg,
        SynthConfig {
            seed: 5,
            ..SynthConfig::default()
        }
    );
    assert!(serde_json::from_str::<SynthConfig>(r#"{"sed": 5}"#).is_err());
    assert!(SynthConfig {
        entities: 0,
        ..small()
    }
    .validate()
    .is_err());
    assert!(small().validate().is_ok());
}

#[test]
fn degenerate_worlds_still_generate() {
    for entities in 0..4 {
        let c = generate(&SynthConfig {
            entities,
            pretrain_docs: 20,
            midtrain_docs: 5,
            sft_chats: 5,
            validation_docs: 5,
            instructions: 5,
            seed: 0,
        });
        assert_eq!(c.pretrain.len(), 20);
        assert_eq!(c.sft.len(), 5);
        assert_eq!(c.instructions.len(), 5);
    }
}

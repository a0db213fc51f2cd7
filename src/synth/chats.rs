//! Supervised fine-tuning chats in the Tulu format
//! (`{"messages": [{"role": "user", "content": ...}, ...]}`): questions about the
//! world's facts, yes/no questions, arithmetic with worked answers, and instructions
//! ("Describe X.", "List the friends of X."). Answers use the canonical phrasings, so
//! fine-tuning teaches a format over facts the model has already seen.

use super::arithmetic::Problem;
use super::documents::{canonical_description, yes_or_no, EntityCycle};
use super::text::{self, join_list};
use super::world::{mention, Kind, World};
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// One conversation, serialised exactly as a Tulu row's `messages` column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    pub(crate) messages: Vec<Message>,
}

/// One message: `role` is `system`, `user` or `assistant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub(crate) role: String,
    pub(crate) content: String,
}

impl Message {
    fn new(role: &str, content: impl Into<String>) -> Message {
        Message {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

const SYSTEM_PROMPTS: &[&str] = &[
    "You are a helpful assistant.",
    "You are a helpful assistant who knows the people, towns and animals of this world.",
    "Answer the question correctly and briefly.",
];
const SHOW_WORK: &[&str] = &["", " Show your work.", " Explain your answer."];

/// A chat: sometimes a system message, then one turn, or two or three turns about the
/// same entity. The focus entities come from `cycle`, so every entity is asked about.
pub fn chat<R: Rng + ?Sized>(rng: &mut R, world: &World, cycle: &mut EntityCycle) -> Chat {
    let mut messages = Vec::new();
    if rng.random_bool(0.25) {
        let prompt = SYSTEM_PROMPTS.choose(rng).expect("prompts");
        messages.push(Message::new("system", *prompt));
    }
    let turns = if rng.random_bool(0.25) {
        rng.random_range(2..=3)
    } else {
        1
    };
    let focus = cycle.next(rng);
    for _ in 0..turns {
        let (user, assistant) = turn(rng, world, focus);
        messages.push(Message::new("user", user));
        messages.push(Message::new("assistant", assistant));
    }
    Chat { messages }
}

/// One (user, assistant) exchange about `focus`, or arithmetic.
pub(crate) fn turn<R: Rng + ?Sized>(
    rng: &mut R,
    world: &World,
    focus: Option<usize>,
) -> (String, String) {
    let Some(e) = focus else {
        return arithmetic(rng, world);
    };
    match rng.random_range(0..100) {
        0..20 => arithmetic(rng, world),
        20..50 => fact_question(rng, world, e),
        50..65 => yes_no(rng, world, e),
        65..78 => describe(rng, world, e),
        _ => list(rng, world, e).unwrap_or_else(|| fact_question(rng, world, e)),
    }
}

fn arithmetic<R: Rng + ?Sized>(rng: &mut R, world: &World) -> (String, String) {
    let p = Problem::random(rng, world);
    let suffix = SHOW_WORK.choose(rng).expect("suffixes");
    (format!("{}{suffix}", p.question), p.worked())
}

fn fact_question<R: Rng + ?Sized>(rng: &mut R, world: &World, e: usize) -> (String, String) {
    let facts = world.facts_of(e);
    let f = facts.choose(rng).expect("every entity has attributes");
    (
        text::question(f, rng.random_range(0..2)),
        text::statement(f, 0),
    )
}

fn yes_no<R: Rng + ?Sized>(rng: &mut R, world: &World, e: usize) -> (String, String) {
    let facts = world.facts_of(e);
    let f = facts.choose(rng).expect("every entity has attributes");
    let (claim, answer) = yes_or_no(rng, world, f);
    (text::yes_no_question(&claim), answer)
}

fn describe<R: Rng + ?Sized>(rng: &mut R, world: &World, e: usize) -> (String, String) {
    let entity = &world.entities[e];
    let m = mention(entity.kind, &entity.name);
    let ask = match rng.random_range(0..3) {
        0 => format!("Describe {m}."),
        1 => format!("Tell me about {m}."),
        _ => format!("What do you know about {m}?"),
    };
    (ask, canonical_description(world, e))
}

/// A "list the ..." instruction that has a non-empty answer for `e`, if any.
fn list<R: Rng + ?Sized>(rng: &mut R, world: &World, e: usize) -> Option<(String, String)> {
    let entity = &world.entities[e];
    let name = &entity.name;
    let names = |ids: Vec<usize>| -> Vec<String> {
        ids.into_iter()
            .map(|i| world.entities[i].name.clone())
            .collect()
    };
    let mut options: Vec<(String, String)> = vec![all_facts(world, e)];
    let mut add = |ask: String, items: Vec<String>, answer: &dyn Fn(String) -> String| {
        if !items.is_empty() {
            options.push((ask, answer(join_list(&items))));
        }
    };
    match entity.kind {
        Kind::Person => add(
            format!("List the friends of {name}."),
            names(entity.related("friend").collect()),
            &|l| format!("The friends of {name}: {l}."),
        ),
        Kind::Town => {
            add(
                format!("List the people who live in {name}."),
                names(world.inverse("home", e)),
                &|l| format!("The people who live in {name}: {l}."),
            );
            add(
                format!("List the animals found near {name}."),
                names(world.inverse("habitat", e)),
                &|l| format!("The animals found near {name}: {l}."),
            );
            add(
                format!("List the towns near {name}."),
                names(entity.related("neighbour").collect()),
                &|l| format!("The towns near {name}: {l}."),
            );
        }
        Kind::Animal => add(
            format!("List the people who keep the {name} as a pet."),
            names(world.inverse("pet", e)),
            &|l| format!("The people who keep the {name} as a pet: {l}."),
        ),
    }
    options.choose(rng).cloned()
}

/// "List the facts you know about X." answered with one canonical statement per line.
fn all_facts(world: &World, e: usize) -> (String, String) {
    let entity = &world.entities[e];
    let lines: Vec<String> = world
        .facts_of(e)
        .iter()
        .map(|f| format!("- {}", text::statement(f, 0)))
        .collect();
    (
        format!("List the facts you know about {}.", entity.mention()),
        lines.join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn chats(n: usize) -> (World, Vec<Chat>) {
        let world = World::generate(12, 40);
        let mut rng = StdRng::seed_from_u64(4);
        let mut cycle = EntityCycle::new(world.entities.len());
        let chats = (0..n).map(|_| chat(&mut rng, &world, &mut cycle)).collect();
        (world, chats)
    }

    #[test]
    fn chats_alternate_and_end_with_the_assistant() {
        let (_, chats) = chats(300);
        for c in &chats {
            let roles: Vec<&str> = c.messages.iter().map(|m| m.role.as_str()).collect();
            let turns = if roles[0] == "system" {
                &roles[1..]
            } else {
                &roles[..]
            };
            assert!(!turns.is_empty() && turns.len() % 2 == 0, "{roles:?}");
            for pair in turns.chunks(2) {
                assert_eq!(pair, ["user", "assistant"]);
            }
            assert!(c.messages.iter().all(|m| !m.content.trim().is_empty()));
        }
        assert!(chats.iter().any(|c| c.messages[0].role == "system"));
        assert!(chats.iter().any(|c| c.messages.len() >= 5));
    }

    #[test]
    fn serialises_as_tulu() {
        let (_, chats) = chats(1);
        let json: serde_json::Value = serde_json::to_value(&chats[0]).unwrap();
        let obj = json.as_object().unwrap();
        assert_eq!(obj.keys().collect::<Vec<_>>(), ["messages"]);
        for m in json["messages"].as_array().unwrap() {
            let mut keys: Vec<&String> = m.as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(keys, ["content", "role"]);
        }
    }

    #[test]
    fn every_kind_of_turn_occurs() {
        let (_, chats) = chats(400);
        let users: Vec<&str> = chats
            .iter()
            .flat_map(|c| c.messages.iter())
            .filter(|m| m.role == "user")
            .map(|m| m.content.as_str())
            .collect();
        for needle in ["How many", "Is it true that", "Describe", "List the", "?"] {
            assert!(users.iter().any(|u| u.contains(needle)), "no {needle:?}");
        }
    }

    #[test]
    fn fact_answers_agree_with_the_world() {
        let (world, chats) = chats(300);
        // Every canonical statement the templates can make, true or false.
        let mut truth = std::collections::HashMap::new();
        for f in world.facts() {
            for v in world.candidates(f.kind, &f.attribute) {
                let claim = world.claim(f.entity, &f.attribute, &v);
                truth.insert(text::statement(&claim, 0), world.holds(&claim));
            }
        }
        let mut checked = 0;
        for c in &chats {
            for m in c.messages.iter().filter(|m| m.role == "assistant") {
                let a = m
                    .content
                    .trim_start_matches("Yes. ")
                    .trim_start_matches("No. ");
                if let Some(&holds) = truth.get(a) {
                    assert!(holds, "false answer: {a}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 50, "only {checked} answers checked");
    }
}

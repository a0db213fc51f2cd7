//! Documents: the pre-training kinds (varied, a little noisy) and the mid-training
//! kinds (clean, dense, question-and-answer shaped), all rendered from the world.
//!
//! Pre-training descriptions visit the entities in a cycle ([`EntityCycle`]) rather
//! than at random, so every fact of the world is stated once the corpus holds as many
//! descriptions as there are entities.

use super::arithmetic::Problem;
use super::stories::story;
use super::text::{self, introduction, join_list, paragraph};
use super::world::{Fact, World};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

/// Hands out entity indices in shuffled rounds, each entity once per round.
pub struct EntityCycle {
    order: Vec<usize>,
    next: usize,
}

impl EntityCycle {
    /// A cycle over the entities `0..n`.
    pub fn new(n: usize) -> EntityCycle {
        EntityCycle {
            order: (0..n).collect(),
            next: n,
        }
    }

    /// The next entity, or `None` in an empty world.
    pub fn next<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Option<usize> {
        if self.order.is_empty() {
            return None;
        }
        if self.next == self.order.len() {
            self.order.shuffle(rng);
            self.next = 0;
        }
        self.next += 1;
        Some(self.order[self.next - 1])
    }
}

/// One pre-training document: an entity description, a story, a worked problem or a
/// handful of relation statements, with noise.
pub fn pretrain_document<R: Rng + ?Sized>(
    rng: &mut R,
    world: &World,
    cycle: &mut EntityCycle,
) -> String {
    let roll = rng.random_range(0..100);
    // A tenth are question-and-answer pages and fact lists, as web text has FAQs: the
    // mid-training mix and the chats then use formats the base model has seen, so
    // mid-training sharpens the model rather than teaching it newlines.
    if roll >= 90 {
        if let Some(e) = cycle.next(rng) {
            return match roll {
                90..95 => question_block(rng, world, e),
                _ => fact_list(world, e),
            };
        }
    }
    let sentences = match roll {
        0..32 => cycle.next(rng).map(|e| varied_description(rng, world, e)),
        32..55 => story(rng, world),
        55..73 => relation_statements(rng, world),
        _ => None,
    };
    let sentences = sentences.unwrap_or_else(|| problem_text(rng, world));
    add_noise(rng, sentences)
}

/// One mid-training document: questions and answers, a canonical description, a fact
/// list or a worked problem, without noise.
pub fn midtrain_document<R: Rng + ?Sized>(
    rng: &mut R,
    world: &World,
    cycle: &mut EntityCycle,
) -> String {
    match (rng.random_range(0..100), cycle.next(rng)) {
        (0..30, Some(e)) => question_block(rng, world, e),
        (30..45, Some(e)) => canonical_description(world, e),
        (45..60, Some(e)) => fact_list(world, e),
        (60..75, Some(e)) => yes_no_block(rng, world, e),
        _ => {
            let p = Problem::random(rng, world);
            format!("Question: {}\nAnswer: {}", p.question, p.worked())
        }
    }
}

/// The entity's introduction and every fact, in the canonical phrasing and schema
/// order: the clean description chats and mid-training use.
pub fn canonical_description(world: &World, e: usize) -> String {
    let mut sentences = vec![intro(world, e)];
    sentences.extend(world.facts_of(e).iter().map(|f| text::statement(f, 0)));
    sentences.extend(residents(world, e));
    paragraph(&sentences)
}

fn intro(world: &World, e: usize) -> String {
    let entity = &world.entities[e];
    introduction(entity.kind, &entity.name)
}

/// "Kalo and Mibel live in Dorford." for a town with residents.
fn residents(world: &World, e: usize) -> Option<String> {
    let names: Vec<String> = world
        .inverse("home", e)
        .into_iter()
        .map(|p| world.entities[p].name.clone())
        .collect();
    let verb = if names.len() == 1 { "lives" } else { "live" };
    (!names.is_empty()).then(|| {
        format!(
            "{} {verb} in {}.",
            join_list(&names),
            world.entities[e].name
        )
    })
}

/// Every fact about the entity, each in a random phrasing, in a shuffled order after
/// the introduction.
fn varied_description<R: Rng + ?Sized>(rng: &mut R, world: &World, e: usize) -> Vec<String> {
    let mut facts: Vec<String> = world
        .facts_of(e)
        .iter()
        .map(|f| text::statement(f, rng.random_range(0..3)))
        .collect();
    facts.extend(residents(world, e));
    facts.shuffle(rng);
    let mut sentences = vec![intro(world, e)];
    sentences.extend(facts);
    sentences
}

/// Three to six relation statements about random entities.
fn relation_statements<R: Rng + ?Sized>(rng: &mut R, world: &World) -> Option<Vec<String>> {
    let relations: Vec<Fact> = world
        .facts()
        .into_iter()
        .filter(|f| {
            !world.entities[f.entity]
                .attributes
                .contains_key(&f.attribute)
        })
        .collect();
    if relations.is_empty() {
        return None;
    }
    let n = rng.random_range(3..=6);
    Some(
        (0..n)
            .map(|_| {
                let f = relations.choose(rng).expect("non-empty");
                text::statement(f, rng.random_range(0..3))
            })
            .collect(),
    )
}

/// A worked problem as running text, in one of three layouts.
fn problem_text<R: Rng + ?Sized>(rng: &mut R, world: &World) -> Vec<String> {
    let p = Problem::random(rng, world);
    match rng.random_range(0..3) {
        0 => vec![p.question.clone(), p.worked()],
        1 => vec![
            format!("Problem: {}", p.question),
            format!("Solution: {}", p.worked()),
        ],
        _ => vec![format!("{}\n{}", p.question, p.gsm8k_answer())],
    }
}

/// Two to five questions about one entity, each answered with the canonical statement.
fn question_block<R: Rng + ?Sized>(rng: &mut R, world: &World, e: usize) -> String {
    let mut facts = world.facts_of(e);
    facts.shuffle(rng);
    facts.truncate(rng.random_range(2..=5));
    facts
        .iter()
        .map(|f| {
            let q = text::question(f, rng.random_range(0..2));
            format!("Question: {q}\nAnswer: {}", text::statement(f, 0))
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// "Facts about X:" and one canonical statement per line.
fn fact_list(world: &World, e: usize) -> String {
    let lines: Vec<String> = world
        .facts_of(e)
        .iter()
        .map(|f| format!("- {}", text::statement(f, 0)))
        .collect();
    format!(
        "Facts about {}:\n{}",
        world.entities[e].name,
        lines.join("\n")
    )
}

/// Yes/no questions about one entity, half of them about a false value.
fn yes_no_block<R: Rng + ?Sized>(rng: &mut R, world: &World, e: usize) -> String {
    let mut facts = world.facts_of(e);
    facts.shuffle(rng);
    facts.truncate(3);
    facts
        .iter()
        .map(|f| {
            let (claim, answer) = yes_or_no(rng, world, f);
            format!(
                "Question: {}\nAnswer: {answer}",
                text::yes_no_question(&claim)
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A claim to ask about and its answer: `fact` itself ("Yes.") or, half of the time,
/// the same attribute with a wrong value ("No. " and the true statement).
pub fn yes_or_no<R: Rng + ?Sized>(rng: &mut R, world: &World, fact: &Fact) -> (Fact, String) {
    let wrong: Vec<String> = world
        .candidates(fact.kind, &fact.attribute)
        .into_iter()
        .filter(|v| !world.holds(&world.claim(fact.entity, &fact.attribute, v)))
        .collect();
    match wrong.choose(rng) {
        Some(v) if rng.random_bool(0.5) => (
            world.claim(fact.entity, &fact.attribute, v),
            format!("No. {}", text::statement(fact, 0)),
        ),
        _ => (fact.clone(), format!("Yes. {}", text::statement(fact, 0))),
    }
}

const HEADERS: &[&str] = &[
    "Notes.",
    "From the old records.",
    "A page from the town book.",
    "Written down by a traveller.",
];
pub(crate) const FILLERS: &[&str] = &[
    "It rained that week.",
    "Nobody remembers why.",
    "The roads were quiet.",
    "This is well known.",
    "Some say so, and it is true.",
    "The wind was cold.",
];

/// Joins sentences into a document with pre-training's noise: an occasional header,
/// filler sentences, a repeated sentence, a sentence in lower case or without its
/// full stop. None of it changes a fact.
fn add_noise<R: Rng + ?Sized>(rng: &mut R, sentences: Vec<String>) -> String {
    let mut out = Vec::new();
    if rng.random_bool(0.15) {
        out.push(HEADERS.choose(rng).expect("headers").to_string());
    }
    for s in sentences {
        let s = match rng.random_range(0..100) {
            0..3 => s.to_lowercase(),
            3..6 => s.trim_end_matches('.').to_string(),
            _ => s,
        };
        if rng.random_bool(0.03) {
            out.push(s.clone());
        }
        out.push(s);
        if rng.random_bool(0.06) {
            out.push(FILLERS.choose(rng).expect("fillers").to_string());
        }
    }
    paragraph(&out)
}

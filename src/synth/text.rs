//! How facts are put into words: a few fixed phrasings per attribute (variety for the
//! pre-training corpus, variant 0 the canonical one for clean data), the questions that
//! ask for them, and small helpers for lists and sentences.
//!
//! Templates use `{s}` for the subject as mentioned mid-sentence ("Kalo", "the
//! Vorling") and `{v}` for the value; they start in lower case where they start with a
//! word, so a statement can be embedded ("is it true that ...").
//!
//! ```
//! use ckpt::synth::{text, world::World};
//! let world = World::generate(1, 8);
//! let fact = &world.facts()[0];
//! assert!(text::statement(fact, 0).contains(&fact.value));
//! assert!(text::question(fact, 0).ends_with('?'));
//! ```

use super::world::{capitalise, mention, Fact, Kind};

/// The phrasings of one attribute of one kind.
struct Phrasing {
    kind: Kind,
    attribute: &'static str,
    /// What the attribute is called in a question ("favourite colour").
    label: &'static str,
    statements: &'static [&'static str],
    questions: &'static [&'static str],
}

const PHRASINGS: &[Phrasing] = &[
    Phrasing {
        kind: Kind::Person,
        attribute: "profession",
        label: "profession",
        statements: &[
            "{s} is a {v}.",
            "{s} works as a {v}.",
            "by trade, {s} is a {v}.",
        ],
        questions: &[
            "What is the profession of {s}?",
            "What does {s} do for a living?",
        ],
    },
    Phrasing {
        kind: Kind::Person,
        attribute: "colour",
        label: "favourite colour",
        statements: &[
            "the favourite colour of {s} is {v}.",
            "{s} likes the colour {v}.",
            "{s} loves {v} more than any other colour.",
        ],
        questions: &[
            "What is the favourite colour of {s}?",
            "Which colour does {s} like best?",
        ],
    },
    Phrasing {
        kind: Kind::Person,
        attribute: "age",
        label: "age",
        statements: &[
            "{s} is {v} years old.",
            "{s} is aged {v}.",
            "the age of {s} is {v}.",
        ],
        questions: &["How old is {s}?", "What is the age of {s}?"],
    },
    Phrasing {
        kind: Kind::Person,
        attribute: "food",
        label: "favourite food",
        statements: &[
            "the favourite food of {s} is {v}.",
            "{s} likes to eat {v}.",
            "{s} enjoys {v} above all other food.",
        ],
        questions: &[
            "What is the favourite food of {s}?",
            "What does {s} like to eat?",
        ],
    },
    Phrasing {
        kind: Kind::Town,
        attribute: "region",
        label: "region",
        statements: &[
            "{s} is a town in the {v}.",
            "{s} lies in the {v}.",
            "the town of {s} is in the {v}.",
        ],
        questions: &["In which region is {s}?", "Where does {s} lie?"],
    },
    Phrasing {
        kind: Kind::Town,
        attribute: "land",
        label: "land",
        statements: &[
            "the land around {s} is {v}.",
            "{s} stands on {v} ground.",
            "{s} is a {v} place.",
        ],
        questions: &[
            "What is the land around {s} like?",
            "What kind of ground is {s} on?",
        ],
    },
    Phrasing {
        kind: Kind::Town,
        attribute: "trade",
        label: "trade",
        statements: &[
            "{s} is known for its {v}.",
            "the people of {s} trade in {v}.",
            "{s} is famous for {v}.",
        ],
        questions: &[
            "What is {s} known for?",
            "What do the people of {s} trade in?",
        ],
    },
    Phrasing {
        kind: Kind::Animal,
        attribute: "colour",
        label: "colour",
        statements: &["{s} is {v}.", "{s} has {v} fur.", "the fur of {s} is {v}."],
        questions: &["What colour is {s}?", "What is the colour of {s}?"],
    },
    Phrasing {
        kind: Kind::Animal,
        attribute: "size",
        label: "size",
        statements: &[
            "{s} is a {v} animal.",
            "{s} is {v} in size.",
            "the size of {s} is {v}.",
        ],
        questions: &["How big is {s}?", "What size is {s}?"],
    },
    Phrasing {
        kind: Kind::Animal,
        attribute: "diet",
        label: "diet",
        statements: &[
            "{s} eats {v}.",
            "{s} feeds on {v}.",
            "the food of {s} is {v}.",
        ],
        questions: &["What does {s} eat?", "What does {s} feed on?"],
    },
    Phrasing {
        kind: Kind::Animal,
        attribute: "legs",
        label: "number of legs",
        statements: &[
            "{s} has {v} legs.",
            "{s} walks on {v} legs.",
            "{s} is an animal with {v} legs.",
        ],
        questions: &[
            "How many legs does {s} have?",
            "On how many legs does {s} walk?",
        ],
    },
    Phrasing {
        kind: Kind::Person,
        attribute: "home",
        label: "home town",
        statements: &[
            "{s} lives in {v}.",
            "{s} has a home in {v}.",
            "the home of {s} is {v}.",
        ],
        questions: &["Where does {s} live?", "In which town does {s} live?"],
    },
    Phrasing {
        kind: Kind::Person,
        attribute: "friend",
        label: "friend",
        statements: &[
            "{s} is a friend of {v}.",
            "{s} and {v} are friends.",
            "{s} is friends with {v}.",
        ],
        questions: &["Who is a friend of {s}?", "Name a friend of {s}."],
    },
    Phrasing {
        kind: Kind::Person,
        attribute: "pet",
        label: "pet",
        statements: &[
            "{s} keeps a {v} as a pet.",
            "the pet of {s} is a {v}.",
            "{s} has a pet {v}.",
        ],
        questions: &[
            "What pet does {s} keep?",
            "Which animal does {s} keep as a pet?",
        ],
    },
    Phrasing {
        kind: Kind::Town,
        attribute: "neighbour",
        label: "neighbouring town",
        statements: &[
            "{s} is near {v}.",
            "{s} lies next to {v}.",
            "the town of {s} is close to {v}.",
        ],
        questions: &["Which town is near {s}?", "Name a town next to {s}."],
    },
    Phrasing {
        kind: Kind::Animal,
        attribute: "habitat",
        label: "habitat",
        statements: &[
            "{s} lives near {v}.",
            "{s} is found near {v}.",
            "you can find {s} near {v}.",
        ],
        questions: &["Where does {s} live?", "Near which town is {s} found?"],
    },
];

fn phrasing(kind: Kind, attribute: &str) -> &'static Phrasing {
    PHRASINGS
        .iter()
        .find(|p| p.kind == kind && p.attribute == attribute)
        .unwrap_or_else(|| panic!("no phrasing for the {attribute} of a {kind}"))
}

fn render(template: &str, fact: &Fact) -> String {
    template
        .replace("{s}", &mention(fact.kind, &fact.subject))
        .replace("{v}", &fact.value)
}

/// How many phrasings a statement of this attribute has.
pub fn statement_variants(kind: Kind, attribute: &str) -> usize {
    phrasing(kind, attribute).statements.len()
}

/// The claim as a sentence; variant 0 is the canonical phrasing, higher variants wrap.
pub fn statement(fact: &Fact, variant: usize) -> String {
    let p = phrasing(fact.kind, &fact.attribute);
    capitalise(&render(p.statements[variant % p.statements.len()], fact))
}

/// Every phrasing of the claim as a sentence.
pub fn statements(fact: &Fact) -> Vec<String> {
    (0..statement_variants(fact.kind, &fact.attribute))
        .map(|v| statement(fact, v))
        .collect()
}

/// A question whose answer is the fact's value; variant 0 is canonical.
pub fn question(fact: &Fact, variant: usize) -> String {
    let p = phrasing(fact.kind, &fact.attribute);
    capitalise(&render(p.questions[variant % p.questions.len()], fact))
}

/// A yes/no question about the claim, in its canonical phrasing
/// ("Is it true that Kalo is a baker?").
pub fn yes_no_question(fact: &Fact) -> String {
    let p = phrasing(fact.kind, &fact.attribute);
    let claim = render(p.statements[0], fact);
    format!("Is it true that {}?", claim.trim_end_matches('.'))
}

/// What the attribute is called in prose ("favourite colour", "home town").
pub fn label(kind: Kind, attribute: &str) -> &'static str {
    phrasing(kind, attribute).label
}

/// The sentence that introduces an entity ("Kalo is a person.", "The Vorling is an
/// animal.").
pub fn introduction(kind: Kind, name: &str) -> String {
    let article = if kind == Kind::Animal { "an" } else { "a" };
    capitalise(&format!("{} is {article} {kind}.", mention(kind, name)))
}

/// "A", "A and B", "A, B and C".
pub fn join_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Sentences joined into a paragraph.
pub fn paragraph(sentences: &[String]) -> String {
    sentences.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::world::{World, RELATIONS};

    #[test]
    fn every_attribute_and_relation_has_a_phrasing() {
        for kind in Kind::ALL {
            for a in kind.attributes() {
                assert!(statement_variants(kind, a) >= 2);
            }
        }
        for r in RELATIONS {
            assert!(statement_variants(r.from, r.name) >= 2);
        }
    }

    #[test]
    fn statements_name_subject_and_value() {
        let world = World::generate(2, 24);
        for f in world.facts() {
            let all = statements(&f);
            assert_eq!(all.len(), statement_variants(f.kind, &f.attribute));
            for s in &all {
                assert!(s.contains(&f.subject) && s.contains(&f.value), "{s}");
                assert!(s.starts_with(char::is_uppercase) && s.ends_with('.'), "{s}");
            }
            let q = question(&f, 1);
            assert!(q.contains(&f.subject) && q.ends_with(['?', '.']), "{q}");
            let yn = yes_no_question(&f);
            assert!(
                yn.starts_with("Is it true that ") && yn.ends_with('?'),
                "{yn}"
            );
        }
    }

    #[test]
    fn statements_of_different_values_differ() {
        let world = World::generate(2, 8);
        let f = &world.facts()[0];
        let mut g = f.clone();
        g.value = "nothing".into();
        for v in 0..3 {
            assert_ne!(statement(f, v), statement(&g, v));
        }
    }

    #[test]
    fn lists_read_naturally() {
        let s = |v: &[&str]| join_list(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&[]), "");
        assert_eq!(s(&["A"]), "A");
        assert_eq!(s(&["A", "B"]), "A and B");
        assert_eq!(s(&["A", "B", "C"]), "A, B and C");
        assert_eq!(
            introduction(Kind::Animal, "Vorling"),
            "The Vorling is an animal."
        );
    }
}

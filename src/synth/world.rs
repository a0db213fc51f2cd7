//! The synthetic world: people, towns and animals with attributes and relations,
//! generated from a seed.
//!
//! Everything the corpora say is rendered from this structure, and the benchmark-shaped
//! tasks built later read the same structure, so a fact learnt from the corpus is the
//! fact a test asks about. The schema is small and closed on purpose: a tiny model must
//! be able to learn every fact in minutes.
//!
//! ```
//! use ckpt::synth::world::World;
//! let world = World::generate(7, 12);
//! let fact = &world.facts()[0];
//! assert!(world.holds(fact));
//! assert!(world.candidates(fact.kind, &fact.attribute).contains(&fact.value));
//! ```

use crate::error::Result;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What an entity is; it decides which attributes and relations the entity has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Person,
    Town,
    Animal,
}

impl Kind {
    /// Every kind, in schema order.
    pub const ALL: [Kind; 3] = [Kind::Person, Kind::Town, Kind::Animal];

    /// The kind as a word ("person", "town", "animal").
    pub fn name(self) -> &'static str {
        match self {
            Kind::Person => "person",
            Kind::Town => "town",
            Kind::Animal => "animal",
        }
    }

    /// The attributes every entity of this kind has, in schema order.
    pub fn attributes(self) -> &'static [&'static str] {
        match self {
            Kind::Person => &["profession", "colour", "age", "food"],
            Kind::Town => &["region", "land", "trade"],
            Kind::Animal => &["colour", "size", "diet", "legs"],
        }
    }

    /// The relations an entity of this kind may have.
    pub fn relations(self) -> impl Iterator<Item = &'static RelationSpec> {
        RELATIONS.iter().filter(move |r| r.from == self)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A relation of the schema: its name, the kinds it links, whether it goes both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelationSpec {
    pub(crate) name: &'static str,
    pub(crate) from: Kind,
    pub(crate) to: Kind,
    /// A symmetric relation is stored on both entities (friends, neighbouring towns).
    pub(crate) symmetric: bool,
}

/// Every relation of the schema.
pub const RELATIONS: [RelationSpec; 5] = [
    RelationSpec {
        name: "home",
        from: Kind::Person,
        to: Kind::Town,
        symmetric: false,
    },
    RelationSpec {
        name: "friend",
        from: Kind::Person,
        to: Kind::Person,
        symmetric: true,
    },
    RelationSpec {
        name: "pet",
        from: Kind::Person,
        to: Kind::Animal,
        symmetric: false,
    },
    RelationSpec {
        name: "neighbour",
        from: Kind::Town,
        to: Kind::Town,
        symmetric: true,
    },
    RelationSpec {
        name: "habitat",
        from: Kind::Animal,
        to: Kind::Town,
        symmetric: false,
    },
];

/// The schema entry of relation `name`, if it is one.
#[cfg(test)]
pub fn relation(name: &str) -> Option<&'static RelationSpec> {
    RELATIONS.iter().find(|r| r.name == name)
}

pub(crate) const PROFESSIONS: &[&str] = &[
    "baker", "smith", "farmer", "teacher", "healer", "weaver", "sailor", "miner", "painter",
    "singer", "hunter", "potter",
];
pub(crate) const COLOURS: &[&str] = &[
    "red", "blue", "green", "yellow", "white", "black", "orange", "purple", "grey", "brown",
];
const FOODS: &[&str] = &[
    "bread", "apples", "fish", "cheese", "rice", "soup", "honey", "plums",
];
const REGIONS: &[&str] = &["north", "south", "east", "west"];
const LANDS: &[&str] = &["hilly", "flat", "rocky", "wooded", "marshy", "sandy"];
const TRADES: &[&str] = &[
    "wool", "salt", "timber", "copper", "grain", "glass", "wine", "silk",
];
const SIZES: &[&str] = &["tiny", "small", "large", "huge"];
const DIETS: &[&str] = &["seeds", "leaves", "insects", "berries", "grass", "roots"];
const LEGS: &[&str] = &["two", "four", "six", "eight"];
/// Ages are digits; a narrow range keeps the vocabulary small.
const AGES: std::ops::RangeInclusive<u32> = 20..=70;

/// The closed set of values of every attribute, keyed by attribute name.
pub fn vocabularies() -> BTreeMap<String, Vec<String>> {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    BTreeMap::from([
        ("profession".to_string(), words(PROFESSIONS)),
        ("colour".to_string(), words(COLOURS)),
        ("age".to_string(), AGES.map(|a| a.to_string()).collect()),
        ("food".to_string(), words(FOODS)),
        ("region".to_string(), words(REGIONS)),
        ("land".to_string(), words(LANDS)),
        ("trade".to_string(), words(TRADES)),
        ("size".to_string(), words(SIZES)),
        ("diet".to_string(), words(DIETS)),
        ("legs".to_string(), words(LEGS)),
    ])
}

/// One person, town or animal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    /// Invented, unique across the world, one word.
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// Attribute name -> value; every attribute of the kind is present.
    pub(crate) attributes: BTreeMap<String, String>,
    /// (relation name, index of the related entity in [`World::entities`]), sorted.
    pub(crate) relations: Vec<(String, usize)>,
}

impl Entity {
    /// The indices of the entities this one has `relation` to.
    pub fn related<'a>(&'a self, relation: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.relations
            .iter()
            .filter(move |(r, _)| r == relation)
            .map(|(_, i)| *i)
    }

    /// How a sentence refers to the entity mid-sentence: animals are a species, so
    /// "the Vorling"; people and towns by name.
    pub fn mention(&self) -> String {
        mention(self.kind, &self.name)
    }
}

/// How a sentence refers to an entity of `kind` named `name` (see [`Entity::mention`]).
pub fn mention(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Animal => format!("the {name}"),
        _ => name.to_string(),
    }
}

/// A claim about an entity: its `attribute` (or relation) has `value` (for a relation:
/// the related entity's name). [`World::facts`] lists the true ones; a false claim is a
/// `Fact` too, for yes/no questions and distractors ([`World::holds`] tells them apart).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fact {
    /// Index of the subject in [`World::entities`].
    pub(crate) entity: usize,
    /// The subject's name.
    pub(crate) subject: String,
    /// The subject's kind.
    pub kind: Kind,
    pub attribute: String,
    pub value: String,
}

/// The whole synthetic world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct World {
    /// The seed it was generated from.
    pub(crate) seed: u64,
    pub entities: Vec<Entity>,
    /// Attribute name -> every value it can take (distractors are drawn from these).
    pub(crate) vocabularies: BTreeMap<String, Vec<String>>,
}

impl World {
    /// A world of `n_entities` entities (half people, a quarter towns, a quarter
    /// animals), the same for the same seed.
    pub fn generate(seed: u64, n_entities: usize) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let vocabularies = vocabularies();
        let mut names = BTreeSet::new();
        let mut entities: Vec<Entity> = (0..n_entities)
            .map(|i| {
                let kind = kind_of(i);
                Entity {
                    name: unique_name(&mut rng, kind, &mut names),
                    kind,
                    attributes: random_attributes(&mut rng, kind, &vocabularies),
                    relations: Vec::new(),
                }
            })
            .collect();
        link(&mut rng, &mut entities);
        World {
            seed,
            entities,
            vocabularies,
        }
    }

    /// Reads a world written by [`crate::synth::Corpus::write`] (`world.json`).
    pub fn read(path: &Path) -> Result<World> {
        crate::error::read_json(path)
    }

    /// Every true fact: each entity's attributes, then its relations.
    pub fn facts(&self) -> Vec<Fact> {
        (0..self.entities.len())
            .flat_map(|i| self.facts_of(i))
            .collect()
    }

    /// The true facts about entity `i`, attributes in schema order, then relations.
    pub fn facts_of(&self, i: usize) -> Vec<Fact> {
        let e = &self.entities[i];
        let attributes = e
            .kind
            .attributes()
            .iter()
            .map(|a| (a.to_string(), e.attributes[*a].clone()));
        let relations = e
            .relations
            .iter()
            .map(|(r, j)| (r.clone(), self.entities[*j].name.clone()));
        attributes
            .chain(relations)
            .map(|(attribute, value)| self.claim(i, &attribute, &value))
            .collect()
    }

    /// The claim "entity `i`'s `attribute` is `value`", true or not.
    pub fn claim(&self, i: usize, attribute: &str, value: &str) -> Fact {
        let e = &self.entities[i];
        Fact {
            entity: i,
            subject: e.name.clone(),
            kind: e.kind,
            attribute: attribute.to_string(),
            value: value.to_string(),
        }
    }

    /// Whether `fact` is true in this world.
    pub fn holds(&self, fact: &Fact) -> bool {
        let Some(e) = self.entities.get(fact.entity) else {
            return false;
        };
        if let Some(v) = e.attributes.get(&fact.attribute) {
            return *v == fact.value;
        }
        e.related(&fact.attribute)
            .any(|j| self.entities[j].name == fact.value)
    }

    /// Every value `attribute` of an entity of `kind` can take: the attribute's
    /// vocabulary, or for a relation the names of all entities of the target kind.
    pub fn candidates(&self, kind: Kind, attribute: &str) -> Vec<String> {
        match RELATIONS
            .iter()
            .find(|r| r.name == attribute && r.from == kind)
        {
            Some(spec) => self
                .of_kind(spec.to)
                .map(|j| self.entities[j].name.clone())
                .collect(),
            None => self
                .vocabularies
                .get(attribute)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Indices of the entities of `kind`.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = usize> + '_ {
        (0..self.entities.len()).filter(move |&i| self.entities[i].kind == kind)
    }

    /// Index of the entity called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.entities.iter().position(|e| e.name == name)
    }

    /// Indices of the entities that have `relation` to entity `target` (who lives in a
    /// town, which animals live near it...).
    pub fn inverse(&self, relation: &str, target: usize) -> Vec<usize> {
        (0..self.entities.len())
            .filter(|&i| self.entities[i].related(relation).any(|j| j == target))
            .collect()
    }
}

/// The kind of the `i`-th entity: the pattern keeps the mix at half people, a quarter
/// towns, a quarter animals for any size, and gives people a town from the second
/// entity on.
fn kind_of(i: usize) -> Kind {
    [Kind::Person, Kind::Town, Kind::Person, Kind::Animal][i % 4]
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ra", "te", "vo", "shi", "bel", "dor", "fen", "gu", "ril", "zan", "nu",
    "pel", "tor", "sa", "wen", "ko", "li", "mar", "tes", "bo", "jun",
];
const TOWN_ENDINGS: &[&str] = &["ford", "holm", "wick", "mere", "dale", "stead"];
const ANIMAL_ENDINGS: &[&str] = &["ling", "wing", "hop", "back", "snout"];

/// A fresh invented name: syllables (two for people, one before a town's or animal's
/// ending), one syllable more each time twenty tries collide, so any size terminates.
fn unique_name(rng: &mut StdRng, kind: Kind, taken: &mut BTreeSet<String>) -> String {
    let (base, endings) = match kind {
        Kind::Person => (2, &[""][..]),
        Kind::Town => (1, TOWN_ENDINGS),
        Kind::Animal => (1, ANIMAL_ENDINGS),
    };
    for attempt in 0.. {
        let mut name: String = (0..base + attempt / 20)
            .map(|_| *SYLLABLES.choose(rng).expect("syllables"))
            .collect();
        name.push_str(endings.choose(rng).expect("endings"));
        let name = capitalise(&name);
        if taken.insert(name.clone()) {
            return name;
        }
    }
    unreachable!("the name space grows without bound")
}

/// `word` with its first letter in upper case.
pub(crate) fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn random_attributes(
    rng: &mut StdRng,
    kind: Kind,
    vocabularies: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, String> {
    kind.attributes()
        .iter()
        .map(|a| {
            let value = vocabularies[*a].choose(rng).expect("non-empty vocabulary");
            (a.to_string(), value.clone())
        })
        .collect()
}

/// Draws the relations: every person a home, every animal a habitat, every person a
/// friend and every town a neighbour (when there is another), some people a pet and a
/// second friend. Dense, regular links give the stories and list questions material.
fn link(rng: &mut StdRng, entities: &mut [Entity]) {
    let of = |kind: Kind| -> Vec<usize> {
        (0..entities.len())
            .filter(|&i| entities[i].kind == kind)
            .collect()
    };
    let (people, towns, animals) = (of(Kind::Person), of(Kind::Town), of(Kind::Animal));
    for &p in &people {
        add(entities, p, "home", towns.choose(rng).copied());
        if rng.random_bool(0.6) {
            add(entities, p, "pet", animals.choose(rng).copied());
        }
    }
    for &a in &animals {
        add(entities, a, "habitat", towns.choose(rng).copied());
    }
    pair_up(rng, entities, &people, "friend", 0.3);
    pair_up(rng, entities, &towns, "neighbour", 0.0);
    for e in entities.iter_mut() {
        e.relations.sort();
        e.relations.dedup();
    }
}

/// Gives every member of `group` a partner under the symmetric `relation`, and a second
/// one with probability `extra`.
fn pair_up(rng: &mut StdRng, entities: &mut [Entity], group: &[usize], relation: &str, extra: f64) {
    if group.len() < 2 {
        return;
    }
    for &i in group {
        let wanted = if rng.random_bool(extra) { 2 } else { 1 };
        while entities[i].related(relation).count() < wanted {
            let j = group[rng.random_range(0..group.len())];
            if j != i && !entities[i].related(relation).any(|k| k == j) {
                add(entities, i, relation, Some(j));
                add(entities, j, relation, Some(i));
            } else if group.len() == 2 && entities[i].related(relation).count() == 1 {
                break; // the only possible partner is taken already
            }
        }
    }
}

fn add(entities: &mut [Entity], from: usize, relation: &str, to: Option<usize>) {
    if let Some(to) = to {
        entities[from].relations.push((relation.to_string(), to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_world_other_seed_other_world() {
        assert_eq!(World::generate(3, 40), World::generate(3, 40));
        assert_ne!(World::generate(3, 40), World::generate(4, 40));
    }

    #[test]
    fn names_are_unique_single_words() {
        let world = World::generate(1, 600);
        let names: BTreeSet<&str> = world.entities.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names.len(), 600);
        assert!(names.iter().all(|n| !n.contains(' ') && n.len() >= 3));
    }

    #[test]
    fn every_entity_follows_the_schema() {
        let world = World::generate(5, 60);
        for (i, e) in world.entities.iter().enumerate() {
            let keys: Vec<&str> = e.attributes.keys().map(String::as_str).collect();
            let mut schema = e.kind.attributes().to_vec();
            schema.sort();
            assert_eq!(keys, schema, "{}", e.name);
            for (r, j) in &e.relations {
                let spec = relation(r).unwrap();
                assert_eq!((spec.from, spec.to), (e.kind, world.entities[*j].kind));
                assert_ne!(i, *j);
                if spec.symmetric {
                    assert!(world.entities[*j].related(r).any(|k| k == i));
                }
            }
            let needs = match e.kind {
                Kind::Person => ["home", "friend"].as_slice(),
                Kind::Town => &["neighbour"],
                Kind::Animal => &["habitat"],
            };
            for r in needs {
                assert!(e.related(r).count() >= 1, "{} has no {r}", e.name);
            }
        }
    }

    #[test]
    fn facts_hold_and_their_values_are_candidates() {
        let world = World::generate(9, 30);
        let facts = world.facts();
        assert!(facts.len() >= 30 * 4);
        for f in &facts {
            assert!(world.holds(f));
            assert!(world.candidates(f.kind, &f.attribute).contains(&f.value));
        }
        let f = &facts[0];
        let other = world
            .candidates(f.kind, &f.attribute)
            .into_iter()
            .find(|v| *v != f.value)
            .unwrap();
        assert!(!world.holds(&world.claim(f.entity, &f.attribute, &other)));
    }

    #[test]
    fn tiny_worlds_do_not_panic() {
        for n in 0..6 {
            let world = World::generate(2, n);
            assert_eq!(world.entities.len(), n);
            assert!(world.facts().iter().all(|f| world.holds(f)));
        }
    }

    #[test]
    fn inverse_finds_the_residents() {
        let world = World::generate(4, 40);
        let town = world.of_kind(Kind::Town).next().unwrap();
        for p in world.inverse("home", town) {
            assert!(world.entities[p].related("home").any(|t| t == town));
        }
    }

    #[test]
    fn json_round_trip() {
        let world = World::generate(8, 20);
        let text = serde_json::to_string(&world).unwrap();
        assert_eq!(serde_json::from_str::<World>(&text).unwrap(), world);
    }
}

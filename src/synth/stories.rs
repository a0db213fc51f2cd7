//! Short stories about the world's people: a few skeletons whose slots are filled with
//! true facts (a friend's home, a pet's diet, a town's trade), so a story repeats the
//! world's facts in running prose without ever contradicting them.

use super::text::join_list;
use super::world::{capitalise, Kind, World};
use rand::seq::IndexedRandom;
use rand::Rng;

/// A story skeleton: the sentences about a hero, or `None` if the hero lacks what the
/// story needs (a friend, a pet).
type Teller<R> = fn(&mut R, &World, usize) -> Option<Vec<String>>;

const TIMES: &[&str] = &[
    "morning",
    "evening",
    "spring day",
    "summer day",
    "winter day",
];

/// The sentences of a story about a random person, or `None` when the world has no
/// person with a home.
pub fn story<R: Rng + ?Sized>(rng: &mut R, world: &World) -> Option<Vec<String>> {
    let people: Vec<usize> = world
        .of_kind(Kind::Person)
        .filter(|&p| world.entities[p].related("home").next().is_some())
        .collect();
    let &hero = people.choose(rng)?;
    let tellers: [Teller<R>; 3] = [visit, lost_pet, market];
    let first = rng.random_range(0..tellers.len());
    // Not every person has a friend or a pet: try the skeletons in turn from a random one.
    (0..tellers.len()).find_map(|k| tellers[(first + k) % tellers.len()](rng, world, hero))
}

fn name(world: &World, i: usize) -> &str {
    &world.entities[i].name
}

fn attr<'w>(world: &'w World, i: usize, attribute: &str) -> &'w str {
    &world.entities[i].attributes[attribute]
}

fn first_related(world: &World, i: usize, relation: &str) -> Option<usize> {
    world.entities[i].related(relation).next()
}

/// The hero walks to a friend's town, they share the hero's favourite food.
fn visit<R: Rng + ?Sized>(rng: &mut R, world: &World, hero: usize) -> Option<Vec<String>> {
    let friends: Vec<usize> = world.entities[hero].related("friend").collect();
    let &friend = friends.choose(rng)?;
    let (p, f) = (name(world, hero), name(world, friend));
    let home = name(world, first_related(world, hero, "home")?);
    let time = TIMES.choose(rng).expect("times");
    let mut s = Vec::new();
    match first_related(world, friend, "home") {
        Some(t) if name(world, t) != home => {
            s.push(format!(
                "One {time}, {p} the {} walked from {home} to {} to see {f}.",
                attr(world, hero, "profession"),
                name(world, t)
            ));
        }
        _ => s.push(format!(
            "One {time}, {p} the {} went to see {f}, who also lives in {home}.",
            attr(world, hero, "profession")
        )),
    }
    s.push(format!(
        "{f} is a {} and is {} years old.",
        attr(world, friend, "profession"),
        attr(world, friend, "age")
    ));
    let food = attr(world, hero, "food");
    s.push(format!(
        "They ate {food} together, because {food} is what {p} likes best."
    ));
    if rng.random_bool(0.5) {
        s.push(format!("{p} and {f} have been friends for a long time."));
    }
    s.push(format!("In the evening, {p} went back home to {home}."));
    Some(s)
}

/// The hero's pet runs away and is found near its habitat.
fn lost_pet<R: Rng + ?Sized>(rng: &mut R, world: &World, hero: usize) -> Option<Vec<String>> {
    let pet = first_related(world, hero, "pet")?;
    let (p, a) = (name(world, hero), name(world, pet));
    let home = name(world, first_related(world, hero, "home")?);
    let mut s = vec![
        format!("{p} keeps a {a} as a pet."),
        format!(
            "The {a} is a {} {} animal with {} legs, and it eats {}.",
            attr(world, pet, "size"),
            attr(world, pet, "colour"),
            attr(world, pet, "legs"),
            attr(world, pet, "diet")
        ),
        format!(
            "One {}, the {a} ran away from {home}.",
            TIMES.choose(rng).expect("times")
        ),
    ];
    match first_related(world, pet, "habitat") {
        Some(t) => s.push(format!(
            "{p} looked everywhere and found it near {}, where the {a} lives.",
            name(world, t)
        )),
        None => s.push(format!("{p} looked everywhere and found it at last.")),
    }
    s.push(format!(
        "{p} was very happy and gave the {a} some {}.",
        attr(world, pet, "diet")
    ));
    Some(s)
}

/// The hero goes to the market of the home town or a neighbouring one.
fn market<R: Rng + ?Sized>(rng: &mut R, world: &World, hero: usize) -> Option<Vec<String>> {
    let home = first_related(world, hero, "home")?;
    let mut towns = vec![home];
    towns.extend(world.entities[home].related("neighbour"));
    let &town = towns.choose(rng)?;
    let (p, t) = (name(world, hero), name(world, town));
    let trade = attr(world, town, "trade");
    let mut s = vec![
        format!("Every week {p} goes to the market in {t}."),
        format!(
            "{t} lies in the {} and is known for its {trade}.",
            attr(world, town, "region")
        ),
        format!(
            "There {p} sells {} and buys some {trade}.",
            attr(world, hero, "food")
        ),
    ];
    let animals = world.inverse("habitat", town);
    if let Some(&a) = animals.choose(rng) {
        s.push(format!(
            "On the way {p} saw a {}, which has {} fur.",
            name(world, a),
            attr(world, a, "colour")
        ));
    }
    let residents: Vec<String> = world
        .inverse("home", town)
        .into_iter()
        .filter(|&r| r != hero)
        .take(3)
        .map(|r| name(world, r).to_string())
        .collect();
    if !residents.is_empty() {
        let verb = if residents.len() == 1 {
            "lives"
        } else {
            "live"
        };
        s.push(format!(
            "{} {verb} in {t} and {p} greeted them.",
            capitalise(&join_list(&residents))
        ));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn every_world_with_people_and_towns_has_stories() {
        let world = World::generate(6, 40);
        let mut rng = StdRng::seed_from_u64(3);
        let stories: Vec<String> = (0..30)
            .map(|_| story(&mut rng, &world).unwrap().join(" "))
            .collect();
        assert!(stories.iter().all(|s| s.len() > 80 && s.ends_with('.')));
        let distinct: std::collections::BTreeSet<&String> = stories.iter().collect();
        assert!(distinct.len() > 20);
    }

    #[test]
    fn no_story_without_a_home() {
        let world = World::generate(6, 1);
        assert!(story(&mut StdRng::seed_from_u64(3), &world).is_none());
    }
}

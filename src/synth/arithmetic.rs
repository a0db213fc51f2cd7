//! Arithmetic word problems about the world's people, with worked solutions in the
//! shape of GSM8K (one line per step, each holding its equation, then `#### N`).
//!
//! Numbers stay small (operands up to 40, answers up to a few hundred) so the
//! vocabulary stays small and a tiny model can learn the sums it sees.
//!
//! ```
//! use ckpt::synth::{arithmetic::Problem, world::World};
//! use rand::{rngs::StdRng, SeedableRng};
//! let world = World::generate(1, 20);
//! let p = Problem::random(&mut StdRng::seed_from_u64(0), &world);
//! assert_eq!(p.steps.last().unwrap().result, p.answer);
//! assert!(p.gsm8k_answer().ends_with(&format!("#### {}", p.answer)));
//! ```

use super::world::{Kind, World, PROFESSIONS};
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// One of the four operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    /// `a op b` (integer division; problems only divide exactly).
    pub fn apply(self, a: i64, b: i64) -> i64 {
        match self {
            Op::Add => a + b,
            Op::Sub => a - b,
            Op::Mul => a * b,
            Op::Div => a / b,
        }
    }

    /// The symbol GSM8K solutions use.
    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
            Op::Div => '/',
        }
    }
}

/// One computation of a solution: `a op b = result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub(crate) a: i64,
    pub(crate) op: Op,
    pub(crate) b: i64,
    pub result: i64,
}

impl Step {
    fn new(a: i64, op: Op, b: i64) -> Step {
        Step {
            a,
            op,
            b,
            result: op.apply(a, b),
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} = {}",
            self.a,
            self.op.symbol(),
            self.b,
            self.result
        )
    }
}

/// A word problem with its worked solution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub(crate) question: String,
    /// The computations, in order; the last one's result is the answer.
    pub steps: Vec<Step>,
    /// One sentence per step, each containing the step's equation.
    pub(crate) solution: Vec<String>,
    pub answer: i64,
}

impl Problem {
    /// A random problem (one or two steps) about people of `world`.
    pub fn random<R: Rng + ?Sized>(rng: &mut R, world: &World) -> Problem {
        let cast = Cast::draw(rng, world);
        match rng.random_range(0..6) {
            0 => add(rng, &cast),
            1 => subtract(rng, &cast),
            2 => multiply(rng, &cast),
            3 => divide(rng, &cast),
            4 => add_then_subtract(rng, &cast),
            _ => multiply_then_add(rng, &cast),
        }
    }

    /// The solution as prose ending in "The answer is N.", as chats and documents show it.
    pub fn worked(&self) -> String {
        format!("{} The answer is {}.", self.solution.join(" "), self.answer)
    }

    /// The solution in GSM8K's `answer` format: one line per step, then `#### N`.
    pub fn gsm8k_answer(&self) -> String {
        format!("{}\n#### {}", self.solution.join("\n"), self.answer)
    }

    /// A problem from its question's sentences and its (step, solution line) pairs.
    fn new(question: &[String], work: Vec<(Step, String)>) -> Problem {
        let answer = work.last().expect("at least one step").0.result;
        let (steps, solution) = work.into_iter().unzip();
        Problem {
            question: question.join(" "),
            steps,
            solution,
            answer,
        }
    }
}

/// Who a problem is about: a person, another person, the first one's profession, and
/// the thing being counted.
struct Cast {
    who: String,
    other: String,
    profession: String,
    item: &'static str,
}

/// Names used when the world has too few people (tiny test worlds).
const FALLBACK_NAMES: [&str; 2] = ["Kalo", "Mibel"];
const ITEMS: &[&str] = &[
    "apples", "coins", "stones", "books", "cups", "eggs", "shells", "beads", "candles", "pears",
];

impl Cast {
    fn draw<R: Rng + ?Sized>(rng: &mut R, world: &World) -> Cast {
        let people: Vec<usize> = world.of_kind(Kind::Person).collect();
        let (who, other, profession) = match people.len() {
            0 | 1 => (
                FALLBACK_NAMES[0].to_string(),
                FALLBACK_NAMES[1].to_string(),
                PROFESSIONS[0].to_string(),
            ),
            n => {
                let i = people[rng.random_range(0..n)];
                let j = loop {
                    let j = people[rng.random_range(0..n)];
                    if j != i {
                        break j;
                    }
                };
                let e = &world.entities[i];
                (
                    e.name.clone(),
                    world.entities[j].name.clone(),
                    e.attributes["profession"].clone(),
                )
            }
        };
        Cast {
            who,
            other,
            profession,
            item: ITEMS.choose(rng).expect("items"),
        }
    }
}

/// What a person of each profession makes, so "Kalo the baker makes 6 loaves" agrees
/// with the world.
fn product(profession: &str) -> &'static str {
    match profession {
        "baker" => "loaves",
        "smith" => "nails",
        "farmer" => "eggs",
        "teacher" => "lessons",
        "healer" => "potions",
        "weaver" => "scarves",
        "sailor" => "ropes",
        "miner" => "stones",
        "painter" => "paintings",
        "singer" => "songs",
        "hunter" => "arrows",
        _ => "pots",
    }
}

fn add<R: Rng + ?Sized>(rng: &mut R, c: &Cast) -> Problem {
    let (a, b) = (rng.random_range(2..=20), rng.random_range(2..=20));
    let Cast {
        who, other, item, ..
    } = c;
    let s = Step::new(a, Op::Add, b);
    Problem::new(
        &[
            format!("{who} has {a} {item}."),
            format!("{other} gives {who} {b} more {item}."),
            format!("How many {item} does {who} have now?"),
        ],
        vec![(s, format!("{who} has {s} {item} now."))],
    )
}

fn subtract<R: Rng + ?Sized>(rng: &mut R, c: &Cast) -> Problem {
    let a = rng.random_range(10..=40);
    let b = rng.random_range(1..a);
    let Cast {
        who, other, item, ..
    } = c;
    let s = Step::new(a, Op::Sub, b);
    Problem::new(
        &[
            format!("{who} has {a} {item} and gives {b} of them to {other}."),
            format!("How many {item} does {who} have left?"),
        ],
        vec![(s, format!("{who} has {s} {item} left."))],
    )
}

fn multiply<R: Rng + ?Sized>(rng: &mut R, c: &Cast) -> Problem {
    let (a, b) = (rng.random_range(2..=12), rng.random_range(2..=9));
    let (who, job, item) = (&c.who, &c.profession, product(&c.profession));
    let s = Step::new(a, Op::Mul, b);
    Problem::new(
        &[
            format!("{who} the {job} makes {a} {item} every day."),
            format!("How many {item} does {who} make in {b} days?"),
        ],
        vec![(s, format!("In {b} days {who} makes {s} {item}."))],
    )
}

fn divide<R: Rng + ?Sized>(rng: &mut R, c: &Cast) -> Problem {
    let (b, each) = (rng.random_range(2..=6), rng.random_range(2..=10));
    let a = b * each;
    let Cast { who, item, .. } = c;
    let s = Step::new(a, Op::Div, b);
    Problem::new(
        &[
            format!("{who} has {a} {item} and shares them equally among {b} friends."),
            format!("How many {item} does each friend get?"),
        ],
        vec![(s, format!("Each friend gets {s} {item}."))],
    )
}

fn add_then_subtract<R: Rng + ?Sized>(rng: &mut R, c: &Cast) -> Problem {
    let (a, b) = (rng.random_range(5..=30), rng.random_range(2..=20));
    let first = Step::new(a, Op::Add, b);
    let gone = rng.random_range(1..first.result);
    let second = Step::new(first.result, Op::Sub, gone);
    let Cast {
        who, other, item, ..
    } = c;
    Problem::new(
        &[
            format!("{who} has {a} {item}."),
            format!("{who} finds {b} more and then gives {gone} to {other}."),
            format!("How many {item} does {who} have now?"),
        ],
        vec![
            (
                first,
                format!("After finding more, {who} has {first} {item}."),
            ),
            (
                second,
                format!("After giving some away, {who} has {second} {item}."),
            ),
        ],
    )
}

fn multiply_then_add<R: Rng + ?Sized>(rng: &mut R, c: &Cast) -> Problem {
    let (boxes, per) = (rng.random_range(2..=6), rng.random_range(2..=10));
    let more = rng.random_range(1..=15);
    let first = Step::new(boxes, Op::Mul, per);
    let second = Step::new(first.result, Op::Add, more);
    let Cast {
        who, other, item, ..
    } = c;
    Problem::new(
        &[
            format!("{who} buys {boxes} boxes with {per} {item} in each box."),
            format!("{other} gives {who} {more} more {item}."),
            format!("How many {item} does {who} have in all?"),
        ],
        vec![
            (first, format!("The boxes hold {first} {item}.")),
            (second, format!("In all {who} has {second} {item}.")),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn answers_are_correct() {
        let world = World::generate(3, 20);
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..500 {
            let p = Problem::random(&mut rng, &world);
            let mut previous: Option<i64> = None;
            for (step, line) in p.steps.iter().zip(&p.solution) {
                let exact = match step.op {
                    Op::Add => step.a + step.b,
                    Op::Sub => step.a - step.b,
                    Op::Mul => step.a * step.b,
                    Op::Div => {
                        assert_eq!(step.a % step.b, 0, "{step}");
                        step.a / step.b
                    }
                };
                assert_eq!(step.result, exact);
                assert!(step.result > 0, "{step}");
                assert!(line.contains(&step.to_string()), "{line}");
                if let Some(prev) = previous {
                    assert_eq!(step.a, prev, "steps chain");
                }
                previous = Some(step.result);
            }
            assert_eq!(Some(p.answer), previous);
            assert!(
                p.question.contains(&p.steps[0].b.to_string()),
                "{}",
                p.question
            );
            assert!(p
                .worked()
                .ends_with(&format!("The answer is {}.", p.answer)));
        }
    }

    #[test]
    fn problems_name_people_of_the_world() {
        let world = World::generate(3, 20);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let p = Problem::random(&mut rng, &world);
            let named = world
                .of_kind(Kind::Person)
                .any(|i| p.question.starts_with(&world.entities[i].name));
            assert!(named, "{}", p.question);
        }
    }

    #[test]
    fn tiny_world_falls_back_to_fixed_names() {
        let world = World::generate(3, 1);
        let p = Problem::random(&mut StdRng::seed_from_u64(2), &world);
        assert!(p.question.starts_with(FALLBACK_NAMES[0]));
    }

    #[test]
    fn gsm8k_format() {
        let world = World::generate(3, 20);
        let p = Problem::random(&mut StdRng::seed_from_u64(5), &world);
        let answer = p.gsm8k_answer();
        let lines: Vec<&str> = answer.lines().collect();
        assert_eq!(lines.len(), p.steps.len() + 1);
        assert_eq!(*lines.last().unwrap(), format!("#### {}", p.answer));
    }
}

//! The judge's prompt: our own wording (`tasks/judge_pairwise.j2`, overridable) shows
//! the instruction and the two answers under the identifiers `A` and `B`. Which answer
//! is shown first is decided per instruction by a seeded hash, so the judge's position
//! bias falls evenly on both sides and a rerun asks the very same question; the
//! verdict is mapped back to "model vs reference" by [`Shown`].
//!
//! ```no_run
//! # use ckpt::eval::judge::prompt::{JudgeTemplate, Shown};
//! let shown = Shown::for_instruction(0, "Name a colour.");
//! let (a, b) = shown.order("Blue.", "Red is a colour.");
//! let text = JudgeTemplate::builtin().render("Name a colour.", a, b)?;
//! # Ok::<(), ckpt::Error>(())
//! ```

use crate::error::{Error, Result};
use minijinja::{context, Environment};
use std::path::Path;

/// The built-in judge template.
pub(crate) const BUILTIN_TEMPLATE: &str = include_str!("../../../tasks/judge_pairwise.j2");

/// The identifiers of the answer shown first and second.
pub(crate) const IDENTIFIERS: [&str; 2] = ["A", "B"];

/// A compiled judge template.
pub struct JudgeTemplate {
    env: Environment<'static>,
    origin: String,
    /// Content hash of the template source (part of the results' provenance).
    pub hash: String,
}

impl JudgeTemplate {
    /// The built-in template.
    pub fn builtin() -> Self {
        Self::new(BUILTIN_TEMPLATE, "tasks/judge_pairwise.j2")
            .expect("the built-in template compiles")
    }

    /// A template file.
    pub fn read(path: &Path) -> Result<Self> {
        let source = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::new(&source, &path.display().to_string())
    }

    /// Compiles `source`; `origin` names it in errors. A template that renders neither
    /// the answers nor the identifiers is refused: it cannot be a pairwise question.
    pub fn new(source: &str, origin: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_template_owned("judge", source.to_owned())
            .map_err(|e| Error::bad_file(origin, format!("judge template: {e}")))?;
        let t = Self {
            env,
            origin: origin.to_string(),
            hash: blake3::hash(source.as_bytes()).to_hex()[..16].to_string(),
        };
        let probe = t.render("\u{1}instruction", "\u{1}first", "\u{1}second")?;
        if !["\u{1}first", "\u{1}second", "\u{1}instruction"]
            .iter()
            .all(|p| probe.contains(p))
        {
            return Err(Error::bad_file(
                origin,
                "the judge template must show instruction, output_a and output_b",
            ));
        }
        Ok(t)
    }

    /// The user message asking the judge to compare `output_a` (shown first, as `A`)
    /// with `output_b` (as `B`).
    pub fn render(&self, instruction: &str, output_a: &str, output_b: &str) -> Result<String> {
        self.render_as(instruction, output_a, output_b, IDENTIFIERS)
    }

    /// [`Self::render`] under other identifiers (a judge that reads prompts back
    /// renders them with markers, see `super::oracle`).
    pub(crate) fn render_as(
        &self,
        instruction: &str,
        output_a: &str,
        output_b: &str,
        ids: [&str; 2],
    ) -> Result<String> {
        let t = self.env.get_template("judge").expect("added in new");
        t.render(context! {
            instruction => instruction,
            output_a => output_a,
            output_b => output_b,
            id_a => ids[0],
            id_b => ids[1],
        })
        .map_err(|e| Error::bad_file(&self.origin, format!("judge template: {e}")))
    }
}

/// Which answer the judge sees first for one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    /// The model's answer is `A` (else the reference's is).
    pub(crate) model_first: bool,
}

impl Shown {
    /// The order for `instruction` under `seed`: a hash bit, the same on every run.
    pub fn for_instruction(seed: u64, instruction: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(instruction.as_bytes());
        Self {
            model_first: h.finalize().as_bytes()[0] & 1 == 1,
        }
    }

    /// `(A, B)`: the model's and the reference's answers in the order shown.
    pub fn order<'a>(&self, model: &'a str, reference: &'a str) -> (&'a str, &'a str) {
        if self.model_first {
            (model, reference)
        } else {
            (reference, model)
        }
    }

    /// p(model's answer is better) from p(`A` is better).
    pub fn model_probability(&self, p_first: f64) -> f64 {
        if self.model_first {
            p_first
        } else {
            1.0 - p_first
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_template_shows_both_answers_under_their_identifiers() {
        let t = JudgeTemplate::builtin();
        let text = t.render("Add 2 and 2.", "It is 4.", "Five.").unwrap();
        let a = text.find("# Answer A\n\nIt is 4.").unwrap();
        let b = text.find("# Answer B\n\nFive.").unwrap();
        assert!(a < b && text.contains("Add 2 and 2."));
        assert!(text.trim_end().ends_with("A or B, and nothing else."));
        assert!(!text.starts_with('\n') && !text.contains("{#"));
    }

    #[test]
    fn order_is_seeded_balanced_and_mapped_back() {
        let firsts = (0..400)
            .filter(|i| Shown::for_instruction(7, &format!("instruction {i}")).model_first)
            .count();
        assert!((150..250).contains(&firsts), "{firsts} of 400 shown first");
        let s = Shown::for_instruction(7, "x");
        assert_eq!(s, Shown::for_instruction(7, "x"));
        let differs = (0..64).any(|seed| Shown::for_instruction(seed, "x") != s);
        assert!(differs, "the seed changes the order");
        let first = Shown { model_first: true };
        let second = Shown { model_first: false };
        assert_eq!(first.order("m", "r"), ("m", "r"));
        assert_eq!(second.order("m", "r"), ("r", "m"));
        assert_eq!(first.model_probability(0.8), 0.8);
        assert!((second.model_probability(0.8) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn templates_must_show_the_pair() {
        let err = JudgeTemplate::new("{{ instruction }} {{ output_a }}", "j.j2")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("j.j2") && err.contains("output_b"), "{err}");
        let err = JudgeTemplate::new("{{ nope }}", "j.j2")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("j.j2") && err.contains("undefined"), "{err}");
        let err = JudgeTemplate::new("{% if %}", "j.j2")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("j.j2"), "{err}");
    }
}

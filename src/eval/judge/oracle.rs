//! A judge that knows the truth: for instructions with ground-truth answers (the
//! synthetic world's `instructions.json`), it reads the pairwise question of
//! `ckpt eval --tasks alpaca_eval` back out of the judge prompt, scores both answers
//! against the truth and prefers the closer one with a calibrated probability.
//! `ckpt serve --oracle` puts it behind the OpenAI schema (`crate::serve::oracle`).
//!
//! - **Quality** q of an answer: SQuAD's normalized token F1 against the truth
//!   ([`token_f1`]; lower case, ASCII punctuation and the articles a/an/the dropped,
//!   whitespace-split, bag-of-tokens precision and recall). Chosen because it is the
//!   standard, well-understood score of a free-text answer against a reference, it
//!   gives partial credit (a list with two of three names, a description with most
//!   facts: what separates a small model's answers), it charges both padding
//!   (precision) and omissions (recall), and it ignores case, punctuation and spacing,
//!   which are not what a pairwise judge should weigh. Exact match would tie nearly
//!   every pair of a small model's answers at 0. Its blind spot: a wrong yes/no or a
//!   wrong number costs one token, not the whole answer.
//! - **Preference** of the answer shown first: p = sigmoid(k (q_first - q_second))
//!   ([`p_first`]), with k = [`DEFAULT_K`] = 5: an answer one F1 point of 0.1 closer to
//!   the truth has odds e^0.5 = 1.65 to 1, a right answer against a wholly wrong one
//!   p = 0.993, identical answers exactly 0.5. The judge's first token is the better
//!   answer's identifier, and its log-probabilities are ln p and ln(1 - p) for the two
//!   identifiers (they sum to one), so a client reading the preference as AlpacaEval 2
//!   does (`super::preference`) gets p back exactly.
//!
//! Judged against the truth itself (the default reference of `ckpt eval`), a perfect
//! model ties every instruction: its win rate is at most 50.
//!
//! ```
//! use ckpt::eval::judge::instructions::Instruction;
//! use ckpt::eval::judge::oracle::{Oracle, DEFAULT_K};
//! use ckpt::eval::judge::prompt::JudgeTemplate;
//! let truth = Instruction { instruction: "How many legs does the Vorling have?".into(),
//!     output: Some("The Vorling has six legs.".into()), generator: None, dataset: None };
//! let oracle = Oracle::new(&[truth], DEFAULT_K)?;
//! let prompt = JudgeTemplate::builtin().render(
//!     "How many legs does the Vorling have?", "It has four legs.", "Six legs.")?;
//! let v = oracle.judge(&prompt).unwrap();
//! assert_eq!(v.better(), "B");
//! assert!(v.p_first < 0.5);
//! # Ok::<(), ckpt::Error>(())
//! ```

use super::instructions::{preview, Instruction};
use super::prompt::{JudgeTemplate, IDENTIFIERS};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// The slope k of the preference, p = sigmoid(k (q_first - q_second)).
pub const DEFAULT_K: f64 = 5.0;

/// SQuAD v1.1's `normalize_answer`: lower case, ASCII punctuation removed, the whole
/// words `a`, `an` and `the` removed, whitespace collapsed to single spaces.
pub fn normalize(text: &str) -> String {
    let lower: String = text
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    without_articles(&lower)
        .split(is_python_space)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Replaces every maximal run of word characters that is an article by a space, as
/// the regex `\b(a|an|the)\b` does (so `the’s` loses its `the`, `theatre` keeps it).
fn without_articles(text: &str) -> String {
    fn flush(word: &mut String, out: &mut String) {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    }
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if is_word_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Python's `\w` on text without ASCII punctuation (so without `_`).
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

/// Python's `str.isspace`: Unicode white space and the four ASCII separators.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// SQuAD v1.1's token F1 of `prediction` against `truth` (both [`normalize`]d and
/// split on white space; tokens counted with multiplicity); 0 when they share none,
/// an empty answer included.
pub fn token_f1(prediction: &str, truth: &str) -> f64 {
    let (p, t) = (normalize(prediction), normalize(truth));
    let (p, t): (Vec<&str>, Vec<&str>) = (
        p.split_whitespace().collect(),
        t.split_whitespace().collect(),
    );
    let mut left: HashMap<&str, usize> = HashMap::new();
    for tok in &t {
        *left.entry(tok).or_default() += 1;
    }
    let mut same = 0usize;
    for tok in &p {
        if let Some(n) = left.get_mut(tok).filter(|n| **n > 0) {
            *n -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / t.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Probability that the answer of quality `q_first` is the better one:
/// sigmoid(k (q_first - q_second)).
pub(crate) fn p_first(q_first: f64, q_second: f64, k: f64) -> f64 {
    1.0 / (1.0 + (-k * (q_first - q_second)).exp())
}

/// `[ln p, ln (1 - p)]` of [`p_first`], without cancellation for large differences.
pub(crate) fn log_preferences(q_first: f64, q_second: f64, k: f64) -> [f64; 2] {
    let x = k * (q_first - q_second);
    [log_sigmoid(x), log_sigmoid(-x)]
}

/// ln sigmoid(x) = -ln(1 + e^-x).
fn log_sigmoid(x: f64) -> f64 {
    -((-x).max(0.0) + (-x.abs()).exp().ln_1p())
}

/// The pairwise question read out of a judge prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pairwise<'a> {
    pub(crate) instruction: &'a str,
    /// The answers in the order shown.
    pub(crate) answers: [&'a str; 2],
    /// Their identifiers.
    pub(crate) ids: [&'a str; 2],
}

/// What a template shows where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Instruction,
    OutputA,
    OutputB,
    IdA,
    IdB,
}

const SLOTS: [Slot; 5] = [
    Slot::Instruction,
    Slot::OutputA,
    Slot::OutputB,
    Slot::IdA,
    Slot::IdB,
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Slot(Slot),
}

/// A judge template as literal text between slots, to read prompts rendered from it
/// back into their parts.
#[derive(Debug, Clone)]
pub(crate) struct PromptShape {
    parts: Vec<Part>,
    origin: String,
}

/// Marks a slot in the probe rendering: a control character no template contains.
const MARK: char = '\u{1}';

impl PromptShape {
    /// The shape of the built-in template (`tasks/judge_pairwise.j2`).
    pub fn builtin() -> Self {
        Self::of(&JudgeTemplate::builtin(), "the built-in judge template")
            .expect("the built-in template separates its slots")
    }

    /// The shape of `template` (named `origin` in messages), rendered once with a
    /// marker in each slot. Two slots with no text between them could not be told
    /// apart and are refused.
    pub(crate) fn of(template: &JudgeTemplate, origin: &str) -> Result<Self> {
        let marker = |i: usize| format!("{MARK}{i}");
        let probe =
            template.render_as(&marker(0), &marker(1), &marker(2), [&marker(3), &marker(4)])?;
        let mut parts = Vec::new();
        let mut rest = probe.as_str();
        while let Some(at) = rest.find(MARK) {
            let digit = rest[at + 1..].chars().next();
            let slot = digit
                .and_then(|d| d.to_digit(10))
                .and_then(|d| SLOTS.get(d as usize))
                .ok_or_else(|| {
                    Error::bad_value("--judge-template", format!("{origin} contains U+0001"))
                })?;
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_string()));
            } else if matches!(parts.last(), Some(Part::Slot(_))) {
                return Err(Error::bad_value("--judge-template", format!(
                    "{origin} shows two fields with nothing between them: its prompts cannot be read back"
                )));
            }
            parts.push(Part::Slot(*slot));
            rest = &rest[at + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self {
            parts,
            origin: origin.to_string(),
        })
    }

    /// Reads `prompt` back into the instruction, the answers and their identifiers.
    /// Each field ends where the text after it first occurs (the last one where the
    /// template's ending begins), so an answer that itself contains the template's next
    /// heading verbatim is cut there. A field shown twice must read the same both times.
    pub fn parse<'a>(&self, prompt: &'a str) -> std::result::Result<Pairwise<'a>, String> {
        let mut values: [Option<&'a str>; 5] = [None; 5];
        let mut pos = 0;
        let last = self.parts.len().saturating_sub(1);
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Text(text) => {
                    if !prompt[pos..].starts_with(text.as_str()) {
                        return Err(self.mismatch(text, pos));
                    }
                    pos += text.len();
                }
                Part::Slot(slot) => {
                    let end = match self.parts.get(i + 1) {
                        None => prompt.len(),
                        Some(Part::Text(ending)) if i + 1 == last => {
                            match prompt.strip_suffix(ending.as_str()) {
                                Some(head) if head.len() >= pos => head.len(),
                                _ => return Err(self.mismatch(ending, prompt.len())),
                            }
                        }
                        Some(Part::Text(next)) => match prompt[pos..].find(next.as_str()) {
                            Some(at) => pos + at,
                            None => return Err(self.mismatch(next, pos)),
                        },
                        Some(Part::Slot(_)) => unreachable!("refused by PromptShape::of"),
                    };
                    let value = &prompt[pos..end];
                    let seen = &mut values[*slot as usize];
                    if seen.is_some_and(|v| v != value) {
                        return Err(format!(
                            "the prompt shows two different {} ({:?} and {:?}); expected {}",
                            slot_name(*slot),
                            preview(seen.unwrap_or_default()),
                            preview(value),
                            self.origin
                        ));
                    }
                    *seen = Some(value);
                    pos = end;
                }
            }
        }
        let get = |s: Slot| values[s as usize];
        let (Some(instruction), Some(a), Some(b)) = (
            get(Slot::Instruction),
            get(Slot::OutputA),
            get(Slot::OutputB),
        ) else {
            unreachable!("JudgeTemplate::new checks that every template shows all three")
        };
        let ids = [
            get(Slot::IdA).unwrap_or(IDENTIFIERS[0]),
            get(Slot::IdB).unwrap_or(IDENTIFIERS[1]),
        ];
        if ids[0] == ids[1] || ids.iter().any(|id| id.trim().is_empty()) {
            return Err(format!(
                "the prompt's identifiers {:?} and {:?} are not two distinct names",
                ids[0], ids[1]
            ));
        }
        Ok(Pairwise {
            instruction,
            answers: [a, b],
            ids,
        })
    }

    fn mismatch(&self, expected: &str, at: usize) -> String {
        format!(
            "the prompt does not follow {}: expected {:?} at byte {at}",
            self.origin,
            preview(expected)
        )
    }
}

fn slot_name(slot: Slot) -> &'static str {
    match slot {
        Slot::Instruction => "instructions",
        Slot::OutputA => "first answers",
        Slot::OutputB => "second answers",
        Slot::IdA => "first identifiers",
        Slot::IdB => "second identifiers",
    }
}

/// Why the oracle will not judge a prompt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The prompt is not one the judge template renders.
    #[error("{0}")]
    Unparseable(String),
    /// The prompt's instruction has no ground truth here.
    #[error("unknown instruction {0:?}: the judge has no ground truth for it")]
    UnknownInstruction(String),
}

/// The oracle's verdict on one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The identifiers, in the order shown.
    pub(crate) ids: [String; 2],
    /// Each answer's token F1 against the truth.
    pub(crate) quality: [f64; 2],
    /// Probability that the answer shown first is the better one.
    pub p_first: f64,
    /// `[ln p_first, ln (1 - p_first)]`.
    pub(crate) logprobs: [f64; 2],
}

impl Judgement {
    /// The identifier of the better answer (the first one on a tie).
    pub fn better(&self) -> &str {
        &self.ids[usize::from(self.p_first < 0.5)]
    }
}

/// The ground truth of an instruction set and how prompts are read and scored.
#[derive(Debug, Clone)]
pub struct Oracle {
    truth: HashMap<String, String>,
    /// The slope of the preference ([`p_first`]).
    pub(crate) k: f64,
    shape: PromptShape,
}

impl Oracle {
    /// The oracle of `instructions`, every one with its true `output`, reading prompts
    /// of the built-in judge template.
    pub fn new(instructions: &[Instruction], k: f64) -> Result<Self> {
        Self::build(instructions, k).map_err(|m| Error::bad_value("oracle", m))
    }

    /// The oracle of an AlpacaEval-layout file (`ckpt synth`'s `instructions.json`).
    pub fn read(path: &Path, k: f64) -> Result<Self> {
        let records = super::instructions::read_records(path)?;
        Self::build(&records, k).map_err(|e| Error::bad_file(path, e))
    }

    fn build(instructions: &[Instruction], k: f64) -> std::result::Result<Self, String> {
        if !(k.is_finite() && k > 0.0) {
            return Err(format!("the preference slope k must be positive, not {k}"));
        }
        if instructions.is_empty() {
            return Err("no instructions: the judge would know nothing".into());
        }
        let mut truth = HashMap::with_capacity(instructions.len());
        for (i, ins) in instructions.iter().enumerate() {
            let Some(output) = &ins.output else {
                return Err(format!(
                    "instruction {i} ({:?}) has no `output`, the ground truth the judge needs",
                    preview(&ins.instruction)
                ));
            };
            if let Some(other) = truth.insert(ins.instruction.clone(), output.clone()) {
                if other != *output {
                    return Err(format!(
                        "instruction {i} ({:?}) appears twice with different outputs",
                        preview(&ins.instruction)
                    ));
                }
            }
        }
        Ok(Self {
            truth,
            k,
            shape: PromptShape::builtin(),
        })
    }

    /// Instructions known.
    pub fn len(&self) -> usize {
        self.truth.len()
    }

    /// Whether no instruction is known (never, once built).
    pub fn is_empty(&self) -> bool {
        self.truth.is_empty()
    }

    /// Judges one prompt of the built-in judge template.
    pub fn judge(&self, prompt: &str) -> std::result::Result<Judgement, Rejection> {
        let pair = self.shape.parse(prompt).map_err(Rejection::Unparseable)?;
        let truth = self
            .truth
            .get(pair.instruction)
            .ok_or_else(|| Rejection::UnknownInstruction(preview(pair.instruction)))?;
        let quality = pair.answers.map(|a| token_f1(a, truth));
        Ok(Judgement {
            ids: pair.ids.map(str::to_string),
            quality,
            p_first: p_first(quality[0], quality[1], self.k),
            logprobs: log_preferences(quality[0], quality[1], self.k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(instruction: &str, output: &str) -> Instruction {
        Instruction {
            instruction: instruction.into(),
            output: Some(output.into()),
            generator: None,
            dataset: None,
        }
    }

    #[test]
    fn normalization_follows_squad() {
        assert_eq!(normalize("  The Cat's   hat!\n"), "cats hat");
        assert_eq!(normalize("an apple, the theatre"), "apple theatre");
        assert_eq!(normalize("the’s"), "’s");
        assert_eq!(normalize("A."), "");
        assert_eq!(normalize("x\u{1f}y"), "x y");
    }

    #[test]
    fn f1_counts_shared_tokens_with_multiplicity() {
        assert_eq!(token_f1("Six legs.", "the six legs"), 1.0);
        assert_eq!(token_f1("", "six"), 0.0);
        assert_eq!(token_f1("the", "a"), 0.0);
        // p = 2/4 (two x match, the third does not count twice), r = 2/3.
        let f = token_f1("x x x y", "x x z");
        assert!((f - 2.0 * 0.5 * (2.0 / 3.0) / (0.5 + 2.0 / 3.0)).abs() < 1e-15);
    }

    #[test]
    fn preferences_are_a_sigmoid_of_the_quality_gap() {
        assert_eq!(p_first(0.3, 0.3, 5.0), 0.5);
        assert!((p_first(1.0, 0.0, 5.0) - 1.0 / (1.0 + (-5.0f64).exp())).abs() < 1e-15);
        for (a, b) in [(1.0, 0.0), (0.2, 0.9), (0.5, 0.5)] {
            let [la, lb] = log_preferences(a, b, DEFAULT_K);
            assert!((la.exp() - p_first(a, b, DEFAULT_K)).abs() < 1e-15);
            assert!((la.exp() + lb.exp() - 1.0).abs() < 1e-15);
        }
        // No cancellation far out in the tails.
        let [la, lb] = log_preferences(1.0, 0.0, 1000.0);
        assert_eq!(la, -(-1000.0f64).exp().ln_1p());
        assert_eq!(lb, -1000.0 - (-1000.0f64).exp().ln_1p());
    }

    #[test]
    fn prompts_are_read_back_into_their_parts() {
        let t = JudgeTemplate::builtin();
        let shape = PromptShape::builtin();
        let cases = [
            ("Name a colour.", "Blue.", "Red is a colour."),
            ("Multi\n\nline # Answer", "", "# Answer A\n\nodd"),
            ("x", "A", "B"),
        ];
        for (i, a, b) in cases {
            let prompt = t.render(i, a, b).unwrap();
            let p = shape.parse(&prompt).unwrap();
            assert_eq!(p.instruction, i);
            assert_eq!(p.answers, [a, b]);
            assert_eq!(p.ids, IDENTIFIERS);
        }
        let prompt = t.render_as("i", "a", "b", ["1", "2"]).unwrap();
        assert_eq!(shape.parse(&prompt).unwrap().ids, ["1", "2"]);
    }

    #[test]
    fn bad_prompts_say_what_is_wrong() {
        let shape = PromptShape::builtin();
        let err = shape.parse("Which is better, A or B?").unwrap_err();
        assert!(
            err.contains("does not follow the built-in judge template") && err.contains("byte 0"),
            "{err}"
        );
        let t = JudgeTemplate::builtin();
        let good = t.render("i", "a", "b").unwrap();
        let err = shape.parse(good.trim_end_matches("else.")).unwrap_err();
        assert!(err.contains("and nothing else"), "{err}");
        let twice = t.render_as("i", "a", "b", ["A", "A"]).unwrap();
        let err = shape.parse(&twice).unwrap_err();
        assert!(err.contains("two distinct"), "{err}");
        let mixed = good.replacen("B, and nothing", "C, and nothing", 1);
        let err = shape.parse(&mixed).unwrap_err();
        assert!(err.contains("two different second identifiers"), "{err}");
        let glued =
            JudgeTemplate::new("{{ instruction }}{{ output_a }} {{ output_b }}", "g.j2").unwrap();
        let err = PromptShape::of(&glued, "g.j2").unwrap_err().to_string();
        assert!(
            err.contains("g.j2") && err.contains("nothing between"),
            "{err}"
        );
    }

    #[test]
    fn the_oracle_prefers_the_truth() {
        let oracle =
            Oracle::new(&[truth("How old is Kalo?", "Kalo is 31 years old.")], 5.0).unwrap();
        let t = JudgeTemplate::builtin();
        let right = "Kalo is 31 years old.";
        let wrong = "Kalo is a baker.";
        let v = oracle
            .judge(&t.render("How old is Kalo?", wrong, right).unwrap())
            .unwrap();
        assert_eq!(v.better(), "B");
        assert_eq!(v.quality[1], 1.0);
        assert!((v.p_first - p_first(token_f1(wrong, right), 1.0, 5.0)).abs() < 1e-15);
        let v = oracle
            .judge(&t.render("How old is Kalo?", right, right).unwrap())
            .unwrap();
        assert_eq!((v.p_first, v.better()), (0.5, "A"));
        let err = oracle
            .judge(&t.render("How old is Vo?", right, wrong).unwrap())
            .unwrap_err();
        assert_eq!(err, Rejection::UnknownInstruction("How old is Vo?".into()));
        assert!(err.to_string().contains("unknown instruction"));
    }

    #[test]
    fn instruction_sets_without_truth_are_refused() {
        let mut no_output = truth("a", "b");
        no_output.output = None;
        let err = Oracle::new(&[no_output], 5.0).unwrap_err().to_string();
        assert!(err.contains("no `output`"), "{err}");
        let err = Oracle::new(&[truth("a", "b"), truth("a", "c")], 5.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
        assert!(Oracle::new(&[truth("a", "b"), truth("a", "b")], 5.0).is_ok());
        assert!(Oracle::new(&[], 5.0).is_err());
        assert!(Oracle::new(&[truth("a", "b")], 0.0).is_err());
        assert!(Oracle::new(&[truth("a", "b")], f64::NAN).is_err());
    }
}

//! Made-up benchmark data: tiny docs in each task's real Hub schema (the same column
//! names and types), asking about the synthetic world ([`super`]), so a model
//! trained on that world's corpus can score above chance, and no benchmark item is ever
//! copied. Also the exemplar files of the tasks whose exemplars lm-eval hard-codes.
//!
//! Docs are written where `--data-dir` looks for them,
//! `<dir>/<dataset_path>/<dataset_name>/<split>.jsonl`, for every split a spec names;
//! exemplar files as `<dir>/fewshot/<file>.jsonl` (give `--fewshot-dir <dir>/fewshot`).
//! Some docs carry the quirks the real data has and lm-eval's templates handle
//! (HellaSwag's `[title]` markers and empty `ctx_b`, MMLU questions with stray
//! whitespace, ARC's numeric labels, OpenBookQA's padded answer keys, AGIEval docs
//! with two right answers), so the parity check exercises them.
//!
//! Output is a pure function of the seed, the world size and the doc count.
//!
//! ```
//! use ckpt::eval::catalog::Catalog;
//! use ckpt::synth::tasks::{write_task_data, SyntheticConfig};
//! let dir = tempfile::tempdir().unwrap();
//! let specs = Catalog::builtin().unwrap().resolve("arc_easy").unwrap();
//! let cfg = SyntheticConfig { docs: 4, ..SyntheticConfig::default() };
//! let written = write_task_data(dir.path(), &specs, &cfg).unwrap();
//! assert!(dir.path().join("allenai/ai2_arc/ARC-Easy/test.jsonl").is_file());
//! assert_eq!(written.docs, 3 * 4);
//! ```

use super::arithmetic::Problem;
use super::documents::{pretrain_document, EntityCycle};
use super::text;
use super::world::{Fact, Kind, World};
use crate::error::{Error, Result};
use crate::eval::data::split_stem;
use crate::eval::spec::{FewshotSource, TaskSpec};
use crate::eval::task::exemplar_path;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value as Json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The sub-directory of exemplar files.
pub const FEWSHOT_DIR: &str = "fewshot";

/// How much to make.
#[derive(Debug, Clone, Serialize)]
pub struct SyntheticConfig {
    /// Seed of the world (the same as `ckpt synth --seed` for the same world) and docs.
    pub seed: u64,
    /// Entities of the world (`ckpt synth --entities`).
    pub entities: usize,
    /// Docs per split.
    pub docs: usize,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            seed: 0,
            entities: 60,
            docs: 10,
        }
    }
}

/// What [`write_task_data`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// Data files, then exemplar files.
    pub(crate) files: Vec<PathBuf>,
    /// Docs and exemplars in all.
    pub docs: usize,
}

/// Writes docs for every split each of `specs` names, and the exemplar file of each
/// file-sourced spec, under `dir`.
pub fn write_task_data(dir: &Path, specs: &[TaskSpec], cfg: &SyntheticConfig) -> Result<Written> {
    if cfg.entities < 8 {
        return Err(Error::bad_value(
            "entities",
            format!(
                "synthetic benchmark data needs a world of at least 8 entities, not {}",
                cfg.entities
            ),
        ));
    }
    let world = World::generate(cfg.seed, cfg.entities);
    let mut written = Written {
        files: Vec::new(),
        docs: 0,
    };
    let mut seen = BTreeSet::new();
    for spec in specs {
        for split in splits(spec) {
            let path = split_stem(dir, spec, split).with_extension("jsonl");
            if !seen.insert(path.clone()) {
                continue;
            }
            let key = format!(
                "{}/{}/{split}",
                spec.dataset_path,
                spec.dataset_name.as_deref().unwrap_or("")
            );
            let mut rng = StdRng::seed_from_u64(stream_seed(cfg.seed, &key));
            let docs = (0..cfg.docs)
                .map(|i| make_doc(&mut rng, &world, spec, split, i))
                .collect::<Result<Vec<_>>>()?;
            write_jsonl(&path, &docs)?;
            written.docs += docs.len();
            written.files.push(path);
        }
    }
    let fewshot_dir = dir.join(FEWSHOT_DIR);
    for spec in specs
        .iter()
        .filter(|s| s.fewshot_config.source == FewshotSource::File)
    {
        let path = exemplar_path(spec, &fewshot_dir);
        if !seen.insert(path.clone()) {
            continue;
        }
        let mut rng =
            StdRng::seed_from_u64(stream_seed(cfg.seed, &format!("fewshot/{}", spec.task)));
        let rows = exemplars(&mut rng, &world, spec)?;
        write_jsonl(&path, &rows)?;
        written.docs += rows.len();
        written.files.push(path);
    }
    Ok(written)
}

/// Every split a spec names, each once.
fn splits(spec: &TaskSpec) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let named = [
        &spec.training_split,
        &spec.validation_split,
        &spec.test_split,
        &spec.fewshot_split,
    ];
    for s in named.into_iter().flatten() {
        if !out.contains(&s.as_str()) {
            out.push(s);
        }
    }
    out
}

/// FNV-1a of the key mixed into the seed, then SplitMix64's finaliser: a stream per
/// file that does not move when other files are added.
fn stream_seed(seed: u64, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = seed ^ h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn write_jsonl(path: &Path, rows: &[Json]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    crate::atomic_file::write_bytes(path, text.as_bytes())
}

/// One doc of `split` of the spec's dataset, in that dataset's schema.
fn make_doc(
    rng: &mut StdRng,
    world: &World,
    spec: &TaskSpec,
    split: &str,
    i: usize,
) -> Result<Json> {
    let config = spec.dataset_name.as_deref().unwrap_or("");
    let path = spec.dataset_path.as_str();
    Ok(match path {
        "allenai/ai2_arc" => arc(rng, world, split, i),
        "aps/super_glue" if config == "boolq" => boolq(rng, world, i),
        "Rowan/hellaswag" => hellaswag(rng, world, split, i),
        "allenai/openbookqa" => openbookqa(rng, world, i),
        "baber/piqa" => piqa(rng, world),
        "allenai/winogrande" => winogrande(rng, world),
        "cais/mmlu" => mmlu(rng, world, config),
        "truthfulqa/truthful_qa" => truthfulqa(rng, world),
        "openai/gsm8k" => {
            let p = Problem::random(rng, world);
            json!({"question": p.question, "answer": p.gsm8k_answer()})
        }
        "EleutherAI/drop" => drop(rng, world, split, i),
        "SaylorTwift/bbh" => {
            let (input, target) = bbh(rng, world, config);
            json!({"input": input, "target": target})
        }
        p if p.starts_with("hails/agieval-") => agieval(rng, world),
        crate::eval::task::LOCAL_DATASET => {
            let mut cycle = EntityCycle::new(world.entities.len());
            json!({"text": pretrain_document(rng, world, &mut cycle)})
        }
        other => {
            return Err(Error::unsupported(format!(
                "task {}: no synthetic data for dataset {other}",
                spec.task
            )))
        }
    })
}

/// The exemplar file of a file-sourced task, in the columns its spec names.
fn exemplars(rng: &mut StdRng, world: &World, spec: &TaskSpec) -> Result<Vec<Json>> {
    let n = spec.num_fewshot.max(1);
    let cols: Vec<&str> = spec
        .fewshot_config
        .columns
        .iter()
        .map(String::as_str)
        .collect();
    let mut rows: Vec<Json> = match cols.as_slice() {
        ["question", "answer"] => (0..n)
            .map(|_| {
                let q = Question::draw(rng, world);
                json!({"question": q.text, "answer": text::statement(&q.fact, 0)})
            })
            .collect(),
        ["question", "target"] => (0..n)
            .map(|_| {
                let p = Problem::random(rng, world);
                json!({"question": p.question, "target": p.worked()})
            })
            .collect(),
        ["input", "target"] => {
            let config = spec.dataset_name.as_deref().unwrap_or("");
            (0..n)
                .map(|_| {
                    let (input, answer) = bbh(rng, world, config);
                    let q = Question::draw(rng, world);
                    let why = text::statement(&q.fact, 0);
                    json!({"input": input, "target": format!("Let us look. {why}\nSo the answer is {answer}.")})
                })
                .collect()
        }
        other => {
            return Err(Error::unsupported(format!(
                "task {}: no synthetic exemplars with columns {other:?}",
                spec.task
            )))
        }
    };
    if let (Some(col), Some(Json::Object(first))) =
        (&spec.fewshot_config.description_column, rows.first_mut())
    {
        let what = spec
            .dataset_name
            .as_deref()
            .unwrap_or(&spec.task)
            .replace('_', " ");
        // The description first, as lm-eval's YAML lists it before the samples.
        let mut row = serde_json::Map::new();
        row.insert(
            col.clone(),
            json!(format!(
                "Answer made-up {what} questions about a made-up world.\n\n"
            )),
        );
        row.extend(std::mem::take(first));
        *first = row;
    }
    Ok(rows)
}

/// A question about a fact of the world, its right answer and three wrong ones.
struct Question {
    fact: Fact,
    text: String,
    right: String,
    wrong: Vec<String>,
}

impl Question {
    /// A random fact with at least three wrong values to offer.
    fn draw(rng: &mut StdRng, world: &World) -> Question {
        loop {
            let e = rng.random_range(0..world.entities.len());
            let facts = world.facts_of(e);
            let fact = facts
                .choose(rng)
                .expect("every entity has attributes")
                .clone();
            let mut wrong: Vec<String> = world
                .candidates(fact.kind, &fact.attribute)
                .into_iter()
                .filter(|v| *v != fact.subject && !world.holds(&world.claim(e, &fact.attribute, v)))
                .collect();
            if wrong.len() < 3 {
                continue;
            }
            wrong.shuffle(rng);
            wrong.truncate(3);
            let variant = rng.random_range(0..2);
            return Question {
                text: text::question(&fact, variant),
                right: fact.value.clone(),
                fact,
                wrong,
            };
        }
    }

    /// The choices in a random order, and where the right one is.
    fn choices(&self, rng: &mut StdRng) -> (Vec<String>, usize) {
        let mut all = self.wrong.clone();
        let at = rng.random_range(0..=all.len());
        all.insert(at, self.right.clone());
        (all, at)
    }

    /// The statement of the same claim with `value` instead.
    fn statement_with(&self, world: &World, value: &str) -> String {
        text::statement(
            &world.claim(self.fact.entity, &self.fact.attribute, value),
            0,
        )
    }
}

const LETTERS: [&str; 5] = ["A", "B", "C", "D", "E"];

fn arc(rng: &mut StdRng, world: &World, split: &str, i: usize) -> Json {
    let q = Question::draw(rng, world);
    let (choices, at) = q.choices(rng);
    // A fifth of ARC's questions are labelled 1-4 instead of A-D.
    let numeric = rng.random_ratio(1, 5);
    let labels: Vec<String> = (0..choices.len())
        .map(|k| {
            if numeric {
                (k + 1).to_string()
            } else {
                LETTERS[k].to_string()
            }
        })
        .collect();
    json!({
        "id": format!("Synth_{split}_{i}"),
        "question": q.text,
        "choices": {"text": choices, "label": labels},
        "answerKey": labels[at],
    })
}

fn openbookqa(rng: &mut StdRng, world: &World, i: usize) -> Json {
    let q = Question::draw(rng, world);
    let (choices, at) = q.choices(rng);
    // lm-eval strips the answer key: some keys in the wild carry a space.
    let pad = if rng.random_ratio(1, 5) { " " } else { "" };
    json!({
        "id": format!("{}-{i}", rng.random_range(100..999)),
        "question_stem": q.text.trim_end_matches('?'),
        "choices": {"text": choices, "label": LETTERS[..4]},
        "answerKey": format!("{pad}{}", LETTERS[at]),
    })
}

fn boolq(rng: &mut StdRng, world: &World, i: usize) -> Json {
    let q = Question::draw(rng, world);
    let statements: Vec<String> = world
        .facts_of(q.fact.entity)
        .iter()
        .map(|f| text::statement(f, 0))
        .collect();
    let holds = rng.random_bool(0.5);
    let value = if holds {
        q.right.clone()
    } else {
        q.wrong[0].clone()
    };
    let claim = world.claim(q.fact.entity, &q.fact.attribute, &value);
    let question = text::yes_no_question(&claim);
    let question = question.trim_end_matches('?');
    let question = lower_first(question);
    json!({
        "question": question,
        "passage": text::paragraph(&statements),
        "idx": i,
        "label": i64::from(holds),
    })
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The longest common prefix of `texts`, cut back to a word boundary.
fn common_words(texts: &[String]) -> usize {
    let first = texts[0].as_bytes();
    let mut n = first.len();
    for t in &texts[1..] {
        n = n.min(
            first
                .iter()
                .zip(t.as_bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    texts[0][..n].rfind(' ').map_or(0, |k| k + 1)
}

fn hellaswag(rng: &mut StdRng, world: &World, split: &str, i: usize) -> Json {
    let q = Question::draw(rng, world);
    let (values, gold) = q.choices(rng);
    let sentences: Vec<String> = values.iter().map(|v| q.statement_with(world, v)).collect();
    let cut = if rng.random_ratio(1, 6) {
        0
    } else {
        common_words(&sentences)
    };
    let ctx_b = lower_first(sentences[0][..cut].trim_end());
    let mut endings: Vec<String> = sentences.iter().map(|s| s[cut..].to_string()).collect();
    // WikiHow-style markers that lm-eval's preprocessing cleans away.
    if rng.random_ratio(1, 3) {
        let k = rng.random_range(0..endings.len());
        endings[k] = format!(
            "{} [title] Then  rest [step] a while.",
            endings[k].trim_end_matches('.')
        );
    }
    let e = &world.entities[q.fact.entity];
    let mut ctx_a = text::introduction(e.kind, &e.name);
    if rng.random_ratio(1, 4) {
        ctx_a = format!("[header] {ctx_a}");
    }
    let label = text::label(q.fact.kind, &q.fact.attribute);
    json!({
        "ind": i,
        "activity_label": capitalise(label),
        "ctx_a": ctx_a,
        "ctx_b": ctx_b,
        "ctx": format!("{ctx_a} {ctx_b}"),
        "endings": endings,
        "source_id": format!("synth~{i}"),
        "split": if split == "validation" { "val" } else { split },
        "split_type": if rng.random_bool(0.5) { "indomain" } else { "zeroshot" },
        "label": gold.to_string(),
    })
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn piqa(rng: &mut StdRng, world: &World) -> Json {
    let q = Question::draw(rng, world);
    let right = q.statement_with(world, &q.right);
    // A non-ASCII word now and then: lengths in acc_norm are in characters.
    let wrong = format!(
        "{}{}",
        q.statement_with(world, &q.wrong[0]),
        if rng.random_ratio(1, 4) {
            " Café façade."
        } else {
            ""
        }
    );
    let label = rng.random_range(0..2);
    let (sol1, sol2) = if label == 0 {
        (right, wrong)
    } else {
        (wrong, right)
    };
    json!({"goal": q.text, "sol1": sol1, "sol2": sol2, "label": label})
}

fn winogrande(rng: &mut StdRng, world: &World) -> Json {
    let people: Vec<usize> = world.of_kind(Kind::Person).collect();
    loop {
        let pair: Vec<usize> = people.choose_multiple(rng, 2).copied().collect();
        let attribute = *Kind::Person
            .attributes()
            .choose(rng)
            .expect("people have attributes");
        let (a, b) = (&world.entities[pair[0]], &world.entities[pair[1]]);
        if a.attributes[attribute] == b.attributes[attribute] {
            continue;
        }
        let answer = rng.random_range(0..2);
        let subject = &world.entities[pair[answer]];
        let blank = Fact {
            subject: "_".into(),
            ..world.claim(pair[answer], attribute, &subject.attributes[attribute])
        };
        let sentence = format!(
            "{} met {} at the market. {}",
            a.name,
            b.name,
            text::statement(&blank, 0)
        );
        return json!({
            "sentence": sentence,
            "option1": a.name,
            "option2": b.name,
            "answer": (answer + 1).to_string(),
        });
    }
}

fn mmlu(rng: &mut StdRng, world: &World, subject: &str) -> Json {
    let q = Question::draw(rng, world);
    let (choices, at) = q.choices(rng);
    // Stray whitespace that the template's `.strip()` removes.
    let question = match rng.random_range(0..4) {
        0 => format!("  {}\n", q.text),
        _ => q.text,
    };
    json!({"question": question, "subject": subject, "choices": choices, "answer": at})
}

fn truthfulqa(rng: &mut StdRng, world: &World) -> Json {
    let q = Question::draw(rng, world);
    let right = q.statement_with(world, &q.right);
    let wrong: Vec<String> = q.wrong.iter().map(|v| q.statement_with(world, v)).collect();
    let mc1: Vec<&String> = std::iter::once(&right).chain(&wrong).collect();
    let alt = text::statement(&q.fact, 1);
    let mc2: Vec<&String> = [&right, &alt]
        .into_iter()
        .chain(wrong.iter().take(2))
        .collect();
    json!({
        "question": q.text,
        "mc1_targets": {"choices": mc1, "labels": [1, 0, 0, 0]},
        "mc2_targets": {"choices": mc2, "labels": [1, 1, 0, 0]},
    })
}

fn drop(rng: &mut StdRng, world: &World, split: &str, i: usize) -> Json {
    let q = Question::draw(rng, world);
    let e = &world.entities[q.fact.entity];
    let facts = world.facts_of(q.fact.entity);
    let passage = text::paragraph(
        &facts
            .iter()
            .map(|f| text::statement(f, 0))
            .collect::<Vec<_>>(),
    );
    let numeric = q.fact.attribute == "age";
    let answer = |spans: Vec<String>| {
        json!({
            "number": if numeric { q.right.clone() } else { String::new() },
            "date": {"day": "", "month": "", "year": ""},
            "spans": if numeric { vec![] } else { spans },
            "worker_id": "",
            "hit_id": "",
        })
    };
    // Annotators agree, or one writes the value capitalised (deduplicated after parsing
    // only when equal).
    let second = if rng.random_bool(0.5) {
        q.right.clone()
    } else {
        capitalise(&q.right)
    };
    let validated = [answer(vec![q.right.clone()]), answer(vec![second])];
    let column = |k: &str| Json::Array(validated.iter().map(|a| a[k].clone()).collect());
    json!({
        "section_id": format!("synth_{split}_{}", e.name.to_lowercase()),
        "query_id": format!("{:016x}{i:04x}", rng.random::<u64>()),
        "passage": passage,
        "question": q.text,
        "answer": answer(vec![q.right.clone()]),
        "validated_answers": {
            "number": column("number"),
            "date": column("date"),
            "spans": column("spans"),
            "worker_id": column("worker_id"),
            "hit_id": column("hit_id"),
        },
    })
}

/// A BBH-shaped `(input, target)`: real Boolean expressions and sums where the
/// subtask is about them, questions about the world with lettered options elsewhere.
fn bbh(rng: &mut StdRng, world: &World, config: &str) -> (String, String) {
    match config {
        "boolean_expressions" => {
            let (a, b, c) = (
                rng.random_bool(0.5),
                rng.random_bool(0.5),
                rng.random_bool(0.5),
            );
            let py = |v: bool| if v { "True" } else { "False" };
            let value = !(a && b) || c;
            (
                format!("not ( {} and {} ) or {} is", py(a), py(b), py(c)),
                py(value).to_string(),
            )
        }
        "multistep_arithmetic_two" => {
            let v: Vec<i64> = (0..4).map(|_| rng.random_range(-9..10)).collect();
            let value = (v[0] + v[1]) * (v[2] - v[3]);
            (
                format!("(({} + {}) * ({} - {})) =", v[0], v[1], v[2], v[3]),
                value.to_string(),
            )
        }
        _ => {
            let q = Question::draw(rng, world);
            let (choices, at) = q.choices(rng);
            let options: Vec<String> = choices
                .iter()
                .enumerate()
                .map(|(k, c)| format!("({}) {c}", LETTERS[k]))
                .collect();
            (
                format!("{}\nOptions:\n{}", q.text, options.join("\n")),
                format!("({})", LETTERS[at]),
            )
        }
    }
}

fn agieval(rng: &mut StdRng, world: &World) -> Json {
    let q = Question::draw(rng, world);
    let (choices, at) = q.choices(rng);
    let lettered: Vec<String> = choices
        .iter()
        .enumerate()
        .map(|(k, c)| format!("({}){c}", LETTERS[k]))
        .collect();
    let mut gold = vec![at];
    // Now and then two right answers (AGIEval's multi-answer questions).
    if rng.random_ratio(1, 8) {
        gold.push((at + 1) % choices.len());
        gold.sort_unstable();
    }
    json!({
        "query": format!("Q: {} Answer Choices: {}\nA: Among A through D, the answer is", q.text, lettered.join(" ")),
        "choices": lettered,
        "gold": gold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::catalog::Catalog;
    use crate::eval::data::DataSources;
    use crate::eval::task::build_task;

    #[test]
    fn every_builtin_task_builds_on_synthetic_data() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::builtin().unwrap();
        let specs: Vec<TaskSpec> = catalog.entries().iter().map(|e| e.spec.clone()).collect();
        let cfg = SyntheticConfig {
            docs: 7,
            ..SyntheticConfig::default()
        };
        write_task_data(dir.path(), &specs, &cfg).unwrap();
        let sources = DataSources {
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let fewshot = dir.path().join(FEWSHOT_DIR);
        for suite in ["pt", "mt", "sft"] {
            for spec in catalog.suite(suite).unwrap() {
                let t = build_task(&spec, &sources, Some(3), Some(&fewshot))
                    .unwrap_or_else(|e| panic!("{suite} {}: {e}", spec.task));
                assert_eq!(t.requests.len(), 3, "{}", spec.task);
                assert!(
                    t.requests.iter().all(|r| !r.requests.is_empty()),
                    "{}",
                    spec.task
                );
            }
        }
    }

    #[test]
    fn the_same_config_writes_the_same_bytes() {
        let specs = Catalog::builtin().unwrap().resolve("winogrande").unwrap();
        let cfg = SyntheticConfig::default();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_task_data(a.path(), &specs, &cfg).unwrap();
        write_task_data(b.path(), &specs, &cfg).unwrap();
        let file = "allenai/winogrande/winogrande_xl/validation.jsonl";
        let text = std::fs::read_to_string(a.path().join(file)).unwrap();
        assert_eq!(text, std::fs::read_to_string(b.path().join(file)).unwrap());
        assert!(text.lines().all(|l| l.matches('_').count() == 1), "{text}");
    }
}

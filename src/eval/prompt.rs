//! Prompts and requests: a task's docs turned into what the model is asked, exactly as
//! lm-evaluation-harness 0.4 builds them (plain text, no chat template).
//!
//! The context of a doc is `description + shots + question`, where each shot is
//! `text + target_delimiter + answer + fewshot_delimiter` and the question carries no
//! delimiter; a multiple-choice doc asks one log-likelihood of
//! `target_delimiter + choice` per choice. A doc whose `doc_to_text` is an index
//! (WinoGrande's partial scoring) has one context per choice and a shared
//! continuation. Shots come from [`Shots`], which reproduces lm-eval's samplers.

use super::pyrandom::FewshotSampler;
use super::spec::{FewshotSource, OutputType, TaskSpec};
use super::template::{Field, Templates};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// One thing the model is asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// log p(continuation | context), and whether greedy decoding would produce it.
    Loglikelihood {
        context: String,
        continuation: String,
    },
    /// Greedy generation from `context` until a stop string or `max_gen_toks` tokens.
    Generate {
        context: String,
        until: Vec<String>,
        max_gen_toks: usize,
    },
    /// log p(text), token by token in rolling windows.
    Rolling { text: String },
}

impl Request {
    /// Content hash: the store's key for this request's result.
    pub fn hash(&self) -> String {
        let json = serde_json::to_string(self).expect("requests serialise");
        blake3::hash(json.as_bytes()).to_hex()[..32].to_string()
    }
}

/// The correct answer of a doc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Gold {
    Index(usize),
    Indices(Vec<usize>),
    Text(String),
    Texts(Vec<String>),
}

/// A doc's prompt and requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocRequests {
    pub(crate) doc_id: usize,
    /// The first context (all contexts share everything but the last turn).
    pub prompt: String,
    pub(crate) choices: Vec<String>,
    pub(crate) gold: Gold,
    /// Per choice (then per choice again, unconditioned, for `acc_mutual_info`), or one
    /// generation, or one rolling text.
    pub requests: Vec<Request>,
}

/// Few-shot exemplars of a task, drawn in lm-eval's order: one [`FewshotSampler`]
/// per task, asked once per evaluated doc, in doc order.
pub struct Shots {
    pool: Vec<Json>,
    sampler: FewshotSampler,
    /// Replaces the spec's `description` (read from an exemplar file).
    description: Option<String>,
}

impl Shots {
    /// A sampler over `pool`, seeded with the task's `fewshot_seed`.
    pub fn new(spec: &TaskSpec, pool: Vec<Json>) -> Self {
        // lm-eval leaves the evaluated doc out when `fewshot_split == test_split` as
        // written in the config (two unset values count as equal).
        let same_split = spec.fewshot_config.source == FewshotSource::Split
            && spec.fewshot_split == spec.test_split;
        let sampler = FewshotSampler::new(
            spec.fewshot_seed as i128,
            pool.len(),
            spec.fewshot_config.sampler,
            same_split,
        );
        Self {
            pool,
            sampler,
            description: None,
        }
    }

    /// The same shots, with `description` in place of the spec's (BBH's per-subtask
    /// description, which comes with its exemplars).
    pub fn with_description(mut self, description: String) -> Self {
        self.description = Some(description);
        self
    }

    /// `n` exemplars for `doc` (none drawn when `n` is 0, as in lm-eval).
    pub fn draw(&mut self, n: usize, doc: &Json) -> Result<Vec<Json>> {
        if n == 0 {
            return Ok(vec![]);
        }
        let pool = &self.pool;
        let picked = self.sampler.select_with(n, |i| &pool[i] == doc)?;
        Ok(picked.into_iter().map(|i| pool[i].clone()).collect())
    }
}

/// Builds each doc's requests for one task.
pub struct PromptBuilder<'a> {
    spec: &'a TaskSpec,
    templates: &'a Templates,
}

impl<'a> PromptBuilder<'a> {
    pub fn new(spec: &'a TaskSpec, templates: &'a Templates) -> Self {
        Self { spec, templates }
    }

    /// Requests of `doc` (number `doc_id`), drawing `num_fewshot` shots from `shots`.
    pub fn build(&self, doc_id: usize, doc: &Json, shots: &mut Shots) -> Result<DocRequests> {
        let spec = self.spec;
        let has_choices = spec.doc_to_choice.is_some();
        let choices = match &spec.doc_to_choice {
            Some(t) => self.templates.choices(t, doc)?,
            None => vec![],
        };
        let mut prefix = match &shots.description {
            Some(d) => d.clone(),
            None => self
                .templates
                .render("description", &spec.description, doc)?,
        };
        for shot in shots.draw(spec.num_fewshot, doc)? {
            prefix.push_str(&self.shot(&shot)?);
        }
        let text = self
            .templates
            .field("doc_to_text", &spec.doc_to_text, doc, has_choices)?;
        let target =
            self.templates
                .field("doc_to_target", &spec.doc_to_target, doc, has_choices)?;
        let delim = &spec.target_delimiter;
        let (prompt, requests, gold) = match (spec.output_type, &text) {
            (OutputType::MultipleChoice, Field::Index(gold)) => {
                // Partial scoring: one context per choice, the target is shared.
                let cont = format!("{delim}{}", target.as_text());
                let contexts: Vec<String> =
                    choices.iter().map(|c| format!("{prefix}{c}")).collect();
                let requests = contexts
                    .iter()
                    .map(|c| Request::Loglikelihood {
                        context: c.clone(),
                        continuation: cont.clone(),
                    })
                    .collect();
                let prompt = contexts.first().cloned().unwrap_or_default();
                check_gold(&Gold::Index(*gold), &text, &choices)?;
                (prompt, requests, Gold::Index(*gold))
            }
            (OutputType::MultipleChoice, _) => {
                let context = format!("{prefix}{}", text.as_text());
                let mut requests: Vec<Request> = choices
                    .iter()
                    .map(|c| Request::Loglikelihood {
                        context: context.clone(),
                        continuation: format!("{delim}{c}"),
                    })
                    .collect();
                if spec
                    .metric_list
                    .iter()
                    .any(|m| m.metric == "acc_mutual_info")
                {
                    requests.extend(choices.iter().map(|c| Request::Loglikelihood {
                        context: String::new(),
                        continuation: format!("{delim}{c}"),
                    }));
                }
                let gold = choice_gold(&target, &choices);
                check_gold(&gold, &target, &choices)?;
                (context, requests, gold)
            }
            (OutputType::GenerateUntil, _) => {
                let context = format!("{prefix}{}", text.as_text());
                let g = spec.generation_kwargs.as_ref().expect("validated");
                let request = Request::Generate {
                    context: context.clone(),
                    until: g.until.clone(),
                    max_gen_toks: g.max_gen_toks,
                };
                let gold = match (&target, has_choices) {
                    (Field::Index(i), true) => {
                        check_gold(&Gold::Index(*i), &target, &choices)?;
                        Gold::Text(choices[*i].clone())
                    }
                    (Field::List(items), _) => Gold::Texts(items.iter().map(json_text).collect()),
                    (t, _) => Gold::Text(t.as_text()),
                };
                (context, vec![request], gold)
            }
            (OutputType::LoglikelihoodRolling, _) => {
                let text = target.as_text();
                if text.trim().is_empty() {
                    // Nothing to score: it would read as perplexity 1, a perfect model.
                    return Err(Error::bad_value(
                        "doc_to_target",
                        "empty text (doc_to_target); nothing to score",
                    ));
                }
                (
                    text.clone(),
                    vec![Request::Rolling { text: text.clone() }],
                    Gold::Text(text),
                )
            }
        };
        Ok(DocRequests {
            doc_id,
            prompt,
            choices,
            gold,
            requests,
        })
    }

    /// One exemplar: `text + target_delimiter + answer + fewshot_delimiter`.
    fn shot(&self, doc: &Json) -> Result<String> {
        let spec = self.spec;
        let cfg = &spec.fewshot_config;
        let has_choices = spec.doc_to_choice.is_some();
        let text_t = cfg.doc_to_text.as_deref().unwrap_or(&spec.doc_to_text);
        let target_t = cfg.doc_to_target.as_deref().unwrap_or(&spec.doc_to_target);
        let choices = match (&spec.doc_to_choice, cfg.doc_to_target.is_some()) {
            (Some(t), false) => self.templates.choices(t, doc)?,
            _ => vec![],
        };
        let mut q = self
            .templates
            .field("doc_to_text", text_t, doc, has_choices)?;
        if let Field::Index(i) = q {
            // Partial scoring: the exemplar's text is its correct context.
            q = Field::Text(choices.get(i).cloned().unwrap_or_default());
        }
        let a = self.templates.field(
            "doc_to_target",
            target_t,
            doc,
            has_choices && cfg.doc_to_target.is_none(),
        )?;
        let answer = match &a {
            Field::Index(i) if !choices.is_empty() => {
                choices.get(*i).cloned().ok_or_else(|| {
                    Error::bad_value(
                        "doc_to_target",
                        format!("{}: exemplar answer index {i} out of range", spec.task),
                    )
                })?
            }
            Field::List(items) => items.first().map(json_text).unwrap_or_default(),
            other => other.as_text(),
        };
        let q = q.as_text();
        if answer.is_empty() {
            return Ok(q);
        }
        Ok(format!(
            "{q}{}{answer}{}",
            spec.target_delimiter, spec.fewshot_delimiter
        ))
    }
}

fn json_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => super::template::python_repr_json(other),
    }
}

/// Refuses a gold answer that is none of the doc's choices: it would score 0 on every
/// model without a word (lm-eval's silent `-100`), hiding a wrong `doc_to_target` or
/// answer key.
fn check_gold(gold: &Gold, target: &Field, choices: &[String]) -> Result<()> {
    let n = choices.len();
    let fits = match gold {
        Gold::Index(i) => *i < n,
        Gold::Indices(is) => !is.is_empty() && is.iter().all(|i| *i < n),
        Gold::Text(_) | Gold::Texts(_) => false,
    };
    if fits {
        return Ok(());
    }
    let value = match target {
        Field::Index(i) => i.to_string(),
        Field::List(items) => serde_json::Value::Array(items.clone()).to_string(),
        Field::Text(t) => format!("{t:?}"),
    };
    // The task is named by the caller (`build_task`'s callers add it).
    Err(Error::bad_value(
        "doc_to_target",
        format!(
            "gold answer {value} (doc_to_target) is not one of the {n} choices \
         (an index 0..{n} or a choice's text)"
        ),
    ))
}

/// The gold choice(s) of a multiple-choice doc: an index, several, or a choice's text.
fn choice_gold(target: &Field, choices: &[String]) -> Gold {
    match target {
        Field::Index(i) => Gold::Index(*i),
        Field::List(items) => Gold::Indices(
            items
                .iter()
                .map(|v| v.as_u64().map(|i| i as usize).unwrap_or(usize::MAX))
                .collect(),
        ),
        Field::Text(t) => match choices.iter().position(|c| c == t) {
            Some(i) => Gold::Index(i),
            None => Gold::Text(t.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn spec(extra: &str) -> TaskSpec {
        let text = format!(
            r#"
task = "t"
dataset_path = "x"
output_type = "multiple_choice"
test_split = "test"
training_split = "train"
doc_to_text = "Q: {{{{q}}}}\nA:"
doc_to_target = "{{{{a}}}}"
doc_to_choice = "{{{{c}}}}"
{extra}
"#
        );
        TaskSpec::parse(&text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn first_n_shots_and_context_layout() {
        let spec = spec("num_fewshot = 2\ndescription = \"D\\n\\n\"\nfewshot_config = { sampler = \"first_n\" }");
        let t = Templates::new(Path::new("t.toml"));
        let pool = vec![
            json!({"q": "one", "a": 0, "c": ["x", "y"]}),
            json!({"q": "two", "a": 1, "c": ["x", "y"]}),
            json!({"q": "three", "a": 1, "c": ["x", "y"]}),
        ];
        let mut shots = Shots::new(&spec, pool);
        let doc = json!({"q": "four", "a": 1, "c": ["p", "r"]});
        let r = PromptBuilder::new(&spec, &t)
            .build(0, &doc, &mut shots)
            .unwrap();
        assert_eq!(r.prompt, "D\n\nQ: one\nA: x\n\nQ: two\nA: y\n\nQ: four\nA:");
        assert_eq!(r.gold, Gold::Index(1));
        assert_eq!(
            r.requests[1],
            Request::Loglikelihood {
                context: r.prompt.clone(),
                continuation: " r".into()
            }
        );
    }

    #[test]
    fn partial_scoring_has_a_context_per_choice() {
        let spec = spec("").clone();
        let mut spec = spec;
        spec.doc_to_text = "{{gold}}".into();
        spec.doc_to_choice = Some("{{contexts}}".into());
        spec.doc_to_target = "{{rest}}".into();
        let t = Templates::new(Path::new("t.toml"));
        let mut shots = Shots::new(&spec, vec![]);
        let doc = json!({"gold": 1, "contexts": ["A went", "B went"], "rest": "home."});
        let r = PromptBuilder::new(&spec, &t)
            .build(3, &doc, &mut shots)
            .unwrap();
        assert_eq!(r.gold, Gold::Index(1));
        assert_eq!(r.requests.len(), 2);
        assert_eq!(
            r.requests[1],
            Request::Loglikelihood {
                context: "B went".into(),
                continuation: " home.".into()
            }
        );
    }
}

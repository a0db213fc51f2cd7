//! From a doc's responses to its metrics, and from docs to a task's aggregate, the way
//! lm-evaluation-harness's `process_results` and aggregation do it.
//!
//! Every metric is keyed `(metric, filter)` as lm-eval keys it (`acc,none`,
//! `exact_match,strict-match`). Per-doc values are kept, so two checkpoints can be
//! compared on the same items (paired significance).

use super::engine::Response;
use super::metrics::{self, Aggregation, ExactMatch, ExactMatchOptions, Gold as MetricGold};
use super::prompt::{DocRequests, Gold};
use super::spec::{MetricSpec, OutputType, TaskSpec};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// The filter name of metrics that pass through no filter.
pub(crate) const NO_FILTER: &str = "none";

/// A metric's key: `(metric, filter)`.
pub type MetricKey = (String, String);

/// One doc's scores and what the model answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocScore {
    pub(crate) doc_id: usize,
    /// `metric,filter` -> value. Rolling tasks hold `loglikelihood`, `tokens`, `words`, `bytes`.
    pub(crate) metrics: BTreeMap<String, f64>,
    /// Per-choice log-likelihoods (multiple choice) or the filtered answers (generation).
    pub(crate) detail: Json,
}

/// A task's aggregate for one metric.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskMetric {
    pub(crate) metric: String,
    pub(crate) filter: String,
    pub(crate) value: f64,
    /// `None` where lm-eval reports "N/A".
    pub(crate) stderr: Option<f64>,
    pub(crate) n: usize,
    pub(crate) higher_is_better: bool,
}

/// Key string of `(metric, filter)` as lm-eval prints it.
pub fn key(metric: &str, filter: &str) -> String {
    format!("{metric},{filter}")
}

/// Scores one doc from its responses (in the order of `doc.requests`).
pub fn score_doc(
    spec: &TaskSpec,
    raw_doc: &Json,
    doc: &DocRequests,
    responses: &[Response],
) -> Result<DocScore> {
    let metrics = match spec.output_type {
        OutputType::MultipleChoice => multiple_choice(spec, raw_doc, doc, responses)?,
        OutputType::GenerateUntil => generation(spec, raw_doc, doc, responses)?,
        OutputType::LoglikelihoodRolling => rolling(doc, responses)?,
    };
    let detail = match spec.output_type {
        OutputType::MultipleChoice => Json::from(loglikelihoods(responses)?.0),
        OutputType::GenerateUntil => Json::from(
            responses
                .iter()
                .map(|r| match r {
                    Response::Generation { text } => text.clone(),
                    _ => String::new(),
                })
                .collect::<Vec<_>>(),
        ),
        OutputType::LoglikelihoodRolling => Json::Null,
    };
    Ok(DocScore {
        doc_id: doc.doc_id,
        metrics: metrics
            .into_iter()
            .map(|((m, f), v)| (key(&m, &f), v))
            .collect(),
        detail,
    })
}

fn loglikelihoods(responses: &[Response]) -> Result<(Vec<f64>, Vec<bool>)> {
    responses
        .iter()
        .map(|r| match r {
            Response::Loglikelihood { logprob, is_greedy } => Ok((*logprob, *is_greedy)),
            other => Err(Error::Invalid(format!(
                "expected a log-likelihood, got {other:?}"
            ))),
        })
        .collect::<Result<Vec<_>>>()
        .map(|v| v.into_iter().unzip())
}

fn metric_gold(gold: &Gold) -> MetricGold {
    match gold {
        Gold::Index(i) => MetricGold::Index(*i as i64),
        Gold::Indices(v) => MetricGold::Indices(v.iter().map(|&i| i as i64).collect()),
        Gold::Text(_) | Gold::Texts(_) => MetricGold::Index(-100),
    }
}

fn multiple_choice(
    spec: &TaskSpec,
    raw: &Json,
    doc: &DocRequests,
    responses: &[Response],
) -> Result<Vec<(MetricKey, f64)>> {
    let (all, greedy) = loglikelihoods(responses)?;
    let n = doc.choices.len();
    let (lls, unconditional) = all.split_at(n.min(all.len()));
    let gold = metric_gold(&doc.gold);
    let mut out = Vec::new();
    let none = |m: &str| (m.to_string(), NO_FILTER.to_string());
    if let Some(name) = &spec.process_results {
        match name.as_str() {
            "mc2" => {
                let labels = mc2_labels(raw)?;
                out.push((none("acc"), metrics::truthfulqa_mc2(lls, &labels)?));
            }
            other => {
                return Err(Error::unsupported(format!(
                    "{}: unknown process_results `{other}` for multiple choice",
                    spec.task
                )))
            }
        }
        return Ok(out);
    }
    for m in &spec.metric_list {
        let v = match m.metric.as_str() {
            "acc" => metrics::acc(lls, &gold)?,
            "acc_norm" => metrics::acc_norm(lls, &doc.choices, &gold)?,
            "acc_bytes" => metrics::acc_bytes(lls, &doc.choices, &gold)?,
            "acc_mutual_info" => metrics::acc_mutual_info(lls, unconditional, &gold)?,
            "exact_match" => metrics::choice_exact_match(&greedy[..n.min(greedy.len())], &gold),
            other => {
                return Err(Error::unsupported(format!(
                    "{}: metric `{other}` is not defined for multiple choice",
                    spec.task
                )))
            }
        };
        out.push((none(&m.metric), v));
    }
    Ok(out)
}

/// TruthfulQA mc2's labels (`mc2_targets.labels`).
fn mc2_labels(raw: &Json) -> Result<Vec<i64>> {
    raw.pointer("/mc2_targets/labels")
        .and_then(Json::as_array)
        .map(|a| a.iter().map(|v| v.as_i64().unwrap_or(0)).collect())
        .ok_or_else(|| {
            Error::bad_value(
                "mc2_targets",
                "truthfulqa mc2: the doc has no mc2_targets.labels",
            )
        })
}

fn generation(
    spec: &TaskSpec,
    raw: &Json,
    doc: &DocRequests,
    responses: &[Response],
) -> Result<Vec<(MetricKey, f64)>> {
    let texts: Vec<String> = responses
        .iter()
        .map(|r| match r {
            Response::Generation { text } => Ok(text.clone()),
            other => Err(Error::Invalid(format!(
                "expected a generation, got {other:?}"
            ))),
        })
        .collect::<Result<_>>()?;
    let pipelines: Vec<(String, String)> = if spec.filter_list.is_empty() {
        vec![(
            NO_FILTER.to_string(),
            texts.first().cloned().unwrap_or_default(),
        )]
    } else {
        spec.filter_list
            .iter()
            .map(|p| Ok((p.name.clone(), super::filters::apply(&p.filter, &texts)?)))
            .collect::<Result<_>>()?
    };
    let golds: Vec<String> = match &doc.gold {
        Gold::Text(t) => vec![t.clone()],
        Gold::Texts(v) => v.clone(),
        Gold::Index(i) => vec![i.to_string()],
        Gold::Indices(v) => v.iter().map(|i| i.to_string()).collect(),
    };
    let mut out = Vec::new();
    for (filter, answer) in &pipelines {
        if spec.process_results.as_deref() == Some("drop") {
            let answers = super::drop::get_answers(raw)?;
            let s = super::drop::process_results(answer, &answers)?;
            out.push((("em".to_string(), filter.clone()), s.em));
            out.push((("f1".to_string(), filter.clone()), s.f1));
            continue;
        }
        for m in &spec.metric_list {
            let v = match m.metric.as_str() {
                "exact_match" => exact_match(m)?.score_any(answer, &golds)?,
                other => {
                    return Err(Error::unsupported(format!(
                        "{}: metric `{other}` is not defined for generation",
                        spec.task
                    )))
                }
            };
            out.push(((m.metric.clone(), filter.clone()), v));
        }
    }
    Ok(out)
}

fn exact_match(m: &MetricSpec) -> Result<ExactMatch> {
    let options: BTreeMap<String, toml::Value> = m.options.clone();
    let table: toml::Table = options.into_iter().collect();
    let opts: ExactMatchOptions = toml::Value::Table(table)
        .try_into()
        .map_err(|e| Error::bad_value("exact_match", format!("exact_match options: {e}")))?;
    ExactMatch::new(opts)
}

fn rolling(doc: &DocRequests, responses: &[Response]) -> Result<Vec<(MetricKey, f64)>> {
    let Some(Response::Rolling { logprob, tokens }) = responses.first() else {
        return Err(Error::Invalid("expected a rolling log-likelihood".into()));
    };
    let none = |m: &str| (m.to_string(), NO_FILTER.to_string());
    Ok(vec![
        (none("loglikelihood"), *logprob),
        (none("tokens"), *tokens as f64),
        (none("words"), metrics::count_words(&doc.prompt) as f64),
        (none("bytes"), doc.prompt.len() as f64),
    ])
}

/// The task's metrics from its docs' scores.
pub fn aggregate(spec: &TaskSpec, docs: &[DocScore]) -> Vec<TaskMetric> {
    if spec.output_type == OutputType::LoglikelihoodRolling {
        return aggregate_rolling(docs);
    }
    let mut keys: Vec<String> = Vec::new();
    for d in docs {
        for k in d.metrics.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    keys.iter()
        .map(|k| {
            let (metric, filter) = k.split_once(',').unwrap_or((k, NO_FILTER));
            let items: Vec<f64> = docs
                .iter()
                .filter_map(|d| d.metrics.get(k).copied())
                .collect();
            let spec_m = spec.metric_list.iter().find(|m| m.metric == metric);
            let agg = match spec_m.map(|m| m.aggregation.as_str()) {
                Some("median") => Aggregation::Median,
                Some("nanmean") => Aggregation::Nanmean,
                _ => Aggregation::Mean,
            };
            TaskMetric {
                metric: metric.to_string(),
                filter: filter.to_string(),
                value: agg.apply(&items),
                stderr: agg.stderr(&items, 100_000),
                n: items.len(),
                higher_is_better: spec_m.is_none_or(|m| m.higher_is_better),
            }
        })
        .collect()
}

/// Perplexities and bits per byte over all texts, plus the mean loss per token (the
/// validation loss a training curve shows).
fn aggregate_rolling(docs: &[DocScore]) -> Vec<TaskMetric> {
    let sum = |k: &str| -> f64 {
        docs.iter()
            .map(|d| d.metrics.get(&key(k, NO_FILTER)).copied().unwrap_or(0.0))
            .sum()
    };
    let (ll, tokens, words, bytes) = (
        sum("loglikelihood"),
        sum("tokens"),
        sum("words"),
        sum("bytes"),
    );
    let metric = |name: &str, value: f64, higher: bool| TaskMetric {
        metric: name.into(),
        filter: NO_FILTER.into(),
        value,
        stderr: None,
        n: docs.len(),
        higher_is_better: higher,
    };
    vec![
        metric("loss", -ll / tokens.max(1.0), false),
        metric("word_perplexity", (-ll / words.max(1.0)).exp(), false),
        metric("byte_perplexity", (-ll / bytes.max(1.0)).exp(), false),
        metric(
            "bits_per_byte",
            -ll / bytes.max(1.0) / std::f64::consts::LN_2,
            false,
        ),
    ]
}

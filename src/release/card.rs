//! The model card (`README.md` of the repository): a minijinja template
//! (`release/model_card.md.j2`, built in; `--card-template FILE` replaces it) rendered
//! with what the release knows, then parsed back and checked against the Hub's
//! metadata rules before anything is uploaded.
//!
//! Templates get a [`CardContext`] and a `yaml` filter that writes any value as a YAML
//! scalar (JSON-quoted, which YAML reads back unchanged), so the front matter stays
//! valid whatever a name contains.

use super::results::{CardResults, EvalResult, EvalStage};
use crate::error::{Error, Result};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;
use serde_json::Value as Json;
use std::path::Path;

/// The built-in template.
pub(crate) const DEFAULT_TEMPLATE: &str = include_str!("../../release/model_card.md.j2");

/// Facts about the architecture, from `config.json` and the weights.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ModelFacts {
    pub(crate) architecture: String,
    pub(crate) model_type: String,
    pub(crate) parameters: usize,
    pub(crate) parameters_human: String,
    pub(crate) hidden_size: usize,
    pub(crate) intermediate_size: usize,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) vocab_size: usize,
    pub(crate) context_length: usize,
    pub(crate) rope_theta: f64,
    pub(crate) tie_embeddings: bool,
    pub(crate) dtypes: String,
    pub(crate) weights_size_human: String,
}

/// Hyperparameters from the run's `run.toml`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecipeFacts {
    pub(crate) job: String,
    pub(crate) optimizer: String,
    pub(crate) beta1: f64,
    pub(crate) beta2: f64,
    pub(crate) eps: f64,
    pub(crate) weight_decay: f64,
    pub(crate) grad_clip: f64,
    pub(crate) batch_tokens: u64,
    pub(crate) seq_len: usize,
    pub(crate) grad_accum: u64,
    pub(crate) dtype: String,
    pub(crate) seed: u64,
    /// Data file names (not their local paths).
    pub(crate) data: Vec<String>,
}

/// What is known of the training.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TrainingFacts {
    pub(crate) stage: Option<String>,
    pub(crate) step: Option<u64>,
    pub(crate) tokens_seen: Option<u64>,
    pub(crate) tokens_human: Option<String>,
    pub(crate) train_loss: Option<f64>,
    pub(crate) schedule_kind: Option<String>,
    pub(crate) schedule_label: Option<String>,
    /// The formulas (see `lr_curve::formula`), when the schedule is fully known.
    pub(crate) schedule_formula: Option<String>,
    /// The LR plot's file in the repository.
    pub(crate) lr_plot: Option<String>,
    pub(crate) lr_at_step: Option<f64>,
    /// `not-decayed`, `decayed` or `unknown`.
    pub(crate) decay: String,
    pub(crate) decay_reason: String,
    pub(crate) recipe: Option<RecipeFacts>,
}

/// One `model-index` result: a task on a dataset with its metrics.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IndexEntry {
    pub(crate) task_type: String,
    pub(crate) task_name: String,
    pub(crate) dataset_name: String,
    pub(crate) dataset_type: String,
    pub(crate) dataset_config: Option<String>,
    pub(crate) dataset_split: Option<String>,
    pub(crate) num_fewshot: Option<u32>,
    pub(crate) metrics: Vec<IndexMetric>,
}

/// One metric of an [`IndexEntry`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IndexMetric {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) value: f64,
    pub(crate) name: String,
}

/// A row of an evaluation table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EvalRow {
    pub(crate) task: String,
    pub(crate) dataset: String,
    pub(crate) shots: String,
    pub(crate) metric: String,
    pub(crate) value: String,
    pub(crate) stderr: String,
}

/// A row of the sharpness table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SharpnessLine {
    pub(crate) label: String,
    pub(crate) schedule: String,
    pub(crate) step: String,
    pub(crate) trace: String,
    pub(crate) stderr: String,
    pub(crate) released: bool,
    /// Trace relative to the released checkpoint's (`2.41×`).
    pub(crate) ratio: String,
}

/// Everything a template can use.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CardContext {
    pub(crate) repo_id: String,
    pub(crate) model_name: String,
    pub(crate) revision: String,
    pub(crate) license: String,
    pub(crate) languages: Vec<String>,
    pub(crate) datasets: Vec<String>,
    pub(crate) base_model: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) model: ModelFacts,
    pub(crate) training: TrainingFacts,
    pub(crate) model_index: Vec<IndexEntry>,
    pub(crate) evals_pre: Vec<EvalRow>,
    pub(crate) evals_sft: Vec<EvalRow>,
    pub(crate) sharpness: Vec<SharpnessLine>,
    pub(crate) sharpness_summary: Option<String>,
    pub(crate) fingerprint: String,
    pub(crate) ckpt_version: String,
}

/// `1234567` -> `1.23M`: three significant digits.
pub(crate) fn human_count(n: u64) -> String {
    let x = n as f64;
    for (scale, unit) in [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")] {
        if x >= scale {
            let v = x / scale;
            let digits = if v >= 100.0 {
                0
            } else if v >= 10.0 {
                1
            } else {
                2
            };
            let s = format!("{v:.digits$}");
            let s = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.')
            } else {
                &s
            };
            return format!("{s}{unit}");
        }
    }
    n.to_string()
}

/// `1536000` -> `1.46 MiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}

fn fmt_value(v: f64) -> String {
    format!("{v:.4}")
}

pub(crate) fn eval_rows(results: &CardResults, stage: EvalStage) -> Vec<EvalRow> {
    results
        .evals_of(stage)
        .into_iter()
        .map(|e| EvalRow {
            task: e.task.clone(),
            dataset: e.dataset_name.clone(),
            shots: e
                .num_fewshot
                .map(|n| n.to_string())
                .unwrap_or_else(|| "–".into()),
            metric: e.metric.clone(),
            value: fmt_value(e.value),
            stderr: e.stderr.map(fmt_value).unwrap_or_else(|| "–".into()),
        })
        .collect()
}

/// This checkpoint's own scores grouped by (task, dataset, split, shots) as the
/// Hub's `model-index` lists them.
pub(crate) fn model_index(results: &CardResults) -> Vec<IndexEntry> {
    let mut entries: Vec<(Vec<&str>, Option<u32>, IndexEntry)> = Vec::new();
    for e in results.evals_of(EvalStage::Pre) {
        let key = group_key(e);
        let metric = IndexMetric {
            kind: e.metric.clone(),
            value: e.value,
            name: match e.num_fewshot {
                Some(n) => format!("{} ({n}-shot)", e.metric),
                None => e.metric.clone(),
            },
        };
        match entries
            .iter_mut()
            .find(|(k, shots, _)| *k == key && *shots == e.num_fewshot)
        {
            Some((_, _, entry)) => entry.metrics.push(metric),
            None => entries.push((
                key,
                e.num_fewshot,
                IndexEntry {
                    task_type: "text-generation".into(),
                    task_name: "Text Generation".into(),
                    dataset_name: e.dataset_name.clone(),
                    dataset_type: e.dataset_type.clone(),
                    dataset_config: e.dataset_config.clone(),
                    dataset_split: e.split.clone(),
                    num_fewshot: e.num_fewshot,
                    metrics: vec![metric],
                },
            )),
        }
    }
    entries.into_iter().map(|(_, _, e)| e).collect()
}

fn group_key(e: &EvalResult) -> Vec<&str> {
    vec![
        e.task.as_str(),
        e.dataset_type.as_str(),
        e.dataset_name.as_str(),
        e.dataset_config.as_deref().unwrap_or(""),
        e.split.as_deref().unwrap_or(""),
    ]
}

/// The sharpness rows, with each trace relative to the released checkpoint's, and a
/// one-line summary of how much sharper the siblings are.
pub(crate) fn sharpness(results: &CardResults) -> (Vec<SharpnessLine>, Option<String>) {
    let own = results
        .sharpness
        .iter()
        .find(|s| s.released)
        .map(|s| s.trace);
    let ratio = |t: f64| match own {
        Some(o) if o > 0.0 => Some(t / o),
        _ => None,
    };
    let lines = results
        .sharpness
        .iter()
        .map(|s| SharpnessLine {
            label: s.label.clone(),
            schedule: s.schedule.clone(),
            step: s.step.map(|n| n.to_string()).unwrap_or_else(|| "–".into()),
            trace: format!("{:.4}", s.trace),
            stderr: s
                .stderr
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "–".into()),
            released: s.released,
            ratio: ratio(s.trace)
                .map(|r| format!("{r:.2}×"))
                .unwrap_or_else(|| "–".into()),
        })
        .collect();
    let others: Vec<f64> = results
        .sharpness
        .iter()
        .filter(|s| !s.released)
        .filter_map(|s| ratio(s.trace))
        .collect();
    let summary = match (
        others.iter().copied().reduce(f64::min),
        others.iter().copied().reduce(f64::max),
    ) {
        (Some(lo), Some(hi)) if (hi - lo).abs() < 5e-3 => Some(format!(
            "The compared checkpoint has {lo:.2}× the Hessian trace of this one."
        )),
        (Some(lo), Some(hi)) => Some(format!(
            "The compared checkpoints have {lo:.2}× to {hi:.2}× the Hessian trace of this one."
        )),
        _ => None,
    };
    (lines, summary)
}

/// Renders the card from `template` (the built-in one when `None`).
pub fn render(template: Option<&str>, ctx: &CardContext) -> Result<String> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .map_err(template_error)?;
    env.set_syntax(syntax);
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.add_filter(
        "yaml",
        |v: Value| -> std::result::Result<String, minijinja::Error> {
            serde_json::to_string(&v).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
            })
        },
    );
    env.add_template_owned("card", template.unwrap_or(DEFAULT_TEMPLATE).to_string())
        .map_err(template_error)?;
    let tmpl = env.get_template("card").map_err(template_error)?;
    tmpl.render(Value::from(minijinja::value::Serde(ctx)))
        .map_err(template_error)
}

fn template_error(e: minijinja::Error) -> Error {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::bad_value("card.template", format!("model card template: {msg}"))
}

/// The YAML front matter of a card, parsed.
pub(crate) fn front_matter(card: &str) -> std::result::Result<Json, String> {
    let rest = card
        .strip_prefix("---\n")
        .or_else(|| card.strip_prefix("---\r\n"))
        .ok_or("the card does not start with a '---' line (YAML front matter)")?;
    let end = rest
        .find("\n---\n")
        .or_else(|| rest.find("\n---\r\n"))
        .or_else(|| rest.strip_suffix("\n---").map(|s| s.len()))
        .ok_or("the YAML front matter has no closing '---' line")?;
    let yaml = &rest[..end];
    serde_yaml_ng::from_str::<Json>(yaml).map_err(|e| format!("invalid YAML front matter: {e}"))
}

/// Checks the card's metadata with the rules the Hub applies: the keys a model card
/// needs and, in `model-index`, for every result `task.type`, `dataset.type`,
/// `dataset.name`, and metrics each with `type` and `value` (huggingface_hub's
/// `model_index_to_eval_results` requires them).
pub fn validate(card: &str) -> std::result::Result<Json, String> {
    let meta = front_matter(card)?;
    let obj = meta
        .as_object()
        .ok_or("the front matter is not a mapping")?;
    let string = |key: &str| match obj.get(key) {
        Some(Json::String(s)) if !s.is_empty() => Ok(()),
        _ => Err(format!("front matter: {key} must be a non-empty string")),
    };
    string("license")?;
    string("library_name")?;
    string("pipeline_tag")?;
    match obj.get("language") {
        Some(Json::String(_)) => {}
        Some(Json::Array(a)) if a.iter().all(Json::is_string) => {}
        _ => return Err("front matter: language must be a string or a list of strings".into()),
    }
    for key in ["tags", "datasets"] {
        match obj.get(key) {
            None => {}
            Some(Json::Array(a)) if a.iter().all(Json::is_string) => {}
            _ => return Err(format!("front matter: {key} must be a list of strings")),
        }
    }
    if let Some(base) = obj.get("base_model") {
        if !base.is_string() {
            return Err("front matter: base_model must be a string".into());
        }
    }
    if let Some(index) = obj.get("model-index") {
        validate_model_index(index)?;
    }
    Ok(meta)
}

fn validate_model_index(index: &Json) -> std::result::Result<(), String> {
    let models = index.as_array().ok_or("model-index must be a list")?;
    for (i, model) in models.iter().enumerate() {
        let at = format!("model-index[{i}]");
        if !model.get("name").is_some_and(Json::is_string) {
            return Err(format!("{at}: name must be a string"));
        }
        let results = model
            .get("results")
            .and_then(Json::as_array)
            .ok_or(format!("{at}: results must be a list"))?;
        for (j, r) in results.iter().enumerate() {
            let at = format!("{at}.results[{j}]");
            let text = |ptr: &str| {
                r.pointer(ptr)
                    .is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            };
            for ptr in ["/task/type", "/dataset/type", "/dataset/name"] {
                if !text(ptr) {
                    return Err(format!("{at}: {} is required", &ptr[1..].replace('/', ".")));
                }
            }
            let metrics = r
                .get("metrics")
                .and_then(Json::as_array)
                .filter(|m| !m.is_empty())
                .ok_or(format!("{at}: metrics must be a non-empty list"))?;
            for (k, m) in metrics.iter().enumerate() {
                if !m.get("type").is_some_and(Json::is_string)
                    || m.get("value").is_none_or(Json::is_null)
                {
                    return Err(format!("{at}.metrics[{k}]: type and value are required"));
                }
            }
        }
    }
    Ok(())
}

/// Reads a template file given with `--card-template`.
pub(crate) fn read_template(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_the_hubs() {
        assert_eq!(human_count(860_000), "860K");
        assert_eq!(human_count(1_234_567), "1.23M");
        assert_eq!(human_count(41_632), "41.6K");
        assert_eq!(human_count(123_456_789), "123M");
        assert_eq!(human_count(7_000_000_000), "7B");
        assert_eq!(human_count(12), "12");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(10), "10 B");
    }

    #[test]
    fn front_matter_rules_name_the_missing_key() {
        let ok = "---\nlicense: mit\nlanguage: [en]\nlibrary_name: transformers\npipeline_tag: text-generation\n---\nbody\n";
        assert!(validate(ok).is_ok());
        assert!(validate("no front matter").unwrap_err().contains("'---'"));
        let no_license = ok.replace("license: mit\n", "");
        assert!(validate(&no_license).unwrap_err().contains("license"));
        let index = ok.replace(
            "---\nbody",
            "model-index:\n- name: m\n  results:\n  - task: {type: text-generation}\n    dataset: {name: X}\n    metrics: [{type: acc, value: 0.5}]\n---\nbody",
        );
        assert!(
            validate(&index).unwrap_err().contains("dataset.type"),
            "{:?}",
            validate(&index)
        );
        let fixed = index.replace("{name: X}", "{name: X, type: x}");
        assert!(validate(&fixed).is_ok(), "{:?}", validate(&fixed));
        let no_value = fixed.replace(", value: 0.5", "");
        assert!(validate(&no_value).unwrap_err().contains("value"));
    }
}

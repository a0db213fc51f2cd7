//! Task specs: one TOML file per benchmark, with lm-evaluation-harness's field names.
//!
//! A user who knows lm-eval's task YAML reads these as is: `dataset_path`,
//! `dataset_name`, `test_split`, `doc_to_text` (a Jinja template), `metric_list`,
//! `generation_kwargs`, `filter_list`... The names DESIGN.md section 6 uses (`dataset`,
//! `dataset_config`, `metrics`, `generation`, `filters`, `preprocess`) are accepted as
//! aliases. Where lm-eval runs Python (`!function`), a spec names a built-in instead
//! (`process_docs = "hellaswag"`), and the few-shot exemplars lm-eval hard-codes in its
//! YAML come from a file the user supplies (`fewshot_config.source = "file"`).
//!
//! ```toml
//! task = "arc_easy"
//! dataset_path = "allenai/ai2_arc"
//! dataset_name = "ARC-Easy"
//! output_type = "multiple_choice"
//! test_split = "test"
//! doc_to_text = "Question: {{question}}\nAnswer:"
//! doc_to_target = "{{choices.label.index(answerKey)}}"
//! doc_to_choice = "{{choices.text}}"
//! metric_list = [{ metric = "acc" }, { metric = "acc_norm" }]
//! ```

pub use super::filters::FilterPipeline;
pub use super::pyrandom::SamplerKind;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a task asks of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutputType {
    /// One log-likelihood per choice; the best choice is the prediction.
    MultipleChoice,
    /// Greedy generation until a stop string; answers extracted by filters.
    GenerateUntil,
    /// Log-likelihood of whole texts (validation loss, perplexity, bits per byte).
    LoglikelihoodRolling,
}

/// Where few-shot exemplars come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FewshotSource {
    /// The dataset's `fewshot_split` (or training / validation split).
    #[default]
    Split,
    /// A file the user supplies (`--fewshot-dir`): exemplars lm-eval hard-codes in its
    /// YAML, which this repository does not copy.
    File,
}

/// lm-eval's `fewshot_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FewshotConfig {
    #[serde(default)]
    pub(crate) sampler: SamplerKind,
    #[serde(default)]
    pub(crate) source: FewshotSource,
    /// Templates for exemplars when they differ from the evaluated docs' (e.g. the
    /// exemplar file has a `target` column with a worked answer).
    pub(crate) doc_to_text: Option<String>,
    pub(crate) doc_to_target: Option<String>,
    /// Columns the exemplar file must have (checked when it is read).
    #[serde(default)]
    pub(crate) columns: Vec<String>,
    /// The exemplar file's name in the few-shot directory, without `.jsonl` (default:
    /// the task's name); tasks that share a preamble share a file.
    pub(crate) file: Option<String>,
    /// Take the task's `description` from this column of the exemplar file's first row
    /// (BBH's per-subtask instructions, which lm-eval hard-codes with its exemplars).
    pub(crate) description_column: Option<String>,
    /// The exemplars are a fixed preamble that lm-eval writes into `doc_to_text` with
    /// `num_fewshot: 0` (TruthfulQA): as lm-eval ignores `--num_fewshot` for such a
    /// task, a suite or a command-line shot count leaves `num_fewshot` as it is.
    #[serde(default)]
    pub(crate) preamble: bool,
}

/// The aggregations of per-document metrics that scoring applies (`scoring::aggregate`).
pub(crate) const AGGREGATIONS: [&str; 3] = ["mean", "median", "nanmean"];

/// Whether the spec's text sets `metric_list` (or its alias `metrics`), even to `[]`.
fn names_metrics(text: &str) -> bool {
    text.parse::<toml::Table>()
        .is_ok_and(|t| t.contains_key("metric_list") || t.contains_key("metrics"))
}

/// lm-eval's metrics for a task that names none (`DEFAULT_METRIC_REGISTRY`); rolling
/// tasks report their fixed perplexities whatever the list says.
fn default_metrics(output_type: OutputType) -> Vec<MetricSpec> {
    let names: &[&str] = match output_type {
        OutputType::MultipleChoice => &["acc", "acc_norm"],
        OutputType::GenerateUntil => &["exact_match"],
        OutputType::LoglikelihoodRolling => &[],
    };
    names
        .iter()
        .map(|m| MetricSpec {
            metric: m.to_string(),
            aggregation: default_aggregation(),
            higher_is_better: true,
            options: BTreeMap::new(),
        })
        .collect()
}

/// One entry of `metric_list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MetricSpec {
    pub(crate) metric: String,
    #[serde(default = "default_aggregation")]
    pub(crate) aggregation: String,
    #[serde(default = "default_true")]
    pub(crate) higher_is_better: bool,
    /// Metric options (`ignore_case`, `ignore_punctuation`, `regexes_to_ignore`, ...).
    #[serde(flatten)]
    pub(crate) options: BTreeMap<String, toml::Value>,
}

fn default_aggregation() -> String {
    "mean".into()
}

fn default_true() -> bool {
    true
}

/// lm-eval's `generation_kwargs` (greedy decoding only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerationKwargs {
    #[serde(default)]
    pub(crate) until: Vec<String>,
    #[serde(default = "default_max_gen_toks", alias = "max_tokens")]
    pub(crate) max_gen_toks: usize,
    #[serde(default)]
    pub(crate) do_sample: bool,
    #[serde(default)]
    pub(crate) temperature: f64,
}

fn default_max_gen_toks() -> usize {
    256
}

/// A spec that stands for one task per dataset config (MMLU's 57 subjects): task
/// `<task>_<config>` for each, grouped under `task`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expand {
    pub(crate) dataset_name: Vec<String>,
}

/// A task, as read from `tasks/<name>.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub task: String,
    #[serde(default)]
    pub(crate) tag: Vec<String>,
    /// Hub dataset id.
    #[serde(alias = "dataset")]
    pub(crate) dataset_path: String,
    /// Hub dataset config.
    #[serde(default, alias = "dataset_config")]
    pub(crate) dataset_name: Option<String>,
    pub(crate) training_split: Option<String>,
    pub(crate) validation_split: Option<String>,
    pub(crate) test_split: Option<String>,
    pub(crate) fewshot_split: Option<String>,
    #[serde(default)]
    pub num_fewshot: usize,
    #[serde(default = "default_fewshot_seed")]
    pub(crate) fewshot_seed: u64,
    #[serde(default)]
    pub(crate) fewshot_config: FewshotConfig,
    /// Text before the few-shot exemplars (a template).
    #[serde(default)]
    pub(crate) description: String,
    pub(crate) doc_to_text: String,
    pub(crate) doc_to_target: String,
    pub(crate) doc_to_choice: Option<String>,
    #[serde(default = "default_target_delimiter")]
    pub(crate) target_delimiter: String,
    #[serde(default = "default_fewshot_delimiter")]
    pub(crate) fewshot_delimiter: String,
    pub(crate) output_type: OutputType,
    #[serde(default, alias = "metrics")]
    pub(crate) metric_list: Vec<MetricSpec>,
    #[serde(alias = "generation")]
    pub(crate) generation_kwargs: Option<GenerationKwargs>,
    #[serde(default, alias = "filters")]
    pub(crate) filter_list: Vec<FilterPipeline>,
    /// A named built-in doc transformation (`hellaswag`, `winogrande`, ...).
    #[serde(alias = "preprocess")]
    pub(crate) process_docs: Option<String>,
    /// A named built-in scorer replacing the default one (`mc2`, `drop`).
    pub(crate) process_results: Option<String>,
    pub(crate) expand: Option<Expand>,
    /// Spec version, recorded with every result (lm-eval's `metadata.version`).
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, toml::Value>,
    /// Where the spec was read from (`tasks/arc_easy.toml`, a user file), for errors;
    /// not part of the spec's hash.
    #[serde(skip)]
    pub(crate) origin: PathBuf,
}

fn default_fewshot_seed() -> u64 {
    1234
}

fn default_target_delimiter() -> String {
    " ".into()
}

fn default_fewshot_delimiter() -> String {
    "\n\n".into()
}

impl TaskSpec {
    /// Parses a spec; errors name `origin` (a file path or `builtin:<name>`) and the key.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| Error::bad_file(origin, format!("invalid TOML: {e}")))?;
        let mut spec: TaskSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Error::bad_file(origin, format!("{path}: {}", inner.message()))
        })?;
        spec.origin = origin.to_path_buf();
        if spec.metric_list.is_empty() && !names_metrics(text) {
            spec.metric_list = default_metrics(spec.output_type);
        }
        spec.validate(origin)?;
        Ok(spec)
    }

    /// Reads and parses a spec file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        let bad = |msg: String| Err(Error::bad_file(origin, msg));
        if self.task.is_empty() {
            return bad("task: empty name".into());
        }
        if self.output_type == OutputType::MultipleChoice && self.doc_to_choice.is_none() {
            return bad("multiple_choice needs doc_to_choice".into());
        }
        if self.output_type == OutputType::GenerateUntil && self.generation_kwargs.is_none() {
            return bad("generate_until needs generation_kwargs (until, max_gen_toks)".into());
        }
        if let Some(g) = &self.generation_kwargs {
            if g.do_sample || g.temperature > 0.0 {
                return bad(
                    "generation_kwargs: only greedy decoding (do_sample = false, temperature = 0)"
                        .into(),
                );
            }
        }
        self.validate_metrics()
            .map_err(|msg| Error::bad_file(origin, msg))?;
        if self.eval_split().is_none() {
            return bad("no split to evaluate: set test_split or validation_split".into());
        }
        if self.num_fewshot > 0
            && self.fewshot_config.source == FewshotSource::Split
            && self.fewshot_split_name().is_none()
        {
            return bad(
                "num_fewshot > 0 but no fewshot_split, training_split or validation_split".into(),
            );
        }
        let cfg = &self.fewshot_config;
        if cfg.source == FewshotSource::Split
            && (cfg.description_column.is_some() || cfg.preamble || cfg.file.is_some())
        {
            return bad(
                "fewshot_config: file, description_column and preamble need source = \"file\""
                    .into(),
            );
        }
        Ok(())
    }

    /// `metric_list`: not empty (a task with no metric reports nothing and vanished
    /// from the results), and aggregations the scoring knows (an unknown one was read
    /// as the mean). Loglikelihood-rolling tasks report their fixed metrics, so any
    /// list, even none, is fine for them.
    fn validate_metrics(&self) -> std::result::Result<(), String> {
        if self.output_type == OutputType::LoglikelihoodRolling {
            return Ok(());
        }
        if self.metric_list.is_empty() {
            return Err(format!(
                "task {}: metric_list is empty or missing",
                self.task
            ));
        }
        for m in &self.metric_list {
            if !AGGREGATIONS.contains(&m.aggregation.as_str()) {
                return Err(format!(
                    "task {}: metric_list: {}: unknown aggregation {:?} (one of {})",
                    self.task,
                    m.metric,
                    m.aggregation,
                    AGGREGATIONS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The spec with `n` few-shot examples, as lm-eval's `--num_fewshot` sets them: a
    /// preamble's count (`fewshot_config.preamble`) is left as it is.
    pub(crate) fn with_num_fewshot(&self, n: usize) -> Result<TaskSpec> {
        let mut spec = self.clone();
        if !spec.fewshot_config.preamble {
            spec.num_fewshot = n;
        }
        spec.validate(&self.origin)?;
        Ok(spec)
    }

    /// The spec with generation capped at `n` new tokens, as lm-eval's
    /// `--gen_kwargs max_gen_toks=N` sets it (a task asking for fewer keeps its own).
    pub fn with_max_gen_toks(&self, n: usize) -> TaskSpec {
        let mut spec = self.clone();
        if let Some(g) = &mut spec.generation_kwargs {
            g.max_gen_toks = g.max_gen_toks.min(n.max(1));
        }
        spec
    }

    /// The split scored: `test_split`, else `validation_split` (lm-eval's order).
    pub(crate) fn eval_split(&self) -> Option<&str> {
        self.test_split
            .as_deref()
            .or(self.validation_split.as_deref())
    }

    /// The split exemplars are drawn from: `fewshot_split`, else training, else
    /// validation, else test (lm-eval's `fewshot_docs` order).
    pub(crate) fn fewshot_split_name(&self) -> Option<&str> {
        self.fewshot_split
            .as_deref()
            .or(self.training_split.as_deref())
            .or(self.validation_split.as_deref())
            .or(self.test_split.as_deref())
    }

    /// `metadata.version` as a string (`"0"` when absent).
    pub fn version(&self) -> String {
        match self.metadata.get("version") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "0".into(),
        }
    }

    /// The concrete tasks this spec stands for: itself, or one per expanded config.
    pub(crate) fn expanded(&self) -> Vec<TaskSpec> {
        let Some(expand) = &self.expand else {
            return vec![self.clone()];
        };
        expand
            .dataset_name
            .iter()
            .map(|config| {
                let mut t = self.clone();
                t.task = format!("{}_{config}", self.task);
                t.dataset_name = Some(config.clone());
                t.expand = None;
                t
            })
            .collect()
    }

    /// Stable hash of everything that shapes prompts and scores: results computed
    /// under one spec are never mixed with another's.
    pub fn hash(&self) -> String {
        let json = serde_json::to_string(self).expect("spec serialises");
        blake3::hash(json.as_bytes()).to_hex()[..16].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARC: &str = r#"
task = "arc_easy"
dataset_path = "allenai/ai2_arc"
dataset_name = "ARC-Easy"
output_type = "multiple_choice"
test_split = "test"
doc_to_text = "Question: {{question}}\nAnswer:"
doc_to_target = "{{choices.label.index(answerKey)}}"
doc_to_choice = "{{choices.text}}"
metric_list = [{ metric = "acc" }, { metric = "acc_norm" }]
"#;

    #[test]
    fn parses_with_lm_eval_defaults() {
        let spec = TaskSpec::parse(ARC, Path::new("arc.toml")).unwrap();
        assert_eq!(spec.target_delimiter, " ");
        assert_eq!(spec.fewshot_delimiter, "\n\n");
        assert_eq!(spec.fewshot_seed, 1234);
        assert_eq!(spec.eval_split(), Some("test"));
        assert_eq!(spec.metric_list[1].aggregation, "mean");
    }

    #[test]
    fn max_gen_toks_caps_generation_only_downwards() {
        let gen = ARC.replace("multiple_choice", "generate_until").replace(
            "metric_list",
            "generation_kwargs = { until = [\"\\n\"], max_gen_toks = 100 }\nmetric_list",
        );
        let spec = TaskSpec::parse(&gen, Path::new("g.toml")).unwrap();
        let toks = |s: &TaskSpec| s.generation_kwargs.as_ref().unwrap().max_gen_toks;
        assert_eq!(toks(&spec.with_max_gen_toks(16)), 16);
        assert_eq!(toks(&spec.with_max_gen_toks(500)), 100);
        let mc = TaskSpec::parse(ARC, Path::new("arc.toml")).unwrap();
        assert!(mc.with_max_gen_toks(16).generation_kwargs.is_none());
    }

    #[test]
    fn metric_lists_are_checked_and_default_as_in_lm_eval() {
        let list = "metric_list = [{ metric = \"acc\" }, { metric = \"acc_norm\" }]";
        let parse =
            |metrics: &str| TaskSpec::parse(&ARC.replace(list, metrics), Path::new("a.toml"));
        let names = |s: TaskSpec| {
            s.metric_list
                .into_iter()
                .map(|m| m.metric)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(parse("").unwrap()), ["acc", "acc_norm"]);
        let err = parse("metric_list = []").unwrap_err().to_string();
        assert!(
            err.contains("a.toml") && err.contains("metric_list is empty"),
            "{err}"
        );
        let err = parse("metric_list = [{ metric = \"acc\", aggregation = \"max\" }]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown aggregation \"max\""), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = format!("{ARC}\ndoc_to_txt = \"x\"\n");
        let err = TaskSpec::parse(&text, Path::new("arc.toml")).unwrap_err();
        assert!(err.to_string().contains("arc.toml"), "{err}");
        assert!(err.to_string().contains("doc_to_txt"), "{err}");
    }

    #[test]
    fn design_aliases_are_accepted() {
        let text = ARC
            .replace("dataset_path", "dataset")
            .replace("dataset_name", "dataset_config");
        let spec = TaskSpec::parse(&text, Path::new("arc.toml")).unwrap();
        assert_eq!(spec.dataset_name.as_deref(), Some("ARC-Easy"));
    }

    #[test]
    fn expand_names_one_task_per_config() {
        let text = format!("{ARC}\n[expand]\ndataset_name = [\"a\", \"b\"]\n");
        let spec = TaskSpec::parse(&text, Path::new("x.toml")).unwrap();
        let tasks = spec.expanded();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[1].task, "arc_easy_b");
        assert_eq!(tasks[1].dataset_name.as_deref(), Some("b"));
    }
}

//! The tasks a run can name: the built-ins, the specs of user task directories, their
//! groups and the suites.
//!
//! A name is a task (`arc_easy`, `mmlu_anatomy`), a group (`mmlu`: the tasks a spec
//! with `[expand]` stands for; `agieval`, `ai2_arc`: a `tag` of several specs) or, for
//! [`Catalog::suite`], a suite (`pt`, `mt`, `sft`: `tasks/suites.toml`). A user spec
//! replaces the built-in of the same name (for an expanding spec, its whole group); a
//! user `suites.toml` adds suites or replaces those of the same name.
//!
//! ```
//! use ckpt::eval::catalog::Catalog;
//! let catalog = Catalog::builtin().unwrap();
//! assert_eq!(catalog.resolve("mmlu").unwrap().len(), 57);
//! let pt = catalog.suite("pt").unwrap();
//! assert!(pt.iter().all(|s| s.num_fewshot == 0));
//! let err = catalog.resolve("arc_esay").unwrap_err().to_string();
//! assert!(err.contains("arc_easy"), "{err}");
//! ```

use super::builtin::{builtin_specs, SUITES_FILE};
use super::spec::TaskSpec;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One concrete task and the group it was expanded from.
#[derive(Debug, Clone)]
pub struct TaskEntry {
    pub spec: TaskSpec,
    /// The expanding spec's name (`mmlu` for `mmlu_anatomy`), if any.
    pub(crate) group: Option<String>,
}

impl TaskEntry {
    /// The names that select this task besides its own: its group, then its tags.
    pub(crate) fn groups(&self) -> Vec<&str> {
        self.group
            .iter()
            .chain(self.spec.tag.iter())
            .map(String::as_str)
            .collect()
    }
}

/// A named list of tasks with their shot counts (`tasks/suites.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    #[serde(default)]
    pub(crate) description: String,
    pub(crate) tasks: Vec<SuiteTask>,
}

/// A suite's entry: a task or group, and its few-shot count (absent: the task's own).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuiteTask {
    pub(crate) task: String,
    pub(crate) num_fewshot: Option<usize>,
}

/// Every task and suite known to a run.
#[derive(Debug, Clone)]
pub struct Catalog {
    entries: Vec<TaskEntry>,
    suites: BTreeMap<String, Suite>,
}

impl Catalog {
    /// The built-in tasks and suites.
    pub fn builtin() -> Result<Catalog> {
        let mut catalog = Catalog {
            entries: Vec::new(),
            suites: parse_suites(SUITES_FILE.1, &Path::new("tasks").join(SUITES_FILE.0))?,
        };
        for spec in builtin_specs()? {
            catalog.add(spec);
        }
        Ok(catalog)
    }

    /// The built-ins, then each of `dirs` over them (`--tasks-dir`).
    pub fn with_user_dirs(dirs: &[impl AsRef<Path>]) -> Result<Catalog> {
        let mut catalog = Catalog::builtin()?;
        for dir in dirs {
            catalog.add_dir(dir.as_ref())?;
        }
        Ok(catalog)
    }

    /// Adds the specs (`*.toml`) and suites (`suites.toml`) of `dir`, replacing those
    /// of the same names.
    pub fn add_dir(&mut self, dir: &Path) -> Result<()> {
        let listing = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut files: Vec<_> = listing
            .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(dir, err)))
            .collect::<Result<_>>()?;
        files.sort();
        for path in files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        {
            if path.file_name().is_some_and(|n| n == SUITES_FILE.0) {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                self.suites.extend(parse_suites(&text, path)?);
            } else {
                self.add(TaskSpec::read(path)?);
            }
        }
        Ok(())
    }

    /// Adds `spec`, replacing the tasks it names: a spec of the same name (all of its
    /// group) and any task of the same name as one it expands to.
    pub(crate) fn add(&mut self, spec: TaskSpec) {
        // A replaced member of a group (a user's `mmlu_anatomy`) stays in the group.
        let inherited = self
            .entries
            .iter()
            .find(|e| e.spec.task == spec.task)
            .and_then(|e| e.group.clone());
        let group = match spec.expand {
            Some(_) => Some(spec.task.clone()),
            None => inherited,
        };
        let concrete = spec.expanded();
        let names: BTreeSet<&str> = concrete.iter().map(|s| s.task.as_str()).collect();
        self.entries.retain(|e| {
            !names.contains(e.spec.task.as_str()) && e.group.as_deref() != Some(spec.task.as_str())
        });
        self.entries
            .extend(concrete.into_iter().map(|spec| TaskEntry {
                spec,
                group: group.clone(),
            }));
    }

    /// Every task, in the order they were added.
    pub fn entries(&self) -> &[TaskEntry] {
        &self.entries
    }

    /// Every suite, by name.
    pub fn suites(&self) -> &BTreeMap<String, Suite> {
        &self.suites
    }

    /// The tasks `name` stands for: the task of that name, or every task of that group.
    pub fn resolve(&self, name: &str) -> Result<Vec<TaskSpec>> {
        if let Some(e) = self.entries.iter().find(|e| e.spec.task == name) {
            return Ok(vec![e.spec.clone()]);
        }
        let members: Vec<TaskSpec> = self
            .entries
            .iter()
            .filter(|e| e.groups().contains(&name))
            .map(|e| e.spec.clone())
            .collect();
        if members.is_empty() {
            return Err(Error::bad_value(
                "--tasks",
                self.unknown("task", name, &self.names()),
            ));
        }
        Ok(members)
    }

    /// The tasks of several names, each once, in the order named.
    pub fn resolve_all(&self, names: &[impl AsRef<str>]) -> Result<Vec<TaskSpec>> {
        let mut out: Vec<TaskSpec> = Vec::new();
        for name in names {
            for spec in self.resolve(name.as_ref())? {
                if !out.iter().any(|s| s.task == spec.task) {
                    out.push(spec);
                }
            }
        }
        Ok(out)
    }

    /// The tasks of suite `name`, with the suite's shot counts.
    pub fn suite(&self, name: &str) -> Result<Vec<TaskSpec>> {
        let suite = self.suites.get(name).ok_or_else(|| {
            let names: Vec<String> = self.suites.keys().cloned().collect();
            Error::bad_value("--suite", self.unknown("suite", name, &names))
        })?;
        let mut out: Vec<TaskSpec> = Vec::new();
        for item in &suite.tasks {
            let specs = self
                .resolve(&item.task)
                .map_err(|e| Error::bad_value("--suite", format!("suite {name}: {e}")))?;
            for spec in specs {
                let spec = match item.num_fewshot {
                    Some(n) => spec.with_num_fewshot(n)?,
                    None => spec,
                };
                if !out.iter().any(|s| s.task == spec.task) {
                    out.push(spec);
                }
            }
        }
        Ok(out)
    }

    /// Task, group and tag names.
    fn names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        for e in &self.entries {
            names.insert(e.spec.task.clone());
            names.extend(e.groups().into_iter().map(String::from));
        }
        names.into_iter().collect()
    }

    fn unknown(&self, what: &str, name: &str, known: &[String]) -> String {
        let close = close_names(name, known);
        let hint = if close.is_empty() {
            String::new()
        } else {
            format!("; did you mean {}?", close.join(", "))
        };
        format!("unknown {what} `{name}`{hint} (`ckpt tasks` lists tasks, groups and suites)")
    }
}

/// Up to five of `known` that look like `name`: similar spelling (a typo or two, a
/// swapped pair), or containing it.
fn close_names(name: &str, known: &[String]) -> Vec<String> {
    let lower = name.to_lowercase();
    let mut scored: Vec<(f64, &String)> = known
        .iter()
        .filter_map(|k| {
            let k_lower = k.to_lowercase();
            let score = strsim::jaro_winkler(&lower, &k_lower);
            let typo = strsim::damerau_levenshtein(&lower, &k_lower) <= (lower.len() / 4).max(1);
            let contains = lower.len() >= 3 && k_lower.contains(&lower);
            (score >= 0.85 || typo || contains).then_some((
                if typo || contains {
                    score.max(0.9)
                } else {
                    score
                },
                k,
            ))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(5).map(|(_, k)| k.clone()).collect()
}

fn parse_suites(text: &str, origin: &Path) -> Result<BTreeMap<String, Suite>> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| Error::bad_file(origin, format!("invalid TOML: {e}")))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        Error::bad_file(origin, format!("{path}: {}", e.into_inner().message()))
    })
}

/// The catalog (`tasks_dir` over the built-ins) and the task specs `tasks` or `suite`
/// name; pairwise judging (`alpaca_eval`) is not a catalog task and is left out.
pub fn catalog_specs(
    tasks: &[String],
    suite: Option<&str>,
    tasks_dir: Option<&Path>,
) -> Result<(Catalog, Vec<TaskSpec>)> {
    let catalog = match tasks_dir {
        Some(dir) => Catalog::with_user_dirs(&[dir])?,
        None => Catalog::builtin()?,
    };
    let names: Vec<String> = tasks
        .iter()
        .filter(|t| *t != super::headline::JUDGED_TASK)
        .cloned()
        .collect();
    let specs = match suite {
        Some(s) => catalog.suite(s)?,
        None => resolve_tasks(&names, &catalog)?,
    };
    Ok((catalog, specs))
}

/// Tasks named on the command line, as specs: a `.toml` path is read as is; any other
/// name is a task, group or tag of the catalog.
pub fn resolve_tasks(names: &[String], catalog: &Catalog) -> Result<Vec<TaskSpec>> {
    let mut specs = Vec::new();
    for name in names {
        if name.ends_with(".toml") {
            specs.extend(TaskSpec::read(Path::new(name))?.expanded());
        } else {
            specs.extend(catalog.resolve(name)?);
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_tags_and_tasks() {
        let c = Catalog::builtin().unwrap();
        assert_eq!(c.resolve("bbh_cot_fewshot").unwrap().len(), 27);
        assert_eq!(c.resolve("agieval").unwrap().len(), 9);
        let arc: Vec<String> = c
            .resolve("ai2_arc")
            .unwrap()
            .into_iter()
            .map(|s| s.task)
            .collect();
        assert_eq!(arc, ["arc_challenge", "arc_easy"]);
        let one = c.resolve("mmlu_anatomy").unwrap();
        assert_eq!(one[0].dataset_name.as_deref(), Some("anatomy"));
        let both = c.resolve_all(&["arc_easy", "ai2_arc"]).unwrap();
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn suites_set_shots_but_not_a_preamble() {
        let c = Catalog::builtin().unwrap();
        let sft = c.suite("sft").unwrap();
        let shots = |name: &str| sft.iter().find(|s| s.task == name).unwrap().num_fewshot;
        assert_eq!(shots("mmlu_virology"), 5);
        assert_eq!(shots("gsm8k"), 1);
        assert_eq!(shots("agieval_lsat_ar"), 3);
        assert_eq!(shots("truthfulqa_mc2"), 6);
        assert_eq!(sft.len(), 2 + 57 + 1 + 1 + 9 + 27);
        let pt = c.suite("pt").unwrap();
        assert!(pt.iter().any(|s| s.task == "validation_loss"));
        let preamble = c.resolve("truthfulqa_mc1").unwrap()[0]
            .with_num_fewshot(0)
            .unwrap();
        assert_eq!(preamble.num_fewshot, 6);
        let err = c.suite("stf").unwrap_err().to_string();
        assert!(err.contains("sft"), "{err}");
    }

    #[test]
    fn unknown_names_suggest_close_ones() {
        let c = Catalog::builtin().unwrap();
        let err = c.resolve("hellaswg").unwrap_err().to_string();
        assert!(err.contains("hellaswag"), "{err}");
        let err = c.resolve("arc").unwrap_err().to_string();
        assert!(
            err.contains("arc_easy") && err.contains("arc_challenge"),
            "{err}"
        );
        let err = c.resolve("zzzz").unwrap_err().to_string();
        assert!(
            err.contains("unknown task `zzzz`") && !err.contains("did you mean"),
            "{err}"
        );
    }

    #[test]
    fn user_specs_replace_builtins() {
        let dir = tempfile::tempdir().unwrap();
        let arc = crate::eval::builtin::BUILTIN_TASKS
            .iter()
            .find(|(f, _)| *f == "arc_easy.toml")
            .unwrap()
            .1
            .replace("Question: {{question}}", "Q: {{question}}");
        std::fs::write(dir.path().join("my_arc.toml"), arc).unwrap();
        std::fs::write(
            dir.path().join("suites.toml"),
            "[mine]\ntasks = [{ task = \"arc_easy\", num_fewshot = 2 }]\n",
        )
        .unwrap();
        let c = Catalog::with_user_dirs(&[dir.path()]).unwrap();
        let spec = &c.resolve("arc_easy").unwrap()[0];
        assert!(spec.doc_to_text.starts_with("Q: "));
        assert!(spec.origin.ends_with("my_arc.toml"));
        assert_eq!(
            c.entries()
                .iter()
                .filter(|e| e.spec.task == "arc_easy")
                .count(),
            1
        );
        assert_eq!(c.suite("mine").unwrap()[0].num_fewshot, 2);
        assert!(c.suite("pt").is_ok());

        std::fs::write(dir.path().join("bad.toml"), "task = 1\n").unwrap();
        let err = Catalog::with_user_dirs(&[dir.path()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml"), "{err}");
    }
}

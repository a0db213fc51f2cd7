//! The built-in task specs and suites: `tasks/*.toml`, embedded in the binary.
//!
//! Each built-in is lm-evaluation-harness 0.4.13's task of the same name, field for
//! field (`tasks/<name>.toml` says which YAML it reproduces and how the few places that
//! run Python are expressed); `tasks/suites.toml` holds the paper's suites. Parse errors
//! name the file as `tasks/<file>`.
//!
//! ```
//! let specs = ckpt::eval::builtin::builtin_specs().unwrap();
//! assert!(specs.iter().any(|s| s.task == "arc_easy"));
//! ```

use super::catalog::Catalog;
use super::spec::TaskSpec;
use crate::error::Result;
use std::path::Path;

/// `(file name, contents)` of every built-in spec, in file-name order.
pub(crate) const BUILTIN_TASKS: &[(&str, &str)] = &[
    (
        "agieval_aqua_rat.toml",
        include_str!("../../tasks/agieval_aqua_rat.toml"),
    ),
    (
        "agieval_gaokao_english.toml",
        include_str!("../../tasks/agieval_gaokao_english.toml"),
    ),
    (
        "agieval_logiqa_en.toml",
        include_str!("../../tasks/agieval_logiqa_en.toml"),
    ),
    (
        "agieval_lsat_ar.toml",
        include_str!("../../tasks/agieval_lsat_ar.toml"),
    ),
    (
        "agieval_lsat_lr.toml",
        include_str!("../../tasks/agieval_lsat_lr.toml"),
    ),
    (
        "agieval_lsat_rc.toml",
        include_str!("../../tasks/agieval_lsat_rc.toml"),
    ),
    (
        "agieval_sat_en.toml",
        include_str!("../../tasks/agieval_sat_en.toml"),
    ),
    (
        "agieval_sat_en_without_passage.toml",
        include_str!("../../tasks/agieval_sat_en_without_passage.toml"),
    ),
    (
        "agieval_sat_math.toml",
        include_str!("../../tasks/agieval_sat_math.toml"),
    ),
    (
        "arc_challenge.toml",
        include_str!("../../tasks/arc_challenge.toml"),
    ),
    ("arc_easy.toml", include_str!("../../tasks/arc_easy.toml")),
    (
        "bbh_cot_fewshot.toml",
        include_str!("../../tasks/bbh_cot_fewshot.toml"),
    ),
    ("boolq.toml", include_str!("../../tasks/boolq.toml")),
    ("drop.toml", include_str!("../../tasks/drop.toml")),
    ("gsm8k.toml", include_str!("../../tasks/gsm8k.toml")),
    ("gsm8k_cot.toml", include_str!("../../tasks/gsm8k_cot.toml")),
    ("hellaswag.toml", include_str!("../../tasks/hellaswag.toml")),
    ("mmlu.toml", include_str!("../../tasks/mmlu.toml")),
    (
        "openbookqa.toml",
        include_str!("../../tasks/openbookqa.toml"),
    ),
    ("piqa.toml", include_str!("../../tasks/piqa.toml")),
    (
        "truthfulqa_mc1.toml",
        include_str!("../../tasks/truthfulqa_mc1.toml"),
    ),
    (
        "truthfulqa_mc2.toml",
        include_str!("../../tasks/truthfulqa_mc2.toml"),
    ),
    (
        "validation_loss.toml",
        include_str!("../../tasks/validation_loss.toml"),
    ),
    (
        "winogrande.toml",
        include_str!("../../tasks/winogrande.toml"),
    ),
];

/// The suites file (`tasks/suites.toml`).
pub(crate) const SUITES_FILE: (&str, &str) =
    ("suites.toml", include_str!("../../tasks/suites.toml"));

/// Every built-in spec as written (MMLU and BBH still one spec each, with `[expand]`).
pub fn builtin_specs() -> Result<Vec<TaskSpec>> {
    BUILTIN_TASKS
        .iter()
        .map(|(file, text)| TaskSpec::parse(text, &Path::new("tasks").join(file)))
        .collect()
}

/// The built-in tasks `name` stands for (a task or a group); see [`Catalog::resolve`].
pub fn lookup(name: &str) -> Result<Vec<TaskSpec>> {
    Catalog::builtin()?.resolve(name)
}

/// The tasks of a built-in suite, with its shot counts; see [`Catalog::suite`].
pub fn suite(name: &str) -> Result<Vec<TaskSpec>> {
    Catalog::builtin()?.suite(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_task_file_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks");
        let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml") && n != SUITES_FILE.0)
            .collect();
        let embedded: BTreeSet<String> = BUILTIN_TASKS.iter().map(|(f, _)| f.to_string()).collect();
        assert_eq!(on_disk, embedded, "tasks/*.toml and BUILTIN_TASKS differ");
    }

    #[test]
    fn builtins_parse_and_are_named_after_their_files() {
        for spec in builtin_specs().unwrap() {
            let file = spec
                .origin
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert_eq!(spec.task, file, "{}", spec.origin.display());
        }
    }
}

//! Exports in AlpacaEval's formats, so its tools read what `ckpt` produced:
//! `model_outputs.json` (`instruction`, `output`, `generator`, `dataset`),
//! `annotations.json` (`instruction`, `output_1` + `generator_1` = the reference,
//! `output_2` + `generator_2` = the model, `annotator`, `preference` on AlpacaEval's
//! 1..2 scale or null, `raw_completion` = the judge's answer) and `metrics.json`
//! (our [`WinRates`] under AlpacaEval's names). Files are written atomically.

use super::instructions::Instruction;
use super::metrics::WinRates;
use crate::atomic_file::write_json;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// File names in a checkpoint's export directory.
pub const MODEL_OUTPUTS: &str = "model_outputs.json";
pub const ANNOTATIONS: &str = "annotations.json";
pub const METRICS: &str = "metrics.json";

/// One line of `annotations.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub(crate) instruction: String,
    pub(crate) output_1: String,
    pub(crate) generator_1: String,
    pub(crate) output_2: String,
    pub(crate) generator_2: String,
    pub(crate) annotator: String,
    pub(crate) preference: Option<f64>,
    pub(crate) raw_completion: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dataset: Option<String>,
}

/// `model_outputs.json` records of `generator`'s `outputs` for `instructions`.
pub fn model_outputs(
    instructions: &[Instruction],
    outputs: &[String],
    generator: &str,
) -> Vec<Instruction> {
    instructions
        .iter()
        .zip(outputs)
        .map(|(i, o)| Instruction {
            instruction: i.instruction.clone(),
            output: Some(o.clone()),
            generator: Some(generator.to_string()),
            dataset: i.dataset.clone(),
        })
        .collect()
}

/// Writes the three files of one checkpoint into `dir`.
pub fn write_checkpoint_exports(
    dir: &Path,
    outputs: &[Instruction],
    annotations: &[Annotation],
    metrics: &WinRates,
) -> Result<()> {
    write_json(&dir.join(MODEL_OUTPUTS), &outputs)?;
    write_json(&dir.join(ANNOTATIONS), &annotations)?;
    write_json(&dir.join(METRICS), metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_have_alpaca_evals_fields() {
        let a = Annotation {
            instruction: "i".into(),
            output_1: "r".into(),
            generator_1: "ref".into(),
            output_2: "m".into(),
            generator_2: "run/step-1".into(),
            annotator: "judge".into(),
            preference: None,
            raw_completion: serde_json::json!({"message": {"content": "?"}}),
            dataset: None,
        };
        let v = serde_json::to_value(&a).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "instruction",
                "output_1",
                "generator_1",
                "output_2",
                "generator_2",
                "annotator",
                "preference",
                "raw_completion"
            ]
        );
        assert!(v["preference"].is_null());
        let outs = model_outputs(
            &[Instruction {
                instruction: "i".into(),
                output: None,
                generator: None,
                dataset: Some("syn".into()),
            }],
            &["o".into()],
            "g",
        );
        assert_eq!(
            serde_json::to_value(&outs).unwrap(),
            serde_json::json!([{"instruction": "i", "output": "o", "generator": "g", "dataset": "syn"}])
        );
    }
}

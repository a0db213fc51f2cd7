//! The instruction set, in AlpacaEval's layout: JSON (an array) or JSONL records with
//! `instruction`, and optionally `output` (a reference answer), `generator` (who wrote
//! it) and `dataset`. Read from a local file or from a Hub dataset (AlpacaEval's own
//! set is `tatsu-lab/alpaca_eval`, file `alpaca_eval.json`); a file of model outputs
//! (`model_outputs.json`) has the same layout.
//!
//! ```no_run
//! # use ckpt::eval::judge::instructions::{InstructionSource, read_instructions};
//! let set = read_instructions(&InstructionSource::parse("my_instructions.jsonl"))?;
//! println!("{} instructions", set.len());
//! # Ok::<(), ckpt::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::records::for_each_record;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// The Hub file read when a dataset id names no file.
pub const DEFAULT_HUB_FILE: &str = "alpaca_eval.json";

/// One record of the instruction set (or of a model's outputs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    pub instruction: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
}

/// Where the instructions come from.
#[derive(Debug, Clone, PartialEq)]
pub enum InstructionSource {
    File(PathBuf),
    /// A Hub dataset and the file in it.
    Hub {
        dataset: String,
        file: String,
    },
}

impl InstructionSource {
    /// An existing path is a file; `ORG/NAME[:FILE]` is a Hub dataset; anything else
    /// is a file (that will be reported missing).
    pub fn parse(arg: &str) -> Self {
        let path = Path::new(arg);
        if path.exists() {
            return Self::File(path.to_path_buf());
        }
        let (dataset, file) = match arg.split_once(':') {
            Some((d, f)) => (d, f),
            None => (arg, DEFAULT_HUB_FILE),
        };
        let is_repo_id = dataset.split('/').count() == 2
            && dataset
                .split('/')
                .all(|p| !p.is_empty() && !p.starts_with('.'))
            && !file.is_empty();
        if is_repo_id {
            Self::Hub {
                dataset: dataset.to_string(),
                file: file.to_string(),
            }
        } else {
            Self::File(path.to_path_buf())
        }
    }

    /// A local path to the records (downloaded into the Hugging Face cache if needed).
    pub fn local_path(&self) -> Result<PathBuf> {
        match self {
            Self::File(p) => Ok(p.clone()),
            Self::Hub { dataset, file } => crate::eval::hub::dataset_file(dataset, file),
        }
    }
}

/// Reads the instruction set; an empty set or a record without an instruction is an
/// error naming the file and the record.
pub fn read_instructions(source: &InstructionSource) -> Result<Vec<Instruction>> {
    let path = source.local_path()?;
    let records = read_records(&path)?;
    if records.is_empty() {
        return Err(Error::bad_file(&path, "no instructions in the file"));
    }
    Ok(records)
}

/// Every record of an AlpacaEval-layout file.
pub(crate) fn read_records(path: &Path) -> Result<Vec<Instruction>> {
    if !path.is_file() {
        return Err(Error::bad_file(path, "no such file"));
    }
    let mut out = Vec::new();
    for_each_record(path, None, &mut |record| {
        let parsed = parse_record(&record.value)
            .map_err(|e| Error::bad_file(path, format!("{}: {e}", record.location)))?;
        out.push(parsed);
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

fn parse_record(value: &Value) -> std::result::Result<Instruction, String> {
    // serde fills a struct from a JSON array too, by position: `["a", "b"]` would be an
    // instruction "a" with output "b". A record is an object.
    if !value.is_object() {
        return Err(format!(
            "not an AlpacaEval record {{\"instruction\", \"output\", ...}}: a JSON {}, not an object",
            json_type(value)
        ));
    }
    let record: Instruction = Instruction::deserialize(value).map_err(|e| {
        format!("not an AlpacaEval record {{\"instruction\", \"output\", \"generator\", \"dataset\"}}: {e}")
    })?;
    if record.instruction.trim().is_empty() {
        return Err("empty instruction".into());
    }
    Ok(record)
}

/// The JSON type of `value`, as an error message names it.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Outputs of a model for `instructions`, matched by instruction text (as AlpacaEval
/// merges outputs with its set); every instruction must have one.
pub fn outputs_for(
    instructions: &[Instruction],
    outputs: &[Instruction],
    file: &Path,
) -> Result<Vec<String>> {
    let by_text: std::collections::HashMap<&str, &Instruction> = outputs
        .iter()
        .map(|o| (o.instruction.as_str(), o))
        .collect();
    instructions
        .iter()
        .enumerate()
        .map(|(i, ins)| {
            let found = by_text.get(ins.instruction.as_str()).ok_or_else(|| {
                Error::bad_file(
                    file,
                    format!(
                        "no output for instruction {i} ({:?})",
                        preview(&ins.instruction)
                    ),
                )
            })?;
            found.output.clone().ok_or_else(|| {
                Error::bad_file(
                    file,
                    format!("the record of instruction {i} has no `output`"),
                )
            })
        })
        .collect()
}

/// The first characters of a text, for messages.
pub(crate) fn preview(text: &str) -> String {
    let short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        format!("{short}...")
    } else {
        short
    }
}

/// Content hash of an instruction set (the instructions only), for result provenance.
pub fn content_hash(instructions: &[Instruction]) -> String {
    let mut h = blake3::Hasher::new();
    for i in instructions {
        h.update(&(i.instruction.len() as u64).to_le_bytes());
        h.update(i.instruction.as_bytes());
    }
    h.finalize().to_hex()[..16].to_string()
}

/// Instruction difficulties for the `length_controlled_noreg` GLM: a CSV whose last
/// column is the difficulty, one row per instruction in order (AlpacaEval's
/// `instruction_difficulty.csv` layout: `index,instruction_difficulty`); a first line
/// that is not a number is a header.
pub fn read_difficulty(path: &Path, n: usize) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let last = line.rsplit(',').next().unwrap_or_default().trim();
        match last.parse::<f64>() {
            Ok(v) if v.is_finite() => values.push(v),
            _ if i == 0 => continue,
            _ => {
                return Err(Error::bad_file(
                    path,
                    format!(
                        "line {}: {last:?} is not a difficulty (a finite number)",
                        i + 1
                    ),
                ))
            }
        }
    }
    if values.len() != n {
        return Err(Error::bad_file(
            path,
            format!("{} difficulties for {n} instructions", values.len()),
        ));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_files_or_hub_ids() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("set.json");
        std::fs::write(&file, "[]").unwrap();
        assert_eq!(
            InstructionSource::parse(file.to_str().unwrap()),
            InstructionSource::File(file.clone())
        );
        assert_eq!(
            InstructionSource::parse("tatsu-lab/alpaca_eval"),
            InstructionSource::Hub {
                dataset: "tatsu-lab/alpaca_eval".into(),
                file: DEFAULT_HUB_FILE.into()
            }
        );
        assert_eq!(
            InstructionSource::parse("org/set:data/x.jsonl"),
            InstructionSource::Hub {
                dataset: "org/set".into(),
                file: "data/x.jsonl".into()
            }
        );
        assert!(matches!(
            InstructionSource::parse("missing.json"),
            InstructionSource::File(_)
        ));
        assert!(matches!(
            InstructionSource::parse("a/b/c.json"),
            InstructionSource::File(_)
        ));
    }

    #[test]
    fn difficulty_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.csv");
        std::fs::write(&f, ",instruction_difficulty\n0,1.5\n1,-0.25\n").unwrap();
        assert_eq!(read_difficulty(&f, 2).unwrap(), vec![1.5, -0.25]);
        let err = read_difficulty(&f, 3).unwrap_err().to_string();
        assert!(err.contains("2 difficulties for 3"), "{err}");
        std::fs::write(&f, "0.5\nx\n").unwrap();
        let err = read_difficulty(&f, 2).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn records_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("set.json");
        std::fs::write(
            &file,
            r#"[{"instruction": "Say hi.", "output": "hi", "generator": "ref", "dataset": "syn"},
                {"instruction": "Count.", "extra": 1}]"#,
        )
        .unwrap();
        let set = read_instructions(&InstructionSource::File(file.clone())).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set[0].output.as_deref(), Some("hi"));
        assert_eq!(set[1].generator, None);
        let err = outputs_for(&set, &set, &file).unwrap_err().to_string();
        assert!(
            err.contains("instruction 1") && err.contains("no `output`"),
            "{err}"
        );

        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"instruction\": \"a\"}\n{\"prompt\": \"b\"}\n").unwrap();
        let err = read_records(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl") && err.contains("line 2"), "{err}");
        std::fs::write(&bad, "{\"instruction\": \"a\"}\n[\"b\", \"c\"]\n").unwrap();
        let err = read_records(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.jsonl") && err.contains("line 2") && err.contains("array"),
            "{err}"
        );
        std::fs::write(&bad, "{\"instruction\": \"  \"}\n").unwrap();
        let err = read_records(&bad).unwrap_err().to_string();
        assert!(err.contains("empty instruction"), "{err}");
        std::fs::write(&bad, "").unwrap();
        let err = read_instructions(&InstructionSource::File(bad))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no instructions"), "{err}");
        let err = read_records(&dir.path().join("nope.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file"), "{err}");
    }
}

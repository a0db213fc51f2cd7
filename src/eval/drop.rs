//! DROP's exact match and F1, as lm-evaluation-harness's `tasks/drop/utils.py`.
//!
//! A gold answer is a tuple of spans (a number, the spans, or a date); the gold
//! answers of a document are its `answer` plus its `validated_answers`, deduplicated
//! in order. A span is normalised token by token (tokens split on spaces and
//! hyphens): lower-cased, ASCII punctuation removed unless the token is a number,
//! numbers rewritten as Python `str(float(token))` (`"1,5"` stays, `"7"` -> `"7.0"`),
//! articles removed, whitespace collapsed. EM compares the sets of normalised spans;
//! F1 aligns predicted and gold spans one to one to maximise the summed bag-of-words
//! F1 (0 when the gold span has numbers and the predicted one shares none), averages
//! over max(#gold, #predicted) spans and rounds to 2 decimals. A document scores the
//! maximum over its gold answers whose first span is not blank.
//!
//! ```
//! use ckpt::eval::drop::{process_results, Answer};
//! let golds: Vec<Answer> = vec![vec!["the Eagles".into()]];
//! let s = process_results("Eagles", &golds).unwrap();
//! assert_eq!((s.em, s.f1), (1.0, 1.0));
//! ```

use super::metrics::np_sum;
use super::pyregex::PyRegex;
use super::pystr;
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::LazyLock;

/// One gold answer: its spans (lm-eval's tuple).
pub type Answer = Vec<String>;

/// A document's DROP scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropScores {
    pub em: f64,
    pub f1: f64,
}

static ARTICLES: LazyLock<PyRegex> =
    LazyLock::new(|| PyRegex::new(r"\b(a|an|the)\b").expect("static pattern"));

fn field<'a>(obj: &'a Value, name: &str, what: &str) -> Result<&'a Value> {
    obj.get(name)
        .ok_or_else(|| Error::bad_value(name, format!("DROP {what}: missing field `{name}`")))
}

fn text(v: &Value, what: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(match n.as_i64() {
            Some(i) => i.to_string(),
            None => pystr::float_repr(n.as_f64().unwrap_or(f64::NAN)),
        }),
        other => Err(Error::bad_value(
            what,
            format!("DROP {what}: expected a string, got {other}"),
        )),
    }
}

/// lm-eval's `parse_answer`: `(number,)` if it has a number, else the spans, else
/// `("day month year".strip(),)`.
pub fn parse_answer(answer: &Value) -> Result<Answer> {
    let number = text(field(answer, "number", "answer")?, "answer number")?;
    if !number.is_empty() {
        return Ok(vec![number]);
    }
    let spans = field(answer, "spans", "answer")?
        .as_array()
        .ok_or_else(|| Error::bad_value("spans", "DROP answer: `spans` is not a list"))?;
    if !spans.is_empty() {
        return spans.iter().map(|s| text(s, "answer span")).collect();
    }
    let date = field(answer, "date", "answer")?;
    let parts = ["day", "month", "year"]
        .iter()
        .map(|k| text(field(date, k, "answer date")?, "answer date"))
        .collect::<Result<Vec<_>>>()?;
    Ok(vec![pystr::strip(&parts.join(" ")).to_string()])
}

/// lm-eval's `get_answers`: the document's `answer` then each validated answer,
/// duplicates dropped. `validated_answers` may be the `datasets` dict of lists or a
/// list of answer objects (Arrow's list of structs).
pub fn get_answers(doc: &Value) -> Result<Vec<Answer>> {
    let mut candidates = vec![field(doc, "answer", "document")?.clone()];
    match doc.get("validated_answers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => candidates.extend(list.iter().cloned()),
        Some(Value::Object(columns)) => candidates.extend(unzip_columns(columns)?),
        Some(other) => {
            return Err(Error::bad_value(
                "validated_answers",
                format!("DROP document: `validated_answers` is neither a list nor a dict: {other}"),
            ))
        }
    }
    let mut seen = HashSet::new();
    let mut answers = Vec::new();
    for candidate in &candidates {
        let answer = parse_answer(candidate)?;
        if seen.insert(answer.clone()) {
            answers.push(answer);
        }
    }
    Ok(answers)
}

/// `{"number": [..], "date": [..], "spans": [..]}` -> one object per index.
fn unzip_columns(columns: &Map<String, Value>) -> Result<Vec<Value>> {
    let column = |k: &str| -> Result<&Vec<Value>> {
        columns.get(k).and_then(Value::as_array).ok_or_else(|| {
            Error::bad_value(
                "validated_answers",
                format!("DROP document: `validated_answers.{k}` is not a list"),
            )
        })
    };
    let (numbers, dates, spans) = (column("number")?, column("date")?, column("spans")?);
    (0..numbers.len())
        .map(|i| {
            let get = |col: &Vec<Value>, k: &str| {
                col.get(i).cloned().ok_or_else(|| {
                    Error::bad_value(
                        "validated_answers",
                        format!("DROP document: `validated_answers.{k}` is shorter than `number`"),
                    )
                })
            };
            let mut obj = Map::new();
            obj.insert("number".into(), get(numbers, "number")?);
            obj.insert("date".into(), get(dates, "date")?);
            obj.insert("spans".into(), get(spans, "spans")?);
            Ok(Value::Object(obj))
        })
        .collect()
}

/// lm-eval's `process_docs` for DROP: the document with `id` (= `query_id`) and
/// `answers` (the gold answers) added; other fields kept as `datasets.map` keeps them.
pub fn process_doc(doc: &Value) -> Result<Value> {
    let mut out = doc
        .as_object()
        .cloned()
        .ok_or_else(|| Error::bad_value("document", "DROP document is not an object"))?;
    let answers = get_answers(doc)?;
    out.insert("id".into(), field(doc, "query_id", "document")?.clone());
    out.insert(
        "answers".into(),
        serde_json::to_value(answers).expect("strings serialise"),
    );
    Ok(Value::Object(out))
}

/// lm-eval's `process_results`: the best EM and F1 of `prediction` (one span) over the
/// gold answers whose first span is not blank.
pub fn process_results(prediction: &str, golds: &[Answer]) -> Result<DropScores> {
    let predicted = vec![prediction.to_string()];
    let mut best = DropScores { em: 0.0, f1: 0.0 };
    for gold in golds {
        let (em, f1) = get_metrics(&predicted, gold)?;
        if gold.first().is_some_and(|g| !pystr::strip(g).is_empty()) {
            best.em = best.em.max(em);
            best.f1 = best.f1.max(f1);
        }
    }
    Ok(best)
}

/// lm-eval's `get_metrics`: (exact match, F1 rounded to 2 decimals).
pub fn get_metrics(predicted: &[String], gold: &[String]) -> Result<(f64, f64)> {
    let (pred_spans, pred_bags) = answer_to_bags(predicted)?;
    let (gold_spans, gold_bags) = answer_to_bags(gold)?;
    let pred_set: HashSet<&String> = pred_spans.iter().collect();
    let gold_set: HashSet<&String> = gold_spans.iter().collect();
    let em = if pred_set == gold_set && pred_spans.len() == gold_spans.len() {
        1.0
    } else {
        0.0
    };
    let per_bag = align_bags(&pred_bags, &gold_bags);
    let f1 = np_sum(&per_bag) / per_bag.len() as f64;
    Ok((em, pystr::round(f1, 2)))
}

type Bag = HashSet<String>;

fn answer_to_bags(spans: &[String]) -> Result<(Vec<String>, Vec<Bag>)> {
    let normalized = spans
        .iter()
        .map(|s| normalize(s))
        .collect::<Result<Vec<_>>>()?;
    let bags = normalized
        .iter()
        .map(|n| {
            pystr::split_whitespace(n)
                .into_iter()
                .map(String::from)
                .collect()
        })
        .collect();
    Ok((normalized, bags))
}

/// lm-eval's `_normalize` of one span.
pub fn normalize(answer: &str) -> Result<String> {
    let mut tokens = Vec::new();
    for token in answer.split([' ', '-']) {
        let t = fix_number(&remove_punc(&pystr::lower(token)));
        let t = ARTICLES.sub(&t, " ")?;
        let t = pystr::split_whitespace(&t).join(" ");
        if !pystr::strip(&t).is_empty() {
            tokens.push(t);
        }
    }
    Ok(pystr::strip(&tokens.join(" ")).to_string())
}

fn is_number(s: &str) -> bool {
    pystr::parse_float(s).is_some()
}

fn remove_punc(s: &str) -> String {
    if is_number(s) {
        s.to_string()
    } else {
        s.chars().filter(|c| !c.is_ascii_punctuation()).collect()
    }
}

fn fix_number(s: &str) -> String {
    match pystr::parse_float(s) {
        Some(x) => pystr::float_repr(x),
        None => s.to_string(),
    }
}

fn f1_of_bags(predicted: &Bag, gold: &Bag) -> f64 {
    let common = gold.intersection(predicted).count() as f64;
    let precision = if predicted.is_empty() {
        1.0
    } else {
        common / predicted.len() as f64
    };
    let recall = if gold.is_empty() {
        1.0
    } else {
        common / gold.len() as f64
    };
    if precision == 0.0 && recall == 0.0 {
        0.0
    } else {
        (2.0 * precision * recall) / (precision + recall)
    }
}

fn numbers_match(gold: &Bag, predicted: &Bag) -> bool {
    let gold_numbers: HashSet<&String> = gold.iter().filter(|w| is_number(w)).collect();
    if gold_numbers.is_empty() {
        return true;
    }
    predicted
        .iter()
        .any(|w| is_number(w) && gold_numbers.contains(w))
}

/// lm-eval's `_align_bags`: per gold span (padded to max(#gold, #predicted)), the F1
/// of the span it is assigned to in a maximum-total one-to-one assignment.
fn align_bags(predicted: &[Bag], gold: &[Bag]) -> Vec<f64> {
    let scores: Vec<Vec<f64>> = gold
        .iter()
        .map(|g| {
            predicted
                .iter()
                .map(|p| {
                    if numbers_match(g, p) {
                        f1_of_bags(p, g)
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let mut per_gold = vec![0.0; gold.len().max(predicted.len())];
    for (row, col) in max_assignment(&scores) {
        per_gold[row] = f64::max(per_gold[row], scores[row][col]);
    }
    per_gold
}

/// A maximum-weight assignment of rows to columns (every row of the smaller side
/// assigned), by the Hungarian algorithm: the role of scipy's `linear_sum_assignment`.
pub fn max_assignment(scores: &[Vec<f64>]) -> Vec<(usize, usize)> {
    let rows = scores.len();
    let cols = scores.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    if rows > cols {
        let transposed: Vec<Vec<f64>> = (0..cols)
            .map(|c| (0..rows).map(|r| scores[r][c]).collect())
            .collect();
        return max_assignment(&transposed)
            .into_iter()
            .map(|(c, r)| (r, c))
            .collect();
    }
    // Minimise the negated scores; rows <= cols. Potentials u (rows), v (cols), 1-based.
    let cost = |r: usize, c: usize| -scores[r - 1][c - 1];
    let (mut u, mut v) = (vec![0.0; rows + 1], vec![0.0; cols + 1]);
    let mut owner = vec![0usize; cols + 1];
    let mut way = vec![0usize; cols + 1];
    for r in 1..=rows {
        owner[0] = r;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; cols + 1];
        let mut used = vec![false; cols + 1];
        loop {
            used[j0] = true;
            let i0 = owner[j0];
            let (mut delta, mut j1) = (f64::INFINITY, 0);
            for j in 1..=cols {
                if !used[j] {
                    let cur = cost(i0, j) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=cols {
                if used[j] {
                    u[owner[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if owner[j0] == 0 {
                break;
            }
        }
        while j0 != 0 {
            let j1 = way[j0];
            owner[j0] = owner[j1];
            j0 = j1;
        }
    }
    (1..=cols)
        .filter(|&c| owner[c] != 0)
        .map(|c| (owner[c] - 1, c - 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spans(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize("The  Eagles!").unwrap(), "eagles");
        assert_eq!(normalize("7").unwrap(), "7.0");
        assert_eq!(normalize("1,000 yards").unwrap(), "1000.0 yards");
        assert_eq!(normalize("forty-two").unwrap(), "forty two");
        assert_eq!(normalize("a").unwrap(), "");
    }

    #[test]
    fn numbers_must_match() {
        assert_eq!(
            get_metrics(&spans(&["12 yards"]), &spans(&["13 yards"])).unwrap(),
            (0.0, 0.0)
        );
        assert_eq!(
            get_metrics(&spans(&["12 yards"]), &spans(&["12"])).unwrap(),
            (0.0, 0.67)
        );
    }

    #[test]
    fn multi_span_alignment() {
        let (em, f1) =
            get_metrics(&spans(&["Bob", "Alice Smith"]), &spans(&["Alice", "Bob"])).unwrap();
        assert_eq!(em, 0.0);
        assert_eq!(f1, 0.83);
        let a = max_assignment(&[vec![0.1, 0.9], vec![0.8, 0.2], vec![0.5, 0.5]]);
        let total: f64 = a
            .iter()
            .map(|&(r, c)| [[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]][r][c])
            .sum();
        assert!((total - 1.7).abs() < 1e-12);
    }

    #[test]
    fn answers_from_both_layouts() {
        let answer = json!({"number": "", "date": {"day": "", "month": "", "year": ""}, "spans": ["x", "y"]});
        let dict = json!({"answer": answer, "validated_answers": {
            "number": ["3", ""],
            "date": [{"day": "", "month": "", "year": ""}, {"day": "1", "month": "May", "year": ""}],
            "spans": [[], []]}});
        let list = json!({"answer": answer, "validated_answers": [
            {"number": "3", "date": {"day": "", "month": "", "year": ""}, "spans": []},
            {"number": "", "date": {"day": "1", "month": "May", "year": ""}, "spans": []},
            {"number": "3", "date": {"day": "", "month": "", "year": ""}, "spans": []}]});
        let expected = vec![spans(&["x", "y"]), spans(&["3"]), spans(&["1 May"])];
        assert_eq!(get_answers(&dict).unwrap(), expected);
        assert_eq!(get_answers(&list).unwrap(), expected);
        assert!(get_answers(&json!({"question": "q"})).is_err());
    }
}

//! The report's findings, computed from the store and stated plainly whatever they
//! show: the paper's three claims at this scale. A finding whose data is missing says
//! what is missing.
//!
//! 1. Do decayed schedules reach a lower final validation loss than WSO?
//! 2. Are WSO checkpoints flatter: the decayed / WSO sharpness ratio at the last step
//!    both were measured at.
//! 3. After SFT: WSO's picked fine-tune against the best decayed base's.

use super::inputs::Inputs;
use super::runs::Run;
use super::sft::{Criterion, SftPick};
use super::sharpness::{by_run, last_common, ratio, ConfigSummary, Measured};
use super::table::{marker, p_value, show, Style};
use crate::error::Result;
use crate::eval::compare::{paired_test, PairedTest};
use crate::eval::headline::Headline;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub(crate) id: String,
    /// The question it answers.
    pub(crate) question: String,
    /// Whether the paper's direction holds here (`None`: not measured).
    pub holds: Option<bool>,
    /// The answer in a sentence or two, with the numbers.
    pub text: String,
    /// The numbers behind it.
    pub details: Value,
}

/// Every finding.
pub(crate) fn findings(inp: &Inputs) -> Result<Vec<Finding>> {
    let wso = wso_run(inp);
    let mut out = vec![validation_loss(inp, wso)];
    // One sharpness finding per measurement set (the paper measures two).
    let configs = inp.sharpness_per_set();
    if configs.is_empty() {
        out.push(sharpness_ratio(inp, wso, None));
    }
    for (i, cfg) in configs.iter().enumerate() {
        out.push(sharpness_ratio(inp, wso, Some((cfg, i == 0))));
    }
    out.push(sft_comparison(inp, wso)?);
    Ok(out)
}

/// The WSO run the findings compare with: the constant-LR pre-training run (of
/// several, the one with the lowest final validation loss).
fn wso_run<'a>(inp: &'a Inputs) -> Option<&'a Run> {
    let mut wso: Vec<&Run> = inp
        .pre_runs()
        .filter(|r| !r.decayed && !r.is_merge())
        .collect();
    wso.sort_by(|a, b| {
        let loss = |r: &Run| inp.validation_loss(r).map_or(f64::INFINITY, |m| m.value);
        loss(a).total_cmp(&loss(b))
    });
    wso.first().copied()
}

fn missing(id: &str, question: &str, what: String) -> Finding {
    Finding {
        id: id.into(),
        question: question.into(),
        holds: None,
        text: format!("Not measured: {what}."),
        details: Value::Null,
    }
}

fn validation_loss(inp: &Inputs, wso: Option<&Run>) -> Finding {
    const ID: &str = "validation_loss";
    const Q: &str = "Does every decayed schedule reach a lower final validation loss than WSO?";
    let Some(wso) = wso else {
        return missing(
            ID,
            Q,
            "no WSO (constant-LR) pre-training run in the store".into(),
        );
    };
    let Some(base) = inp.validation_loss(wso).map(|m| m.value) else {
        return missing(
            ID,
            Q,
            format!("the WSO run {} has no validation_loss", wso.name),
        );
    };
    let decayed: Vec<(&Run, f64)> = inp
        .pre_runs()
        .filter(|r| r.decayed)
        .filter_map(|r| Some((r, inp.validation_loss(r)?.value)))
        .collect();
    let runs: Vec<(&Run, f64)> = decayed
        .iter()
        .copied()
        .filter(|(r, _)| !r.is_merge())
        .collect();
    let merges: Vec<(&Run, f64)> = decayed
        .iter()
        .copied()
        .filter(|(r, _)| r.is_merge())
        .collect();
    if runs.is_empty() {
        return missing(
            ID,
            Q,
            "no decayed pre-training run has a validation_loss".into(),
        );
    }
    let holds = runs.iter().all(|(_, v)| *v < base);
    let describe = |list: &[(&Run, f64)]| -> Vec<String> {
        list.iter()
            .map(|(r, v)| format!("{} ({}) {v:.4} ({:+.4})", r.name, r.label, v - base))
            .collect()
    };
    let not_lower: Vec<&str> = runs
        .iter()
        .filter(|(_, v)| *v >= base)
        .map(|(r, _)| r.name.as_str())
        .collect();
    let mut text = if holds {
        format!(
            "Yes: every decayed run ends below WSO's {base:.4} ({})",
            wso.name
        )
    } else {
        format!(
            "No: {} not below WSO's {base:.4} ({})",
            not_lower.join(", "),
            wso.name
        )
    };
    text.push_str(&format!(": {}.", describe(&runs).join("; ")));
    if !merges.is_empty() {
        text.push_str(&format!(" WSM merges: {}.", describe(&merges).join("; ")));
    }
    let details = json!({
        "wso_run": wso.name,
        "wso": base,
        "decayed": decayed.iter().map(|(r, v)| json!({
            "run": r.name, "label": r.label, "merge": r.is_merge(), "loss": v, "delta": v - base,
        })).collect::<Vec<_>>(),
    });
    Finding {
        id: ID.into(),
        question: Q.into(),
        holds: Some(holds),
        text,
        details,
    }
}

/// The sharpness finding on one configuration (`primary`: the findings' own, whose id
/// is `sharpness_ratio`; another set's is `sharpness_ratio:SET`).
fn sharpness_ratio(
    inp: &Inputs,
    wso: Option<&Run>,
    config: Option<(&ConfigSummary, bool)>,
) -> Finding {
    const Q: &str = "Are WSO checkpoints flatter (decayed / WSO sharpness > 1)?";
    let Some((cfg, primary)) = config else {
        return missing(
            "sharpness_ratio",
            Q,
            "no sharpness in the store (ckpt sharpness --store)".into(),
        );
    };
    let id = match (&cfg.set, primary) {
        (Some(set), false) => format!("sharpness_ratio:{set}"),
        _ => "sharpness_ratio".to_string(),
    };
    let id: &str = &id;
    let question = match &cfg.set {
        Some(set) => format!("{Q} (on the {set} set)"),
        None => Q.to_string(),
    };
    let q: &str = &question;
    let Some(wso) = wso else {
        return missing(
            id,
            q,
            "no WSO (constant-LR) pre-training run in the store".into(),
        );
    };
    let measured = by_run(&inp.view, &inp.runs, &cfg.key);
    let Some(wso_steps) = measured.get(&wso.name) else {
        return missing(id, q, format!("the WSO run {} has no sharpness", wso.name));
    };
    // The verdict is about LR decay; a WSM merge is shown beside it, not counted.
    let mut ratios = Vec::new();
    let mut merges = Vec::new();
    for run in inp.pre_runs().filter(|r| r.decayed) {
        let Some(steps) = measured.get(&run.name) else {
            continue;
        };
        if let Some((d, w)) = last_common(steps, wso_steps) {
            let (r, se) = ratio(d, w);
            let into = if run.is_merge() {
                &mut merges
            } else {
                &mut ratios
            };
            into.push((run, d, w, r, se));
        }
    }
    if ratios.is_empty() {
        return missing(
            id,
            q,
            format!(
                "no decayed run was measured at a step WSO ({}) was",
                wso.name
            ),
        );
    }
    let holds = ratios.iter().all(|(_, _, _, r, _)| *r > 1.0);
    let flatter: Vec<&str> = ratios
        .iter()
        .filter(|(_, _, _, r, _)| *r <= 1.0)
        .map(|(run, ..)| run.name.as_str())
        .collect();
    let verdict = if holds {
        "Yes: WSO is flatter than every decayed run measured".to_string()
    } else {
        format!("No: WSO is not flatter than {}", flatter.join(", "))
    };
    let merged = if merges.is_empty() {
        String::new()
    } else {
        format!(
            " WSM merges (not LR decay, not in the verdict): {}.",
            describe_ratios(&merges).join("; ")
        )
    };
    Finding {
        id: id.into(),
        question: q.into(),
        holds: Some(holds),
        text: format!(
            "{verdict}; decayed / WSO ({}) sharpness on {} at the last common step: {}.{merged}",
            wso.name,
            cfg.label(),
            describe_ratios(&ratios).join("; ")
        ),
        details: json!({
            "wso_run": wso.name,
            "config": cfg,
            "ratios": ratios.iter().chain(&merges).map(|(run, d, w, r, se)| json!({
                "run": run.name, "step": d.step, "decayed": d, "wso": w, "ratio": r, "stderr": se,
                "merge": run.is_merge(),
            })).collect::<Vec<_>>(),
        }),
    }
}

/// A decayed run against WSO at their last common step: (run, decayed, WSO, ratio, SE).
type RatioRow<'a> = (&'a Run, Measured, Measured, f64, Option<f64>);

fn describe_ratios(rows: &[RatioRow]) -> Vec<String> {
    rows.iter()
        .map(|(run, d, w, r, se)| {
            let se = se.map(|s| format!(" ± {}", show(s, Style::Significant)));
            format!(
                "{} ({}) {}{} at step {} ({} vs {})",
                run.name,
                run.label,
                show(*r, Style::Significant),
                se.unwrap_or_default(),
                d.step,
                show(d.estimate, Style::Significant),
                show(w.estimate, Style::Significant),
            )
        })
        .collect()
}

fn sft_comparison(inp: &Inputs, wso: Option<&Run>) -> Result<Finding> {
    const ID: &str = "sft_comparison";
    const Q: &str = "After SFT, does WSO's fine-tune beat the best decayed base's?";
    let Some(wso) = wso else {
        return Ok(missing(
            ID,
            Q,
            "no WSO (constant-LR) pre-training run in the store".into(),
        ));
    };
    let Some(w) = inp.picks.iter().find(|p| p.base_run == wso.name) else {
        return Ok(missing(
            ID,
            Q,
            format!("no scored SFT run descends from {}", wso.name),
        ));
    };
    let rivals: Vec<&SftPick> = inp
        .picks
        .iter()
        .filter(|p| p.criterion == w.criterion)
        .filter(|p| match &inp.opts.baseline {
            Some(b) => &p.base_run == b,
            None => p.base_decayed,
        })
        .collect();
    let Some(d) = rivals
        .into_iter()
        .max_by(|a, b| a.score.total_cmp(&b.score))
    else {
        let what = match &inp.opts.baseline {
            Some(b) => format!(
                "the baseline {b} has no SFT run scored like WSO's ({})",
                w.criterion.label()
            ),
            None => format!(
                "no decayed base has an SFT run scored like WSO's ({})",
                w.criterion.label()
            ),
        };
        return Ok(missing(ID, Q, what));
    };
    let test = match &w.criterion {
        Criterion::Judged { task, metric } => {
            let h = Headline {
                task: task.clone(),
                metric: metric.clone(),
                filter: crate::eval::scoring::NO_FILTER.into(),
                higher_is_better: true,
            };
            paired(
                &inp.items(&w.fingerprint, &h)?,
                &inp.items(&d.fingerprint, &h)?,
            )
        }
        Criterion::SuiteMean { .. } => None,
    };
    let delta = w.score - d.score;
    let lr = |p: &SftPick| p.lr.map(|lr| format!(", LR {lr:e}")).unwrap_or_default();
    let significance = match &test {
        Some(t) => format!(
            "paired test on {} items: p = {}{}, {}",
            t.n,
            p_value(t.p_value),
            marker(t.p_value),
            if t.p_value < 0.05 {
                "significant at 0.05"
            } else {
                "not significant at 0.05"
            }
        ),
        None => "no paired test (a mean over tasks has no single set of items)".into(),
    };
    let verdict = if delta > 0.0 {
        "Yes"
    } else if delta < 0.0 {
        "No"
    } else {
        "No (a tie)"
    };
    let text = format!(
        "{verdict}: on {}, WSO's fine-tune ({}{}) scores {} against {} for the best decayed \
         base's ({} → {}{}): Δ {:+.1} points ({significance}).",
        w.criterion.label(),
        w.run,
        lr(w),
        show(w.score, Style::Percent),
        show(d.score, Style::Percent),
        d.base_run,
        d.run,
        lr(d),
        100.0 * delta,
    );
    Ok(Finding {
        id: ID.into(),
        question: Q.into(),
        holds: Some(delta > 0.0),
        text,
        details: json!({
            "criterion": w.criterion,
            "wso": {"base": w.base_run, "run": w.run, "lr": w.lr, "score": w.score},
            "decayed": {"base": d.base_run, "run": d.run, "lr": d.lr, "score": d.score},
            "delta": delta,
            "test": test,
        }),
    })
}

/// The paired test of two checkpoints' items, matched by item key.
fn paired(a: &[(usize, f64)], b: &[(usize, f64)]) -> Option<PairedTest> {
    let b: BTreeMap<usize, f64> = b.iter().copied().collect();
    let (xs, ys): (Vec<f64>, Vec<f64>) = a
        .iter()
        .filter_map(|(k, x)| b.get(k).map(|y| (*x, *y)))
        .unzip();
    paired_test(&xs, &ys)
}

//! Findings over several seeds of the same study (`ckpt demo --seeds N`): how many seeds
//! each finding holds in, and its effect pooled over the seeds with a standard error, so
//! a finding is reported as "holds in k of N", not from one draw.

use super::findings::Finding;
use serde::Serialize;
use serde_json::Value;

/// One finding across seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PooledFinding {
    pub(crate) id: String,
    pub(crate) question: String,
    /// Seeds where the paper's direction holds / where the finding was measured.
    pub(crate) holds_in: usize,
    pub(crate) measured_in: usize,
    pub(crate) seeds: usize,
    /// What the effect is (`mean decayed - WSO validation loss`...).
    pub(crate) effect: String,
    /// The effect in each seed (`None`: not measured there).
    pub(crate) per_seed: Vec<Option<f64>>,
    /// Mean over the seeds that measured it, and its standard error (sd / sqrt(n)).
    pub(crate) mean: Option<f64>,
    pub(crate) stderr: Option<f64>,
    /// The same effect run by run (each decayed run against WSO), where the finding
    /// compares runs.
    pub(crate) runs: Vec<PooledRun>,
}

/// One run's effect across seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PooledRun {
    pub(crate) run: String,
    pub(crate) per_seed: Vec<Option<f64>>,
    pub(crate) mean: Option<f64>,
    pub(crate) stderr: Option<f64>,
}

/// Pools each finding id over the seeds' findings (in seed order).
pub fn pool(per_seed: &[Vec<Finding>]) -> Vec<PooledFinding> {
    let mut ids: Vec<(&str, &str)> = Vec::new();
    for f in per_seed.iter().flatten() {
        if !ids.iter().any(|(id, _)| *id == f.id) {
            ids.push((&f.id, &f.question));
        }
    }
    ids.into_iter()
        .map(|(id, question)| {
            let found: Vec<Option<&Finding>> = per_seed
                .iter()
                .map(|fs| fs.iter().find(|f| f.id == id))
                .collect();
            let per_seed: Vec<Option<f64>> = found.iter().map(|f| f.and_then(effect)).collect();
            let values: Vec<f64> = per_seed.iter().flatten().copied().collect();
            let (mean, stderr) = mean_stderr(&values);
            let runs = pool_runs(&found);
            PooledFinding {
                id: id.to_string(),
                question: question.to_string(),
                holds_in: found
                    .iter()
                    .filter(|f| f.and_then(|f| f.holds) == Some(true))
                    .count(),
                measured_in: found
                    .iter()
                    .filter(|f| f.is_some_and(|f| f.holds.is_some()))
                    .count(),
                seeds: found.len(),
                effect: effect_name(id).into(),
                per_seed,
                mean,
                stderr,
                runs,
            }
        })
        .collect()
}

/// Each decayed run's effect (not merges), in the order runs first appear.
fn pool_runs(found: &[Option<&Finding>]) -> Vec<PooledRun> {
    let mut names: Vec<String> = Vec::new();
    let per_seed: Vec<Vec<(String, f64)>> = found
        .iter()
        .map(|f| f.and_then(run_rows).unwrap_or_default())
        .collect();
    for (run, _) in per_seed.iter().flatten() {
        if !names.contains(run) {
            names.push(run.clone());
        }
    }
    names
        .into_iter()
        .map(|run| {
            let values: Vec<Option<f64>> = per_seed
                .iter()
                .map(|rows| rows.iter().find(|(r, _)| *r == run).map(|(_, v)| *v))
                .collect();
            let (mean, stderr) = mean_stderr(&values.iter().flatten().copied().collect::<Vec<_>>());
            PooledRun {
                run,
                per_seed: values,
                mean,
                stderr,
            }
        })
        .collect()
}

/// What [`effect`] measures for a finding id.
fn effect_name(id: &str) -> &'static str {
    match id {
        "validation_loss" => "mean over decayed runs of (decayed - WSO) final validation loss",
        "sft_comparison" => "WSO's SFT score - the best decayed run's (points)",
        id if id.starts_with("sharpness_ratio") => {
            "mean over decayed runs of decayed / WSO sharpness at the last common step"
        }
        _ => "",
    }
}

/// The decayed runs' rows of a finding that compares runs (WSM merges are not LR decay
/// and stay out, as in the verdicts): (run, effect) each.
fn run_rows(f: &Finding) -> Option<Vec<(String, f64)>> {
    let (list, field) = match f.id.as_str() {
        "validation_loss" => ("decayed", "delta"),
        id if id.starts_with("sharpness_ratio") => ("ratios", "ratio"),
        _ => return None,
    };
    let rows = f.details[list].as_array()?;
    Some(
        rows.iter()
            .filter(|r| r["merge"] != Value::Bool(true))
            .filter_map(|r| Some((r["run"].as_str()?.to_string(), r[field].as_f64()?)))
            .collect(),
    )
}

/// One number per finding and seed: the mean over its runs, or the SFT difference.
fn effect(f: &Finding) -> Option<f64> {
    if f.id == "sft_comparison" {
        // Stored as a fraction; shown in points as the finding's text shows it.
        return f.details["delta"].as_f64().map(|d| 100.0 * d);
    }
    let values: Vec<f64> = run_rows(f)?.into_iter().map(|(_, v)| v).collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn mean_stderr(values: &[f64]) -> (Option<f64>, Option<f64>) {
    if values.is_empty() {
        return (None, None);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let stderr = (values.len() > 1).then(|| {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (var / n).sqrt()
    });
    (Some(mean), stderr)
}

/// The pooled findings as Markdown: one line each.
pub fn markdown(pooled: &[PooledFinding]) -> String {
    let mut out = String::from("# Findings over seeds\n\n");
    for p in pooled {
        let effect = match (p.mean, p.stderr) {
            (Some(m), Some(se)) => format!("{m:.4} ± {se:.4}"),
            (Some(m), None) => format!("{m:.4}"),
            _ => "not measured".into(),
        };
        let seeds: Vec<String> = p
            .per_seed
            .iter()
            .map(|v| v.map_or("-".into(), |v| format!("{v:.4}")))
            .collect();
        out.push_str(&format!(
            "- **{}** {} Holds in {} of {} seeds ({} measured). {}: {effect} (per seed: {}).\n",
            p.id,
            p.question,
            p.holds_in,
            p.seeds,
            p.measured_in,
            p.effect,
            seeds.join(", ")
        ));
        for r in &p.runs {
            let values: Vec<String> = r
                .per_seed
                .iter()
                .map(|v| v.map_or("-".into(), |v| format!("{v:.4}")))
                .collect();
            let pooled = match (r.mean, r.stderr) {
                (Some(m), Some(se)) => format!("{m:.4} ± {se:.4}"),
                (Some(m), None) => format!("{m:.4}"),
                _ => "-".into(),
            };
            out.push_str(&format!(
                "  - {}: {pooled} ({})\n",
                r.run,
                values.join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn finding(id: &str, holds: Option<bool>, details: Value) -> Finding {
        Finding {
            id: id.into(),
            question: format!("{id}?"),
            holds,
            text: String::new(),
            details,
        }
    }

    #[test]
    fn pools_holds_and_effects_leaving_merges_out() {
        let ratios = |a: f64, b: f64| {
            json!({"ratios": [
                {"run": "wsd", "ratio": a, "merge": false},
                {"run": "cos", "ratio": b, "merge": false},
                {"run": "wsm", "ratio": 100.0, "merge": true},
            ]})
        };
        let seeds = vec![
            vec![
                finding("sharpness_ratio", Some(true), ratios(1.2, 1.4)),
                finding("sft_comparison", Some(false), json!({"delta": -0.01})),
            ],
            vec![
                finding("sharpness_ratio", Some(false), ratios(0.8, 1.0)),
                finding("sft_comparison", Some(true), json!({"delta": 0.03})),
            ],
            vec![
                finding("sharpness_ratio", Some(true), ratios(1.5, 1.7)),
                finding("sft_comparison", None, Value::Null),
            ],
        ];
        let pooled = pool(&seeds);
        assert_eq!(pooled.len(), 2);
        let s = &pooled[0];
        assert_eq!((s.holds_in, s.measured_in, s.seeds), (2, 3, 3));
        let want = [(1.2 + 1.4) / 2.0, (0.8 + 1.0) / 2.0, (1.5 + 1.7) / 2.0];
        assert_eq!(s.per_seed, want.map(Some));
        let mean: f64 = want.iter().sum::<f64>() / 3.0;
        assert!((s.mean.unwrap() - mean).abs() < 1e-12);
        let var = want.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2.0;
        assert!((s.stderr.unwrap() - (var / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.runs.len(), 2, "merges are left out");
        assert_eq!(s.runs[0].run, "wsd");
        assert_eq!(s.runs[0].per_seed, [Some(1.2), Some(0.8), Some(1.5)]);
        assert!((s.runs[1].mean.unwrap() - (1.4 + 1.0 + 1.7) / 3.0).abs() < 1e-12);
        let sft = &pooled[1];
        assert_eq!((sft.holds_in, sft.measured_in), (1, 2));
        assert_eq!(sft.per_seed, [Some(-1.0), Some(3.0), None]);
        assert_eq!(sft.mean, Some(1.0));
        let md = markdown(&pooled);
        assert!(md.contains("Holds in 2 of 3 seeds (3 measured)"), "{md}");
        assert!(md.contains("  - wsd: 1.1667 ± "), "{md}");
    }
}

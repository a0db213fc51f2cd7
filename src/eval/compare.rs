//! Paired comparisons between two checkpoints scored on the same items: the delta of a
//! metric and its significance, which per-task means and standard errors alone do not
//! give (two runs with overlapping error bars can still differ reliably item by item).
//!
//! 0/1 items (accuracy, exact match) use the exact McNemar test: a two-sided binomial
//! test on the discordant pairs. Other items (F1, mc2 mass) use the paired t-test.
//! Both agree with scipy (`binomtest`, `ttest_rel`; `scripts/make_paired_fixture.py`).

use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, StudentsT};

/// The result of comparing `a` with `b` item by item.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairedTest {
    /// `mean(a) - mean(b)`.
    pub(crate) delta: f64,
    pub p_value: f64,
    pub method: PairedMethod,
    /// Items compared.
    pub n: usize,
}

/// Which test produced a [`PairedTest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairedMethod {
    Mcnemar,
    PairedT,
}

/// Compares paired items (`a[i]` and `b[i]` are the same doc); `None` when fewer than
/// two pairs.
pub fn paired_test(a: &[f64], b: &[f64]) -> Option<PairedTest> {
    let n = a.len().min(b.len());
    if n < 2 {
        return None;
    }
    let (a, b) = (&a[..n], &b[..n]);
    let delta = (a.iter().sum::<f64>() - b.iter().sum::<f64>()) / n as f64;
    let binary = a.iter().chain(b).all(|&x| x == 0.0 || x == 1.0);
    let (p_value, method) = if binary {
        (mcnemar_exact(a, b), PairedMethod::Mcnemar)
    } else {
        (paired_t(a, b), PairedMethod::PairedT)
    };
    Some(PairedTest {
        delta,
        p_value,
        method,
        n,
    })
}

/// Two-sided exact binomial test of the discordant pairs against 1/2.
fn mcnemar_exact(a: &[f64], b: &[f64]) -> f64 {
    let only_b = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x == 0.0 && **y == 1.0)
        .count() as u64;
    let only_a = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x == 1.0 && **y == 0.0)
        .count() as u64;
    let discordant = only_a + only_b;
    if discordant == 0 {
        return 1.0;
    }
    let binomial = Binomial::new(0.5, discordant).expect("valid binomial");
    (2.0 * binomial.cdf(only_a.min(only_b))).min(1.0)
}

/// Two-sided paired t-test of `a - b` against 0.
fn paired_t(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    if var == 0.0 {
        return if mean == 0.0 { 1.0 } else { 0.0 };
    }
    let t = mean / (var / n).sqrt();
    let dist = StudentsT::new(0.0, 1.0, n - 1.0).expect("valid t distribution");
    2.0 * (1.0 - dist.cdf(t.abs()))
}

/// Pearson's correlation of `xs` and `ys` and its two-sided p-value (t test with
/// n - 2 degrees of freedom, as `scipy.stats.pearsonr`); `None` with fewer than three
/// points or a constant variable.
pub(crate) fn pearson(xs: &[f64], ys: &[f64]) -> Option<(f64, f64)> {
    let n = xs.len().min(ys.len());
    if n < 3 {
        return None;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let (mx, my) = (mean(&xs[..n]), mean(&ys[..n]));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys).take(n) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx).powi(2);
        syy += (y - my).powi(2);
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    let r = (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0);
    let df = n as f64 - 2.0;
    let p = if r.abs() == 1.0 {
        0.0
    } else {
        let t = r * (df / (1.0 - r * r)).sqrt();
        let dist = StudentsT::new(0.0, 1.0, df).expect("valid t distribution");
        2.0 * (1.0 - dist.cdf(t.abs()))
    };
    Some((r, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// `tests/fixtures/eval/paired.json` (scipy's values; scripts/make_paired_fixture.py).
    fn fixture() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/eval/paired.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn floats(case: &Value, key: &str) -> Vec<f64> {
        case[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    fn assert_p(got: f64, want: f64) {
        assert!(
            (got - want).abs() < 1e-9 * want.max(1e-3),
            "{got} vs {want}"
        );
    }

    #[test]
    fn p_values_match_scipy() {
        for case in fixture()["cases"].as_array().unwrap() {
            // scipy's test compares a with b; the order does not change a two-sided p.
            let got = paired_test(&floats(case, "a"), &floats(case, "b")).unwrap();
            assert_eq!(serde_json::to_value(got.method).unwrap(), case["method"]);
            assert_p(got.p_value, case["p_value"].as_f64().unwrap());
        }
    }

    #[test]
    fn pearson_matches_scipy() {
        for case in fixture()["pearson"].as_array().unwrap() {
            let (r, p) = pearson(&floats(case, "x"), &floats(case, "y")).unwrap();
            assert!((r - case["r"].as_f64().unwrap()).abs() < 1e-12);
            assert_p(p, case["p_value"].as_f64().unwrap());
        }
        assert!(pearson(&[1.0, 2.0], &[3.0, 4.0]).is_none());
    }

    #[test]
    fn identical_items_are_not_significant() {
        let a = [1.0, 0.0, 1.0, 1.0];
        let t = paired_test(&a, &a).unwrap();
        assert_eq!((t.delta, t.p_value), (0.0, 1.0));
        assert!(paired_test(&[1.0], &[0.0]).is_none());
    }
}

//! AlpacaEval's metrics of a set of pairwise preferences, computed as the alpaca_eval
//! package computes them (`metrics/winrate.py`, `metrics/glm_winrate.py`), so its
//! functions and ours agree on the same annotations (checked by
//! `scripts/check_alpaca_metrics.py` and the fixture it wrote).
//!
//! A preference is on AlpacaEval's scale: 1 = the reference (`output_1`) is better,
//! 2 = the model (`output_2`) is, anything between is a probability (1 + p(model)),
//! 1.5 is a draw; pairs without a verdict are left out.
//! - win rate = 100 * mean(p), standard error = 100 * sample std / sqrt(n);
//!   wins / losses / draws: p > 0.5 / p < 0.5 / preference exactly 1.5;
//! - discrete win rate: the win rate of the rounded preferences (a draw stays 0.5);
//! - length-controlled win rate: a logistic GLM without intercept, fit on the
//!   continuous preferences, of `tanh(Δlen / std(Δlen))` (Δlen = reference characters
//!   minus model characters), `+ instruction difficulty` when given
//!   (`length_controlled_noreg`, else `length_controlled_minimal`), `+` a constant
//!   "not gamed baseline" term; then predicted with Δlen = 0 and averaged. The L1
//!   penalty's strength is picked by 5-fold grouped cross-validation over
//!   `C = logspace(-4, 4, 10)`, with sklearn's fold assignment and scoring, and the
//!   penalised problem is solved to convergence. (liblinear, which alpaca_eval calls,
//!   stops at tolerance 1e-4, up to about 1e-3 points of LC win rate away; refit to
//!   1e-12 it agrees with this solver to 1e-6.)

use serde::{Deserialize, Serialize};

/// One judged pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// AlpacaEval's preference in [1, 2]; `None`: the judge gave no verdict.
    pub preference: Option<f64>,
    /// Characters (Unicode scalar values, as Python's `len`) of the reference's answer.
    pub reference_chars: usize,
    /// Characters of the model's answer.
    pub model_chars: usize,
}

/// AlpacaEval's metrics, under its names; win rates in percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WinRates {
    pub(crate) win_rate: Option<f64>,
    pub(crate) standard_error: Option<f64>,
    pub(crate) n_wins: usize,
    pub(crate) n_wins_base: usize,
    pub(crate) n_draws: usize,
    pub(crate) n_total: usize,
    pub(crate) discrete_win_rate: Option<f64>,
    pub(crate) length_controlled_winrate: Option<f64>,
    pub(crate) lc_standard_error: Option<f64>,
}

/// The GLM's penalty strengths: numpy's `logspace(-4, 4, 10)`, sklearn's default `Cs`.
fn penalty_grid() -> Vec<f64> {
    (0..10)
        .map(|k| 10f64.powf(-4.0 + 8.0 * k as f64 / 9.0))
        .collect()
}

/// Folds of AlpacaEval's cross-validation (sklearn's `GroupKFold(5)`).
const FOLDS: usize = 5;

/// All metrics of `items`. `difficulty` (one per item) selects the
/// `length_controlled_noreg` GLM; `same_generator` (model and reference are the same
/// generator) makes the LC win rate 50 by construction, as AlpacaEval does.
pub fn win_rates(items: &[Judged], difficulty: Option<&[f64]>, same_generator: bool) -> WinRates {
    let prefs: Vec<f64> = items
        .iter()
        .filter_map(|j| j.preference)
        .filter(|x| (1.0..=2.0).contains(x))
        .collect();
    let p: Vec<f64> = prefs.iter().map(|x| x - 1.0).collect();
    let discrete: Vec<f64> = prefs
        .iter()
        .map(|&x| {
            if x == 1.5 {
                0.5
            } else if x > 1.5 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let (lc, lc_se) = match length_controlled(items, difficulty, same_generator) {
        Some(pred) => (
            mean(&pred).map(|m| 100.0 * m),
            sem(&pred).map(|s| 100.0 * s),
        ),
        None => (None, None),
    };
    WinRates {
        win_rate: mean(&p).map(|m| 100.0 * m),
        standard_error: sem(&p).map(|s| 100.0 * s),
        n_wins: p.iter().filter(|&&v| v > 0.5).count(),
        n_wins_base: p.iter().filter(|&&v| v < 0.5).count(),
        n_draws: prefs.iter().filter(|&&x| x == 1.5).count(),
        n_total: p.len(),
        discrete_win_rate: mean(&discrete).map(|m| 100.0 * m),
        length_controlled_winrate: lc,
        lc_standard_error: lc_se,
    }
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Standard error of the mean with the sample standard deviation (pandas' `sem`).
fn sem(xs: &[f64]) -> Option<f64> {
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let m = mean(xs)?;
    let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64;
    Some((var / n as f64).sqrt())
}

/// The GLM's predicted preferences (in [0, 1]) for every item with no length
/// difference, or `None` when the GLM cannot be fit (fewer than 5 verdicts, all
/// lengths differing equally).
fn length_controlled(
    items: &[Judged],
    difficulty: Option<&[f64]>,
    same_generator: bool,
) -> Option<Vec<f64>> {
    if same_generator {
        return Some(vec![
            0.5;
            items.iter().filter(|j| j.preference.is_some()).count()
        ]);
    }
    let delta: Vec<f64> = items
        .iter()
        .map(|j| j.reference_chars as f64 - j.model_chars as f64)
        .collect();
    let std = sem(&delta)? * (delta.len() as f64).sqrt();
    if !std.is_finite() || std <= 0.0 {
        return None;
    }
    let features = |i: usize, delta: f64| -> Vec<f64> {
        let mut x = vec![(delta / std).tanh(), 1.0];
        if let Some(d) = difficulty {
            x.push(d[i]);
        }
        x
    };
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for (i, j) in items.iter().enumerate() {
        if let Some(pref) = j.preference {
            xs.push(features(i, delta[i]));
            ys.push(pref - 1.0);
        }
    }
    if xs.len() < FOLDS {
        return None;
    }
    let c = cross_validated_c(&xs, &ys);
    let w = l1_logistic(&xs, &ys, c);
    Some(
        (0..items.len())
            .map(|i| sigmoid(dot(&w, &features(i, 0.0))))
            .collect(),
    )
}

/// The penalty with the best summed held-out log loss over sklearn's `GroupKFold(5)`
/// folds (each item is a group; groups go round-robin to folds in reverse order).
fn cross_validated_c(xs: &[Vec<f64>], ys: &[f64]) -> f64 {
    let m = xs.len();
    let fold_of = |g: usize| (m - 1 - g) % FOLDS;
    let grid = penalty_grid();
    let mut scores = vec![0.0; grid.len()];
    for fold in 0..FOLDS {
        let (train, test): (Vec<usize>, Vec<usize>) = (0..m).partition(|&g| fold_of(g) != fold);
        let tx: Vec<Vec<f64>> = train.iter().map(|&i| xs[i].clone()).collect();
        let ty: Vec<f64> = train.iter().map(|&i| ys[i]).collect();
        for (k, &c) in grid.iter().enumerate() {
            let w = l1_logistic(&tx, &ty, c);
            let loss: f64 = test
                .iter()
                .map(|&i| {
                    let q = sigmoid(dot(&w, &xs[i])).clamp(1e-15, 1.0 - 1e-15);
                    -(ys[i] * q.ln() + (1.0 - ys[i]) * (1.0 - q).ln())
                })
                .sum::<f64>()
                / test.len() as f64;
            scores[k] -= loss;
        }
    }
    // The first best, as numpy's argmax.
    let best = scores
        .iter()
        .enumerate()
        .fold(0, |b, (k, s)| if *s > scores[b] { k } else { b });
    grid[best]
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(z: f64) -> f64 {
    // `exp(-logaddexp(0, -z))`, stable at both ends.
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// log(1 + e^z), stable.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// liblinear's L1-regularised logistic regression without intercept, with each item
/// counted as a positive of weight `y` and a negative of weight `1 - y` (AlpacaEval's
/// continuous targets): `min |w|_1 + C Σ [y softplus(-z) + (1 - y) softplus(z)]`,
/// `z = w·x`, solved by proximal Newton steps to convergence.
fn l1_logistic(xs: &[Vec<f64>], ys: &[f64], c: f64) -> Vec<f64> {
    let d = xs.first().map_or(0, Vec::len);
    let objective = |w: &[f64]| -> f64 {
        let smooth: f64 = xs
            .iter()
            .zip(ys)
            .map(|(x, y)| {
                let z = dot(w, x);
                y * softplus(-z) + (1.0 - y) * softplus(z)
            })
            .sum();
        c * smooth + w.iter().map(|v| v.abs()).sum::<f64>()
    };
    let mut w = vec![0.0; d];
    for _ in 0..200 {
        let mut g = vec![0.0; d];
        let mut h = vec![vec![0.0; d]; d];
        for (x, y) in xs.iter().zip(ys) {
            let s = sigmoid(dot(&w, x));
            let curvature = s * (1.0 - s);
            for a in 0..d {
                g[a] += c * (s - y) * x[a];
                for b in 0..d {
                    h[a][b] += c * curvature * x[a] * x[b];
                }
            }
        }
        let step = newton_direction(&w, &g, &h);
        // Predicted decrease of the model; the line search asks for a fraction of it.
        let l1 = |v: &[f64]| v.iter().map(|x| x.abs()).sum::<f64>();
        let trial: Vec<f64> = w.iter().zip(&step).map(|(a, b)| a + b).collect();
        let decrease = dot(&g, &step) + l1(&trial) - l1(&w);
        if decrease > -1e-300 || step.iter().all(|s| s.abs() <= 1e-14 * (1.0 + l1(&w))) {
            break;
        }
        let f0 = objective(&w);
        let mut t = 1.0;
        let mut next = trial;
        while objective(&next) > f0 + 1e-4 * t * decrease && t > 1e-10 {
            t *= 0.5;
            next = w.iter().zip(&step).map(|(a, b)| a + t * b).collect();
        }
        let moved = w
            .iter()
            .zip(&next)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        w = next;
        if moved <= 1e-13 * (1.0 + l1(&w)) {
            break;
        }
    }
    w
}

/// The step `s` minimising `g·s + ½ sᵀHs + |w + s|_1`, by cyclic coordinate descent.
fn newton_direction(w: &[f64], g: &[f64], h: &[Vec<f64>]) -> Vec<f64> {
    let d = w.len();
    let mut s = vec![0.0; d];
    for _ in 0..10_000 {
        let mut change: f64 = 0.0;
        for j in 0..d {
            let a = h[j][j].max(1e-12);
            let b = g[j]
                + (0..d)
                    .filter(|&k| k != j)
                    .map(|k| h[j][k] * s[k])
                    .sum::<f64>();
            let u = soft_threshold(w[j] - b / a, 1.0 / a);
            let new = u - w[j];
            change = change.max((new - s[j]).abs());
            s[j] = new;
        }
        if change <= 1e-15 * (1.0 + s.iter().map(|v| v.abs()).fold(0.0, f64::max)) {
            break;
        }
    }
    s
}

fn soft_threshold(v: f64, t: f64) -> f64 {
    v.signum() * (v.abs() - t).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pref: f64, r: usize, m: usize) -> Judged {
        Judged {
            preference: Some(pref),
            reference_chars: r,
            model_chars: m,
        }
    }

    #[test]
    fn win_rate_counts_and_discrete() {
        let items = [
            judged(2.0, 5, 5),
            judged(1.0, 5, 5),
            judged(1.5, 5, 5),
            judged(1.75, 5, 5),
            Judged {
                preference: None,
                reference_chars: 1,
                model_chars: 1,
            },
        ];
        let r = win_rates(&items, None, false);
        assert_eq!(
            (r.n_total, r.n_wins, r.n_wins_base, r.n_draws),
            (4, 2, 1, 1)
        );
        assert!((r.win_rate.unwrap() - 100.0 * 2.25 / 4.0).abs() < 1e-12);
        let p = [1.0, 0.0, 0.5, 0.75];
        let m = 0.5625;
        let sd = (p.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 3.0).sqrt();
        assert!((r.standard_error.unwrap() - 100.0 * sd / 2.0).abs() < 1e-12);
        assert!((r.discrete_win_rate.unwrap() - 100.0 * 2.5 / 4.0).abs() < 1e-12);
        // Fewer than five verdicts: no GLM.
        assert_eq!(r.length_controlled_winrate, None);
    }

    #[test]
    fn same_generator_is_fifty_by_construction() {
        let items: Vec<Judged> = (0..8).map(|i| judged(1.0 + i as f64 / 8.0, i, 3)).collect();
        let r = win_rates(&items, None, true);
        assert_eq!(r.length_controlled_winrate, Some(50.0));
        assert_eq!(r.lc_standard_error, Some(0.0));
    }

    /// The solver's optimum satisfies the L1 optimality conditions: |∂_j smooth| <= 1,
    /// with equality (and the opposite sign) wherever w_j != 0.
    #[test]
    fn l1_logistic_meets_the_optimality_conditions() {
        let xs: Vec<Vec<f64>> = (0..40)
            .map(|i| vec![((i as f64) * 0.37).sin(), 1.0, (i % 7) as f64 / 7.0])
            .collect();
        let ys: Vec<f64> = (0..40).map(|i| ((i * 13) % 10) as f64 / 10.0).collect();
        for c in [1e-3, 0.05, 1.0, 100.0] {
            let w = l1_logistic(&xs, &ys, c);
            for j in 0..3 {
                let grad: f64 = xs
                    .iter()
                    .zip(&ys)
                    .map(|(x, y)| c * (sigmoid(dot(&w, x)) - y) * x[j])
                    .sum();
                if w[j] == 0.0 {
                    assert!(grad.abs() <= 1.0 + 1e-9, "C={c} j={j} {grad}");
                } else {
                    assert!(
                        (grad + w[j].signum()).abs() < 1e-8,
                        "C={c} j={j} {grad} {w:?}"
                    );
                }
            }
        }
        // A tiny C zeroes every weight.
        assert_eq!(l1_logistic(&xs, &ys, 1e-4), vec![0.0; 3]);
    }

    #[test]
    fn logspace_grid() {
        let g = penalty_grid();
        assert_eq!(g.len(), 10);
        assert!((g[0] - 1e-4).abs() < 1e-18 && (g[9] - 1e4).abs() < 1e-9);
        assert!((g[4] - 10f64.powf(-4.0 + 32.0 / 9.0)).abs() < 1e-15);
    }
}

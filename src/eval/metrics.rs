//! Per-document metrics and their aggregation, as lm-evaluation-harness computes them.
//!
//! Multiple choice: `acc` is the argmax of the summed log-likelihoods (ties and NaNs
//! as `numpy.argmax`: the first), `acc_norm` divides each by the choice's length in
//! characters (`len(choice)` of the choice text, without the target delimiter),
//! `acc_bytes` by its UTF-8 length, `acc_mutual_info` subtracts the log-likelihood of
//! the choice after an empty context. A document may have several gold indices
//! (AGIEval): a prediction is right when it is any of them. TruthfulQA `mc1` is `acc`
//! with gold 0; `mc2` is the normalised probability mass of the true answers.
//! Generation: `exact_match` with the Hugging Face `evaluate` options.
//!
//! Aggregation: `mean` with `mean_stderr` (sample std / sqrt n), and lm-eval's
//! bootstrap for `median`, `perplexity` and `nanmean`, which is deterministic in
//! lm-eval (chunk `i` of 1000 resamples uses `random.Random(i).choices`), so it is
//! reproduced exactly here. Sums follow Python's left-to-right `sum` (CPython 3.11;
//! 3.12+ compensates, a last-bit difference) or numpy's pairwise sum where lm-eval
//! uses numpy.
//!
//! ```
//! use ckpt::eval::metrics::{acc, acc_norm, Gold};
//! let lls = [-4.0, -6.0];
//! let choices = ["a", "abcdef"];
//! assert_eq!(acc(&lls, &Gold::Index(1)).unwrap(), 0.0);
//! assert_eq!(acc_norm(&lls, &choices, &Gold::Index(1)).unwrap(), 1.0);
//! ```

use super::pyrandom::PyRandom;
use super::pyregex::PyRegex;
use crate::error::{Error, Result};

/// The gold answer(s) of a multiple-choice document, as indices into its choices.
/// Indices out of range (lm-eval's `-100`) never match a prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gold {
    Index(i64),
    Indices(Vec<i64>),
}

impl Gold {
    /// lm-eval's reading of a rendered `doc_to_target` when the task has choices:
    /// digits are an index, `[i, j]` is a list of indices, any other text is looked up
    /// among the choices (`-100` when absent).
    pub fn from_target(rendered: &str, choices: &[impl AsRef<str>]) -> Gold {
        if !rendered.is_empty() && rendered.bytes().all(|b| b.is_ascii_digit()) {
            return Gold::Index(rendered.parse().unwrap_or(-100));
        }
        if let Some(inner) = rendered.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let parsed: std::result::Result<Vec<i64>, _> = inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::parse)
                .collect();
            if let Ok(indices) = parsed {
                return Gold::Indices(indices);
            }
        }
        let index = choices.iter().position(|c| c.as_ref() == rendered);
        Gold::Index(index.map_or(-100, |i| i as i64))
    }

    fn contains(&self, pred: usize) -> bool {
        match self {
            Gold::Index(g) => *g == pred as i64,
            Gold::Indices(gs) => gs.contains(&(pred as i64)),
        }
    }
}

/// `numpy.argmax`: the first maximum; a NaN counts as the maximum (the first NaN).
pub fn argmax(xs: &[f64]) -> Result<usize> {
    if xs.is_empty() {
        return Err(Error::Invalid("argmax of an empty list of scores".into()));
    }
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x.is_nan() {
            return Ok(i);
        }
        if x > xs[best] {
            best = i;
        }
    }
    Ok(best)
}

fn hit(scores: &[f64], gold: &Gold) -> Result<f64> {
    Ok(if gold.contains(argmax(scores)?) {
        1.0
    } else {
        0.0
    })
}

fn check_len(what: &str, a: usize, b: usize) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what}: {a} log-likelihoods for {b} choices"
        )))
    }
}

/// `acc`: 1 when the highest log-likelihood is a gold choice.
pub fn acc(lls: &[f64], gold: &Gold) -> Result<f64> {
    hit(lls, gold)
}

/// `acc_norm`: as `acc` on log-likelihood / number of characters (Python `len`) of the
/// choice text (without the target delimiter).
pub fn acc_norm(lls: &[f64], choices: &[impl AsRef<str>], gold: &Gold) -> Result<f64> {
    check_len("acc_norm", lls.len(), choices.len())?;
    let normed: Vec<f64> = lls
        .iter()
        .zip(choices)
        .map(|(ll, c)| ll / c.as_ref().chars().count() as f64)
        .collect();
    hit(&normed, gold)
}

/// `acc_bytes`: as `acc` on log-likelihood / UTF-8 length of the choice.
pub fn acc_bytes(lls: &[f64], choices: &[impl AsRef<str>], gold: &Gold) -> Result<f64> {
    check_len("acc_bytes", lls.len(), choices.len())?;
    let normed: Vec<f64> = lls
        .iter()
        .zip(choices)
        .map(|(ll, c)| ll / c.as_ref().len() as f64)
        .collect();
    hit(&normed, gold)
}

/// `acc_mutual_info`: as `acc` on log P(choice | context) - log P(choice | ""), the
/// unconditional requests being `("", target_delimiter + choice)`.
pub fn acc_mutual_info(lls: &[f64], unconditional: &[f64], gold: &Gold) -> Result<f64> {
    check_len("acc_mutual_info", lls.len(), unconditional.len())?;
    let pmi: Vec<f64> = lls.iter().zip(unconditional).map(|(c, u)| c - u).collect();
    hit(&pmi, gold)
}

/// Multiple-choice `exact_match`: the gold continuation is the model's greedy output
/// (any gold, for several).
pub fn choice_exact_match(is_greedy: &[bool], gold: &Gold) -> f64 {
    let greedy = |g: i64| {
        usize::try_from(g)
            .ok()
            .and_then(|g| is_greedy.get(g))
            .copied()
            == Some(true)
    };
    let any = match gold {
        Gold::Index(g) => greedy(*g),
        Gold::Indices(gs) => gs.iter().any(|&g| greedy(g)),
    };
    if any {
        1.0
    } else {
        0.0
    }
}

/// TruthfulQA `mc1`: `acc` with the first choice as the answer.
pub fn truthfulqa_mc1(lls: &[f64]) -> Result<f64> {
    acc(lls, &Gold::Index(0))
}

/// TruthfulQA `mc2` (lm-eval 0.4.13 `process_results_mc2`): `exp` of each
/// log-likelihood, normalised over all choices, summed over the choices labelled 1.
/// No max-subtraction, as lm-eval: very negative log-likelihoods underflow to NaN.
pub fn truthfulqa_mc2(lls: &[f64], labels: &[i64]) -> Result<f64> {
    check_len("truthfulqa_mc2", lls.len(), labels.len())?;
    let probs: Vec<f64> = lls.iter().map(|ll| ll.exp()).collect();
    let total = np_sum(&probs);
    let true_mass: Vec<f64> = probs
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l == 1)
        .map(|(p, _)| p / total)
        .collect();
    Ok(np_sum(&true_mass))
}

/// numpy's pairwise summation of a contiguous float64 array (`np.sum`, `np.mean`).
pub fn np_sum(xs: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = xs.len();
    if n < 8 {
        return xs.iter().fold(0.0, |acc, x| acc + x);
    }
    if n <= BLOCK {
        let mut r = [0.0; 8];
        r.copy_from_slice(&xs[..8]);
        let whole = n - n % 8;
        for chunk in xs[8..whole].chunks_exact(8) {
            for (acc, x) in r.iter_mut().zip(chunk) {
                *acc += x;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for x in &xs[whole..] {
            res += x;
        }
        return res;
    }
    let mut half = n / 2;
    half -= half % 8;
    np_sum(&xs[..half]) + np_sum(&xs[half..])
}

/// Python's `sum(xs)` on floats (left to right).
pub(crate) fn py_sum(xs: &[f64]) -> f64 {
    xs.iter().fold(0.0, |acc, x| acc + x)
}

/// The options of lm-eval's `exact_match` (Hugging Face `evaluate`), as in task YAML.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExactMatchOptions {
    #[serde(default)]
    pub(crate) ignore_case: bool,
    #[serde(default)]
    pub(crate) ignore_punctuation: bool,
    #[serde(default)]
    pub(crate) ignore_numbers: bool,
    #[serde(default)]
    pub(crate) regexes_to_ignore: Vec<String>,
}

/// `exact_match` with compiled options.
#[derive(Debug, Clone)]
pub struct ExactMatch {
    options: ExactMatchOptions,
    regexes: Vec<PyRegex>,
}

impl ExactMatch {
    /// Compiles `regexes_to_ignore` (Python syntax).
    pub fn new(options: ExactMatchOptions) -> Result<Self> {
        let regexes = options
            .regexes_to_ignore
            .iter()
            .map(|r| PyRegex::new(r))
            .collect::<Result<_>>()?;
        Ok(ExactMatch { options, regexes })
    }

    /// The string as compared: each ignored regex removed in order, then lower-cased,
    /// ASCII punctuation and digits removed as asked. numpy's fixed-width string arrays
    /// drop trailing NUL characters, and `np.char.lower` keeps the width, so a
    /// lowercase form longer than the original (`"İ"` -> `"i̇"`) is cut to its length.
    pub fn normalize(&self, s: &str) -> Result<String> {
        let mut s = s.to_string();
        for re in &self.regexes {
            s = re.sub(&s, "")?;
        }
        if self.options.ignore_case {
            let width = s.chars().count();
            s = s.to_lowercase().chars().take(width).collect();
        }
        if self.options.ignore_punctuation {
            s.retain(|c| !c.is_ascii_punctuation());
        }
        if self.options.ignore_numbers {
            s.retain(|c| !c.is_ascii_digit());
        }
        Ok(s.trim_end_matches('\0').to_string())
    }

    /// 1.0 when `prediction` equals `reference` after normalisation.
    pub fn score(&self, prediction: &str, reference: &str) -> Result<f64> {
        let same = self.normalize(prediction)? == self.normalize(reference)?;
        Ok(if same { 1.0 } else { 0.0 })
    }

    /// Several gold targets: 1.0 when any matches (lm-eval's `multiple_target`).
    pub fn score_any(&self, prediction: &str, references: &[impl AsRef<str>]) -> Result<f64> {
        for r in references {
            if self.score(prediction, r.as_ref())? > 0.0 {
                return Ok(1.0);
            }
        }
        Ok(0.0)
    }
}

/// lm-eval's aggregation functions over per-document values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Mean,
    Median,
    /// `exp(-mean(log-likelihoods))`.
    Perplexity,
    /// Mean ignoring NaNs (NaN when all are NaN).
    Nanmean,
}

impl Aggregation {
    /// The aggregate of `items`.
    pub fn apply(self, items: &[f64]) -> f64 {
        match self {
            Aggregation::Mean => mean(items),
            Aggregation::Median => median(items),
            Aggregation::Perplexity => perplexity(items),
            Aggregation::Nanmean => nanmean(items),
        }
    }

    /// lm-eval's standard error: `mean_stderr` for the mean, a bootstrap of
    /// `bootstrap_iters` resamples for the others; `None` ("N/A") for one item or
    /// `bootstrap_iters == 0`.
    pub fn stderr(self, items: &[f64], bootstrap_iters: usize) -> Option<f64> {
        if bootstrap_iters == 0 || items.len() <= 1 {
            return None;
        }
        match self {
            Aggregation::Mean => Some(mean_stderr(items)),
            other => Some(bootstrap_stderr(
                |xs| other.apply(xs),
                items,
                bootstrap_iters,
            )),
        }
    }
}

/// `sum(arr) / len(arr)`.
pub fn mean(xs: &[f64]) -> f64 {
    py_sum(xs) / xs.len() as f64
}

/// `sorted(arr)[len(arr) // 2]`.
pub fn median(xs: &[f64]) -> f64 {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `exp(-mean(lls))`.
pub fn perplexity(lls: &[f64]) -> f64 {
    (-mean(lls)).exp()
}

/// `np.nanmean`, NaN for an empty or all-NaN list.
pub fn nanmean(xs: &[f64]) -> f64 {
    let count = xs.iter().filter(|x| !x.is_nan()).count();
    if count == 0 {
        return f64::NAN;
    }
    let zeroed: Vec<f64> = xs
        .iter()
        .map(|&x| if x.is_nan() { 0.0 } else { x })
        .collect();
    np_sum(&zeroed) / count as f64
}

/// `sum(a) / sum(b)` over (value, weight) pairs.
pub fn weighted_mean(pairs: &[(f64, f64)]) -> f64 {
    let a: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let b: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    py_sum(&a) / py_sum(&b)
}

/// `word_perplexity` / `byte_perplexity`: `exp(-sum(ll) / sum(count))`.
pub fn weighted_perplexity(pairs: &[(f64, f64)]) -> f64 {
    (-weighted_mean(pairs)).exp()
}

/// `bits_per_byte`: `-sum(ll) / sum(bytes) / ln 2`.
pub fn bits_per_byte(pairs: &[(f64, f64)]) -> f64 {
    -weighted_mean(pairs) / std::f64::consts::LN_2
}

/// lm-eval's word count for rolling perplexity: `len(re.split(r"\s+", text))` (leading
/// and trailing whitespace count as an empty word each).
pub fn count_words(text: &str) -> usize {
    // re.split on runs of whitespace: one more piece than there are runs.
    let mut pieces = 1;
    let mut in_space = false;
    for c in text.chars() {
        let space = super::pystr::is_space(c);
        if space && !in_space {
            pieces += 1;
        }
        in_space = space;
    }
    pieces
}

/// The standard error of a mean: sample standard deviation / sqrt(n).
pub fn mean_stderr(xs: &[f64]) -> f64 {
    sample_stddev(xs) / (xs.len() as f64).sqrt()
}

/// Sample standard deviation (n - 1 in the denominator), Python `sum` order.
pub fn sample_stddev(xs: &[f64]) -> f64 {
    let mu = mean(xs);
    let sq: Vec<f64> = xs.iter().map(|x| (x - mu) * (x - mu)).collect();
    (py_sum(&sq) / (xs.len() as f64 - 1.0)).sqrt()
}

/// lm-eval's `bootstrap_stderr`: `iters // chunk` chunks of `chunk = min(1000, iters)`
/// resamples; chunk `i` draws with `random.Random(i).choices(xs, k=len(xs))`; the result
/// is the sample standard deviation of `f` over all resamples. Identical to lm-eval's
/// (both its multiprocessing and single-process paths seed chunk `i` with `i`).
pub fn bootstrap_stderr(f: impl Fn(&[f64]) -> f64, xs: &[f64], iters: usize) -> f64 {
    let chunk = iters.min(1000);
    if chunk == 0 {
        return f64::NAN;
    }
    let mut stats = Vec::with_capacity(iters);
    let mut resample = vec![0.0; xs.len()];
    for i in 0..iters / chunk {
        let mut rng = PyRandom::new(i as i128);
        for _ in 0..chunk {
            for (slot, j) in resample.iter_mut().zip(rng.choices(xs.len(), xs.len())) {
                *slot = xs[j];
            }
            stats.push(f(&resample));
        }
    }
    sample_stddev(&stats)
}

/// A group's score from its subtasks' scores: size-weighted mean (`weight_by_size`)
/// or plain mean.
pub fn aggregate_subtask_metrics(metrics: &[f64], sizes: &[usize], weight_by_size: bool) -> f64 {
    let sizes: Vec<f64> = sizes
        .iter()
        .map(|&s| if weight_by_size { s as f64 } else { 1.0 })
        .collect();
    let weighted: Vec<f64> = metrics.iter().zip(&sizes).map(|(m, s)| m * s).collect();
    py_sum(&weighted) / py_sum(&sizes)
}

/// A size-weighted group's standard error from its subtasks' (pooled variance).
pub fn pooled_sample_stderr(stderrs: &[f64], sizes: &[usize]) -> f64 {
    let terms: Vec<f64> = stderrs
        .iter()
        .zip(sizes)
        .map(|(se, &n)| (n as f64 - 1.0) * se.powi(2) * n as f64)
        .collect();
    let total: usize = sizes.iter().sum();
    let pooled_var = py_sum(&terms) / (total as f64 - sizes.len() as f64);
    (pooled_var / total as f64).sqrt()
}

/// An unweighted group's standard error: sqrt(sum se^2) / k.
pub fn unweighted_mean_stderr(stderrs: &[f64]) -> f64 {
    let sq: Vec<f64> = stderrs.iter().map(|s| s.powi(2)).collect();
    py_sum(&sq).sqrt() / stderrs.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_and_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]).unwrap(), 1);
        assert_eq!(argmax(&[1.0, f64::NAN, 5.0, f64::NAN]).unwrap(), 1);
        assert!(argmax(&[]).is_err());
    }

    #[test]
    fn gold_forms() {
        let choices = ["yes", "no"];
        assert_eq!(Gold::from_target("1", &choices), Gold::Index(1));
        assert_eq!(
            Gold::from_target("[0, 1]", &choices),
            Gold::Indices(vec![0, 1])
        );
        assert_eq!(Gold::from_target("no", &choices), Gold::Index(1));
        assert_eq!(Gold::from_target("maybe", &choices), Gold::Index(-100));
        assert_eq!(acc(&[0.0, -1.0], &Gold::Index(7)).unwrap(), 0.0);
        assert_eq!(
            acc(&[-2.0, -1.0, -3.0], &Gold::Indices(vec![0, 1])).unwrap(),
            1.0
        );
    }

    #[test]
    fn mutual_info_and_mc2() {
        assert_eq!(
            acc_mutual_info(&[-5.0, -6.0], &[-1.0, -4.0], &Gold::Index(1)).unwrap(),
            1.0
        );
        let mc2 = truthfulqa_mc2(&[0.5f64.ln(), 0.25f64.ln(), 0.25f64.ln()], &[1, 0, 1]).unwrap();
        assert!((mc2 - 0.75).abs() < 1e-15);
    }

    #[test]
    fn stderr_and_groups() {
        let xs = [1.0, 0.0, 1.0, 1.0];
        assert!((mean_stderr(&xs) - 0.25).abs() < 1e-15);
        assert_eq!(Aggregation::Mean.stderr(&[1.0], 100), None);
        // Equal sizes: pooled equals unweighted.
        let p = pooled_sample_stderr(&[0.1, 0.2], &[50, 50]);
        let u = unweighted_mean_stderr(&[0.1, 0.2]);
        assert!((p - u).abs() < 1e-3);
        assert_eq!(aggregate_subtask_metrics(&[0.5, 1.0], &[1, 3], true), 0.875);
    }

    #[test]
    fn words_like_re_split() {
        assert_eq!(count_words("a b"), 2);
        assert_eq!(count_words(" a  b "), 4);
        assert_eq!(count_words(""), 1);
    }

    #[test]
    fn exact_match_options() {
        let em = ExactMatch::new(ExactMatchOptions {
            ignore_case: true,
            regexes_to_ignore: vec![
                ",".into(),
                r"\$".into(),
                "(?s).*#### ".into(),
                r"\.$".into(),
            ],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(em.score("$1,234.", "Step one.\n#### 1234").unwrap(), 1.0);
        assert_eq!(em.score("1234.5", "1234").unwrap(), 0.0);
    }
}

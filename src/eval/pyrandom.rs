//! CPython's `random.Random`, bit for bit, and lm-evaluation-harness's few-shot samplers.
//!
//! lm-eval draws few-shot exemplars with `random.Random(1234).sample(docs, n)`, one
//! draw per evaluated document, from one generator per task. To build byte-identical
//! prompts we reproduce the Mersenne Twister (MT19937) with CPython's `init_by_array`
//! seeding, `getrandbits`, `_randbelow`, `random`, `shuffle`, `choices` and `sample`
//! (both of `sample`'s algorithms, chosen by the same set-size rule), then lm-eval's
//! `ContextSampler` / `FirstNSampler` on top.
//!
//! ```
//! use ckpt::eval::pyrandom::PyRandom;
//! let mut rng = PyRandom::new(1234);
//! let shots = rng.sample(100, 5).unwrap(); // == random.Random(1234).sample(range(100), 5)
//! assert_eq!(shots.len(), 5);
//! ```

use crate::error::{Error, Result};

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// CPython's `random.Random`: MT19937 plus the pure-Python methods of `random.py`.
#[derive(Clone)]
pub struct PyRandom {
    state: [u32; N],
    index: usize,
}

impl std::fmt::Debug for PyRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRandom")
            .field("index", &self.index)
            .finish()
    }
}

impl PyRandom {
    /// `random.Random(seed)` for a Python int; negative seeds are seeded by their
    /// absolute value, as CPython does.
    pub fn new(seed: i128) -> Self {
        let mut n = seed.unsigned_abs();
        let mut key = Vec::new();
        while n > 0 {
            key.push(n as u32);
            n >>= 32;
        }
        if key.is_empty() {
            key.push(0);
        }
        Self::from_key(&key)
    }

    /// Seeds from the 32-bit words of a non-negative integer, least significant first
    /// (CPython's `random_seed` for an int of any size).
    pub fn from_key(key: &[u32]) -> Self {
        let mut rng = Self::from_genrand(19_650_218);
        let s = &mut rng.state;
        let (mut i, mut j) = (1usize, 0usize);
        let key_len = key.len().max(1);
        for _ in 0..N.max(key_len) {
            let prev = s[i - 1] ^ (s[i - 1] >> 30);
            let k = key.get(j).copied().unwrap_or(0);
            s[i] = (s[i] ^ prev.wrapping_mul(1_664_525))
                .wrapping_add(k)
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                s[0] = s[N - 1];
                i = 1;
            }
            if j >= key_len {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = s[i - 1] ^ (s[i - 1] >> 30);
            s[i] = (s[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                s[0] = s[N - 1];
                i = 1;
            }
        }
        s[0] = 0x8000_0000;
        rng
    }

    fn from_genrand(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1] ^ (state[i - 1] >> 30);
            state[i] = 1_812_433_253u32.wrapping_mul(prev).wrapping_add(i as u32);
        }
        PyRandom { state, index: N }
    }

    fn twist(&mut self) {
        let s = &mut self.state;
        for k in 0..N {
            let y = (s[k] & UPPER_MASK) | (s[(k + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            s[k] = s[(k + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// The next raw 32-bit output (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random()`: a float in [0, 1) with 53 random bits.
    pub fn random(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `getrandbits(k)` for `k <= 64`.
    pub fn getrandbits(&mut self, k: u32) -> u64 {
        assert!(k <= 64, "getrandbits: k = {k} > 64, use getrandbits_words");
        let words = self.getrandbits_words(k);
        words
            .iter()
            .enumerate()
            .fold(0u64, |acc, (i, &w)| acc | (u64::from(w) << (32 * i)))
    }

    /// `getrandbits(k)` for any `k`, as 32-bit words, least significant first.
    pub fn getrandbits_words(&mut self, k: u32) -> Vec<u32> {
        if k == 0 {
            return Vec::new();
        }
        let n_words = (k - 1) / 32 + 1;
        let mut left = k;
        (0..n_words)
            .map(|_| {
                let r = self.next_u32();
                let w = if left < 32 { r >> (32 - left) } else { r };
                left = left.saturating_sub(32);
                w
            })
            .collect()
    }

    /// `_randbelow(n)` (the getrandbits rejection sampler); `n` must be positive.
    pub fn randbelow(&mut self, n: u64) -> u64 {
        assert!(n > 0, "randbelow(0)");
        let k = 64 - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// `shuffle(x)` in place.
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.randbelow(i as u64 + 1) as usize;
            x.swap(i, j);
        }
    }

    /// `choices(range(n), k=k)` (no weights): indices drawn with replacement.
    pub fn choices(&mut self, n: usize, k: usize) -> Vec<usize> {
        let nf = n as f64;
        (0..k)
            .map(|_| (self.random() * nf).floor() as usize)
            .collect()
    }

    /// `sample(range(n), k)`: `k` distinct indices of a population of `n`, in
    /// selection order. CPython keeps a pool list when `n` is small relative to `k`
    /// and a set of taken indices otherwise; the two consume the generator
    /// differently, so the same rule picks between them here.
    pub fn sample(&mut self, n: usize, k: usize) -> Result<Vec<usize>> {
        if k > n {
            return Err(Error::Invalid(format!(
                "sample of {k} from a population of {n}: sample larger than population"
            )));
        }
        let mut setsize = 21usize;
        if k > 5 {
            let exponent = ((k * 3) as f64).ln() / 4f64.ln();
            setsize += 4usize.pow(exponent.ceil() as u32);
        }
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            Ok((0..k)
                .map(|i| {
                    let j = self.randbelow((n - i) as u64) as usize;
                    let picked = pool[j];
                    pool[j] = pool[n - i - 1];
                    picked
                })
                .collect())
        } else {
            let mut selected = std::collections::HashSet::with_capacity(k);
            Ok((0..k)
                .map(|_| loop {
                    let j = self.randbelow(n as u64) as usize;
                    if selected.insert(j) {
                        break j;
                    }
                })
                .collect())
        }
    }
}

/// lm-eval's sampler names: `default` (seeded random) and `first_n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// `ContextSampler`: `Random(seed).sample(...)`, advanced document by document.
    #[default]
    #[serde(alias = "default")]
    Random,
    /// `FirstNSampler`: the first `n` few-shot documents, in order.
    FirstN,
}

/// lm-eval's few-shot selection for one task, as indices into the few-shot pool.
///
/// Build one per task, right before building that task's prompts (lm-eval reseeds
/// each task's sampler with `fewshot_random_seed`, 1234 by default), then call
/// [`FewshotSampler::select`] once per evaluated document, in evaluation order
/// (document 0, 1, 2, ... of the evaluation split, only the documents that are
/// evaluated, i.e. the first `--limit`), and never for a task with `num_fewshot = 0`.
/// Every call advances the one generator.
#[derive(Debug, Clone)]
pub struct FewshotSampler {
    rng: PyRandom,
    pool_len: usize,
    kind: SamplerKind,
    passes_eval_doc: bool,
}

impl FewshotSampler {
    /// `seed`: lm-eval's `fewshot_random_seed` (1234). `pool_len`: the number of
    /// few-shot documents (after preprocessing). `same_split_as_eval`: lm-eval's
    /// `fewshot_split == test_split`, compared as written in the task config, where two
    /// absent splits are equal (so HellaSwag, PIQA, WinoGrande, TruthfulQA, DROP, whose
    /// `test_split` and `fewshot_split` are both unset, count as "same" although their
    /// shots come from the training split). When set, lm-eval hands the evaluated
    /// document to the sampler, which then draws `n + 1` documents and drops those equal
    /// to it.
    pub fn new(seed: i128, pool_len: usize, kind: SamplerKind, same_split_as_eval: bool) -> Self {
        FewshotSampler {
            rng: PyRandom::new(seed),
            pool_len,
            kind,
            passes_eval_doc: same_split_as_eval,
        }
    }

    /// The few-shot pool indices for the next evaluated document, in prompt order.
    /// `eval_doc_index`: the pool index of the evaluated document itself when the pool
    /// contains it (fewshot split = evaluation split); ignored unless
    /// `same_split_as_eval`. lm-eval compares documents by content, so if the pool may
    /// hold exact duplicates of the evaluated document use [`Self::select_with`].
    pub fn select(&mut self, n: usize, eval_doc_index: Option<usize>) -> Result<Vec<usize>> {
        self.select_with(n, |i| Some(i) == eval_doc_index)
    }

    /// As [`Self::select`], with `is_eval_doc(i)` telling whether pool document `i` is
    /// equal (Python `==` on the processed document) to the evaluated document.
    pub fn select_with(
        &mut self,
        n: usize,
        is_eval_doc: impl Fn(usize) -> bool,
    ) -> Result<Vec<usize>> {
        match self.kind {
            SamplerKind::FirstN => self.first_n(n, is_eval_doc),
            SamplerKind::Random => self.random(n, is_eval_doc),
        }
    }

    fn first_n(&self, n: usize, is_eval_doc: impl Fn(usize) -> bool) -> Result<Vec<usize>> {
        let pool: Vec<usize> = (0..self.pool_len)
            .filter(|&i| !(self.passes_eval_doc && is_eval_doc(i)))
            .collect();
        if n > pool.len() {
            return Err(Error::bad_value(
                "num_fewshot",
                format!(
                    "{n} few-shot examples requested but only {} are available",
                    pool.len()
                ),
            ));
        }
        Ok(pool[..n].to_vec())
    }

    fn random(&mut self, n: usize, is_eval_doc: impl Fn(usize) -> bool) -> Result<Vec<usize>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if self.pool_len == 0 {
            return Err(Error::bad_value(
                "num_fewshot",
                "no few-shot documents to sample from",
            ));
        }
        if !self.passes_eval_doc {
            return self.rng.sample(self.pool_len, n);
        }
        let drawn = self.rng.sample(self.pool_len, n + 1)?;
        let kept: Vec<usize> = drawn
            .into_iter()
            .filter(|&i| !is_eval_doc(i))
            .take(n)
            .collect();
        if kept.len() == n {
            return Ok(kept);
        }
        // More than one copy of the evaluated document was drawn: lm-eval resamples
        // from the pool without any copy of it.
        let pool: Vec<usize> = (0..self.pool_len).filter(|&i| !is_eval_doc(i)).collect();
        let picked = self.rng.sample(pool.len(), n)?;
        Ok(picked.into_iter().map(|j| pool[j]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_mt19937_first_outputs() {
        // init_by_array({0x123, 0x234, 0x345, 0x456}) from the MT19937 reference output.
        let mut rng = PyRandom::from_key(&[0x123, 0x234, 0x345, 0x456]);
        let first: Vec<u32> = (0..5).map(|_| rng.next_u32()).collect();
        assert_eq!(
            first,
            [1067595299, 955945823, 477289528, 4107218783, 4228976476]
        );
    }

    #[test]
    fn negative_seed_equals_positive() {
        let (mut a, mut b) = (PyRandom::new(-77), PyRandom::new(77));
        assert_eq!(a.random(), b.random());
    }

    #[test]
    fn sample_is_distinct_and_errors_when_too_large() {
        let mut rng = PyRandom::new(1);
        for (n, k) in [(10, 10), (1000, 40), (30, 6)] {
            let mut s = rng.sample(n, k).unwrap();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), k);
            assert!(s.iter().all(|&i| i < n));
        }
        assert!(rng.sample(3, 4).is_err());
    }

    #[test]
    fn first_n_drops_the_eval_doc_only_when_splits_match() {
        let mut same = FewshotSampler::new(1234, 5, SamplerKind::FirstN, true);
        assert_eq!(same.select(3, Some(1)).unwrap(), [0, 2, 3]);
        let mut other = FewshotSampler::new(1234, 5, SamplerKind::FirstN, false);
        assert_eq!(other.select(3, Some(1)).unwrap(), [0, 1, 2]);
        assert!(other.select(6, None).is_err());
    }

    #[test]
    fn random_zero_shots_does_not_advance() {
        let mut a = FewshotSampler::new(1234, 50, SamplerKind::Random, false);
        let mut b = a.clone();
        assert!(a.select(0, None).unwrap().is_empty());
        assert_eq!(a.select(3, None).unwrap(), b.select(3, None).unwrap());
    }
}

//! How the next token is chosen, as OpenAI's sampling fields say: `temperature` (0:
//! greedy), `top_k`, `top_p`, and a `seed` that makes a request reproducible.
//!
//! Log-probabilities reported with a token are those of the distribution it was drawn
//! from after temperature (and before `top_k`/`top_p` cut its tail), as vLLM reports
//! them; with temperature 0 they are the model's own.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The sampling fields of a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sampling {
    /// 0: the most likely token (ties: the lowest id).
    pub(crate) temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches this.
    pub(crate) top_p: f32,
    /// Keep this many most likely tokens (`None`: all).
    pub(crate) top_k: Option<usize>,
    /// Same seed, same request: same tokens. `None`: a fresh draw each time.
    pub(crate) seed: Option<u64>,
}

impl Sampling {
    /// Greedy decoding.
    #[cfg(test)]
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        top_k: None,
        seed: None,
    };

    pub(crate) fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
    }
}

/// A chosen token: its id, its log-probability and the `k` most likely tokens at its
/// position (most likely first), all under the tempered distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    pub(crate) id: u32,
    pub(crate) logprob: f32,
    pub(crate) top: Vec<(u32, f32)>,
}

/// Draws tokens for one choice of one request.
pub(crate) struct Sampler {
    sampling: Sampling,
    rng: StdRng,
}

impl Sampler {
    /// The sampler of choice `index` (the `n` choices of a seeded request differ, and
    /// each is reproducible).
    pub fn new(sampling: Sampling, index: u64) -> Self {
        let rng = match sampling.seed {
            Some(seed) => {
                StdRng::seed_from_u64(seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            }
            None => StdRng::from_os_rng(),
        };
        Self { sampling, rng }
    }

    /// The next token from a row of logits, with the `k` most likely alternatives.
    pub(crate) fn choose(&mut self, logits: &[f32], k: usize) -> Chosen {
        let logprobs = log_softmax(logits, self.sampling.temperature);
        let id = if self.sampling.is_greedy() {
            argmax(logits)
        } else {
            self.draw(&logprobs)
        };
        Chosen {
            id,
            logprob: logprobs[id as usize] as f32,
            top: top_k(&logprobs, k),
        }
    }

    /// A draw from the tempered distribution cut to `top_k` and `top_p`.
    fn draw(&mut self, logprobs: &[f64]) -> u32 {
        let mut order: Vec<u32> = (0..logprobs.len() as u32).collect();
        order.sort_by(|&a, &b| {
            logprobs[b as usize]
                .total_cmp(&logprobs[a as usize])
                .then(a.cmp(&b))
        });
        if let Some(k) = self.sampling.top_k.filter(|&k| k > 0) {
            order.truncate(k);
        }
        let mut kept = Vec::with_capacity(order.len());
        let mut mass = 0.0;
        for id in order {
            let p = logprobs[id as usize].exp();
            kept.push((id, p));
            mass += p;
            if mass >= self.sampling.top_p as f64 {
                break;
            }
        }
        let mut u = self.rng.random::<f64>() * mass;
        for &(id, p) in &kept {
            if u < p {
                return id;
            }
            u -= p;
        }
        kept.last().map(|&(id, _)| id).unwrap_or(0)
    }
}

/// The most likely id (ties: the lowest, as an argmax picks it).
pub(crate) fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// `log softmax(logits / temperature)` in f64; temperature 0 means 1 (the model's own).
pub(crate) fn log_softmax(logits: &[f32], temperature: f32) -> Vec<f64> {
    let t = if temperature > 0.0 {
        temperature as f64
    } else {
        1.0
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64 / t;
    let log_z = max
        + logits
            .iter()
            .map(|&x| (x as f64 / t - max).exp())
            .sum::<f64>()
            .ln();
    logits.iter().map(|&x| x as f64 / t - log_z).collect()
}

/// The `k` most likely ids with their log-probabilities, most likely first.
pub(crate) fn top_k(logprobs: &[f64], k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return vec![];
    }
    let mut order: Vec<u32> = (0..logprobs.len() as u32).collect();
    let k = k.min(order.len());
    let by = |a: &u32, b: &u32| {
        logprobs[*b as usize]
            .total_cmp(&logprobs[*a as usize])
            .then(a.cmp(b))
    };
    order.select_nth_unstable_by(k - 1, by);
    order.truncate(k);
    order.sort_by(by);
    order
        .into_iter()
        .map(|id| (id, logprobs[id as usize] as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGITS: [f32; 5] = [2.0, 1.0, 0.5, -1.0, 2.0];

    fn sampling(temperature: f32, top_p: f32, top_k: Option<usize>, seed: u64) -> Sampling {
        Sampling {
            temperature,
            top_p,
            top_k,
            seed: Some(seed),
        }
    }

    #[test]
    fn temperature_zero_is_the_argmax_with_the_models_logprobs() {
        let mut s = Sampler::new(Sampling::GREEDY, 0);
        let c = s.choose(&LOGITS, 2);
        assert_eq!(c.id, 0, "ties go to the lower id");
        let z: f64 = LOGITS.iter().map(|&x| (x as f64).exp()).sum();
        assert!((c.logprob as f64 - (2.0 - z.ln())).abs() < 1e-6);
        assert_eq!(c.top.iter().map(|t| t.0).collect::<Vec<_>>(), [0, 4]);
    }

    #[test]
    fn draws_follow_the_tempered_distribution() {
        // Frequencies of 20,000 draws against softmax(logits / 0.7).
        let t = 0.7;
        let want: Vec<f64> = log_softmax(&LOGITS, t).iter().map(|l| l.exp()).collect();
        let mut s = Sampler::new(sampling(t, 1.0, None, 7), 0);
        let mut counts = [0usize; 5];
        let n = 20_000;
        for _ in 0..n {
            counts[s.choose(&LOGITS, 0).id as usize] += 1;
        }
        for (c, p) in counts.iter().zip(&want) {
            let f = *c as f64 / n as f64;
            // Four standard errors of a binomial frequency.
            assert!(
                (f - p).abs() < 4.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-3,
                "{counts:?} vs {want:?}"
            );
        }
        // The reported logprob is the tempered distribution's.
        let c = Sampler::new(sampling(t, 1.0, None, 1), 0).choose(&LOGITS, 0);
        assert!((c.logprob as f64 - want[c.id as usize].ln()).abs() < 1e-6);
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let mut s = Sampler::new(sampling(1.0, 1.0, Some(2), 3), 0);
        for _ in 0..500 {
            assert!([0, 4].contains(&s.choose(&LOGITS, 0).id));
        }
        // The two most likely hold ~0.69 of the mass: top_p 0.6 keeps exactly them.
        let mut s = Sampler::new(sampling(1.0, 0.6, None, 3), 0);
        for _ in 0..500 {
            assert!([0, 4].contains(&s.choose(&LOGITS, 0).id));
        }
    }

    #[test]
    fn a_seed_repeats_and_choices_differ() {
        let draws = |seed, index| -> Vec<u32> {
            let mut s = Sampler::new(sampling(1.5, 1.0, None, seed), index);
            (0..50).map(|_| s.choose(&LOGITS, 0).id).collect()
        };
        assert_eq!(draws(42, 0), draws(42, 0));
        assert_ne!(draws(42, 0), draws(42, 1));
        assert_ne!(draws(42, 0), draws(43, 0));
    }
}

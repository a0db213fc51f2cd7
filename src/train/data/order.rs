//! The order in which an epoch visits its items: a seeded pseudo-random permutation,
//! fresh for every (seed, epoch).
//!
//! The permutation is computed, not stored: a small Feistel network over the next
//! power-of-four domain, walked until it lands inside `0..n` (cycle walking). Any index
//! is mapped in O(1) time and memory, so a corpus of a hundred million sequences needs
//! no permutation table, and resuming mid-epoch is just "continue at index i". The
//! mixing function is fixed here (not a library RNG whose stream may change between
//! versions), so the order is the same on every machine and every build.

/// The visiting order of one epoch over `n` items.
#[derive(Debug, Clone)]
pub(crate) struct EpochOrder {
    n: u64,
    /// Bits in each half of the Feistel block; the domain is `0..4^half_bits`.
    half_bits: u32,
    keys: Option<[u64; ROUNDS]>,
}

/// Luby-Rackoff: four rounds give a pseudo-random permutation; two more are cheap margin.
const ROUNDS: usize = 6;

impl EpochOrder {
    /// The order of epoch `epoch`: shuffled by `(seed, epoch)`, or `0..n` unshuffled.
    pub(crate) fn new(n: u64, shuffle: bool, seed: u64, epoch: u64) -> Self {
        let mut half_bits = 1;
        while (half_bits < 32) && (1u128 << (2 * half_bits)) < n as u128 {
            half_bits += 1;
        }
        let keys = shuffle.then(|| {
            let mut state = splitmix64(seed ^ splitmix64(epoch.wrapping_add(0x5eed)));
            std::array::from_fn(|_| {
                state = splitmix64(state);
                state
            })
        });
        Self { n, half_bits, keys }
    }

    /// The item visited at step `i` (`i < n`) of the epoch.
    pub(crate) fn get(&self, i: u64) -> u64 {
        debug_assert!(i < self.n);
        let Some(keys) = &self.keys else {
            return i;
        };
        // Cycle walking terminates: `i` itself lies on the cycle and is below `n`.
        let mut x = self.feistel(i, keys);
        while x >= self.n {
            x = self.feistel(x, keys);
        }
        x
    }

    fn feistel(&self, x: u64, keys: &[u64; ROUNDS]) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = (x >> self.half_bits, x & mask);
        for key in keys {
            let mixed = splitmix64(right ^ key) & mask;
            (left, right) = (right, left ^ mixed);
        }
        (left << self.half_bits) | right
    }
}

/// SplitMix64's finaliser: a fast, well-mixing 64-bit hash.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(n: u64, shuffle: bool, seed: u64, epoch: u64) -> Vec<u64> {
        let o = EpochOrder::new(n, shuffle, seed, epoch);
        (0..n).map(|i| o.get(i)).collect()
    }

    #[test]
    fn every_item_once_for_any_size() {
        for n in [1, 2, 3, 4, 5, 17, 64, 100, 1000, 4097] {
            let mut seen = order(n, true, 7, 3);
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
    }

    #[test]
    fn deterministic_and_different_per_epoch_and_seed() {
        let a = order(1000, true, 1, 0);
        assert_eq!(a, order(1000, true, 1, 0));
        assert_ne!(a, order(1000, true, 1, 1));
        assert_ne!(a, order(1000, true, 2, 0));
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
        assert_eq!(order(50, false, 1, 4), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn looks_shuffled() {
        // Items from the first tenth should be spread over the whole epoch, not bunched.
        let a = order(10_000, true, 42, 0);
        let early: Vec<usize> = (0..10_000).filter(|&i| a[i] < 1000).collect();
        let in_first_half = early.iter().filter(|&&i| i < 5000).count();
        assert!((400..600).contains(&in_first_half), "{in_first_half}");
        // Consecutive steps rarely visit consecutive items.
        let adjacent = a.windows(2).filter(|w| w[0].abs_diff(w[1]) == 1).count();
        assert!(adjacent < 20, "{adjacent}");
    }
}

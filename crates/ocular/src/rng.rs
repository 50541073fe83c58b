//! The seeded PRNG behind sampling, the scene dataset and weight initialisation: xoshiro256**
//! (Blackman & Vigna, "Scrambled linear pseudorandom number generators", 2021) seeded through
//! splitmix64. Each user owns its own stream, so a dataset seed names the same scenes whatever
//! sampling code does. Only integer arithmetic and exactly representable float conversions are
//! used, so every platform draws the same values.

/// xoshiro256** generator with the small helpers scene generation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

/// One splitmix64 step; spreads a small (even zero) seed over xoshiro's 256 bits of state.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose state is four successive splitmix64 outputs of `seed`.
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut sm = seed;
        Self { s: [splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm)] }
    }

    /// The next 64 random bits (the reference `next()`).
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) from the top 53 bits, so each value is exact and 1.0 never occurs.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` without modulo bias (Lemire's multiply-and-reject).
    ///
    /// # Panics
    /// If `n` is zero: there is nothing to choose from.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0): empty range");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform integer in `lo..=hi`.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo <= hi, "Rng::int: empty range {lo}..={hi}");
        lo + self.below((hi - lo) as u64 + 1) as usize
    }

    /// Uniform float in `[lo, hi)`, computed in f64 and rounded once to f32 (which can, rarely,
    /// round up to `hi`).
    pub fn float(&mut self, lo: f32, hi: f32) -> f32 {
        (lo as f64 + (hi as f64 - lo as f64) * self.next_f64()) as f32
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// A uniformly chosen element; panics on an empty slice, which would be a generator bug.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Index drawn with the given integer weights.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| w as u64).sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < w as u64 {
                return i;
            }
            x -= w as u64;
        }
        unreachable!("x < total")
    }

    /// Fisher-Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_streams() {
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        let mut rng = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
        // Pins seed -> stream: changing it would silently change every dataset.
        assert_eq!(Rng::seed_from_u64(42).next_u64(), 1546998764402558742);
    }

    #[test]
    fn helpers_stay_in_range_and_cover_it() {
        let mut rng = Rng::seed_from_u64(3);
        let mut seen = [0usize; 5];
        for _ in 0..5000 {
            let k = rng.int(2, 6);
            seen[k - 2] += 1;
            let f = rng.float(-1.5, 2.5);
            assert!((-1.5..=2.5).contains(&f));
        }
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
        let mut counts = [0usize; 3];
        for _ in 0..6000 {
            counts[rng.weighted(&[1, 0, 2])] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((1800..2200).contains(&counts[0]), "{counts:?}");
        let mut v: Vec<u32> = (0..10).collect();
        rng.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }

    // Reference values carried over from the sampler's copy of this generator.

    #[test]
    fn splitmix64_matches_reference() {
        // First two outputs of the reference C code seeded with 0.
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut s), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn xoshiro_matches_reference() {
        // Reference xoshiro256** outputs for the raw state [1, 2, 3, 4].
        let mut rng = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..6).map(|_| rng.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240, 1216172134540287360, 607988272756665600]);
    }

    #[test]
    fn seeding_is_fixed() {
        // Pins the seed -> stream mapping: changing it would change every seeded output.
        let mut rng = Rng::seed_from_u64(42);
        assert_eq!(rng.next_u64(), 1546998764402558742);
        assert_eq!(rng.next_u64(), 6990951692964543102);
        assert_eq!(rng.next_u64(), 12544586762248559009);
    }

    #[test]
    fn uniform_is_in_range_and_roughly_flat() {
        let mut rng = Rng::seed_from_u64(7);
        let mut buckets = [0usize; 10];
        for _ in 0..100_000 {
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u));
            buckets[(u * 10.0) as usize] += 1;
        }
        for b in buckets {
            assert!((9_500..10_500).contains(&b), "bucket count {b}");
        }
    }
}

//! The project's one generator for non-cryptographic randomness: synthetic
//! outputs, simulated workloads, load-test arrivals, sampling in the
//! in-process chat model, and the replica picker.
//!
//! The algorithm is SplitMix64 (Steele, Lea and Flood, "Fast splittable
//! pseudorandom number generators", 2014) and is part of the contract:
//! seeded runs must give the same numbers on every platform, Rust version
//! and release, so a test pins its outputs. It is not for secrets.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64's increment, the odd integer nearest 2^64 / φ.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijection on 64 bits that mixes every
/// input bit into every output bit. Also a good stateless hash of one word,
/// for deriving seeds (`mix(seed ^ n)` for the n-th sub-stream).
pub const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed that differs between processes (and between calls), drawn from
/// the standard library's per-process hash keys: no system call per use.
pub fn process_seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    std::collections::hash_map::RandomState::new().hash_one(CALLS.fetch_add(1, Ordering::Relaxed))
}

/// SplitMix64: the whole sequence is determined by the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is determined by `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator seeded differently in every process.
    pub fn from_process() -> Self {
        SplitMix64::new(process_seed())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// Uniform in [0, 1), with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform in [0, n) (0 when `n` is 0), by multiply-shift: no division.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Exponentially distributed with this mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.next_f64()).ln()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// An independent generator for a sub-stream, derived from this one's
    /// next value and `salt`.
    pub fn fork(&mut self, salt: u64) -> SplitMix64 {
        SplitMix64::new(mix(self.next_u64() ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93)))
    }
}

/// SplitMix64 shared between threads without a lock: each draw advances
/// one atomic counter, so concurrent callers get distinct draws of the
/// same sequence.
#[derive(Debug)]
pub struct SharedSplitMix64 {
    state: AtomicU64,
}

impl SharedSplitMix64 {
    /// A shared generator whose sequence is determined by `seed`.
    pub const fn new(seed: u64) -> Self {
        SharedSplitMix64 { state: AtomicU64::new(seed) }
    }

    /// A shared generator seeded differently in every process.
    pub fn from_process() -> Self {
        SharedSplitMix64::new(process_seed())
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        mix(self.state.fetch_add(GAMMA, Ordering::Relaxed).wrapping_add(GAMMA))
    }

    /// Uniform in [0, 1), with 53 random bits.
    pub fn next_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n) (0 when `n` is 0), by multiply-shift.
    pub fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference outputs of SplitMix64 for seed 1234567 (as published
    /// with the algorithm's C and Java implementations): if these change,
    /// every seeded run in the project changes.
    #[test]
    fn outputs_are_splitmix64s() {
        let mut rng = SplitMix64::new(1_234_567);
        let first: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
        let shared = SharedSplitMix64::new(1_234_567);
        assert_eq!(shared.next_u64(), first[0]);
        assert_eq!(shared.next_u64(), first[1]);
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut unit = SplitMix64::new(1_234_567);
        assert_eq!(unit.next_f64(), (first[0] >> 11) as f64 / 9_007_199_254_740_992.0);
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let n = 200_000;
        let mut r = SplitMix64::new(1);
        let unit: f64 = (0..n).map(|_| r.next_f64()).sum::<f64>() / n as f64;
        let exp: f64 = (0..n).map(|_| r.exponential(2.0)).sum::<f64>() / n as f64;
        let normal: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = normal.iter().sum::<f64>() / n as f64;
        let var = normal.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((unit - 0.5).abs() < 0.005, "{unit}");
        assert!((exp - 2.0).abs() < 0.03, "{exp}");
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "{mean} {var}");
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.next_f64())));
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            counts[r.below(7) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn forks_and_processes_differ() {
        let mut a = SplitMix64::new(7);
        let (mut x, mut y) = (a.fork(1), a.fork(1));
        assert_ne!(x.next_u64(), y.next_u64());
        assert_eq!(SplitMix64::new(7).fork(3), SplitMix64::new(7).fork(3));
        assert_ne!(process_seed(), process_seed());
    }
}

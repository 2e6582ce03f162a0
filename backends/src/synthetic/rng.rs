//! A deterministic hash for synthetic outputs, which must not change
//! between runs, platforms or Rust versions (their random draws come from
//! [`infergate_rng::SplitMix64`], whose outputs are pinned the same way).

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

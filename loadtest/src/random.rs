//! The load tester's random draws: arrival gaps and scenario lengths, from infergate's one
//! generator (`infergate_rng::SplitMix64`).
//!
//! A draw in [0, 1) here is the generator's 64-bit output over 2^64, not
//! `SplitMix64::next_f64` (53 bits): the load tester drew that way before the shared crate
//! existed, and keeping it keeps every seeded schedule and scenario drawing the values it
//! always has. The normal draw is Box–Muller on those uniforms, like `SplitMix64::normal`.

use infergate_rng::SplitMix64;

/// A uniform draw in [0, 1).
pub(crate) fn unit(rng: &mut SplitMix64) -> f64 {
    rng.next_u64() as f64 / (u64::MAX as f64 + 1.0)
}

/// A standard normal draw (Box–Muller).
pub(crate) fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - unit(rng);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Gamma(k, 1) draw (Marsaglia–Tsang; k < 1 boosted by U^(1/k)).
pub(crate) fn gamma(k: f64, rng: &mut SplitMix64) -> f64 {
    if k < 1.0 {
        let u = 1.0 - unit(rng);
        return gamma(k + 1.0, rng) * u.powf(1.0 / k);
    }
    let d = k - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = 1.0 - unit(rng);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

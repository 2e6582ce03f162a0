//! Per-model latency model `t = a + b·cost + c·items`, seeded from config and
//! learned online from measured batches.
//!
//! Fitted by exponentially weighted least squares with a ridge pull towards
//! the seed, so a handful of measurements adjust it without letting one
//! outlier throw it away, and old measurements fade (the model adapts when a
//! backend slows down). Features are scaled (cost by the first batch's cost,
//! items by the batch limit) so one ridge weight suits all three terms.

use std::time::Duration;

/// The seed: what config says a batch costs before anything is measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySeed {
    /// Fixed time per batch.
    pub base: Duration,
    /// Time per unit of cost.
    pub per_cost: Duration,
    /// Time per job in the batch.
    pub per_item: Duration,
}

impl Default for LatencySeed {
    fn default() -> Self {
        LatencySeed { base: Duration::from_millis(5), per_cost: Duration::ZERO, per_item: Duration::ZERO }
    }
}

/// Weight of each past measurement relative to the next one.
const DECAY: f64 = 0.98;
/// Strength of the pull towards the seed, in pseudo-measurements.
const RIDGE: f64 = 0.05;
/// Once the model has this many measurements, one measurement counts as at
/// most `STEP` times (or 1/`STEP` of) what the model predicted: a single
/// huge or stalled batch moves it a bounded step, while a real change of
/// speed still comes through over a few batches.
const SETTLED: u64 = 8;
const STEP: f64 = 4.0;
/// No prediction is longer than a year (an `Instant` plus it never overflows).
const LONGEST: f64 = 365.0 * 86_400.0;

/// An online linear latency model.
#[derive(Debug, Clone)]
pub struct LatencyModel {
    seed: [f64; 3],
    theta: [f64; 3],
    /// Σ w·x·xᵀ and Σ w·x·y over scaled features.
    xx: [[f64; 3]; 3],
    xy: [f64; 3],
    cost_scale: Option<f64>,
    item_scale: f64,
    samples: u64,
    /// The largest batch cost measured: beyond it the fit extrapolates.
    largest: f64,
    /// Moving average of |predicted − measured| / measured.
    error: f64,
}

impl LatencyModel {
    /// A model that predicts the seed until batches are measured; `max_items`
    /// is the batch size limit (it scales the per-item term).
    pub fn new(seed: LatencySeed, max_items: usize) -> Self {
        let item_scale = max_items.max(1) as f64;
        let raw = [seed.base.as_secs_f64(), seed.per_cost.as_secs_f64(), seed.per_item.as_secs_f64()];
        LatencyModel {
            seed: raw,
            theta: raw,
            xx: [[0.0; 3]; 3],
            xy: [0.0; 3],
            cost_scale: None,
            item_scale,
            samples: 0,
            largest: 0.0,
            error: 0.0,
        }
    }

    /// Predicted time of a batch with this total cost and number of jobs.
    ///
    /// Beyond the largest batch cost measured, time grows at least in
    /// proportion to cost from what that batch is predicted to take: the fit
    /// cannot tell a fixed cost from a per-cost one when the batches it saw
    /// were alike (one small request splits its time between them, and a
    /// measurement under the seed's base makes the per-cost term 0), and a
    /// job of a million tokens must not be predicted at a few milliseconds.
    pub fn predict(&self, cost: f64, items: usize) -> Duration {
        let cost = cost.max(0.0);
        let mut t = self.fitted(cost, items);
        if self.largest > 0.0 && cost > self.largest {
            t = t.max(self.fitted(self.largest, items) * (cost / self.largest));
        }
        Duration::from_secs_f64(if t.is_finite() { t.clamp(0.0, LONGEST) } else { LONGEST })
    }

    /// The fit's own prediction in seconds, unbounded.
    fn fitted(&self, cost: f64, items: usize) -> f64 {
        self.theta[0] + self.theta[1] * cost + self.theta[2] * items as f64
    }

    /// The current coefficients `(a, b, c)` in seconds.
    pub fn coefficients(&self) -> (f64, f64, f64) {
        (self.theta[0], self.theta[1], self.theta[2])
    }

    /// Measured batches so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Mean relative prediction error over recent batches (0.1 = 10%).
    pub fn relative_error(&self) -> f64 {
        self.error
    }

    /// Learn from one measured batch.
    pub fn observe(&mut self, cost: f64, items: usize, elapsed: Duration) {
        let y = elapsed.as_secs_f64();
        if !(y.is_finite() && cost.is_finite()) {
            return;
        }
        let predicted = self.fitted(cost.max(0.0), items).max(0.0);
        if y > 0.0 {
            let e = ((predicted - y) / y).abs().min(10.0);
            self.error = if self.samples == 0 { e } else { 0.95 * self.error + 0.05 * e };
        }
        let y = if self.samples >= SETTLED && predicted > 0.0 {
            y.clamp(predicted / STEP, predicted * STEP)
        } else {
            y
        };
        let cs = *self.cost_scale.get_or_insert(cost.max(1.0));
        let x = [1.0, cost.max(0.0) / cs, items as f64 / self.item_scale];
        for i in 0..3 {
            self.xy[i] = DECAY * self.xy[i] + x[i] * y;
            for j in 0..3 {
                self.xx[i][j] = DECAY * self.xx[i][j] + x[i] * x[j];
            }
        }
        self.samples += 1;
        self.largest = self.largest.max(cost);
        self.refit(cs);
    }

    /// Solve (XᵀWX + R)·θ' = XᵀWy + R·θ'_seed in scaled units.
    fn refit(&mut self, cs: f64) {
        let scales = [1.0, cs, self.item_scale];
        let seed_scaled: [f64; 3] = std::array::from_fn(|i| self.seed[i] * scales[i]);
        let mut a = self.xx;
        let mut b = self.xy;
        for i in 0..3 {
            a[i][i] += RIDGE;
            b[i] += RIDGE * seed_scaled[i];
        }
        if let Some(solution) = solve3(a, b) {
            // A negative coefficient has no physical meaning here: clamp it.
            self.theta = std::array::from_fn(|i| (solution[i] / scales[i]).max(0.0));
        }
    }
}

/// Gaussian elimination with partial pivoting for a 3×3 system.
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..3 {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (cell, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *cell -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let s: f64 = (row + 1..3).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: f64) -> Duration {
        Duration::from_secs_f64(n / 1000.0)
    }

    #[test]
    fn predicts_the_seed_before_measurements() {
        let m = LatencyModel::new(LatencySeed { base: ms(10.0), per_cost: ms(0.5), per_item: ms(1.0) }, 8);
        assert_eq!(m.predict(4.0, 2), ms(14.0));
    }

    #[test]
    fn learns_the_true_model_and_tracks_error() {
        // Truth: 20 ms + 0.1 ms per cost + 2 ms per item; the seed is far off.
        let truth = |cost: f64, n: usize| ms(20.0 + 0.1 * cost + 2.0 * n as f64);
        let mut m =
            LatencyModel::new(LatencySeed { base: ms(5.0), per_cost: ms(1.0), per_item: ms(0.0) }, 32);
        for i in 0..300 {
            let n = 1 + (i * 7) % 32;
            let cost = (n * (20 + (i * 13) % 180)) as f64;
            m.observe(cost, n, truth(cost, n));
        }
        let (a, b, c) = m.coefficients();
        assert!((a - 0.020).abs() < 0.002, "a = {a}");
        assert!((b - 0.0001).abs() < 0.00002, "b = {b}");
        assert!((c - 0.002).abs() < 0.0005, "c = {c}");
        assert!(m.relative_error() < 0.05, "error {}", m.relative_error());
        let p = m.predict(1000.0, 10).as_secs_f64();
        assert!((p - truth(1000.0, 10).as_secs_f64()).abs() < 0.003, "{p}");
    }

    #[test]
    fn adapts_when_the_backend_slows_down() {
        let mut m = LatencyModel::new(LatencySeed { base: ms(10.0), ..LatencySeed::default() }, 8);
        for _ in 0..50 {
            m.observe(10.0, 4, ms(10.0));
        }
        for _ in 0..200 {
            m.observe(10.0, 4, ms(40.0));
        }
        let p = m.predict(10.0, 4).as_secs_f64() * 1000.0;
        assert!((p - 40.0).abs() < 3.0, "{p}");
    }

    #[test]
    fn beyond_the_largest_batch_measured_time_grows_with_cost() {
        // One small batch measured under the seed's base: the fit puts all
        // of it in the fixed term, yet a batch 100,000 times costlier is
        // predicted to take 100,000 times as long.
        let mut m = LatencyModel::new(LatencySeed::default(), 32);
        m.observe(5.0, 1, ms(3.0));
        assert_eq!(m.coefficients().1, 0.0);
        let small = m.predict(5.0, 1).as_secs_f64();
        assert!((0.003..0.005).contains(&small), "{small}");
        let huge = m.predict(500_000.0, 1).as_secs_f64();
        assert!((huge / small - 100_000.0).abs() < 1.0, "{huge} s");
        // Within what was measured the fit stands; past a year it is capped.
        assert!(m.predict(2.0, 1).as_secs_f64() <= small);
        assert_eq!(m.predict(f64::INFINITY, 1), Duration::from_secs_f64(LONGEST));
    }

    #[test]
    fn one_outlier_moves_a_settled_model_a_bounded_step() {
        let mut m =
            LatencyModel::new(LatencySeed { base: ms(10.0), per_cost: ms(1.0), per_item: ms(0.0) }, 8);
        for i in 0..50 {
            let cost = f64::from(i % 10 + 1);
            m.observe(cost, 1, ms(10.0 + cost));
        }
        let before = m.predict(5.0, 1);
        // One batch that took 1000 s (a huge job nobody stopped).
        m.observe(5.0, 1, Duration::from_secs(1000));
        let after = m.predict(5.0, 1);
        assert!(after < before * 2, "{before:?} -> {after:?}");
        // A real slow-down (every batch 3x slower) is still learned.
        for i in 0..100 {
            let cost = f64::from(i % 10 + 1);
            m.observe(cost, 1, ms(3.0 * (10.0 + cost)));
        }
        let learned = m.predict(5.0, 1).as_secs_f64() * 1000.0;
        assert!((learned - 45.0).abs() < 5.0, "{learned} ms");
    }
}

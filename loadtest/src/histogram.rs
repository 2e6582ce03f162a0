//! Log-linear histogram of latencies in microseconds: exact below 128 µs, then 128 buckets per
//! power of two (relative error under 0.8%), so memory stays bounded however long a run lasts
//! and per-worker histograms merge by adding counts.

/// Bits of sub-bucket resolution per power of two.
const SUB_BITS: u32 = 7;
/// Values below this are recorded exactly; above it each octave has this many buckets.
const SUB: u64 = 1 << SUB_BITS;

/// Counts of recorded values, bucketed log-linearly. Serialized sparsely (the buckets that
/// hold values, as `[index, count]` pairs) so that reports carry their histograms and the
/// reports of a sharded run merge exactly (`infergate-load merge`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "Sparse", try_from = "Sparse")]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

/// A histogram as written in a report.
#[derive(serde::Serialize, serde::Deserialize)]
struct Sparse {
    buckets: Vec<(u32, u64)>,
    sum: u128,
    max: u64,
}

impl From<Histogram> for Sparse {
    fn from(h: Histogram) -> Self {
        let buckets = (h.counts.iter().enumerate())
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (u32::try_from(i).unwrap_or(u32::MAX), *n))
            .collect();
        Sparse { buckets, sum: h.sum, max: h.max }
    }
}

impl TryFrom<Sparse> for Histogram {
    type Error = String;

    fn try_from(sparse: Sparse) -> Result<Self, String> {
        let top = index(u64::MAX) as u32;
        let mut h = Histogram::default();
        for (i, n) in sparse.buckets {
            if i > top {
                return Err(format!("histogram bucket {i} is beyond the last ({top})"));
            }
            let i = i as usize;
            if h.counts.len() <= i {
                h.counts.resize(i + 1, 0);
            }
            let overflow = || format!("histogram counts overflow at bucket {i}");
            h.counts[i] = h.counts[i].checked_add(n).ok_or_else(overflow)?;
            h.total = h.total.checked_add(n).ok_or_else(overflow)?;
        }
        h.sum = sparse.sum;
        h.max = sparse.max;
        Ok(h)
    }
}

/// The bucket holding `value`.
fn index(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    // `value >= SUB`, so its highest set bit is at position `SUB_BITS` or above.
    let shift = (63 - value.leading_zeros()) - SUB_BITS;
    let mantissa = value >> shift; // in [SUB, 2 * SUB)
    (SUB + u64::from(shift) * SUB + (mantissa - SUB)) as usize
}

/// The largest value that lands in bucket `index`.
fn highest(index: usize) -> u64 {
    let i = index as u64;
    if i < SUB {
        return i;
    }
    let shift = (i - SUB) / SUB;
    let mantissa = SUB + (i - SUB) % SUB;
    let top = (u128::from(mantissa) + 1) << shift;
    u64::try_from(top - 1).unwrap_or(u64::MAX)
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, value: u64) {
        let i = index(value);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.sum += u128::from(value);
        self.max = self.max.max(value);
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        // Saturating: histograms read from reports (`merge`) may hold anything.
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total = self.total.saturating_add(other.total);
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// How many recorded values are at most `value` (to the bucket: values sharing
    /// `value`'s bucket count as at most it).
    pub fn count_at_most(&self, value: u64) -> u64 {
        let last = index(value);
        self.counts.iter().take(last + 1).sum()
    }

    /// Exact largest value, if any.
    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// Exact mean, if any value was recorded.
    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    /// The nearest-rank `q`-quantile (`q` in 0..=1): the top of the bucket holding the
    /// `ceil(q * count)`-th smallest value, never above the exact maximum.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(highest(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_reads_back_as_it_was_written() {
        let mut h = Histogram::default();
        for v in [0, 5, 127, 128, 1_000, 1_000, 123_456_789, u64::MAX] {
            h.record(v);
        }
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Histogram>(&json).unwrap(), h);
        assert!(serde_json::from_str::<Histogram>(r#"{"buckets":[[99999,1]],"sum":1,"max":1}"#).is_err());
        let huge = format!(r#"{{"buckets":[[1,{}],[2,1]],"sum":1,"max":2}}"#, u64::MAX);
        assert!(serde_json::from_str::<Histogram>(&huge).is_err(), "counts that overflow are refused");
    }

    #[test]
    fn counts_at_most_a_value() {
        let mut h = Histogram::default();
        for v in [5, 10, 100, 1_000, 100_000] {
            h.record(v);
        }
        assert_eq!((h.count_at_most(4), h.count_at_most(10), h.count_at_most(99)), (0, 2, 2));
        assert_eq!((h.count_at_most(1_000), h.count_at_most(u64::MAX)), (4, 5));
    }

    #[test]
    fn buckets_are_exact_below_sub_and_tight_above() {
        for v in 0..SUB {
            assert_eq!(highest(index(v)), v);
        }
        let mut previous = 0;
        for v in (SUB..5_000_000).step_by(37).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let i = index(v);
            assert!(i >= previous, "index must not decrease: {v}");
            previous = i;
            let top = highest(i);
            assert!(top >= v, "bucket top {top} below value {v}");
            assert!((top - v) as f64 <= v as f64 / SUB as f64, "bucket of {v} too wide: {top}");
        }
    }

    #[test]
    fn neighbouring_buckets_do_not_overlap() {
        for i in 0..4_000 {
            assert_eq!(index(highest(i)), i);
            assert_eq!(index(highest(i) + 1), i + 1);
        }
    }

    #[test]
    fn empty_histogram_has_no_statistics() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.max(), None);
        assert_eq!(h.mean(), None);
    }

    #[test]
    fn small_values_give_exact_nearest_rank_quantiles() {
        let mut h = Histogram::default();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), Some(50));
        assert_eq!(h.quantile(0.9), Some(90));
        assert_eq!(h.quantile(0.99), Some(99));
        assert_eq!(h.quantile(0.999), Some(100));
        assert_eq!(h.quantile(0.0), Some(1));
        assert_eq!(h.max(), Some(100));
        assert_eq!(h.mean(), Some(50.5));
    }

    #[test]
    fn large_values_quantiles_within_resolution() {
        let mut h = Histogram::default();
        for v in 1..=100_000 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!(got >= exact && got <= exact * (1.0 + 1.0 / SUB as f64), "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.quantile(1.0), Some(100_000));
    }

    #[test]
    fn quantile_never_exceeds_max() {
        let mut h = Histogram::default();
        h.record(1_000_001);
        assert_eq!(h.quantile(0.5), Some(1_000_001));
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::default(), Histogram::default(), Histogram::default());
        for v in 0..5_000u64 {
            let v = v * v % 77_777;
            if v % 3 == 0 {
                a.record(v);
            } else {
                b.record(v);
            }
            all.record(v);
        }
        b.merge(&a);
        assert_eq!(b, all);
    }
}

//! How a batch of inputs that pad to their longest member (token sequences,
//! text-line crops) splits into runs: sorted by length, each run takes
//! inputs while its padding stays within a fraction of its real work.
//!
//! On these CPUs a run costs about its padded size (rows × the longest), so
//! one run of 32 mixed-length texts does twice the work of the texts
//! themselves; runs of similar lengths do little more than the texts'
//! own (BENCHMARKS.md, "Length-aware runs").

/// Limits on one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunLimits {
    /// Most inputs in one run.
    pub inputs: usize,
    /// Most padded cells (inputs × the longest) in one run.
    pub cells: usize,
    /// Most padding in one run as a fraction of its real cells:
    /// `inputs × longest ≤ (1 + padding) × Σ lengths`.
    pub padding: f64,
}

/// How many of `lengths` (sorted shortest first) the next run takes: one at
/// least, when there is one.
pub(crate) fn next_run(lengths: impl IntoIterator<Item = usize>, limits: RunLimits) -> usize {
    let mut take = 0;
    let mut real = 0usize;
    for (n, len) in lengths.into_iter().take(limits.inputs).enumerate() {
        let len = len.max(1);
        real += len;
        let padded = (n + 1) * len;
        if n > 0 && (padded > limits.cells || padded as f64 > (1.0 + limits.padding) * real as f64) {
            break;
        }
        take = n + 1;
    }
    take
}

/// `lengths` (in any order) as runs: each a list of indices into `lengths`,
/// shortest first, following [`next_run`].
pub(crate) fn plan(lengths: &[usize], limits: RunLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut runs = Vec::new();
    let mut rest = order.as_slice();
    while !rest.is_empty() {
        let take = next_run(rest.iter().map(|&i| lengths[i]), limits);
        runs.push(rest[..take].to_vec());
        rest = &rest[take..];
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: RunLimits = RunLimits { inputs: 64, cells: usize::MAX, padding: f64::INFINITY };

    #[test]
    fn unbounded_padding_takes_everything_up_to_the_input_and_cell_limits() {
        let lengths = [5, 80, 12, 40, 7];
        assert_eq!(plan(&lengths, OPEN), vec![vec![0, 4, 2, 3, 1]]);
        assert_eq!(plan(&lengths, RunLimits { inputs: 2, ..OPEN }), vec![vec![0, 4], vec![2, 3], vec![1]]);
        // 3 × 12 = 36 cells fit in 40; 4 × 40 do not.
        assert_eq!(plan(&lengths, RunLimits { cells: 40, ..OPEN }), vec![vec![0, 4, 2], vec![3], vec![1]]);
    }

    #[test]
    fn runs_are_bounded_by_inputs_and_padded_cells() {
        let lens = [3, 5, 8, 8, 20, 300];
        assert_eq!(next_run(lens, OPEN), 6);
        assert_eq!(next_run(lens, RunLimits { inputs: 2, ..OPEN }), 2);
        // 4 sequences padded to 8 tokens fit in 32; a fifth of 20 would make 100.
        assert_eq!(next_run(lens, RunLimits { cells: 32, ..OPEN }), 4);
        assert_eq!(next_run(lens, RunLimits { cells: 31, ..OPEN }), 3);
        // An input longer than the budget still runs, alone.
        assert_eq!(next_run([300], RunLimits { cells: 32, ..OPEN }), 1);
    }

    #[test]
    fn runs_split_where_padding_would_pass_the_bound() {
        let limits = RunLimits { padding: 0.25, ..OPEN };
        // 10, 11, 12: 36 padded for 33 real. Adding 30 would be 120 for 63.
        let lengths = [30, 10, 12, 11, 31, 60];
        let runs = plan(&lengths, limits);
        assert_eq!(runs, vec![vec![1, 3, 2], vec![0, 4], vec![5]]);
        for run in &runs {
            let longest = run.iter().map(|&i| lengths[i]).max().unwrap();
            let real: usize = run.iter().map(|&i| lengths[i]).sum();
            assert!((run.len() * longest) as f64 <= 1.25 * real as f64, "{run:?}");
        }
    }

    #[test]
    fn equal_lengths_stay_together_and_one_input_always_runs() {
        let limits = RunLimits { padding: 0.0, ..OPEN };
        assert_eq!(plan(&[7; 5], limits), vec![vec![0, 1, 2, 3, 4]]);
        assert_eq!(plan(&[0, 0], limits), vec![vec![0, 1]]);
        assert_eq!(next_run([10_000], RunLimits { cells: 1, ..limits }), 1);
        assert_eq!(next_run([], limits), 0);
    }
}

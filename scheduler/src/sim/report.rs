//! What a simulation run measured, and the markdown table that compares runs.
//!
//! Only jobs that arrive inside the measurement window (after the warm-up)
//! are counted; they are followed to their end even if that is after the
//! window. A job is, exactly once: rejected at submit (shed), dropped from the
//! queue after admission, completed on time, or completed late. For chat,
//! "completed" and latency refer to the first token.

use std::fmt::Write as _;

use crate::{Class, Counters, Policy};

/// Counts and latencies of one (task, class) stream over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub submitted: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub on_time: u64,
    pub late: u64,
    /// Seconds from arrival to the deadline event, of completed jobs.
    pub latencies: Vec<f64>,
    /// Seconds by which the deadline event came after the admission's
    /// prediction, of completed jobs the scheduler predicted.
    pub overrun: Vec<f64>,
}

impl Tally {
    pub fn admitted(&self) -> u64 {
        self.submitted - self.rejected
    }

    pub fn completed(&self) -> u64 {
        self.on_time + self.late
    }

    fn add(&mut self, other: &Tally) {
        self.submitted += other.submitted;
        self.rejected += other.rejected;
        self.dropped += other.dropped;
        self.on_time += other.on_time;
        self.late += other.late;
        self.latencies.extend_from_slice(&other.latencies);
        self.overrun.extend_from_slice(&other.overrun);
    }
}

/// Every job of the run, counted or not: the simulator's conservation ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ledger {
    pub submitted: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub completed: u64,
    /// Still waiting in a queue when the run stopped.
    pub queued: u64,
    /// In a batch that had not finished when the run stopped.
    pub running: u64,
}

/// The index of a class in per-class arrays (the workload uses two).
pub fn class_index(class: Class) -> usize {
    usize::from(class != Class::Interactive)
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub policy: Policy,
    /// Offered load as a multiple of capacity.
    pub load: f64,
    pub pattern: String,
    /// Offered jobs per second.
    pub rate: f64,
    /// Length of the measurement window in seconds.
    pub window: f64,
    pub tasks: Vec<&'static str>,
    /// Per task, per class (interactive, batch).
    pub tallies: Vec<[Tally; 2]>,
    /// Per task: busy worker-seconds inside the window, and workers.
    pub busy: Vec<f64>,
    pub workers: Vec<usize>,
    pub ledger: Ledger,
    /// Per task at the end of the run: the scheduler's counters (every job,
    /// window or not) and its learned occupancy and first-event models `(a, b, c)`.
    pub counters: Vec<Counters>,
    pub learned: Vec<[(f64, f64, f64); 2]>,
}

impl Outcome {
    /// All tasks of one class together.
    pub fn class(&self, class: Class) -> Tally {
        let mut t = Tally::default();
        self.tallies.iter().for_each(|c| t.add(&c[class_index(class)]));
        t
    }

    /// Both classes together.
    pub fn total(&self) -> Tally {
        let mut t = self.class(Class::Interactive);
        t.add(&self.class(Class::Batch));
        t
    }

    /// Jobs completed within their deadline per second.
    pub fn goodput(&self) -> f64 {
        self.total().on_time as f64 / self.window
    }

    /// Pool another run of the same scenario (another seed) into this one:
    /// counts and busy time add up, the window grows, samples are joined
    /// (`counters` and `learned` stay this run's).
    pub fn pool(&mut self, other: &Outcome) {
        self.window += other.window;
        for (mine, theirs) in self.tallies.iter_mut().zip(&other.tallies) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                m.add(t);
            }
        }
        for (mine, theirs) in self.busy.iter_mut().zip(&other.busy) {
            *mine += theirs;
        }
        let l = &mut self.ledger;
        let o = other.ledger;
        l.submitted += o.submitted;
        l.rejected += o.rejected;
        l.dropped += o.dropped;
        l.completed += o.completed;
        l.queued += o.queued;
        l.running += o.running;
    }

    /// Busy worker time over available worker time, across all models.
    pub fn utilisation(&self) -> f64 {
        let available: f64 = self.workers.iter().map(|&w| w as f64 * self.window).sum();
        self.busy.iter().sum::<f64>() / available.max(f64::MIN_POSITIVE)
    }

    /// Busy over available worker time of one task's model.
    pub fn task_utilisation(&self, task: usize) -> f64 {
        let available = self.workers.get(task).map_or(0.0, |&w| w as f64 * self.window);
        self.busy.get(task).copied().unwrap_or(0.0) / available.max(f64::MIN_POSITIVE)
    }
}

/// `part / whole`, 0 when `whole` is 0.
pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The `q` quantile (0..=1) by nearest rank, `None` without samples.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

fn pct(v: f64) -> String {
    let v = v * 100.0;
    if v != 0.0 && v.abs() < 0.1 {
        format!("{v:.2}%")
    } else {
        format!("{v:.1}%")
    }
}

fn millis(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(s) if s >= 10.0 => format!("{s:.1} s"),
        Some(s) => format!("{:.0} ms", s * 1000.0),
    }
}

fn signed_millis(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |s| format!("{:+.0} ms", s * 1000.0))
}

fn latency(t: &Tally) -> String {
    format!("{} / {}", millis(quantile(&t.latencies, 0.5)), millis(quantile(&t.latencies, 0.99)))
}

/// The comparison table: one row per run.
pub fn markdown_table(runs: &[Outcome]) -> String {
    let mut out = String::from(
        "| load | policy | offered/s | goodput/s | interactive on time | missed / admitted (late + dropped) \
         | shed | interactive p50 / p99 | batch p50 / p99 | utilisation |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for run in runs {
        let (all, int, bat) = (run.total(), run.class(Class::Interactive), run.class(Class::Batch));
        let admitted = all.admitted();
        let _ = writeln!(
            out,
            "| {:.1}× | {} | {:.0} | {:.1} | {} | {} ({} + {}) | {} | {} | {} | {} |",
            run.load,
            run.policy.as_str(),
            run.rate,
            run.goodput(),
            pct(ratio(int.on_time, int.submitted)),
            pct(ratio(all.late + all.dropped, admitted)),
            pct(ratio(all.late, admitted)),
            pct(ratio(all.dropped, admitted)),
            pct(ratio(all.rejected, all.submitted)),
            latency(&int),
            latency(&bat),
            pct(run.utilisation()),
        );
    }
    out
}

/// Per task of one run: where the jobs went and how busy its model was.
pub fn task_table(run: &Outcome) -> String {
    let mut out = String::from(
        "| task | class | submitted | on time | late (of admitted) | dropped (of admitted) | shed | p50 / p99 \
         | prediction overrun p50 / p99 | model utilisation |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, (name, tallies)) in run.tasks.iter().zip(&run.tallies).enumerate() {
        for (class, t) in [Class::Interactive, Class::Batch].into_iter().zip(tallies) {
            let _ = writeln!(
                out,
                "| {name} | {class} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
                t.submitted,
                pct(ratio(t.on_time, t.submitted)),
                pct(ratio(t.late, t.admitted())),
                pct(ratio(t.dropped, t.admitted())),
                pct(ratio(t.rejected, t.submitted)),
                latency(t),
                signed_millis(quantile(&t.overrun, 0.5)),
                signed_millis(quantile(&t.overrun, 0.99)),
                pct(run.task_utilisation(i)),
            );
        }
    }
    out
}

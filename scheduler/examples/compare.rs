//! Compares the scheduler's policies on the fixed mixed workload in the
//! discrete-event simulator and prints markdown: the deployment, one table
//! for Poisson arrivals at 0.5×–3× capacity, one bursty run at 2×, and the
//! issue's targets with their verdicts.
//!
//! ```text
//! cargo run --release -p infergate-scheduler --example compare -- \
//!     [--duration SECS] [--warmup SECS] [--seed N] [--seeds COUNT] [--queue JOBS] [--detail] \
//!     [--json FILE]
//! ```
//!
//! Beside the policies each table has the run's upper bound (`bound`, a fluid
//! bound on goodput and on interactive jobs on time: `sim::bound`). `--json`
//! writes every row, the bounds as rows with `policy = "bound"`, shares as
//! fractions 0–1, for programs to check.
//!
//! Every row pools `--seeds` runs (seeds `N`, `N+1`, …; 3 by default) of
//! `--duration` seconds each (60) after a `--warmup` ramp-up (10). `--queue`
//! sets every model's queue bound (each tenant may hold half); `--detail`
//! adds a per-task table for every row.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use infergate_scheduler::sim::{
    bound, markdown_table, ratio, simulate, task_table, Bound, Outcome, Pattern, Scenario, Workload,
};
use infergate_scheduler::{Class, Policy};

const LOADS: [f64; 6] = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0];
const BURSTY: Pattern = Pattern::OnOff { on: Duration::from_secs(2), off: Duration::from_secs(2) };

struct Options {
    duration: u64,
    warmup: u64,
    seed: u64,
    seeds: u64,
    queue: Option<usize>,
    detail: bool,
    json: Option<std::path::PathBuf>,
}

fn options() -> Result<Options, String> {
    let mut o =
        Options { duration: 60, warmup: 10, seed: 1, seeds: 3, queue: None, detail: false, json: None };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse().map_err(|e| format!("{name} {v:?}: {e}"))
        };
        match arg.as_str() {
            "--duration" => o.duration = value("--duration")?,
            "--warmup" => o.warmup = value("--warmup")?,
            "--seed" => o.seed = value("--seed")?,
            "--seeds" => o.seeds = value("--seeds")?.max(1),
            "--queue" => o.queue = Some(value("--queue")? as usize),
            "--detail" => o.detail = true,
            "--json" => o.json = Some(args.next().ok_or("--json needs a file")?.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

fn workload(o: &Options) -> Workload {
    let mut w = Workload::mixed();
    if let Some(jobs) = o.queue {
        w.limits.max_jobs = jobs;
        w.limits.tenant_max_jobs = jobs / 2;
    }
    w
}

/// Runs every scenario, spread over the machine's cores, in order.
fn run_all(scenarios: Vec<Scenario>) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(vec![None; scenarios.len()]);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(s) = scenarios.get(i) else { break };
                let outcome = simulate(s);
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(outcome);
                }
            });
        }
    });
    results.into_inner().unwrap_or_default().into_iter().flatten().collect()
}

/// A duration in the shortest readable form: `0.02 ms`, `284 ms`, `3.31 s`.
fn short(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{} s", (ms / 10.0).round() / 100.0)
    } else {
        format!("{} ms", (ms * 1000.0).round() / 1000.0)
    }
}

fn deployment(w: &Workload, o: &Options) -> String {
    let mut out = String::from(
        "| model | share | job size | interactive deadline | a (per batch) | b (per unit) | c (per job) \
         | decode step | max batch | workers | full batch | jobs/s | capacity at mix |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for t in &w.tasks {
        let b = &t.backend;
        let _ = writeln!(
            out,
            "| {} | {:.0}% | {}–{} {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0}/s |",
            t.name,
            t.share * 100.0,
            t.size.0,
            t.size.1,
            t.unit,
            short(t.deadline),
            short(b.base),
            short(b.per_cost),
            short(b.per_item),
            short(b.per_step),
            b.max_batch,
            b.concurrency,
            short(Duration::from_secs_f64(t.full_batch_secs())),
            t.throughput(),
            t.throughput() / t.share,
        );
    }
    let _ = writeln!(
        out,
        "\nCapacity (1×) = min over models of (workers × batch / full-batch time) / share = **{:.0} jobs/s**. \
         Batch-tenant deadlines ×{}; max delay {} ms; queue bound {} jobs per model ({} per tenant); \
         batch-time noise lognormal σ = {}. Each row pools {} runs (seeds {}–{}) of {} s after a {} s ramp-up.",
        w.capacity(),
        w.batch_deadline_factor,
        w.max_delay.as_millis(),
        w.limits.max_jobs,
        w.limits.tenant_max_jobs,
        w.noise,
        o.seeds,
        o.seed,
        o.seed + o.seeds - 1,
        o.duration,
        o.warmup,
    );
    out
}

/// `markdown_table` with each load's bound after its policies.
fn table_with_bounds(runs: &[Outcome], w: &Workload) -> String {
    let mut out = String::new();
    for (i, group) in runs.chunks(Policy::ALL.len()).enumerate() {
        let table = markdown_table(group);
        let mut lines = table.lines();
        let header: Vec<&str> = lines.by_ref().take(2).collect();
        if i == 0 {
            header.iter().for_each(|l| out.push_str(&format!("{l}\n")));
        }
        lines.for_each(|l| out.push_str(&format!("{l}\n")));
        if let Some(first) = group.first() {
            let b = bound(w, first);
            let _ = writeln!(
                out,
                "| {:.1}× | *bound* | {:.0} | {:.1} | {:.1}% | 0% | {:.1}% | | | |",
                first.load,
                first.rate,
                b.goodput,
                b.interactive_on_time * 100.0,
                (1.0 - b.goodput / first.rate).max(0.0) * 100.0,
            );
        }
    }
    out
}

/// Every row as JSON, the bounds among them.
fn json_rows(runs: &[Outcome], w: &Workload) -> serde_json::Value {
    let mut rows = Vec::new();
    for group in runs.chunks(Policy::ALL.len()) {
        for run in group {
            let (all, int) = (run.total(), run.class(Class::Interactive));
            rows.push(serde_json::json!({
                "pattern": run.pattern,
                "load": run.load,
                "policy": run.policy.as_str(),
                "offered": run.rate,
                "goodput": run.goodput(),
                "interactive_on_time": ratio(int.on_time, int.submitted),
                "missed_admitted": ratio(all.late + all.dropped, all.admitted()),
                "shed": ratio(all.rejected, all.submitted),
            }));
        }
        if let Some(first) = group.first() {
            let Bound { goodput, interactive_on_time } = bound(w, first);
            rows.push(serde_json::json!({
                "pattern": first.pattern,
                "load": first.load,
                "policy": "bound",
                "offered": first.rate,
                "goodput": goodput,
                "interactive_on_time": interactive_on_time,
                "missed_admitted": 0.0,
                "shed": (1.0 - goodput / first.rate).max(0.0),
            }));
        }
    }
    serde_json::Value::Array(rows)
}

fn find(runs: &[Outcome], policy: Policy, load: f64) -> Option<&Outcome> {
    runs.iter().find(|r| r.policy == policy && (r.load - load).abs() < 1e-9)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**not met**"
    }
}

fn targets(runs: &[Outcome], w: &Workload) -> String {
    let mut out = String::new();
    // How close `deadline` comes to the bound, load by load.
    let closeness: Vec<String> = runs
        .iter()
        .filter(|r| r.policy == Policy::Deadline)
        .map(|r| {
            let b = bound(w, r);
            let int = r.class(Class::Interactive);
            format!(
                "{:.1}× {:.1}% / {:.1}%",
                r.load,
                r.goodput() / b.goodput * 100.0,
                ratio(int.on_time, int.submitted) / b.interactive_on_time * 100.0
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "- deadline against the bound (goodput / interactive on time, relative; target ≥ 95% on both): {}.",
        closeness.join(", ")
    );
    let goodput = |p, l| find(runs, p, l).map_or(0.0, Outcome::goodput);
    let (d, f, p) =
        (goodput(Policy::Deadline, 2.0), goodput(Policy::Fifo, 2.0), goodput(Policy::Priority, 2.0));
    let _ = writeln!(
        out,
        "- 2× goodput: deadline {d:.0}/s = {:.2}× fifo ({f:.0}/s; target ≥ 2×): {}; = {:.2}× priority \
         ({p:.0}/s; target ≥ 1.3×): {}.",
        d / f,
        verdict(d >= 2.0 * f),
        d / p,
        verdict(d >= 1.3 * p),
    );
    if let Some(r) = find(runs, Policy::Deadline, 1.5) {
        let int = r.class(Class::Interactive);
        let share = int.on_time as f64 / int.submitted.max(1) as f64;
        let _ = writeln!(
            out,
            "- 1.5×: {:.1}% of submitted interactive jobs meet their deadline under deadline (target ≥ 99%): {} \
             ({:.1}% shed, {:.1}% late or dropped).",
            share * 100.0,
            verdict(share >= 0.99),
            int.rejected as f64 / int.submitted.max(1) as f64 * 100.0,
            (int.late + int.dropped) as f64 / int.submitted.max(1) as f64 * 100.0,
        );
    }
    let misses: Vec<(f64, f64)> = runs
        .iter()
        .filter(|r| r.policy == Policy::Deadline)
        .map(|r| {
            let t = r.total();
            (r.load, (t.late + t.dropped) as f64 / t.admitted().max(1) as f64)
        })
        .collect();
    let worst = misses.iter().copied().fold((0.0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    let listed: Vec<String> = misses.iter().map(|(l, m)| format!("{l:.1}× {:.2}%", m * 100.0)).collect();
    let _ = writeln!(
        out,
        "- Deadline misses among admitted jobs (late + dropped) under deadline, target ≤ 1%: worst {:.2}% at \
         {:.1}×: {} ({}).",
        worst.1 * 100.0,
        worst.0,
        verdict(worst.1 <= 0.01),
        listed.join(", "),
    );
    out
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("compare: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let scenario = |policy, load, pattern| Scenario {
        workload: workload(&o),
        pattern,
        warmup: Duration::from_secs(o.warmup),
        duration: Duration::from_secs(o.duration),
        seed: o.seed,
        ..Scenario::new(policy, load)
    };
    let mut rows: Vec<Scenario> = LOADS
        .iter()
        .flat_map(|&load| Policy::ALL.map(|policy| scenario(policy, load, Pattern::Poisson)))
        .collect();
    rows.extend(Policy::ALL.map(|policy| scenario(policy, 2.0, BURSTY)));
    let seeds = o.seeds as usize;
    let scenarios = rows
        .iter()
        .flat_map(|row| (0..o.seeds).map(move |i| Scenario { seed: row.seed + i, ..row.clone() }))
        .collect();
    let mut runs = run_all(scenarios);
    let runs: Vec<Outcome> = runs
        .chunks_mut(seeds)
        .filter_map(|chunk| {
            let (first, rest) = chunk.split_first_mut()?;
            rest.iter().for_each(|r| first.pool(r));
            Some(first.clone())
        })
        .collect();
    let (poisson, bursty) = runs.split_at(runs.len().saturating_sub(Policy::ALL.len()));

    println!("### Deployment\n\n{}", deployment(&workload(&o), &o));
    let w = workload(&o);
    println!("### Poisson arrivals\n\n{}", table_with_bounds(poisson, &w));
    println!("### Bursty arrivals at 2× ({})\n\n{}", BURSTY.name(), table_with_bounds(bursty, &w));
    println!("### Targets (Poisson)\n\n{}", targets(poisson, &w));
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(&json_rows(&runs, &w)).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("compare: writing {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    if o.detail {
        for r in &runs {
            println!("#### {} at {:.1}×, {}\n\n{}", r.policy.as_str(), r.load, r.pattern, task_table(r));
        }
    }
    eprintln!("simulated {} runs in {:.1} s", runs.len() * seeds, started.elapsed().as_secs_f64());
}

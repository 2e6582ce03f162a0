//! The simulator's prediction for `scripts/bench-scheduler-live.sh`: the
//! live benchmark's single embeddings model (synthetic backend, 40 ms +
//! 0.1 ms/token per batch of up to 8, one worker, 13-token requests, half
//! interactive with a 200 ms deadline and half batch with 2 s), under the
//! same constant arrival rate, for each policy. Prints a markdown table.
//!
//! `cargo run --release -p infergate-scheduler --example live_predict -- --rate 317 --duration 20`

use std::time::Duration;

use infergate_scheduler::sim::{simulate, Backend, Pattern, Scenario, Task, Workload};
use infergate_scheduler::{Policy, QueueLimits};

fn workload() -> Workload {
    Workload {
        tasks: vec![Task {
            name: "embeddings",
            unit: "tokens",
            share: 1.0,
            size: (13.0, 13.0),
            output: None,
            deadline: Duration::from_millis(200),
            bytes_per_unit: 4.0,
            backend: Backend {
                base: Duration::from_millis(40),
                per_cost: Duration::from_micros(100),
                per_item: Duration::ZERO,
                per_step: Duration::ZERO,
                max_batch: 8,
                concurrency: 1,
            },
        }],
        interactive_share: 0.5,
        batch_deadline_factor: 10.0,
        max_delay: Duration::from_millis(5),
        limits: QueueLimits {
            max_jobs: 4096,
            max_bytes: 256 << 20,
            tenant_max_jobs: 4096,
            tenant_max_bytes: 256 << 20,
        },
        noise: 0.0,
    }
}

fn main() {
    let mut rate = 317.0;
    let mut duration = 20.0;
    let mut policies = vec![Policy::Deadline, Policy::Fifo, Policy::Priority];
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--rate" => rate = value.parse().unwrap_or(rate),
            "--duration" => duration = value.parse().unwrap_or(duration),
            "--policies" => policies = value.split_whitespace().filter_map(|p| p.parse().ok()).collect(),
            other => {
                eprintln!("live_predict: unknown argument {other:?} (--rate R --duration S --policies \"deadline fifo\")");
                std::process::exit(2);
            }
        }
    }
    let workload = workload();
    let capacity = workload.capacity();
    println!("| policy | offered req/s | goodput req/s | late | rejected | dropped | mean batch |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for policy in policies {
        let scenario = Scenario {
            workload: workload.clone(),
            policy,
            load: rate / capacity,
            pattern: Pattern::Constant,
            warmup: Duration::ZERO,
            duration: Duration::from_secs_f64(duration),
            seed: 1,
            drain: true,
        };
        let outcome = simulate(&scenario);
        let total = outcome.total();
        let counters = &outcome.counters[0];
        let mean_batch = counters.dispatched as f64 / counters.batches.max(1) as f64;
        println!(
            "| {} | {:.0} | {:.1} | {} | {} | {} | {:.1} |",
            policy.as_str(),
            rate,
            outcome.goodput(),
            total.late,
            total.rejected,
            total.dropped,
            mean_batch
        );
    }
}

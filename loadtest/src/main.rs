//! The `infergate-load` binary: parses the command line, runs the load on a multi-thread
//! runtime, prints the report and optionally writes it as JSON.

use anyhow::Context as _;
use clap::Parser as _;
use infergate_load::{
    advise, capacity_report, derive, hpa, keda, parse_trace, run_report, search, to_toml, to_yaml,
    CapacityArgs, Cli, Command, MergeArgs, RunArgs, TuneArgs, HPA_HEADER,
};

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::Capacity(args) => capacity(&args),
        Command::Merge(args) => merge(&args),
        Command::Tune(args) => tune(&args),
    }
}

fn merge(args: &MergeArgs) -> anyhow::Result<()> {
    let reports = (args.reports.iter())
        .map(|path| {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Ok((path.display().to_string(), text))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = infergate_load::merge(&reports)?;
    print!("{}", report.render());
    args.output.write(&report, || run_report(&report))
}

fn tune(args: &TuneArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.capacity)
        .with_context(|| format!("reading --capacity {}", args.capacity.display()))?;
    let report = serde_json::from_str(&text).context("--capacity is not a capacity report")?;
    let settings = args.to_settings();
    let derived = derive(&report, &settings)?;
    let replay = match &args.trace {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --trace {}", path.display()))?;
            Some(infergate_load::replay(&derived, &settings, &parse_trace(&text)?))
        }
        None => None,
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let write = |name: &str, text: String| {
        let path = args.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("hpa.yaml", format!("{}{}", HPA_HEADER, to_yaml(&hpa(&derived, &settings))))?;
    write("scaledobject.yaml", to_yaml(&keda(&derived, &settings)))?;
    let scheduler = advise(&report, args.workers as usize);
    if let Some(advice) = &scheduler {
        write("scheduler.toml", to_toml(advice, &args.model))?;
    }
    let summary = serde_json::json!({ "derived": derived, "replay": replay, "scheduler": scheduler });
    write("tune.json", serde_json::to_string_pretty(&summary).context("serializing")?)?;
    println!(
        "capacity {:.1} req/s per replica at {:.1} ms: {:.1} in flight (Little); target {:.2} per pod; \
         replicas {}..{}",
        derived.capacity_per_s,
        derived.latency_s * 1000.0,
        derived.in_flight_at_capacity,
        derived.target_in_flight,
        derived.min_replicas,
        derived.max_replicas
    );
    if let Some(r) = &replay {
        println!(
            "replay: {:.2}% of requests within capacity, {:.2} replica-hours, peak {} replicas, {} scale events",
            r.slo_attainment * 100.0,
            r.replica_hours,
            r.peak_replicas,
            r.events.len()
        );
    }
    match &scheduler {
        Some(a) => println!(
            "scheduler: batch cost {:.3} ms + {:.4} ms per item; max_size {}, max_delay {:.3} ms (scheduler.toml)",
            a.base_ms, a.per_item_ms, a.max_batch, a.max_delay_ms
        ),
        None => println!(
            "scheduler: no batch settings (run `capacity --metrics-url` so that steps record the gateway's batching)"
        ),
    }
    println!("wrote {}/{{hpa.yaml,scaledobject.yaml,tune.json}}", args.out.display());
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")
}

fn capacity(args: &CapacityArgs) -> anyhow::Result<()> {
    let (target, settings) = args.to_settings()?;
    let report = runtime()?.block_on(search(&target, &settings))?;
    print!("{}", report.render());
    args.output.write(&report, || capacity_report(&report))
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    // Blocking file I/O stays outside the runtime: the body is read here, the JSON below.
    let config = args.to_config()?;
    let report = runtime()?.block_on(infergate_load::run(config))?;
    print!("{}", report.render());
    args.output.write(&report, || run_report(&report))?;
    Ok(())
}

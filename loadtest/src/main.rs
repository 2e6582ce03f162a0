//! The `infergate-load` binary: parses the command line, runs the load on a multi-thread
//! runtime, prints the report and optionally writes it as JSON.

use anyhow::Context as _;
use clap::Parser as _;
use infergate_load::cli::{CapacityArgs, Cli, Command, RunArgs};

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::Capacity(args) => capacity(&args),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")
}

fn capacity(args: &CapacityArgs) -> anyhow::Result<()> {
    let (target, settings) = args.to_settings()?;
    let report = runtime()?.block_on(infergate_load::capacity::search(&target, &settings))?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report).context("serializing the report")?;
        std::fs::write(path, json).with_context(|| format!("writing --json {}", path.display()))?;
    }
    Ok(())
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    // Blocking file I/O stays outside the runtime: the body is read here, the JSON below.
    let config = args.to_config()?;
    let report = runtime()?.block_on(infergate_load::run::run(config))?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report).context("serializing the report")?;
        std::fs::write(path, json).with_context(|| format!("writing --json {}", path.display()))?;
    }
    Ok(())
}

//! `omnifold-workload`: writes deterministic workloads as NDJSON, one event per line in the
//! contract's JSON form.
//!
//!     omnifold-workload sample [--out deploy/local/sample-events.ndjson]
//!     omnifold-workload generate --seed 1 --skus 10000 --events 1000000 [--out FILE]

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use omnifold_runtime::contract_file::load_contract;
use omnifold_workload::{WorkloadOptions, write_ndjson};

#[derive(Parser)]
#[command(name = "omnifold-workload", about = "Deterministic omnifold event workloads as NDJSON")]
struct Cli {
    /// The coordination contract the events must be valid against.
    #[arg(long, global = true, default_value = "deploy/local/contract.toml")]
    contract: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The bundled sample: seed 7, 200 SKUs, 14 days from 2026-11-09, with its designed incidents.
    Sample {
        /// Output file; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A benchmark workload of exactly N events (about 55% placed, 20% shipped, 5% cancelled,
    /// 3% returned, 10% stock, 5% prices, 2% promotions).
    Generate {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1_000)]
        skus: usize,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Output file; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rules = load_contract(&cli.contract)?;
    let (options, out) = match cli.command {
        Command::Sample { out } => (WorkloadOptions::sample(), out),
        Command::Generate { seed, skus, events, out } => {
            (WorkloadOptions { seed, ..WorkloadOptions::bench(skus, events) }, out)
        }
    };
    let started = Instant::now();
    let count = match &out {
        Some(path) => {
            let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            let mut writer = BufWriter::with_capacity(1 << 20, file);
            let count = write_ndjson(&rules, &options, &mut writer)?;
            writer.flush()?;
            count
        }
        None => {
            let stdout = io::stdout();
            let mut writer = BufWriter::with_capacity(1 << 20, stdout.lock());
            let count = write_ndjson(&rules, &options, &mut writer)?;
            writer.flush()?;
            count
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let target = out.as_ref().map_or("stdout".to_string(), |p| p.display().to_string());
    eprintln!(
        "wrote {count} events to {target} in {seconds:.2}s ({:.0} events/s)",
        count as f64 / seconds.max(1e-9)
    );
    Ok(())
}

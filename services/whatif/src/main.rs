//! `omnifold-what-if`: replay the event log under the current contract and under
//! alternatives, and compare. It reads the events topic from its start (committing nothing,
//! writing nothing) or an NDJSON file, and never touches a live topic.
//!
//!     omnifold-what-if --events-file deploy/local/sample-events.ndjson --retire wholesale \
//!         --set channels.amazon.max_share=0.4 [--json answer.json] [--html answer.html]
//!     omnifold-what-if --bootstrap 127.0.0.1:9092 --alt 'tight: set channels.amazon.max_share=0.4' \
//!         --alt 'no-b2b: retire wholesale@2026-W47; shift wholesale=shopify:0.3'
//!     omnifold-what-if bench --events 1000000

/// mimalloc, set up as `omnifold_runtime::allocator` says.
#[global_allocator]
static ALLOCATOR: omnifold_runtime::allocator::Allocator = omnifold_runtime::allocator::Allocator;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use omnifold_runtime::KafkaClientArgs;
use omnifold_runtime::contract_file::load_contract;
use omnifold_whatif::{History, Override, Scenario, answer, page, run_all, table};

#[derive(Parser)]
#[command(
    name = "omnifold-what-if",
    about = "Replay real history under other rules: the current contract beside alternatives, side by side",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(Subcommand)]
enum Command {
    /// Replays a generated history with three alternatives and prints the rate.
    Bench {
        #[arg(long, env = "OMNIFOLD_CONTRACT", default_value = "deploy/local/contract.toml")]
        contract: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long, default_value_t = 1_000)]
        skus: usize,
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Alternatives beside the baseline (at most 3; 0 measures one core).
        #[arg(long, default_value_t = 3)]
        alternatives: usize,
    },
}

#[derive(clap::Args)]
struct Args {
    /// The current coordination contract: the baseline.
    #[arg(long, env = "OMNIFOLD_CONTRACT", default_value = "deploy/local/contract.toml")]
    contract: PathBuf,
    /// Replay these NDJSON files of events (the contract's JSON form), one after the other,
    /// instead of the topic. Repeatable.
    #[arg(long)]
    events_file: Vec<PathBuf>,
    /// Partitions the file's events are spread over by key, as the events topic would hold
    /// them (duplicate ids are detected per partition).
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// The brokers and client settings (TLS, SASL...), when reading the events topic.
    #[command(flatten)]
    kafka: KafkaClientArgs,
    /// Prefix of the topic names.
    #[arg(long, env = "OMNIFOLD_TOPIC_PREFIX", default_value = "omnifold.")]
    topic_prefix: String,
    /// How long to wait for the topic's partitions to report their end.
    #[arg(long, default_value_t = 600)]
    read_timeout_s: u64,
    /// An alternative contract file (one alternative, with the flags below).
    #[arg(long)]
    with_contract: Option<PathBuf>,
    /// Retire a channel from TIME on (Unix ms, 2026-W47, 2026-11-16 or 2026-11-16T08:30Z;
    /// the start of the history when absent): CHANNEL[@TIME].
    #[arg(long)]
    retire: Option<String>,
    /// Change one contract value: KEY=VALUE, e.g. channels.amazon.max_share=0.4. Repeatable.
    #[arg(long = "set")]
    sets: Vec<String>,
    /// Move a fraction of the retired channel's units to another channel: FROM=TO:FRACTION.
    #[arg(long)]
    shift: Option<String>,
    /// A further alternative: `[NAME:] OVERRIDE; OVERRIDE...`, each override `set KEY=VALUE`,
    /// `retire CHANNEL[@TIME]`, `shift FROM=TO:FRACTION` or `contract FILE`. Repeatable.
    #[arg(long = "alt")]
    alts: Vec<String>,
    /// Write the JSON answer here (schemas/what-if.schema.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the HTML page here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Print no table.
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    omnifold_runtime::allocator::purge_whole_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Bench { contract, events, skus, days, partitions, alternatives }) => {
            let report =
                omnifold_whatif::bench::run(&contract, (events, skus, days, partitions), alternatives)?;
            println!(
                "what-if bench: {} events, {} scenarios (baseline + alternatives) on {} cores: {:.1} s, {:.0} history events/s, \
                 {:.0} folded events/s; 10M events would take about {:.0} s",
                report.events,
                report.scenarios,
                report.threads_available,
                report.replay_s,
                report.history_events_per_s,
                report.folded_events_per_s,
                report.projected_10m_s
            );
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        None => what_if(cli.args),
    }
}

fn what_if(args: Args) -> anyhow::Result<()> {
    let mut alternatives: Vec<(String, Vec<Override>)> = Vec::new();
    let mut main_alt = Vec::new();
    if let Some(path) = &args.with_contract {
        main_alt.push(Override::Contract(path.clone()));
    }
    for set in &args.sets {
        main_alt.push(Override::set(set).map_err(anyhow::Error::msg)?);
    }
    if let Some(retire) = &args.retire {
        main_alt.push(Override::retire(retire).map_err(anyhow::Error::msg)?);
    }
    if let Some(shift) = &args.shift {
        main_alt.push(Override::shift(shift).map_err(anyhow::Error::msg)?);
    }
    if !main_alt.is_empty() {
        alternatives.push(("what-if".into(), main_alt));
    }
    for (i, alt) in args.alts.iter().enumerate() {
        alternatives
            .push(omnifold_whatif::scenario::parse_alternative(alt, i + 1).map_err(anyhow::Error::msg)?);
    }
    if alternatives.is_empty() {
        eprintln!(
            "what-if: no change given (--retire, --set, --shift, --with-contract or --alt): replaying the baseline alone"
        );
    }
    let rules = load_contract(&args.contract)?;

    let started = Instant::now();
    let history = match args.events_file.as_slice() {
        [] => {
            let kafka = args.kafka.options()?;
            let topic = omnifold_runtime::Topics::new(&args.topic_prefix).events;
            History::from_topic(&kafka, &topic, Duration::from_secs(args.read_timeout_s))?
        }
        files => History::from_ndjson_files(files, args.partitions)?,
    };
    eprintln!(
        "what-if: read {} events from {} in {:.1} s",
        history.len(),
        history.source,
        started.elapsed().as_secs_f64()
    );
    if history.unreadable > 0 {
        eprintln!(
            "what-if: skipped {} records that are not events (first: {})",
            history.unreadable,
            history.first_unreadable.as_deref().unwrap_or("")
        );
    }

    let mut scenarios = vec![Scenario::baseline(rules)];
    for (name, overrides) in &alternatives {
        if scenarios.iter().any(|s| s.name == *name) {
            bail!("two scenarios are named {name}");
        }
        scenarios.push(Scenario::build(name, &args.contract, overrides, history.start_ms())?);
    }
    let started = Instant::now();
    let runs = run_all(&history, &scenarios, Some(Duration::from_secs(2)));
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "what-if: replayed {} scenarios in {seconds:.1} s ({:.0} history events/s)",
        scenarios.len(),
        history.len() as f64 / seconds.max(1e-9)
    );
    let skus = history.sku_index();
    let channels = omnifold_whatif::Channels::of(&scenarios);
    let answer = answer(&history, &skus, &channels, &scenarios, &runs);
    if !args.quiet {
        print!("{}", table::render_table(&answer));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&answer)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("what-if: wrote {}", path.display());
    }
    if let Some(path) = &args.html {
        std::fs::write(path, page::render_page(&answer))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("what-if: wrote {}", path.display());
    }
    Ok(())
}

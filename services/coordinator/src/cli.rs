//! The command line of `omnifold-coordinator`: run the coordinator, watch its outputs, explain
//! a SKU's prices, or check a contract. A library module so that test harnesses run the very
//! same binary. Escalations reach on-call through the connector's sink,
//! `omnifold-connector oncall`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::EngineOptions;
use crate::http::{fetch_prices, render_table};
use crate::watch::{WatchOptions, watch};
use crate::{Coordinator, CoordinatorOptions};
use anyhow::Context;
use clap::{Parser, Subcommand};
use omnifold_runtime::cli::KafkaArgs;
use omnifold_runtime::telemetry::{init_logs, serve_metrics, shutdown_signal};
use omnifold_runtime::{TopicOptions, load_contract};

#[derive(Parser)]
#[command(version, about = "omnifold coordinator: stock allocation, alerts and escalations across channels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events and publish availability, alerts and escalations.
    Run {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The coordination contract (TOML).
        #[arg(long, env = "OMNIFOLD_CONTRACT")]
        contract: PathBuf,
        /// The store directory.
        #[arg(long, env = "OMNIFOLD_STORE", default_value = ".omnifold/coordinator")]
        store: PathBuf,
        /// Partitions of the events topic when it has to be created.
        #[arg(long, default_value_t = 6)]
        events_partitions: i32,
        /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9464.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// Exit once every event in the topic is folded and its outputs sent.
        #[arg(long)]
        exit_when_caught_up: bool,
        /// Most events folded into one atomic store commit.
        #[arg(long, default_value_t = crate::service::DEFAULT_BATCH_MAX_EVENTS)]
        batch_max_events: usize,
        /// Budget of the SKU state cache in MiB; states beyond it are evicted and reloaded
        /// from the store on their next event.
        #[arg(long, env = "OMNIFOLD_STATE_CACHE_MB", default_value_t = 256)]
        state_cache_mb: usize,
        /// Size in MiB of the in-memory filter of stored event ids and order lines, which spares
        /// a store read for each new one (0: none); at the default 16, under 1% false positives
        /// up to about 12 million keys and about 2% at 16 million.
        #[arg(long, env = "OMNIFOLD_KEY_FILTER_MB", default_value_t = 16)]
        key_filter_mb: usize,
        /// Serve price provenance (GET /v1/prices/SKU) on this loopback address, e.g. 127.0.0.1:8080.
        #[arg(long, env = "OMNIFOLD_HTTP")]
        http: Option<SocketAddr>,
        /// The consumer group every coordinator of this deployment joins: the events
        /// partitions are spread over its members.
        #[arg(long, default_value = "omnifold-coordinator")]
        group: String,
        /// This instance's static group membership id, stable across its restarts and unique
        /// in the group (e.g. the pod name): a restarted instance takes its partitions back at
        /// once. Without it the instance joins as a dynamic member.
        #[arg(long, env = "OMNIFOLD_INSTANCE_ID")]
        instance_id: Option<String>,
        /// How long the group waits for a silent member before moving its partitions, in
        /// milliseconds.
        #[arg(long, default_value_t = 10_000)]
        session_timeout_ms: u64,
        /// Do not write the store's changes to the changelog topic: a partition moved to
        /// another instance is then restored by re-folding its log
        #[arg(long)]
        no_changelog: bool,
        /// How often the changelog is sent, milliseconds: each key written in between is sent
        /// once
        #[arg(long, default_value_t = crate::service::DEFAULT_CHANGELOG_INTERVAL_MS)]
        changelog_interval_ms: u64,
        /// Entries of a partition's whole state sent to the changelog per sending, when the
        /// changelog lacks it (after a replay restore, or a run with --no-changelog)
        #[arg(long, default_value_t = 100_000)]
        changelog_dump_records: usize,
    },
    /// Show which member of the coordinators' group owns which events partition, each
    /// partition's lag and how far its last owner published.
    Status {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The coordinators' consumer group.
        #[arg(long, default_value = "omnifold-coordinator")]
        group: String,
    },
    /// Print a SKU's price on every channel and the events behind each number, from a running
    /// coordinator's --http endpoint.
    Price {
        sku: String,
        /// The coordinator's --http address.
        #[arg(long, env = "OMNIFOLD_HTTP", default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// Print the endpoint's JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print alerts, escalations and dead letters (and availability with --availability,
    /// replenishment suggestions and routing advice with --advice).
    Watch {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(long)]
        availability: bool,
        /// Also print reorder and transfer suggestions and routing advice.
        #[arg(long)]
        advice: bool,
        /// Exit after this many seconds without a new record.
        #[arg(long)]
        idle_exit_secs: Option<u64>,
    },
    /// Validate a contract file and print every problem.
    CheckContract { contract: PathBuf },
}

/// Parses the command line and runs the command.
pub fn main() -> anyhow::Result<()> {
    init_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(Cli::parse().command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            kafka,
            contract,
            store,
            events_partitions,
            metrics,
            exit_when_caught_up,
            batch_max_events,
            state_cache_mb,
            key_filter_mb,
            http,
            group,
            instance_id,
            session_timeout_ms,
            no_changelog,
            changelog_interval_ms,
            changelog_dump_records,
        } => {
            if let Some(addr) = metrics {
                serve_metrics(addr).map_err(anyhow::Error::msg)?;
            }
            let options = CoordinatorOptions {
                kafka: kafka.kafka()?,
                topics: TopicOptions { events_partitions, ..kafka.topic_options() },
                group_id: group,
                contract,
                store,
                batch_max_events,
                batch_max_ms: 20,
                exit_when_caught_up,
                http,
                engine: EngineOptions {
                    state_cache_bytes: state_cache_mb << 20,
                    key_filter_bytes: key_filter_mb << 20,
                    ..EngineOptions::default()
                },
                broker_outage_max: kafka.broker_outage_max,
                group_instance_id: instance_id,
                session_timeout_ms,
                changelog: !no_changelog,
                changelog_interval_ms,
                changelog_dump_records,
            };
            Coordinator::new(options)?.run(shutdown_signal()).await.context("coordinator failed")?;
        }
        Command::Price { sku, http, json } => price(&sku, http, json).await?,
        Command::Status { kafka, group } => {
            let topics = omnifold_runtime::Topics::new(&kafka.topic_options().prefix);
            let options = kafka.kafka()?;
            let status =
                tokio::task::spawn_blocking(move || crate::status::status(&options, &topics, &group))
                    .await??;
            print!("{}", crate::status::render(&status));
        }
        Command::Watch { kafka, availability, advice, idle_exit_secs } => {
            let options = WatchOptions {
                kafka: kafka.kafka()?,
                topics: kafka.topics(),
                availability,
                advice,
                idle_exit: idle_exit_secs.map(Duration::from_secs),
            };
            tokio::task::spawn_blocking(move || watch(&options, print_or_exit)).await??;
        }
        Command::CheckContract { contract } => {
            let rules = load_contract(&contract)?;
            println!(
                "{}: valid ({} channels, {} locations)",
                contract.display(),
                rules.contract.channels.len(),
                rules.contract.locations.len()
            );
        }
    }
    Ok(())
}

async fn price(sku: &str, http: SocketAddr, json: bool) -> anyhow::Result<()> {
    let view =
        fetch_prices(http, sku).await.with_context(|| format!("cannot explain the prices of {sku}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", render_table(&view));
    }
    Ok(())
}

/// Prints a watched line; a closed stdout (the reader of a pipe went away) ends the watch
/// quietly instead of panicking.
fn print_or_exit(line: &str) {
    use std::io::Write;
    if writeln!(std::io::stdout().lock(), "{line}").is_err() {
        std::process::exit(0);
    }
}

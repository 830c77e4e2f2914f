//! The command line of `omnifold-coordinator`: run the coordinator, watch its outputs, or
//! check a contract. A library module so that test harnesses run the very same binary.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crate::watch::{WatchOptions, watch};
use crate::{Coordinator, CoordinatorOptions};
use omnifold_runtime::telemetry::{init_logs, serve_metrics, shutdown_signal};
use omnifold_runtime::{KafkaOptions, TopicOptions, Topics, load_contract};

#[derive(Parser)]
#[command(version, about = "omnifold coordinator: stock allocation, alerts and escalations across channels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "OMNIFOLD_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Prefix of every topic name.
    #[arg(long, env = "OMNIFOLD_TOPIC_PREFIX", default_value = "omnifold.")]
    topic_prefix: String,
}

impl KafkaArgs {
    fn kafka(&self) -> KafkaOptions {
        KafkaOptions { bootstrap_servers: self.bootstrap.clone(), ..KafkaOptions::default() }
    }
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
        /// The sled store directory.
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
        #[arg(long, default_value_t = 5_000)]
        batch_max_events: usize,
    },
    /// Print alerts, escalations and dead letters (and availability with --availability).
    Watch {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(long)]
        availability: bool,
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
        Command::Run { kafka, contract, store, events_partitions, metrics, exit_when_caught_up, batch_max_events } => {
            if let Some(addr) = metrics {
                serve_metrics(addr).map_err(anyhow::Error::msg)?;
            }
            let options = CoordinatorOptions {
                kafka: kafka.kafka(),
                topics: TopicOptions { prefix: kafka.topic_prefix.clone(), events_partitions, ..TopicOptions::default() },
                group_id: "omnifold-coordinator".to_string(),
                contract,
                store,
                batch_max_events,
                batch_max_ms: 20,
                exit_when_caught_up,
            };
            Coordinator::new(options)?.run(shutdown_signal()).await.context("coordinator failed")?;
        }
        Command::Watch { kafka, availability, idle_exit_secs } => {
            let options = WatchOptions {
                kafka: kafka.kafka(),
                topics: Topics::new(&kafka.topic_prefix),
                availability,
                idle_exit: idle_exit_secs.map(Duration::from_secs),
            };
            tokio::task::spawn_blocking(move || watch(&options, |line| println!("{line}"))).await??;
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

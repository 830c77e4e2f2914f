//! `omnifold-connector`: publish channel events to omnifold.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use omnifold_connector::ndjson::publish_lines;
use omnifold_connector::publish::Publisher;
use omnifold_runtime::telemetry::init_logs;
use omnifold_runtime::{KafkaOptions, TopicOptions, Topics, load_contract};
use tokio::io::BufReader;

#[derive(Parser)]
#[command(version, about = "omnifold connectors: channel payloads in, contract events out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish NDJSON events (CONTRACT.md section 2, JSON form) from a file or stdin.
    Ndjson {
        /// The file to read; stdin when absent or `-`.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, env = "OMNIFOLD_BOOTSTRAP", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long, env = "OMNIFOLD_TOPIC_PREFIX", default_value = "omnifold.")]
        topic_prefix: String,
        /// Check every event against this contract before sending it.
        #[arg(long, env = "OMNIFOLD_CONTRACT")]
        contract: Option<PathBuf>,
        /// Partitions of the events topic when it has to be created.
        #[arg(long, default_value_t = 6)]
        events_partitions: i32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logs();
    let Command::Ndjson { file, bootstrap, topic_prefix, contract, events_partitions } = Cli::parse().command;
    let kafka = KafkaOptions { bootstrap_servers: bootstrap, ..KafkaOptions::default() };
    let topics = Topics::new(&topic_prefix);
    let options = TopicOptions { prefix: topic_prefix, events_partitions, ..TopicOptions::default() };
    kafka.ensure_topics(&topics.specs(&options)).await?;
    let rules = contract.map(|path| load_contract(&path)).transpose()?;
    let mut publisher = Publisher::new(&kafka, &topics, rules)?;
    let on_refused = |line: usize, reason: &str| eprintln!("line {line}: {reason}");
    let report = match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => {
            let file = tokio::fs::File::open(&path).await.map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
            publish_lines(BufReader::new(file), &mut publisher, on_refused).await?
        }
        None => publish_lines(BufReader::new(tokio::io::stdin()), &mut publisher, on_refused).await?,
    };
    eprintln!("{} lines read, {} events published, {} refused", report.lines, report.published, report.refused.len());
    Ok(())
}

//! The command line of `omnifold-reporter`: run the reporter, show a week as a table, write
//! the weekly page, or serve it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use omnifold_runtime::TopicOptions;
use omnifold_runtime::cli::KafkaArgs;
use omnifold_runtime::telemetry::{init_logs, serve_metrics, shutdown_signal};

use crate::http::{PageSource, serve};
use crate::page::render_page;
use crate::readback::latest_snapshots;
use crate::table::render_table;
use crate::view::WeekView;
use crate::{Reporter, ReporterOptions};

#[derive(Parser)]
#[command(version, about = "omnifold reporter: weekly contribution of every sales channel")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events and alerts; publish weekly contribution snapshots.
    Run {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The coordination contract (TOML).
        #[arg(long, env = "OMNIFOLD_CONTRACT")]
        contract: PathBuf,
        /// The store directory (one per instance).
        #[arg(long, env = "OMNIFOLD_STORE", default_value = ".omnifold/reporter")]
        store: PathBuf,
        /// The consumer group every instance of this reporter joins.
        #[arg(long, default_value = "omnifold-reporter")]
        group: String,
        /// Partitions of the events topic when it has to be created.
        #[arg(long, default_value_t = 6)]
        events_partitions: i32,
        /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9465.
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// Exit once every input is folded and every snapshot sent (single instance).
        #[arg(long)]
        exit_when_caught_up: bool,
        /// Most inputs folded into one atomic store commit.
        #[arg(long, default_value_t = 5_000)]
        batch_max_events: usize,
        /// This instance's static group membership id, stable across its restarts and unique
        /// in the group (e.g. the pod name): a restarted instance takes its partitions back
        /// at once. Without it the instance joins as a dynamic member.
        #[arg(long, env = "OMNIFOLD_INSTANCE_ID")]
        instance_id: Option<String>,
        /// How long the group waits for a silent member, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        session_timeout_ms: u64,
    },
    /// Print one week of every channel as a table (the latest week by default).
    Show {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// An ISO week such as 2026-W47.
        #[arg(long)]
        week: Option<String>,
    },
    /// Write one week's report as a self-contained HTML page.
    Page {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// An ISO week such as 2026-W47 (the latest by default).
        #[arg(long)]
        week: Option<String>,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Serve the weekly page over HTTP (loopback only).
    Serve {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: SocketAddr,
    },
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
            group,
            events_partitions,
            metrics,
            exit_when_caught_up,
            batch_max_events,
            instance_id,
            session_timeout_ms,
        } => {
            if let Some(addr) = metrics {
                serve_metrics(addr).map_err(anyhow::Error::msg)?;
            }
            let options = ReporterOptions {
                kafka: kafka.kafka(),
                topics: TopicOptions { events_partitions, ..kafka.topic_options() },
                group_id: group,
                contract,
                store,
                batch_max_events,
                batch_max_ms: 20,
                exit_when_caught_up,
                broker_outage_max: kafka.broker_outage_max,
                group_instance_id: instance_id,
                session_timeout_ms,
            };
            Reporter::new(options)?.run(shutdown_signal()).await.context("reporter failed")?;
        }
        Command::Show { kafka, week } => {
            let view = read_view(&kafka, week).await?;
            print!("{}", render_table(&view));
        }
        Command::Page { kafka, week, out } => {
            let view = read_view(&kafka, week).await?;
            std::fs::write(&out, render_page(&view))
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote {} ({} channels, {})", out.display(), view.rows.len(), view.week);
        }
        Command::Serve { kafka, listen } => {
            let source = PageSource::new(kafka.kafka(), kafka.topics().snapshots);
            serve(listen, source, shutdown_signal()).await?;
        }
    }
    Ok(())
}

/// One week read back from the snapshots topic.
async fn read_view(kafka: &KafkaArgs, week: Option<String>) -> anyhow::Result<WeekView> {
    let (options, topic) = (kafka.kafka(), kafka.topics().snapshots);
    let snapshots = tokio::task::spawn_blocking(move || latest_snapshots(&options, &topic))
        .await?
        .context("cannot read the snapshots")?;
    Ok(WeekView::build(&snapshots, week.as_deref())?)
}

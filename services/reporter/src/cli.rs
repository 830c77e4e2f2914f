//! The command line of `omnifold-reporter`: run the reporter, show a week as a table, write
//! the weekly page, or serve it; show the operations view, write a channel's handover.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, Subcommand};
use omnifold_runtime::cli::KafkaArgs;
use omnifold_runtime::telemetry::{init_logs, serve_metrics, shutdown_signal};
use omnifold_runtime::{TopicOptions, load_contract};

use crate::handover::check_channel;
use crate::handover_page::{render_handover_markdown, render_handover_page};
use crate::http::{PageSource, serve};
use crate::operations_feed::{Feed, HANDOVER_FEEDS, OPERATIONS_FEEDS, OperationsFeed};
use crate::operations_page::render_operations_page;
use crate::operations_table::render_operations_table;
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
    /// Serve the weekly page over HTTP (loopback only); with --contract, the operations
    /// page at /operations too, kept current from the alerts, escalations and availability.
    Serve {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: SocketAddr,
        /// The coordination contract (TOML): owners and on-call of the operations page.
        #[arg(long, env = "OMNIFOLD_CONTRACT")]
        contract: Option<PathBuf>,
        /// The operations store directory (one process at a time).
        #[arg(long, default_value = ".omnifold/operations")]
        store: PathBuf,
    },
    /// Print the operations view: open conflicts, pages of the last 7 days, SKUs in
    /// scarcity, attention beside contribution.
    Operations {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The coordination contract (TOML).
        #[arg(long, env = "OMNIFOLD_CONTRACT")]
        contract: PathBuf,
        /// The operations store directory, caught up incrementally (one process at a time).
        #[arg(long, default_value = ".omnifold/operations")]
        store: PathBuf,
        /// Also write the operations page to this HTML file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a channel's handover: its rules, last 8 weeks, open conflicts, pages, top SKUs
    /// and event sources, as one self-contained HTML page (and Markdown).
    Handover {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The channel id, e.g. amazon.
        channel: String,
        /// The coordination contract (TOML).
        #[arg(long, env = "OMNIFOLD_CONTRACT")]
        contract: PathBuf,
        /// The operations store directory, caught up incrementally (one process at a time).
        #[arg(long, default_value = ".omnifold/operations")]
        store: PathBuf,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
        /// Also write the handover as Markdown to this file.
        #[arg(long)]
        markdown: Option<PathBuf>,
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
                kafka: kafka.kafka()?,
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
        Command::Serve { kafka, listen, contract, store } => {
            let mut source = PageSource::new(kafka.kafka()?, kafka.topics().snapshots.to_string());
            let follower = match contract {
                Some(contract) => {
                    let feed = open_feed(&kafka, &contract, &store).await?;
                    source = source.with_operations(feed.clone());
                    Some(spawn_follower(feed))
                }
                None => None,
            };
            let served = serve(listen, source, shutdown_signal()).await;
            if let Some((stop, follower)) = follower {
                stop.store(true, Ordering::Relaxed);
                follower.await?;
            }
            served?;
        }
        Command::Operations { kafka, contract, store, out } => {
            let feed = caught_up(open_feed(&kafka, &contract, &store).await?, &OPERATIONS_FEEDS).await?;
            let view = tokio::task::spawn_blocking(move || feed.operations_view()).await??;
            print!("{}", render_operations_table(&view));
            if let Some(out) = out {
                write(&out, &render_operations_page(&view, false))?;
                println!("\nwrote {}", out.display());
            }
        }
        Command::Handover { kafka, channel, contract, store, out, markdown } => {
            let feed = open_feed(&kafka, &contract, &store).await?;
            check_channel(feed.rules(), &channel)?;
            let feed = caught_up(feed, &HANDOVER_FEEDS).await?;
            let view = tokio::task::spawn_blocking(move || feed.handover_view(&channel)).await??;
            write(&out, &render_handover_page(&view))?;
            println!(
                "wrote {} ({}, {} weeks, {} open conflicts)",
                out.display(),
                view.channel,
                view.weeks.len(),
                view.conflicts.len()
            );
            if let Some(markdown) = markdown {
                write(&markdown, &render_handover_markdown(&view))?;
                println!("wrote {}", markdown.display());
            }
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The operations feed over its store, with the contract's rules.
async fn open_feed(kafka: &KafkaArgs, contract: &Path, store: &Path) -> anyhow::Result<OperationsFeed> {
    let rules = load_contract(contract)?;
    let (options, topics, store) = (kafka.kafka()?, kafka.topics(), store.to_path_buf());
    let feed = tokio::task::spawn_blocking(move || OperationsFeed::open(options, topics, rules, &store))
        .await?
        .context("cannot open the operations store")?;
    Ok(feed)
}

/// The feed with every partition of `feeds` folded to its end.
async fn caught_up(feed: OperationsFeed, feeds: &'static [Feed]) -> anyhow::Result<OperationsFeed> {
    let reader = feed.clone();
    let folded = tokio::task::spawn_blocking(move || reader.catch_up(feeds))
        .await?
        .context("cannot read the operations topics")?;
    tracing::info!(folded, "operations store caught up");
    Ok(feed)
}

/// Follows the operations topics on a blocking thread until the returned flag is set.
fn spawn_follower(feed: OperationsFeed) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::task::spawn_blocking(move || feed.follow(&OPERATIONS_FEEDS, &flag));
    (stop, task)
}

/// One week read back from the snapshots topic.
async fn read_view(kafka: &KafkaArgs, week: Option<String>) -> anyhow::Result<WeekView> {
    let (options, topic) = (kafka.kafka()?, kafka.topics().snapshots);
    let snapshots = tokio::task::spawn_blocking(move || latest_snapshots(&options, &topic))
        .await?
        .context("cannot read the snapshots")?;
    Ok(WeekView::build(&snapshots, week.as_deref())?)
}

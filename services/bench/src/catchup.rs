//! `omnifold-bench catch-up`: the coordinator over the event log, then the reporter over what
//! it wrote (its contribution ledger and alerts), each from an empty store until caught up,
//! in this process, against a real broker (memory storage). The figures are the reporter's
//! catch-up rate against the coordinator's and the bytes of its partials topic.
//!
//! ```text
//! cargo run --release -p omnifold-bench -- catch-up [--events 50000] [--skus 1000]
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use omnifold_coordinator::engine::EngineOptions;
use omnifold_coordinator::{Coordinator, CoordinatorOptions};
use omnifold_reporter::{ReportTopics, Reporter, ReporterOptions};
use omnifold_runtime::{KafkaOptions, TopicOptions, Topics, load_contract};
use omnifold_testkit::Broker;
use omnifold_workload::{WorkloadOptions, generate};

use crate::kafka::{Encoded, produce, producer};

const PARTITIONS: i32 = 6;

/// The options of the catch-up benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct CatchUpArgs {
    /// Events loaded into the events topic.
    #[arg(long, default_value_t = 50_000)]
    pub events: usize,
    /// SKUs of the workload.
    #[arg(long, default_value_t = 1_000)]
    pub skus: usize,
    /// The coordination contract (default: deploy/local/contract.toml).
    #[arg(long, default_value = "deploy/local/contract.toml")]
    pub contract: std::path::PathBuf,
    /// Upper bound of each run, seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
}

/// What one catch-up run measured.
#[derive(Debug, Clone)]
pub struct CatchUp {
    pub events: usize,
    pub coordinator_s: f64,
    pub reporter_s: f64,
    /// The reporter started again on its caught-up store, with the same static member id,
    /// until caught up: the restart's cost before any progress.
    pub reporter_restart_s: f64,
    /// Bytes of record values the reporter wrote to its partials topic, and how many.
    pub partials_bytes: u64,
    pub partials_records: usize,
}

impl CatchUp {
    /// How many times longer the reporter took than the coordinator.
    pub fn reporter_over_coordinator(&self) -> f64 {
        self.reporter_s / self.coordinator_s
    }

    pub fn markdown(&self) -> String {
        let rate = |s: f64| self.events as f64 / s;
        format!(
            "| run ({} events, {} partitions) | seconds | events/s |\n|---|---:|---:|\n\
             | coordinator from an empty store | {:.2} | {:.0} |\n\
             | reporter from an empty store | {:.2} | {:.0} |\n\
             | reporter restarted on its store (same static member id), to caught up | {:.2} | |\n\n\
             reporter / coordinator time: {:.2}x (target: within 3x)\n\n\
             partials topic: {} messages, {} bytes ({:.0} bytes per 100k events)\n",
            self.events,
            PARTITIONS,
            self.coordinator_s,
            rate(self.coordinator_s),
            self.reporter_s,
            rate(self.reporter_s),
            self.reporter_restart_s,
            self.reporter_over_coordinator(),
            self.partials_records,
            self.partials_bytes,
            self.partials_bytes as f64 * 100_000.0 / self.events as f64
        )
    }
}

pub async fn run(args: CatchUpArgs) -> Result<CatchUp> {
    let broker = Broker::start().await.context("start the broker")?;
    let kafka = KafkaOptions { bootstrap_servers: broker.bootstrap(), ..KafkaOptions::default() };
    let topic_options = TopicOptions { events_partitions: PARTITIONS, ..TopicOptions::default() };
    let topics = Topics::new(&topic_options.prefix);
    kafka.ensure_topics(&topics.specs(&topic_options)).await?;
    let rules = load_contract(&args.contract)?;
    let events = generate(&rules, &WorkloadOptions::bench(args.skus, args.events));
    let records: Vec<Encoded> = events.iter().map(Encoded::of).collect();
    let timeout = Duration::from_secs(args.timeout_secs);
    eprintln!("loading {} events", records.len());
    produce(&producer(&kafka)?, &topics.events, &records, None, timeout).await?;

    let work = tempfile::tempdir()?;
    eprintln!("coordinator from an empty store");
    let coordinator_s =
        timed(timeout, coordinator(&kafka, &topic_options, &args.contract, work.path())).await?;
    eprintln!("reporter from an empty store");
    let reporter_s = timed(timeout, reporter(&kafka, &topic_options, &args.contract, work.path())).await?;
    eprintln!("reporter restarted on its store");
    let reporter_restart_s =
        timed(timeout, reporter(&kafka, &topic_options, &args.contract, work.path())).await?;
    let partials_topic = ReportTopics::new(&topic_options.prefix).partials;
    let partials = broker.read_all(&partials_topic, 1, timeout).await?;
    let partials_bytes = partials.iter().map(|r| r.value.as_ref().map_or(0, Vec::len) as u64).sum();
    Ok(CatchUp {
        events: records.len(),
        coordinator_s,
        reporter_s,
        reporter_restart_s,
        partials_bytes,
        partials_records: partials.len(),
    })
}

async fn timed(timeout: Duration, run: impl Future<Output = Result<()>>) -> Result<f64> {
    let started = Instant::now();
    tokio::time::timeout(timeout, run).await.context("run timed out")??;
    Ok(started.elapsed().as_secs_f64())
}

async fn coordinator(
    kafka: &KafkaOptions,
    topics: &TopicOptions,
    contract: &Path,
    work: &Path,
) -> Result<()> {
    let options = CoordinatorOptions {
        kafka: kafka.clone(),
        topics: topics.clone(),
        group_id: "omnifold-coordinator".into(),
        contract: contract.to_path_buf(),
        store: work.join("coordinator"),
        batch_max_events: omnifold_coordinator::service::DEFAULT_BATCH_MAX_EVENTS,
        batch_max_ms: 20,
        exit_when_caught_up: true,
        http: None,
        engine: EngineOptions::default(),
        broker_outage_max: None,
        group_instance_id: None,
        session_timeout_ms: 10_000,
        changelog: true,
        changelog_interval_ms: 1_000,
        changelog_dump_records: 100_000,
    };
    Ok(Coordinator::new(options)?.run(std::future::pending()).await?)
}

async fn reporter(kafka: &KafkaOptions, topics: &TopicOptions, contract: &Path, work: &Path) -> Result<()> {
    let options = ReporterOptions {
        kafka: kafka.clone(),
        topics: topics.clone(),
        group_id: "omnifold-reporter".into(),
        contract: contract.to_path_buf(),
        store: work.join("reporter"),
        batch_max_events: 5_000,
        batch_max_ms: 20,
        exit_when_caught_up: true,
        broker_outage_max: None,
        group_instance_id: Some("bench".into()),
        session_timeout_ms: 10_000,
    };
    Ok(Reporter::new(options)?.run(std::future::pending()).await?)
}

//! `omnifold-bench scale-out`: 1, 2, 3 ... coordinators in one consumer group over the same
//! event log (its own topics each run), against a real broker (memory storage), next to a bare
//! consumer of the same log; then the time a partition takes to serve again after it moves to
//! an instance that never owned it (a replay restore).
//!
//! ```text
//! cargo run --release -p omnifold-bench -- scale-out [--events 300000] [--partitions 12] [--instances 1,2,3]
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use omnifold_coordinator::engine::EngineOptions;
use omnifold_coordinator::{Coordinator, CoordinatorError, CoordinatorOptions};
use omnifold_runtime::partitioner::partition_for;
use omnifold_runtime::{KafkaOptions, TopicOptions, Topics, load_contract};
use omnifold_testkit::Broker;
use omnifold_workload::{WorkloadOptions, generate};
use tokio::task::JoinHandle;

use crate::kafka::{Encoded, drain, produce, producer};

/// The options of the scale-out benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleOutArgs {
    /// Events loaded into each run's events topic.
    #[arg(long, default_value_t = 300_000)]
    pub events: usize,
    /// SKUs of the workload.
    #[arg(long, default_value_t = 2_000)]
    pub skus: usize,
    /// Partitions of the events topic.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// The group sizes to run.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub instances: Vec<usize>,
    /// The coordination contract (default: deploy/local/contract.toml).
    #[arg(long, default_value = "deploy/local/contract.toml")]
    pub contract: std::path::PathBuf,
    /// Upper bound of each run, seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct GroupRun {
    pub instances: usize,
    pub seconds: f64,
}

/// What the benchmark measured.
#[derive(Debug, Clone)]
pub struct ScaleOut {
    pub events: usize,
    pub partitions: i32,
    pub bare_events_per_s: f64,
    pub runs: Vec<GroupRun>,
    /// Events in the partition that moved, and the seconds until its new owner had folded
    /// them (restored) and published past them.
    pub moved_events: i64,
    pub moved_serving_s: f64,
}

impl ScaleOut {
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "| coordinators ({} events, {} partitions) | seconds | events/s | x one | c/a |\n|---:|---:|---:|---:|---:|\n",
            self.events, self.partitions
        );
        let one = self.runs.iter().find(|r| r.instances == 1).map(|r| r.seconds);
        for run in &self.runs {
            let rate = self.events as f64 / run.seconds;
            let speedup = one.map_or("-".to_string(), |one| format!("{:.2}", one / run.seconds));
            out.push_str(&format!(
                "| {} | {:.2} | {:.0} | {} | {:.3} |\n",
                run.instances,
                run.seconds,
                rate,
                speedup,
                rate / self.bare_events_per_s
            ));
        }
        out.push_str(&format!(
            "\nbare consumer of the same log: {:.0} events/s\n\nA partition of {} events moved to an instance that never owned it serves again (restored and past its last owner's marker) after {:.2} s\n",
            self.bare_events_per_s, self.moved_events, self.moved_serving_s
        ));
        out
    }
}

pub async fn run(args: ScaleOutArgs) -> Result<ScaleOut> {
    // the members' logs (assignments, restores) on stderr, at RUST_LOG (default warn)
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let broker = Broker::start().await.context("start the broker")?;
    let kafka = KafkaOptions { bootstrap_servers: broker.bootstrap(), ..KafkaOptions::default() };
    let rules = load_contract(&args.contract)?;
    let events = generate(&rules, &WorkloadOptions::bench(args.skus, args.events));
    let records: Vec<Encoded> = events.iter().map(Encoded::of).collect();
    let timeout = Duration::from_secs(args.timeout_secs);
    let ends = ends(&events, args.partitions);
    let work = tempfile::tempdir()?;

    let mut runs = Vec::new();
    let mut bare_events_per_s = 0.0f64;
    for instances in args.instances.iter().copied() {
        let prefix = format!("group{instances}.");
        let topics = load(&kafka, &prefix, args.partitions, &records, timeout).await?;
        let bare = {
            let (kafka, topic, total) = (kafka.clone(), topics.events.clone(), records.len());
            let partitions = args.partitions;
            tokio::task::spawn_blocking(move || drain(&kafka, &topic, partitions, total, true, timeout))
                .await??
        };
        bare_events_per_s = bare_events_per_s.max(bare.records as f64 / bare.seconds);
        eprintln!("{instances} coordinator(s)");
        let started = Instant::now();
        let mut members = Vec::new();
        for i in 0..instances {
            let store = work.path().join(format!("{prefix}{i}"));
            members.push(member(&kafka, &prefix, args.partitions, &args.contract, &store, Some(i))?);
        }
        wait_folded(&kafka, &prefix, &topics, &ends, timeout).await?;
        runs.push(GroupRun { instances, seconds: started.elapsed().as_secs_f64() });
        for member in members {
            member.stop().await?;
        }
    }
    let (moved_events, moved_serving_s) =
        moved_partition(&kafka, &args, &records, &ends, work.path(), timeout).await?;
    Ok(ScaleOut {
        events: records.len(),
        partitions: args.partitions,
        bare_events_per_s,
        runs,
        moved_events,
        moved_serving_s,
    })
}

/// How many events each partition holds.
fn ends(events: &[omnifold_proto::Event], partitions: i32) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for event in events {
        *ends.entry(partition_for(event.partition_key().as_bytes(), partitions)).or_default() += 1;
    }
    ends
}

async fn load(
    kafka: &KafkaOptions,
    prefix: &str,
    partitions: i32,
    records: &[Encoded],
    timeout: Duration,
) -> Result<Topics> {
    let options =
        TopicOptions { prefix: prefix.to_string(), events_partitions: partitions, ..TopicOptions::default() };
    let topics = Topics::new(prefix);
    kafka.ensure_topics(&topics.specs(&options)).await?;
    eprintln!("loading {} events into {}", records.len(), topics.events);
    produce(&producer(kafka)?, &topics.events, records, None, timeout).await?;
    Ok(topics)
}

fn options(
    kafka: &KafkaOptions,
    prefix: &str,
    partitions: i32,
    contract: &Path,
    store: &Path,
    id: usize,
) -> CoordinatorOptions {
    CoordinatorOptions {
        kafka: kafka.clone(),
        topics: TopicOptions {
            prefix: prefix.to_string(),
            events_partitions: partitions,
            ..TopicOptions::default()
        },
        group_id: format!("{prefix}coordinators"),
        contract: contract.to_path_buf(),
        store: store.to_path_buf(),
        batch_max_events: 5_000,
        batch_max_ms: 20,
        exit_when_caught_up: false,
        http: None,
        engine: EngineOptions::default(),
        broker_outage_max: None,
        group_instance_id: Some(format!("member-{id}")),
        session_timeout_ms: 6_000,
        changelog: true,
        changelog_interval_ms: 1_000,
        changelog_dump_records: 100_000,
    }
}

/// One member of the group, running in this process until stopped.
struct Member {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), CoordinatorError>>,
}

impl Member {
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

fn member(
    kafka: &KafkaOptions,
    prefix: &str,
    partitions: i32,
    contract: &Path,
    store: &Path,
    id: Option<usize>,
) -> Result<Member> {
    let mut options = options(kafka, prefix, partitions, contract, store, id.unwrap_or(0));
    if id.is_none() {
        options.group_instance_id = None;
    }
    let coordinator = Coordinator::new(options)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(coordinator.run(async {
        let _ = stopped.await;
    }));
    Ok(Member { stop, task })
}

/// Waits until every ledger partition's last progress marker says its events partition is
/// folded to its end (the group's committed offsets are for lag monitoring: after a rebalance
/// nisshi may refuse an old member's commits, so they are not a completion signal).
async fn wait_folded(
    kafka: &KafkaOptions,
    _prefix: &str,
    topics: &Topics,
    ends: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let markers = last_writers(kafka, &topics.ledger, ends).await?;
        if markers.iter().all(|(p, (_, through))| *through >= ends[p] - 1) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the group did not fold every partition in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One instance (a dynamic member) folds everything and stops; a second with an empty store
/// takes every partition: the time until it has restored them all (replayed the log, publishing
/// nothing its predecessor published) and written its own marker at each partition's end.
async fn moved_partition(
    kafka: &KafkaOptions,
    args: &ScaleOutArgs,
    records: &[Encoded],
    ends: &BTreeMap<i32, i64>,
    work: &Path,
    timeout: Duration,
) -> Result<(i64, f64)> {
    let prefix = "moved.";
    let topics = load(kafka, prefix, args.partitions, records, timeout).await?;
    let first = member(kafka, prefix, args.partitions, &args.contract, &work.join("moved-first"), None)?;
    wait_folded(kafka, prefix, &topics, ends, timeout).await?;
    let before = last_writers(kafka, &topics.ledger, ends).await?;
    first.stop().await?;
    eprintln!("restoring {} events on a new member", records.len());
    let started = Instant::now();
    let second = member(kafka, prefix, args.partitions, &args.contract, &work.join("moved-second"), None)?;
    let deadline = Instant::now() + timeout;
    loop {
        let now = last_writers(kafka, &topics.ledger, ends).await?;
        let served =
            now.iter().all(|(p, (writer, through))| *writer != before[p].0 && *through >= ends[p] - 1);
        if served {
            break;
        }
        if Instant::now() > deadline {
            bail!("the new member did not serve every partition in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    second.stop().await?;
    Ok((records.len() as i64, seconds))
}

/// The writer and offset of each ledger partition's last progress marker.
async fn last_writers(
    kafka: &KafkaOptions,
    ledger: &str,
    ends: &BTreeMap<i32, i64>,
) -> Result<BTreeMap<i32, (String, i64)>> {
    let (kafka, ledger, partitions) =
        (kafka.clone(), ledger.to_string(), ends.keys().copied().collect::<Vec<_>>());
    tokio::task::spawn_blocking(move || {
        let mut markers = omnifold_coordinator::group::last_markers(&kafka, &ledger, &partitions)?;
        let writers = partitions
            .iter()
            .map(|p| (*p, markers.remove(p).map_or((String::new(), -1), |m| (m.writer, m.through))))
            .collect();
        Ok(writers)
    })
    .await?
}

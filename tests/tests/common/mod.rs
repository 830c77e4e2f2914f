//! Shared set-up of the end-to-end tests: a real broker, topics, the coordinator in-process
//! or as a child process, and readers that decode what it published.

#![allow(dead_code)]

pub mod changelogs;
pub mod chromium;
pub mod outputs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use omnifold_connector::ndjson::{Report, publish_lines};
use omnifold_connector::publish::Publisher;
use omnifold_coordinator::engine::EngineOptions;
use omnifold_coordinator::{Coordinator, CoordinatorOptions};
use omnifold_proto::{Alert, AlertState, ChannelAvailability, Escalation};
use omnifold_reporter::ReporterOptions;
use omnifold_runtime::{KafkaOptions, TopicOptions, Topics};
use omnifold_testkit::{Broker, Record};
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

pub const EVENTS_PARTITIONS: i32 = 3;

/// A child process of a test, SIGKILLed when dropped: a failed assertion leaves none running
/// (a coordinator would hold the test's output open, so a run piped into another command
/// never ended, and keep a core busy).
pub struct Killed(pub std::process::Child);

impl std::ops::Deref for Killed {
    type Target = std::process::Child;

    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn contract_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/contract.toml")
}

pub fn kafka(broker: &Broker) -> KafkaOptions {
    KafkaOptions { bootstrap_servers: broker.bootstrap(), ..KafkaOptions::default() }
}

pub fn topic_options() -> TopicOptions {
    TopicOptions { events_partitions: EVENTS_PARTITIONS, ..TopicOptions::default() }
}

pub fn topics() -> Topics {
    Topics::new(&topic_options().prefix)
}

pub async fn create_topics(broker: &Broker) {
    kafka(broker).ensure_topics(&topics().specs(&topic_options())).await.expect("topics created");
}

pub fn coordinator_options(broker: &Broker, store: &Path) -> CoordinatorOptions {
    CoordinatorOptions {
        kafka: kafka(broker),
        topics: topic_options(),
        group_id: "omnifold-coordinator".into(),
        contract: contract_path(),
        store: store.to_path_buf(),
        batch_max_events: 1_000,
        batch_max_ms: 20,
        exit_when_caught_up: true,
        http: None,
        // A cache far below the working set, so that every run also evicts and reloads SKUs
        // from the store (and a test comparing outputs with the pure fold checks that too).
        engine: EngineOptions { state_cache_bytes: 64 * 1024, recent_ids: 1_000, ..EngineOptions::default() },
        broker_outage_max: None,
        group_instance_id: None,
        session_timeout_ms: 10_000,
        changelog: true,
        changelog_interval_ms: 1_000,
        changelog_dump_records: 100_000,
    }
}

/// The reporter in this process over the example contract, exiting once caught up.
pub fn reporter_options(broker: &Broker, store: &Path, batch_max_events: usize) -> ReporterOptions {
    ReporterOptions {
        kafka: kafka(broker),
        topics: topic_options(),
        group_id: "omnifold-reporter".into(),
        contract: contract_path(),
        store: store.to_path_buf(),
        batch_max_events,
        batch_max_ms: 20,
        exit_when_caught_up: true,
        broker_outage_max: None,
        group_instance_id: None,
        session_timeout_ms: 10_000,
    }
}

/// Produces `(key, value)` records to `topic` as they are (no contract check, so a test can
/// publish what a connector would refuse), waiting for every acknowledgement.
pub async fn publish_records(broker: &Broker, topic: &str, records: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = broker
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    let deliveries: Vec<_> = records
        .iter()
        .map(|(key, value)| {
            producer.send_result(FutureRecord::to(topic).key(key).payload(value)).expect("queued")
        })
        .collect();
    for delivery in deliveries {
        delivery.await.expect("delivered").expect("acknowledged");
    }
}

/// Runs the coordinator in this process until it has folded every event in the topic.
pub async fn run_until_caught_up(broker: &Broker, store: &Path) {
    let coordinator = Coordinator::new(coordinator_options(broker, store)).expect("coordinator builds");
    tokio::time::timeout(Duration::from_secs(120), coordinator.run(std::future::pending()))
        .await
        .expect("coordinator caught up in time")
        .expect("coordinator ran");
}

/// Publishes NDJSON text through the generic connector; returns its report.
pub async fn publish_ndjson(broker: &Broker, text: &str) -> Report {
    let mut publisher = Publisher::new(&kafka(broker), &topics(), None).expect("publisher");
    publish_lines(text.as_bytes(), &mut publisher, |_, _| {}).await.expect("published")
}

pub async fn read(broker: &Broker, topic: &str, expected_min: usize) -> Vec<Record> {
    broker.read_all(topic, expected_min, Duration::from_secs(30)).await.expect("topic read")
}

pub fn alerts(records: &[Record]) -> Vec<Alert> {
    records
        .iter()
        .map(|r| Alert::decode(r.value.as_deref().unwrap_or_default()).expect("alert decodes"))
        .collect()
}

pub fn availability(records: &[Record]) -> Vec<ChannelAvailability> {
    records
        .iter()
        .map(|r| {
            ChannelAvailability::decode(r.value.as_deref().unwrap_or_default()).expect("availability decodes")
        })
        .collect()
}

pub fn escalations(records: &[Record]) -> Vec<Escalation> {
    records
        .iter()
        .map(|r| Escalation::decode(r.value.as_deref().unwrap_or_default()).expect("escalation decodes"))
        .collect()
}

/// The last published number per (channel, sku), in offset order within each key's partition.
pub fn final_availability(records: &[ChannelAvailability]) -> BTreeMap<(String, String), i64> {
    records.iter().map(|a| ((a.channel.clone(), a.sku.clone()), a.available)).collect()
}

pub fn alert_record(alert: &Alert) -> String {
    format!("{} {}", AlertState::try_from(alert.state).unwrap().name(), alert.alert_id)
}

pub fn header<'a>(record: &'a Record, key: &str) -> Option<&'a [u8]> {
    record.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
}

/// A loopback address with a port that was free a moment ago, for a server the test starts
/// in another task (or process) and cannot ask for its port.
pub fn free_local_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], omnifold_testkit::free_loopback_port()))
}

/// A coordinator running in this process until [`RunningCoordinator::stop`].
pub struct RunningCoordinator {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), omnifold_coordinator::CoordinatorError>>,
}

impl RunningCoordinator {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("coordinator stopped in time")
            .expect("coordinator task joined")
            .expect("coordinator ran");
    }
}

/// Starts the coordinator with `options` in a task; it runs until stopped.
pub fn spawn_coordinator(options: CoordinatorOptions) -> RunningCoordinator {
    let coordinator = Coordinator::new(options).expect("coordinator builds");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(coordinator.run(async {
        let _ = stopped.await;
    }));
    RunningCoordinator { stop, task }
}

/// Polls `done` every 50 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every record of `topic`, read until each partition reports its end. Unlike
/// `Broker::read_all` it cannot stop early on a quiet spell, and unlike watermarks
/// (nisshi's sit at the base of a partition's last batch) the end-of-partition signal is exact.
pub async fn read_to_end(broker: &Broker, topic: &str) -> Vec<Record> {
    let config = broker.client_config();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || read_to_end_blocking(config, &topic)).await.expect("reader task")
}

fn read_to_end_blocking(mut config: rdkafka::ClientConfig, topic: &str) -> Vec<Record> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = config
        .set("group.id", "omnifold-e2e-reader")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("reader");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut open: BTreeSet<i32> = BTreeSet::new();
    for partition in metadata.topics()[0].partitions() {
        assignment.add_partition_offset(topic, partition.id(), rdkafka::Offset::Beginning).expect("assign");
        open.insert(partition.id());
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut records = Vec::new();
    while !open.is_empty() {
        assert!(std::time::Instant::now() < deadline, "{topic} not read to its end within 60 s");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            Some(Ok(message)) => records.push(Record {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers: message
                    .headers()
                    .map(|h| {
                        h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect()
                    })
                    .unwrap_or_default(),
            }),
            None => {}
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// `<binary> run` against `broker` with the example contract and `--events-partitions` of these
/// tests, `batch` events per commit, logs at warn on stderr; the binary is one of this
/// package's (`e2e-coordinator`, `e2e-reporter`), so a test can SIGKILL a real process.
pub fn service_command(binary: &str, broker: &Broker, store: &Path, batch: usize) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    command
        .args(["run", "--bootstrap", &broker.bootstrap(), "--store"])
        .arg(store)
        .arg("--contract")
        .arg(contract_path())
        .args(["--events-partitions", &EVENTS_PARTITIONS.to_string()])
        .args(["--batch-max-events", &batch.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    command
}

/// The coordinator as a child process; see [`service_command`].
pub fn coordinator_process(
    broker: &Broker,
    store: &Path,
    batch: usize,
    exit_when_caught_up: bool,
) -> std::process::Child {
    let mut command = service_command(env!("CARGO_BIN_EXE_e2e-coordinator"), broker, store, batch);
    if exit_when_caught_up {
        command.arg("--exit-when-caught-up");
    }
    command.spawn().expect("coordinator starts")
}

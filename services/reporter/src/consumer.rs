//! Group consumers whose positions come from the store, not from the group.
//!
//! Both stages subscribe in a consumer group, so instances share the input partitions.
//! When the group assigns a partition, [`StoredPositions::rebalance`] starts it where this
//! instance's state of that partition stands: the in-memory position if the partition's
//! state is loaded (it may be ahead of the store within a batch), else the offset stored
//! with the state, else the beginning. Group commits exist for lag monitoring only.
//!
//! High watermarks come from the client's statistics, i.e. from fetch responses, not from
//! `ListOffsets`: nisshi 0.7.0 answers `ListOffsets(latest)` with the base offset of the
//! last record batch plus one, which is short of the end whenever that batch holds several
//! records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnifold_runtime::health::is_outage;
use omnifold_runtime::{BrokerHealth, HealthContext, KafkaOptions, Store};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::RebalanceProtocol;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use crate::topics::ReportTopics;

/// Next offsets by store partition id, of the partitions whose state is in memory.
pub type Positions = Arc<Mutex<HashMap<i32, i64>>>;

/// How long a revocation waits for the outbox to drain before letting the partition go.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the client reports statistics, hence high watermarks.
pub const STATS_INTERVAL_MS: u64 = 100;

/// The context of one stage's consumer.
pub struct StoredPositions {
    store: Store,
    topics: ReportTopics,
    positions: Positions,
    /// Set on every assignment; the merge stage re-reads what was published before it
    /// continues (see `merge.rs`).
    pub assigned: Arc<AtomicBool>,
    /// Whether a revocation waits for the outbox to drain (the merge stage: the next owner
    /// must see everything this one emitted).
    drain_on_revoke: bool,
    stopping: Arc<AtomicBool>,
    /// The high watermark of every partition the client fetches, by (topic, partition).
    high: Mutex<HashMap<(String, i32), i64>>,
    /// How many statistics reports arrived.
    reports: AtomicU64,
    health: HealthContext,
}

impl ClientContext for StoredPositions {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.health.on_log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.health.on_error(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.health.on_stats(&statistics);
        let mut high = self.high.lock().expect("watermarks lock");
        for (topic, stats) in &statistics.topics {
            for partition in stats.partitions.values().filter(|p| p.partition >= 0 && p.hi_offset >= 0) {
                high.insert((topic.clone(), partition.partition), partition.hi_offset);
            }
        }
        self.reports.fetch_add(1, Ordering::SeqCst);
    }
}

impl ConsumerContext for StoredPositions {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.position(tpl);
                let taken = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
                    _ => consumer.assign(tpl),
                };
                if let Err(error) = taken {
                    tracing::error!(%error, "cannot take the assigned partitions");
                }
                self.assigned.store(true, Ordering::SeqCst);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if self.drain_on_revoke {
                    self.drain();
                }
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                let _ = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
                    _ => consumer.unassign(),
                };
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                let _ = consumer.unassign();
            }
        }
    }
}

impl StoredPositions {
    /// Where this consumer reports the broker's reachability.
    pub fn health(&self) -> &BrokerHealth {
        &self.health.health
    }

    fn position(&self, tpl: &mut TopicPartitionList) {
        let positions = self.positions.lock().expect("positions lock");
        let stored = self.store.offsets().unwrap_or_default();
        let assigned: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        for (topic, partition) in assigned {
            let Some(id) = self.topics.store_id(&topic, partition) else { continue };
            let offset =
                positions.get(&id).or(stored.get(&id)).map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tracing::info!(topic, partition, ?offset, "partition assigned");
            let _ = tpl.set_partition_offset(&topic, partition, offset);
        }
    }

    /// The partition's high watermark as last fetched; `None` before the first fetch.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.high.lock().expect("watermarks lock").get(&(topic.to_string(), partition)).copied()
    }

    /// How many statistics reports (with fresh high watermarks) arrived so far.
    pub fn reports(&self) -> u64 {
        self.reports.load(Ordering::SeqCst)
    }

    fn drain(&self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.store.pending_count() > 0
            && Instant::now() < deadline
            && !self.stopping.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What a stage's consumer needs to be built.
pub struct ConsumerSpec<'a> {
    pub kafka: &'a KafkaOptions,
    pub group_id: &'a str,
    pub topics: &'a ReportTopics,
    pub subscribe: &'a [&'a str],
    pub store: &'a Store,
    pub positions: Positions,
    pub drain_on_revoke: bool,
    pub stopping: Arc<AtomicBool>,
    pub health: Arc<BrokerHealth>,
    /// Static membership: `<group>/<id>` is this stage's `group.instance.id`.
    pub instance_id: Option<String>,
    pub session_timeout_ms: u64,
}

/// A subscribed consumer positioned from the store.
pub fn subscribed(
    spec: ConsumerSpec<'_>,
) -> Result<BaseConsumer<StoredPositions>, rdkafka::error::KafkaError> {
    let context = StoredPositions {
        store: spec.store.clone(),
        topics: spec.topics.clone(),
        positions: spec.positions,
        assigned: Arc::new(AtomicBool::new(false)),
        drain_on_revoke: spec.drain_on_revoke,
        stopping: spec.stopping,
        high: Mutex::new(HashMap::new()),
        reports: AtomicU64::new(0),
        health: HealthContext::new(spec.health),
    };
    let mut config = spec.kafka.client_config();
    if let Some(id) = spec.instance_id {
        config.set("group.instance.id", format!("{}/{id}", spec.group_id));
    }
    let consumer: BaseConsumer<StoredPositions> = config
        .set("group.id", spec.group_id)
        // a member that joins or leaves moves only the partitions that must move
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", spec.session_timeout_ms.to_string())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("statistics.interval.ms", STATS_INTERVAL_MS.to_string())
        .create_with_context(context)?;
    consumer.subscribe(spec.subscribe)?;
    Ok(consumer)
}

/// Commits positions to the group for lag monitoring; a failure is logged, not fatal.
pub fn commit_for_lag(consumer: &BaseConsumer<StoredPositions>, offsets: &[(&str, i32, i64)]) {
    let mut list = TopicPartitionList::new();
    for (topic, partition, next) in offsets {
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*next));
    }
    if list.count() > 0
        && let Err(error) = consumer.commit(&list, CommitMode::Async)
    {
        tracing::debug!(%error, "group offset commit failed");
    }
}

/// How long a stage pauses after an outage error before polling again.
const OUTAGE_PAUSE: Duration = Duration::from_millis(100);

/// The next message within `timeout`; `None` when none came or the broker is away (librdkafka
/// reconnects by itself, and what a stage read so far commits meanwhile).
pub fn poll_one(
    consumer: &BaseConsumer<StoredPositions>,
    timeout: Duration,
) -> Result<Option<BorrowedMessage<'_>>, rdkafka::error::KafkaError> {
    match consumer.poll(timeout) {
        None => Ok(None),
        Some(Ok(message)) => Ok(Some(message)),
        Some(Err(error)) if is_outage(&error) => {
            consumer.context().health().unreachable(&error.to_string());
            std::thread::sleep(OUTAGE_PAUSE);
            Ok(None)
        }
        Some(Err(error)) => Err(error),
    }
}

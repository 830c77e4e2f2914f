//! The coordinator service: consume `omnifold.events.v1`, fold, commit to the store, send the
//! outbox.
//!
//! Two loops share the store. The fold loop runs on a blocking thread (polling Kafka,
//! folding and the fsync of each batch would all stall an async worker): it reads a batch,
//! applies it, and commits state, seen ids, offsets and outputs in one store batch. The send
//! loop, async, delivers the outbox after each commit. On start the consumer is positioned at
//! the offsets stored in the store, never at the group's committed offsets, which exist for lag
//! monitoring only.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use omnifold_domain::{Fold, Outcome, Output, Rules};
use omnifold_proto::Event;
use omnifold_runtime::deadletter::{Source, dead_letter};
use omnifold_runtime::{
    KafkaOptions, OutboxRecord, OutboxSender, Store, TopicOptions, Topics, load_contract, wall_clock_ms,
};
use prost::Message as _;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::engine::{Engine, EngineOptions};
use crate::http::{HttpServer, PriceSource};

/// Everything the coordinator is configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorOptions {
    pub kafka: KafkaOptions,
    #[serde(default)]
    pub topics: TopicOptions,
    /// The consumer group under which offsets are committed for lag monitoring.
    #[serde(default = "default_group")]
    pub group_id: String,
    pub contract: PathBuf,
    /// The store directory.
    pub store: PathBuf,
    #[serde(default = "default_batch_events")]
    pub batch_max_events: usize,
    #[serde(default = "default_batch_ms")]
    pub batch_max_ms: u64,
    /// Stop once every input partition is consumed to its end (for replays and benchmarks).
    #[serde(default)]
    pub exit_when_caught_up: bool,
    /// Serve `GET /v1/prices/{sku}` on this loopback address ([`crate::http`]).
    #[serde(default)]
    pub http: Option<std::net::SocketAddr>,
    /// What the state engine may hold in memory.
    #[serde(default)]
    pub engine: EngineOptions,
}

fn default_group() -> String {
    "omnifold-coordinator".to_string()
}

fn default_batch_events() -> usize {
    5_000
}

fn default_batch_ms() -> u64 {
    20
}

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Contract(#[from] omnifold_runtime::ContractError),
    #[error(transparent)]
    Kafka(#[from] omnifold_runtime::KafkaError),
    #[error("kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] omnifold_runtime::StoreError),
    #[error(transparent)]
    Outbox(#[from] omnifold_runtime::OutboxError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("fold loop stopped unexpectedly: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Outbox records waiting beyond which the fold loop pauses for the sender to catch up.
const MAX_PENDING_OUTPUTS: usize = 200_000;
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// A coordinator built from its options, ready to run.
pub struct Coordinator {
    options: CoordinatorOptions,
    rules: Rules,
    topics: Topics,
}

impl Coordinator {
    /// Loads and validates the contract; connects to nothing yet.
    pub fn new(options: CoordinatorOptions) -> Result<Self, CoordinatorError> {
        let rules = load_contract(&options.contract)?;
        let topics = Topics::new(&options.topics.prefix);
        Ok(Coordinator { options, rules, topics })
    }

    /// Runs until `shutdown` resolves (or, with `exit_when_caught_up`, until caught up).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), CoordinatorError> {
        let kafka = &self.options.kafka;
        kafka.ensure_topics(&self.topics.specs(&self.options.topics)).await?;
        let outputs = [
            &self.topics.alerts,
            &self.topics.availability,
            &self.topics.escalations,
            &self.topics.deadletter,
        ];
        let mut names: Vec<&str> = outputs.iter().map(|s| s.as_str()).collect();
        names.push(&self.topics.events);
        let partitions = kafka.partition_counts(&names)?;
        let store = open_store(self.options.store.clone()).await?;
        let sender = OutboxSender::new(store.clone(), kafka.idempotent_producer()?, partitions.clone());
        sender.recover(kafka).await?;
        sender.send_pending().await?;
        let prices = PriceSource::new(store.clone(), self.rules.clone(), partitions[&self.topics.events]);
        let http = HttpServer::start_if(self.options.http, prices).await?;

        let shared = Arc::new(Shared::default());
        let fold_loop = FoldLoop {
            options: self.options.clone(),
            topics: self.topics.clone(),
            store: store.clone(),
            engine: Engine::new(Fold::new(self.rules), store, self.options.engine),
            event_partitions: partitions[&self.topics.events],
            shared: shared.clone(),
        };
        let mut worker = tokio::task::spawn_blocking(move || fold_loop.run());
        tokio::pin!(shutdown);
        let result = loop {
            tokio::select! {
                _ = shared.committed.notified() => {
                    let sent = sender.send_pending().await?;
                    shared.pending.fetch_sub(sent.min(shared.pending.load(Ordering::Relaxed)), Ordering::Relaxed);
                }
                _ = &mut shutdown => {
                    shared.stop.store(true, Ordering::Relaxed);
                    break (&mut worker).await?;
                }
                finished = &mut worker => break finished?,
            }
        };
        sender.send_pending().await?;
        if let Some(http) = http {
            http.stop().await;
        }
        result
    }
}

async fn open_store(path: PathBuf) -> Result<Store, CoordinatorError> {
    Ok(tokio::task::spawn_blocking(move || Store::open(&path)).await??)
}

/// The events consumer: end-of-partition events say when the log is consumed.
type EventsConsumer = BaseConsumer<QuietEndOfPartition>;

/// Logs client errors like rdkafka's default context, except the end-of-partition events
/// the fold loop asks for: they are progress, not errors.
struct QuietEndOfPartition;

impl ClientContext for QuietEndOfPartition {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        let end_of_partition =
            matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF));
        if !end_of_partition {
            tracing::error!(%error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for QuietEndOfPartition {}

/// What the two loops share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Outbox records committed and not yet sent.
    pending: AtomicUsize,
    committed: Notify,
}

struct FoldLoop {
    options: CoordinatorOptions,
    topics: Topics,
    store: Store,
    engine: Engine,
    event_partitions: i32,
    shared: Arc<Shared>,
}

/// The state of one batch being folded.
struct Batch {
    commit: omnifold_runtime::Commit,
    next_offsets: BTreeMap<i32, i64>,
    events: usize,
}

impl FoldLoop {
    fn run(mut self) -> Result<(), CoordinatorError> {
        // End-of-partition events, not watermarks, tell when the log is consumed: nisshi's
        // watermarks can sit below records already there (ARCHITECTURE.md, "The broker").
        let consumer: EventsConsumer = self
            .options
            .kafka
            .assigning_config(&self.options.group_id)
            .set("enable.partition.eof", "true")
            .create_with_context(QuietEndOfPartition)?;
        let mut at_end = BTreeSet::new();
        // Only the offsets are read at start: states load on demand (crate::engine).
        let stored = self.store.offsets()?;
        consumer.assign(&self.assignment(&stored)?)?;
        let mut idle_logged = false;
        let started = Instant::now();
        let mut total = 0usize;
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.wait_for_sender();
            let batch = self.fold_batch(&consumer, &mut at_end)?;
            if batch.events == 0 {
                if !idle_logged {
                    tracing::info!(
                        events = total,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "caught up"
                    );
                    idle_logged = true;
                }
                if self.options.exit_when_caught_up && at_end.len() == self.event_partitions as usize {
                    break;
                }
                continue;
            }
            idle_logged = false;
            total += batch.events;
            self.commit(&consumer, batch)?;
        }
        Ok(())
    }

    fn assignment(&self, stored: &BTreeMap<i32, i64>) -> Result<TopicPartitionList, CoordinatorError> {
        let mut assignment = TopicPartitionList::new();
        for partition in 0..self.event_partitions {
            let offset = stored.get(&partition).map_or(Offset::Beginning, |o| Offset::Offset(*o));
            assignment.add_partition_offset(&self.topics.events, partition, offset)?;
        }
        Ok(assignment)
    }

    fn wait_for_sender(&self) {
        while self.shared.pending.load(Ordering::Relaxed) > MAX_PENDING_OUTPUTS
            && !self.shared.stop.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Polls up to `batch_max_events` events within `batch_max_ms` and folds them. `at_end`
    /// tracks the partitions whose end was reached and nothing arrived since.
    fn fold_batch(
        &mut self,
        consumer: &EventsConsumer,
        at_end: &mut BTreeSet<i32>,
    ) -> Result<Batch, CoordinatorError> {
        let mut batch = Batch { commit: self.store.begin()?, next_offsets: BTreeMap::new(), events: 0 };
        let deadline = Instant::now() + Duration::from_millis(self.options.batch_max_ms);
        let mut timeout = POLL_TIMEOUT;
        while batch.events < self.options.batch_max_events {
            match consumer.poll(timeout) {
                None => break,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    at_end.insert(partition);
                }
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(message)) => {
                    at_end.remove(&message.partition());
                    self.fold_message(&message, &mut batch)?;
                }
            }
            timeout = deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                break;
            }
        }
        Ok(batch)
    }

    fn fold_message(
        &mut self,
        message: &BorrowedMessage<'_>,
        batch: &mut Batch,
    ) -> Result<(), CoordinatorError> {
        let partition = message.partition();
        batch.events += 1;
        batch.next_offsets.insert(partition, message.offset() + 1);
        metrics::counter!("omnifold_events_consumed_total").increment(1);
        let (key, value) = (message.key().unwrap_or_default(), message.payload().unwrap_or_default());
        let source = Source { topic: &self.topics.events, partition, offset: message.offset() };
        let event = match Event::decode(value) {
            Ok(event) => event,
            Err(error) => {
                let reason = omnifold_domain::Rejection::Undecodable(error.to_string()).to_string();
                self.refuse(batch, key, value, &reason, source);
                return Ok(());
            }
        };
        match self.engine.apply(partition, &event)? {
            Outcome::Applied { outputs, .. } => {
                for output in outputs {
                    batch.commit.push_output(&self.record(output));
                }
                metrics::counter!("omnifold_events_applied_total").increment(1);
            }
            Outcome::Duplicate => metrics::counter!("omnifold_events_duplicate_total").increment(1),
            Outcome::Rejected(rejection) => {
                let reason = format!("event {:?}: {rejection}", event.event_id);
                self.refuse(batch, key, value, &reason, source);
            }
        }
        Ok(())
    }

    fn refuse(&self, batch: &mut Batch, key: &[u8], value: &[u8], reason: &str, source: Source<'_>) {
        tracing::warn!(
            partition = source.partition,
            offset = source.offset,
            reason,
            "dead-lettered an event"
        );
        batch.commit.push_output(&dead_letter(&self.topics.deadletter, key, value, reason, source));
    }

    /// The outbox record of one fold output; `detected_at_ms` is stamped here, outside the fold.
    fn record(&self, output: Output) -> OutboxRecord {
        let (topic, key, value) = match output {
            Output::Availability(a) => {
                (&self.topics.availability, format!("{}/{}", a.channel, a.sku), a.encode_to_vec())
            }
            Output::Alert(mut alert) => {
                alert.detected_at_ms = wall_clock_ms();
                (&self.topics.alerts, alert.sku.clone(), alert.encode_to_vec())
            }
            Output::Escalation(e) => (&self.topics.escalations, e.channel.clone(), e.encode_to_vec()),
        };
        OutboxRecord { topic: topic.clone(), key: key.into_bytes(), value, headers: Vec::new() }
    }

    fn commit(&mut self, consumer: &EventsConsumer, mut batch: Batch) -> Result<(), CoordinatorError> {
        self.engine.write(&mut batch.commit);
        for (partition, next) in &batch.next_offsets {
            batch.commit.put_offset(*partition, *next);
        }
        let outputs = batch.commit.outputs();
        self.store.commit(batch.commit)?;
        self.engine.trim();
        self.shared.pending.fetch_add(outputs, Ordering::Relaxed);
        self.shared.committed.notify_one();
        self.commit_group_offsets(consumer, &batch.next_offsets);
        Ok(())
    }

    /// Group commits exist for lag monitoring only, so a failure is logged, not fatal.
    fn commit_group_offsets(&self, consumer: &EventsConsumer, next_offsets: &BTreeMap<i32, i64>) {
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in next_offsets {
            let _ = offsets.add_partition_offset(&self.topics.events, *partition, Offset::Offset(*next));
        }
        if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::debug!(%error, "group offset commit failed");
        }
    }
}

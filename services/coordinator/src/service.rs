//! The coordinator service: consume `omnifold.events.v1`, fold, commit to the store, send the
//! outbox.
//!
//! Two loops share the store. The fold loop runs on a blocking thread (polling Kafka,
//! folding and the fsync of each batch would all stall an async worker): it reads a batch,
//! applies it, and commits state, seen ids, offsets and outputs in one store batch. The send
//! loop, async, delivers the outbox after each commit. On start the consumer is positioned at
//! the offsets stored in the store, never at the group's committed offsets, which exist for lag
//! monitoring only.
//!
//! A broker outage is waited out, not fatal (runtime `health`): start-up retries, the fold
//! loop keeps its state and polls on, the send loop holds the outbox and recovers it when the
//! broker is back. `broker_outage_max` may set a limit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use omnifold_domain::{Fold, Outcome, Output, Rules};
use omnifold_proto::Event;
use omnifold_runtime::deadletter::{Source, dead_letter};
use omnifold_runtime::health::{STATS_INTERVAL_MS, is_outage, until_reachable};
use omnifold_runtime::{
    BrokerHealth, KafkaOptions, OutboxLoop, OutboxRecord, OutboxSender, OutboxSignals, Store, TopicOptions,
    Topics, load_contract, wall_clock_ms,
};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineOptions};
use crate::group::{self, GroupContext, GroupSpec, SharedOwnership};
use crate::http::{HttpServer, PriceSource};
use crate::pacing::Pacing;
use crate::persister::Persister;
use crate::progress::{self, Mark, Marks, marker};
use crate::unsent::Unsent;
use omnifold_runtime::changelog;
use omnifold_runtime::origin::{ORIGIN_HEADER, Origin};
use omnifold_runtime::topics::TopicName;
use smallvec::{SmallVec, smallvec};

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
    /// Most events folded into one atomic store commit.
    #[serde(default = "default_batch_events")]
    pub batch_max_events: usize,
    /// How long a batch gathers events while the loop keeps up with the feed; while it is
    /// behind, up to [`crate::pacing::CATCH_UP_FACTOR`] times this.
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
    /// How long the broker may be unreachable before the coordinator exits; `None` waits
    /// forever.
    #[serde(default, with = "omnifold_runtime::health::optional_secs")]
    pub broker_outage_max: Option<Duration>,
    /// Static group membership (KIP-345): an instance restarted with the same id takes its
    /// partitions back at once. Unique per instance, stable across its restarts; `None` joins
    /// as a dynamic member.
    #[serde(default)]
    pub group_instance_id: Option<String>,
    /// How long the group waits for a silent member before giving its partitions away.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Write the store's changes to the changelog topic, so that an instance taking a
    /// partition over restores it from there instead of re-folding the partition's log.
    #[serde(default = "default_changelog")]
    pub changelog: bool,
    /// How often the changelog is sent: each key written in between is sent once.
    #[serde(default = "default_changelog_interval_ms")]
    pub changelog_interval_ms: u64,
    /// Entries of a partition's whole state sent per sending, when the changelog must be sent
    /// the whole state (it bounds what one commit holds).
    #[serde(default = "default_changelog_dump_records")]
    pub changelog_dump_records: usize,
}

fn default_changelog_dump_records() -> usize {
    100_000
}

/// How often the changelog is sent by default, milliseconds.
pub const DEFAULT_CHANGELOG_INTERVAL_MS: u64 = 1_000;

fn default_changelog_interval_ms() -> u64 {
    DEFAULT_CHANGELOG_INTERVAL_MS
}

fn default_changelog() -> bool {
    true
}

fn default_session_timeout_ms() -> u64 {
    10_000
}

fn default_group() -> String {
    "omnifold-coordinator".to_string()
}

/// Most events one commit holds by default. While the loop is behind, a larger batch writes
/// each SKU it touches once for more events: end to end over 10,000 SKUs, batches of up to
/// 20,000 events used about a tenth less CPU than batches of up to 5,000 (see ARCHITECTURE.md).
pub const DEFAULT_BATCH_MAX_EVENTS: usize = 20_000;

fn default_batch_events() -> usize {
    DEFAULT_BATCH_MAX_EVENTS
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
    #[error(transparent)]
    Outage(#[from] omnifold_runtime::health::OutageError),
    #[error(transparent)]
    Persist(#[from] crate::persister::PersistError),
    #[error(transparent)]
    Changelog(#[from] changelog::ChangelogError),
    #[error(
        "topic {topic} has {ledger} partitions and the events topic {events}: it must mirror the event log, recreate it with {events}"
    )]
    LedgerPartitions { topic: String, ledger: i32, events: i32 },
}

/// Outbox records waiting beyond which the fold loop pauses for the sender to catch up. They
/// are also held in memory, handed to the sender: 200,000 cost some 60 MB more at the peak of
/// the end-to-end benchmark than 50,000, for the same rate (the sender is the slower side).
const MAX_PENDING_OUTPUTS: usize = 50_000;
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// A restore logs its progress every this many events.
const RESTORE_LOG_EVERY: i64 = 100_000;
/// How long the fold loop pauses after an outage error before polling again.
const OUTAGE_PAUSE: Duration = Duration::from_millis(100);

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
        tokio::pin!(shutdown);
        let health = BrokerHealth::new(self.options.broker_outage_max);
        let partitions = tokio::select! {
            partitions = until_reachable(&health, || self.prepare_topics()) => partitions?,
            _ = &mut shutdown => return Ok(()),
        };
        self.check_ledger_partitions(&partitions)?;
        let store = open_store(self.options.store.clone()).await?;
        if !self.options.changelog {
            let unflagged = store.clone();
            tokio::task::spawn_blocking(move || unflagged.forget_changelogs()).await??;
        }
        let (kafka, topics, moved_store) = (self.options.kafka.clone(), self.topics.clone(), store.clone());
        tokio::task::spawn_blocking(move || {
            group::drop_outputs_of_moved_partitions(&moved_store, &kafka, &topics)
        })
        .await??;
        let mut sender =
            OutboxSender::new(store.clone(), &self.options.kafka, partitions.clone(), health.clone())?
                .merging_barriers(progress::merge_markers);
        tokio::select! {
            started = sender.start() => { started?; }
            _ = &mut shutdown => return Ok(()),
        }
        let prices = PriceSource::new(store.clone(), self.rules.clone(), partitions[&*self.topics.events]);
        let http = HttpServer::start_if(self.options.http, prices).await?;

        let outbox = OutboxLoop::spawn_handing_off(sender);
        let stop = Arc::new(AtomicBool::new(false));
        let closing = store.clone();
        let fold_loop = FoldLoop {
            options: self.options.clone(),
            topics: self.topics.clone(),
            currency: self.rules.contract.reporting_currency.clone(),
            reported_at_end: BTreeSet::new(),
            ownership: SharedOwnership::default(),
            store: store.clone(),
            persister: Persister::to_sender(store.clone(), outbox.signals()),
            engine: Engine::new(Fold::new(self.rules), store, self.options.engine),
            stop: stop.clone(),
            outbox: outbox.signals(),
            health,
            changelog_due: Instant::now(),
            unsent: Unsent::default(),
            pacing: Pacing::new(self.options.batch_max_ms),
        };
        let worker = tokio::task::spawn_blocking(move || fold_loop.run());
        let result = outbox.supervise(worker, &stop, shutdown.as_mut()).await;
        if let Some(http) = http {
            http.stop().await;
        }
        result?;
        close_store(closing).await
    }

    /// The ledger mirrors the event log partition for partition (same keys, same count), so
    /// that a reader of ledger partition p sees what events partition p was worth.
    fn check_ledger_partitions(&self, partitions: &HashMap<String, i32>) -> Result<(), CoordinatorError> {
        let events = partitions[&*self.topics.events];
        for topic in [&self.topics.ledger, &self.topics.ledger_json, &self.topics.changelog] {
            if partitions[&**topic] != events {
                let (topic, ledger) = (topic.to_string(), partitions[&**topic]);
                return Err(CoordinatorError::LedgerPartitions { topic, ledger, events });
            }
        }
        Ok(())
    }

    /// Creates missing topics, checks the event log keeps events, and returns the partition
    /// count of every topic the coordinator reads or writes.
    async fn prepare_topics(&self) -> Result<HashMap<String, i32>, omnifold_runtime::KafkaError> {
        let kafka = &self.options.kafka;
        kafka.ensure_topics(&self.topics.specs(&self.options.topics)).await?;
        kafka.check_event_log(&self.topics.events, self.options.topics.log_retention_ms).await?;
        let topics = &self.topics;
        kafka
            .fetch_partition_counts(&[
                &topics.alerts,
                &topics.availability,
                &topics.escalations,
                &topics.deadletter,
                &topics.events,
                &topics.ledger,
                &topics.ledger_json,
                &topics.replenishment,
                &topics.routing,
                &topics.changelog,
            ])
            .await
    }
}

async fn open_store(path: PathBuf) -> Result<Store, CoordinatorError> {
    let open = move || {
        let store = Store::open(&path)?;
        store.claim_format("coordinator", crate::engine::STATE_FORMAT)?;
        Ok::<_, omnifold_runtime::StoreError>(store)
    };
    Ok(tokio::task::spawn_blocking(open).await??)
}

/// After a clean stop, so that the next start replays no journal.
async fn close_store(store: Store) -> Result<(), CoordinatorError> {
    let started = Instant::now();
    tokio::task::spawn_blocking(move || store.close()).await??;
    tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "store closed");
    Ok(())
}

/// The events consumer, a member of the coordinators' group (`crate::group`): end-of-partition
/// events say when a partition is consumed.
type EventsConsumer = BaseConsumer<GroupContext>;

struct FoldLoop {
    options: CoordinatorOptions,
    topics: Topics,
    /// The reporting currency, for the progress markers.
    currency: String,
    /// Partitions whose last progress marker said the coordinator was at their end.
    reported_at_end: BTreeSet<i32>,
    /// The partitions the group gave this instance, and what their last owner published.
    ownership: SharedOwnership,
    store: Store,
    engine: Engine,
    stop: Arc<AtomicBool>,
    outbox: Arc<OutboxSignals>,
    /// Fsyncs written batches and hands their records to the sender (dropped, it finishes).
    persister: Persister,
    health: Arc<BrokerHealth>,
    /// When the changelog is sent next.
    changelog_due: Instant,
    /// The values written since each partition's changelog was last sent.
    unsent: Unsent,
    /// How long the next batch may gather events.
    pacing: Pacing,
}

/// The state of one batch being folded.
struct Batch {
    commit: omnifold_runtime::Commit,
    next_offsets: BTreeMap<i32, i64>,
    marks: Marks,
    events: usize,
    tally: Tally,
}

impl Batch {
    fn new(commit: omnifold_runtime::Commit) -> Self {
        Batch {
            commit,
            next_offsets: BTreeMap::new(),
            marks: Marks::new(),
            events: 0,
            tally: Tally::default(),
        }
    }
}

/// The events a batch folded, by what became of them: added to the metrics once the batch is
/// committed (a dropped batch's events are counted when they are folded again). Counted per
/// event, each counter was a registry lookup per event under the Prometheus exporter.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    consumed: u64,
    applied: u64,
    duplicate: u64,
    restored: u64,
}

impl Tally {
    fn publish(&self) {
        metrics::counter!("omnifold_events_consumed_total").increment(self.consumed);
        metrics::counter!("omnifold_events_applied_total").increment(self.applied);
        metrics::counter!("omnifold_events_duplicate_total").increment(self.duplicate);
        metrics::counter!("omnifold_coordinator_events_restored_total").increment(self.restored);
    }
}

impl FoldLoop {
    fn run(mut self) -> Result<(), CoordinatorError> {
        let consumer = self.consumer()?;
        // Only the offsets are read at start (by the assignment): states load on demand.
        let mut at_end = BTreeSet::new();
        let mut idle_logged = false;
        let started = Instant::now();
        let mut total = 0usize;
        while !self.stop.load(Ordering::Relaxed) {
            self.health.check()?;
            self.wait_for_sender();
            let batch = self.fold_batch(&consumer, &mut at_end)?;
            if batch.events == 0 {
                self.send_changelog_when_idle()?;
                self.mark_reached_ends(&at_end)?;
                // before the group assigns anything there is nothing to have caught up with
                if !idle_logged && self.caught_up(&at_end) {
                    tracing::info!(
                        events = total,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "caught up"
                    );
                    idle_logged = true;
                }
                if self.options.exit_when_caught_up && self.caught_up(&at_end) {
                    break;
                }
                continue;
            }
            idle_logged = false;
            total += batch.events;
            self.commit(&consumer, batch, &at_end)?;
        }
        if self.options.changelog {
            // a member leaving sends what its changelog lacks, so a next owner re-folds nothing
            self.changelog_due = Instant::now();
            self.send_changelog_when_idle()?;
        }
        // the partitions the consumer gives up as it closes are left, not moved: their changelog
        // flags and waiting keys stay (group::GroupContext::revoke)
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.persister.finish()?)
    }

    /// End-of-partition events, not watermarks, tell when the log is consumed: nisshi's
    /// watermarks can sit below records already there (ARCHITECTURE.md, "The broker").
    fn consumer(&self) -> Result<EventsConsumer, CoordinatorError> {
        Ok(group::subscribed(GroupSpec {
            kafka: &self.options.kafka,
            group_id: &self.options.group_id,
            topics: &self.topics,
            store: &self.store,
            ownership: self.ownership.clone(),
            stopping: self.stop.clone(),
            health: self.health.clone(),
            instance_id: self.options.group_instance_id.clone(),
            session_timeout_ms: self.options.session_timeout_ms,
            stats_interval_ms: STATS_INTERVAL_MS,
            changelog: self.options.changelog,
        })?)
    }

    /// Every partition this instance owns is read to its end (and it owns some).
    fn caught_up(&self, at_end: &BTreeSet<i32>) -> bool {
        let ownership = self.ownership.lock().expect("ownership lock");
        !ownership.owned.is_empty() && ownership.owned.is_subset(at_end)
    }

    fn wait_for_sender(&self) {
        let started = Instant::now();
        let mut waited = false;
        while self.outbox.pending() > MAX_PENDING_OUTPUTS && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
            waited = true;
        }
        if waited {
            tracing::debug!(waited_ms = started.elapsed().as_millis() as u64, "waited for the sender");
        }
    }

    /// Polls up to `batch_max_events` events within the pacing's budget (`batch_max_ms`, more
    /// while behind the feed) and folds them. `at_end` tracks the partitions whose end was
    /// reached and nothing arrived since.
    fn fold_batch(
        &mut self,
        consumer: &EventsConsumer,
        at_end: &mut BTreeSet<i32>,
    ) -> Result<Batch, CoordinatorError> {
        let mut batch = Batch::new(self.store.begin()?);
        let started = Instant::now();
        let deadline = started + self.pacing.budget();
        let mut timeout = POLL_TIMEOUT;
        let mut waited = Duration::ZERO;
        while batch.events < self.options.batch_max_events {
            let polled = Instant::now();
            let message = consumer.poll(timeout);
            waited += polled.elapsed();
            match message {
                None => break,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    at_end.insert(partition);
                }
                Some(Err(error)) if is_outage(&error) => {
                    // librdkafka reconnects by itself; the batch so far commits meanwhile
                    self.health.unreachable(&error.to_string());
                    std::thread::sleep(OUTAGE_PAUSE);
                    break;
                }
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(message)) => {
                    self.health.reachable();
                    at_end.remove(&message.partition());
                    let unread = Some((message.partition(), message.offset()));
                    if self.take_revoked(consumer, &mut batch, at_end, unread)? {
                        break;
                    }
                    self.fold_message(&message, &mut batch)?;
                }
            }
            if self.take_revoked(consumer, &mut batch, at_end, None)? {
                break;
            }
            timeout = deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                break;
            }
        }
        // a revocation served by the last poll (one that returned nothing) also drops the batch
        self.take_revoked(consumer, &mut batch, at_end, None)?;
        self.pacing.after_batch(waited, started.elapsed());
        Ok(batch)
    }

    /// After a revocation during the batch: drops the whole open batch (none of it is
    /// committed, so none of it is sent; the revoked partitions' next owner folds their events
    /// again), forgets the revoked partitions and rewinds the others to their stored offsets,
    /// and `unread`, a message polled but not folded, to itself. True when the batch was dropped.
    fn take_revoked(
        &mut self,
        consumer: &EventsConsumer,
        batch: &mut Batch,
        at_end: &mut BTreeSet<i32>,
        unread: Option<(i32, i64)>,
    ) -> Result<bool, CoordinatorError> {
        let revoked = std::mem::take(&mut self.ownership.lock().expect("ownership lock").revoked);
        if revoked.is_empty() {
            return Ok(false);
        }
        // what the engine drops now it reloads from the store, which must hold the last batch
        self.persister.settle()?;
        self.engine.discard();
        for partition in &revoked {
            self.engine.forget_partition(*partition);
            self.unsent.forget(*partition);
            at_end.remove(partition);
            self.reported_at_end.remove(partition);
        }
        let stored = self.store.offsets()?;
        let mut rewind: BTreeMap<i32, Offset> = BTreeMap::new();
        if let Some((partition, offset)) = unread {
            rewind.insert(partition, Offset::Offset(offset));
        }
        for partition in batch.next_offsets.keys() {
            let offset = stored.get(partition).map_or(Offset::Beginning, |next| Offset::Offset(*next));
            rewind.insert(*partition, offset);
        }
        for (partition, offset) in rewind.into_iter().filter(|(p, _)| !revoked.contains(p)) {
            consumer.seek(&self.topics.events, partition, offset, Duration::from_secs(10))?;
        }
        tracing::info!(?revoked, dropped = batch.events, "dropped the open batch after a revocation");
        *batch = Batch::new(self.store.begin()?);
        Ok(true)
    }

    fn fold_message(
        &mut self,
        message: &BorrowedMessage<'_>,
        batch: &mut Batch,
    ) -> Result<(), CoordinatorError> {
        let (partition, offset) = (message.partition(), message.offset());
        if self.ownership.lock().expect("ownership lock").already_published(partition, offset) {
            return self.refold_message(message, batch);
        }
        batch.events += 1;
        batch.next_offsets.insert(partition, offset + 1);
        let mark = batch.marks.entry(partition).or_default();
        mark.read(offset);
        batch.tally.consumed += 1;
        let (key, value) = (message.key().unwrap_or_default(), message.payload().unwrap_or_default());
        let source = Source { topic: &self.topics.events, partition, offset };
        let position = Position { partition, offset };
        let records = match Event::decode(value) {
            Err(error) => {
                let reason = omnifold_domain::Rejection::Undecodable(error.to_string()).to_string();
                smallvec![self.refuse(key, value, &reason, source)]
            }
            Ok(event) => match self.engine.apply(partition, &event)? {
                Outcome::Applied { outputs, .. } => {
                    mark.accepted(event.occurred_at_ms);
                    batch.tally.applied += 1;
                    outputs
                        .into_iter()
                        .flat_map(|output| output_records(&self.topics, output, position))
                        .collect()
                }
                Outcome::Duplicate => {
                    batch.tally.duplicate += 1;
                    EventRecords::new()
                }
                Outcome::Rejected(rejection) => {
                    let reason = format!("event {:?}: {rejection}", event.event_id);
                    smallvec![self.refuse(key, value, &reason, source)]
                }
            },
        };
        self.push_outputs(batch, position, records);
        Ok(())
    }

    /// Stamps each record of one event with its origin (`ORIGIN_HEADER`: the event's partition
    /// and offset and the record's index among the event's records, the same on every
    /// instance) and puts it in the outbox, unless a previous owner of the partition already
    /// delivered it.
    fn push_outputs(&self, batch: &mut Batch, position: Position, records: EventRecords) {
        let mut ownership = self.ownership.lock().expect("ownership lock");
        for (index, mut record) in records.into_iter().enumerate() {
            let origin =
                Origin { partition: position.partition, offset: position.offset, index: index as u32 };
            if ownership.already_delivered(&origin) {
                continue;
            }
            record.headers.push((ORIGIN_HEADER.into(), origin.header_value()));
            batch.commit.hand_output(record);
        }
    }

    /// Folds an event whose outputs another owner already published: the state and the
    /// offset move, nothing is written to the outbox.
    fn refold_message(
        &mut self,
        message: &BorrowedMessage<'_>,
        batch: &mut Batch,
    ) -> Result<(), CoordinatorError> {
        let partition = message.partition();
        batch.events += 1;
        batch.next_offsets.insert(partition, message.offset() + 1);
        batch.tally.restored += 1;
        if message.offset() % RESTORE_LOG_EVERY == 0 {
            let through =
                self.ownership.lock().expect("ownership lock").published_through.get(&partition).copied();
            tracing::info!(partition, offset = message.offset(), ?through, "restoring");
        }
        if let Ok(event) = Event::decode(message.payload().unwrap_or_default()) {
            self.engine.apply(partition, &event)?;
        }
        Ok(())
    }

    fn refuse(&self, key: &[u8], value: &[u8], reason: &str, source: Source<'_>) -> OutboxRecord {
        tracing::warn!(
            partition = source.partition,
            offset = source.offset,
            reason,
            "dead-lettered an event"
        );
        dead_letter(&self.topics.deadletter, key, value, reason, source)
    }

    fn commit(
        &mut self,
        consumer: &EventsConsumer,
        mut batch: Batch,
        at_end: &BTreeSet<i32>,
    ) -> Result<(), CoordinatorError> {
        // the batch before is in the store now: the engine may let go of what it kept of it,
        // and the changelog read it
        self.persister.settle()?;
        self.engine.trim();
        self.engine.write(&mut batch.commit);
        for (partition, next) in &batch.next_offsets {
            batch.commit.put_offset(*partition, *next);
        }
        if self.options.changelog {
            self.changelog(&mut batch.commit, &batch.next_offsets)?;
            metrics::gauge!("omnifold_changelog_unsent_bytes").set(self.unsent.bytes() as f64);
        }
        for (partition, mark) in &batch.marks {
            self.push_marker(&mut batch.commit, *partition, *mark, at_end.contains(partition));
        }
        let outputs = batch.commit.take_outputs();
        self.persister.submit(batch.commit, outputs)?;
        batch.tally.publish();
        self.commit_group_offsets(consumer, &batch.next_offsets);
        Ok(())
    }

    /// Notes the keys the batch wrote for the changelog, and once per changelog interval sends
    /// the owned partitions' keys written since the last sending, before the batch's markers. A
    /// key written by many batches in between is sent once, with its value as of this batch
    /// (what Kafka Streams' record cache does between commits).
    fn changelog(
        &mut self,
        commit: &mut omnifold_runtime::Commit,
        next_offsets: &BTreeMap<i32, i64>,
    ) -> Result<(), CoordinatorError> {
        self.flag_first_batches(commit, next_offsets)?;
        if Instant::now() < self.changelog_due {
            for (partition, next) in next_offsets {
                self.note_written(commit, *partition, *next);
            }
            return Ok(());
        }
        self.changelog_due = Instant::now() + Duration::from_millis(self.options.changelog_interval_ms);
        let mut pending = self.store.changelog_pending()?;
        let stored = self.store.offsets()?;
        let owned = self.ownership.lock().expect("ownership lock").owned.clone();
        let mut partitions: BTreeSet<i32> =
            pending.keys().chain(next_offsets.keys()).filter(|p| owned.contains(p)).copied().collect();
        // a state not sent whole yet goes out even while its partition is idle
        for partition in owned.iter().filter(|p| stored.contains_key(p)) {
            if !self.store.is_changelogged(*partition)? {
                partitions.insert(*partition);
            }
        }
        for partition in partitions {
            let Some(next) = next_offsets.get(&partition).or(stored.get(&partition)).copied() else {
                continue;
            };
            let noted = pending.remove(&partition).unwrap_or_default();
            let sent = if commit.sets_changelogged(partition) || self.store.is_changelogged(partition)? {
                self.send_changelog(commit, partition, next, &noted)?;
                true
            } else {
                self.send_whole_state(commit, partition, next, &noted)?
            };
            if sent {
                self.unsent.forget(partition);
            } else {
                self.note_written(commit, partition, next);
            }
        }
        Ok(())
    }

    /// A partition's first batch (the store holds no offset of it) starts its state from
    /// nothing, and this batch and every later one note what they write: the changelog will
    /// hold the whole state without a dump, so the flag goes in with that batch.
    fn flag_first_batches(
        &self,
        commit: &mut omnifold_runtime::Commit,
        next_offsets: &BTreeMap<i32, i64>,
    ) -> Result<(), CoordinatorError> {
        for partition in next_offsets.keys() {
            if self.store.offset(*partition)?.is_none() {
                commit.set_changelogged(*partition);
            }
        }
        Ok(())
    }

    /// Notes the keys of a partition the batch writes, to be sent with the next sending, and
    /// keeps their values in memory for it.
    fn note_written(&mut self, commit: &mut omnifold_runtime::Commit, partition: i32, next: i64) {
        let packed = changelog::pack(written_keys(commit, partition));
        if packed.is_empty() {
            return;
        }
        self.unsent.keep(partition, next, written(commit, partition));
        commit.put_changelog_keys(partition, next, packed);
    }

    /// A state the changelog does not hold whole (built by a replay, by a store that ran
    /// without the changelog, or while another instance wrote it) is sent whole, a part of at
    /// most `changelog_dump_records` entries per sending, before anything else of it: no offset
    /// record goes out meanwhile, so a reader takes it for incomplete. Keys written meanwhile
    /// stay noted; once the last part is out they are sent with their values then, and the
    /// offset. True once the changelog was sent (the last part was out).
    fn send_whole_state(
        &mut self,
        commit: &mut omnifold_runtime::Commit,
        partition: i32,
        next: i64,
        noted: &[(omnifold_runtime::store::Bytes, omnifold_runtime::store::Bytes)],
    ) -> Result<bool, CoordinatorError> {
        let batch = self.changelog_batch(partition, next);
        let after = self.store.dump_cursor(partition)?;
        let limit = self.options.changelog_dump_records.max(1);
        let (part, last) = changelog::dump_part(&self.store, &batch, after.as_deref(), limit)?;
        tracing::info!(
            partition,
            records = part.len(),
            done = last.is_none(),
            "sent a part of the partition's whole state to its changelog"
        );
        for record in part {
            commit.hand_output(record);
        }
        commit.put_dump_cursor(partition, last.as_deref());
        if last.is_some() {
            return Ok(false);
        }
        commit.set_changelogged(partition);
        self.send_changelog(commit, partition, next, noted)?;
        Ok(true)
    }

    /// Where a sending of a partition's changelog goes, and the offset it stands at.
    fn changelog_batch(&self, partition: i32, next: i64) -> changelog::Batch<'_> {
        changelog::Batch {
            topic: &self.topics.changelog,
            partition,
            next_offset: next,
            writer: self.store.writer_id(),
            format: crate::engine::STATE_FORMAT,
            packs: crate::engine::is_line_record,
        }
    }

    /// Sends the changelog once it is due while no events arrive, so that it does not stay
    /// behind the state of an idle partition, nor a whole state wait for the next event.
    fn send_changelog_when_idle(&mut self) -> Result<(), CoordinatorError> {
        if !self.options.changelog || Instant::now() < self.changelog_due {
            return Ok(());
        }
        self.persister.settle()?;
        let mut commit = self.store.begin()?;
        self.changelog(&mut commit, &BTreeMap::new())?;
        if commit.outputs() == 0 {
            return Ok(());
        }
        let outputs = commit.take_outputs();
        self.persister.submit(commit, outputs)?;
        Ok(())
    }

    /// Puts a partition's keys written since its changelog was last sent (`noted`, and this
    /// batch's) on the changelog, then its offset. The values come from this batch, else from
    /// what [`Unsent`] kept, else from the store: only the noted keys of batches `Unsent` did
    /// not keep whole (before a restart, or past its budget) are unpacked and read back.
    fn send_changelog(
        &mut self,
        commit: &mut omnifold_runtime::Commit,
        partition: i32,
        next: i64,
        noted: &[(omnifold_runtime::store::Bytes, omnifold_runtime::store::Bytes)],
    ) -> Result<(), CoordinatorError> {
        let kept = self.unsent.take(partition);
        let (mut entries, mut ids) = (kept.values, kept.ids);
        for (key, value) in written(commit, partition) {
            match changelog::is_seen_id(key, value.map(|v| &v[..])) {
                true => ids.push(key.clone()),
                false => _ = entries.insert(key.clone(), value.cloned()),
            }
        }
        for (key, packed) in noted {
            if !noted_batch(key).is_some_and(|offset| kept.batches.contains(&offset)) {
                let corrupt = || changelog::ChangelogError::Corrupt {
                    partition,
                    key: String::from_utf8_lossy(key).into_owned(),
                };
                for key in changelog::unpack(packed).ok_or_else(corrupt)? {
                    if !entries.contains_key(key) {
                        entries.insert(key.into(), self.store.entry(key)?);
                    }
                }
            }
            commit.remove_changelog_keys(key);
        }
        let mut entries: Vec<_> = entries.into_iter().collect();
        entries.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        let batch = self.changelog_batch(partition, next);
        let ids = ids.iter().map(|id| (&id[..], Some(&b""[..])));
        let records =
            changelog::records(&batch, ids.chain(entries.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))));
        metrics::counter!("omnifold_changelog_records_written_total").increment(records.len() as u64);
        for record in records {
            commit.hand_output(record);
        }
        Ok(())
    }

    fn push_marker(
        &mut self,
        commit: &mut omnifold_runtime::Commit,
        partition: i32,
        mark: Mark,
        at_end: bool,
    ) {
        commit.hand_output(marker(&self.topics, &self.currency, partition, mark, at_end));
        if at_end {
            self.reported_at_end.insert(partition);
        } else {
            self.reported_at_end.remove(&partition);
        }
    }

    /// Tells the ledger's readers that partitions reached their end after their last marker
    /// (the end-of-partition event often comes in the poll after the last record).
    fn mark_reached_ends(&mut self, at_end: &BTreeSet<i32>) -> Result<(), CoordinatorError> {
        self.persister.settle()?;
        let stored = self.store.offsets()?;
        let next = |partition: &i32| stored.get(partition).copied().unwrap_or(0);
        let reached: Vec<i32> = {
            let mut ownership = self.ownership.lock().expect("ownership lock");
            // a restore that reached the partition's end is over
            ownership.published_through.retain(|p, through| !(at_end.contains(p) && *through < next(p)));
            at_end
                .iter()
                .filter(|p| ownership.owned.contains(p) && !ownership.published_through.contains_key(p))
                .filter(|p| !self.reported_at_end.contains(p))
                .copied()
                .collect()
        };
        if reached.is_empty() {
            return Ok(());
        }
        let mut commit = self.store.begin()?;
        for partition in reached {
            self.push_marker(&mut commit, partition, Mark::at(next(&partition) - 1), true);
        }
        let outputs = commit.take_outputs();
        self.persister.submit(commit, outputs)?;
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

/// What a batch writes of an input partition's state, seen ids and records (`None` removes
/// the key): its offset is sent with every sending of the changelog anyway.
fn written(
    commit: &omnifold_runtime::Commit,
    partition: i32,
) -> impl Iterator<Item = (&omnifold_runtime::store::Bytes, Option<&omnifold_runtime::store::Bytes>)> {
    commit.partition_writes(partition).filter(|(key, _)| !key.starts_with(b"o/"))
}

/// The batch a noted key list (`c/` + partition + the batch's next offset) was written by.
fn noted_batch(key: &[u8]) -> Option<i64> {
    let offset = key.strip_prefix(b"c/")?.get(4..)?;
    Some(i64::from_be_bytes(offset.try_into().ok()?))
}

/// The keys of [`written`].
fn written_keys(commit: &omnifold_runtime::Commit, partition: i32) -> impl Iterator<Item = &[u8]> {
    written(commit, partition).map(|(key, _)| &key[..])
}

/// Where an event sits in the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// The outbox records of one event, held inline for the few most events make.
pub type EventRecords = SmallVec<[OutboxRecord; 4]>;

/// The outbox records of one fold output of the event at `position`; `detected_at_ms` and a
/// ledger entry's position are stamped here, outside the fold. A ledger entry goes out twice,
/// protobuf and its JSON form, to the partition of the ledger topics that mirrors its event's.
pub fn output_records(topics: &Topics, output: Output, position: Position) -> SmallVec<[OutboxRecord; 2]> {
    let record = |topic: &TopicName, key: String, value: Vec<u8>| OutboxRecord {
        topic: topic.clone(),
        key: key.into_bytes(),
        value,
        headers: Vec::new(),
        partition: None,
    };
    match output {
        Output::Availability(a) => {
            smallvec![record(&topics.availability, slash_joined([&a.channel, &a.sku]), a.encode_to_vec())]
        }
        Output::Alert(mut alert) => {
            alert.detected_at_ms = wall_clock_ms();
            smallvec![record(&topics.alerts, alert.sku.clone(), alert.encode_to_vec())]
        }
        Output::Escalation(e) => {
            smallvec![record(&topics.escalations, e.channel.clone(), e.encode_to_vec())]
        }
        Output::Replenishment(r) => {
            smallvec![record(
                &topics.replenishment,
                slash_joined([r.pool.as_str(), r.sku.as_str()]),
                r.encode_to_vec()
            )]
        }
        Output::Routing(r) => {
            let key = slash_joined([&r.channel, &r.order_id, &r.line_id].map(|part| part.as_str()));
            smallvec![record(&topics.routing, key, r.encode_to_vec())]
        }
        Output::Ledger(mut entry) => {
            entry.event_partition = position.partition;
            entry.event_offset = position.offset;
            let key = if entry.sku.is_empty() { &entry.channel } else { &entry.sku };
            let fields = entry.fields();
            let json = omnifold_proto::json::ledger_ref_to_json(&fields);
            let mirrored =
                |record: OutboxRecord| OutboxRecord { partition: Some(position.partition), ..record };
            smallvec![
                mirrored(record(&topics.ledger, key.to_string(), fields.encode_to_vec())),
                mirrored(record(&topics.ledger_json, key.to_string(), json)),
            ]
        }
    }
}

/// `parts` joined by `/` in a string of exactly their length: `format!` starts such a key
/// empty and grows it as it writes, a reallocation and a copy for most keys.
fn slash_joined<const N: usize>(parts: [&str; N]) -> String {
    let mut joined = String::with_capacity(parts.iter().map(|part| part.len() + 1).sum());
    for (n, part) in parts.into_iter().enumerate() {
        if n > 0 {
            joined.push('/');
        }
        joined.push_str(part);
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_their_parts_joined_by_slashes_in_one_allocation() {
        let key = slash_joined(["amazon-marketplace", "SKU-000123"]);
        assert_eq!(key, "amazon-marketplace/SKU-000123");
        assert!(key.capacity() <= key.len() + 2, "room for {} in {}", key.len(), key.capacity());
        assert_eq!(slash_joined(["shopify", "order-1", "1"]), "shopify/order-1/1");
        assert_eq!(slash_joined(["", "x"]), "/x");
    }

    /// A sending skips unpacking a note only if it reads the note's batch right: the note's
    /// key, as the store writes and lists it, names the batch's next offset.
    #[test]
    fn a_noted_key_list_names_the_batch_that_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = omnifold_runtime::Store::open(dir.path()).unwrap();
        let mut commit = store.begin().unwrap();
        commit.put_changelog_keys(3, 1_234_567_890_123, changelog::pack([&b"s/x"[..]].into_iter()));
        store.commit(commit).unwrap();
        let pending = store.changelog_pending().unwrap();
        let (key, _) = &pending[&3][0];
        assert_eq!(noted_batch(key), Some(1_234_567_890_123));
        assert_eq!(noted_batch(b"c/"), None);
    }
}

//! Sending the outbox: exactly-once effects without broker transactions.
//!
//! Records reach the outbox in the same atomic batch as the state change that caused them
//! (see [`crate::store`]). This sender delivers them through an idempotent producer, each
//! stamped with the header `omnifold-outbox: <writer>:<seq>`, to the partition Kafka's default
//! partitioner would pick, and then forgets them. If the process dies between delivery and
//! forgetting, [`OutboxSender::recover`] reads the stamped headers back from each target
//! partition (from the last offset this store is known to have delivered there) and drops
//! what already arrived, so nothing is sent twice.
//!
//! The same read-back makes a broker outage safe: [`OutboxSender::deliver`] waits while the
//! broker is away, then replaces the producer (its queue purged, so nothing it held lands
//! later) and recovers before sending the rest.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, PurgeConfig, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::changelog::TOMBSTONE_HEADER;
use crate::deliveries::DeliveryContext;
use crate::handoff::Handoff;
use crate::health::{Backoff, BrokerHealth, HealthContext, OutageError, is_outage};
use crate::kafka::{KafkaError, KafkaOptions};
use crate::origin::{BARRIER_HEADER, TAILS_HEADER, encode_tails};
use crate::partitioner::partition_for;
use crate::store::{OutboxRecord, Store, StoreError};

/// The header that identifies a record's writer and outbox sequence number.
pub const OUTBOX_HEADER: &str = "omnifold-outbox";

const SEND_BATCH: usize = 20_000;
/// Waves of records queued in the producer and not yet confirmed. With one, the sender queued
/// nothing while a wave's last records went to the broker and back and were confirmed in the
/// store, about three fifths of its time in a coordinator's catch-up.
const WAVES_IN_FLIGHT: usize = 2;
/// Reading back delivered records fails (to be retried) if the ends are not reached by then.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
const RECOVERY_POLL: Duration = Duration::from_millis(200);
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);
/// How long the producer waits to learn a topic at start (a few milliseconds when the broker
/// is there).
const LEARN_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("delivery to {topic} failed: {source}")]
    Delivery { topic: String, source: rdkafka::error::KafkaError },
    #[error("no partition count known for topic {0}")]
    UnknownTopic(String),
    #[error("an outbox record names partition {partition} of {topic}, which has {partitions}")]
    NoSuchPartition { topic: String, partition: i32, partitions: i32 },
    #[error("outbox recovery task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("reading back delivered records did not reach the end of {0} partitions in time")]
    RecoveryIncomplete(usize),
    #[error(transparent)]
    Outage(#[from] OutageError),
    #[error("the outbox send loop ended while its committing loop ran")]
    SenderEnded,
}

impl OutboxError {
    /// Whether sending again after a pause (and a recovery) may succeed: a broker outage, a
    /// producer that lost its idempotence state across a broker restart, a timeout. A record
    /// the broker refuses for what it is, or a store failure, is not retried.
    fn is_retryable(&self) -> bool {
        use RDKafkaErrorCode::*;
        match self {
            OutboxError::Delivery { source, .. } => !matches!(
                source.rdkafka_error_code(),
                Some(MessageSizeTooLarge | InvalidMessage | InvalidRecord | TopicAuthorizationFailed)
            ),
            OutboxError::Kafka(KafkaError::Client(error)) => is_outage(error),
            OutboxError::RecoveryIncomplete(_) => true,
            _ => false,
        }
    }
}

/// Delivers a store's outbox.
pub struct OutboxSender {
    store: Store,
    kafka: KafkaOptions,
    producer: ThreadedProducer<DeliveryContext>,
    partitions: HashMap<String, i32>,
    health: Arc<BrokerHealth>,
    /// The last offset delivered to each partition this sender may write, raised now and then
    /// to just below the partition's end, and when (see `crate::origin`); `None` before a
    /// barrier first needed them.
    tails: std::sync::Mutex<Option<(Instant, Tails)>>,
    /// Reads the partitions' watermarks for the tails; made at the first refresh and kept, so
    /// a refresh every few seconds is a request, not a new client and its connections.
    watermarks: Arc<std::sync::OnceLock<BaseConsumer>>,
    /// Records the committing loop hands over in memory (see [`OutboxLoop::spawn_handing_off`]).
    handoff: Option<Arc<Handoff>>,
    /// What it shares with the committing loop, when run by an [`OutboxLoop`]: each wave
    /// delivered is counted off the pending records there at once.
    signals: Option<Arc<OutboxSignals>>,
    /// Whether the store may hold records older than the hand-off's: after a start and after
    /// a failed delivery, until a read of the store comes back empty.
    from_store: AtomicBool,
    /// How a barrier absorbs an earlier one to the same partition (see
    /// [`OutboxSender::merging_barriers`]); without it every barrier is sent.
    merge_barriers: Option<MergeBarriers>,
}

/// A wave queued in the producer, not yet confirmed.
struct InFlight {
    number: usize,
    seqs: Vec<u64>,
    started: Instant,
    queued_ms: u64,
}

/// Folds an `earlier` barrier into a `later` one to the same topic partition: the record to
/// send in the later one's place, saying all the earlier one said, or `None` to send both.
pub type MergeBarriers = fn(earlier: &OutboxRecord, later: &OutboxRecord) -> Option<OutboxRecord>;

impl OutboxSender {
    /// `partitions` is the partition count of every topic the outbox may hold records for.
    pub fn new(
        store: Store,
        kafka: &KafkaOptions,
        partitions: HashMap<String, i32>,
        health: Arc<BrokerHealth>,
    ) -> Result<Self, OutboxError> {
        let producer = kafka.idempotent_producer(health.clone())?;
        let tails = std::sync::Mutex::new(None);
        Ok(OutboxSender {
            store,
            kafka: kafka.clone(),
            producer,
            partitions,
            health,
            tails,
            watermarks: Arc::new(std::sync::OnceLock::new()),
            handoff: None,
            signals: None,
            from_store: AtomicBool::new(true),
            merge_barriers: None,
        })
    }

    /// Sends one barrier where several to the same partition wait in one sending, merged
    /// by `merge`. Each barrier waits for everything before it and holds back everything
    /// after it, two round trips; a sender behind by many batches of one barrier each fell
    /// further behind (its committing loop waited for it for up to two seconds at 5,000
    /// events/s). Merged, the records between go out in one wave, as if their batches had
    /// been one.
    pub fn merging_barriers(mut self, merge: MergeBarriers) -> Self {
        self.merge_barriers = Some(merge);
        self
    }

    /// Recovers (see [`OutboxSender::recover`]) and sends what is pending, waiting out a
    /// broker outage (a caller that must not wait forever selects it against its shutdown).
    pub async fn start(&mut self) -> Result<usize, OutboxError> {
        self.learn_topics().await;
        self.ride_out(&AtomicBool::new(false), true).await
    }

    /// Asks the broker about every topic the outbox writes, through its producer. librdkafka
    /// looks a topic it has not seen up on a timer of about a second, so a new producer's first
    /// record otherwise waits some 800 ms here (confluentinc/librdkafka#3202, #5032): at every
    /// start, ahead of the records a killed process left to send. Failing is harmless; the
    /// send that follows asks again. The first failure ends it: the broker is away, and the
    /// outage is for the sending that follows to wait out, with its health reports.
    async fn learn_topics(&self) {
        let producer = self.producer.clone();
        let topics: Vec<String> = self.partitions.keys().cloned().collect();
        let started = std::time::Instant::now();
        let asked = tokio::task::spawn_blocking(move || {
            for topic in topics {
                if let Err(error) = producer.client().fetch_metadata(Some(&topic), LEARN_TIMEOUT) {
                    tracing::debug!(topic, %error, "the outbox producer could not learn a topic");
                    break;
                }
            }
        })
        .await;
        if asked.is_ok() {
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "the outbox producer learned its topics"
            );
        }
    }

    /// Sends every pending record, waiting out broker outages: after a failed delivery it
    /// pauses, replaces the producer and recovers before sending the rest, so a record is
    /// delivered once however the outage cut a batch. Returns early, leaving records pending
    /// for the next start, once `stop` is set while the broker is away.
    pub async fn deliver(&mut self, stop: &AtomicBool) -> Result<usize, OutboxError> {
        self.ride_out(stop, false).await
    }

    async fn ride_out(&mut self, stop: &AtomicBool, mut recover_first: bool) -> Result<usize, OutboxError> {
        let mut backoff = Backoff::default();
        loop {
            let attempt =
                if recover_first { self.recover().await.map(|_| 0) } else { self.send_pending().await };
            match attempt {
                Ok(_) if recover_first => recover_first = false,
                Ok(sent) => {
                    self.health.reachable();
                    return Ok(sent);
                }
                Err(error) if error.is_retryable() => {
                    self.health.unreachable(&error.to_string());
                    self.health.check()?;
                    if stop.load(Ordering::Relaxed) {
                        return Ok(0);
                    }
                    tokio::time::sleep(backoff.next_pause()).await;
                    self.replace_producer()?;
                    self.learn_topics().await;
                    recover_first = true;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// A fresh producer; the old one's queued and in-flight records are purged first, so
    /// none of them can land after the recovery that follows has read the partitions.
    fn replace_producer(&mut self) -> Result<(), OutboxError> {
        self.producer.purge(PurgeConfig::default().queue().inflight());
        self.producer = self.kafka.idempotent_producer(self.health.clone())?;
        Ok(())
    }

    /// Drops the outbox records that already reached their topic before a crash (or an
    /// outage). Call before the first [`OutboxSender::send_pending`]; [`OutboxSender::start`]
    /// does.
    pub async fn recover(&self) -> Result<usize, OutboxError> {
        self.from_store.store(true, Ordering::Relaxed);
        let pending = self.pending(usize::MAX).await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let mut targets = BTreeSet::new();
        for (_, record) in &pending {
            targets.insert((record.topic.to_string(), self.partition_of(record)?));
        }
        let (store, kafka, health) = (self.store.clone(), self.kafka.clone(), self.health.clone());
        let delivered =
            tokio::task::spawn_blocking(move || delivered_seqs(&store, &kafka, health, &targets)).await??;
        let already: Vec<u64> =
            pending.iter().map(|(seq, _)| *seq).filter(|seq| delivered.contains(seq)).collect();
        self.confirm(already.clone(), BTreeMap::new()).await?;
        self.from_store.store(true, Ordering::Relaxed);
        tracing::info!(pending = pending.len(), already_delivered = already.len(), "recovered outbox");
        Ok(already.len())
    }

    /// Sends every pending record, waits for all deliveries and forgets them. Returns how
    /// many were sent.
    /// Records carrying [`BARRIER_HEADER`] are sent on their own, after everything before
    /// them is delivered and before anything after them, stamped with the tails.
    ///
    /// Up to [`WAVES_IN_FLIGHT`] waves are out at once: the next is queued while the last one's
    /// deliveries come back. Waves are confirmed in the order they were sent, so the store's
    /// tails only ever rise. Records read from the store are confirmed before the store is read
    /// again, which would give them again; records from the hand-off are taken out of it.
    pub async fn send_pending(&self) -> Result<usize, OutboxError> {
        let mut sent = 0;
        let mut in_flight = VecDeque::new();
        loop {
            if self.from_store.load(Ordering::Relaxed) {
                sent += self.finish_all(&mut in_flight).await?;
            }
            let mut pending = self.next_pending().await?;
            if pending.is_empty() {
                return Ok(sent + self.finish_all(&mut in_flight).await?);
            }
            if let Some(merge) = self.merge_barriers {
                self.merge_superseded(&mut pending, merge).await?;
            }
            for wave in waves(&pending) {
                if is_barrier(&wave[0].1) {
                    // a barrier carries the tails of everything sent before it
                    sent += self.finish_all(&mut in_flight).await?;
                    sent += self.send_barriers(wave).await?;
                    continue;
                }
                in_flight.push_back(self.queue_wave(wave).await?);
                if in_flight.len() >= WAVES_IN_FLIGHT {
                    let oldest = in_flight.pop_front().expect("a wave in flight");
                    sent += self.finish_wave(oldest).await?;
                }
            }
        }
    }

    async fn finish_all(&self, in_flight: &mut VecDeque<InFlight>) -> Result<usize, OutboxError> {
        let mut sent = 0;
        while let Some(wave) = in_flight.pop_front() {
            sent += self.finish_wave(wave).await?;
        }
        Ok(sent)
    }

    /// Merges every barrier of `pending` into the last one to its partition, stored in its
    /// place before any of it is sent.
    async fn merge_superseded(
        &self,
        pending: &mut Vec<(u64, OutboxRecord)>,
        merge: MergeBarriers,
    ) -> Result<(), OutboxError> {
        let superseded = superseded_barriers(pending, merge, |record| self.partition_of(record))?;
        if superseded.dropped.is_empty() {
            return Ok(());
        }
        let dropped: BTreeSet<u64> = superseded.dropped.iter().copied().collect();
        pending.retain(|(seq, _)| !dropped.contains(seq));
        for (seq, record) in pending.iter_mut() {
            if let Some(merged) = superseded.rewritten.get(seq) {
                *record = merged.clone();
            }
        }
        tracing::debug!(dropped = dropped.len(), kept = superseded.rewritten.len(), "merged barriers");
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.supersede(&superseded.dropped, &superseded.rewritten))
            .await??)
    }

    /// The next records to send, oldest first: from the store while it may hold older records
    /// than the hand-off, then from the hand-off (without one, always from the store).
    async fn next_pending(&self) -> Result<Vec<(u64, OutboxRecord)>, OutboxError> {
        let Some(handoff) = &self.handoff else {
            return self.pending(SEND_BATCH).await;
        };
        if self.from_store.load(Ordering::Relaxed) {
            let pending = self.pending(SEND_BATCH).await?;
            match pending.last() {
                Some((last, _)) => {
                    handoff.sent_from_store(*last);
                    return Ok(pending);
                }
                None => self.from_store.store(false, Ordering::Relaxed),
            }
        }
        Ok(handoff.take(SEND_BATCH))
    }

    /// Records waiting to be sent: the hand-off's, or the store's count while it may hold more.
    async fn pending_count(&self) -> Result<usize, OutboxError> {
        match &self.handoff {
            Some(handoff) if !self.from_store.load(Ordering::Relaxed) => Ok(handoff.len()),
            _ => {
                let store = self.store.clone();
                Ok(tokio::task::spawn_blocking(move || store.pending_count()).await?)
            }
        }
    }

    /// Sends a run of barrier records, each stamped with the tails of everything delivered
    /// before it.
    async fn send_barriers(&self, barriers: &[(u64, OutboxRecord)]) -> Result<usize, OutboxError> {
        let tails = encode_tails(self.tails().await?.iter());
        let stamped: Vec<(u64, OutboxRecord)> = barriers
            .iter()
            .map(|(seq, record)| {
                let mut record = record.clone();
                record.headers.retain(|(key, _)| key != BARRIER_HEADER);
                record.headers.push((TAILS_HEADER.into(), tails.clone()));
                (*seq, record)
            })
            .collect();
        self.send(&stamped).await
    }

    /// The tails as now. Each is the last offset this sender delivered to the partition, or
    /// one below the partition's high watermark as last read (at or below its end, even where
    /// the broker answers the watermark short), whichever is higher: everything it delivers
    /// later lands above it. Raised from the watermarks every [`TAILS_REFRESH`], so that a
    /// reader of a marker's tails reads seconds of a partition, not all it got since this
    /// sender last wrote to it.
    async fn tails(&self) -> Result<BTreeMap<(String, i32), i64>, OutboxError> {
        if let Some((at, tails)) = self.tails.lock().expect("tails lock").clone()
            && at.elapsed() < TAILS_REFRESH
        {
            return Ok(tails);
        }
        let (store, kafka, partitions) = (self.store.clone(), self.kafka.clone(), self.partitions.clone());
        let watermarks = self.watermarks.clone();
        let started = std::time::Instant::now();
        let floors = tokio::task::spawn_blocking(move || {
            let consumer = match watermarks.get() {
                Some(consumer) => consumer,
                None => {
                    let consumer: BaseConsumer = kafka.client_config().create().map_err(KafkaError::from)?;
                    watermarks.get_or_init(|| consumer)
                }
            };
            seed_tails(&store, consumer, &partitions)
        })
        .await??;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "read the output partitions' tails"
        );
        let mut guard = self.tails.lock().expect("tails lock");
        let mut tails = guard.take().map(|(_, tails)| tails).unwrap_or_default();
        for (target, floor) in floors {
            let tail = tails.entry(target).or_insert(floor);
            *tail = (*tail).max(floor);
        }
        *guard = Some((Instant::now(), tails.clone()));
        Ok(tails)
    }

    fn note_delivered(&self, delivered: &BTreeMap<(String, i32), i64>) {
        if let Some((_, tails)) = self.tails.lock().expect("tails lock").as_mut() {
            for (target, offset) in delivered {
                let tail = tails.entry(target.clone()).or_insert(*offset);
                *tail = (*tail).max(*offset);
            }
        }
    }

    async fn send(&self, pending: &[(u64, OutboxRecord)]) -> Result<usize, OutboxError> {
        let wave = self.queue_wave(pending).await?;
        self.finish_wave(wave).await
    }

    /// Queues a wave of records in the producer.
    async fn queue_wave(&self, pending: &[(u64, OutboxRecord)]) -> Result<InFlight, OutboxError> {
        let started = Instant::now();
        let number = self.producer.context().waves().begin(pending.len());
        for (seq, record) in pending {
            self.enqueue(number, *seq, record).await?;
        }
        let seqs = pending.iter().map(|(seq, _)| *seq).collect();
        Ok(InFlight { number, seqs, started, queued_ms: started.elapsed().as_millis() as u64 })
    }

    /// Waits for a wave's deliveries and confirms them in the store.
    async fn finish_wave(&self, wave: InFlight) -> Result<usize, OutboxError> {
        let tails = self
            .producer
            .context()
            .waves()
            .finish(wave.number)
            .await
            .map_err(|(topic, source)| OutboxError::Delivery { topic, source })?;
        let records = wave.seqs.len();
        self.note_delivered(&tails);
        self.confirm(wave.seqs, tails).await?;
        if let Some(signals) = &self.signals {
            signals.sent(records);
        }
        let (queued_ms, delivered_ms) = (wave.queued_ms, wave.started.elapsed().as_millis() as u64);
        tracing::debug!(records, queued_ms, delivered_ms, "sent outbox records");
        metrics::counter!("omnifold_outbox_records_sent_total").increment(records as u64);
        Ok(records)
    }

    /// Hands one record to librdkafka's queue at once (the `send` future would only enqueue
    /// when first polled, one round trip per record), waiting while the queue is full.
    async fn enqueue(&self, wave: usize, seq: u64, record: &OutboxRecord) -> Result<(), OutboxError> {
        let mut stamp = String::with_capacity(self.store.writer_id().len() + 21);
        stamp.push_str(self.store.writer_id());
        stamp.push(':');
        stamp.push_str(itoa::Buffer::new().format(seq));
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 1);
        for (key, value) in &record.headers {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        headers = headers.insert(Header { key: OUTBOX_HEADER, value: Some(&stamp) });
        let mut base_record = BaseRecord::with_opaque_to(&record.topic, wave)
            .key(&record.key)
            .partition(self.partition_of(record)?)
            .headers(headers);
        if !record.headers.iter().any(|(key, _)| key == TOMBSTONE_HEADER) {
            base_record = base_record.payload(&record.value);
        }
        loop {
            match self.producer.send(base_record) {
                Ok(()) => return Ok(()),
                Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    base_record = returned;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((source, _)) => {
                    return Err(OutboxError::Delivery { topic: record.topic.to_string(), source });
                }
            }
        }
    }

    /// The store's scans and writes block (disk), so they run off the async workers.
    async fn pending(&self, limit: usize) -> Result<Vec<(u64, OutboxRecord)>, OutboxError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.pending(limit)).await??)
    }

    async fn confirm(&self, seqs: Vec<u64>, tails: BTreeMap<(String, i32), i64>) -> Result<(), OutboxError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.confirm_sent(&seqs, &tails)).await??)
    }

    fn partition_of(&self, record: &OutboxRecord) -> Result<i32, OutboxError> {
        let partitions = self
            .partitions
            .get(&*record.topic)
            .ok_or_else(|| OutboxError::UnknownTopic(record.topic.to_string()))?;
        match record.partition {
            Some(partition) if partition < *partitions => Ok(partition),
            Some(partition) => Err(OutboxError::NoSuchPartition {
                topic: record.topic.to_string(),
                partition,
                partitions: *partitions,
            }),
            None => Ok(partition_for(&record.key, *partitions)),
        }
    }
}

/// What merging barriers makes of a sending: the barriers merged into later ones, and the
/// later ones as merged.
#[derive(Debug, Default, PartialEq)]
struct Superseded {
    dropped: Vec<u64>,
    rewritten: BTreeMap<u64, OutboxRecord>,
}

/// Merges each barrier of `pending` into the next one to the same topic partition, where
/// `merge` can: the barrier a chain of merges ends in says what all of them said.
fn superseded_barriers(
    pending: &[(u64, OutboxRecord)],
    merge: MergeBarriers,
    partition_of: impl Fn(&OutboxRecord) -> Result<i32, OutboxError>,
) -> Result<Superseded, OutboxError> {
    let mut last: BTreeMap<(&str, i32), (u64, OutboxRecord)> = BTreeMap::new();
    let mut superseded = Superseded::default();
    for (seq, record) in pending.iter().filter(|(_, record)| is_barrier(record)) {
        let target = (&*record.topic, partition_of(record)?);
        let mut kept = (*seq, record.clone());
        if let Some((earlier_seq, earlier)) = last.get(&target)
            && let Some(merged) = merge(earlier, record)
        {
            superseded.dropped.push(*earlier_seq);
            superseded.rewritten.remove(earlier_seq);
            superseded.rewritten.insert(*seq, merged.clone());
            kept.1 = merged;
        }
        last.insert(target, kept);
    }
    Ok(superseded)
}

/// Consecutive records alike: runs of barriers and runs of other records, in order.
fn waves(pending: &[(u64, OutboxRecord)]) -> Vec<&[(u64, OutboxRecord)]> {
    let mut waves = Vec::new();
    let mut start = 0;
    for i in 1..=pending.len() {
        if i == pending.len() || is_barrier(&pending[i].1) != is_barrier(&pending[start].1) {
            waves.push(&pending[start..i]);
            start = i;
        }
    }
    waves
}

fn is_barrier(record: &OutboxRecord) -> bool {
    record.headers.iter().any(|(key, _)| key == BARRIER_HEADER)
}

/// The last offset delivered (or a floor below the end) per (topic, partition).
type Tails = BTreeMap<(String, i32), i64>;

/// How often the tails are raised to just below the partitions' ends.
const TAILS_REFRESH: Duration = Duration::from_secs(5);

fn seed_tails(
    store: &Store,
    consumer: &BaseConsumer,
    partitions: &HashMap<String, i32>,
) -> Result<BTreeMap<(String, i32), i64>, OutboxError> {
    let mut tails = BTreeMap::new();
    for (topic, count) in partitions {
        for partition in 0..*count {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .map_err(KafkaError::from)?;
            let delivered = store.tail(topic, partition)?.unwrap_or(-1);
            tails.insert((topic.clone(), partition), delivered.max(high - 1));
        }
    }
    Ok(tails)
}

/// The outbox sequence numbers of this store's writer found in the target partitions, read
/// from the last offset known delivered (or the start) to the end of each.
///
/// The end is each partition's end-of-partition event, not the high watermark: nisshi answers
/// ListOffsets with the base offset of a partition's last batch, so its watermark can sit
/// below records that are already there (ARCHITECTURE.md, "The broker"). Not reaching every
/// end (the broker went away) is an error: sending on a partial read would repeat records.
fn delivered_seqs(
    store: &Store,
    kafka: &KafkaOptions,
    health: Arc<BrokerHealth>,
    targets: &BTreeSet<(String, i32)>,
) -> Result<BTreeSet<u64>, OutboxError> {
    let prefix = format!("{}:", store.writer_id());
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in targets {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let mut found = BTreeSet::new();
    for (topic, partitions) in by_topic {
        found.extend(delivered_in_topic(store, kafka, health.clone(), topic, &partitions, &prefix)?);
    }
    Ok(found)
}

/// One topic at a time: an end-of-partition event names its partition, not its topic.
fn delivered_in_topic(
    store: &Store,
    kafka: &KafkaOptions,
    health: Arc<BrokerHealth>,
    topic: &str,
    partitions: &[i32],
    writer_prefix: &str,
) -> Result<BTreeSet<u64>, OutboxError> {
    let consumer: BaseConsumer<HealthContext> = kafka
        .client_config()
        .set("group.id", "omnifold-outbox-recovery")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10")
        .create_with_context(HealthContext::new(health))
        .map_err(KafkaError::from)?;
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let start = store.tail(topic, *partition)?.map_or(Offset::Beginning, |tail| Offset::Offset(tail + 1));
        assignment.add_partition_offset(topic, *partition, start).map_err(KafkaError::from)?;
    }
    consumer.assign(&assignment).map_err(KafkaError::from)?;
    let mut open: BTreeSet<i32> = partitions.iter().copied().collect();
    let mut found = BTreeSet::new();
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(OutboxError::RecoveryIncomplete(open.len()));
        }
        match consumer.poll(RECOVERY_POLL) {
            None => {}
            Some(Err(ClientError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            Some(Err(error)) => return Err(KafkaError::from(error).into()),
            Some(Ok(message)) => {
                if let Some(seq) = outbox_seq(&message, writer_prefix) {
                    found.insert(seq);
                }
            }
        }
    }
    Ok(found)
}

fn outbox_seq(message: &impl Message, writer_prefix: &str) -> Option<u64> {
    let headers = message.headers()?;
    headers.iter().filter(|h| h.key == OUTBOX_HEADER).find_map(|h| {
        let stamp = std::str::from_utf8(h.value?).ok()?;
        stamp.strip_prefix(writer_prefix)?.parse().ok()
    })
}

/// What an [`OutboxLoop`] and the loop that commits share.
#[derive(Debug, Default)]
pub struct OutboxSignals {
    /// Set at shutdown: a delivery stuck in a broker outage gives up, leaving its records
    /// pending for the next start.
    give_up: AtomicBool,
    /// Set once the committing loop has ended: one last pass, then the send loop ends.
    last_pass: AtomicBool,
    /// Outbox records committed and not yet sent (approximately: for push-back only).
    pending: AtomicUsize,
    committed: Notify,
    /// Where a loop spawned with [`OutboxLoop::spawn_handing_off`] hands its records.
    handoff: Arc<Handoff>,
}

impl OutboxSignals {
    /// Tells the send loop that a commit added `records` to the outbox.
    pub fn committed(&self, records: usize) {
        self.count_committed(records);
        self.committed.notify_one();
    }

    fn count_committed(&self, records: usize) {
        let pending = self.pending.fetch_add(records, Ordering::Relaxed) + records;
        pending_gauge(pending);
    }

    /// Tells the send loop that a commit added `records` to the outbox, and hands them over
    /// (for a loop spawned with [`OutboxLoop::spawn_handing_off`], which must hand every record
    /// it commits this way).
    pub fn committed_records(&self, records: crate::Handed) {
        // counted before the sender can take them, so that its count-off never comes first
        self.count_committed(records.len());
        self.handoff.push(records);
        self.committed.notify_one();
    }

    /// Tells the send loop that the outbox holds `records` (re-counted by the caller).
    pub fn pending_now(&self, records: usize) {
        self.pending.store(records, Ordering::Relaxed);
        pending_gauge(records);
        if records > 0 {
            self.committed.notify_one();
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Counts `records` delivered off the pending ones, as each wave is. Counted only once the
    /// sender had sent everything, a committing loop pushed back by the count waited until the
    /// sender had run dry, and the sender then waited for its next commits: they took turns
    /// instead of running side by side (a coordinator's sender sat idle for 10 of its 25 s).
    fn sent(&self, records: usize) {
        let before = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |pending| {
                Some(pending.saturating_sub(records))
            })
            .expect("the update always succeeds");
        pending_gauge(before.saturating_sub(records));
    }
}

/// `omnifold_outbox_pending_records`: outbox records committed and not yet sent, as the
/// [`OutboxSignals`] count them (the send loop re-counts the store after each delivery). A
/// sender used without an [`OutboxLoop`] (the on-call sink's) does not set it.
fn pending_gauge(records: usize) {
    metrics::gauge!("omnifold_outbox_pending_records").set(records as f64);
}

/// The outbox sender as a task of its own, so that the loop that commits never waits on the
/// broker, and a shutdown during an outage is not held up by deliveries.
pub struct OutboxLoop {
    signals: Arc<OutboxSignals>,
    task: Option<tokio::task::JoinHandle<Result<(), OutboxError>>>,
}

impl OutboxLoop {
    /// Starts delivering after each commit the signals announce, reading what to send from
    /// the store.
    pub fn spawn(sender: OutboxSender) -> Self {
        Self::spawn_with(sender, false)
    }

    /// Like [`OutboxLoop::spawn`], but the committing loop hands every record it commits
    /// over in memory ([`OutboxSignals::committed_records`]), so the sender reads the store
    /// only after a start or a failed delivery.
    pub fn spawn_handing_off(sender: OutboxSender) -> Self {
        Self::spawn_with(sender, true)
    }

    fn spawn_with(mut sender: OutboxSender, handing_off: bool) -> Self {
        let signals = Arc::new(OutboxSignals::default());
        if handing_off {
            sender.handoff = Some(signals.handoff.clone());
        }
        sender.signals = Some(signals.clone());
        let shared = signals.clone();
        let task = tokio::spawn(async move {
            loop {
                let last = shared.last_pass.load(Ordering::Relaxed);
                sender.deliver(&shared.give_up).await?;
                let pending = sender.pending_count().await?;
                shared.pending.store(pending, Ordering::Relaxed);
                pending_gauge(pending);
                if last {
                    return Ok(());
                }
                shared.committed.notified().await;
            }
        });
        OutboxLoop { signals, task: Some(task) }
    }

    pub fn signals(&self) -> Arc<OutboxSignals> {
        self.signals.clone()
    }

    /// Resolves only if the send loop ends before [`OutboxLoop::finish`], i.e. it failed.
    async fn failed(&mut self) -> OutboxError {
        match self.task.as_mut() {
            Some(task) => {
                let ended = task.await;
                self.task = None;
                match ended {
                    Ok(Ok(())) => OutboxError::SenderEnded,
                    Ok(Err(error)) => error,
                    Err(join) => join.into(),
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Runs beside `worker`, the loop that commits (on a blocking thread), until it ends,
    /// `shutdown` resolves (then `stop` is set, a delivery stuck in an outage gives up, and the
    /// worker is awaited) or this send loop fails; then delivers what is left.
    pub async fn supervise<E, F>(
        mut self,
        mut worker: tokio::task::JoinHandle<Result<(), E>>,
        stop: &AtomicBool,
        shutdown: std::pin::Pin<&mut F>,
    ) -> Result<(), E>
    where
        E: From<OutboxError> + From<tokio::task::JoinError>,
        F: std::future::Future<Output = ()>,
    {
        let result = tokio::select! {
            _ = shutdown => {
                stop.store(true, Ordering::Relaxed);
                self.signals.give_up.store(true, Ordering::Relaxed);
                (&mut worker).await?
            }
            finished = &mut worker => finished?,
            failed = self.failed() => {
                stop.store(true, Ordering::Relaxed);
                let _ = (&mut worker).await;
                return Err(failed.into());
            }
        };
        let sent = self.finish().await;
        result.and(sent.map_err(E::from))
    }

    /// Once the committing loop has ended: delivers what is left and ends the send loop.
    pub async fn finish(mut self) -> Result<(), OutboxError> {
        self.signals.last_pass.store(true, Ordering::Relaxed);
        self.signals.committed.notify_one();
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, partition: i32, barrier: bool, value: &[u8]) -> OutboxRecord {
        let headers = if barrier { vec![(BARRIER_HEADER.into(), Vec::new())] } else { Vec::new() };
        OutboxRecord {
            topic: topic.into(),
            key: Vec::new(),
            value: value.to_vec(),
            headers,
            partition: Some(partition),
        }
    }

    /// Concatenates the values: the merged barrier says all the earlier ones said, in order.
    fn concatenate(earlier: &OutboxRecord, later: &OutboxRecord) -> Option<OutboxRecord> {
        Some(OutboxRecord { value: [earlier.value.as_slice(), &later.value].concat(), ..later.clone() })
    }

    fn partition(record: &OutboxRecord) -> Result<i32, OutboxError> {
        Ok(record.partition.expect("test records name their partition"))
    }

    #[test]
    fn each_barrier_is_merged_into_the_last_to_its_partition_and_the_waves_join() {
        let pending = vec![
            (1, record("alerts", 0, false, b"")),
            (2, record("ledger", 0, true, b"a")),
            (3, record("ledger", 1, true, b"x")),
            (4, record("alerts", 1, false, b"")),
            (5, record("ledger", 0, true, b"b")),
            (6, record("ledger", 1, true, b"y")),
            (7, record("alerts", 0, false, b"")),
            (8, record("ledger", 0, true, b"c")),
        ];
        let superseded = superseded_barriers(&pending, concatenate, partition).unwrap();
        assert_eq!(superseded.dropped, vec![2, 3, 5]);
        let rewritten: Vec<(u64, &[u8])> =
            superseded.rewritten.iter().map(|(seq, r)| (*seq, r.value.as_slice())).collect();
        assert_eq!(rewritten, vec![(6, b"xy".as_slice()), (8, b"abc".as_slice())]);
        let kept: Vec<(u64, OutboxRecord)> =
            pending.into_iter().filter(|(seq, _)| !superseded.dropped.contains(seq)).collect();
        let waves: Vec<Vec<u64>> =
            waves(&kept).iter().map(|w| w.iter().map(|(seq, _)| *seq).collect()).collect();
        // partition 1's last barrier still holds back what follows it
        assert_eq!(waves, vec![vec![1, 4], vec![6], vec![7], vec![8]]);
    }

    #[test]
    fn barriers_the_merge_declines_are_all_sent() {
        let pending = vec![(1, record("ledger", 0, true, b"a")), (2, record("ledger", 0, true, b"b"))];
        let superseded = superseded_barriers(&pending, |_, _| None, partition).unwrap();
        assert_eq!(superseded, Superseded::default());
    }

    #[test]
    fn a_barrier_to_a_topic_the_outbox_does_not_know_is_an_error() {
        let pending = vec![(1, record("nowhere", 0, true, b""))];
        let unknown = |r: &OutboxRecord| Err(OutboxError::UnknownTopic(r.topic.to_string()));
        assert!(matches!(
            superseded_barriers(&pending, concatenate, unknown),
            Err(OutboxError::UnknownTopic(_))
        ));
    }

    /// The push-back count falls with each wave delivered, not only once the sender ran dry,
    /// and never below zero (a count re-taken from the store may already be lower).
    #[test]
    fn each_wave_delivered_is_counted_off_the_pending_records() {
        let signals = OutboxSignals::default();
        signals.committed_records(
            vec![(1, record("t", 0, false, b"a")), (2, record("t", 0, false, b"b"))].into(),
        );
        signals.committed(3);
        assert_eq!(signals.pending(), 5);
        assert_eq!(signals.handoff.len(), 2, "handed records wait for the sender");
        signals.sent(2);
        assert_eq!(signals.pending(), 3, "one wave delivered, the rest still pending");
        signals.sent(4);
        assert_eq!(signals.pending(), 0);
    }
}

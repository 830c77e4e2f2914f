//! Sending the outbox: exactly-once effects without broker transactions.
//!
//! Records reach the outbox in the same atomic batch as the state change that caused them
//! (see [`crate::store`]). This sender delivers them through an idempotent producer, each
//! stamped with the header `omnifold-outbox: <writer>:<seq>`, to the partition Kafka's default
//! partitioner would pick, and then forgets them. If the process dies between delivery and
//! forgetting, [`OutboxSender::recover`] reads the stamped headers back from each target
//! partition (from the last offset this store is known to have delivered there) and drops
//! what already arrived, so nothing is sent twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{KafkaError, KafkaOptions};
use crate::partitioner::partition_for;
use crate::store::{OutboxRecord, Store, StoreError};

/// The header that identifies a record's writer and outbox sequence number.
pub const OUTBOX_HEADER: &str = "omnifold-outbox";

const SEND_BATCH: usize = 20_000;
/// Reading back delivered records stops after this long without one.
const RECOVERY_QUIET: Duration = Duration::from_secs(1);
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

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
    #[error("outbox recovery task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Delivers a store's outbox.
pub struct OutboxSender {
    store: Store,
    producer: FutureProducer,
    partitions: HashMap<String, i32>,
}

impl OutboxSender {
    /// `partitions` is the partition count of every topic the outbox may hold records for.
    pub fn new(store: Store, producer: FutureProducer, partitions: HashMap<String, i32>) -> Self {
        OutboxSender { store, producer, partitions }
    }

    /// Drops the outbox records that already reached their topic before a crash. Call once,
    /// before the first [`OutboxSender::send_pending`].
    pub async fn recover(&self, kafka: &KafkaOptions) -> Result<usize, OutboxError> {
        let pending = self.store.pending(usize::MAX)?;
        if pending.is_empty() {
            return Ok(0);
        }
        let mut targets = BTreeSet::new();
        for (_, record) in &pending {
            targets.insert((record.topic.clone(), self.partition_of(record)?));
        }
        let (store, kafka) = (self.store.clone(), kafka.clone());
        let delivered =
            tokio::task::spawn_blocking(move || delivered_seqs(&store, &kafka, &targets)).await??;
        let already: Vec<u64> =
            pending.iter().map(|(seq, _)| *seq).filter(|seq| delivered.contains(seq)).collect();
        self.store.confirm_sent(&already, &BTreeMap::new())?;
        tracing::info!(pending = pending.len(), already_delivered = already.len(), "recovered outbox");
        Ok(already.len())
    }

    /// Sends every pending record, waits for all deliveries and forgets them. Returns how
    /// many were sent.
    pub async fn send_pending(&self) -> Result<usize, OutboxError> {
        let mut sent = 0;
        loop {
            let pending = self.store.pending(SEND_BATCH)?;
            if pending.is_empty() {
                return Ok(sent);
            }
            sent += self.send(&pending).await?;
        }
    }

    async fn send(&self, pending: &[(u64, OutboxRecord)]) -> Result<usize, OutboxError> {
        let started = std::time::Instant::now();
        let mut deliveries = Vec::with_capacity(pending.len());
        for (seq, record) in pending {
            deliveries.push(self.enqueue(*seq, record).await?);
        }
        let queued_ms = started.elapsed().as_millis() as u64;
        let mut tails = BTreeMap::new();
        for ((_, record), delivery) in pending.iter().zip(deliveries) {
            let failed = |source| OutboxError::Delivery { topic: record.topic.clone(), source };
            let delivery = match delivery.await {
                Ok(Ok(delivery)) => delivery,
                Ok(Err((source, _))) => return Err(failed(source)),
                Err(_) => return Err(failed(rdkafka::error::KafkaError::Canceled)),
            };
            let tail = tails.entry((record.topic.clone(), delivery.partition)).or_insert(delivery.offset);
            *tail = (*tail).max(delivery.offset);
        }
        let seqs: Vec<u64> = pending.iter().map(|(seq, _)| *seq).collect();
        self.store.confirm_sent(&seqs, &tails)?;
        let delivered_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(records = seqs.len(), queued_ms, delivered_ms, "sent outbox records");
        metrics::counter!("omnifold_outbox_records_sent_total").increment(seqs.len() as u64);
        Ok(seqs.len())
    }

    /// Hands one record to librdkafka's queue at once (the `send` future would only enqueue
    /// when first polled, one round trip per record), waiting while the queue is full.
    async fn enqueue(&self, seq: u64, record: &OutboxRecord) -> Result<DeliveryFuture, OutboxError> {
        let stamp = format!("{}:{seq}", self.store.writer_id());
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 1);
        for (key, value) in &record.headers {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        headers = headers.insert(Header { key: OUTBOX_HEADER, value: Some(&stamp) });
        let mut future_record = FutureRecord::to(&record.topic)
            .key(&record.key)
            .payload(&record.value)
            .partition(self.partition_of(record)?)
            .headers(headers);
        loop {
            match self.producer.send_result(future_record) {
                Ok(delivery) => return Ok(delivery),
                Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    future_record = returned;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((source, _)) => {
                    return Err(OutboxError::Delivery { topic: record.topic.clone(), source });
                }
            }
        }
    }

    fn partition_of(&self, record: &OutboxRecord) -> Result<i32, OutboxError> {
        let partitions = self
            .partitions
            .get(&record.topic)
            .ok_or_else(|| OutboxError::UnknownTopic(record.topic.clone()))?;
        Ok(partition_for(&record.key, *partitions))
    }
}

/// The outbox sequence numbers of this store's writer found in the target partitions, read
/// from the last offset known delivered (or the start) to the end of each.
///
/// The end is where reading goes quiet, not the high watermark: nisshi answers ListOffsets
/// with the base offset of a partition's last batch, so its watermark can sit below records
/// that are already there (ARCHITECTURE.md, "The broker").
fn delivered_seqs(
    store: &Store,
    kafka: &KafkaOptions,
    targets: &BTreeSet<(String, i32)>,
) -> Result<BTreeSet<u64>, OutboxError> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", "omnifold-outbox-recovery")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(KafkaError::from)?;
    let mut assignment = TopicPartitionList::new();
    for (topic, partition) in targets {
        let start = store.tail(topic, *partition)?.map_or(Offset::Beginning, |tail| Offset::Offset(tail + 1));
        assignment.add_partition_offset(topic, *partition, start).map_err(KafkaError::from)?;
    }
    consumer.assign(&assignment).map_err(KafkaError::from)?;
    let prefix = format!("{}:", store.writer_id());
    let mut found = BTreeSet::new();
    while let Some(message) = consumer.poll(RECOVERY_QUIET) {
        if let Some(seq) = outbox_seq(&message.map_err(KafkaError::from)?, &prefix) {
            found.insert(seq);
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

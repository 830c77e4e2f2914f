//! Coordinators in one consumer group: which events partitions this instance owns, where each
//! starts, and what a new owner must not publish again.
//!
//! Kafka assigns the partitions of `omnifold.events.v1` over the group's members
//! (cooperative-sticky, so a member joining or leaving moves only what must move; static
//! membership with `group.instance.id`, so a restarted instance takes its partitions back at
//! once). Each instance owns the state of its partitions in its own store.
//!
//! - **Assigned**: the partition starts where this instance's state of it stands (the stored
//!   offset, else the beginning), never at the group's committed offset. If another owner
//!   published further than that, its last progress marker on ledger partition p says how far
//!   (`events_offset` M): this instance re-folds up to M to rebuild the state and publishes
//!   nothing of it ([`Ownership::published_through`]), then goes on as the owner.
//! - **Revoked**: the fold loop drops the batch it had open (nothing of it was committed, so
//!   nothing of it is sent; the next owner folds those events again), and the revocation waits
//!   until the outbox is drained, so the next owner finds every output of this instance on the
//!   topics, the last marker last.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnifold_proto::{LedgerEntry, LedgerKind};
use omnifold_runtime::changelog;
use omnifold_runtime::origin::{ORIGIN_HEADER, Origin, TAILS_HEADER, decode_tails};
use omnifold_runtime::outbox::OUTBOX_HEADER;
use omnifold_runtime::{BrokerHealth, HealthContext, KafkaOptions, Store, Topics};
use prost::Message as _;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

/// How long a revocation waits for the outbox to drain before letting the partitions go.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Records read back from the end of a ledger partition to find its last progress marker, in
/// turn until one is found, then the whole partition. A batch writes at most one entry per
/// event and then its marker, and the marker of a partition at its end is its last record, so
/// the first window nearly always holds it: reading the last 20,000 of each of six partitions
/// first took about a quarter of a second of a restart.
const MARKER_WINDOWS: [i64; 3] = [1_000, 20_000, i64::MAX];

/// What the group gave this instance, shared between the consumer's rebalance callback and
/// the fold loop (both on the fold loop's thread; the mutex only satisfies the types).
#[derive(Debug, Default)]
pub struct Ownership {
    /// The partitions this instance owns now.
    pub owned: BTreeSet<i32>,
    /// Per partition being restored: the last offset whose outputs another owner published.
    /// Events up to it are folded and their outputs dropped.
    pub published_through: BTreeMap<i32, i64>,
    /// Partitions revoked since the fold loop last looked: it drops its open batch.
    pub revoked: BTreeSet<i32>,
    /// Per partition being restored: the outputs its last owner delivered after its last
    /// marker (at most one batch's), by origin.
    pub delivered: BTreeMap<i32, BTreeSet<Origin>>,
}

impl Ownership {
    /// Whether the outputs of the event at `offset` of `partition` were published by another
    /// owner; forgets the restore once past it.
    pub fn already_published(&mut self, partition: i32, offset: i64) -> bool {
        match self.published_through.get(&partition) {
            Some(through) if offset <= *through => true,
            Some(_) => {
                tracing::info!(partition, offset, "restore done: publishing from here");
                self.published_through.remove(&partition);
                false
            }
            None => false,
        }
    }

    /// Whether the previous owner delivered this output after its last marker; forgets the
    /// partition's list once the fold is past it.
    pub fn already_delivered(&mut self, origin: &Origin) -> bool {
        let Some(delivered) = self.delivered.get(&origin.partition) else { return false };
        if delivered.last().is_none_or(|last| origin.offset > last.offset) {
            self.delivered.remove(&origin.partition);
            return false;
        }
        delivered.contains(origin)
    }
}

pub type SharedOwnership = Arc<Mutex<Ownership>>;

/// The context of the coordinator's group consumer.
pub struct GroupContext {
    store: Store,
    kafka: KafkaOptions,
    topics: Topics,
    ownership: SharedOwnership,
    stopping: Arc<AtomicBool>,
    health: HealthContext,
    /// Restore a partition from its changelog where it can stand in for a re-fold.
    changelog: bool,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.health.on_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.health.on_error(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.health.on_stats(&statistics);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(tpl);
                let taken = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(error) = taken {
                    tracing::error!(%error, "cannot take the assigned partitions");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(tpl);
                let _ = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                let _ = consumer.unassign();
            }
        }
    }
}

impl GroupContext {
    pub fn health(&self) -> &BrokerHealth {
        &self.health.health
    }

    /// Notes how far another owner published each assigned partition, restores from the
    /// changelog what it can, and positions each partition at this instance's stored offset.
    fn assign(&self, tpl: &mut TopicPartitionList) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        self.settle();
        let started = std::time::Instant::now();
        let restores = {
            let stored = self.store.offsets().unwrap_or_default();
            let next = |partition: i32| stored.get(&partition).copied().unwrap_or(0);
            match self.restores(&partitions, &next) {
                Ok(restores) => restores,
                Err(error) => {
                    tracing::error!(%error, "cannot read what the partitions' last owners published");
                    BTreeMap::new()
                }
            }
        };
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "read how far the assigned partitions' last owners published"
        );
        self.restore_from_changelog(&restores);
        let stored = self.store.offsets().unwrap_or_default();
        let next = |partition: i32| stored.get(&partition).copied().unwrap_or(0);
        for partition in &partitions {
            let offset =
                if next(*partition) > 0 { Offset::Offset(next(*partition)) } else { Offset::Beginning };
            let _ = tpl.set_partition_offset(&self.topics.events, *partition, offset);
        }
        let mut ownership = self.ownership.lock().expect("ownership lock");
        for partition in partitions {
            ownership.owned.insert(partition);
            ownership.revoked.remove(&partition);
            if let Some((through, delivered)) = restores.get(&partition) {
                tracing::info!(
                    partition,
                    from = next(partition),
                    through,
                    delivered_after = delivered.len(),
                    "restoring a partition published by another owner"
                );
                ownership.published_through.insert(partition, *through);
                ownership.delivered.insert(partition, delivered.clone());
            }
            metrics::gauge!("omnifold_coordinator_partition_owned", "partition" => partition.to_string())
                .set(1.0);
            tracing::info!(partition, next = next(partition), "partition assigned");
        }
    }

    /// Restores the partitions another owner published past this instance's state of them
    /// from their changelogs, where a changelog is whole and newer (`changelog::Verdict`). The
    /// others are re-folded from this instance's offset, and their state is sent whole to the
    /// changelog (in parts, from the next sending on): the changelog may hold the other owner's
    /// later values of keys this state holds older ones of.
    fn restore_from_changelog(&self, restores: &BTreeMap<i32, (i64, BTreeSet<Origin>)>) {
        if !self.changelog || restores.is_empty() {
            return;
        }
        let stored = self.store.offsets().unwrap_or_default();
        let wanted: Vec<changelog::Wanted> = restores
            .iter()
            .map(|(partition, (through, _))| changelog::Wanted {
                partition: *partition,
                published_through: *through,
                own_next: stored.get(partition).copied().unwrap_or(0),
            })
            .collect();
        let source = changelog::Source { topic: &self.topics.changelog, format: crate::engine::STATE_FORMAT };
        let verdicts =
            changelog::restore(&self.store, &self.kafka, source, &wanted).unwrap_or_else(|error| {
                tracing::error!(%error, "cannot restore from the changelog, re-folding the partitions");
                BTreeMap::new()
            });
        for partition in restores.keys() {
            let restored = matches!(verdicts.get(partition), Some(changelog::Verdict::Restore { .. }));
            if !restored && let Err(error) = self.store.forget_changelog(*partition) {
                tracing::error!(partition, %error, "cannot forget the partition's changelog flag");
            }
        }
    }

    /// For each assigned partition another owner published past this instance's state of
    /// it: its last marker's offset, and the outputs of the partition that owner delivered
    /// after the marker (one read of every output partition from the lowest of the markers'
    /// tails to its end).
    fn restores(
        &self,
        partitions: &[i32],
        next: &dyn Fn(i32) -> i64,
    ) -> Result<BTreeMap<i32, (i64, BTreeSet<Origin>)>, KafkaError> {
        let mut markers = last_markers(&self.kafka, &self.topics.ledger, partitions)?;
        // this instance's own last marker, behind its state: nothing to restore
        markers.retain(|partition, marker| {
            marker.writer != self.store.writer_id() || marker.through >= next(*partition)
        });
        let mut starts: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for marker in markers.values() {
            for (topic, target, tail) in &marker.tails {
                let start = starts.entry((topic.clone(), *target)).or_insert(*tail);
                *start = (*start).min(*tail);
            }
        }
        let tails: Vec<(String, i32, i64)> = starts.into_iter().map(|((t, p), tail)| (t, p, tail)).collect();
        let wanted: BTreeSet<i32> = markers.keys().copied().collect();
        let found =
            if wanted.is_empty() { BTreeSet::new() } else { delivered_after(&self.kafka, &tails, &wanted)? };
        Ok(markers
            .into_iter()
            .map(|(partition, marker)| {
                let after = found
                    .iter()
                    .filter(|o| o.partition == partition && o.offset > marker.through)
                    .copied()
                    .collect();
                (partition, (marker.through, after))
            })
            .collect())
    }

    /// Waits for the batch the fold loop handed over last to be written: the offsets read here,
    /// the changelog keys forgotten and the outbox drained must be those of every batch
    /// folded. A failed write stops the fold loop by itself (its next settle fails).
    fn settle(&self) {
        if let Err(error) = self.store.settle() {
            tracing::error!(%error, "the last batch was not written");
        }
    }

    /// Tells the fold loop to drop its open batch, then waits until the outbox is drained.
    fn revoke(&self, tpl: &TopicPartitionList) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        self.settle();
        {
            let mut ownership = self.ownership.lock().expect("ownership lock");
            for partition in &partitions {
                ownership.owned.remove(partition);
                ownership.published_through.remove(partition);
                ownership.delivered.remove(partition);
                ownership.revoked.insert(*partition);
                metrics::gauge!("omnifold_coordinator_partition_owned", "partition" => partition.to_string())
                    .set(0.0);
            }
        }
        // a partition moved to another member may have its changelog written there; one left
        // as this instance stops keeps its flag and waiting keys (an owner that publishes it
        // meanwhile makes the next assignment forget them)
        let moved = if self.stopping.load(Ordering::Relaxed) { &[][..] } else { &partitions[..] };
        for partition in moved {
            if let Err(error) = self.store.forget_changelog(*partition) {
                tracing::error!(partition, %error, "cannot forget the partition's changelog keys");
            }
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.store.pending_count() > 0
            && Instant::now() < deadline
            && !self.stopping.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::info!(
            ?partitions,
            pending = self.store.pending_count(),
            "partitions revoked, outbox drained"
        );
    }
}

/// What the group consumer needs to be built.
pub struct GroupSpec<'a> {
    pub kafka: &'a KafkaOptions,
    pub group_id: &'a str,
    pub topics: &'a Topics,
    pub store: &'a Store,
    pub ownership: SharedOwnership,
    pub stopping: Arc<AtomicBool>,
    pub health: Arc<BrokerHealth>,
    /// Static membership: this instance's `group.instance.id`.
    pub instance_id: Option<String>,
    pub session_timeout_ms: u64,
    pub stats_interval_ms: u64,
    pub changelog: bool,
}

/// The events consumer, subscribed in the coordinators' group. End-of-partition events say
/// when a partition is consumed.
pub fn subscribed(spec: GroupSpec<'_>) -> Result<BaseConsumer<GroupContext>, KafkaError> {
    let context = GroupContext {
        store: spec.store.clone(),
        kafka: spec.kafka.clone(),
        topics: spec.topics.clone(),
        ownership: spec.ownership,
        stopping: spec.stopping,
        health: HealthContext::new(spec.health),
        changelog: spec.changelog,
    };
    let mut config = spec.kafka.assigning_config(spec.group_id);
    // the client id names the member in `omnifold-coordinator status`
    let member = spec.instance_id.clone().unwrap_or_else(|| format!("pid-{}", std::process::id()));
    config.set("client.id", format!("omnifold-coordinator/{member}"));
    if let Some(id) = spec.instance_id {
        config.set("group.instance.id", id);
    }
    let consumer: BaseConsumer<GroupContext> = config
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", spec.session_timeout_ms.to_string())
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", spec.stats_interval_ms.to_string())
        .create_with_context(context)?;
    consumer.subscribe(&[&*spec.topics.events])?;
    tracing::debug!(group = spec.group_id, "subscribed to the events topic");
    Ok(consumer)
}

/// The last progress marker of a ledger partition: how far the events partition's last owner
/// published (`event_offset`), and the sender's tails when it delivered the marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastMarker {
    pub through: i64,
    pub tails: Vec<(String, i32, i64)>,
    /// The writer id of the store that sent it (its outbox stamp).
    pub writer: String,
}

/// The last progress marker on ledger partition `partition`; reads the partition's tail to
/// its end.
pub fn last_marker(
    kafka: &KafkaOptions,
    ledger: &str,
    partition: i32,
) -> Result<Option<LastMarker>, KafkaError> {
    Ok(last_markers(kafka, ledger, &[partition])?.remove(&partition))
}

/// The last progress marker of each ledger partition that has one, with one reader for all:
/// each partition's tail is read to its end, and from its start where the tail holds none.
pub fn last_markers(
    kafka: &KafkaOptions,
    ledger: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, LastMarker>, KafkaError> {
    let consumer: BaseConsumer<EndsQuietly> = kafka
        .assigning_config("omnifold-coordinator-restore")
        .set("enable.partition.eof", "true")
        .create_with_context(EndsQuietly)?;
    let mut open = BTreeMap::new();
    for partition in partitions {
        open.insert(*partition, consumer.fetch_watermarks(ledger, *partition, Duration::from_secs(10))?);
    }
    let mut found = BTreeMap::new();
    for window in MARKER_WINDOWS {
        // nisshi answers the high watermark short of the end (ARCHITECTURE.md, "The broker"):
        // starting below it only reads more, and the end is the end-of-partition event
        let start = |(low, high): (i64, i64)| high.saturating_sub(window).max(low);
        let starts: BTreeMap<i32, i64> = open.iter().map(|(p, marks)| (*p, start(*marks))).collect();
        if starts.is_empty() {
            break;
        }
        found.extend(read_last_markers(&consumer, ledger, &starts)?);
        // a window that started at the partition's beginning has read all of it
        open.retain(|partition, (low, _)| !found.contains_key(partition) && starts[partition] > *low);
    }
    Ok(found)
}

fn read_last_markers(
    consumer: &BaseConsumer<EndsQuietly>,
    ledger: &str,
    starts: &BTreeMap<i32, i64>,
) -> Result<BTreeMap<i32, LastMarker>, KafkaError> {
    let mut assignment = TopicPartitionList::new();
    for (partition, start) in starts {
        assignment.add_partition_offset(ledger, *partition, Offset::Offset(*start))?;
    }
    consumer.assign(&assignment)?;
    let mut open: BTreeSet<i32> = starts.keys().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = BTreeMap::new();
    while !open.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let Some(entry) =
                    rdkafka::Message::payload(&message).and_then(|v| LedgerEntry::decode(v).ok())
                else {
                    continue;
                };
                if entry.kind == LedgerKind::Progress as i32 {
                    let tails = header(&message, TAILS_HEADER).map(decode_tails).unwrap_or_default();
                    let stamp =
                        header(&message, OUTBOX_HEADER).map(String::from_utf8_lossy).unwrap_or_default();
                    let writer = stamp.split(':').next().unwrap_or_default().to_string();
                    let marker = LastMarker { through: entry.event_offset, tails, writer };
                    last.insert(rdkafka::Message::partition(&message), marker);
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            Some(Err(error)) => tracing::debug!(%error, "reading the ledger's tail"),
            None => {}
        }
    }
    Ok(last)
}

/// The outputs of the events partitions `wanted` found after `tails` (per output partition,
/// a point below everything their last owners delivered after their last markers), read to
/// the end.
fn delivered_after(
    kafka: &KafkaOptions,
    tails: &[(String, i32, i64)],
    wanted: &BTreeSet<i32>,
) -> Result<BTreeSet<Origin>, KafkaError> {
    let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for (topic, target, tail) in tails {
        by_topic.entry(topic.as_str()).or_default().push((*target, *tail));
    }
    let mut found = BTreeSet::new();
    for (topic, targets) in by_topic {
        found.extend(delivered_in_topic(kafka, topic, &targets, wanted)?);
    }
    Ok(found)
}

/// One topic at a time: an end-of-partition event names its partition, not its topic.
fn delivered_in_topic(
    kafka: &KafkaOptions,
    topic: &str,
    targets: &[(i32, i64)],
    wanted: &BTreeSet<i32>,
) -> Result<BTreeSet<Origin>, KafkaError> {
    let consumer: BaseConsumer<EndsQuietly> = kafka
        .assigning_config("omnifold-coordinator-restore")
        .set("enable.partition.eof", "true")
        .create_with_context(EndsQuietly)?;
    let mut assignment = TopicPartitionList::new();
    for (target, tail) in targets {
        assignment.add_partition_offset(topic, *target, Offset::Offset(tail + 1))?;
    }
    consumer.assign(&assignment)?;
    let mut open: BTreeSet<i32> = targets.iter().map(|(target, _)| *target).collect();
    let mut found = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !open.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let origin = header(&message, ORIGIN_HEADER)
                    .and_then(|value| std::str::from_utf8(value).ok()?.parse::<Origin>().ok());
                if let Some(origin) = origin.filter(|o| wanted.contains(&o.partition)) {
                    found.insert(origin);
                }
            }
            Some(Err(KafkaError::PartitionEOF(target))) => {
                open.remove(&target);
            }
            Some(Err(error)) => tracing::debug!(%error, topic, "reading back what the last owner delivered"),
            None => {}
        }
    }
    Ok(found)
}

/// Drops the outputs left in this instance's outbox (by a crash) for events partitions that
/// another instance has published since: that owner restored them and published, or skipped
/// as already delivered, each of them. Call before the outbox sender starts. Returns how many
/// were dropped.
pub fn drop_outputs_of_moved_partitions(
    store: &Store,
    kafka: &KafkaOptions,
    topics: &Topics,
) -> Result<usize, crate::service::CoordinatorError> {
    let pending = store.pending(usize::MAX)?;
    let mut by_partition: BTreeMap<i32, Vec<(u64, i64)>> = BTreeMap::new();
    for (seq, record) in &pending {
        if let Some((partition, offset)) = event_of(record) {
            by_partition.entry(partition).or_default().push((*seq, offset));
        }
    }
    let partitions: Vec<i32> = by_partition.keys().copied().collect();
    let markers = if partitions.is_empty() {
        BTreeMap::new()
    } else {
        last_markers(kafka, &topics.ledger, &partitions)?
    };
    let mut dropped = Vec::new();
    for (partition, records) in by_partition {
        let Some(marker) = markers.get(&partition) else { continue };
        if marker.writer == store.writer_id() {
            continue;
        }
        // the other owner published everything up to its marker; what it had not reached is
        // still this instance's to send
        let published: Vec<u64> =
            records.iter().filter(|(_, offset)| *offset <= marker.through).map(|(seq, _)| *seq).collect();
        tracing::info!(partition, records = published.len(), "dropping outputs another owner published");
        dropped.extend(published);
    }
    store.confirm_sent(&dropped, &BTreeMap::new())?;
    Ok(dropped.len())
}

/// The events partition and offset an outbox record came from: its origin's, or for a changelog
/// record the last event of its batch.
fn event_of(record: &omnifold_runtime::OutboxRecord) -> Option<(i32, i64)> {
    let origin = record
        .headers
        .iter()
        .find(|(key, _)| key == ORIGIN_HEADER)
        .and_then(|(_, value)| std::str::from_utf8(value).ok()?.parse::<Origin>().ok());
    match origin {
        Some(origin) => Some((origin.partition, origin.offset)),
        None => Some((record.partition?, changelog::through_of(&record.headers)? - 1)),
    }
}

/// The context of the readers that read a partition's tail to its end: the end of a
/// partition is what they wait for, not an error to log.
struct EndsQuietly;

impl ClientContext for EndsQuietly {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "reading a tail");
    }
}

impl ConsumerContext for EndsQuietly {}

fn header<'a>(message: &'a rdkafka::message::BorrowedMessage<'_>, key: &str) -> Option<&'a [u8]> {
    use rdkafka::message::{Headers, Message};
    message.headers()?.iter().find(|h| h.key == key).and_then(|h| h.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_up_to_the_last_marker_are_dropped_once() {
        let mut ownership = Ownership::default();
        ownership.published_through.insert(2, 10);
        assert!(ownership.already_published(2, 3));
        assert!(ownership.already_published(2, 10));
        assert!(!ownership.already_published(2, 11));
        assert!(ownership.published_through.is_empty(), "the restore is over");
        assert!(!ownership.already_published(1, 0), "another partition");
    }
}

//! Keeps the operations state (`operations.rs`) in a store of the reporter's own: reads the
//! alerts, escalations and availability topics (and, for the handover, the ledger and the
//! event log) from where the store stands, folds each batch and commits its writes with the
//! input offsets in one atomic store batch, so a restart goes on where it stopped and folds
//! nothing twice.
//!
//! The store is an `omnifold_runtime::Store` of its own directory (`--store`), not the
//! report stages' one: the keyed state lives under one store partition,
//! [`STATE_PARTITION`], and each input partition's next offset under its topic's base plus
//! the partition. Nothing is sent, so the store's outbox stays empty.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use omnifold_domain::Rules;
use omnifold_proto::{Alert, ChannelAvailability, ContributionSnapshot, Escalation, Event, LedgerEntry};
use omnifold_runtime::{KafkaOptions, Store, StoreError, Topics};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::handover::{HandoverError, HandoverView};
use crate::operations::{Batch, Input, Keyed, OperationsError, finish, fold};
use crate::operations_view::OperationsView;
use crate::readback::latest_snapshots;
use crate::view::WeekView;

/// The store partition id under which the keyed state lives.
pub const STATE_PARTITION: i32 = 9_000_000;
/// Inputs folded into one commit at most.
const BATCH_RECORDS: usize = 2_000;
/// A follower commits what it holds at least this often.
const COMMIT_EVERY: Duration = Duration::from_millis(250);
/// A catch-up that receives nothing for this long gives up.
const STALL: Duration = Duration::from_secs(60);
/// How often a follower looks for new topics and partitions.
const METADATA_EVERY: Duration = Duration::from_secs(10);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// A follower that failed starts again after this long.
const RESTART_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("kafka client error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] OperationsError),
    #[error("reading {topic} stalled: nothing arrived for {seconds} s before every partition's end")]
    Stalled { topic: String, seconds: u64 },
    #[error(transparent)]
    Handover(#[from] HandoverError),
}

/// One input topic of the operations state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Alerts,
    Escalations,
    Availability,
    Ledger,
    Events,
    Replenishment,
    Routing,
}

/// What the operations view is built from.
pub const OPERATIONS_FEEDS: [Feed; 5] =
    [Feed::Alerts, Feed::Escalations, Feed::Availability, Feed::Replenishment, Feed::Routing];
/// What the channel handover is built from: the operations feeds, SKU contribution and the
/// event log's sources.
pub const HANDOVER_FEEDS: [Feed; 7] = [
    Feed::Alerts,
    Feed::Escalations,
    Feed::Availability,
    Feed::Replenishment,
    Feed::Routing,
    Feed::Ledger,
    Feed::Events,
];

impl Feed {
    fn topic(self, topics: &Topics) -> &str {
        match self {
            Feed::Alerts => &topics.alerts,
            Feed::Escalations => &topics.escalations,
            Feed::Availability => &topics.availability,
            Feed::Ledger => &topics.ledger,
            Feed::Events => &topics.events,
            Feed::Replenishment => &topics.replenishment,
            Feed::Routing => &topics.routing,
        }
    }

    /// The store partition id of this topic's partition 0.
    fn base(self) -> i32 {
        match self {
            Feed::Events => 10_000_000,
            Feed::Alerts => 11_000_000,
            Feed::Escalations => 12_000_000,
            Feed::Availability => 13_000_000,
            Feed::Ledger => 14_000_000,
            Feed::Replenishment => 15_000_000,
            Feed::Routing => 16_000_000,
        }
    }

    /// The record as a fold input; `None` for a tombstone or a record that does not decode.
    fn decode(self, payload: Option<&[u8]>) -> Option<Input> {
        let bytes = payload?;
        let input = match self {
            Feed::Alerts => Alert::decode(bytes).map(Input::Alert),
            Feed::Escalations => Escalation::decode(bytes).map(Input::Escalation),
            Feed::Availability => ChannelAvailability::decode(bytes).map(Input::Availability),
            Feed::Ledger => LedgerEntry::decode(bytes).map(Input::Ledger),
            Feed::Events => Event::decode(bytes).map(Input::Event),
            Feed::Replenishment => omnifold_proto::Replenishment::decode(bytes).map(Input::Replenishment),
            Feed::Routing => omnifold_proto::RoutingDecision::decode(bytes).map(Input::Routing),
        };
        input.ok()
    }
}

/// The store read as keyed state.
#[derive(Clone)]
pub struct StoreKeyed(pub Store);

impl Keyed for StoreKeyed {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, OperationsError> {
        Ok(self.0.record(STATE_PARTITION, key.as_bytes())?.map(|v| v.to_vec()))
    }

    fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, OperationsError> {
        Ok(self
            .0
            .records(STATE_PARTITION, prefix.as_bytes())?
            .into_iter()
            .map(|(rest, value)| (format!("{prefix}{}", String::from_utf8_lossy(&rest)), value.to_vec()))
            .collect())
    }
}

/// The operations state and what keeps it current.
#[derive(Clone)]
pub struct OperationsFeed {
    kafka: KafkaOptions,
    topics: Topics,
    rules: Rules,
    store: Store,
}

/// Where one assigned partition is read from.
struct Assigned {
    feed: Feed,
    /// The next offset to read; `None` until a record was read or stored: the partition
    /// starts at its beginning, wherever retention left it.
    next: Option<i64>,
}

impl OperationsFeed {
    /// Opens (or creates) the store. Blocking.
    pub fn open(kafka: KafkaOptions, topics: Topics, rules: Rules, store: &Path) -> Result<Self, FeedError> {
        Ok(OperationsFeed { kafka, topics, rules, store: Store::open(store)? })
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The state as last committed.
    pub fn state(&self) -> StoreKeyed {
        StoreKeyed(self.store.clone())
    }

    /// The operations view of the state as last committed, with the contributions of the
    /// latest published week. Blocking.
    pub fn operations_view(&self) -> Result<OperationsView, FeedError> {
        let week = WeekView::build(&self.snapshots(), None).ok();
        Ok(OperationsView::build(&self.rules, &self.state(), week.as_ref())?)
    }

    /// The handover of `channel`. Blocking.
    pub fn handover_view(&self, channel: &str) -> Result<HandoverView, FeedError> {
        Ok(HandoverView::build(&self.rules, channel, &self.state(), &self.snapshots())?)
    }

    /// The last revision of every snapshot; none when the topic cannot be read (logged): the
    /// views show everything else without the weekly figures.
    fn snapshots(&self) -> BTreeMap<String, ContributionSnapshot> {
        latest_snapshots(&self.kafka, &self.topics.snapshots).unwrap_or_else(|error| {
            tracing::warn!(%error, topic = &*self.topics.snapshots, "cannot read the snapshots; showing no weekly figures");
            BTreeMap::new()
        })
    }

    /// Reads every partition of `feeds` to its end (one topic after the other: the end of a
    /// partition is reported by partition number only). Blocking; returns the records folded.
    pub fn catch_up(&self, feeds: &[Feed]) -> Result<u64, FeedError> {
        let stop = AtomicBool::new(false);
        let mut folded = 0;
        for feed in feeds {
            folded += self.read(&[*feed], true, &stop)?;
        }
        Ok(folded)
    }

    /// Folds what arrives on `feeds` until `stop` is set; after an error (logged) it starts
    /// again from the store a few seconds later. Blocking.
    pub fn follow(&self, feeds: &[Feed], stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let Err(error) = self.read(feeds, false, stop) else { continue };
            tracing::error!(%error, "operations feed stopped; starting again");
            let again = Instant::now() + RESTART_AFTER;
            while Instant::now() < again && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn consumer(&self) -> Result<BaseConsumer<QuietEof>, FeedError> {
        Ok(self
            .kafka
            .assigning_config("omnifold-reporter-operations")
            .set("enable.partition.eof", "true")
            .create_with_context(QuietEof)?)
    }

    fn read(&self, feeds: &[Feed], until_end: bool, stop: &AtomicBool) -> Result<u64, FeedError> {
        let consumer = self.consumer()?;
        let mut assigned = self.assign(&consumer, feeds, &BTreeMap::new())?;
        let mut open: BTreeSet<i32> = assigned.keys().map(|(_, p)| *p).collect();
        let (mut pending, mut folded) = (Vec::new(), 0_u64);
        let (mut last_commit, mut last_metadata, mut last_record) =
            (Instant::now(), Instant::now(), Instant::now());
        let done = |open: &BTreeSet<i32>| stop.load(Ordering::Relaxed) || (until_end && open.is_empty());
        while !done(&open) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    last_record = Instant::now();
                    let key = (message.topic().to_string(), message.partition());
                    let Some(at) = assigned.get_mut(&key) else { continue };
                    at.next = Some(message.offset() + 1);
                    match at.feed.decode(message.payload()) {
                        Some(input) => pending.push(input),
                        None if message.payload().is_some() => {
                            tracing::warn!(
                                topic = key.0,
                                partition = key.1,
                                offset = message.offset(),
                                "skipped an undecodable record"
                            );
                        }
                        None => {}
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    open.remove(&partition);
                    last_record = Instant::now();
                }
                Some(Err(error)) if until_end => return Err(error.into()),
                Some(Err(error)) => {
                    // a follower outlives a broker outage: librdkafka reconnects by itself
                    tracing::warn!(%error, "operations feed cannot read; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
                None => {}
            }
            let due = pending.len() >= BATCH_RECORDS
                || (!pending.is_empty() && last_commit.elapsed() >= COMMIT_EVERY);
            if due {
                folded += self.commit(std::mem::take(&mut pending), &assigned)?;
                last_commit = Instant::now();
            }
            if until_end && last_record.elapsed() >= STALL {
                let topic = feeds.first().map(|f| f.topic(&self.topics).to_string()).unwrap_or_default();
                return Err(FeedError::Stalled { topic, seconds: STALL.as_secs() });
            }
            if !until_end && last_metadata.elapsed() >= METADATA_EVERY {
                last_metadata = Instant::now();
                match self.assign(&consumer, feeds, &assigned) {
                    Ok(now) => assigned = now,
                    Err(error) => tracing::warn!(%error, "operations feed cannot refresh its partitions"),
                }
            }
        }
        folded += self.commit(pending, &assigned)?;
        Ok(folded)
    }

    /// Assigns every partition of `feeds` that exists, each at its position: in `known`,
    /// else stored, else the beginning. Reassigns only when the partitions changed.
    fn assign(
        &self,
        consumer: &BaseConsumer<QuietEof>,
        feeds: &[Feed],
        known: &BTreeMap<(String, i32), Assigned>,
    ) -> Result<BTreeMap<(String, i32), Assigned>, FeedError> {
        let stored = self.store.offsets()?;
        let mut assigned = BTreeMap::new();
        for feed in feeds {
            let topic = feed.topic(&self.topics);
            for partition in partitions(consumer, topic)? {
                let key = (topic.to_string(), partition);
                let next = known
                    .get(&key)
                    .and_then(|a| a.next)
                    .or_else(|| stored.get(&(feed.base() + partition)).copied());
                assigned.insert(key, Assigned { feed: *feed, next });
            }
        }
        let same = assigned.len() == known.len() && assigned.keys().all(|k| known.contains_key(k));
        if same && !known.is_empty() {
            return Ok(assigned);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), at) in &assigned {
            let offset = at.next.map_or(Offset::Beginning, Offset::Offset);
            list.add_partition_offset(topic, *partition, offset)?;
        }
        consumer.assign(&list)?;
        tracing::debug!(partitions = assigned.len(), "operations feed assigned");
        Ok(assigned)
    }

    /// Folds `inputs` and commits the writes with every assigned partition's position.
    fn commit(
        &self,
        inputs: Vec<Input>,
        assigned: &BTreeMap<(String, i32), Assigned>,
    ) -> Result<u64, FeedError> {
        let base = self.state();
        let mut batch = Batch::new(&base);
        for input in &inputs {
            fold(&self.rules, &mut batch, input)?;
        }
        finish(&mut batch)?;
        let mut commit = self.store.begin()?;
        for (key, value) in batch.into_writes() {
            match value {
                Some(value) => commit.put_record(STATE_PARTITION, key.as_bytes(), value),
                None => commit.remove_record(STATE_PARTITION, key.as_bytes()),
            }
        }
        for ((_, partition), at) in assigned {
            if let Some(next) = at.next {
                commit.put_offset(at.feed.base() + partition, next);
            }
        }
        self.store.commit(commit)?;
        Ok(inputs.len() as u64)
    }
}

/// The partitions of `topic`; none when it does not exist yet.
fn partitions(consumer: &BaseConsumer<QuietEof>, topic: &str) -> Result<Vec<i32>, FeedError> {
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// A client context that does not log the end of a partition as an error.
struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::KafkaError::{Global, PartitionEOF};
        use rdkafka::types::RDKafkaErrorCode;
        if !matches!(error, PartitionEOF(_) | Global(RDKafkaErrorCode::PartitionEOF)) {
            tracing::error!(%error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for QuietEof {}

#[cfg(test)]
mod tests {
    use omnifold_proto::{AlertKind, Severity};

    use super::*;
    use crate::operations::tests::{T0, alert, resolved, rules};
    use crate::operations::{KeyedExt, MemoryKeyed, open_conflicts};

    #[test]
    fn the_store_holds_what_memory_holds() {
        let dir = tempfile::tempdir().unwrap();
        let feed = OperationsFeed {
            kafka: KafkaOptions::default(),
            topics: Topics::new("omnifold."),
            rules: rules(),
            store: Store::open(dir.path()).unwrap(),
        };
        let raised = alert("low_cover/A/e1", AlertKind::LowCover, Severity::Warning, "A", "operations", T0);
        let other =
            alert("low_cover/B/e2", AlertKind::LowCover, Severity::Warning, "B", "operations", T0 + 1);
        let assigned: BTreeMap<(String, i32), Assigned> =
            [(("omnifold.alerts.v1".to_string(), 2), Assigned { feed: Feed::Alerts, next: Some(3) })].into();
        feed.commit(vec![Input::Alert(raised.clone()), Input::Alert(other)], &assigned).unwrap();
        feed.commit(vec![Input::Alert(resolved(&raised, T0 + 2))], &assigned).unwrap();
        let open: Vec<String> =
            open_conflicts(&feed.state()).unwrap().into_iter().map(|c| c.alert_id).collect();
        assert_eq!(open, ["low_cover/B/e2"]);
        assert_eq!(feed.store.offsets().unwrap().get(&(Feed::Alerts.base() + 2)), Some(&3));
        let memory = crate::operations::tests::folded(&[
            Input::Alert(raised.clone()),
            Input::Alert(alert(
                "low_cover/B/e2",
                AlertKind::LowCover,
                Severity::Warning,
                "B",
                "operations",
                T0 + 1,
            )),
            Input::Alert(resolved(&raised, T0 + 2)),
        ]);
        let scanned = |keyed: &dyn Keyed| keyed.scan_raw("").unwrap();
        assert_eq!(scanned(&feed.state()), scanned(&memory as &MemoryKeyed));
        assert_eq!(feed.state().get::<i64>("m/now").unwrap(), Some(T0 + 2));
    }
}

//! The partials stage: fold the assigned partitions of the contribution ledger and of the
//! alerts topic into per-partition sums, and publish, once per batch, one message to the
//! partials topic: each changed partition's absolute cell values with the orders it saw
//! shipped, and how far behind every assigned partition is.
//!
//! The coordinator is the only acceptor (ARCHITECTURE.md): the ledger holds what every event
//! it accepted is worth, so this stage applies no rule, keeps no stock model and no set of
//! event ids. A batch commits, in one store batch, the changed cells and partition marks,
//! the accepted alert ids, the next offset of every partition read, the dead letters and
//! the partials message, exactly like the coordinator's fold loop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use omnifold_domain::Rules;
use omnifold_domain::report::{
    AlertLedger, Applied, Cell, END_UNKNOWN, Lag, PartialRecord, PartitionLedger, Source as ReportSource,
    SourceKind,
};
use omnifold_proto::{Alert, LedgerEntry};
use omnifold_runtime::deadletter::{Source, dead_letter};
use omnifold_runtime::{OutboxRecord, Store};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use serde::{Deserialize, Serialize};

use crate::consumer::{Positions, StoredPositions, commit_for_lag, poll_one};
use crate::options::ReporterError;
use crate::state;
use crate::topics::{ALERTS_BASE, ReportTopics};

const POLL_TIMEOUT: Duration = Duration::from_millis(20);

/// A message of the partials topic: what one batch of one instance changed, one record per
/// input partition with an accepted input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialBatch {
    pub records: Vec<PartialRecord>,
    /// How far behind every partition this instance owns is, read or not this batch.
    #[serde(default)]
    pub lags: Vec<Lag>,
}

/// The partials stage's in-memory state.
pub struct Ingest {
    pub rules: Rules,
    pub topics: ReportTopics,
    pub store: Store,
    pub positions: Positions,
    pub batch_max_events: usize,
    pub batch_max_ms: u64,
    ledgers: HashMap<i32, PartitionLedger>,
    alerts: HashMap<i32, AlertLedger>,
    /// The lags of the last partials message this instance published.
    published_lags: Vec<Lag>,
}

/// What one batch changed, by store partition id.
#[derive(Default)]
struct Batch {
    cells: BTreeMap<i32, BTreeSet<Cell>>,
    /// Sources with an accepted input: they get a partial record.
    touched: BTreeSet<i32>,
    seen: Vec<(i32, String)>,
    next_offsets: BTreeMap<i32, (String, i32, i64)>,
    dead_letters: Vec<OutboxRecord>,
    inputs: usize,
}

impl Ingest {
    pub fn new(rules: Rules, topics: ReportTopics, store: Store, positions: Positions) -> Self {
        Ingest {
            rules,
            topics,
            store,
            positions,
            batch_max_events: 5_000,
            batch_max_ms: 20,
            ledgers: HashMap::new(),
            alerts: HashMap::new(),
            published_lags: Vec::new(),
        }
    }

    /// Polls and folds one batch, then commits it; returns how many inputs it read.
    pub fn step(&mut self, consumer: &BaseConsumer<StoredPositions>) -> Result<usize, ReporterError> {
        let mut batch = Batch::default();
        let deadline = Instant::now() + Duration::from_millis(self.batch_max_ms);
        let mut timeout = POLL_TIMEOUT;
        while batch.inputs < self.batch_max_events {
            let Some(message) = poll_one(consumer, timeout)? else { break };
            self.fold_message(&message, &mut batch)?;
            timeout = deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                break;
            }
        }
        let inputs = batch.inputs;
        if inputs > 0 {
            self.commit(consumer, batch)?;
        } else {
            self.publish_changed_lags(consumer)?;
        }
        self.forget_unassigned(consumer);
        Ok(inputs)
    }

    fn fold_message(
        &mut self,
        message: &BorrowedMessage<'_>,
        batch: &mut Batch,
    ) -> Result<(), ReporterError> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let Some(id) = self.topics.store_id(topic, partition) else { return Ok(()) };
        let expected = self.ensure_loaded(id)?;
        if offset < expected {
            // already folded: a re-delivery after a seek
            return Ok(());
        }
        batch.inputs += 1;
        batch.next_offsets.insert(id, (topic.to_string(), partition, offset + 1));
        self.positions.lock().expect("positions lock").insert(id, offset + 1);
        let source = Source { topic, partition, offset };
        if id >= ALERTS_BASE {
            self.fold_alert(id, message, source, batch);
        } else {
            self.fold_entry(id, message, source, batch);
        }
        Ok(())
    }

    /// Loads the partition's ledger if needed; returns its next offset.
    fn ensure_loaded(&mut self, id: i32) -> Result<i64, ReporterError> {
        if let Some(next) = self.positions.lock().expect("positions lock").get(&id) {
            return Ok(*next);
        }
        if id >= ALERTS_BASE {
            self.alerts.insert(id, state::load_alert_ledger(&self.store, id)?);
        } else {
            self.ledgers.insert(id, state::load_partition_ledger(&self.store, id)?);
        }
        let next = self.store.offsets()?.get(&id).copied().unwrap_or(0);
        self.positions.lock().expect("positions lock").insert(id, next);
        Ok(next)
    }

    fn fold_entry(&mut self, id: i32, message: &BorrowedMessage<'_>, source: Source<'_>, batch: &mut Batch) {
        metrics::counter!("omnifold_reporter_ledger_entries_consumed_total").increment(1);
        let (key, value) = (message.key().unwrap_or_default(), message.payload().unwrap_or_default());
        let entry = match LedgerEntry::decode(value) {
            Ok(entry) => entry,
            Err(error) => {
                let reason = format!("payload is not a decodable omnifold.v1.LedgerEntry: {error}");
                return self.refuse(batch, key, value, &reason, source);
            }
        };
        let ledger = self.ledgers.get_mut(&id).expect("loaded by ensure_loaded");
        match ledger.apply(&self.rules, &entry) {
            Ok(Applied::Folded { cells }) => {
                batch.cells.entry(id).or_default().extend(cells);
                batch.touched.insert(id);
            }
            Ok(Applied::Duplicate) => {
                metrics::counter!("omnifold_reporter_ledger_entries_duplicate_total").increment(1)
            }
            Err(error) => self.refuse(batch, key, value, &error.to_string(), source),
        }
    }

    fn fold_alert(&mut self, id: i32, message: &BorrowedMessage<'_>, source: Source<'_>, batch: &mut Batch) {
        let (key, value) = (message.key().unwrap_or_default(), message.payload().unwrap_or_default());
        let alert = match Alert::decode(value) {
            Ok(alert) => alert,
            Err(error) => {
                return self.refuse(
                    batch,
                    key,
                    value,
                    &format!("payload is not a decodable omnifold.v1.Alert: {error}"),
                    source,
                );
            }
        };
        let ledger = self.alerts.get_mut(&id).expect("loaded by ensure_loaded");
        let was_seen = ledger.seen.contains(&alert.alert_id);
        let cells = ledger.apply(&self.rules, &alert);
        if !was_seen && ledger.seen.contains(&alert.alert_id) {
            batch.seen.push((id, alert.alert_id.clone()));
        }
        if !cells.is_empty() {
            batch.cells.entry(id).or_default().extend(cells);
            batch.touched.insert(id);
        }
    }

    /// Dead-letters a record of the ledger or alerts topic that cannot be read. Events are
    /// never read here, so their dead letters are the coordinator's alone (CONTRACT.md
    /// section 1).
    fn refuse(&self, batch: &mut Batch, key: &[u8], value: &[u8], reason: &str, source: Source<'_>) {
        tracing::warn!(
            topic = source.topic,
            partition = source.partition,
            offset = source.offset,
            reason,
            "dead-lettered an input"
        );
        batch.dead_letters.push(dead_letter(&self.topics.contract.deadletter, key, value, reason, source));
    }

    fn commit(
        &mut self,
        consumer: &BaseConsumer<StoredPositions>,
        batch: Batch,
    ) -> Result<(), ReporterError> {
        let mut commit = self.store.begin()?;
        for (id, cells) in &batch.cells {
            let ledger_cells = match self.ledgers.get(id) {
                Some(ledger) => &ledger.cells,
                None => &self.alerts[id].cells,
            };
            for cell in cells {
                state::put_cell(&mut commit, *id, cell, &ledger_cells[cell]);
            }
        }
        for (id, event_id) in &batch.seen {
            commit.put_seen(*id, event_id);
        }
        for (id, (_, _, next)) in &batch.next_offsets {
            commit.put_offset(*id, *next);
        }
        for record in &batch.dead_letters {
            commit.push_output(record);
        }
        let mut records = Vec::with_capacity(batch.touched.len());
        for id in &batch.touched {
            let (_, partition, next) = &batch.next_offsets[id];
            let empty = BTreeSet::new();
            let cells = batch.cells.get(id).unwrap_or(&empty);
            let record = match self.ledgers.get_mut(id) {
                Some(ledger) => {
                    state::put_marks(&mut commit, *id, ledger);
                    ledger.record(*partition, *next, cells)
                }
                None => self.alerts[id].record(*partition, *next, cells),
            };
            records.push(record);
        }
        let lags = self.lags(consumer)?;
        let most_behind = lags.iter().map(|lag| lag.behind).max().unwrap_or(0);
        tracing::debug!(inputs = batch.inputs, records = records.len(), most_behind, "partials batch");
        commit.push_output(&self.partials_message(&PartialBatch { records, lags: lags.clone() }));
        self.store.commit(commit)?;
        self.published_lags = lags;
        let lag: Vec<(&str, i32, i64)> =
            batch.next_offsets.values().map(|(t, p, n)| (t.as_str(), *p, *n)).collect();
        commit_for_lag(consumer, &lag);
        Ok(())
    }

    /// One message per batch, keyed by this instance's writer id: the merge stage evaluates
    /// once per message, so a batch's partitions close their weeks together.
    fn partials_message(&self, batch: &PartialBatch) -> OutboxRecord {
        metrics::counter!("omnifold_reporter_partials_published_total").increment(batch.records.len() as u64);
        OutboxRecord {
            topic: self.topics.partials.clone(),
            key: self.store.writer_id().as_bytes().to_vec(),
            value: serde_json::to_vec(batch).expect("partial records serialize"),
            headers: Vec::new(),
            partition: None,
        }
    }

    /// Publishes the lags alone when they changed since the last partials message: with
    /// nothing to read, a partition reaching its end (or its end becoming known) may be all
    /// that a week's first revision waits for.
    fn publish_changed_lags(
        &mut self,
        consumer: &BaseConsumer<StoredPositions>,
    ) -> Result<(), ReporterError> {
        let lags = self.lags(consumer)?;
        if lags == self.published_lags {
            return Ok(());
        }
        tracing::debug!(lags = lags.len(), "partials lags");
        let mut commit = self.store.begin()?;
        commit.push_output(&self.partials_message(&PartialBatch { records: Vec::new(), lags: lags.clone() }));
        self.store.commit(commit)?;
        self.published_lags = lags;
        Ok(())
    }

    /// How far behind every assigned partition is, in source order ([`END_UNKNOWN`] while its
    /// high watermark is unknown or older than the position: a week's first revision must not
    /// take it for its end).
    fn lags(&self, consumer: &BaseConsumer<StoredPositions>) -> Result<Vec<Lag>, ReporterError> {
        let assignment = consumer.assignment()?;
        let stored = self.store.offsets()?;
        let positions = self.positions.lock().expect("positions lock").clone();
        let mut lags = Vec::new();
        for element in assignment.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let Some(id) = self.topics.store_id(topic, partition) else { continue };
            let kind = if id >= ALERTS_BASE { SourceKind::Alerts } else { SourceKind::Events };
            let next = positions.get(&id).or(stored.get(&id)).copied().unwrap_or(0);
            let high = consumer.context().high_watermark(topic, partition);
            // statistics older than the position (high < next) say nothing of the end either
            let mut behind = high.filter(|high| *high >= next).map_or(END_UNKNOWN, |high| high - next);
            if kind == SourceKind::Events && behind == 0 {
                // at the ledger's end: the events partition is at its end only if the
                // coordinator said so in its last marker
                behind = self.coordinator_behind(id)?;
            }
            tracing::trace!(topic, partition, next, behind, "lag");
            lags.push(Lag { source: ReportSource { kind, partition }, offset: next, behind });
        }
        lags.sort_by_key(|lag| lag.source);
        Ok(lags)
    }

    /// How far the coordinator was from the end of an events partition at its last marker.
    fn coordinator_behind(&self, id: i32) -> Result<i64, ReporterError> {
        Ok(match self.ledgers.get(&id) {
            Some(ledger) => ledger.coordinator_behind,
            None => state::load_marks(&self.store, id)?.coordinator_behind,
        })
    }

    /// Drops the in-memory state of partitions this instance no longer owns; everything of
    /// theirs is committed, so their next assignment starts from the store.
    fn forget_unassigned(&mut self, consumer: &BaseConsumer<StoredPositions>) {
        let Ok(assignment) = consumer.assignment() else { return };
        let owned: BTreeSet<i32> = assignment
            .elements()
            .iter()
            .filter_map(|e| self.topics.store_id(e.topic(), e.partition()))
            .collect();
        let mut positions = self.positions.lock().expect("positions lock");
        positions.retain(|id, _| owned.contains(id));
        self.ledgers.retain(|id, _| owned.contains(id));
        self.alerts.retain(|id, _| owned.contains(id));
    }

    /// Whether every assigned partition is read to its end; `None` while nothing is assigned.
    pub fn caught_up(&self, consumer: &BaseConsumer<StoredPositions>) -> Result<Option<bool>, ReporterError> {
        let assignment = consumer.assignment()?;
        if assignment.count() == 0 {
            return Ok(None);
        }
        let stored = self.store.offsets()?;
        for element in assignment.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let Some(id) = self.topics.store_id(topic, partition) else { continue };
            let Some(high) = consumer.context().high_watermark(topic, partition) else {
                return Ok(Some(false));
            };
            if stored.get(&id).copied().unwrap_or(0) < high {
                return Ok(Some(false));
            }
        }
        Ok(Some(true))
    }
}

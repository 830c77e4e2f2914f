//! The merge stage: read the partials topic (one partition, so one owner at a time in the
//! group), merge, and emit snapshot revisions to `omnifold.snapshots.v1` and
//! `omnifold.snapshots.json.v1`.
//!
//! Each message (one instance's batch of partial records) is merged, evaluated and
//! committed on its own (state, offset and the snapshots it caused in one store batch), so
//! the merger's state after offset n is a function of the topic's first n messages alone,
//! whichever instance computes it. That is what makes a change of owner safe: the new owner
//! replays from its own stored position and, for the messages its predecessor already
//! merged, emits exactly the revisions its predecessor emitted; it reads back the last
//! published revision of every key on assignment and sends only what is newer.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use omnifold_domain::Rules;
use omnifold_domain::report::merge::CHANGEABLE_FIELDS;
use omnifold_domain::report::{Merger, Snapshot};
use omnifold_proto::ContributionSnapshot;
use omnifold_runtime::deadletter::{Source, dead_letter};
use omnifold_runtime::{KafkaOptions, OutboxRecord, Store};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};

use crate::consumer::{Positions, StoredPositions, commit_for_lag, poll_one};
use crate::ingest::PartialBatch;
use crate::json::{SnapshotJson, snapshot_json};
use crate::options::ReporterError;
use crate::readback;
use crate::state;
use crate::topics::{PARTIALS_BASE, ReportTopics};

/// Most messages merged per step, so the partials stage keeps its turn.
const RECORDS_PER_STEP: usize = 200;
const POLL_TIMEOUT: Duration = Duration::from_millis(20);

/// The merge stage's in-memory state.
pub struct Merge {
    rules: Rules,
    topics: ReportTopics,
    store: Store,
    kafka: KafkaOptions,
    positions: Positions,
    merger: Option<Merger>,
    /// The events topic's partition count: a week's first revision waits for every one.
    events_partitions: i32,
    /// The last revision of each key found on the snapshots topic at assignment; revisions
    /// at or below it were sent by a previous owner (or a previous life of this store).
    published: BTreeMap<String, ContributionSnapshot>,
    /// Set by an assignment; cleared once caught up, by [`Merge::reconcile`].
    reconcile_pending: bool,
}

impl Merge {
    pub fn new(
        rules: Rules,
        topics: ReportTopics,
        store: Store,
        kafka: KafkaOptions,
        positions: Positions,
        events_partitions: i32,
    ) -> Self {
        Merge {
            rules,
            topics,
            store,
            kafka,
            positions,
            merger: None,
            events_partitions,
            published: BTreeMap::new(),
            reconcile_pending: false,
        }
    }

    /// Merges up to [`RECORDS_PER_STEP`] messages; returns how many it read.
    pub fn step(&mut self, consumer: &BaseConsumer<StoredPositions>) -> Result<usize, ReporterError> {
        self.resync_if_assigned(consumer)?;
        let mut read = 0;
        while read < RECORDS_PER_STEP {
            let timeout = if read == 0 { POLL_TIMEOUT } else { Duration::ZERO };
            let Some(message) = poll_one(consumer, timeout)? else { break };
            self.resync_if_assigned(consumer)?;
            if self.merge_message(&message)? {
                read += 1;
                commit_for_lag(consumer, &[(message.topic(), message.partition(), message.offset() + 1)]);
            }
        }
        if self.reconcile_pending && read == 0 && self.caught_up(consumer)? == Some(true) {
            self.reconcile()?;
        }
        Ok(read)
    }

    /// On assignment, reads back what is published, so that a replay does not send it again.
    fn resync_if_assigned(&mut self, consumer: &BaseConsumer<StoredPositions>) -> Result<(), ReporterError> {
        if !consumer.context().assigned.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        self.published = readback::latest_snapshots(&self.kafka, &self.topics.contract.snapshots)?;
        self.reconcile_pending = true;
        tracing::info!(
            keys = self.published.len(),
            "merge stage assigned; read back the published revisions"
        );
        Ok(())
    }

    /// Once merged to the end of the partials topic (and not holding), makes the topic's
    /// last revision of every key agree with this merger: where the contents are equal the
    /// merger adopts the topic's revision number (a replay from an empty store numbers from
    /// 1 again), where they differ it emits its figures as the next revision (the figures
    /// changed, e.g. a new contract, while the replay kept below the published revision).
    fn reconcile(&mut self) -> Result<(), ReporterError> {
        let Some(merger) = self.merger.as_mut() else { return Ok(()) };
        if merger.holding() {
            return Ok(());
        }
        let mut commit = self.store.begin()?;
        let mut restated = Vec::new();
        let emitted: Vec<Snapshot> = merger.emitted.values().cloned().collect();
        for mut snapshot in emitted {
            let Some(published) = self.published.get(&snapshot.key()) else { continue };
            if published.revision < snapshot.revision {
                continue;
            }
            let changed = differing_fields(published, &snapshot.to_proto());
            snapshot.revision = published.revision + u32::from(!changed.is_empty());
            if !changed.is_empty() {
                snapshot.changed_fields = changed;
                restated.push(snapshot.clone());
            }
            merger.replace_emitted(snapshot);
        }
        state::put_merger_changes(&mut commit, PARTIALS_BASE, merger);
        self.published.clear();
        self.reconcile_pending = false;
        for snapshot in &restated {
            self.emit(&mut commit, snapshot);
        }
        self.store.commit(commit)?;
        tracing::info!(restated = restated.len(), "merge stage reconciled with the published snapshots");
        Ok(())
    }

    /// Merges one message and commits; false when it was merged before.
    fn merge_message(&mut self, message: &BorrowedMessage<'_>) -> Result<bool, ReporterError> {
        let id = PARTIALS_BASE + message.partition();
        let next = self.ensure_loaded(id)?;
        if message.offset() < next {
            return Ok(false);
        }
        let mut commit = self.store.begin()?;
        match serde_json::from_slice::<PartialBatch>(message.payload().unwrap_or_default()) {
            Ok(batch) => {
                let merger = self.merger.as_mut().expect("loaded by ensure_loaded");
                let mut orders = state::StoredOrders::new(&self.store, &mut commit, id);
                let snapshots = merger.apply_all(&self.rules, &batch.records, &batch.lags, &mut orders);
                orders.finish()?;
                state::put_merger_changes(&mut commit, id, merger);
                last_closed_week_gauge(merger);
                for snapshot in &snapshots {
                    self.emit(&mut commit, snapshot);
                }
                metrics::counter!("omnifold_reporter_partials_merged_total").increment(1);
            }
            Err(error) => {
                let source = Source {
                    topic: message.topic(),
                    partition: message.partition(),
                    offset: message.offset(),
                };
                let reason = format!("payload is not a batch of partial records: {error}");
                tracing::warn!(offset = message.offset(), reason, "dead-lettered a partials message");
                let (key, value) = (message.key().unwrap_or_default(), message.payload().unwrap_or_default());
                commit.push_output(&dead_letter(
                    &self.topics.contract.deadletter,
                    key,
                    value,
                    &reason,
                    source,
                ));
            }
        }
        commit.put_offset(id, message.offset() + 1);
        self.store.commit(commit)?;
        self.positions.lock().expect("positions lock").insert(id, message.offset() + 1);
        Ok(true)
    }

    fn ensure_loaded(&mut self, id: i32) -> Result<i64, ReporterError> {
        if let Some(next) = self.positions.lock().expect("positions lock").get(&id)
            && self.merger.is_some()
        {
            return Ok(*next);
        }
        let mut merger = state::load_merger(&self.store, id)?;
        merger.set_events_partitions(self.events_partitions);
        last_closed_week_gauge(&merger);
        self.merger = Some(merger);
        let next = self.store.offsets()?.get(&id).copied().unwrap_or(0);
        self.positions.lock().expect("positions lock").insert(id, next);
        Ok(next)
    }

    /// Both forms of one revision, unless a previous owner already sent it.
    fn emit(&self, commit: &mut omnifold_runtime::Commit, snapshot: &Snapshot) {
        let key = snapshot.key();
        if self.published.get(&key).is_some_and(|published| snapshot.revision <= published.revision) {
            return;
        }
        let proto = snapshot.to_proto();
        tracing::info!(
            key,
            revision = snapshot.revision,
            decision = snapshot.figures.decision.name(),
            "snapshot"
        );
        metrics::counter!("omnifold_reporter_snapshots_emitted_total").increment(1);
        let record = |topic: &omnifold_runtime::topics::TopicName, value: Vec<u8>| OutboxRecord {
            topic: topic.clone(),
            key: key.clone().into_bytes(),
            value,
            headers: Vec::new(),
            partition: None,
        };
        commit.push_output(&record(&self.topics.contract.snapshots, proto.encode_to_vec()));
        commit.push_output(&record(&self.topics.contract.snapshots_json, snapshot_json(&proto).into_bytes()));
    }

    /// Whether the partials topic is merged to its end; `None` when another instance owns it.
    pub fn caught_up(&self, consumer: &BaseConsumer<StoredPositions>) -> Result<Option<bool>, ReporterError> {
        let assignment = consumer.assignment()?;
        if assignment.count() == 0 {
            return Ok(None);
        }
        let stored = self.store.offsets()?;
        let Some(high) = consumer.context().high_watermark(&self.topics.partials, 0) else {
            return Ok(Some(false));
        };
        // the watermark must already count what this instance itself delivered last
        let own = self.store.tail(&self.topics.partials, 0)?.map_or(0, |tail| tail + 1);
        Ok(Some(high >= own && stored.get(&PARTIALS_BASE).copied().unwrap_or(0) >= high))
    }
}

/// The end of the last closed week this merger has published (revision 1 out), in event
/// time (UTC milliseconds); `None` before the first.
fn last_closed_week_end_ms(merger: &Merger) -> Option<i64> {
    merger.emitted.values().next_back().map(|snapshot| snapshot.figures.week_end_ms)
}

/// `omnifold_reporter_last_closed_week_end_seconds`, for the alert on a week still not closed
/// hours after its end (deploy/prometheus): set by the merge owner only, unset before it has
/// published a week.
fn last_closed_week_gauge(merger: &Merger) {
    if let Some(end_ms) = last_closed_week_end_ms(merger) {
        metrics::gauge!("omnifold_reporter_last_closed_week_end_seconds").set(end_ms as f64 / 1000.0);
    }
}

/// The names of the fields in which two snapshots differ, by their JSON form (the revision
/// and the list of changed fields aside).
fn differing_fields(old: &ContributionSnapshot, new: &ContributionSnapshot) -> Vec<String> {
    let as_json = |s: &ContributionSnapshot| {
        serde_json::to_value(SnapshotJson::from(s)).expect("a snapshot serializes")
    };
    let (old, new) = (as_json(old), as_json(new));
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else { return Vec::new() };
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    // in the order the domain lists them; anything else (never expected) last
    let mut changed: Vec<String> = names
        .into_iter()
        .filter(|name| !matches!(name.as_str(), "revision" | "changed_fields"))
        .filter(|name| old.get(*name) != new.get(*name))
        .cloned()
        .collect();
    changed.sort_by_key(|name| CHANGEABLE_FIELDS.iter().position(|f| f == name).unwrap_or(usize::MAX));
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_the_fields_that_differ_in_the_domain_order() {
        let old = ContributionSnapshot {
            revision: 4,
            contribution: "10".into(),
            next_action: "a".into(),
            changed_fields: vec!["x".into()],
            ..ContributionSnapshot::default()
        };
        let new = ContributionSnapshot {
            revision: 1,
            contribution: "12.5".into(),
            gross_revenue: "2.5".into(),
            next_action: "b".into(),
            revenue_share: Some("1".into()),
            ..ContributionSnapshot::default()
        };
        assert_eq!(
            differing_fields(&old, &new),
            ["gross_revenue", "contribution", "revenue_share", "next_action"]
        );
        assert!(differing_fields(&old, &ContributionSnapshot { revision: 9, ..old.clone() }).is_empty());
    }

    #[test]
    fn the_last_closed_week_is_the_last_week_published() {
        use omnifold_domain::report::{Calendar, Cell, compute_week};
        let contract = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/local/contract.toml");
        let rules =
            omnifold_runtime::load_contract(std::path::Path::new(contract)).expect("the example contract");
        let calendar = Calendar::of(&rules.contract.reporting);
        let mut merger = Merger::default();
        assert_eq!(last_closed_week_end_ms(&merger), None);
        // Mondays 2026-11-09 and 2026-11-16 (W46, W47), inserted out of order
        let (w46, w47) = (calendar.week_of(1_794_182_400_000), calendar.week_of(1_794_787_200_000));
        for week in [w47, w46] {
            for figures in compute_week(&rules, week, &BTreeMap::new(), &BTreeMap::new()) {
                let cell = Cell::new(week, &figures.channel);
                merger.emitted.insert(cell, Snapshot { figures, revision: 1, changed_fields: Vec::new() });
            }
        }
        assert_eq!((w46.label(), w47.label()), ("2026-W46".to_string(), "2026-W47".to_string()));
        assert_eq!(last_closed_week_end_ms(&merger), Some(calendar.end_ms(w47)));
    }
}

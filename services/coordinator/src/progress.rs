//! Progress markers on the contribution ledger (`LEDGER_KIND_PROGRESS`): how far the
//! coordinator has folded each events partition, and the event times it accepted there.
//!
//! The reporter folds the ledger instead of the events, so it no longer sees the accepted
//! events that move no money (a stock count, a price), yet its watermark is the latest
//! accepted event time and its first-revision rule asks whether every events partition is
//! read to its end (CONTRACT.md section 7). One marker per fold batch and partition carries
//! both, in the ledger partition that mirrors the events partition, so it is ordered with
//! the money entries it follows. Markers are positions, not figures: a replay in other
//! batches writes other markers with the same union of times.

use std::collections::BTreeMap;

use omnifold_domain::ledger::progress;
use omnifold_proto::{LedgerEntry, LedgerKind};
use omnifold_runtime::origin::BARRIER_HEADER;
use omnifold_runtime::{OutboxRecord, Topics};
use prost::Message as _;

/// What one batch folded of one events partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    /// The offset of the last record read (accepted, refused or duplicate).
    pub last_offset: i64,
    /// The earliest and latest accepted event time.
    pub accepted: Option<(i64, i64)>,
}

impl Mark {
    /// A mark for a partition read through `last_offset` with nothing accepted since the last
    /// marker (-1 when nothing was ever read).
    pub fn at(last_offset: i64) -> Self {
        Mark { last_offset, accepted: None }
    }

    pub fn read(&mut self, offset: i64) {
        self.last_offset = offset;
    }

    pub fn accepted(&mut self, at_ms: i64) {
        self.accepted = Some(match self.accepted {
            None => (at_ms, at_ms),
            Some((first, last)) => (first.min(at_ms), last.max(at_ms)),
        });
    }
}

/// The marks of one batch, by events partition.
pub type Marks = BTreeMap<i32, Mark>;

/// The marker record for events partition `partition`; `at_end` when the coordinator has
/// read the partition to its end.
pub fn marker(topics: &Topics, currency: &str, partition: i32, mark: Mark, at_end: bool) -> OutboxRecord {
    let entry = progress(currency, partition, mark.last_offset, mark.accepted, at_end);
    OutboxRecord {
        topic: topics.ledger.clone(),
        key: entry.entry_id.clone().into_bytes(),
        value: entry.encode_to_vec(),
        // delivered after everything before it and before anything after it, stamped with
        // the sender's tails (`omnifold_runtime::origin`): what a next owner reads back from
        headers: vec![(BARRIER_HEADER.into(), Vec::new())],
        partition: Some(partition),
    }
}

/// Folds an earlier marker into a later one to the same ledger partition, for a sender that
/// is behind (`OutboxSender::merging_barriers`): the later position, end flag and id, with the
/// union of both markers' accepted times, which the reporter reads to close weeks. A replay
/// in other batches writes other markers, so positions are all a reader may rely on, and
/// the union of times is what it must not lose. `None` (both are sent) for records that are
/// not two markers of one events partition.
pub fn merge_markers(earlier: &OutboxRecord, later: &OutboxRecord) -> Option<OutboxRecord> {
    let (first, second) = (marker_entry(earlier)?, marker_entry(later)?);
    if first.event_partition != second.event_partition {
        return None;
    }
    let accepted = union(accepted_span(&first), accepted_span(&second));
    let merged = LedgerEntry {
        earliest_at_ms: accepted.map_or(0, |(earliest, _)| earliest),
        occurred_at_ms: accepted.map_or(0, |(_, latest)| latest),
        ..second
    };
    Some(OutboxRecord { value: merged.encode_to_vec(), ..later.clone() })
}

fn marker_entry(record: &OutboxRecord) -> Option<LedgerEntry> {
    let entry = LedgerEntry::decode(record.value.as_slice()).ok()?;
    (entry.kind == LedgerKind::Progress as i32).then_some(entry)
}

/// The accepted times a marker spans; a marker of no accepted event says 0 (accepted event
/// times are > 0).
fn accepted_span(entry: &LedgerEntry) -> Option<(i64, i64)> {
    (entry.occurred_at_ms > 0).then_some((entry.earliest_at_ms, entry.occurred_at_ms))
}

fn union(a: Option<(i64, i64)>, b: Option<(i64, i64)>) -> Option<(i64, i64)> {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (one, None) | (None, one) => one,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_spans_the_accepted_times_and_ends_at_the_last_read() {
        let mut mark = Mark::at(-1);
        for (offset, at_ms) in [(0, 50), (1, 20), (2, 70)] {
            mark.read(offset);
            mark.accepted(at_ms);
        }
        mark.read(3);
        assert_eq!(mark, Mark { last_offset: 3, accepted: Some((20, 70)) });
        let record = marker(&Topics::new("t."), "EUR", 2, mark, true);
        assert_eq!(record.partition, Some(2));
        let entry = LedgerEntry::decode(record.value.as_slice()).unwrap();
        assert_eq!(
            (entry.kind, entry.earliest_at_ms, entry.occurred_at_ms, entry.event_offset, entry.events_behind),
            (LedgerKind::Progress as i32, 20, 70, 3, 0)
        );
        assert_eq!(entry.entry_id, "progress/2/3");
    }

    fn entry_of(record: &OutboxRecord) -> LedgerEntry {
        LedgerEntry::decode(record.value.as_slice()).unwrap()
    }

    #[test]
    fn a_merged_marker_is_the_later_position_with_the_union_of_accepted_times() {
        let topics = Topics::new("t.");
        let mark = |last_offset, accepted| Mark { last_offset, accepted };
        let earlier = marker(&topics, "EUR", 1, mark(10, Some((500, 900))), false);
        let idle = marker(&topics, "EUR", 1, mark(12, None), false);
        let later = marker(&topics, "EUR", 1, mark(20, Some((300, 700))), true);

        let merged = merge_markers(&merge_markers(&earlier, &idle).unwrap(), &later).unwrap();
        let entry = entry_of(&merged);
        assert_eq!(
            (entry.entry_id.as_str(), entry.event_offset, entry.events_behind),
            ("progress/1/20", 20, 0),
            "the later position, end flag and id"
        );
        assert_eq!((entry.earliest_at_ms, entry.occurred_at_ms), (300, 900), "the union of times");
        assert_eq!(
            (&*merged.topic, merged.partition, &merged.headers),
            (&*later.topic, later.partition, &later.headers)
        );

        let quiet = merge_markers(&idle, &marker(&topics, "EUR", 1, mark(13, None), false)).unwrap();
        assert_eq!(
            (entry_of(&quiet).earliest_at_ms, entry_of(&quiet).occurred_at_ms),
            (0, 0),
            "nothing accepted"
        );
        let after_idle = merge_markers(&earlier, &idle).unwrap();
        assert_eq!((entry_of(&after_idle).earliest_at_ms, entry_of(&after_idle).occurred_at_ms), (500, 900));
    }

    #[test]
    fn records_that_are_not_two_markers_of_one_partition_are_not_merged() {
        let topics = Topics::new("t.");
        let one = marker(&topics, "EUR", 1, Mark::at(3), false);
        let other = marker(&topics, "EUR", 2, Mark::at(4), false);
        assert!(merge_markers(&one, &other).is_none());
        let money = LedgerEntry { kind: LedgerKind::Shipment as i32, ..LedgerEntry::default() };
        let shipment = OutboxRecord { value: money.encode_to_vec(), ..one.clone() };
        assert!(merge_markers(&shipment, &one).is_none());
        let garbage = OutboxRecord { value: vec![0xff, 0xff], ..one.clone() };
        assert!(merge_markers(&one, &garbage).is_none());
    }
}

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
        headers: vec![(BARRIER_HEADER.to_string(), Vec::new())],
        partition: Some(partition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnifold_proto::{LedgerEntry, LedgerKind};

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
}

//! Committed outbox records handed to the sender in memory, so that it need not read back
//! (and decode) what the committing loop has just written.
//!
//! The store stays the truth: the sender reads it after a start or a failed delivery, and
//! takes records from the hand-off only once the store has nothing older to send. A record
//! that reaches the hand-off after the sender already sent it from the store (the commit
//! landed between the two) is dropped by its sequence number, so nothing is sent twice.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::store::{Handed, OutboxRecord};

/// Records committed, in sequence order, not yet taken by the sender.
#[derive(Debug, Default)]
pub struct Handoff {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    records: VecDeque<(u64, OutboxRecord)>,
    /// Every record at or below this sequence number was already sent from the store.
    sent_through: Option<u64>,
}

impl Handoff {
    /// Adds the records of one commit, in the order they were committed.
    pub fn push(&self, records: Handed) {
        let mut inner = self.inner.lock().expect("handoff lock");
        let floor = inner.sent_through;
        let fresh = records.into_iter().filter(|(seq, _)| floor.is_none_or(|floor| *seq > floor));
        inner.records.extend(fresh);
    }

    /// Takes up to `limit` records, oldest first.
    pub fn take(&self, limit: usize) -> Vec<(u64, OutboxRecord)> {
        let mut inner = self.inner.lock().expect("handoff lock");
        let count = limit.min(inner.records.len());
        inner.records.drain(..count).collect()
    }

    /// The sender sent every record up to `seq` from the store: forget those, and drop them
    /// if they arrive later.
    pub fn sent_from_store(&self, seq: u64) {
        let mut inner = self.inner.lock().expect("handoff lock");
        inner.sent_through = Some(inner.sent_through.map_or(seq, |floor| floor.max(seq)));
        while inner.records.front().is_some_and(|(first, _)| *first <= seq) {
            inner.records.pop_front();
        }
    }

    /// Records waiting in the hand-off.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("handoff lock").records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(seqs: &[u64]) -> Handed {
        let record = |seq: u64| OutboxRecord {
            topic: "t".into(),
            key: seq.to_be_bytes().to_vec(),
            value: Vec::new(),
            headers: Vec::new(),
            partition: None,
        };
        seqs.iter().map(|seq| (*seq, record(*seq))).collect::<Vec<_>>().into()
    }

    fn seqs(taken: Vec<(u64, OutboxRecord)>) -> Vec<u64> {
        taken.into_iter().map(|(seq, _)| seq).collect()
    }

    #[test]
    fn records_come_out_in_commit_order_and_in_limits() {
        let handoff = Handoff::default();
        handoff.push(records(&[1, 2, 3]));
        handoff.push(records(&[4]));
        assert_eq!(seqs(handoff.take(3)), vec![1, 2, 3]);
        assert_eq!(seqs(handoff.take(3)), vec![4]);
        assert!(handoff.is_empty());
    }

    #[test]
    fn what_the_store_already_sent_is_never_taken_again() {
        let handoff = Handoff::default();
        handoff.push(records(&[5, 6]));
        handoff.sent_from_store(6);
        // a commit that landed in the store before the sender read it, handed over after
        handoff.push(records(&[6, 7]));
        assert_eq!(seqs(handoff.take(10)), vec![7]);
    }
}

//! The order lines the engine wrote lately, as stored, so that the event that next names one
//! (a shipment hours after its placement, a cancellation minutes after) reads it from memory
//! instead of the store.
//!
//! A line read back was most often written a few thousand events before: it is still in the
//! store's memtable, and finding it there is a search of a skip list whose keys all begin
//! alike (`k/`, the partition, the SKU), each step a key read from the heap. That search was
//! most of the engine's point reads late in a long history.
//!
//! Architecture invariant: an entry is the last value the engine wrote under its key, or
//! there is no entry. Lines are only ever written by [`crate::engine::Engine::write`], which
//! puts each here as it puts it in the commit, and never removed; a partition's entries go
//! when the engine forgets the partition (its store keys may then be rewritten by another
//! owner's changelog).

use std::mem;

use omnifold_runtime::store::Bytes;
use rustc_hash::FxHashMap as HashMap;

use crate::engine::StoreKey;

/// A line's store key (less the store's own prefix) in an input partition.
type LineId = (i32, StoreKey);

/// Two generations of lines: the newer takes every write, and once it holds half the
/// capacity it becomes the older, the older being dropped. No order is kept per entry, and a
/// line stays between one half and the whole of the capacity's writes. A line rewritten may
/// also be in the older generation: the newer is read first, and the older copy goes at the
/// next turn.
#[derive(Debug, Default)]
pub struct RecentLines {
    newer: HashMap<LineId, Bytes>,
    older: HashMap<LineId, Bytes>,
    capacity: usize,
}

impl RecentLines {
    pub fn new(capacity: usize) -> Self {
        RecentLines { capacity, ..RecentLines::default() }
    }

    /// Remembers the value written under a line's key.
    pub fn insert(&mut self, id: LineId, value: Bytes) {
        if self.capacity == 0 {
            return;
        }
        if self.newer.len() >= self.capacity.div_ceil(2) {
            self.older = mem::take(&mut self.newer);
        }
        self.newer.insert(id, value);
    }

    /// The value last written under a line's key, if it is still remembered.
    pub fn get(&self, id: &LineId) -> Option<&Bytes> {
        self.newer.get(id).or_else(|| self.older.get(id))
    }

    pub fn forget_partition(&mut self, partition: i32) {
        self.newer.retain(|(p, _), _| *p != partition);
        self.older.retain(|(p, _), _| *p != partition);
    }

    /// Entries held, a rewritten line's older copy included.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.newer.len() + self.older.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(partition: i32, key: &str) -> LineId {
        (partition, key.as_bytes().into())
    }

    fn value(text: &str) -> Bytes {
        Bytes::from(text.as_bytes())
    }

    #[test]
    fn the_last_value_written_is_the_one_read() {
        let mut lines = RecentLines::new(4);
        lines.insert(id(0, "a"), value("placed"));
        lines.insert(id(0, "b"), value("placed"));
        lines.insert(id(0, "c"), value("placed"));
        // "a" is in the older generation now; rewriting it must shadow the older value
        lines.insert(id(0, "a"), value("shipped"));
        assert_eq!(lines.get(&id(0, "a")), Some(&value("shipped")));
        assert_eq!(lines.get(&id(1, "a")), None, "partitions are apart");
    }

    #[test]
    fn the_capacity_bounds_what_is_held_and_the_newest_stay() {
        let mut lines = RecentLines::new(100);
        for n in 0..1_000 {
            lines.insert(id(0, &n.to_string()), value("line"));
            assert!(lines.held() <= 100);
        }
        assert!((950..1_000).all(|n| lines.get(&id(0, &n.to_string())).is_some()), "the last half kept");
        assert_eq!(lines.get(&id(0, "0")), None);
        let mut none = RecentLines::new(0);
        none.insert(id(0, "a"), value("line"));
        assert_eq!((none.held(), none.get(&id(0, "a"))), (0, None));
    }

    #[test]
    fn a_forgotten_partition_leaves_nothing_behind() {
        let mut lines = RecentLines::new(4);
        for key in ["a", "b", "c"] {
            lines.insert(id(3, key), value("line"));
        }
        lines.insert(id(4, "a"), value("line"));
        lines.forget_partition(3);
        assert_eq!(lines.held(), 1);
        assert!(lines.get(&id(3, "a")).is_none() && lines.get(&id(4, "a")).is_some());
    }
}

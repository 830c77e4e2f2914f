//! Keyed records of a SKU that live under their own store keys: order lines and promotion
//! ids. They accumulate with history, so a SKU's state holds only a working set of them.
//!
//! The fold reads and writes records through [`Records`]; whoever runs it (the coordinator's
//! state engine, a test, a replay in memory) must have *provided* every record the event
//! names before applying it ([`crate::Fold::record_key`] says which). A record absent from
//! the working set is taken as not existing. Changed records are remembered until
//! [`Records::take_changed_keys`] hands them to the store, which writes only those.

use std::collections::BTreeSet;
use std::hash::Hash;

use rustc_hash::FxHashMap;

/// A working set of keyed records with the keys changed since the last write.
///
/// The records are hashed, not ordered: a fold held whole in memory keeps every line of a SKU,
/// and looking one up in order compares its channel, order and line ids string by string at
/// each level. Nothing reads them in order; the changed keys are written in key order.
#[derive(Debug, Clone)]
pub struct Records<K: Ord + Hash, V> {
    /// Boxed: a fold held in memory keeps a table of every line, whose empty slots cost a
    /// slot's size each, and whose growth moves every slot.
    loaded: FxHashMap<K, Box<V>>,
    changed: BTreeSet<K>,
}

impl<K: Ord + Hash, V> Default for Records<K, V> {
    fn default() -> Self {
        Records { loaded: FxHashMap::default(), changed: BTreeSet::new() }
    }
}

/// Two working sets are equal when they hold the same records, whatever is unwritten.
impl<K: Ord + Hash, V: PartialEq> PartialEq for Records<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.loaded == other.loaded
    }
}

impl<K: Ord + Hash, V: Eq> Eq for Records<K, V> {}

impl<K: Ord + Hash + Clone, V: Clone> Records<K, V> {
    pub fn get(&self, key: &K) -> Option<&V> {
        self.loaded.get(key).map(|value| &**value)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.loaded.contains_key(key)
    }

    /// The record, to change: it will be written.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let value = self.loaded.get_mut(key)?;
        if !self.changed.contains(key) {
            self.changed.insert(key.clone());
        }
        Some(&mut **value)
    }

    /// A new or replaced record: it will be written.
    pub fn insert(&mut self, key: K, value: V) {
        self.changed.insert(key.clone());
        self.loaded.insert(key, Box::new(value));
    }

    /// A record as the store holds it; loading changes nothing to write. A record already in
    /// the working set is newer than the store's and is kept.
    pub fn provide(&mut self, key: K, value: V) {
        self.loaded.entry(key).or_insert_with(|| Box::new(value));
    }

    /// The keys of the records changed since the last call, in key order, to be written:
    /// the records are read in place ([`Records::get`]) rather than cloned.
    pub fn take_changed_keys(&mut self) -> Vec<K> {
        let loaded = &self.loaded;
        std::mem::take(&mut self.changed).into_iter().filter(|key| loaded.contains_key(key)).collect()
    }

    /// Forgets which records changed, for a working set that is never written (a fold held
    /// whole in memory).
    pub fn forget_changes(&mut self) {
        self.changed.clear();
    }

    /// Drops every written record from the working set; they stay in the store. The table's
    /// room goes too: a cleared hash map keeps its capacity, so a SKU that once loaded many
    /// lines would hold their room for as long as it stays cached.
    pub fn unload_written(&mut self) {
        if self.changed.is_empty() {
            self.loaded = FxHashMap::default();
        } else {
            let changed = &self.changed;
            self.loaded.retain(|key, _| changed.contains(key));
            self.loaded.shrink_to_fit();
        }
    }

    /// Drops a record from memory without writing anything: for a working set never written
    /// (a fold held whole in memory) whose record no later event reads.
    pub fn let_go(&mut self, key: &K) {
        self.loaded.remove(key);
        self.changed.remove(key);
    }

    pub fn len(&self) -> usize {
        self.loaded.len()
    }

    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty()
    }

    /// The records, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.loaded.iter().map(|(key, value)| (key, &**value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_records_are_written_and_provided_ones_are_not() {
        let mut records: Records<u8, &str> = Records::default();
        records.provide(1, "stored");
        records.insert(2, "new");
        *records.get_mut(&1).unwrap() = "changed";
        records.insert(2, "newer");
        assert_eq!(records.take_changed_keys(), vec![1, 2]);
        assert_eq!((records.get(&1), records.get(&2)), (Some(&"changed"), Some(&"newer")));
        assert!(records.take_changed_keys().is_empty(), "written once");
        records.provide(2, "stale");
        assert_eq!(records.get(&2), Some(&"newer"), "the working set is newer than the store");
    }

    #[test]
    fn unloading_gives_back_the_room_of_the_records_it_drops() {
        let mut records: Records<u32, u32> = Records::default();
        for key in 0..1_000 {
            records.insert(key, key);
        }
        records.take_changed_keys();
        records.unload_written();
        assert_eq!(records.loaded.capacity(), 0, "a cached state keeps no room for lines it wrote");
        for key in 0..1_000 {
            records.provide(key, key);
        }
        records.insert(7, 0);
        records.unload_written();
        assert!(records.loaded.capacity() < 16, "room for the one unwritten record");
    }

    #[test]
    fn unloading_keeps_unwritten_records() {
        let mut records: Records<u8, u8> = Records::default();
        records.provide(1, 0);
        records.insert(2, 0);
        records.unload_written();
        assert!(!records.contains(&1));
        assert!(records.contains(&2), "not written yet");
    }
}

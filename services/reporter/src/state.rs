//! How the two stages keep their state in the store (postcard, under each input's store
//! partition id, see [`crate::topics`]).
//!
//! One store partition holds entries of several kinds, so each value is one enum. Writes
//! go through the borrowed twin of each enum (same variants, same order), which serializes
//! to the same bytes without cloning the state.

use std::collections::{BTreeMap, HashSet};

use omnifold_domain::report::merge::{CellInputs, OrderIndex, SourceMark};
use omnifold_domain::report::{AlertLedger, Cell, Merger, Partial, PartitionLedger, Snapshot, Source};
use omnifold_runtime::{Commit, Store, StoreError};
use serde::{Deserialize, Serialize};

/// A partials-stage entry, as read back: a cell's sums, or a ledger partition's marks (its
/// span, how far it is folded, the coordinator's last word on its end).
#[derive(Deserialize)]
enum LedgerEntry {
    Cell(Cell, Partial),
    Marks(PartitionLedger),
}

/// A partials-stage entry, as written.
#[derive(Serialize)]
enum LedgerEntryRef<'a> {
    Cell(&'a Cell, &'a Partial),
    Marks(&'a PartitionLedger),
}

/// A merge-stage entry, as read back.
#[derive(Deserialize)]
enum MergeEntry {
    Source(Source, SourceMark),
    Cell(Cell, CellInputs),
    Emitted(Cell, Box<Snapshot>),
    Orders(Cell, i64),
}

/// A merge-stage entry, as written.
#[derive(Serialize)]
enum MergeEntryRef<'a> {
    Source(&'a Source, &'a SourceMark),
    Cell(&'a Cell, &'a CellInputs),
    Emitted(&'a Cell, &'a Snapshot),
    Orders(&'a Cell, i64),
}

fn cell_key(prefix: &str, cell: &Cell) -> String {
    format!("{prefix}/{}/{}", cell.week.0, cell.channel)
}

/// A ledger partition's sums and marks as last committed.
pub fn load_partition_ledger(store: &Store, id: i32) -> Result<PartitionLedger, StoreError> {
    let mut ledger = PartitionLedger::default();
    let mut cells = std::collections::BTreeMap::new();
    for (_, entry) in store.partition_state::<LedgerEntry>(id)? {
        match entry {
            LedgerEntry::Cell(cell, partial) => {
                cells.insert(cell, partial);
            }
            LedgerEntry::Marks(marks) => ledger = marks,
        }
    }
    ledger.cells = cells;
    Ok(ledger)
}

/// An alerts partition's ledger as last committed.
pub fn load_alert_ledger(store: &Store, id: i32) -> Result<AlertLedger, StoreError> {
    let mut ledger = AlertLedger { seen: store.seen_ids(id)?, ..AlertLedger::default() };
    for (_, entry) in store.partition_state::<LedgerEntry>(id)? {
        if let LedgerEntry::Cell(cell, partial) = entry {
            ledger.cells.insert(cell, partial);
        }
    }
    Ok(ledger)
}

pub fn put_cell(commit: &mut Commit, id: i32, cell: &Cell, partial: &Partial) {
    commit.put_state(id, &cell_key("c", cell), &LedgerEntryRef::Cell(cell, partial));
}

/// A ledger partition's marks alone, without its cells: the coordinator's last word on the
/// partition's end, for the lag of a partition not read since start.
pub fn load_marks(store: &Store, id: i32) -> Result<PartitionLedger, StoreError> {
    Ok(match store.state::<LedgerEntry>(id, "marks")? {
        Some(LedgerEntry::Marks(marks)) => marks,
        _ => PartitionLedger::default(),
    })
}

pub fn put_marks(commit: &mut Commit, id: i32, ledger: &PartitionLedger) {
    commit.put_state(id, "marks", &LedgerEntryRef::Marks(ledger));
}

/// The merge stage's state as last committed.
pub fn load_merger(store: &Store, id: i32) -> Result<Merger, StoreError> {
    let (mut sources, mut cells, mut emitted) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let mut orders = BTreeMap::new();
    for (_, entry) in store.partition_state::<MergeEntry>(id)? {
        match entry {
            MergeEntry::Source(source, mark) => {
                sources.insert(source, mark);
            }
            MergeEntry::Cell(cell, inputs) => {
                cells.insert(cell, inputs);
            }
            MergeEntry::Emitted(cell, snapshot) => {
                emitted.insert(cell, *snapshot);
            }
            MergeEntry::Orders(cell, count) => {
                orders.insert(cell, count);
            }
        }
    }
    Ok(Merger::restore(sources, cells, emitted, orders))
}

/// Writes what changed in the merger since the last call.
pub fn put_merger_changes(commit: &mut Commit, id: i32, merger: &mut Merger) {
    let changes = merger.take_changes();
    for source in &changes.sources {
        let mark = &merger.sources[source];
        commit.put_state(id, &format!("s/{source}"), &MergeEntryRef::Source(source, mark));
    }
    for cell in &changes.cells {
        commit.put_state(id, &cell_key("c", cell), &MergeEntryRef::Cell(cell, &merger.cells[cell]));
    }
    for cell in &changes.emitted {
        commit.put_state(id, &cell_key("e", cell), &MergeEntryRef::Emitted(cell, &merger.emitted[cell]));
    }
    for cell in &changes.orders {
        commit.put_state(id, &cell_key("o", cell), &MergeEntryRef::Orders(cell, merger.orders[cell]));
    }
}

/// The (cell, order) pairs the merge stage has counted, one store record each: looked up
/// per shipped order instead of held in memory, since they grow with the orders.
pub struct StoredOrders<'a> {
    store: &'a Store,
    commit: &'a mut Commit,
    id: i32,
    /// Pairs first seen in this commit, not yet in the store.
    fresh: HashSet<Vec<u8>>,
    error: Option<StoreError>,
}

impl<'a> StoredOrders<'a> {
    pub fn new(store: &'a Store, commit: &'a mut Commit, id: i32) -> Self {
        StoredOrders { store, commit, id, fresh: HashSet::new(), error: None }
    }

    /// The first store error met, if any: the caller must not commit after one.
    pub fn finish(self) -> Result<(), StoreError> {
        self.error.map_or(Ok(()), Err)
    }
}

impl OrderIndex for StoredOrders<'_> {
    fn insert(&mut self, cell: &Cell, order: &str) -> bool {
        let key = format!("{}\0{order}", cell_key("o", cell)).into_bytes();
        if self.fresh.contains(&key) {
            return false;
        }
        match self.store.record(self.id, &key) {
            Ok(Some(_)) => false,
            Ok(None) => {
                self.commit.put_record(self.id, &key, Vec::new());
                self.fresh.insert(key);
                true
            }
            Err(error) => {
                self.error.get_or_insert(error);
                false
            }
        }
    }
}

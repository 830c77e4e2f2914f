//! How the two stages keep their state in the store (postcard, under each input's store
//! partition id, see [`crate::topics`]).
//!
//! One store partition holds entries of several kinds, so each value is one enum. Writes
//! go through the borrowed twin of each enum (same variants, same order), which serializes
//! to the same bytes without cloning the state.

use std::collections::BTreeMap;

use omnifold_domain::report::ledger::SkuBook;
use omnifold_domain::report::merge::{CellInputs, SourceMark};
use omnifold_domain::report::{AlertLedger, Cell, EventLedger, Merger, Partial, Snapshot, Source, Span};
use omnifold_runtime::{Commit, Store, StoreError};
use serde::{Deserialize, Serialize};

/// A partials-stage entry, as read back.
#[derive(Deserialize)]
enum LedgerEntry {
    Book(String, SkuBook),
    Cell(Cell, Partial),
    Span(Span),
}

/// A partials-stage entry, as written.
#[derive(Serialize)]
enum LedgerEntryRef<'a> {
    Book(&'a str, &'a SkuBook),
    Cell(&'a Cell, &'a Partial),
    Span(&'a Span),
}

/// A merge-stage entry, as read back.
#[derive(Deserialize)]
enum MergeEntry {
    Source(Source, SourceMark),
    Cell(Cell, CellInputs),
    Emitted(Cell, Box<Snapshot>),
}

/// A merge-stage entry, as written.
#[derive(Serialize)]
enum MergeEntryRef<'a> {
    Source(&'a Source, &'a SourceMark),
    Cell(&'a Cell, &'a CellInputs),
    Emitted(&'a Cell, &'a Snapshot),
}

fn cell_key(prefix: &str, cell: &Cell) -> String {
    format!("{prefix}/{}/{}", cell.week.0, cell.channel)
}

/// An events partition's ledger as last committed.
pub fn load_event_ledger(store: &Store, id: i32) -> Result<EventLedger, StoreError> {
    let mut ledger = EventLedger { seen: store.seen_ids(id)?, ..EventLedger::default() };
    for (_, entry) in store.partition_state::<LedgerEntry>(id)? {
        match entry {
            LedgerEntry::Book(sku, book) => {
                ledger.skus.insert(sku, book);
            }
            LedgerEntry::Cell(cell, partial) => {
                ledger.cells.insert(cell, partial);
            }
            LedgerEntry::Span(span) => ledger.span = span,
        }
    }
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

pub fn put_book(commit: &mut Commit, id: i32, sku: &str, book: &SkuBook) {
    commit.put_state(id, &format!("b/{sku}"), &LedgerEntryRef::Book(sku, book));
}

pub fn put_cell(commit: &mut Commit, id: i32, cell: &Cell, partial: &Partial) {
    commit.put_state(id, &cell_key("c", cell), &LedgerEntryRef::Cell(cell, partial));
}

pub fn put_span(commit: &mut Commit, id: i32, span: &Span) {
    commit.put_state(id, "span", &LedgerEntryRef::Span(span));
}

/// The merge stage's state as last committed.
pub fn load_merger(store: &Store, id: i32) -> Result<Merger, StoreError> {
    let (mut sources, mut cells, mut emitted) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
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
        }
    }
    Ok(Merger::restore(sources, cells, emitted))
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
}

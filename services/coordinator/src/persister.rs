//! Writing and fsyncing the fold loop's batches on a thread of its own, so that the next batch
//! folds while the last one is written and reaches the disk; one fsync covers every batch
//! written before it (a group commit). A batch's outbox records go on only once it is
//! fsynced: nothing leaves the process that an OS crash could still take back.
//!
//! The fold loop hands each batch over deferred ([`Store::defer`]) and folds on. It reads
//! nothing the batch in flight wrote (the engine keeps that batch's SKUs, records and ids in
//! memory until it is written, see `engine.rs`), and it [`Persister::settle`]s before anything
//! that does read it: the next commit, a revocation, the changelog.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use omnifold_runtime::{Commit, Deferred, Handed, Store, StoreError};

/// Batches written and not yet fsynced that the fold loop may run ahead by; it waits beyond.
const MAX_UNSYNCED_BATCHES: usize = 8;

/// A batch to write and the outbox records it holds, in commit order.
struct Unsynced {
    deferred: Deferred,
    records: Handed,
}

/// Where the records of fsynced batches go: the sender, in the coordinator.
pub type Hand = Box<dyn FnMut(Handed) + Send>;

/// The thread that writes and fsyncs batches and hands their records on.
pub struct Persister {
    store: Store,
    queue: Option<SyncSender<Unsynced>>,
    thread: Option<JoinHandle<Result<(), StoreError>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the persister thread panicked")]
    Panicked,
}

impl Persister {
    pub fn spawn(store: Store, hand: Hand) -> Self {
        let (queue, unsynced) = sync_channel(MAX_UNSYNCED_BATCHES);
        let writer = store.clone();
        let thread = std::thread::Builder::new()
            .name("omnifold-persister".into())
            .spawn(move || persist_in_order(&writer, hand, &unsynced))
            .expect("the persister thread starts");
        Persister { store, queue: Some(queue), thread: Some(thread) }
    }

    /// Hands the coordinator's sender the records of each fsynced batch.
    pub fn to_sender(store: Store, outbox: Arc<omnifold_runtime::OutboxSignals>) -> Self {
        Self::spawn(store, Box::new(move |records| outbox.committed_records(records)))
    }

    /// Queues a batch to write; waits while [`MAX_UNSYNCED_BATCHES`] are queued. Fails with the
    /// persister's own error once it has stopped (a write or an fsync failed).
    pub fn submit(&mut self, commit: Commit, records: Handed) -> Result<(), PersistError> {
        let queue = self.queue.as_ref().expect("submit before finish");
        let deferred = self.store.defer(commit);
        if queue.send(Unsynced { deferred, records }).is_err() {
            return self.finish();
        }
        Ok(())
    }

    /// Waits until every submitted batch is written (not necessarily fsynced), so that reads
    /// of the store show them.
    pub fn settle(&self) -> Result<(), PersistError> {
        Ok(self.store.settle()?)
    }

    /// Fsyncs what is queued, hands it over and stops the thread.
    pub fn finish(&mut self) -> Result<(), PersistError> {
        self.queue = None;
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => Ok(result?),
            Some(Err(_)) => Err(PersistError::Panicked),
        }
    }
}

impl Drop for Persister {
    /// A fold loop that ends by an error still gets what it wrote fsynced and sent.
    fn drop(&mut self) {
        if let Err(error) = self.finish() {
            tracing::error!(%error, "persisting the last batches failed");
        }
    }
}

/// Writes every queued batch, then fsyncs them with one persist and hands their records on.
fn persist_in_order(store: &Store, mut hand: Hand, unsynced: &Receiver<Unsynced>) -> Result<(), StoreError> {
    while let Ok(first) = unsynced.recv() {
        let mut batches = vec![first];
        while let Ok(next) = unsynced.try_recv() {
            batches.push(next);
        }
        let mut last = None;
        let mut records = Vec::with_capacity(batches.len());
        for batch in batches {
            last = Some(store.write_deferred(batch.deferred)?);
            records.push(batch.records);
        }
        store.persist(last.expect("at least the first"))?;
        for batch in records {
            hand(batch);
        }
    }
    Ok(())
}

//! Fsyncing the fold loop's batches on a thread of its own, so that the next batch folds while
//! the last one reaches the disk; one fsync covers every batch written before it (a group
//! commit). A batch's outbox records go to the sender only once it is fsynced: nothing leaves
//! the process that an OS crash could still take back.
//!
//! The fold loop writes each batch to the store itself ([`Store::write`]: visible to reads at
//! once, safe from a crash of the process), so the state it folds next never waits for the
//! disk; only the outputs do.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use omnifold_runtime::{OutboxRecord, OutboxSignals, Store, StoreError, Written};

/// Batches written and not yet fsynced that the fold loop may run ahead by; it waits beyond.
const MAX_UNSYNCED_BATCHES: usize = 8;

/// A written batch and the outbox records it holds, in commit order.
struct Unsynced {
    written: Written,
    records: Vec<(u64, OutboxRecord)>,
}

/// The thread that fsyncs written batches and hands their records to the sender.
pub struct Persister {
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
    pub fn spawn(store: Store, outbox: Arc<OutboxSignals>) -> Self {
        let (queue, unsynced) = sync_channel(MAX_UNSYNCED_BATCHES);
        let thread = std::thread::Builder::new()
            .name("omnifold-persister".into())
            .spawn(move || persist_in_order(&store, &outbox, &unsynced))
            .expect("the persister thread starts");
        Persister { queue: Some(queue), thread: Some(thread) }
    }

    /// Queues a written batch; waits while [`MAX_UNSYNCED_BATCHES`] are queued. Fails with the
    /// persister's own error once it has stopped (an fsync failed).
    pub fn submit(
        &mut self,
        written: Written,
        records: Vec<(u64, OutboxRecord)>,
    ) -> Result<(), PersistError> {
        let queue = self.queue.as_ref().expect("submit before finish");
        if queue.send(Unsynced { written, records }).is_err() {
            return self.finish();
        }
        Ok(())
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

fn persist_in_order(
    store: &Store,
    outbox: &OutboxSignals,
    unsynced: &Receiver<Unsynced>,
) -> Result<(), StoreError> {
    while let Ok(first) = unsynced.recv() {
        let mut batches = vec![first];
        while let Ok(next) = unsynced.try_recv() {
            batches.push(next);
        }
        let last = batches.last().expect("at least the first").written;
        store.persist(last)?;
        for batch in batches {
            outbox.committed_records(batch.records);
        }
    }
    Ok(())
}

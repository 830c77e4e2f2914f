//! The poller's own small store (sled): the checkpoint, and what was published per order.
//!
//! - `checkpoint`: the `LastUpdatedBefore` of the last window whose every order was published
//!   and acknowledged. The next window starts there (less `overlap_ms`), so a restart neither
//!   skips a window (the checkpoint moves only after the whole window is published) nor
//!   repeats one.
//! - `order/<AmazonOrderId>`: the order's `LastUpdateDate` when it was last published, and the
//!   ids of the events published for it. An order listed again with the same
//!   `LastUpdateDate` (an overlapping window, a window repeated after a crash) is skipped
//!   without a getOrderItems call; an order that changed is read again and only the events
//!   not published yet are sent (e.g. its shipped units, not its placement again). The ids
//!   follow the facts (`amazon:order:<order>:item:<item>:placed`), so what a crash between
//!   publishing and writing here repeats is the same event, which the coordinator ignores.
//!
//! One entry per order: the store grows with the orders polled (a few hundred bytes each).

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SpApiError;

const CHECKPOINT: &[u8] = b"checkpoint";

/// What was published for one order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderMark {
    pub last_update_ms: i64,
    pub event_ids: BTreeSet<String>,
}

/// The store; see the module documentation.
pub struct Checkpoints {
    db: sled::Db,
}

impl Checkpoints {
    /// Opens (or creates) the sled directory. Blocking: call it while building the source.
    pub fn open(path: &Path) -> Result<Self, SpApiError> {
        let db = crate::sled_dir::open(path)
            .map_err(|error| SpApiError::State(format!("cannot open {}: {error}", path.display())))?;
        Ok(Checkpoints { db })
    }

    /// The end of the last window polled completely.
    pub fn checkpoint(&self) -> Result<Option<i64>, SpApiError> {
        let value = self.db.get(CHECKPOINT).map_err(state)?;
        value
            .map(|bytes| {
                <[u8; 8]>::try_from(bytes.as_ref())
                    .map(i64::from_be_bytes)
                    .map_err(|_| SpApiError::State("the checkpoint is not 8 bytes".into()))
            })
            .transpose()
    }

    /// Moves the checkpoint to `until` and waits until it is on disk.
    pub async fn advance(&self, until: i64) -> Result<(), SpApiError> {
        self.db.insert(CHECKPOINT, &until.to_be_bytes()).map_err(state)?;
        self.db.flush_async().await.map_err(state)?;
        Ok(())
    }

    pub fn order(&self, order_id: &str) -> Result<Option<OrderMark>, SpApiError> {
        let Some(bytes) = self.db.get(order_key(order_id)).map_err(state)? else { return Ok(None) };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SpApiError::State(format!("the mark of order {order_id} does not decode: {e}")))
    }

    /// Records what was published for `order_id`, on disk before it returns.
    pub async fn mark(&self, order_id: &str, mark: &OrderMark) -> Result<(), SpApiError> {
        let bytes = serde_json::to_vec(mark).map_err(|e| SpApiError::State(e.to_string()))?;
        self.db.insert(order_key(order_id), bytes).map_err(state)?;
        self.db.flush_async().await.map_err(state)?;
        Ok(())
    }
}

fn order_key(order_id: &str) -> Vec<u8> {
    format!("order/{order_id}").into_bytes()
}

fn state(error: sled::Error) -> SpApiError {
    SpApiError::State(error.to_string())
}

//! Sources: each channel's payloads in, contract events out to a [`Sink`](crate::publish::Sink).
//!
//! Every source is built by its module's `source(options, sink)` from an options struct
//! (serde: its section of the connector config, plus what the command line adds) and runs
//! until a shutdown future resolves, with `run(shutdown)`.
//!
//! - [`http`]: the one signed-webhook receiver, generic over a channel [`http::Adapter`];
//!   [`shopify`], [`woocommerce`] and [`amazon`] provide adapters.
//! - [`files`]: watched directories, the wholesale drop directory ([`b2b`]) and Amazon's
//!   notification files; [`amazon`] runs its directory beside its receiver.
//! - [`ndjson`]: the contract's JSON form from a file or stdin.
//! - [`spapi`]: the SP-API Orders API pull client (`amazon-poll`), publishing through
//!   [`amazon`]'s mapping, with its own checkpoint store.
//! - [`levels`]: high-water marks of absolute stock levels, shared by the sources that map
//!   them, so that a late, older count never sets on-hand back.

pub mod amazon;
pub mod b2b;
pub mod files;
pub mod http;
pub mod levels;
pub mod ndjson;
pub mod shopify;
pub mod spapi;
pub mod woocommerce;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::ConfigError;
use crate::files::FilesError;
use crate::publish::PublishError;

/// Why a source could not start, or stopped before its shutdown.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error("the http server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot open {path}: {error}")]
    Open { path: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// One shutdown shared by every task of a source: each clone resolves once the signal it was
/// made from has resolved, or once any clone triggered it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    down: Arc<watch::Sender<bool>>,
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    /// Watches `signal` on a task of its own, so that any number of clones can wait for it.
    pub fn new(signal: impl Future<Output = ()> + Send + 'static) -> Self {
        let (down, receiver) = watch::channel(false);
        let down = Arc::new(down);
        let announce = down.clone();
        tokio::spawn(async move {
            signal.await;
            announce.send_replace(true);
        });
        Shutdown { down, receiver }
    }

    /// Shuts down without the signal: when one part of a source fails, the others stop.
    pub fn trigger(&self) {
        self.down.send_replace(true);
    }

    pub async fn wait(mut self) {
        // the sender lives in `self`, so this ends only at shutdown
        let _ = self.receiver.wait_for(|down| *down).await;
    }
}

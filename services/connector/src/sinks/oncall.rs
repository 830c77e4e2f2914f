//! The on-call sink (CONTRACT.md section 6, 'Delivery'): consumes `omnifold.escalations.v1`
//! and triggers each escalation at an HTTP endpoint in the PagerDuty Events API v2 shape.
//!
//! - [`pagerduty`]: an escalation as a trigger event (`dedup_key` = the escalation id), and
//!   the routing key, a secret.
//! - [`delivery`]: one page's attempts, timeouts, retries and refusal.
//! - `consumer`: the loop over the escalations partitions and the sink's store.
//!
//! Never losing nor repeating a page across restarts: the sink keeps its own store (the
//! runtime's [`Store`](omnifold_runtime::Store), never the coordinator's). After each delivery
//! it commits, in one flushed batch, the escalation id (`put_seen`) and the next offset of its
//! partition, and on start it is assigned every partition at the stored offsets, as the
//! coordinator is. An HTTP endpoint cannot take part in that batch, so one window is left: a
//! crash after the endpoint accepted a page and before the commit. That page is sent again
//! after the restart with the same `dedup_key` (the escalation id), which PagerDuty folds into
//! the alert it already has.
//!
//! Connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff
//! ([`Backoff`]), without a limit: a page must not be lost because the endpoint is down for a
//! while. Each attempt is bounded by a timeout. Any other answer (a 4xx: malformed event, bad
//! routing key) will not get better by retrying, so the escalation is recorded in the store
//! (`refused/<escalation id>`), dead-lettered with the endpoint's answer, and skipped.

mod consumer;
pub mod delivery;
pub mod pagerduty;

use std::future::Future;
use std::path::PathBuf;

use omnifold_runtime::{KafkaError, KafkaOptions, OutboxError, StoreError, TopicOptions, Topics};
use serde::{Deserialize, Serialize};

pub use delivery::{Backoff, Delivery, DeliveryOptions, Endpoint, Refusal, Verdict, retry_after};
pub use pagerduty::{
    PAGERDUTY_ENDPOINT, PagerDutyEvent, ROUTING_KEY_ENV, RoutingKey, dedup_key, pagerduty_event,
};

use consumer::Flow;

/// Everything the on-call sink is configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OncallOptions {
    pub kafka: KafkaOptions,
    #[serde(default)]
    pub topics: TopicOptions,
    /// The consumer group under which offsets are committed for lag monitoring only.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Where events are POSTed, e.g. [`PAGERDUTY_ENDPOINT`].
    pub endpoint: String,
    /// The sink's own store directory.
    pub store: PathBuf,
    /// A file holding the routing key; without it the key is read from [`ROUTING_KEY_ENV`].
    #[serde(default)]
    pub routing_key_file: Option<PathBuf>,
    #[serde(default)]
    pub delivery: DeliveryOptions,
}

/// The consumer group of [`OncallOptions::group_id`] by default.
pub const DEFAULT_GROUP: &str = "omnifold-oncall";

fn default_group() -> String {
    DEFAULT_GROUP.to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum OncallError {
    #[error("no pagerduty routing key: set {ROUTING_KEY_ENV} or pass a routing key file")]
    NoRoutingKey,
    #[error("cannot read the routing key file {path}: {source}")]
    RoutingKeyFile { path: PathBuf, source: std::io::Error },
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot build the http client: {0}")]
    HttpClient(reqwest::Error),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("on-call sink task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The on-call sink, built from its options, ready to run.
pub struct Oncall {
    options: OncallOptions,
    topics: Topics,
    endpoint: Endpoint,
}

impl Oncall {
    /// Reads the routing key and checks the endpoint; connects to nothing yet.
    pub fn new(options: OncallOptions) -> Result<Oncall, OncallError> {
        let routing_key = RoutingKey::resolve(options.routing_key_file.as_deref())?;
        Oncall::with_routing_key(options, routing_key)
    }

    /// As [`Oncall::new`], with the key at hand.
    pub fn with_routing_key(options: OncallOptions, routing_key: RoutingKey) -> Result<Oncall, OncallError> {
        let endpoint = Endpoint::new(&options.endpoint, routing_key, options.delivery)?;
        let topics = Topics::new(&options.topics.prefix);
        Ok(Oncall { options, topics, endpoint })
    }

    /// Delivers escalations until `shutdown` resolves. A page being retried at that moment
    /// is left for the next run.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), OncallError> {
        let mut running = consumer::start(&self).await?;
        tokio::pin!(shutdown);
        loop {
            let message = tokio::select! {
                _ = &mut shutdown => break,
                message = running.consumer.recv() => message?.detach(),
            };
            if running.handle(message, shutdown.as_mut()).await? == Flow::Stop {
                break;
            }
        }
        tracing::info!("on-call sink stopped");
        Ok(())
    }
}

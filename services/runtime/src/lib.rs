//! The plumbing every omnifold service shares: Kafka clients and topic admin, the
//! store with its outbox, dead letters, contract loading, telemetry and shutdown.
//!
//! Architecture invariant: no business rule lives here. Rules are in `omnifold-domain`;
//! this crate moves bytes between Kafka, the store and the fold.

pub mod allocator;
pub mod changelog;
pub mod cli;
pub mod contract_file;
pub mod deadletter;
pub mod deliveries;
mod generations;
pub mod handoff;
pub mod health;
pub mod kafka;
pub mod kafka_config;
pub mod origin;
pub mod outbox;
pub mod partitioner;
pub mod store;
pub mod telemetry;
pub mod topics;

pub use contract_file::{ContractError, load_contract};
pub use generations::GENERATION_KEYS;
pub use health::{BrokerHealth, HealthContext};
pub use kafka::{KafkaError, KafkaOptions};
pub use kafka_config::{KafkaClientArgs, KafkaConfigError};
pub use outbox::{OutboxError, OutboxLoop, OutboxSender, OutboxSignals};
pub use store::{Commit, Deferred, Handed, OutboxRecord, Store, StoreError, Written};
pub use topics::{TopicOptions, Topics};

/// Milliseconds since the Unix epoch by the wall clock. Services use it for `detected_at_ms`
/// and latency only; the fold never sees it.
pub fn wall_clock_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

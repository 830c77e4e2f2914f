//! The reporter's configuration and errors.

use std::path::PathBuf;

use omnifold_runtime::{KafkaOptions, TopicOptions};
use serde::{Deserialize, Serialize};

/// Everything the reporter is configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReporterOptions {
    pub kafka: KafkaOptions,
    #[serde(default)]
    pub topics: TopicOptions,
    /// The consumer group of the partials stage; the merge stage joins `<group_id>-merge`.
    /// Every instance of one deployment uses the same group.
    #[serde(default = "default_group")]
    pub group_id: String,
    pub contract: PathBuf,
    /// The store directory; one per instance.
    pub store: PathBuf,
    #[serde(default = "default_batch_events")]
    pub batch_max_events: usize,
    #[serde(default = "default_batch_ms")]
    pub batch_max_ms: u64,
    /// Stop once every input partition, and the partials topic, is consumed to its end and
    /// every output is sent (for replays and tests; needs a single instance).
    #[serde(default)]
    pub exit_when_caught_up: bool,
    /// How long the broker may be unreachable before the reporter exits; `None` waits
    /// forever.
    #[serde(default, with = "omnifold_runtime::health::optional_secs")]
    pub broker_outage_max: Option<std::time::Duration>,
    /// Static group membership (KIP-345): an instance restarted with the same id takes its
    /// partitions back at once, without a rebalance or waiting for its old session to expire.
    /// Unique per instance and stable across its restarts; `None` joins as a dynamic member.
    #[serde(default)]
    pub group_instance_id: Option<String>,
    /// How long the group waits for a silent member before giving its partitions away.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
}

fn default_session_timeout_ms() -> u64 {
    10_000
}

fn default_group() -> String {
    "omnifold-reporter".to_string()
}

fn default_batch_events() -> usize {
    5_000
}

fn default_batch_ms() -> u64 {
    20
}

#[derive(Debug, thiserror::Error)]
pub enum ReporterError {
    #[error(transparent)]
    Contract(#[from] omnifold_runtime::ContractError),
    #[error(transparent)]
    Kafka(#[from] omnifold_runtime::KafkaError),
    #[error("kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] omnifold_runtime::StoreError),
    #[error(transparent)]
    Outbox(#[from] omnifold_runtime::OutboxError),
    #[error("topic {topic} has {partitions} partitions; the merge stage needs exactly 1")]
    PartialsPartitions { topic: String, partitions: i32 },
    #[error(transparent)]
    Outage(#[from] omnifold_runtime::health::OutageError),
    #[error("report loop stopped unexpectedly: {0}")]
    Join(#[from] tokio::task::JoinError),
}

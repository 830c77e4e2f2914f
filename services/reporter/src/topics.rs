//! The reporter's topics: the contract's, plus its internal partials topic, and where each
//! input partition's state lives in the store.

use std::time::Duration;

use omnifold_runtime::{KafkaError, KafkaOptions, Topics};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

/// Store partition ids: ledger partition `p` (events partition `p`'s) is `p`; alerts partition `q` is
/// `ALERTS_BASE + q`; the partials topic's partition is `PARTIALS_BASE`. One store holds
/// both stages, each input under its own id, so offsets and state never collide.
pub const ALERTS_BASE: i32 = 1_000_000;
pub const PARTIALS_BASE: i32 = 2_000_000;

/// Every topic the reporter reads or writes, under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTopics {
    pub contract: Topics,
    /// `<prefix>internal.report-partials.v1`: the partials stage's output, the merge stage's
    /// input. One partition, kept forever (see ARCHITECTURE.md, "Reporter scale-out").
    pub partials: omnifold_runtime::topics::TopicName,
}

impl ReportTopics {
    pub fn new(prefix: &str) -> Self {
        ReportTopics {
            contract: Topics::new(prefix),
            partials: format!("{prefix}internal.report-partials.v1").into(),
        }
    }

    /// The store partition id of an input partition; `None` for a topic the reporter does
    /// not consume.
    pub fn store_id(&self, topic: &str, partition: i32) -> Option<i32> {
        if topic == &*self.contract.ledger {
            Some(partition)
        } else if topic == &*self.contract.alerts {
            Some(ALERTS_BASE + partition)
        } else if topic == &*self.partials {
            Some(PARTIALS_BASE + partition)
        } else {
            None
        }
    }

    /// Creates the partials topic when missing: one partition (the merge stage must see
    /// every partial in one order), delete policy kept for good like the event log (a new
    /// merge owner replays it from the start): `retention_ms` is
    /// [`omnifold_runtime::TopicOptions::log_retention_ms`].
    pub async fn ensure_partials(&self, kafka: &KafkaOptions, retention_ms: i64) -> Result<(), KafkaError> {
        if kafka.fetch_partition_counts(&[&*self.partials]).await.is_ok() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
        let retention_ms = retention_ms.to_string();
        let topic = NewTopic::new(&self.partials, 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", "delete")
            .set("retention.ms", &retention_ms);
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(topic) => tracing::info!(topic, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(KafkaError::CreateTopic { topic, code }),
            }
        }
        Ok(())
    }
}

//! Kafka clients as every service configures them. Only the plain Kafka protocol through
//! rdkafka: the same settings run against nisshi locally and Apache Kafka in production.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::ThreadedProducer;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

use crate::deliveries::DeliveryContext;
use crate::health::{BrokerHealth, STATS_INTERVAL_MS};
use crate::topics::{TopicSpec, event_log_problem};

/// Where the brokers are and any extra librdkafka settings (security, timeouts...). Built
/// from the command line, a properties file and the environment by
/// [`crate::kafka_config::KafkaClientArgs`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaOptions {
    pub bootstrap_servers: String,
    /// Passed to librdkafka as they are, e.g. `security.protocol = "SASL_SSL"`. They come
    /// before each client's own settings, so they cannot weaken what a service relies on
    /// (acks, idempotence, manual offsets).
    pub extra: BTreeMap<String, String>,
}

/// By hand, so that passwords and other secrets in `extra` never reach a log.
impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOptions")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("extra", &crate::kafka_config::Redacted(&self.extra))
            .finish()
    }
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions { bootstrap_servers: "127.0.0.1:9092".to_string(), extra: BTreeMap::new() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic { topic: String, code: RDKafkaErrorCode },
    #[error("topic {0} does not exist")]
    MissingTopic(String),
    #[error("cannot read the settings of topic {topic}: {code}")]
    DescribeTopic { topic: String, code: RDKafkaErrorCode },
    #[error("{0}")]
    EventLogAtRisk(String),
    #[error(transparent)]
    Outage(#[from] crate::health::OutageError),
    #[error("metadata task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl KafkaError {
    /// Whether the broker could not be reached, rather than refusing the request.
    pub fn is_outage(&self) -> bool {
        match self {
            KafkaError::Client(error) => crate::health::is_outage(error),
            KafkaError::CreateTopic { code, .. } | KafkaError::DescribeTopic { code, .. } => {
                crate::health::is_outage_code(*code)
            }
            _ => false,
        }
    }
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Producer settings that tune rather than guarantee, so that a user's own value wins (a
/// `--kafka-set compression.type=none`, say). lz4 batches: on the benchmark's local broker
/// the rebuild's broker CPU halved (4.1 and 4.6 s against 8.3 and 9.4) and the coordinator
/// folded 52,807 and 54,863 events/s against 47,990 and 43,133 (`services/bench/HISTORY.md`,
/// "The round after that (stop 37)"); Apache Kafka keeps the batches as they come, so it
/// sends and stores fewer bytes too. A short linger keeps an alert's way to the topic short;
/// the sender hands librdkafka thousands of records at once while behind, so its batches fill
/// anyway (20 ms was no faster, `services/bench/HISTORY.md`, stops 34 and 44). Each comes
/// with every name librdkafka knows it by.
const PRODUCER_DEFAULTS: [(&[&str], &str); 2] =
    [(&["compression.type", "compression.codec"], "lz4"), (&["linger.ms", "queue.buffering.max.ms"], "2")];

impl KafkaOptions {
    /// The settings shared by every client.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        config
    }

    /// An idempotent producer: retries never duplicate or reorder a partition's records. It
    /// reports the broker's reachability to `health`.
    pub fn idempotent_producer(
        &self,
        health: Arc<BrokerHealth>,
    ) -> Result<ThreadedProducer<DeliveryContext>, KafkaError> {
        Ok(self.producer_config().create_with_context(DeliveryContext::new(health))?)
    }

    /// The idempotent producer's settings: the defaults the user did not set, the user's, then
    /// the producer's own.
    fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        for (names, value) in PRODUCER_DEFAULTS {
            if !names.iter().any(|name| self.extra.contains_key(*name)) {
                config.set(names[0], value);
            }
        }
        config
            .set("statistics.interval.ms", STATS_INTERVAL_MS.to_string())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "60000");
        config
    }

    /// A consumer that is assigned partitions by hand. The group id only carries committed
    /// offsets for lag monitoring; the services' own positions live in their stores.
    pub fn assigning_consumer(&self, group_id: &str) -> Result<BaseConsumer, KafkaError> {
        Ok(self.assigning_config(group_id).create()?)
    }

    /// The settings of [`KafkaOptions::assigning_consumer`], to add to before creating it.
    pub fn assigning_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10");
        config
    }

    /// Creates the topics that are missing; existing ones are left as they are.
    pub async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let options = self.clone();
        let existing = tokio::task::spawn_blocking(move || {
            options.partition_counts_with(&admin_consumer(&options)?, None)
        })
        .await??;
        let missing: Vec<&TopicSpec> = specs.iter().filter(|s| !existing.contains_key(&s.name)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let retentions: Vec<Option<String>> =
            missing.iter().map(|spec| spec.retention_ms.map(|ms| ms.to_string())).collect();
        let new_topics: Vec<NewTopic<'_>> =
            missing.iter().zip(&retentions).map(|(spec, ms)| new_topic(spec, ms.as_deref())).collect();
        let results = admin.create_topics(&new_topics, &AdminOptions::new()).await?;
        for result in results {
            match result {
                Ok(topic) => tracing::info!(topic, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(KafkaError::CreateTopic { topic, code }),
            }
        }
        Ok(())
    }

    /// Refuses to go on when `topic`'s settings would drop events (see
    /// [`crate::topics::event_log_problem`]): the events topic is the system of record.
    pub async fn check_event_log(&self, topic: &str, wanted_retention_ms: i64) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let options = AdminOptions::new().request_timeout(Some(METADATA_TIMEOUT));
        let results = admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options).await?;
        let described =
            results.into_iter().next().ok_or_else(|| KafkaError::MissingTopic(topic.to_string()))?;
        let resource =
            described.map_err(|code| KafkaError::DescribeTopic { topic: topic.to_string(), code })?;
        let value = |name: &str| resource.get(name).and_then(|entry| entry.value.clone());
        let (cleanup, retention) = (value("cleanup.policy"), value("retention.ms"));
        match event_log_problem(topic, cleanup.as_deref(), retention.as_deref(), wanted_retention_ms) {
            Some(problem) => Err(KafkaError::EventLogAtRisk(problem)),
            None => Ok(()),
        }
    }

    /// [`KafkaOptions::partition_counts`] on a blocking thread: a metadata request waits on
    /// the network (up to 10 s while the broker is away), which an async task must not.
    pub async fn fetch_partition_counts(&self, topics: &[&str]) -> Result<HashMap<String, i32>, KafkaError> {
        let options = self.clone();
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            options.partition_counts(&topics)
        })
        .await?
    }

    /// The partition count of each of `topics`.
    pub fn partition_counts(&self, topics: &[&str]) -> Result<HashMap<String, i32>, KafkaError> {
        let consumer = admin_consumer(self)?;
        let counts = self.partition_counts_with(&consumer, None)?;
        topics
            .iter()
            .map(|t| {
                counts
                    .get(*t)
                    .map(|n| (t.to_string(), *n))
                    .ok_or_else(|| KafkaError::MissingTopic(t.to_string()))
            })
            .collect()
    }

    fn partition_counts_with(
        &self,
        consumer: &BaseConsumer,
        topic: Option<&str>,
    ) -> Result<HashMap<String, i32>, KafkaError> {
        let metadata = consumer.fetch_metadata(topic, METADATA_TIMEOUT)?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect())
    }
}

fn admin_consumer(options: &KafkaOptions) -> Result<BaseConsumer, KafkaError> {
    Ok(options.client_config().create()?)
}

fn new_topic<'a>(spec: &'a TopicSpec, retention_ms: Option<&'a str>) -> NewTopic<'a> {
    let topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(1))
        .set("cleanup.policy", spec.cleanup.policy());
    match retention_ms {
        Some(ms) => topic.set("retention.ms", ms),
        None => topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(extra: &[(&str, &str)]) -> KafkaOptions {
        let extra = extra.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
        KafkaOptions { extra, ..KafkaOptions::default() }
    }

    #[test]
    fn the_producer_compresses_with_lz4_unless_told_otherwise() {
        assert_eq!(with(&[]).producer_config().get("compression.type"), Some("lz4"));
        let snappy = with(&[("compression.type", "snappy")]).producer_config();
        assert_eq!(snappy.get("compression.type"), Some("snappy"), "the user's choice wins");
        let codec = with(&[("compression.codec", "none")]).producer_config();
        assert_eq!(codec.get("compression.type"), None, "nor is the other name overridden");
        assert_eq!(codec.get("compression.codec"), Some("none"));
    }

    #[test]
    fn the_producer_lingers_2_ms_unless_told_otherwise() {
        assert_eq!(with(&[]).producer_config().get("linger.ms"), Some("2"));
        assert_eq!(with(&[("linger.ms", "50")]).producer_config().get("linger.ms"), Some("50"));
        let alias = with(&[("queue.buffering.max.ms", "10")]).producer_config();
        assert_eq!(alias.get("linger.ms"), None, "nor is the other name overridden");
    }

    #[test]
    fn the_producer_keeps_its_guarantees_whatever_the_user_sets() {
        let config = with(&[("acks", "1"), ("enable.idempotence", "false")]).producer_config();
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
    }
}

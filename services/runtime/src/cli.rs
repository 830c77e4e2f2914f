//! Command-line arguments every service binary shares.

use crate::health::parse_duration;
use crate::topics::KEPT_RETENTION_MS;
use crate::{KafkaClientArgs, KafkaConfigError, KafkaOptions, TopicOptions, Topics};

/// Where the brokers are and which topic prefix to use.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// The brokers and the client settings (TLS, SASL...).
    #[command(flatten)]
    pub client: KafkaClientArgs,
    /// Prefix of every topic name.
    #[arg(long, env = "OMNIFOLD_TOPIC_PREFIX", default_value = "omnifold.")]
    pub topic_prefix: String,
    /// retention.ms of the event log when a service creates it, and the least it must keep
    /// (-1 = infinite, for apache kafka; the 100-year default works around nisshi, see
    /// ARCHITECTURE.md "The broker").
    #[arg(long, env = "OMNIFOLD_LOG_RETENTION_MS", default_value_t = KEPT_RETENTION_MS, allow_negative_numbers = true)]
    pub log_retention_ms: i64,
    /// Exit when the broker has been unreachable this long (90s, 5m, 2h); by default a
    /// service waits for the broker forever.
    #[arg(long, env = "OMNIFOLD_BROKER_OUTAGE_MAX", value_parser = parse_duration)]
    pub broker_outage_max: Option<std::time::Duration>,
}

impl KafkaArgs {
    /// The client options: brokers, `--kafka-config` file, `OMNIFOLD_KAFKA_*` variables and
    /// `--kafka-set` flags (see [`crate::kafka_config`]).
    pub fn kafka(&self) -> Result<KafkaOptions, KafkaConfigError> {
        self.client.options()
    }

    /// The topic options these arguments set; partition counts stay at their defaults.
    pub fn topic_options(&self) -> TopicOptions {
        TopicOptions {
            prefix: self.topic_prefix.clone(),
            log_retention_ms: self.log_retention_ms,
            ..TopicOptions::default()
        }
    }

    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix)
    }
}

//! Command-line arguments every service binary shares.

use crate::{KafkaOptions, Topics};

/// Where the brokers are and which topic prefix to use.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "OMNIFOLD_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Prefix of every topic name.
    #[arg(long, env = "OMNIFOLD_TOPIC_PREFIX", default_value = "omnifold.")]
    pub topic_prefix: String,
}

impl KafkaArgs {
    pub fn kafka(&self) -> KafkaOptions {
        KafkaOptions { bootstrap_servers: self.bootstrap.clone(), ..KafkaOptions::default() }
    }

    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix)
    }
}

//! The contract's topics (CONTRACT.md section 1): names under a configurable prefix, their
//! partition counts and cleanup policies.

use serde::{Deserialize, Serialize};

/// How many partitions each topic is created with when missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicOptions {
    /// Prefix of every topic name.
    pub prefix: String,
    pub events_partitions: i32,
    pub alerts_partitions: i32,
    pub availability_partitions: i32,
    pub escalations_partitions: i32,
    pub snapshots_partitions: i32,
    pub deadletter_partitions: i32,
}

impl Default for TopicOptions {
    fn default() -> Self {
        TopicOptions {
            prefix: "omnifold.".to_string(),
            events_partitions: 6,
            alerts_partitions: 3,
            availability_partitions: 6,
            escalations_partitions: 1,
            snapshots_partitions: 3,
            deadletter_partitions: 1,
        }
    }
}

/// Whether a topic deletes old records or keeps the latest per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    Delete,
    Compact,
}

impl Cleanup {
    pub fn policy(self) -> &'static str {
        match self {
            Cleanup::Delete => "delete",
            Cleanup::Compact => "compact",
        }
    }
}

/// A topic to create if missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub cleanup: Cleanup,
}

/// The names of the contract's topics under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub events: String,
    pub alerts: String,
    pub availability: String,
    pub escalations: String,
    pub snapshots: String,
    pub snapshots_json: String,
    pub deadletter: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        let name = |suffix: &str| format!("{prefix}{suffix}");
        Topics {
            events: name("events.v1"),
            alerts: name("alerts.v1"),
            availability: name("availability.v1"),
            escalations: name("escalations.v1"),
            snapshots: name("snapshots.v1"),
            snapshots_json: name("snapshots.json.v1"),
            deadletter: name("deadletter.v1"),
        }
    }

    /// Every topic of the contract with its partitions and cleanup policy.
    pub fn specs(&self, options: &TopicOptions) -> Vec<TopicSpec> {
        let spec = |name: &String, partitions: i32, cleanup: Cleanup| TopicSpec {
            name: name.clone(),
            partitions,
            cleanup,
        };
        vec![
            spec(&self.events, options.events_partitions, Cleanup::Delete),
            spec(&self.alerts, options.alerts_partitions, Cleanup::Delete),
            spec(&self.availability, options.availability_partitions, Cleanup::Compact),
            spec(&self.escalations, options.escalations_partitions, Cleanup::Delete),
            spec(&self.snapshots, options.snapshots_partitions, Cleanup::Compact),
            spec(&self.snapshots_json, options.snapshots_partitions, Cleanup::Compact),
            spec(&self.deadletter, options.deadletter_partitions, Cleanup::Delete),
        ]
    }
}

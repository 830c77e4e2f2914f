//! The contract's topics (CONTRACT.md section 1): names under a configurable prefix, their
//! partition counts and cleanup policies.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A topic's name as records carry it: shared, so an output record names its topic without a
/// copy of the name.
pub type TopicName = Arc<str>;

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
    /// `retention.ms` of the topics kept for good: the event log (and the reporter's
    /// partials). `-1` (infinite) is right on Apache Kafka; the default is a finite 100 years
    /// because nisshi 0.7 deletes every record of a `cleanup.policy=delete` topic with
    /// `retention.ms=-1` at each maintenance sweep (ARCHITECTURE.md, "The broker").
    pub log_retention_ms: i64,
}

/// The default [`TopicOptions::log_retention_ms`]: 100 years, infinite in practice.
pub const KEPT_RETENTION_MS: i64 = 100 * 365 * 24 * 3_600_000;

/// The shortest finite retention that still counts as keeping the event log: 10 years.
pub const MIN_LOG_RETENTION_MS: i64 = 10 * 365 * 24 * 3_600_000;

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
            log_retention_ms: KEPT_RETENTION_MS,
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
    /// `retention.ms` to create it with; `None` leaves the broker's default.
    pub retention_ms: Option<i64>,
}

/// The names of the contract's topics under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub events: TopicName,
    pub alerts: TopicName,
    pub availability: TopicName,
    pub escalations: TopicName,
    pub snapshots: TopicName,
    pub snapshots_json: TopicName,
    pub deadletter: TopicName,
    /// The contribution ledger (`ledger.proto`) and its JSON form.
    pub ledger: TopicName,
    pub ledger_json: TopicName,
    /// Reorder and transfer suggestions and routing advice (CONTRACT.md section 10).
    pub replenishment: TopicName,
    pub routing: TopicName,
    /// The coordinator's changelog: its store's writes per events partition, to restore a
    /// moved partition from (ARCHITECTURE.md, "Several coordinators").
    pub changelog: TopicName,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        let name = |suffix: &str| TopicName::from(format!("{prefix}{suffix}"));
        Topics {
            events: name("events.v1"),
            alerts: name("alerts.v1"),
            availability: name("availability.v1"),
            escalations: name("escalations.v1"),
            snapshots: name("snapshots.v1"),
            snapshots_json: name("snapshots.json.v1"),
            deadletter: name("deadletter.v1"),
            ledger: name("ledger.v1"),
            ledger_json: name("ledger.json.v1"),
            replenishment: name("replenishment.v1"),
            routing: name("routing.v1"),
            changelog: name("internal.coordinator-changelog.v1"),
        }
    }

    /// Every topic of the contract with its partitions and cleanup policy.
    pub fn specs(&self, options: &TopicOptions) -> Vec<TopicSpec> {
        let spec = |name: &TopicName, partitions: i32, cleanup: Cleanup| TopicSpec {
            name: name.to_string(),
            partitions,
            cleanup,
            retention_ms: None,
        };
        let kept = |name: &TopicName, partitions: i32| TopicSpec {
            retention_ms: Some(options.log_retention_ms),
            ..spec(name, partitions, Cleanup::Delete)
        };
        let event_log = kept(&self.events, options.events_partitions);
        vec![
            event_log,
            spec(&self.alerts, options.alerts_partitions, Cleanup::Delete),
            spec(&self.availability, options.availability_partitions, Cleanup::Compact),
            spec(&self.escalations, options.escalations_partitions, Cleanup::Delete),
            spec(&self.snapshots, options.snapshots_partitions, Cleanup::Compact),
            spec(&self.snapshots_json, options.snapshots_partitions, Cleanup::Compact),
            spec(&self.deadletter, options.deadletter_partitions, Cleanup::Delete),
            // as many partitions as the event log and the same keys, so ledger partition p
            // holds what events partition p was worth
            kept(&self.ledger, options.events_partitions),
            kept(&self.ledger_json, options.events_partitions),
            // keyed like availability, compacted like it: as many partitions
            spec(&self.replenishment, options.availability_partitions, Cleanup::Compact),
            spec(&self.routing, options.availability_partitions, Cleanup::Compact),
            // partition p holds the state of events partition p; only each key's latest
            // record is ever read
            spec(&self.changelog, options.events_partitions, Cleanup::Compact),
        ]
    }
}

/// Why a topic's settings would drop events from the event log, or `None` when they keep it.
/// `wanted` is the configured [`TopicOptions::log_retention_ms`]: `-1` says the operator runs
/// a broker that honours infinite retention.
pub fn event_log_problem(
    topic: &str,
    cleanup: Option<&str>,
    retention_ms: Option<&str>,
    wanted: i64,
) -> Option<String> {
    if cleanup.is_some_and(|policy| policy.contains("compact")) {
        return Some(format!(
            "topic {topic} has cleanup.policy={}, which drops events: the event log needs cleanup.policy=delete",
            cleanup.unwrap_or_default()
        ));
    }
    let Some(retention) = retention_ms else {
        return Some(format!(
            "topic {topic} has no retention.ms, so the broker's default retention (7 days on kafka) would drop events"
        ));
    };
    match retention.trim().parse::<i64>() {
        Err(_) => Some(format!("topic {topic} has retention.ms={retention}, which is not a number")),
        Ok(-1) if wanted != -1 => Some(format!(
            "topic {topic} has retention.ms=-1, which nisshi 0.7 honours by deleting every record at its next maintenance sweep: \
             set topics.log_retention_ms = -1 if the broker is apache kafka, or alter the topic to retention.ms={KEPT_RETENTION_MS}"
        )),
        Ok(-1) => None,
        Ok(ms) if ms < MIN_LOG_RETENTION_MS => Some(format!(
            "topic {topic} keeps events for {} days only (retention.ms={ms}): the event log needs at least {} days, or -1 on apache kafka",
            ms / 86_400_000,
            MIN_LOG_RETENTION_MS / 86_400_000
        )),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(cleanup: Option<&str>, retention: Option<&str>, wanted: i64) -> Option<String> {
        event_log_problem("e", cleanup, retention, wanted)
    }

    #[test]
    fn the_default_retention_keeps_the_log() {
        let default = KEPT_RETENTION_MS.to_string();
        assert_eq!(problem(Some("delete"), Some(&default), KEPT_RETENTION_MS), None);
    }

    #[test]
    fn infinite_retention_is_accepted_only_when_configured() {
        assert_eq!(problem(Some("delete"), Some("-1"), -1), None);
        assert!(problem(Some("delete"), Some("-1"), KEPT_RETENTION_MS).unwrap().contains("nisshi"));
    }

    #[test]
    fn compaction_short_and_missing_retention_are_refused() {
        assert!(problem(Some("compact"), Some("-1"), -1).unwrap().contains("cleanup.policy=compact"));
        assert!(problem(Some("delete"), Some("604800000"), -1).unwrap().contains("7 days only"));
        assert!(problem(Some("delete"), None, -1).unwrap().contains("no retention.ms"));
    }
}

//! Whether the broker is reachable, as a service's Kafka clients see it.
//!
//! A broker outage is a state, not an error: the clients keep reconnecting by themselves
//! (librdkafka does), the loops keep their state and wait, and [`BrokerHealth`] logs once
//! when the broker goes away and once when it is back, and shows it in the gauge
//! `omnifold_broker_connected`. Only an outage longer than the configured
//! `broker_outage_max` (default: none, wait forever) ends the service.
//!
//! [`HealthContext`] is the client context that feeds it: librdkafka's transport errors and
//! statistics (a broker in state `UP`) become [`BrokerHealth::unreachable`] and
//! [`BrokerHealth::reachable`], and its per-retry connection logs go to `debug`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::Statistics;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError as ClientError;
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka::KafkaError;

/// How often clients report statistics, from which the broker's state is read.
pub const STATS_INTERVAL_MS: u64 = 1_000;

/// The first and the longest pause between two attempts while the broker is away.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("the broker has been unreachable for {}s, longer than broker_outage_max ({}s): {reason}", .down.as_secs(), .max.as_secs())]
pub struct OutageError {
    pub down: Duration,
    pub max: Duration,
    pub reason: String,
}

/// The broker's reachability as one service sees it, shared by all its clients.
#[derive(Debug)]
pub struct BrokerHealth {
    outage_max: Option<Duration>,
    connected: AtomicBool,
    down: Mutex<Option<Outage>>,
}

#[derive(Debug, Clone)]
struct Outage {
    since: Instant,
    reason: String,
}

impl BrokerHealth {
    /// `outage_max`: how long an outage may last before [`BrokerHealth::check`] fails.
    pub fn new(outage_max: Option<Duration>) -> Arc<Self> {
        metrics::gauge!("omnifold_broker_connected").set(1.0);
        Arc::new(BrokerHealth { outage_max, connected: AtomicBool::new(true), down: Mutex::new(None) })
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The broker answered: ends an outage, if there was one.
    pub fn reachable(&self) {
        if self.is_connected() {
            return;
        }
        let mut down = self.down.lock().expect("health lock");
        if let Some(outage) = down.take() {
            self.connected.store(true, Ordering::Relaxed);
            metrics::gauge!("omnifold_broker_connected").set(1.0);
            let outage_ms = outage.since.elapsed().as_millis() as u64;
            tracing::info!(outage_ms, "broker reachable again, resuming");
        }
    }

    /// The broker cannot be reached: starts an outage, if none is under way.
    pub fn unreachable(&self, reason: &str) {
        if !self.is_connected() {
            return;
        }
        let mut down = self.down.lock().expect("health lock");
        if down.is_none() {
            *down = Some(Outage { since: Instant::now(), reason: reason.to_string() });
            self.connected.store(false, Ordering::Relaxed);
            metrics::gauge!("omnifold_broker_connected").set(0.0);
            tracing::warn!(reason, "broker unreachable, waiting for it");
        }
    }

    /// Fails once an outage has lasted longer than `broker_outage_max`.
    pub fn check(&self) -> Result<(), OutageError> {
        let (Some(max), Some(outage)) = (self.outage_max, self.down.lock().expect("health lock").clone())
        else {
            return Ok(());
        };
        let down = outage.since.elapsed();
        if down > max {
            return Err(OutageError { down, max, reason: outage.reason });
        }
        Ok(())
    }
}

/// Pauses that double from 100 ms to 5 s between attempts while the broker is away.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_BACKOFF }
    }
}

impl Backoff {
    /// The pause before the next attempt.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        pause
    }

    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }
}

/// Runs `attempt` until it succeeds, waiting out broker outages with backoff; any other error
/// ends it, and so does an outage longer than `broker_outage_max`.
pub async fn until_reachable<T, F, Fut>(health: &BrokerHealth, mut attempt: F) -> Result<T, KafkaError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, KafkaError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match attempt().await {
            Ok(value) => {
                health.reachable();
                return Ok(value);
            }
            Err(error) if error.is_outage() => {
                health.unreachable(&error.to_string());
                health.check()?;
                tokio::time::sleep(backoff.next_pause()).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Whether a client error means the broker cannot be reached (rather than refusing a request).
pub fn is_outage(error: &ClientError) -> bool {
    error.rdkafka_error_code().is_some_and(is_outage_code)
}

pub(crate) fn is_outage_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | AllBrokersDown
            | Resolve
            | OperationTimedOut
            | MessageTimedOut
            | RequestTimedOut
            | NetworkException
            | BrokerNotAvailable
            | LeaderNotAvailable
            | NotLeaderForPartition
            | NotCoordinator
            | CoordinatorNotAvailable
            | TimedOutQueue
            | PurgeInflight
            | PurgeQueue
    )
}

/// The client context of every service client: feeds [`BrokerHealth`] and keeps
/// reconnection noise at `debug`.
#[derive(Clone)]
pub struct HealthContext {
    pub health: Arc<BrokerHealth>,
}

impl HealthContext {
    pub fn new(health: Arc<BrokerHealth>) -> Self {
        HealthContext { health }
    }

    /// What [`ClientContext::error`] does, for contexts that wrap this one.
    pub fn on_error(&self, error: &ClientError, reason: &str) {
        // the end of a partition is progress, reported as an error when a reader asks for it
        let end_of_partition = matches!(
            error,
            ClientError::PartitionEOF(_) | ClientError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if end_of_partition {
            return;
        }
        if is_outage(error) {
            self.health.unreachable(reason);
        } else {
            tracing::error!(%error, reason, "kafka client error");
        }
    }

    /// What [`ClientContext::stats`] does, for contexts that wrap this one.
    pub fn on_stats(&self, statistics: &Statistics) {
        let up = statistics.brokers.values().any(|broker| broker.state == "UP");
        if up {
            self.health.reachable();
        } else if !statistics.brokers.is_empty() {
            self.health.unreachable("no broker connection is up");
        }
    }

    /// What [`ClientContext::log`] does: librdkafka logs every failed reconnection, which an
    /// outage turns into a line per retry; [`BrokerHealth`] says it once instead.
    pub fn on_log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical
                if !is_connection_noise(facility, message) =>
            {
                tracing::error!(facility, message, "librdkafka")
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning if !is_connection_noise(facility, message) => {
                tracing::warn!(facility, message, "librdkafka")
            }
            _ => tracing::debug!(facility, message, "librdkafka"),
        }
    }
}

fn is_connection_noise(facility: &str, message: &str) -> bool {
    matches!(facility, "FAIL" | "ERROR" | "BROKERFAIL" | "CONNECT" | "REQTMOUT" | "COMMITFAIL")
        || message.contains("Connection refused")
        || message.contains("Disconnected")
}

impl ClientContext for HealthContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = false;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.on_log(level, fac, log_message);
    }

    fn stats(&self, statistics: Statistics) {
        self.on_stats(&statistics);
    }

    fn error(&self, error: ClientError, reason: &str) {
        self.on_error(&error, reason);
    }
}

impl ConsumerContext for HealthContext {}

/// `broker_outage_max` in options files: whole seconds, or absent for no limit.
pub mod optional_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_some(&duration.as_secs()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_secs))
    }
}

/// A duration on the command line: `90`, `90s`, `5m` or `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 90s, 5m or 2h"))?;
    let seconds = match unit {
        "" | "s" => number,
        "m" => number * 60,
        "h" => number * 3_600,
        _ => return Err(format!("{text:?} has an unknown unit {unit:?}: use s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7_200));
        assert!(parse_duration("5 days").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
    }

    use super::*;

    #[test]
    fn an_outage_is_a_state_change_not_an_error_per_retry() {
        let health = BrokerHealth::new(None);
        assert!(health.is_connected());
        health.unreachable("connection refused");
        health.unreachable("connection refused");
        assert!(!health.is_connected());
        assert!(health.check().is_ok(), "no outage limit: wait forever");
        health.reachable();
        assert!(health.is_connected());
    }

    #[test]
    fn an_outage_longer_than_the_limit_fails_the_check() {
        let health = BrokerHealth::new(Some(Duration::ZERO));
        health.unreachable("connection refused");
        std::thread::sleep(Duration::from_millis(2));
        let error = health.check().expect_err("past the limit");
        assert!(error.to_string().contains("connection refused"), "{error}");
        health.reachable();
        assert!(health.check().is_ok());
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let mut backoff = Backoff::default();
        let pauses: Vec<u128> = (0..8).map(|_| backoff.next_pause().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
    }
}

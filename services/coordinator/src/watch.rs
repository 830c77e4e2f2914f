//! `watch`: prints availability changes, alerts and escalations as readable lines as they
//! arrive, for people watching a run.

use std::time::Duration;

use omnifold_proto::{
    Alert, AlertKind, AlertState, AllocationMode, AllocationRule, ChannelAvailability, Escalation,
    EscalationRule, Severity,
};
use omnifold_runtime::{KafkaOptions, Topics};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// What to print.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub kafka: KafkaOptions,
    pub topics: Topics,
    /// Print availability changes too (there are many).
    pub availability: bool,
    /// Stop after this long without a new record; `None` watches forever.
    pub idle_exit: Option<Duration>,
}

/// Reads the output topics from their beginning and prints each record as one line.
pub fn watch(options: &WatchOptions, mut print: impl FnMut(&str)) -> anyhow::Result<usize> {
    let consumer: BaseConsumer = options
        .kafka
        .client_config()
        .set("group.id", "omnifold-watch")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut wanted = vec![&options.topics.alerts, &options.topics.escalations, &options.topics.deadletter];
    if options.availability {
        wanted.push(&options.topics.availability);
    }
    let mut assignment = TopicPartitionList::new();
    for topic in wanted {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let mut printed = 0;
    let mut idle = Duration::ZERO;
    let step = Duration::from_millis(200);
    loop {
        match consumer.poll(step) {
            Some(message) => {
                let message = message?;
                idle = Duration::ZERO;
                let value = message.payload().unwrap_or_default();
                if let Some(line) = describe(&options.topics, message.topic(), value, &message) {
                    print(&line);
                    printed += 1;
                }
            }
            None => {
                idle += step;
                if options.idle_exit.is_some_and(|limit| idle >= limit) {
                    return Ok(printed);
                }
            }
        }
    }
}

fn describe(topics: &Topics, topic: &str, value: &[u8], message: &impl Message) -> Option<String> {
    if topic == topics.alerts {
        Alert::decode(value).ok().map(|a| describe_alert(&a))
    } else if topic == topics.availability {
        ChannelAvailability::decode(value).ok().map(|a| describe_availability(&a))
    } else if topic == topics.escalations {
        Escalation::decode(value).ok().map(|e| describe_escalation(&e))
    } else if topic == topics.deadletter {
        Some(describe_dead_letter(message))
    } else {
        None
    }
}

/// `2026-11-10 14:05` for an event time in Unix milliseconds (UTC).
pub fn event_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let (hour, minute) = (secs.rem_euclid(86_400) / 3600, secs.rem_euclid(3600) / 60);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {hour:02}:{minute:02}")
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian, UTC).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn describe_alert(a: &Alert) -> String {
    let kind = AlertKind::try_from(a.kind).unwrap_or_default().name();
    let state = AlertState::try_from(a.state).unwrap_or_default().name();
    let severity = Severity::try_from(a.severity).unwrap_or_default().name();
    let details: Vec<String> = a.details.iter().map(|d| format!("{}={}", d.key, d.value)).collect();
    let mut line = format!(
        "{}  ALERT {state:<8} {severity:<8} {kind:<20} {:<10} {} [{}] accountable: {} ({})",
        event_time(a.occurred_at_ms),
        a.sku,
        a.summary,
        a.channels.join(","),
        a.accountable,
        a.owner
    );
    if !details.is_empty() {
        line.push_str(&format!(" ({})", details.join(" ")));
    }
    line
}

fn describe_availability(a: &ChannelAvailability) -> String {
    let mode = AllocationMode::try_from(a.mode).unwrap_or_default().name();
    let rule = AllocationRule::try_from(a.rule).unwrap_or_default().name();
    format!(
        "{}  AVAIL {:<10} {:<10} {:>5}  {mode}/{rule} (after {})",
        event_time(a.decided_at_ms),
        a.channel,
        a.sku,
        a.available,
        a.reason_event_id
    )
}

fn describe_escalation(e: &Escalation) -> String {
    let rule = EscalationRule::try_from(e.rule).unwrap_or_default().name();
    format!(
        "{}  PAGE  {rule:<14} -> {} ({}, on-call {}): {}",
        event_time(e.occurred_at_ms),
        e.channel,
        e.owner,
        e.on_call,
        e.summary
    )
}

fn describe_dead_letter(message: &impl Message) -> String {
    use rdkafka::message::Headers;
    let reason = message
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == omnifold_runtime::deadletter::ERROR_HEADER))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    format!("                  DEAD-LETTER {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_event_times_in_utc() {
        assert_eq!(event_time(0), "1970-01-01 00:00");
        assert_eq!(event_time(1_794_182_460_000), "2026-11-09 00:01");
        assert_eq!(event_time(951_782_400_000), "2000-02-29 00:00");
    }
}

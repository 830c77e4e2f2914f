//! `watch`: prints availability changes, alerts, escalations, replenishment suggestions and
//! routing advice as readable lines as they arrive, for people watching a run.

use std::time::Duration;

use omnifold_proto::{
    Alert, AlertKind, AlertState, AllocationMode, AllocationRule, ChannelAvailability, Escalation,
    EscalationRule, Replenishment, ReplenishmentAction, RoutingDecision, RoutingState, Severity,
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
    /// Print replenishment suggestions and routing advice too.
    pub advice: bool,
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
    let topics = &options.topics;
    let mut wanted = vec![&topics.alerts, &topics.escalations, &topics.deadletter];
    if options.availability {
        wanted.push(&topics.availability);
    }
    if options.advice {
        wanted.extend([&topics.replenishment, &topics.routing]);
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
    if topic == &*topics.alerts {
        Alert::decode(value).ok().map(|a| describe_alert(&a))
    } else if topic == &*topics.availability {
        ChannelAvailability::decode(value).ok().map(|a| describe_availability(&a))
    } else if topic == &*topics.escalations {
        Escalation::decode(value).ok().map(|e| describe_escalation(&e))
    } else if topic == &*topics.replenishment {
        Replenishment::decode(value).ok().map(|r| describe_replenishment(&r))
    } else if topic == &*topics.routing {
        RoutingDecision::decode(value).ok().map(|r| describe_routing(&r))
    } else if topic == &*topics.deadletter {
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
    let (y, m, d) = omnifold_domain::calendar::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {hour:02}:{minute:02}")
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

fn describe_replenishment(r: &Replenishment) -> String {
    let at = event_time(r.decided_at_ms);
    let (sku, pool) = (&r.sku, &r.pool);
    let cover =
        if r.cover_days.is_empty() { "no demand".to_string() } else { format!("{} days", r.cover_days) };
    let numbers = format!("atp {}, {} placed in 28 d, cover {cover}", r.atp, r.units_placed_28d);
    match ReplenishmentAction::try_from(r.action).unwrap_or_default() {
        ReplenishmentAction::Reorder => {
            format!("{at}  REORDER  {sku:<10} {pool}: order {} into {} ({numbers})", r.units, r.location)
        }
        ReplenishmentAction::Transfer => format!(
            "{at}  TRANSFER {sku:<10} {pool}: move {} from {} to {} ({numbers})",
            r.units, r.from_location, r.location
        ),
        _ => format!("{at}  REPLENISHED {sku:<10} {pool}: nothing to order or move now ({numbers})"),
    }
}

fn describe_routing(r: &RoutingDecision) -> String {
    let at = event_time(r.decided_at_ms);
    let line = format!("{}/{}/{}", r.channel, r.order_id, r.line_id);
    match RoutingState::try_from(r.state).unwrap_or_default() {
        RoutingState::ShippedElsewhere => format!(
            "{at}  ROUTE    {:<10} {line}: shipped from {} instead of {}",
            r.sku, r.shipped_from, r.location
        ),
        _ => {
            let split = if r.split { ", split: no location covers it whole" } else { "" };
            format!("{at}  ROUTE    {:<10} {line}: ship {} from {}{split}", r.sku, r.quantity, r.location)
        }
    }
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

    #[test]
    fn suggestions_and_routing_read_as_one_line_each() {
        let reorder = Replenishment {
            sku: "sku-1".into(),
            pool: "shared".into(),
            action: ReplenishmentAction::Reorder as i32,
            units: 48,
            location: "wh-nj".into(),
            atp: 3,
            units_placed_28d: 56,
            cover_days: "1.5".into(),
            decided_at_ms: 0,
            ..Replenishment::default()
        };
        assert_eq!(
            describe_replenishment(&reorder),
            "1970-01-01 00:00  REORDER  sku-1      shared: order 48 into wh-nj (atp 3, 56 placed in 28 d, cover 1.5 days)"
        );
        let cleared =
            Replenishment { action: ReplenishmentAction::None as i32, cover_days: String::new(), ..reorder };
        assert!(describe_replenishment(&cleared).contains("nothing to order or move now"));
        assert!(describe_replenishment(&cleared).contains("cover no demand"));
        let advised = RoutingDecision {
            channel: "shopify".into(),
            order_id: "o1".into(),
            line_id: "1".into(),
            sku: "sku-1".into(),
            quantity: 2,
            location: "wh-ca".into(),
            state: RoutingState::Advised as i32,
            ..RoutingDecision::default()
        };
        assert_eq!(
            describe_routing(&advised),
            "1970-01-01 00:00  ROUTE    sku-1      shopify/o1/1: ship 2 from wh-ca"
        );
        let elsewhere = RoutingDecision {
            state: RoutingState::ShippedElsewhere as i32,
            shipped_from: "wh-nj".into(),
            ..advised
        };
        assert!(describe_routing(&elsewhere).ends_with("shipped from wh-nj instead of wh-ca"));
    }
}

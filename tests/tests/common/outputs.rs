//! What an uninterrupted single coordinator publishes for a feed (the pure fold per input
//! partition), and the check that what the topics hold equals it with no record twice.

use std::collections::{BTreeMap, BTreeSet};

use omnifold_domain::{Fold, Outcome, Output, PartitionState};
use omnifold_proto::{AlertState, Event, LedgerEntry, LedgerKind};
use omnifold_runtime::load_contract;
use omnifold_runtime::origin::ORIGIN_HEADER;
use omnifold_runtime::partitioner::partition_for;
use omnifold_testkit::{Broker, Record};
use prost::Message as _;

use super::{
    EVENTS_PARTITIONS, alerts, availability, contract_path, escalations, final_availability, header,
};
use super::{read_to_end, topics};

/// The outputs of one uninterrupted run, by identity.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub availability: BTreeMap<(String, String), i64>,
    pub alerts: BTreeSet<(String, String)>,
    pub escalations: BTreeSet<String>,
    pub ledger: BTreeSet<String>,
    /// Replenishment and routing records by (key, reason event): one each at most.
    pub replenishment: BTreeSet<(String, String)>,
    pub routing: BTreeSet<(String, String)>,
    pub dead_letters: usize,
}

/// The benchmark mix over `skus` SKUs, with a duplicate and an event of an unknown channel
/// inserted every `every` events: they go through crashes and moves too.
pub fn feed_with_breaks(skus: usize, events: usize, every: usize) -> Vec<Event> {
    let rules = load_contract(&contract_path()).expect("contract");
    let mut feed =
        omnifold_workload::generate(&rules, &omnifold_workload::WorkloadOptions::bench(skus, events));
    for i in (every / 4..feed.len()).step_by(every).rev() {
        let duplicate = feed[i - every / 5].clone();
        let mut unknown_channel = feed[i].clone();
        unknown_channel.event_id = format!("bad-{i}");
        unknown_channel.channel = "ebay".to_string();
        feed.insert(i, duplicate);
        feed.insert(i, unknown_channel);
    }
    feed
}

/// The pure fold over `events`, each in the partition its key goes to.
pub fn expected(events: &[Event]) -> Expected {
    expected_over(events, EVENTS_PARTITIONS)
}

/// [`expected`] for an events topic of `partition_count` partitions.
pub fn expected_over(events: &[Event], partition_count: i32) -> Expected {
    let fold = Fold::new(load_contract(&contract_path()).expect("contract"));
    let mut partitions: BTreeMap<i32, PartitionState> = BTreeMap::new();
    let mut expected = Expected::default();
    for event in events {
        let partition = partition_for(event.partition_key().as_bytes(), partition_count);
        match fold.apply(partitions.entry(partition).or_default(), event) {
            Outcome::Applied { outputs, .. } => outputs.into_iter().for_each(|o| expected.record(o)),
            Outcome::Rejected(_) => expected.dead_letters += 1,
            Outcome::Duplicate => {}
        }
    }
    expected
}

impl Expected {
    fn record(&mut self, output: Output) {
        match output {
            Output::Availability(a) => {
                self.availability.insert((a.channel.into(), a.sku.into()), a.available);
            }
            Output::Alert(a) => {
                let state = AlertState::try_from(a.state).unwrap().name().to_string();
                assert!(self.alerts.insert((a.alert_id, state)), "the fold itself repeats an alert record");
            }
            Output::Escalation(e) => {
                self.escalations.insert(e.escalation_id);
            }
            Output::Ledger(e) => {
                assert!(self.ledger.insert(e.entry_id.to_string()), "the fold itself repeats a ledger entry");
            }
            Output::Replenishment(r) => {
                let id = (format!("{}/{}", r.pool, r.sku), r.reason_event_id.into());
                assert!(self.replenishment.insert(id), "the fold itself repeats a replenishment record");
            }
            Output::Routing(r) => {
                let id = (format!("{}/{}/{}", r.channel, r.order_id, r.line_id), r.reason_event_id.into());
                assert!(self.routing.insert(id), "the fold itself repeats a routing record");
            }
        }
    }
}

/// What the topics hold, by the same identities, or the first record published twice.
pub async fn published(broker: &Broker) -> Result<Expected, String> {
    let topics = topics();
    let mut got = Expected::default();
    let availability_records = read_to_end(broker, &topics.availability).await;
    let mut decisions = BTreeSet::new();
    for a in availability(&availability_records) {
        if !decisions.insert((a.channel.clone(), a.sku.clone(), a.reason_event_id.clone())) {
            return Err(format!("availability repeated: {a:?}"));
        }
    }
    got.availability = final_availability(&availability(&availability_records));
    for alert in alerts(&read_to_end(broker, &topics.alerts).await) {
        let state = AlertState::try_from(alert.state).unwrap().name().to_string();
        if !got.alerts.insert((alert.alert_id.clone(), state)) {
            return Err(format!("alert repeated: {}", alert.alert_id));
        }
    }
    for page in escalations(&read_to_end(broker, &topics.escalations).await) {
        if !got.escalations.insert(page.escalation_id.clone()) {
            return Err(format!("escalation repeated: {}", page.escalation_id));
        }
    }
    for record in read_to_end(broker, &topics.ledger).await {
        let entry = LedgerEntry::decode(record.value.as_deref().unwrap()).unwrap();
        if entry.kind != LedgerKind::Progress as i32 && !got.ledger.insert(entry.entry_id.clone()) {
            return Err(format!("ledger entry repeated: {}", entry.entry_id));
        }
    }
    for record in read_to_end(broker, &topics.replenishment).await {
        let r = omnifold_proto::Replenishment::decode(record.value.as_deref().unwrap()).unwrap();
        if !got.replenishment.insert((format!("{}/{}", r.pool, r.sku), r.reason_event_id.clone())) {
            return Err(format!("replenishment repeated: {r:?}"));
        }
    }
    for record in read_to_end(broker, &topics.routing).await {
        let r = omnifold_proto::RoutingDecision::decode(record.value.as_deref().unwrap()).unwrap();
        let key = format!("{}/{}/{}", r.channel, r.order_id, r.line_id);
        if !got.routing.insert((key, r.reason_event_id.clone())) {
            return Err(format!("routing repeated: {r:?}"));
        }
    }
    got.dead_letters = read_to_end(broker, &topics.deadletter).await.len();
    Ok(got)
}

/// Every record's origin, over every output topic: none may appear twice.
pub async fn repeated_origins(broker: &Broker) -> Vec<String> {
    let topics = topics();
    let mut seen = BTreeSet::new();
    let mut repeated = Vec::new();
    for topic in [
        &topics.availability,
        &topics.alerts,
        &topics.escalations,
        &topics.deadletter,
        &topics.ledger,
        &topics.ledger_json,
        &topics.replenishment,
        &topics.routing,
    ] {
        let records: Vec<Record> = read_to_end(broker, topic).await;
        for record in &records {
            if let Some(origin) = header(record, ORIGIN_HEADER) {
                let origin = format!("{topic} {}", String::from_utf8_lossy(origin));
                if !seen.insert(origin.clone()) {
                    repeated.push(origin);
                }
            }
        }
    }
    repeated
}

/// The last progress marker of every ledger partition says its events partition is folded to
/// its end, `counts` being how many events each holds.
pub async fn folded_to_the_end(broker: &Broker, counts: &BTreeMap<i32, i64>) -> bool {
    let mut last: BTreeMap<i32, LedgerEntry> = BTreeMap::new();
    for record in read_to_end(broker, &topics().ledger).await {
        let entry = LedgerEntry::decode(record.value.as_deref().unwrap()).unwrap();
        if entry.kind == LedgerKind::Progress as i32 {
            last.insert(record.partition, entry);
        }
    }
    counts.iter().all(|(partition, count)| {
        last.get(partition).is_some_and(|m| m.event_offset == count - 1 && m.events_behind == 0)
    })
}

/// How many events of `events` each partition holds.
pub fn counts(events: &[Event]) -> BTreeMap<i32, i64> {
    counts_over(events, EVENTS_PARTITIONS)
}

/// [`counts`] for an events topic of `partition_count` partitions.
pub fn counts_over(events: &[Event], partition_count: i32) -> BTreeMap<i32, i64> {
    let mut counts = BTreeMap::new();
    for event in events {
        *counts.entry(partition_for(event.partition_key().as_bytes(), partition_count)).or_default() += 1;
    }
    counts
}

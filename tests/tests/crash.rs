//! SIGKILL the coordinator at several points while it folds a stream of 24,000 events,
//! restart it each time, and check that what it published equals an uninterrupted fold:
//! the same final availability, the same set of alert records and escalations, and no
//! record twice. This is the "crash at any instant loses nothing and repeats nothing"
//! invariant of ARCHITECTURE.md, against the real broker and the real binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::changelogs::{assert_changelogs_equal_the_owners, changelogs_at_the_end};
use common::outputs::{expected, feed_with_breaks};
use common::*;
use omnifold_connector::publish::Publisher;
use omnifold_proto::{AlertState, Event, LedgerEntry, LedgerKind};
use omnifold_runtime::Store;
use omnifold_runtime::partitioner::partition_for;
use omnifold_testkit::Broker;
use prost::Message as _;

const EVENTS: usize = 24_000;

fn workload() -> Vec<Event> {
    feed_with_breaks(300, EVENTS, 2_000)
}

async fn publish(broker: &Broker, events: &[Event]) {
    let mut publisher = Publisher::new(&kafka(broker), &topics(), None).expect("publisher");
    for event in events {
        publisher.publish(event).await.expect("published");
    }
    publisher.flush().await.expect("flushed");
}

fn coordinator(broker: &Broker, store: &Path, exit_when_caught_up: bool) -> Child {
    coordinator_process(broker, store, 250, exit_when_caught_up)
}

/// Events folded so far, read from the store of a stopped coordinator.
fn folded(store: &Path) -> i64 {
    let store = Store::open(store).expect("store opens after a kill");
    store.offsets().expect("offsets").values().sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_any_point_loses_and_repeats_nothing() {
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let events = workload();
    assert!(events.len() >= 20_000);
    publish(&broker, &events).await;
    let want = expected(&events);
    assert!(
        want.alerts.len() > 10 && want.dead_letters > 5,
        "the workload exercises alerts and dead letters"
    );

    let store = tempfile::tempdir().unwrap();
    let mut kill_points = Vec::new();
    for delay_ms in [900, 1_300, 1_700, 2_100, 2_500] {
        let mut child = coordinator(&broker, store.path(), false);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if child.try_wait().unwrap().is_some() {
            panic!("the coordinator exited by itself");
        }
        child.kill().expect("sigkill");
        child.wait().unwrap();
        kill_points.push(folded(store.path()));
    }
    eprintln!("killed after {kill_points:?} of {} events folded", events.len());
    assert!(kill_points[0] < events.len() as i64, "the first kill lands mid-stream");

    let started = Instant::now();
    let status = coordinator(&broker, store.path(), true).wait().unwrap();
    assert!(status.success(), "the last run catches up and exits");
    eprintln!("caught up {:?} after the last restart", started.elapsed());

    let topics = topics();
    let published = availability(&read_to_end(&broker, &topics.availability).await);
    let mut decisions = BTreeSet::new();
    for a in &published {
        assert!(
            decisions.insert((a.channel.clone(), a.sku.clone(), a.reason_event_id.clone())),
            "repeated {a:?}"
        );
    }
    assert_eq!(final_availability(&published), want.availability);

    let mut alert_records = BTreeSet::new();
    for alert in alerts(&read_to_end(&broker, &topics.alerts).await) {
        let state = AlertState::try_from(alert.state).unwrap().name().to_string();
        assert!(alert_records.insert((alert.alert_id.clone(), state)), "repeated alert {}", alert.alert_id);
    }
    assert_eq!(alert_records, want.alerts);

    let pages = escalations(&read_to_end(&broker, &topics.escalations).await);
    let page_ids: BTreeSet<String> = pages.iter().map(|e| e.escalation_id.clone()).collect();
    assert_eq!(page_ids.len(), pages.len(), "no escalation twice");
    assert_eq!(page_ids, want.escalations);

    let ledger: Vec<(i32, LedgerEntry)> = read_to_end(&broker, &topics.ledger)
        .await
        .iter()
        .map(|r| (r.partition, LedgerEntry::decode(r.value.as_deref().unwrap()).unwrap()))
        .collect();
    let (markers, money): (Vec<_>, Vec<_>) =
        ledger.iter().partition(|(_, e)| e.kind == LedgerKind::Progress as i32);
    let entries: Vec<String> = money.iter().map(|(_, e)| e.entry_id.clone()).collect();
    let entry_ids: BTreeSet<String> = entries.iter().cloned().collect();
    assert_eq!(entry_ids.len(), entries.len(), "no ledger entry twice");
    assert!(want.ledger.len() > 1_000, "the workload ships and returns");
    assert_eq!(entry_ids, want.ledger);
    assert!(money.iter().all(|(p, e)| *p == e.event_partition), "an entry sits in its event's partition");
    // progress markers are positions, restated after a restart: the last of each partition
    // says the coordinator read it to its end
    let mut last_marker: BTreeMap<i32, &LedgerEntry> = BTreeMap::new();
    for (partition, marker) in &markers {
        last_marker.insert(*partition, marker);
    }
    let mut published: BTreeMap<i32, i64> = BTreeMap::new();
    for event in &events {
        *published.entry(partition_for(event.partition_key().as_bytes(), EVENTS_PARTITIONS)).or_default() +=
            1;
    }
    for (partition, count) in &published {
        let marker =
            last_marker.get(partition).unwrap_or_else(|| panic!("no marker in partition {partition}"));
        assert_eq!((marker.event_offset, marker.events_behind), (count - 1, 0), "partition {partition}");
    }
    let json = read_to_end(&broker, &topics.ledger_json).await;
    assert_eq!(json.len(), entries.len(), "one json twin each");
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../schemas/ledger-entry.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the ledger schema compiles");
    for record in &json {
        let entry: serde_json::Value = serde_json::from_slice(record.value.as_deref().unwrap()).unwrap();
        assert!(validator.is_valid(&entry), "{entry}");
    }

    let dead = read_to_end(&broker, &topics.deadletter).await;
    assert_eq!(dead.len(), want.dead_letters, "each refused event is dead-lettered once");

    // the changelog, sent through the same outbox, holds exactly the state the kills left
    let counts = common::outputs::counts(&events);
    let changelogs = changelogs_at_the_end(&broker, &counts).await;
    assert_changelogs_equal_the_owners(changelogs, &counts, &[store.path()]);
}

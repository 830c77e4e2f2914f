//! Chaos against the real broker and the real binaries: a paced feed while the coordinator
//! and the reporter are SIGKILLed again and again (6 times each) and the broker, on sqlite
//! storage, is restarted once. Then everything they published is compared with a clean run of
//! the same feed: the final availability, the alert and escalation records, the dead letters
//! and the last revision of every snapshot. Nothing may be lost and nothing repeated.
//!
//! Bounded to about two minutes so CI runs it on every change.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use omnifold_connector::publish::Publisher;
use omnifold_proto::{ContributionSnapshot, Event};
use omnifold_reporter::Reporter;
use omnifold_runtime::deadletter::ERROR_HEADER;
use omnifold_runtime::load_contract;
use omnifold_testkit::{Broker, Record, Storage};
use omnifold_workload::{WorkloadOptions, generate};
use prost::Message as _;

const EVENTS: usize = 6_000;
const FEED: Duration = Duration::from_secs(36);
const KILL_EVERY: Duration = Duration::from_secs(3);
const ROUNDS: usize = 12;
const BROKER_RESTART_ROUND: usize = 6;
const FINAL_RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn feed() -> Vec<Event> {
    let rules = load_contract(&contract_path()).expect("contract");
    let mut events = generate(&rules, &WorkloadOptions::bench(60, EVENTS));
    for i in (700..events.len()).step_by(1_100).rev() {
        let mut unknown_channel = events[i].clone();
        unknown_channel.event_id = format!("bad-{i}");
        unknown_channel.channel = "ebay".to_string();
        events.insert(i, unknown_channel);
    }
    events
}

/// Publishes `events` evenly over `over`, as a connector would while the services run.
async fn paced_publish(kafka: omnifold_runtime::KafkaOptions, events: Vec<Event>, over: Duration) {
    let mut publisher = Publisher::new(&kafka, &topics(), None).expect("publisher");
    let started = Instant::now();
    for (i, event) in events.iter().enumerate() {
        let due = started + over.mul_f64(i as f64 / events.len() as f64);
        tokio::time::sleep_until(due.into()).await;
        publisher.publish(event).await.expect("published");
    }
    publisher.flush().await.expect("flushed");
}

fn coordinator(broker: &Broker, store: &Path, exit_when_caught_up: bool) -> Killed {
    Killed(coordinator_process(broker, store, 200, exit_when_caught_up))
}

fn reporter(broker: &Broker, store: &Path, exit_when_caught_up: bool) -> Killed {
    let mut command = service_command(env!("CARGO_BIN_EXE_e2e-reporter"), broker, store, 200);
    command.args(["--instance-id", "chaos-reporter", "--session-timeout-ms", "6000"]);
    if exit_when_caught_up {
        command.arg("--exit-when-caught-up");
    }
    Killed(command.spawn().expect("reporter starts"))
}

/// SIGKILLs a service that must still be running, and starts it again.
fn kill_and_restart(child: &mut Killed, what: &str, restart: impl FnOnce() -> Killed) {
    if let Some(status) = child.try_wait().unwrap() {
        panic!("the {what} exited by itself ({status}) instead of riding the chaos out");
    }
    child.kill().expect("sigkill");
    child.wait().unwrap();
    *child = restart();
}

/// Waits for a service run with --exit-when-caught-up.
async fn finishes(mut child: Killed, what: &str) {
    let deadline = Instant::now() + FINAL_RUN_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the final {what} run failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the final {what} run did not catch up within {FINAL_RUN_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything the services published, in comparable form.
#[derive(Debug, PartialEq)]
struct Published {
    availability: BTreeMap<(String, String), i64>,
    alert_records: BTreeSet<String>,
    escalations: BTreeSet<String>,
    dead_letter_reasons: Vec<String>,
    /// The last revision of each week/channel, without its revision number and changed fields
    /// (how many revisions led to it depends on batching).
    snapshots: BTreeMap<String, Vec<u8>>,
}

/// Reads back what was published, failing on any record published twice.
async fn published(broker: &Broker) -> Published {
    let topics = topics();
    let availability_records = availability(&read_to_end(broker, &topics.availability).await);
    let mut decisions = BTreeSet::new();
    for a in &availability_records {
        assert!(
            decisions.insert((a.channel.clone(), a.sku.clone(), a.reason_event_id.clone())),
            "repeated {a:?}"
        );
    }
    let alert_list: Vec<String> =
        alerts(&read_to_end(broker, &topics.alerts).await).iter().map(alert_record).collect();
    let alert_records: BTreeSet<String> = alert_list.iter().cloned().collect();
    assert_eq!(alert_records.len(), alert_list.len(), "an alert record was published twice");
    let page_list: Vec<String> = escalations(&read_to_end(broker, &topics.escalations).await)
        .into_iter()
        .map(|e| e.escalation_id)
        .collect();
    let pages: BTreeSet<String> = page_list.iter().cloned().collect();
    assert_eq!(pages.len(), page_list.len(), "an escalation was published twice");
    let mut dead_letter_reasons: Vec<String> = read_to_end(broker, &topics.deadletter)
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(header(r, ERROR_HEADER).unwrap_or_default()).into_owned())
        .collect();
    dead_letter_reasons.sort();
    let snapshots = last_revisions(&read_to_end(broker, &topics.snapshots).await);
    Published {
        availability: final_availability(&availability_records),
        alert_records,
        escalations: pages,
        dead_letter_reasons,
        snapshots,
    }
}

/// The last revision of every snapshot key; fails if a revision was published twice or one is
/// missing.
fn last_revisions(records: &[Record]) -> BTreeMap<String, Vec<u8>> {
    let mut revisions: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut last: BTreeMap<String, ContributionSnapshot> = BTreeMap::new();
    for record in records {
        let snapshot =
            ContributionSnapshot::decode(record.value.as_deref().unwrap_or_default()).expect("snapshot");
        let key = format!("{}/{}", snapshot.week, snapshot.channel);
        revisions.entry(key.clone()).or_default().push(snapshot.revision);
        if last.get(&key).is_none_or(|known| snapshot.revision > known.revision) {
            last.insert(key, snapshot);
        }
    }
    for (key, mut seen) in revisions {
        seen.sort();
        let want: Vec<u32> = (1..=seen.len() as u32).collect();
        assert_eq!(seen, want, "{key}: each revision once, with no gap");
    }
    last.into_iter()
        .map(|(key, s)| {
            (key, ContributionSnapshot { revision: 0, changed_fields: Vec::new(), ..s }.encode_to_vec())
        })
        .collect()
}

/// The same feed, published at once and folded without interruption.
async fn clean_run(events: &[Event]) -> Published {
    let broker = Broker::start().await.expect("clean broker starts");
    create_topics(&broker).await;
    let mut publisher = Publisher::new(&kafka(&broker), &topics(), None).expect("publisher");
    for event in events {
        publisher.publish(event).await.expect("published");
    }
    publisher.flush().await.expect("flushed");
    let (coordinator_store, reporter_store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_until_caught_up(&broker, coordinator_store.path()).await;
    let reporter = Reporter::new(reporter_options(&broker, reporter_store.path(), 200)).unwrap();
    tokio::time::timeout(FINAL_RUN_TIMEOUT, reporter.run(std::future::pending()))
        .await
        .expect("clean reporter caught up in time")
        .expect("clean reporter ran");
    published(&broker).await
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkills_and_a_broker_restart_lose_and_repeat_nothing() {
    let events = feed();
    let mut broker = Broker::start_with_storage(Storage::Sqlite).await.expect("broker starts");
    create_topics(&broker).await;
    let (coordinator_store, reporter_store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let feeder = tokio::spawn(paced_publish(kafka(&broker), events.clone(), FEED));
    let mut running_coordinator = coordinator(&broker, coordinator_store.path(), false);
    let mut running_reporter = reporter(&broker, reporter_store.path(), false);

    let mut kills = (0, 0);
    for round in 0..ROUNDS {
        tokio::time::sleep(KILL_EVERY).await;
        if round == BROKER_RESTART_ROUND {
            broker.restart().await.expect("broker restarts");
        }
        if round % 2 == 0 {
            kill_and_restart(&mut running_coordinator, "coordinator", || {
                coordinator(&broker, coordinator_store.path(), false)
            });
            kills.0 += 1;
        } else {
            kill_and_restart(&mut running_reporter, "reporter", || {
                reporter(&broker, reporter_store.path(), false)
            });
            kills.1 += 1;
        }
    }
    tokio::time::timeout(Duration::from_secs(60), feeder).await.expect("feed published in time").unwrap();
    for child in [&mut running_coordinator, &mut running_reporter] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_eq!(kills, (6, 6));

    // Every event is still in the log after the restart, once.
    assert_eq!(read_to_end(&broker, &topics().events).await.len(), events.len());
    finishes(coordinator(&broker, coordinator_store.path(), true), "coordinator").await;
    finishes(reporter(&broker, reporter_store.path(), true), "reporter").await;
    let chaos = published(&broker).await;

    let clean = clean_run(&events).await;
    assert!(
        !clean.alert_records.is_empty()
            && !clean.snapshots.is_empty()
            && !clean.dead_letter_reasons.is_empty()
    );
    assert_eq!(chaos.availability, clean.availability, "final availability");
    assert_eq!(chaos.alert_records, clean.alert_records, "alert records");
    assert_eq!(chaos.escalations, clean.escalations, "escalations");
    assert_eq!(chaos.dead_letter_reasons, clean.dead_letter_reasons, "dead letters, once each");
    assert_eq!(chaos.snapshots.keys().collect::<Vec<_>>(), clean.snapshots.keys().collect::<Vec<_>>());
    assert!(chaos.snapshots == clean.snapshots, "the last revision of every snapshot");
}

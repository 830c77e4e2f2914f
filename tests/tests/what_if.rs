//! What-if with no change reproduces the live outputs exactly: the real coordinator and the
//! real reporter run over a generated feed (with duplicates, refused events and a record
//! that is not an event), then `omnifold-what-if`'s replay reads the same events topic from
//! its start and its baseline must give the same final availability per key, the same
//! multisets of alert records (by id and state) and escalation ids, and the same last
//! snapshot of every week and channel (revision numbers aside, which may differ). Reading
//! the topic must write nothing.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    EVENTS_PARTITIONS, alerts, availability, contract_path, coordinator_options, escalations, kafka,
    publish_records, read_to_end, reporter_options, topic_options,
};
use omnifold_coordinator::Coordinator;
use omnifold_proto::{AlertState, ContributionSnapshot, Event};
use omnifold_reporter::readback::latest_snapshots;
use omnifold_reporter::{ReportTopics, Reporter};
use omnifold_runtime::load_contract;
use omnifold_testkit::Broker;
use omnifold_whatif::{History, Scenario, run_all};
use prost::Message as _;

/// Four weeks of the benchmark mix over 24 SKUs, with a duplicate and an event of an unknown
/// channel every 500 events.
fn feed() -> Vec<Event> {
    let rules = load_contract(&contract_path()).expect("contract");
    let options = omnifold_workload::WorkloadOptions::bench_over(24, 6_000, 28);
    let mut feed = omnifold_workload::generate(&rules, &options);
    for i in (100..feed.len()).step_by(500).rev() {
        let duplicate = feed[i - 50].clone();
        let mut unknown = feed[i].clone();
        unknown.event_id = format!("bad-{i}");
        unknown.channel = "ebay".into();
        feed.insert(i, duplicate);
        feed.insert(i, unknown);
    }
    feed
}

/// A snapshot as compared: every field but the revision number and its changed fields.
fn figures(mut snapshot: ContributionSnapshot) -> ContributionSnapshot {
    snapshot.revision = 0;
    snapshot.changed_fields.clear();
    snapshot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_if_with_no_change_reproduces_what_the_services_published() {
    let broker = Broker::start().await.expect("broker starts");
    let topics = ReportTopics::new("omnifold.");
    kafka(&broker).ensure_topics(&topics.contract.specs(&topic_options())).await.expect("topics created");
    let mut records: Vec<(String, Vec<u8>)> =
        feed().iter().map(|e| (e.partition_key().to_string(), e.encode_to_vec())).collect();
    records.insert(records.len() / 2, ("SKU-0001".into(), b"not an event \xff".to_vec()));
    publish_records(&broker, &topics.contract.events, &records).await;

    let (coordinator_store, reporter_store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let coordinator =
        Coordinator::new(coordinator_options(&broker, coordinator_store.path())).expect("builds");
    tokio::time::timeout(Duration::from_secs(180), coordinator.run(std::future::pending()))
        .await
        .expect("coordinator caught up in time")
        .expect("coordinator ran");
    let reporter =
        Reporter::new(reporter_options(&broker, reporter_store.path(), 500)).expect("reporter builds");
    tokio::time::timeout(Duration::from_secs(180), reporter.run(std::future::pending()))
        .await
        .expect("reporter caught up in time")
        .expect("reporter ran");

    let published_availability = availability(&read_to_end(&broker, &topics.contract.availability).await);
    let mut final_availability: BTreeMap<(String, String), i64> = BTreeMap::new();
    for record in &published_availability {
        final_availability.insert((record.channel.clone(), record.sku.clone()), record.available);
    }
    final_availability.retain(|_, available| *available != 0);
    let mut published_alerts: Vec<(String, String)> =
        alerts(&read_to_end(&broker, &topics.contract.alerts).await)
            .iter()
            .map(|a| (a.alert_id.clone(), AlertState::try_from(a.state).unwrap().name().to_string()))
            .collect();
    published_alerts.sort();
    let mut published_escalations: Vec<String> =
        escalations(&read_to_end(&broker, &topics.contract.escalations).await)
            .into_iter()
            .map(|e| e.escalation_id)
            .collect();
    published_escalations.sort();
    let options = kafka(&broker);
    let snapshots_topic = topics.contract.snapshots.clone();
    let published_snapshots =
        tokio::task::spawn_blocking(move || latest_snapshots(&options, &snapshots_topic))
            .await
            .unwrap()
            .unwrap();
    assert!(
        published_snapshots.len() >= 12,
        "at least three closed weeks of four channels: {published_snapshots:?}"
    );
    assert!(!published_alerts.is_empty() && !published_escalations.is_empty());

    let options = kafka(&broker);
    let events_topic = topics.contract.events.clone();
    let history = tokio::task::spawn_blocking(move || {
        History::from_topic(&options, &events_topic, Duration::from_secs(60))
    })
    .await
    .unwrap()
    .expect("the events topic reads");
    assert_eq!(history.len() + history.unreadable, records.len());
    assert_eq!((history.unreadable, history.partition_count), (1, EVENTS_PARTITIONS));
    let rules = load_contract(&contract_path()).expect("contract");
    let runs = run_all(&history, &[Scenario::baseline(rules)], None);
    let run = &runs[0];
    assert!(
        run.duplicates > 0 && run.rejected > 0,
        "the feed's duplicates and refusals are replayed as such"
    );

    assert_eq!(run.final_availability, final_availability, "final availability per (channel, sku)");
    let mut replayed_alerts = run.alert_records.clone();
    replayed_alerts.sort();
    assert_eq!(replayed_alerts, published_alerts, "alert records by id and state");
    let mut replayed_escalations = run.escalation_ids.clone();
    replayed_escalations.sort();
    assert_eq!(replayed_escalations, published_escalations, "escalation ids");
    let replayed: BTreeMap<String, ContributionSnapshot> =
        run.snapshots.iter().map(|s| (s.key(), figures(s.to_proto()))).collect();
    let published: BTreeMap<String, ContributionSnapshot> =
        published_snapshots.into_iter().map(|(key, s)| (key, figures(s))).collect();
    assert_eq!(
        replayed.keys().collect::<Vec<_>>(),
        published.keys().collect::<Vec<_>>(),
        "the same weeks and channels"
    );
    for (key, snapshot) in &published {
        assert_eq!(&replayed[key], snapshot, "{key}");
    }

    // reading the history wrote nothing: every output topic holds what it held
    assert_eq!(
        availability(&read_to_end(&broker, &topics.contract.availability).await),
        published_availability
    );
}

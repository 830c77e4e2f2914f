//! Faults of the environment, against the real broker: a broker restart on sqlite storage must
//! keep the event log, and a broker outage must be waited out, not fatal.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use omnifold_connector::publish::Publisher;
use omnifold_coordinator::{Coordinator, CoordinatorOptions};
use omnifold_domain::{Fold, Outcome, Output, PartitionState};
use omnifold_proto::Event;
use omnifold_reporter::Reporter;
use omnifold_runtime::deadletter::SOURCE_HEADER;
use omnifold_runtime::load_contract;
use omnifold_runtime::partitioner::partition_for;
use omnifold_testkit::{Broker, Storage};
use omnifold_workload::{WorkloadOptions, generate};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

fn workload(events: usize) -> Vec<Event> {
    let rules = load_contract(&contract_path()).expect("contract");
    generate(&rules, &WorkloadOptions::bench(40, events))
}

async fn publish(broker: &Broker, events: &[Event]) {
    let mut publisher = Publisher::new(&kafka(broker), &topics(), None).expect("publisher");
    for event in events {
        publisher.publish(event).await.expect("published");
    }
    publisher.flush().await.expect("flushed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_log_survives_a_sqlite_broker_restart() {
    let mut broker = Broker::start_with_storage(Storage::Sqlite).await.expect("broker starts");
    create_topics(&broker).await;
    let events = workload(1_500);
    publish(&broker, &events).await;
    assert_eq!(read_to_end(&broker, &topics().events).await.len(), events.len());

    // nisshi sweeps retention when it starts: a topic with retention.ms=-1 loses everything here
    broker.restart().await.expect("broker restarts");
    assert_eq!(
        read_to_end(&broker, &topics().events).await.len(),
        events.len(),
        "every event is still in the log after the restart"
    );

    let store = tempfile::tempdir().unwrap();
    run_until_caught_up(&broker, store.path()).await;
    let folded: i64 = omnifold_runtime::Store::open(store.path()).unwrap().offsets().unwrap().values().sum();
    assert_eq!(folded, events.len() as i64, "the coordinator folds the whole log after the restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_refuses_an_event_log_that_would_drop_events() {
    let broker = Broker::start().await.expect("broker starts");
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
    let topics = topics();
    let events = NewTopic::new(&topics.events, EVENTS_PARTITIONS, TopicReplication::Fixed(1))
        .set("cleanup.policy", "delete")
        .set("retention.ms", "-1");
    for result in admin.create_topics([&events], &AdminOptions::new()).await.unwrap() {
        result.expect("events topic created");
    }

    let store = tempfile::tempdir().unwrap();
    let refused = Coordinator::new(coordinator_options(&broker, store.path()))
        .unwrap()
        .run(std::future::pending())
        .await
        .expect_err("start-up refuses the topic");
    let message = refused.to_string();
    assert!(message.contains("retention.ms=-1") && message.contains("nisshi"), "{message}");

    // an operator on apache kafka says so, and the same topic is accepted
    let mut options = coordinator_options(&broker, store.path());
    options.topics.log_retention_ms = -1;
    tokio::time::timeout(
        Duration::from_secs(60),
        Coordinator::new(options).unwrap().run(std::future::pending()),
    )
    .await
    .expect("caught up in time")
    .expect("accepted with infinite retention configured");
}

/// The final availability and the alert records an uninterrupted fold publishes.
fn expected(events: &[Event]) -> (BTreeMap<(String, String), i64>, BTreeSet<String>) {
    let fold = Fold::new(load_contract(&contract_path()).expect("contract"));
    let mut partitions: BTreeMap<i32, PartitionState> = BTreeMap::new();
    let (mut availability, mut alert_records) = (BTreeMap::new(), BTreeSet::new());
    for event in events {
        let partition = partition_for(event.partition_key().as_bytes(), EVENTS_PARTITIONS);
        if let Outcome::Applied { outputs, .. } = fold.apply(partitions.entry(partition).or_default(), event)
        {
            for output in outputs {
                match output {
                    Output::Availability(a) => {
                        availability.insert((a.channel.into(), a.sku.into()), a.available);
                    }
                    Output::Alert(a) => {
                        alert_records.insert(alert_record(&a));
                    }
                    Output::Escalation(_)
                    | Output::Ledger(_)
                    | Output::Replenishment(_)
                    | Output::Routing(_) => {}
                }
            }
        }
    }
    (availability, alert_records)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_waits_out_a_broker_outage_and_resumes() {
    let mut broker = Broker::start_with_storage(Storage::Sqlite).await.expect("broker starts");
    create_topics(&broker).await;
    let events = workload(3_000);
    let (before, after) = events.split_at(events.len() / 2);
    let store = tempfile::tempdir().unwrap();
    let coordinator = spawn_coordinator(CoordinatorOptions {
        exit_when_caught_up: false,
        ..coordinator_options(&broker, store.path())
    });
    publish(&broker, before).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    broker.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    broker.restart().await.expect("broker restarts");
    publish(&broker, after).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // stop() fails the test if the coordinator ended with an error during the outage
    coordinator.stop().await;

    run_until_caught_up(&broker, store.path()).await;
    let (availability, alert_records) = expected(&events);
    let published = read_to_end(&broker, &topics().availability).await;
    assert_eq!(final_availability(&common::availability(&published)), availability);
    let records: Vec<String> =
        alerts(&read_to_end(&broker, &topics().alerts).await).iter().map(alert_record).collect();
    let distinct: BTreeSet<String> = records.iter().cloned().collect();
    assert_eq!(distinct.len(), records.len(), "no alert record twice across the outage");
    assert_eq!(distinct, alert_records);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_longer_than_broker_outage_max_ends_the_coordinator() {
    let mut broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let store = tempfile::tempdir().unwrap();
    let options = CoordinatorOptions {
        exit_when_caught_up: false,
        broker_outage_max: Some(Duration::from_secs(1)),
        group_instance_id: None,
        session_timeout_ms: 10_000,
        changelog: true,
        changelog_interval_ms: 1_000,
        changelog_dump_records: 100_000,
        ..coordinator_options(&broker, store.path())
    };
    let run = tokio::spawn(Coordinator::new(options).unwrap().run(std::future::pending()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.kill();
    let ended = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the coordinator gives up within a minute")
        .unwrap();
    let message = ended.expect_err("an outage past the limit is an error").to_string();
    assert!(message.contains("broker_outage_max"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bad_event_is_dead_lettered_once_with_coordinator_and_reporter_running() {
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let mut events = workload(600);
    for (i, at) in [100, 300, 500].into_iter().enumerate() {
        let mut bad = events[at].clone();
        bad.event_id = format!("bad-{i}");
        bad.channel = "ebay".to_string();
        events.insert(at, bad);
    }
    publish(&broker, &events).await;
    broker.produce(&topics().events, b"SKU-X", b"\xff\xfe not protobuf").await.expect("raw bytes");

    let (coordinator_store, reporter_store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_until_caught_up(&broker, coordinator_store.path()).await;
    let reporter = Reporter::new(reporter_options(&broker, reporter_store.path(), 500)).unwrap();
    tokio::time::timeout(Duration::from_secs(120), reporter.run(std::future::pending()))
        .await
        .expect("reporter caught up in time")
        .expect("reporter ran");

    let dead = read_to_end(&broker, &topics().deadletter).await;
    let sources: BTreeSet<String> = dead
        .iter()
        .map(|r| String::from_utf8_lossy(header(r, SOURCE_HEADER).unwrap()).into_owned())
        .collect();
    assert_eq!(dead.len(), 4, "three unknown channels and one undecodable payload, once each");
    assert_eq!(sources.len(), 4, "one dead letter per source record");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_refuses_a_ledger_that_does_not_mirror_the_event_log() {
    let broker = Broker::start().await.expect("broker starts");
    broker.create_topic(&topics().ledger, 1, false).await.expect("a one-partition ledger");
    let store = tempfile::tempdir().unwrap();
    let refused = Coordinator::new(coordinator_options(&broker, store.path()))
        .unwrap()
        .run(std::future::pending())
        .await
        .expect_err("start-up refuses the ledger");
    let message = refused.to_string();
    assert!(message.contains("has 1 partitions and the events topic 3"), "{message}");
}

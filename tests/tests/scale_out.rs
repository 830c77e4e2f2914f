//! Several coordinators in one consumer group (ARCHITECTURE.md, "Scale-out"): two share the
//! feed, a third with an empty store joins and takes partitions from live ones, then one is
//! SIGKILLed mid-feed and never comes back, and the survivors restore its partitions. What
//! the topics hold at the end equals what one uninterrupted coordinator publishes (the pure
//! fold per partition): the final availability, the alert and escalation records, the ledger
//! and the dead letters, with no record twice.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::changelogs::{assert_changelogs_equal_the_owners, changelogs_at_the_end};
use common::outputs::{
    counts, counts_over, expected, expected_over, feed_with_breaks, folded_to_the_end, published,
    repeated_origins,
};
use common::*;
use omnifold_connector::publish::Publisher;
use omnifold_proto::Event;
use omnifold_testkit::Broker;

const GROUP: &str = "scale-out";

/// The command of a coordinator in the group, with a static member id.
fn member_command(broker: &Broker, store: &Path, id: &str) -> std::process::Command {
    let mut command = service_command(env!("CARGO_BIN_EXE_e2e-coordinator"), broker, store, 200);
    command.args(["--group", GROUP, "--instance-id", id, "--session-timeout-ms", "6000"]);
    command
}

/// A coordinator process in the group, with a static member id.
fn member(broker: &Broker, store: &Path, id: &str) -> Killed {
    Killed(member_command(broker, store, id).spawn().expect("coordinator starts"))
}

/// Like [`member`], logging the changelog restores to `log`.
fn member_logging_restores(broker: &Broker, store: &Path, id: &str, log: &Path) -> Killed {
    let mut command = member_command(broker, store, id);
    command
        .env("RUST_LOG", "warn,omnifold_runtime::changelog=info")
        .stderr(std::fs::File::create(log).expect("log file"));
    Killed(command.spawn().expect("coordinator starts"))
}

/// A coordinator in the group (no static id) logging its changelog sendings to `log`.
fn logging_member(broker: &Broker, store: &Path, args: &[&str], log: &Path) -> Killed {
    Killed(
        service_command(env!("CARGO_BIN_EXE_e2e-coordinator"), broker, store, 200)
            .args(["--group", GROUP])
            .args(args)
            .env("RUST_LOG", "warn,omnifold_coordinator::service=info")
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("coordinator starts"),
    )
}

/// Publishes `events` over about 3 s, waits until every partition of `all` is folded, and
/// stops the coordinator: the changelogs at the end, the event counts and its log.
async fn fold_paced_and_stop(
    broker: &Broker,
    events: &[Event],
    all: &[Event],
    mut coordinator: Killed,
    log: &Path,
) -> (common::changelogs::Changelogs, std::collections::BTreeMap<i32, i64>, String) {
    paced(broker, events, Duration::from_secs(3)).await;
    wait_folded(broker, all, "with the changelog").await;
    let counts = counts(all);
    let changelogs = changelogs_at_the_end(broker, &counts).await;
    coordinator.kill().expect("stopped");
    coordinator.wait().unwrap();
    (changelogs, counts, std::fs::read_to_string(log).unwrap())
}

fn feed() -> Vec<Event> {
    feed_with_breaks(120, 9_000, 1_500)
}

/// Publishes `events` in slices over about `over`, so that partitions move mid-feed.
async fn paced(broker: &Broker, events: &[Event], over: Duration) {
    let mut publisher = Publisher::new(&kafka(broker), &topics(), None).expect("publisher");
    let slices = 20;
    for slice in events.chunks(events.len().div_ceil(slices).max(1)) {
        for event in slice {
            publisher.publish(event).await.expect("published");
        }
        publisher.flush().await.expect("flushed");
        tokio::time::sleep(over / slices as u32).await;
    }
}

async fn wait_folded(broker: &Broker, events: &[Event], what: &str) {
    wait_folded_to(broker, &counts(events), what).await;
}

async fn wait_folded_to(broker: &Broker, counts: &std::collections::BTreeMap<i32, i64>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !folded_to_the_end(broker, counts).await {
        assert!(Instant::now() < deadline, "{what}: the group never folded every partition to its end");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the topics hold what one uninterrupted coordinator publishes (the last outputs of
/// a batch may still be on their way when its marker is), then compares them.
async fn assert_published(broker: &Broker, want: &common::outputs::Expected) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = published(broker).await.unwrap_or_else(|repeat| panic!("{repeat}"));
        if got == *want || Instant::now() > deadline {
            assert_eq!(got.availability, want.availability, "final availability");
            assert_eq!(got.alerts, want.alerts, "alert records");
            assert_eq!(got.escalations, want.escalations, "escalations");
            assert_eq!(got.ledger, want.ledger, "ledger entries");
            assert_eq!(got.dead_letters, want.dead_letters, "each refused event dead-lettered once");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(repeated_origins(broker).await, Vec::<String>::new(), "no output twice");
}

/// The benchmark's shape: twelve partitions, two members, and a third with an empty store that
/// joins while events arrive and takes partitions from both (each of them restores what it
/// takes by replaying the log and skipping what the previous owner published). Nothing may be
/// lost or published twice across the moves.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_joining_mid_feed_on_twelve_partitions_publishes_nothing_twice() {
    const PARTITIONS: i32 = 12;
    let broker = Broker::start().await.expect("broker starts");
    let options = omnifold_runtime::TopicOptions { events_partitions: PARTITIONS, ..topic_options() };
    kafka(&broker).ensure_topics(&topics().specs(&options)).await.expect("topics created");
    let events = feed_with_breaks(240, 9_000, 1_500);
    let want = expected_over(&events, PARTITIONS);
    let half = events.len() / 2;
    let stores: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();

    let mut a = member(&broker, stores[0].path(), "a");
    let mut b = member(&broker, stores[1].path(), "b");
    paced(&broker, &events[..half], Duration::from_secs(3)).await;
    let log = stores[2].path().with_extension("log");
    let mut c = member_logging_restores(&broker, stores[2].path(), "c", &log);
    paced(&broker, &events[half..], Duration::from_secs(6)).await;
    wait_folded_to(&broker, &counts_over(&events, PARTITIONS), "after a join").await;
    assert_published(&broker, &want).await;
    // the joiner restored what it took from the changelog, not by re-folding the log
    let restores = std::fs::read_to_string(&log).unwrap();
    let restored =
        restores.lines().filter(|l| l.contains("read the changelog") && l.contains("Restore")).count();
    assert!(restored > 0, "c restored no partition from its changelog:\n{restores}");
    // the joiner did take partitions while events arrived: its store wrote ledger records too
    let writers: std::collections::BTreeSet<String> = read_to_end(&broker, &topics().ledger)
        .await
        .iter()
        .filter_map(|record| header(record, omnifold_runtime::outbox::OUTBOX_HEADER))
        .map(|stamp| String::from_utf8_lossy(stamp).split(':').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(writers.len(), 3, "a, b and the joining c each wrote: {writers:?}");
    let counts = counts_over(&events, PARTITIONS);
    let changelogs = changelogs_at_the_end(&broker, &counts).await;
    for member in [&mut a, &mut b, &mut c] {
        member.kill().expect("stopped");
        member.wait().unwrap();
    }
    let paths: Vec<&Path> = stores.iter().map(|store| store.path()).collect();
    assert_changelogs_equal_the_owners(changelogs, &counts, &paths);
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinators_in_one_group_equal_one_through_a_join_and_a_sigkill() {
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let events = feed();
    let want = expected(&events);
    assert!(want.alerts.len() > 10 && want.dead_letters > 3, "the feed raises alerts and dead letters");
    let third = events.len() / 3;
    let stores: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();

    let mut a = member(&broker, stores[0].path(), "a");
    let mut b = member(&broker, stores[1].path(), "b");
    paced(&broker, &events[..third], Duration::from_secs(3)).await;
    wait_folded(&broker, &events[..third], "two members").await;

    // a third member with an empty store takes partitions from live ones, mid-feed
    let mut c = member(&broker, stores[2].path(), "c");
    paced(&broker, &events[third..2 * third], Duration::from_secs(6)).await;
    wait_folded(&broker, &events[..2 * third], "after a join").await;

    // one member dies mid-feed and does not come back: after its session the others
    // restore its partitions from the event log and what it published
    let half = 2 * third + (events.len() - 2 * third) / 2;
    paced(&broker, &events[2 * third..half], Duration::from_secs(2)).await;
    b.kill().expect("sigkill");
    b.wait().unwrap();
    paced(&broker, &events[half..], Duration::from_secs(2)).await;
    wait_folded(&broker, &events, "after a sigkill").await;

    assert_published(&broker, &want).await;

    // the operator's view: every partition owned by a live member, none behind
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-coordinator"))
        .args(["status", "--bootstrap", &broker.bootstrap(), "--group", GROUP])
        .output()
        .expect("status runs");
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    let members: Vec<&str> = table.lines().filter(|l| l.starts_with("member ")).collect();
    // two live members, the dead b's session expired; nisshi describes members without their
    // client ids, so which two cannot be told here (on Apache Kafka the lines name them)
    assert_eq!(members.len(), 2, "a and c, not the dead b: {table}");
    let rows = table.lines().skip_while(|l| !l.starts_with("partition")).skip(1).count();
    assert_eq!(rows, EVENTS_PARTITIONS as usize, "{table}");
    println!("{table}");
    for member in [&mut a, &mut c] {
        member.kill().expect("stopped");
        member.wait().unwrap();
    }
}

/// A store that folded without the changelog sends its whole state once it runs with one, a
/// part per sending, idle and then while events arrive; then the changelog holds exactly its
/// state.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_ran_without_the_changelog_sends_its_whole_state_in_parts() {
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let events = feed();
    let half = events.len() / 2;
    let store = tempfile::tempdir().unwrap();
    let coordinator = env!("CARGO_BIN_EXE_e2e-coordinator");

    paced(&broker, &events[..half], Duration::ZERO).await;
    let without = service_command(coordinator, &broker, store.path(), 200)
        .args(["--group", GROUP, "--no-changelog", "--exit-when-caught-up"])
        .status()
        .expect("coordinator runs");
    assert!(without.success(), "the run without the changelog catches up and exits");

    let log = store.path().with_extension("log");
    let args = ["--changelog-dump-records", "300", "--changelog-interval-ms", "100"];
    let with = logging_member(&broker, store.path(), &args, &log);
    // idle, it sends the whole state of what it folded without the changelog
    let before = counts(&events[..half]);
    changelogs_at_the_end(&broker, &before).await;
    // and goes on while events arrive
    let (changelogs, counts, lines) =
        fold_paced_and_stop(&broker, &events[half..], &events, with, &log).await;
    let parts = lines.lines().filter(|l| l.contains("sent a part of the partition's whole state")).count();
    assert!(parts > 2 * EVENTS_PARTITIONS as usize, "the whole states went out in parts: {parts}");
    assert_changelogs_equal_the_owners(changelogs, &counts, &[store.path()]);
}

/// A store that folds its partitions from their first offsets notes everything it writes, so
/// the changelog holds its whole state without a dump: not one part is sent, and the changelog
/// still equals the store at the end.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_folded_from_the_first_offsets_sends_no_whole_state() {
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let events = feed();
    let store = tempfile::tempdir().unwrap();
    let log = store.path().with_extension("log");
    let coordinator = logging_member(&broker, store.path(), &["--changelog-interval-ms", "100"], &log);
    // partitions start at different batches, each before or after a sending was due
    let (changelogs, counts, lines) = fold_paced_and_stop(&broker, &events, &events, coordinator, &log).await;
    let parts: Vec<&str> = lines.lines().filter(|l| l.contains("the partition's whole state")).collect();
    assert_eq!(parts, Vec::<&str>::new(), "no part of a whole state was sent");
    assert_changelogs_equal_the_owners(changelogs, &counts, &[store.path()]);
}

/// An instance of a new state format, with an empty store, takes partitions whose changelog
/// an older format wrote (here: a last offset record and a key of format 2 written after the
/// current writer's): it does not restore them, since their keys mean other things to it, but
/// re-folds the log, publishes nothing twice, and sends its state whole; the older records left
/// on the topic stay out of its store and of any later reader's.
#[tokio::test(flavor = "multi_thread")]
async fn a_changelog_written_in_another_state_format_is_re_folded_not_restored() {
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let events = feed();
    let want = expected(&events);
    let counts = counts(&events);
    let stores: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();

    let mut a = member(&broker, stores[0].path(), "a");
    paced(&broker, &events, Duration::ZERO).await;
    wait_folded(&broker, &events, "the first member").await;
    changelogs_at_the_end(&broker, &counts).await;
    a.kill().expect("stopped");
    a.wait().unwrap();
    publish_older_format(&broker, &counts).await;

    let log = stores[1].path().with_extension("log");
    let mut b = member_logging_restores(&broker, stores[1].path(), "b", &log);
    let changelogs = changelogs_at_the_end(&broker, &counts).await;
    assert_published(&broker, &want).await;
    b.kill().expect("stopped");
    b.wait().unwrap();

    let restores = std::fs::read_to_string(&log).unwrap();
    let refolded = restores.lines().filter(|l| l.contains("written in another state format")).count();
    assert_eq!(refolded, EVENTS_PARTITIONS as usize, "each partition re-folded:\n{restores}");
    let store = omnifold_runtime::Store::open(stores[1].path()).expect("store opens");
    for partition in counts.keys() {
        let keys: Vec<Vec<u8>> =
            store.partition_entries_after(*partition, None).map(|entry| entry.unwrap().0.to_vec()).collect();
        assert!(!keys.iter().any(|key| key.ends_with(STALE)), "partition {partition} holds the older key");
    }
    drop(store);
    assert_changelogs_equal_the_owners(changelogs, &counts, &[stores[1].path()]);
}

/// The tail of the key an older state format wrote in [`publish_older_format`].
const STALE: &[u8] = b"h-older-format";

/// Writes to each changelog partition what an instance of state format 2 would: a key the
/// current format never writes, then its offset record at the partition's end.
async fn publish_older_format(broker: &Broker, counts: &std::collections::BTreeMap<i32, i64>) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let producer: FutureProducer = broker.client_config().create().expect("producer");
    let topic = topics().changelog;
    for (partition, count) in counts {
        let batch = omnifold_runtime::changelog::Batch {
            topic: &topic,
            partition: *partition,
            next_offset: *count,
            writer: "older",
            format: 2,
            packs: |_| false,
        };
        let stale = [&b"k/"[..], &partition.to_be_bytes(), STALE].concat();
        for record in
            omnifold_runtime::changelog::records(&batch, [(&stale[..], Some(&b"v"[..]))].into_iter())
        {
            let headers = record.headers.iter().fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header { key: key.as_ref(), value: Some(value) })
            });
            let sent = FutureRecord::to(&topic).partition(*partition).key(&record.key).payload(&record.value);
            producer.send(sent.headers(headers), Duration::from_secs(10)).await.expect("delivered");
        }
    }
}

/// A member taking partitions reads each ledger partition's last progress marker back from its
/// end, in growing windows: the marker is found however far from the end it is (the records
/// after it being outputs whose marker never came, say), and a partition with none is read
/// whole and has none.
#[tokio::test(flavor = "multi_thread")]
async fn the_last_marker_of_a_ledger_partition_is_found_however_far_back_it_lies() {
    use omnifold_proto::{LedgerEntry, LedgerKind};
    use prost::Message;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let broker = Broker::start().await.expect("broker starts");
    let ledger = "markers.ledger";
    broker.create_topic(ledger, 4, false).await.expect("topic created");
    // per partition: the marker's offset (if it has one) and how many records follow it
    let layouts: [(i32, Option<i64>, usize); 4] =
        [(0, Some(10), 0), (1, Some(11), 1_500), (2, Some(12), 25_000), (3, None, 2_000)];
    let producer: BaseProducer = broker.client_config().create().expect("producer");
    let shipment =
        LedgerEntry { kind: LedgerKind::Shipment as i32, ..LedgerEntry::default() }.encode_to_vec();
    for (partition, marker, after) in layouts {
        let mut records: Vec<(Vec<u8>, Option<OwnedHeaders>)> = vec![(shipment.clone(), None); 3];
        if let Some(through) = marker {
            let entry = LedgerEntry {
                kind: LedgerKind::Progress as i32,
                event_offset: through,
                ..LedgerEntry::default()
            };
            let stamp =
                OwnedHeaders::new().insert(Header { key: "omnifold-outbox", value: Some("w-test:7") });
            records.push((entry.encode_to_vec(), Some(stamp)));
        }
        records.extend(std::iter::repeat_n((shipment.clone(), None), after));
        for (value, headers) in records {
            let mut record =
                BaseRecord::<[u8], [u8]>::to(ledger).partition(partition).key(b"k").payload(&value);
            if let Some(headers) = headers {
                record = record.headers(headers);
            }
            // a full queue gives the record back: wait for deliveries and send it again
            while let Err((error, back)) = producer.send(record) {
                assert!(matches!(
                    error.rdkafka_error_code(),
                    Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                ));
                producer.poll(Duration::from_millis(10));
                record = back;
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("every record delivered");

    let kafka = kafka(&broker);
    let found = tokio::task::spawn_blocking(move || {
        omnifold_coordinator::group::last_markers(&kafka, ledger, &[0, 1, 2, 3])
    })
    .await
    .unwrap()
    .expect("markers read");
    let through: Vec<(i32, i64, &str)> =
        found.iter().map(|(p, m)| (*p, m.through, m.writer.as_str())).collect();
    assert_eq!(through, vec![(0, 10, "w-test"), (1, 11, "w-test"), (2, 12, "w-test")]);
}

//! The reporter against a real broker, reading what the real coordinator accepted (its
//! contribution ledger and alerts): weekly figures worked by hand (deploy/local/contract.toml:
//! EUR at 1.08, weekly operating costs shopify 1800, amazon 2500, eu-market 1500 EUR = 1620,
//! wholesale 600, 1 h of allowed lateness), dead letters, JSON snapshots checked against
//! their schema, restarts in the middle of a week, a late event restating a closed week, a
//! week's first revision waiting for a partition still behind, decisions by accountable
//! alerts, two instances in one group giving the same snapshots as one, and the weekly page
//! in a browser.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use common::chromium::{artifacts_dir, chromium, find_chromium};
use common::{RunningCoordinator, contract_path, kafka, publish_records, read_to_end, spawn_coordinator};
use omnifold_coordinator::engine::EngineOptions;
use omnifold_coordinator::progress::{Mark, marker, merge_markers};
use omnifold_coordinator::service::{Position, output_records};
use omnifold_coordinator::{Coordinator, CoordinatorOptions};
use omnifold_domain::ledger::written_for;
use omnifold_domain::report::Span;
use omnifold_domain::report::{AlertLedger, Applied, Merger, PartitionLedger};
use omnifold_domain::{Fold, Outcome, Output, PartitionState};
use omnifold_proto::json::event_from_json;
use omnifold_proto::{Alert, AlertKind, AlertState, ContributionSnapshot, Decision, Event, Severity};
use omnifold_proto::{LedgerEntry, LedgerKind};
use omnifold_reporter::json::{SNAPSHOT_SCHEMA, SnapshotJson};
use omnifold_reporter::page::render_page;
use omnifold_reporter::readback::latest_snapshots;
use omnifold_reporter::table::render_table;
use omnifold_reporter::view::WeekView;
use omnifold_reporter::{ReportTopics, Reporter, ReporterOptions};
use omnifold_runtime::deadletter::SOURCE_HEADER;
use omnifold_runtime::outbox::OUTBOX_HEADER;
use omnifold_runtime::{BrokerHealth, OutboxSender, Store, TopicOptions, load_contract};
use omnifold_testkit::{Broker, Record};
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::Decimal;

/// 2026-11-09T00:00:00Z, the Monday starting 2026-W46.
const T0: i64 = 1_794_182_400_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn at(days: i64, hours: i64) -> i64 {
    T0 + days * DAY + hours * HOUR
}

fn topic_options(prefix: &str) -> TopicOptions {
    TopicOptions { prefix: prefix.to_string(), events_partitions: 3, ..TopicOptions::default() }
}

fn options(broker: &Broker, prefix: &str, group: &str, store: &Path) -> ReporterOptions {
    ReporterOptions {
        kafka: kafka(broker),
        topics: topic_options(prefix),
        group_id: group.to_string(),
        contract: contract_path(),
        store: store.to_path_buf(),
        batch_max_events: 50,
        batch_max_ms: 20,
        exit_when_caught_up: true,
        broker_outage_max: None,
        group_instance_id: None,
        session_timeout_ms: 10_000,
    }
}

/// One instance with batches long enough to take in every partition's backlog at once, so
/// that the published revisions can be counted exactly.
fn patient(broker: &Broker, store: &Path) -> ReporterOptions {
    ReporterOptions { batch_max_ms: 500, ..options(broker, "omnifold.", "omnifold-reporter", store) }
}

async fn create_topics(broker: &Broker, prefix: &str) -> ReportTopics {
    let topics = ReportTopics::new(prefix);
    kafka(broker)
        .ensure_topics(&topics.contract.specs(&topic_options(prefix)))
        .await
        .expect("topics created");
    topics
}

/// The coordinator's store for the reporter's broker and topics, kept for the test binary's
/// life: the coordinator restarts where it stopped, as the reporter does.
fn coordinator_store(options: &ReporterOptions) -> PathBuf {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    let root = ROOT.get_or_init(|| tempfile::tempdir().expect("a temporary directory"));
    let name = format!("{}-{}", options.kafka.bootstrap_servers, options.topics.prefix);
    root.path().join(name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
}

/// The coordinator of the reporter's topics.
fn coordinator_options(options: &ReporterOptions, exit_when_caught_up: bool) -> CoordinatorOptions {
    CoordinatorOptions {
        kafka: options.kafka.clone(),
        topics: options.topics.clone(),
        group_id: format!("{}-coordinator", options.group_id),
        contract: contract_path(),
        store: coordinator_store(options),
        batch_max_events: 1_000,
        batch_max_ms: 20,
        exit_when_caught_up,
        http: None,
        engine: EngineOptions::default(),
        broker_outage_max: None,
        group_instance_id: None,
        session_timeout_ms: 10_000,
        changelog: true,
        changelog_interval_ms: 1_000,
        changelog_dump_records: 100_000,
    }
}

/// A coordinator of the reporter's topics running until stopped.
fn spawn_live_coordinator(options: &ReporterOptions) -> RunningCoordinator {
    spawn_coordinator(coordinator_options(options, false))
}

/// Runs the coordinator, then one reporter, in this process until the coordinator has folded
/// every event and the reporter reported everything the coordinator wrote.
async fn run_until_caught_up(options: ReporterOptions) {
    let coordinator = Coordinator::new(coordinator_options(&options, true)).expect("coordinator builds");
    tokio::time::timeout(Duration::from_secs(120), coordinator.run(std::future::pending()))
        .await
        .expect("coordinator caught up in time")
        .expect("coordinator ran");
    let reporter = Reporter::new(options).expect("reporter builds");
    tokio::time::timeout(Duration::from_secs(180), reporter.run(std::future::pending()))
        .await
        .expect("reporter caught up in time")
        .expect("reporter ran");
}

/// A reporter running in a task until stopped.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), omnifold_reporter::ReporterError>>,
}

impl Running {
    fn spawn(options: ReporterOptions) -> Running {
        let reporter = Reporter::new(options).expect("reporter builds");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(reporter.run(async {
            let _ = stopped.await;
        }));
        Running { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(90), self.task)
            .await
            .expect("reporter stopped in time")
            .expect("reporter task joined")
            .expect("reporter ran");
    }
}

/// Publishes events in the contract's JSON form, keyed like the connector keys them; each
/// key's events keep their order.
async fn publish_events(broker: &Broker, topic: &str, lines: &[String]) {
    let events: Vec<Event> = lines.iter().map(|l| event_from_json(l).expect("event json")).collect();
    let records: Vec<(String, Vec<u8>)> =
        events.iter().map(|e| (e.partition_key().to_string(), e.encode_to_vec())).collect();
    publish_records(broker, topic, &records).await;
}

async fn publish_alerts(broker: &Broker, topic: &str, alerts: &[Alert]) {
    let records: Vec<(String, Vec<u8>)> = alerts.iter().map(|a| (a.sku.clone(), a.encode_to_vec())).collect();
    publish_records(broker, topic, &records).await;
}

/// A RAISED alert; `accountable` is a channel id or `operations` (CONTRACT.md section 5).
fn alert(
    id: &str,
    kind: AlertKind,
    severity: Severity,
    sku: &str,
    (channels, accountable): (&[&str], &str),
    occurred_at_ms: i64,
) -> Alert {
    Alert {
        alert_id: id.to_string(),
        kind: kind as i32,
        state: AlertState::Raised as i32,
        severity: severity as i32,
        sku: sku.to_string(),
        channels: channels.iter().map(|c| c.to_string()).collect(),
        accountable: accountable.to_string(),
        occurred_at_ms,
        detected_at_ms: occurred_at_ms + 5,
        ..Alert::default()
    }
}

fn decode(records: &[Record]) -> Vec<ContributionSnapshot> {
    records
        .iter()
        .map(|r| {
            ContributionSnapshot::decode(r.value.as_deref().unwrap_or_default()).expect("snapshot decodes")
        })
        .collect()
}

/// The last revision of each key.
fn latest(snapshots: &[ContributionSnapshot]) -> BTreeMap<String, ContributionSnapshot> {
    let mut latest: BTreeMap<String, ContributionSnapshot> = BTreeMap::new();
    for snapshot in snapshots {
        let key = format!("{}/{}", snapshot.week, snapshot.channel);
        if latest.get(&key).is_none_or(|known| snapshot.revision > known.revision) {
            latest.insert(key, snapshot.clone());
        }
    }
    latest
}

/// The snapshot without what may differ between runs: how many revisions led to it.
fn normalized(snapshot: &ContributionSnapshot) -> Vec<u8> {
    ContributionSnapshot { revision: 0, changed_fields: Vec::new(), ..snapshot.clone() }.encode_to_vec()
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_else(|_| panic!("{text:?} is not a decimal"))
}

/// Compares figures numerically, as the contract asks.
fn assert_figures(snapshot: &ContributionSnapshot, want: &[(&str, &str)]) {
    let key = format!("{}/{}", snapshot.week, snapshot.channel);
    for (field, value) in want {
        let got = match *field {
            "gross_revenue" => snapshot.gross_revenue.clone(),
            "discounts" => snapshot.discounts.clone(),
            "net_revenue" => snapshot.net_revenue.clone(),
            "cogs" => snapshot.cogs.clone(),
            "restocked_cogs" => snapshot.restocked_cogs.clone(),
            "channel_fees" => snapshot.channel_fees.clone(),
            "fulfillment_costs" => snapshot.fulfillment_costs.clone(),
            "refunds" => snapshot.refunds.clone(),
            "contribution_before_operating" => snapshot.contribution_before_operating.clone(),
            "operating_cost" => snapshot.operating_cost.clone(),
            "contribution" => snapshot.contribution.clone(),
            "revenue_share" => snapshot.revenue_share.clone().unwrap_or_default(),
            "operating_cost_share" => snapshot.operating_cost_share.clone().unwrap_or_default(),
            other => panic!("unknown field {other}"),
        };
        assert_eq!(dec(&got), dec(value), "{key}.{field}");
    }
}

fn line(json: String) -> String {
    json
}

/// W46: shopify ships 60 of 100 units (discount 200 and fee 116 pro-rated), amazon 50 from
/// FBA, eu-market 30 in EUR, wholesale 200; shopify takes back 5 units. Unit costs: SKU-A 12
/// USD, SKU-B 20 EUR = 21.6 USD. W47: shopify ships its last 40 units. Two refused inputs.
fn week_events() -> (Vec<String>, Vec<String>) {
    let first_half = vec![
        line(format!(
            r#"{{"event_id":"e01","occurred_at_ms":{},"type":"CostSet","sku":"SKU-A","unit_cost":{{"amount":"12","currency":"USD"}}}}"#,
            at(0, 8)
        )),
        line(format!(
            r#"{{"event_id":"e02","occurred_at_ms":{},"type":"CostSet","sku":"SKU-B","unit_cost":{{"amount":"20","currency":"EUR"}}}}"#,
            at(0, 8)
        )),
        line(format!(
            r#"{{"event_id":"e03","channel":"shopify","occurred_at_ms":{},"type":"OrderLinePlaced","order_id":"S1","line_id":"1","sku":"SKU-A","quantity":100,"unit_price":{{"amount":"40","currency":"USD"}},"discount":{{"amount":"200","currency":"USD"}},"channel_fee":{{"amount":"116","currency":"USD"}}}}"#,
            at(0, 9)
        )),
        line(format!(
            r#"{{"event_id":"e04","channel":"shopify","occurred_at_ms":{},"type":"OrderLineShipped","order_id":"S1","line_id":"1","sku":"SKU-A","quantity":60,"location_id":"wh-nj","fulfillment_cost":{{"amount":"180","currency":"USD"}}}}"#,
            at(1, 10)
        )),
        line(format!(
            r#"{{"event_id":"e05","channel":"amazon","occurred_at_ms":{},"type":"OrderLinePlaced","order_id":"A1","line_id":"1","sku":"SKU-A","quantity":50,"location_id":"fba-us","unit_price":{{"amount":"45","currency":"USD"}},"channel_fee":{{"amount":"337.5","currency":"USD"}}}}"#,
            at(1, 11)
        )),
        line(format!(
            r#"{{"event_id":"e06","channel":"amazon","occurred_at_ms":{},"type":"OrderLineShipped","order_id":"A1","line_id":"1","sku":"SKU-A","quantity":50,"location_id":"fba-us","fulfillment_cost":{{"amount":"150","currency":"USD"}}}}"#,
            at(2, 10)
        )),
        line(format!(
            r#"{{"event_id":"e07","channel":"eu-market","occurred_at_ms":{},"type":"OrderLinePlaced","order_id":"E1","line_id":"1","sku":"SKU-B","quantity":30,"unit_price":{{"amount":"50","currency":"EUR"}},"discount":{{"amount":"60","currency":"EUR"}},"channel_fee":{{"amount":"180","currency":"EUR"}}}}"#,
            at(2, 12)
        )),
        line(format!(
            r#"{{"event_id":"e08","channel":"eu-market","occurred_at_ms":{},"type":"OrderLineShipped","order_id":"E1","line_id":"1","sku":"SKU-B","quantity":30,"location_id":"3pl-rotterdam","fulfillment_cost":{{"amount":"90","currency":"EUR"}}}}"#,
            at(3, 10)
        )),
        line(format!(
            r#"{{"event_id":"e09","channel":"wholesale","occurred_at_ms":{},"type":"OrderLinePlaced","order_id":"W1","line_id":"1","sku":"SKU-A","quantity":200,"unit_price":{{"amount":"25","currency":"USD"}}}}"#,
            at(3, 12)
        )),
        line(format!(
            r#"{{"event_id":"e10","channel":"wholesale","occurred_at_ms":{},"type":"OrderLineShipped","order_id":"W1","line_id":"1","sku":"SKU-A","quantity":200,"location_id":"wh-nj","fulfillment_cost":{{"amount":"100","currency":"USD"}}}}"#,
            at(4, 9)
        )),
        line(format!(
            r#"{{"event_id":"bad1","channel":"ebay","occurred_at_ms":{},"type":"OrderLinePlaced","order_id":"X1","line_id":"1","sku":"SKU-A","quantity":1,"unit_price":{{"amount":"1000","currency":"USD"}}}}"#,
            at(4, 10)
        )),
    ];
    let second_half = vec![
        line(format!(
            r#"{{"event_id":"e11","channel":"shopify","occurred_at_ms":{},"type":"OrderLineReturned","order_id":"S1","line_id":"1","sku":"SKU-A","quantity":5,"refund":{{"amount":"200","currency":"USD"}},"restock":true,"location_id":"wh-nj"}}"#,
            at(5, 9)
        )),
        line(format!(
            r#"{{"event_id":"e12","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-A","location_id":"wh-nj","on_hand":500}}"#,
            at(7, 2)
        )),
        line(format!(
            r#"{{"event_id":"e13","channel":"shopify","occurred_at_ms":{},"type":"OrderLineShipped","order_id":"S1","line_id":"1","sku":"SKU-A","quantity":40,"location_id":"wh-nj"}}"#,
            at(8, 10)
        )),
        line(format!(
            r#"{{"event_id":"e14","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-B","location_id":"wh-nj","on_hand":10}}"#,
            at(14, 2)
        )),
    ];
    (first_half, second_half)
}

/// Wholesale's late W46 order: 10 units of SKU-B at 30, cost 21.6 each.
fn late_events() -> Vec<String> {
    vec![
        line(format!(
            r#"{{"event_id":"e15","channel":"wholesale","occurred_at_ms":{},"type":"OrderLinePlaced","order_id":"W2","line_id":"1","sku":"SKU-B","quantity":10,"unit_price":{{"amount":"30","currency":"USD"}}}}"#,
            at(3, 15)
        )),
        line(format!(
            r#"{{"event_id":"e16","channel":"wholesale","occurred_at_ms":{},"type":"OrderLineShipped","order_id":"W2","line_id":"1","sku":"SKU-B","quantity":10,"location_id":"wh-nj"}}"#,
            at(3, 16)
        )),
    ]
}

const EVERY_CHANNEL: [&str; 4] = ["shopify", "amazon", "eu-market", "wholesale"];

/// Three CRITICAL OVERSELLs: amazon's dedicated pool and the shared pool running out after
/// stock moved (accountable to operations: nobody's FIX), and shopify's line e03 placed past
/// its published number (accountable to shopify).
fn week_alerts() -> Vec<Alert> {
    vec![
        alert(
            "oversell/SKU-A/pool=dedicated:amazon/e06",
            AlertKind::Oversell,
            Severity::Critical,
            "SKU-A",
            (&["amazon"], "operations"),
            at(2, 10),
        ),
        alert(
            "oversell/SKU-B/pool=shared/e08",
            AlertKind::Oversell,
            Severity::Critical,
            "SKU-B",
            (&EVERY_CHANNEL, "operations"),
            at(3, 10),
        ),
        alert(
            "oversell/SKU-A/pool=shared/e03",
            AlertKind::Oversell,
            Severity::Critical,
            "SKU-A",
            (&EVERY_CHANNEL, "shopify"),
            at(0, 9),
        ),
    ]
}

/// The figures the domain computes from the same inputs in one partition (the events through
/// the pure fold, the report from its ledger, its alerts and `alerts`): the oracle for the
/// last revision of every key.
fn reference(lines: &[String], alerts: &[Alert]) -> BTreeMap<String, ContributionSnapshot> {
    let rules = load_contract(&contract_path()).expect("contract");
    let (fold, mut state) = (Fold::new(rules.clone()), PartitionState::default());
    let (mut ledger, mut alert_ledger, mut merger) =
        (PartitionLedger::default(), AlertLedger::default(), Merger::default());
    let (mut ledger_cells, mut alert_cells) = (BTreeSet::new(), BTreeSet::new());
    let mut raised: Vec<Alert> = alerts.to_vec();
    for (offset, l) in lines.iter().enumerate() {
        let (outcome, entries) =
            written_for(&fold, &mut state, &event_from_json(l).unwrap(), (0, offset as i64));
        if let Outcome::Applied { outputs, .. } = outcome {
            raised.extend(outputs.into_iter().filter_map(|o| match o {
                Output::Alert(alert) => Some(alert),
                _ => None,
            }));
        }
        for entry in &entries {
            if let Applied::Folded { cells } = ledger.apply(&rules, entry).expect("entries read") {
                ledger_cells.extend(cells);
            }
        }
    }
    for alert in &raised {
        alert_cells.extend(alert_ledger.apply(&rules, alert));
    }
    let records = [ledger.record(0, 1, &ledger_cells), alert_ledger.record(0, 1, &alert_cells)];
    merger.apply_all(&rules, &records, &[], &mut HashSet::new());
    merger.emitted.values().map(|s| (s.key(), s.to_proto())).collect()
}

fn assert_each_revision_once(snapshots: &[ContributionSnapshot]) {
    let mut seen = BTreeSet::new();
    for snapshot in snapshots {
        let id = (snapshot.week.clone(), snapshot.channel.clone(), snapshot.revision);
        assert!(seen.insert(id.clone()), "revision {id:?} was published twice");
    }
    let keys: BTreeSet<(String, String)> = seen.iter().map(|(w, c, _)| (w.clone(), c.clone())).collect();
    for (week, channel) in keys {
        let revisions: Vec<u32> =
            seen.iter().filter(|(w, c, _)| *w == week && *c == channel).map(|(_, _, r)| *r).collect();
        let want: Vec<u32> = (1..=revisions.len() as u32).collect();
        assert_eq!(revisions, want, "{week}/{channel}: revisions are 1, 2, ... with no gap");
    }
}

/// The snapshots a reporter makes of one ledger partition's entries, and the span of
/// accepted times it learned from them.
fn report_of(
    rules: &omnifold_domain::Rules,
    entries: &[LedgerEntry],
) -> (Span, BTreeMap<String, ContributionSnapshot>) {
    let (mut ledger, mut merger, mut cells) =
        (PartitionLedger::default(), Merger::default(), BTreeSet::new());
    for entry in entries {
        if let Applied::Folded { cells: changed } = ledger.apply(rules, entry).expect("entries read") {
            cells.extend(changed);
        }
    }
    merger.apply_all(rules, &[ledger.record(0, 1, &cells)], &[], &mut HashSet::new());
    (ledger.span, merger.emitted.values().map(|s| (s.key(), s.to_proto())).collect())
}

fn is_marker(entry: &LedgerEntry) -> bool {
    entry.kind == LedgerKind::Progress as i32
}

/// A coordinator's sender far behind its fold: every event's batch, one progress marker each,
/// waits in the outbox when the sender starts (as after a crash, or a fold that outran the
/// broker). The sender merges the partition's markers into one, and the reporter still learns
/// every accepted time from it: both weeks close with the figures of the ledger as written.
#[tokio::test(flavor = "multi_thread")]
async fn a_sender_far_behind_merges_the_markers_and_every_week_still_closes() {
    let broker = Broker::start().await.expect("broker starts");
    let topics = create_topics(&broker, "omnifold.").await;
    let (first_half, second_half) = week_events();
    let rules = load_contract(&contract_path()).expect("contract");
    let (fold, mut state) = (Fold::new(rules.clone()), PartitionState::default());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).expect("store opens");
    let currency = rules.contract.reporting_currency.clone();
    let mut written = Vec::new();
    for (offset, line) in first_half.iter().chain(&second_half).enumerate() {
        // what the coordinator's fold loop writes for a batch of this one event
        let event = event_from_json(line).expect("event json");
        let mut mark = Mark::at(offset as i64);
        let mut records = Vec::new();
        if let Outcome::Applied { outputs, .. } = fold.apply(&mut state, &event) {
            mark.accepted(event.occurred_at_ms);
            let position = Position { partition: 0, offset: offset as i64 };
            for output in outputs.into_iter().filter(|o| matches!(o, Output::Ledger(_))) {
                records.extend(output_records(&topics.contract, output, position));
            }
        }
        records.push(marker(&topics.contract, &currency, 0, mark, false));
        let mut commit = store.begin().expect("commit begins");
        for record in records.iter().filter(|r| r.topic == topics.contract.ledger) {
            commit.push_output(record);
            written.push(LedgerEntry::decode(record.value.as_slice()).expect("ledger entry"));
        }
        store.commit(commit).expect("commit");
    }

    let partitions = HashMap::from([(topics.contract.ledger.to_string(), 3)]);
    let mut sender = OutboxSender::new(store, &kafka(&broker), partitions, BrokerHealth::new(None))
        .expect("sender builds")
        .merging_barriers(merge_markers);
    sender.start().await.expect("the outbox is sent");
    let delivered: Vec<LedgerEntry> = read_to_end(&broker, &topics.contract.ledger)
        .await
        .iter()
        .map(|record| LedgerEntry::decode(record.value.as_deref().unwrap_or_default()).expect("ledger entry"))
        .collect();

    let events = first_half.len() + second_half.len();
    assert_eq!(written.iter().filter(|e| is_marker(e)).count(), events);
    let markers: Vec<&LedgerEntry> = delivered.iter().filter(|e| is_marker(e)).collect();
    assert_eq!(markers.len(), 1, "one marker for the partition, the last, merged from all");
    assert_eq!(markers[0].event_offset, events as i64 - 1, "it is the last position");
    assert!(is_marker(delivered.last().unwrap()), "after every entry it covers");
    let money =
        |entries: &[LedgerEntry]| entries.iter().filter(|e| !is_marker(e)).cloned().collect::<Vec<_>>();
    assert_eq!(money(&delivered), money(&written), "every money entry, once, in order");

    let (want_span, want) = report_of(&rules, &written);
    let (span, got) = report_of(&rules, &delivered);
    assert_eq!(span, want_span, "the merged marker spans every accepted time");
    let weeks: BTreeSet<&str> = got.values().map(|s| s.week.as_str()).collect();
    assert_eq!(weeks, BTreeSet::from(["2026-W46", "2026-W47"]), "both weeks close");
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn weekly_figures_restarts_and_restatement_through_the_broker() {
    let broker = Broker::start().await.expect("broker starts");
    let topics = create_topics(&broker, "omnifold.").await;
    let store = tempfile::tempdir().unwrap();
    let (first_half, second_half) = week_events();

    // Run 1 stops in the middle of W46: nothing is closed, nothing is published.
    publish_events(&broker, &topics.contract.events, &first_half).await;
    publish_records(
        &broker,
        &topics.contract.events,
        &[("SKU-A".to_string(), b"not a protobuf event \xff".to_vec())],
    )
    .await;
    publish_alerts(&broker, &topics.contract.alerts, &week_alerts()).await;
    run_until_caught_up(patient(&broker, store.path())).await;
    assert!(read_to_end(&broker, &topics.contract.snapshots).await.is_empty(), "no week is closed yet");

    // Run 2, from the same store: W46 closes at 7d02:00, W47 at 14d02:00.
    publish_events(&broker, &topics.contract.events, &second_half).await;
    run_until_caught_up(patient(&broker, store.path())).await;
    let published = decode(&read_to_end(&broker, &topics.contract.snapshots).await);
    assert_eq!(published.len(), 8, "2 weeks x 4 channels, each once");
    assert!(published.iter().all(|s| s.revision == 1));
    let snapshots = latest(&published);
    let keys: Vec<&str> = snapshots.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "2026-W46/amazon",
            "2026-W46/eu-market",
            "2026-W46/shopify",
            "2026-W46/wholesale",
            "2026-W47/amazon",
            "2026-W47/eu-market",
            "2026-W47/shopify",
            "2026-W47/wholesale",
        ]
    );

    // shopify: 60 x 40 = 2400; discount 200 x 60/100 = 120; fee 116 x 60/100 = 69.6; cogs 60 x 12;
    // fulfillment 180; refund 200; restocked 5 x 12 = 60: 2280 - 720 - 69.6 - 180 - 200 + 60 = 1170.4
    let shopify = &snapshots["2026-W46/shopify"];
    assert_figures(
        shopify,
        &[
            ("gross_revenue", "2400"),
            ("discounts", "120"),
            ("net_revenue", "2280"),
            ("cogs", "720"),
            ("restocked_cogs", "60"),
            ("channel_fees", "69.6"),
            ("fulfillment_costs", "180"),
            ("refunds", "200"),
            ("contribution_before_operating", "1170.4"),
            ("operating_cost", "1800"),
            ("contribution", "-629.6"),
            ("operating_cost_share", "0.276073619632"),
        ],
    );
    assert_eq!((shopify.orders_shipped, shopify.units_shipped), (1, 60));
    assert_eq!(shopify.decision, Decision::Fix as i32);
    assert_eq!(shopify.owner, "Maya Chen");
    assert_eq!(shopify.critical_alerts, 1, "the oversell its line e03 caused");
    assert_eq!(
        shopify.next_action,
        "Maya Chen to stop shopify selling past its allocation and lift shopify's contribution of -629.60 USD: \
         1 oversell alert on 1 SKU (SKU-A) in 2026-W46."
    );
    // amazon: 50 x 45 = 2250, fee 337.5, cogs 600, fulfillment 150. No stock is counted
    // before e12 (7d02:00), so the coordinator finds every placement of W46 short: its own
    // OVERSELLs (accountable to the placing channel, CONTRACT.md section 5) join the five
    // published above, and amazon's placement e05 makes it accountable for one: FIX, with
    // the oversell first in its next action.
    let amazon = &snapshots["2026-W46/amazon"];
    assert_figures(
        amazon,
        &[
            ("net_revenue", "2250"),
            ("cogs", "600"),
            ("contribution_before_operating", "1162.5"),
            ("contribution", "-1337.5"),
        ],
    );
    assert_eq!(
        amazon.alerts_raised.iter().map(|a| (a.kind.as_str(), a.count)).collect::<Vec<_>>(),
        [("ALLOCATION_BREACH", 1), ("LOW_COVER", 2), ("NEGATIVE_STOCK", 3), ("OVERSELL", 5)]
    );
    assert_eq!((amazon.critical_alerts, amazon.decision), (1, Decision::Fix as i32));
    assert_eq!(
        amazon.next_action,
        "Luis Ortega to stop amazon selling past its allocation and lift amazon's contribution of -1337.50 USD: \
         1 oversell alert on 1 SKU (SKU-A) in 2026-W46."
    );
    // eu-market in USD: 30 x 50 x 1.08 = 1620, discount 64.8, fee 194.4, cogs 30 x 21.6 = 648,
    // fulfillment 97.2; operating 1500 EUR = 1620.
    assert_figures(
        &snapshots["2026-W46/eu-market"],
        &[
            ("gross_revenue", "1620"),
            ("discounts", "64.8"),
            ("net_revenue", "1555.2"),
            ("cogs", "648"),
            ("channel_fees", "194.4"),
            ("fulfillment_costs", "97.2"),
            ("contribution_before_operating", "615.6"),
            ("operating_cost", "1620"),
            ("contribution", "-1004.4"),
        ],
    );
    // wholesale: 200 x 25 = 5000, cogs 2400, fulfillment 100: 2500 - 600 = 1900, the only KEEP:
    // the shared-pool oversells name it, but none is accountable to it.
    let wholesale = &snapshots["2026-W46/wholesale"];
    assert_figures(wholesale, &[("contribution", "1900"), ("revenue_share", "0.451051852921")]);
    assert_eq!(wholesale.decision, Decision::Keep as i32);
    assert_eq!(
        (
            wholesale.alerts_raised.iter().map(|a| (a.kind.as_str(), a.count)).collect::<Vec<_>>(),
            wholesale.critical_alerts
        ),
        (vec![("ALLOCATION_BREACH", 1), ("LOW_COVER", 2), ("NEGATIVE_STOCK", 2), ("OVERSELL", 3)], 0)
    );
    // W47: shopify's last 40 units: 1600 - 80 - 480 - 46.4 = 993.6; - 1800.
    assert_figures(
        &snapshots["2026-W47/shopify"],
        &[
            ("gross_revenue", "1600"),
            ("discounts", "80"),
            ("channel_fees", "46.4"),
            ("cogs", "480"),
            ("contribution_before_operating", "993.6"),
            ("contribution", "-806.4"),
            ("revenue_share", "1"),
        ],
    );
    assert_figures(&snapshots["2026-W47/amazon"], &[("net_revenue", "0"), ("contribution", "-2500")]);
    assert_eq!(snapshots["2026-W47/amazon"].revenue_share.as_deref(), Some("0"));
    assert_eq!(snapshots["2026-W47/amazon"].contribution_margin, None, "no margin without revenue");

    // The JSON twin: same keys, same figures, valid against the schema.
    let json_records = read_to_end(&broker, &topics.contract.snapshots_json).await;
    assert_eq!(json_records.len(), 8);
    check_json(&json_records, &snapshots);

    // The unknown channel and the undecodable payload are excluded from every figure and
    // dead-lettered once, by the coordinator: the reporter never reads the events.
    let dead = read_to_end(&broker, &topics.contract.deadletter).await;
    let sources: Vec<String> = dead
        .iter()
        .map(|record| {
            String::from_utf8_lossy(common::header(record, SOURCE_HEADER).unwrap_or_default()).into_owned()
        })
        .collect();
    assert_eq!(dead.len(), 2, "one dead letter per bad event: {sources:?}");
    assert!(sources.iter().all(|s| s.starts_with("omnifold.events.v1/")), "{sources:?}");
    let writers: BTreeSet<String> = dead.iter().filter_map(writer).collect();
    assert_eq!(writers.len(), 1, "one writer, the coordinator: {writers:?}");

    // Run 3: a late W46 order restates W46 (every revenue share moves) and nothing else. Its
    // placement finds SKU-B short in W46 too, so the coordinator raises its alerts in W46.
    publish_events(&broker, &topics.contract.events, &late_events()).await;
    run_until_caught_up(patient(&broker, store.path())).await;
    let published = decode(&read_to_end(&broker, &topics.contract.snapshots).await);
    assert_eq!(published.len(), 12, "W46 restated for every channel");
    assert_each_revision_once(&published);
    let snapshots = latest(&published);
    let wholesale = &snapshots["2026-W46/wholesale"];
    assert_eq!(wholesale.revision, 2);
    assert_figures(wholesale, &[("gross_revenue", "5300"), ("cogs", "2616"), ("contribution", "1984")]);
    assert_eq!((wholesale.orders_shipped, wholesale.units_shipped), (2, 210));
    assert_eq!(
        wholesale.changed_fields,
        [
            "gross_revenue",
            "net_revenue",
            "cogs",
            "contribution_before_operating",
            "contribution",
            "contribution_margin",
            "revenue_share",
            "orders_shipped",
            "units_shipped",
            "alerts_raised",
            "next_action",
        ]
    );
    assert_eq!(snapshots["2026-W47/shopify"].revision, 1);

    // Every last revision is what the domain computes from the same inputs.
    let mut all = first_half.clone();
    all.extend(second_half);
    all.extend(late_events());
    let want = reference(&all, &week_alerts());
    let got: BTreeMap<&String, Vec<u8>> = snapshots.iter().map(|(k, s)| (k, normalized(s))).collect();
    let want: BTreeMap<&String, Vec<u8>> = want.iter().map(|(k, s)| (k, normalized(s))).collect();
    assert_eq!(got, want, "the broker run equals the pure computation");
    check_json(&read_to_end(&broker, &topics.contract.snapshots_json).await, &snapshots);
}

/// Records in shopify's W46 backlog, and what each adds to its operating cost.
const BACKLOG: i64 = 500;
const BACKLOG_COST: &str = "1.25";

/// Publishes to one partition, one record per produce request and so per record batch: a
/// consumer that fetches a few hundred bytes at a time needs a fetch for every record or two.
async fn publish_one_by_one(broker: &Broker, topic: &str, partition: i32, events: &[String]) {
    let producer: FutureProducer = broker
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    for line in events {
        let event = event_from_json(line).expect("event json");
        let value = event.encode_to_vec();
        let record = FutureRecord::to(topic).partition(partition).key(event.partition_key()).payload(&value);
        producer.send(record, Duration::from_secs(10)).await.expect("delivered");
    }
}

/// CONTRACT.md section 7: a week is emitted as revision 1 only once every events partition
/// is read to its end or to an accepted event at or after the week's end. Partition 1 holds a
/// backlog of W46 costs for shopify, read a record or two per fetch; partition 0 holds one
/// event past W46's end (watermark 7d01:00), read in the first fetch, which closes W46;
/// partition 2 is empty. While partition 1 is behind and still in W46 nothing may be
/// published: W46 comes out once, with the whole backlog.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_revision_waits_for_a_partition_still_behind() {
    let broker = Broker::start().await.expect("broker starts");
    let topics = create_topics(&broker, "omnifold.").await;
    let backlog: Vec<String> = (0..BACKLOG)
        .map(|i| {
            format!(
                r#"{{"event_id":"cost-{i}","channel":"shopify","occurred_at_ms":{},"type":"ChannelCostRecorded","category":"ads","amount":{{"amount":"{BACKLOG_COST}","currency":"USD"}},"period_start_ms":{},"period_end_ms":{}}}"#,
                at(1, 0) + i,
                at(1, 0),
                at(2, 0)
            )
        })
        .collect();
    publish_one_by_one(&broker, &topics.contract.events, 1, &backlog).await;
    let closing = format!(
        r#"{{"event_id":"close","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-A","location_id":"wh-nj","on_hand":1}}"#,
        at(7, 2)
    );
    publish_one_by_one(&broker, &topics.contract.events, 0, &[closing]).await;

    let store = tempfile::tempdir().unwrap();
    let mut options = options(&broker, "omnifold.", "omnifold-reporter", store.path());
    options.kafka.extra.insert("max.partition.fetch.bytes".into(), "512".into());
    run_until_caught_up(options).await;

    let published = decode(&read_to_end(&broker, &topics.contract.snapshots).await);
    let revisions: Vec<String> =
        published.iter().map(|s| format!("{}/{} r{}", s.week, s.channel, s.revision)).collect();
    assert_eq!(
        published.len(),
        4,
        "W46 once per channel, nothing before the backlog was read: {revisions:?}"
    );
    assert!(published.iter().all(|s| s.week == "2026-W46" && s.revision == 1), "{revisions:?}");
    let shopify = &latest(&published)["2026-W46/shopify"];
    let backlog_cost = dec(BACKLOG_COST) * Decimal::from(BACKLOG);
    assert_figures(shopify, &[("operating_cost", &(dec("1800") + backlog_cost).to_string())]);
}

/// Every JSON record validates against the schema and says what its protobuf twin says.
fn check_json(records: &[Record], snapshots: &BTreeMap<String, ContributionSnapshot>) {
    let schema: serde_json::Value = serde_json::from_str(SNAPSHOT_SCHEMA).expect("schema json");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let mut last: BTreeMap<String, SnapshotJson> = BTreeMap::new();
    for record in records {
        let value: serde_json::Value =
            serde_json::from_slice(record.value.as_deref().unwrap()).expect("json");
        let errors: Vec<String> =
            validator.iter_errors(&value).map(|e| format!("{}: {e}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{value}: {errors:#?}");
        let json: SnapshotJson = serde_json::from_value(value).expect("the json form");
        let key = String::from_utf8(record.key.clone().unwrap()).unwrap();
        assert_eq!(key, format!("{}/{}", json.week, json.channel));
        if last.get(&key).is_none_or(|known| json.revision > known.revision) {
            last.insert(key, json);
        }
    }
    let want: BTreeMap<String, SnapshotJson> =
        snapshots.iter().map(|(k, s)| (k.clone(), SnapshotJson::from(s))).collect();
    assert_eq!(last, want);
}

/// A deterministic three-week workload: 4 channels, 12 SKUs, orders of one or two lines
/// (so an order spans partitions), partial shipments, cancellations, returns, cost changes,
/// channel costs across a week boundary, refused events and late events; plus alerts.
fn workload() -> (Vec<String>, Vec<Alert>) {
    let channels =
        [("shopify", "wh-nj"), ("amazon", "fba-us"), ("eu-market", "3pl-rotterdam"), ("wholesale", "wh-nj")];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut timed: Vec<(i64, String)> = Vec::new();
    let mut push = |time: i64, json: String| timed.push((time, json));
    for s in 0..12 {
        let currency = if s % 3 == 0 { "EUR" } else { "USD" };
        push(
            at(0, 1) + s,
            format!(
                r#"{{"event_id":"cost-{s}","occurred_at_ms":{},"type":"CostSet","sku":"SKU-{s}","unit_cost":{{"amount":"{}.5","currency":"{currency}"}}}}"#,
                at(0, 1) + s,
                4 + s
            ),
        );
        push(
            at(9, 3) + s,
            format!(
                r#"{{"event_id":"cost2-{s}","occurred_at_ms":{},"type":"CostSet","sku":"SKU-{s}","unit_cost":{{"amount":"{}","currency":"USD"}}}}"#,
                at(9, 3) + s,
                6 + s
            ),
        );
    }
    let mut late = Vec::new();
    for n in 0..110i64 {
        let (channel, location) = channels[next(4) as usize];
        let placed_at = at(n * 20 / 110, 2 + next(12) as i64);
        let skus: Vec<u64> = if next(3) == 0 { vec![next(12), 12 + next(6)] } else { vec![next(12)] };
        for (l, sku) in skus.iter().enumerate() {
            let sku = sku % 12;
            let quantity = 1 + next(9) as i64;
            let currency = if channel == "eu-market" { "EUR" } else { "USD" };
            let price = 10 + next(50);
            let extras = match next(3) {
                0 => format!(r#","discount":{{"amount":"{}","currency":"{currency}"}}"#, next(20)),
                1 => format!(r#","channel_fee":{{"amount":"{}.25","currency":"{currency}"}}"#, next(9)),
                _ => String::new(),
            };
            let id = format!("{n}-{l}");
            let mut events = vec![(
                placed_at,
                format!(
                    r#"{{"event_id":"p{id}","channel":"{channel}","occurred_at_ms":{placed_at},"type":"OrderLinePlaced","order_id":"O{n}","line_id":"{l}","sku":"SKU-{sku}","quantity":{quantity},"location_id":"{location}","unit_price":{{"amount":"{price}.99","currency":"{currency}"}}{extras}}}"#
                ),
            )];
            let first = 1 + next(quantity as u64) as i64;
            let ship_at = placed_at + HOUR * (1 + next(30) as i64);
            events.push((ship_at, format!(r#"{{"event_id":"s{id}","channel":"{channel}","occurred_at_ms":{ship_at},"type":"OrderLineShipped","order_id":"O{n}","line_id":"{l}","sku":"SKU-{sku}","quantity":{first},"location_id":"{location}","fulfillment_cost":{{"amount":"{}","currency":"USD"}}}}"#, next(5))));
            let rest_at = ship_at + DAY;
            if first < quantity && next(2) == 0 {
                events.push((rest_at, format!(r#"{{"event_id":"r{id}","channel":"{channel}","occurred_at_ms":{rest_at},"type":"OrderLineShipped","order_id":"O{n}","line_id":"{l}","sku":"SKU-{sku}","quantity":{},"location_id":"{location}"}}"#, quantity - first)));
            } else if first < quantity {
                events.push((rest_at, format!(r#"{{"event_id":"c{id}","channel":"{channel}","occurred_at_ms":{rest_at},"type":"OrderLineCancelled","order_id":"O{n}","line_id":"{l}","sku":"SKU-{sku}"}}"#)));
            }
            if next(5) == 0 {
                let back_at = rest_at + DAY;
                events.push((back_at, format!(r#"{{"event_id":"b{id}","channel":"{channel}","occurred_at_ms":{back_at},"type":"OrderLineReturned","order_id":"O{n}","line_id":"{l}","sku":"SKU-{sku}","quantity":1,"refund":{{"amount":"{price}","currency":"{currency}"}},"restock":{},"location_id":"{location}"}}"#, next(2) == 0)));
            }
            if n % 23 == 0 {
                events.push((ship_at + 1, format!(r#"{{"event_id":"x{id}","channel":"{channel}","occurred_at_ms":{},"type":"OrderLineShipped","order_id":"O{n}","line_id":"{l}","sku":"SKU-{sku}","quantity":99,"location_id":"{location}"}}"#, ship_at + 1)));
            }
            if n % 37 == 5 {
                late.extend(events);
            } else {
                for (time, json) in events {
                    push(time, json);
                }
            }
        }
    }
    push(
        at(5, 0),
        format!(
            r#"{{"event_id":"ads-1","channel":"amazon","occurred_at_ms":{},"type":"ChannelCostRecorded","category":"ads","amount":{{"amount":"700","currency":"USD"}},"period_start_ms":{},"period_end_ms":{}}}"#,
            at(5, 0),
            at(5, 0),
            at(12, 0)
        ),
    );
    push(
        at(15, 0),
        format!(
            r#"{{"event_id":"fair-1","channel":"eu-market","occurred_at_ms":{},"type":"ChannelCostRecorded","category":"fair","amount":{{"amount":"1000","currency":"EUR"}},"period_start_ms":{},"period_end_ms":{}}}"#,
            at(15, 0),
            at(13, 12),
            at(16, 12)
        ),
    );
    push(
        at(21, 2),
        format!(
            r#"{{"event_id":"close","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-0","location_id":"wh-nj","on_hand":1}}"#,
            at(21, 2)
        ),
    );
    timed.sort_by_key(|(time, _)| *time);
    let mut lines: Vec<String> = timed.into_iter().map(|(_, json)| json).collect();
    late.sort_by_key(|(time, _)| *time);
    lines.extend(late.into_iter().map(|(_, json)| json));
    use {AlertKind as K, Severity as S};
    /// id, kind, severity, SKU, channels named, accountable, event time
    type Row<'a> = (&'a str, K, S, &'a str, &'a [&'a str], &'a str, i64);
    let table: [Row; 7] = [
        ("a1", K::Oversell, S::Critical, "SKU-1", &["shopify", "amazon"], "amazon", at(1, 5)),
        ("a2", K::LowCover, S::Warning, "SKU-2", &EVERY_CHANNEL, "operations", at(8, 5)),
        ("a3", K::MapViolation, S::Critical, "SKU-3", &["eu-market"], "eu-market", at(15, 5)),
        ("a4", K::CompetitorUndercut, S::Info, "SKU-4", &["wholesale"], "wholesale", at(16, 5)),
        ("a1", K::Oversell, S::Critical, "SKU-1", &["shopify", "amazon"], "amazon", at(1, 5)),
        ("a5", K::PriceBelowFloor, S::Critical, "SKU-5", &["amazon"], "amazon", at(2, 5)),
        ("a6", K::Oversell, S::Critical, "SKU-6", &EVERY_CHANNEL, "operations", at(9, 5)),
    ];
    let alerts = table
        .iter()
        .map(|&(id, kind, severity, sku, channels, accountable, time)| {
            alert(id, kind, severity, sku, (channels, accountable), time)
        })
        .collect();
    (lines, alerts)
}

async fn group_members(broker: &Broker, group: &str) -> usize {
    let config = broker.client_config();
    let group = group.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = config.create().ok()?;
        let list =
            rdkafka::consumer::Consumer::fetch_group_list(&consumer, Some(&group), Duration::from_secs(5))
                .ok()?;
        Some(list.groups().iter().find(|g| g.name() == group).map_or(0, |g| g.members().len()))
    })
    .await
    .unwrap()
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_in_one_group_equal_one() {
    let broker = Broker::start().await.expect("broker starts");
    let (lines, alerts) = workload();

    // One instance over its own copy of the topics.
    let single = create_topics(&broker, "single.").await;
    publish_events(&broker, &single.contract.events, &lines).await;
    publish_alerts(&broker, &single.contract.alerts, &alerts).await;
    let store = tempfile::tempdir().unwrap();
    run_until_caught_up(options(&broker, "single.", "single", store.path())).await;
    let single_published = decode(&read_to_end(&broker, &single.contract.snapshots).await);
    let want = latest(&single_published);
    assert_eq!(want.len(), 4 * 3, "3 weeks x 4 channels");
    assert_each_revision_once(&single_published);

    // Two instances in one group; the events arrive once both have joined.
    let pair = create_topics(&broker, "pair.").await;
    let (store_a, store_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let live = |store: &Path| ReporterOptions {
        exit_when_caught_up: false,
        ..options(&broker, "pair.", "pair", store)
    };
    let coordinator = spawn_live_coordinator(&live(store_a.path()));
    let a = Running::spawn(live(store_a.path()));
    let b = Running::spawn(live(store_b.path()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while group_members(&broker, "pair").await < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    publish_events(&broker, &pair.contract.events, &lines).await;
    publish_alerts(&broker, &pair.contract.alerts, &alerts).await;

    converge(&broker, &pair, &want, "two instances").await;

    // Both instances folded input partitions: the partials come from two writers.
    let partials = read_to_end(&broker, &pair.partials).await;
    let writers: BTreeSet<String> = partials.iter().filter_map(writer).collect();
    assert_eq!(writers.len(), 2, "partials from {writers:?}");

    // A leaves: B takes its partitions (and the merge stage, if A had it); late inputs
    // restate closed weeks on both sides.
    a.stop().await;
    let (late_lines, late_alerts) = late_workload(1);
    let want = publish_to_both(&broker, (&single, &pair), &late_lines, &late_alerts, store.path()).await;
    converge(&broker, &pair, &want, "one instance after the other left").await;

    // C joins with an empty store and B leaves: C owns everything, the merge stage included,
    // and must neither repeat nor lose a revision.
    let before_c: BTreeSet<String> =
        read_to_end(&broker, &pair.contract.snapshots).await.iter().filter_map(writer).collect();
    let store_c = tempfile::tempdir().unwrap();
    let c = Running::spawn(live(store_c.path()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    b.stop().await;
    let (late_lines, late_alerts) = late_workload(2);
    let want = publish_to_both(&broker, (&single, &pair), &late_lines, &late_alerts, store.path()).await;
    converge(&broker, &pair, &want, "a fresh instance alone").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.stop().await;
    coordinator.stop().await;

    let single_published = decode(&read_to_end(&broker, &single.contract.snapshots).await);
    let pair_records = read_to_end(&broker, &pair.contract.snapshots).await;
    let pair_published = decode(&pair_records);
    assert_each_revision_once(&pair_published);
    let got = latest(&pair_published);
    assert_eq!(got.len(), want.len());
    for (key, snapshot) in &got {
        assert_eq!(normalized(snapshot), normalized(&want[key]), "{key}: the last revision differs");
    }
    check_json(&read_to_end(&broker, &pair.contract.snapshots_json).await, &got);
    let after_c: BTreeSet<String> = pair_records.iter().filter_map(writer).collect();
    assert!(
        after_c.difference(&before_c).count() == 1,
        "the fresh instance took the merge stage over and emitted"
    );
    let identical = got.iter().filter(|(k, s)| s.encode_to_vec() == want[*k].encode_to_vec()).count();
    println!(
        "{identical} of {} last revisions are byte-identical including their revision number \
         ({} records from one instance, {} from the group)",
        got.len(),
        single_published.len(),
        pair_published.len()
    );
}

/// The instance (outbox writer id) that sent a record.
fn writer(record: &Record) -> Option<String> {
    let stamp = common::header(record, OUTBOX_HEADER)?;
    Some(String::from_utf8_lossy(stamp).split(':').next().unwrap_or_default().to_string())
}

/// Late inputs for a closed week: a W46 order for shopify, a W47 cost for wholesale, an alert.
fn late_workload(round: i64) -> (Vec<String>, Vec<Alert>) {
    let (placed, shipped, cost) = (at(2, 3 + round), at(2, 5 + round), at(8, round));
    let lines = vec![
        format!(
            r#"{{"event_id":"late-p{round}","channel":"shopify","occurred_at_ms":{placed},"type":"OrderLinePlaced","order_id":"L{round}","line_id":"1","sku":"SKU-3","quantity":4,"unit_price":{{"amount":"19.5","currency":"USD"}},"discount":{{"amount":"3","currency":"USD"}}}}"#
        ),
        format!(
            r#"{{"event_id":"late-s{round}","channel":"shopify","occurred_at_ms":{shipped},"type":"OrderLineShipped","order_id":"L{round}","line_id":"1","sku":"SKU-3","quantity":3,"location_id":"wh-nj"}}"#
        ),
        format!(
            r#"{{"event_id":"late-c{round}","channel":"wholesale","occurred_at_ms":{cost},"type":"ChannelCostRecorded","category":"samples","amount":{{"amount":"140","currency":"USD"}},"period_start_ms":{},"period_end_ms":{}}}"#,
            at(13, 0),
            at(15, 0)
        ),
    ];
    let alert = alert(
        &format!("late-{round}"),
        AlertKind::MapViolation,
        Severity::Critical,
        "SKU-7",
        (&["wholesale"], "wholesale"),
        at(9, round),
    );
    (lines, vec![alert])
}

/// Publishes to both copies, brings the single instance up to date (a restart from its
/// store) and returns its last revisions.
async fn publish_to_both(
    broker: &Broker,
    (single, pair): (&ReportTopics, &ReportTopics),
    lines: &[String],
    alerts: &[Alert],
    single_store: &Path,
) -> BTreeMap<String, ContributionSnapshot> {
    for topics in [single, pair] {
        publish_events(broker, &topics.contract.events, lines).await;
        publish_alerts(broker, &topics.contract.alerts, alerts).await;
    }
    run_until_caught_up(options(broker, "single.", "single", single_store)).await;
    let published = decode(&read_to_end(broker, &single.contract.snapshots).await);
    assert_each_revision_once(&published);
    latest(&published)
}

/// Waits until the group's last revisions equal `want` (revision numbers aside).
async fn converge(
    broker: &Broker,
    pair: &ReportTopics,
    want: &BTreeMap<String, ContributionSnapshot>,
    what: &str,
) {
    let want: BTreeMap<String, Vec<u8>> = want.iter().map(|(k, s)| (k.clone(), normalized(s))).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let (options, topic) = (kafka(broker), pair.contract.snapshots.clone());
        let got = tokio::task::spawn_blocking(move || latest_snapshots(&options, &topic)).await.unwrap();
        let got: BTreeMap<String, Vec<u8>> =
            got.unwrap_or_default().iter().map(|(k, s)| (k.clone(), normalized(s))).collect();
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: never reached the single instance's snapshots"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `target/test-artifacts`, next to the build output.
#[tokio::test(flavor = "multi_thread")]
async fn the_weekly_page_in_a_terminal_over_http_and_in_a_browser() {
    let broker = Broker::start().await.expect("broker starts");
    let topics = create_topics(&broker, "omnifold.").await;
    let (mut lines, second_half) = week_events();
    lines.extend(second_half);
    publish_events(&broker, &topics.contract.events, &lines).await;
    publish_alerts(&broker, &topics.contract.alerts, &week_alerts()).await;
    let store = tempfile::tempdir().unwrap();
    run_until_caught_up(patient(&broker, store.path())).await;

    let (options, topic) = (kafka(&broker), topics.contract.snapshots.clone());
    let snapshots =
        tokio::task::spawn_blocking(move || latest_snapshots(&options, &topic)).await.unwrap().unwrap();
    let view = WeekView::build(&snapshots, Some("2026-W46")).expect("the week is published");

    // The terminal table (what `show --week 2026-W46` prints).
    let table = render_table(&view);
    println!("{table}");
    let row = table.lines().find(|l| l.starts_with("wholesale")).expect("a wholesale row");
    for cell in ["Dev Patel", "5,000.00", "2,500.00", "600.00", "1,900.00", "38.0%", "45.1%", "9.2%", "KEEP"]
    {
        assert!(row.contains(cell), "{cell} missing from {row:?}");
    }
    assert!(table.contains("amazon     FIX"), "{table}");

    // The page file (what `page --week 2026-W46 --out FILE` writes).
    let html = render_page(&view);
    let file = artifacts_dir().join("reporter-2026-W46.html");
    std::fs::write(&file, &html).unwrap();

    // The same page over HTTP.
    let addr = common::free_local_addr();
    let source =
        omnifold_reporter::http::PageSource::new(kafka(&broker), topics.contract.snapshots.to_string());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(omnifold_reporter::http::serve(addr, source, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let mut served = None;
    for _ in 0..50 {
        if let Ok(response) = client.get(format!("http://{addr}/weeks/2026-W46")).send().await {
            served = Some((response.status().as_u16(), response.text().await.unwrap()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served, Some((200, html.clone())), "the server renders the same page");
    let latest_page = client.get(format!("http://{addr}/")).send().await.unwrap().text().await.unwrap();
    assert!(latest_page.contains("<span id=\"week\">2026-W47</span>"), "/ shows the latest week");
    let json = client.get(format!("http://{addr}/weeks/2026-W46/snapshots.json")).send().await.unwrap();
    let json: Vec<SnapshotJson> = json.json().await.unwrap();
    assert_eq!(json.len(), 4);
    let missing = client.get(format!("http://{addr}/weeks/2026-W40")).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // The page in a real browser: table and charts carry the figures once rendered.
    let Some(binary) = find_chromium() else {
        println!("SKIPPED the browser check: chromium is not installed (apt-get install -y chromium)");
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", file.display());
    let dom = chromium(&binary, profile.path(), &["--dump-dom".to_string(), url.clone()]).await;
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    std::fs::write(artifacts_dir().join("reporter-2026-W46.dom.html"), &dom).unwrap();
    for expected in [
        // the table
        r#"<tr data-channel="wholesale">"#,
        r#"data-field="contribution" data-value="1900">1,900.00</td>"#,
        r#"data-field="contribution" data-value="-629.6">-629.60</td>"#,
        r#"data-field="revenue_share" data-value="0.451051852921">45.1%</td>"#,
        // the contribution chart: bars and their labels
        r#"data-channel="wholesale" data-contribution="1900""#,
        r#">1,900.00</text>"#,
        r#"data-channel="amazon" data-contribution="-1337.5""#,
        r#">-1,337.50</text>"#,
        // revenue share vs operating-cost share
        r#"data-channel="eu-market" data-revenue-share="0.140295168333" data-operating-cost-share="0.248466257669""#,
        // decisions, alerts, trend
        "Dev Patel to keep wholesale as it is: contribution 1900.00 USD in 2026-W46.",
        r#"<tr data-kind="OVERSELL">"#,
        r#"data-week="2026-W46" data-contribution="-629.6""#,
    ] {
        assert!(dom.contains(expected), "the rendered page lacks {expected}");
    }
    let screenshot = artifacts_dir().join("reporter-2026-W46.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot = chromium(
        &binary,
        profile.path(),
        &[format!("--screenshot={}", screenshot.display()), "--window-size=1200,2400".to_string(), url],
    )
    .await;
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "screenshot {} is {size} bytes: {}",
        screenshot.display(),
        String::from_utf8_lossy(&shot.stderr)
    );
    println!("page screenshot: {}", screenshot.display());
}

//! The NDJSON connector against a real broker (nisshi, from omnifold-testkit): good lines
//! reach the events topic; every line that gives no event (not JSON, not UTF-8, an unknown
//! type, refused by the contract) reaches the dead-letter topic with its raw bytes, the reason
//! and its file (or stdin) and line, and the run goes on and succeeds.

use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use omnifold_connector::ndjson::publish_lines;
use omnifold_connector::publish::Publisher;
use omnifold_proto::Event;
use omnifold_runtime::deadletter::{ERROR_HEADER, SOURCE_HEADER};
use omnifold_runtime::{KafkaOptions, TopicOptions, Topics};
use omnifold_testkit::{Broker, Record};
use prost::Message as _;
use tokio::io::AsyncWriteExt as _;

const T0: i64 = 1_794_182_400_000;

fn stock(id: &str, sku: &str, location: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","occurred_at_ms":{T0},"type":"StockCounted","sku":"{sku}","location_id":"{location}","on_hand":10}}"#
    )
}

fn order(id: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","channel":"shopify","occurred_at_ms":{T0},"type":"OrderLinePlaced","order_id":"SHO-1","line_id":"1","sku":"SKU-A","quantity":2,"unit_price":{{"amount":"19.99","currency":"USD"}}}}"#
    )
}

const NOT_JSON: &[u8] = b"this is not json";
/// "café" in Latin-1: the é is the lone byte 0xE9, which is not UTF-8.
const NOT_UTF8: &[u8] = b"{\"event_id\":\"caf\xe9\",\"occurred_at_ms\":1,\"type\":\"CostSet\"}";
const UNKNOWN_TYPE: &[u8] =
    b"{\"event_id\":\"e7\",\"occurred_at_ms\":1794182400000,\"type\":\"StockTeleported\",\"sku\":\"SKU-A\"}";

fn contract_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/contract.toml")
}

fn topics() -> Topics {
    Topics::new(&TopicOptions::default().prefix)
}

async fn start_broker() -> Broker {
    Broker::start().await.expect("broker starts (deploy/install-broker.sh installs nisshi)")
}

/// Runs `omnifold-connector ndjson` with `args` in `dir`, `stdin` piped in; returns its stderr
/// and asserts it succeeded.
async fn run_connector(broker: &Broker, dir: &Path, args: &[&str], stdin: &[u8]) -> String {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_omnifold-connector"))
        .arg("ndjson")
        .args(["--bootstrap", &broker.bootstrap()])
        .args(args)
        .env_remove("OMNIFOLD_TOPIC_PREFIX")
        .env_remove("OMNIFOLD_CONTRACT")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the connector starts");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the connector finishes in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "the connector failed: {stderr}");
    stderr
}

async fn read(broker: &Broker, topic: &str, expected: usize) -> Vec<Record> {
    broker.read_all(topic, expected, Duration::from_secs(30)).await.expect("topic read")
}

fn event_ids(records: &[Record]) -> Vec<String> {
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| Event::decode(r.value.as_deref().unwrap_or_default()).expect("an event").event_id)
        .collect();
    ids.sort();
    ids
}

fn header(record: &Record, name: &str) -> String {
    let value = record.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_slice());
    String::from_utf8(value.unwrap_or_else(|| panic!("no {name} header on {record:?}")).to_vec()).unwrap()
}

/// A dead letter as read back.
#[derive(Debug)]
struct Dead {
    source: String,
    value: Vec<u8>,
    reason: String,
    key: Option<Vec<u8>>,
}

/// The dead letters in offset order (the topic has one partition, so in the lines' order).
fn dead_letters(records: &[Record]) -> Vec<Dead> {
    records
        .iter()
        .map(|r| Dead {
            source: header(r, SOURCE_HEADER),
            value: r.value.clone().unwrap_or_default(),
            reason: header(r, ERROR_HEADER),
            key: r.key.clone(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_s_bad_lines_are_dead_lettered_with_file_and_line_and_good_ones_published() {
    let broker = start_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let mut feed = Vec::new();
    for line in [
        stock("e1", "SKU-A", "wh-nj").as_bytes(),
        NOT_JSON,
        stock("e2", "SKU-A", "fba-us").as_bytes(),
        NOT_UTF8,
        b"",
        stock("e5", "SKU-B", "the-moon").as_bytes(),
        UNKNOWN_TYPE,
    ] {
        feed.extend_from_slice(line);
        feed.push(b'\n');
    }
    // a CRLF line, and a last line without a newline
    feed.extend_from_slice(format!("{}\r\n{}", order("e3"), stock("e4", "SKU-B", "wh-nj")).as_bytes());
    std::fs::write(dir.path().join("feed.ndjson"), &feed).unwrap();

    // a relative path: the dead letters still name the file absolutely
    let contract = contract_path();
    let args = ["--file", "feed.ndjson", "--contract", contract.to_str().unwrap()];
    let stderr = run_connector(&broker, dir.path(), &args, b"").await;

    for reported in [
        "line 2: invalid event json",
        "line 4: line is not utf-8",
        "line 6: event \"e5\": unknown location the-moon",
        "line 7: invalid event json",
        "9 lines read, 4 events published, 4 refused",
    ] {
        assert!(stderr.contains(reported), "{reported:?} not in: {stderr}");
    }

    let topics = topics();
    assert_eq!(event_ids(&read(&broker, &topics.events, 4).await), ["e1", "e2", "e3", "e4"]);

    let file = dir.path().canonicalize().unwrap().join("feed.ndjson");
    let source = |line: usize| format!("file:{}:{line}", file.display());
    let dead = dead_letters(&read(&broker, &topics.deadletter, 4).await);
    let sources: Vec<&str> = dead.iter().map(|d| d.source.as_str()).collect();
    assert_eq!(sources, [source(2), source(4), source(6), source(7)], "exactly the bad lines");
    let values: Vec<&[u8]> = dead.iter().map(|d| d.value.as_slice()).collect();
    assert_eq!(values, [NOT_JSON, NOT_UTF8, stock("e5", "SKU-B", "the-moon").as_bytes(), UNKNOWN_TYPE]);
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert!(reasons[0].starts_with("invalid event json: "), "{reasons:?}");
    assert!(reasons[1].starts_with("line is not utf-8: "), "{reasons:?}");
    assert_eq!(reasons[2], r#"event "e5": unknown location the-moon"#);
    assert!(reasons[3].starts_with("invalid event json: unknown variant `StockTeleported`"), "{reasons:?}");
    let keys: Vec<Option<&[u8]>> = dead.iter().map(|d| d.key.as_deref()).collect();
    assert_eq!(keys, [None, None, Some(b"SKU-B".as_slice()), None], "the key of a refused event is its sku");
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_s_bad_lines_are_dead_lettered_as_stdin_lines() {
    let broker = start_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let zero_time = stock("e2", "SKU-A", "wh-nj").replace(&T0.to_string(), "0");
    let input =
        [stock("e1", "SKU-A", "wh-nj").as_bytes(), NOT_UTF8, zero_time.as_bytes(), NOT_JSON].join(&b'\n');
    // without a contract, the publisher checks the envelope only
    let stderr = run_connector(&broker, dir.path(), &[], &input).await;
    assert!(stderr.contains("4 lines read, 1 events published, 3 refused"), "{stderr}");

    let topics = topics();
    assert_eq!(event_ids(&read(&broker, &topics.events, 1).await), ["e1"]);
    let dead = dead_letters(&read(&broker, &topics.deadletter, 3).await);
    let got: Vec<(&str, &[u8])> = dead.iter().map(|d| (d.source.as_str(), d.value.as_slice())).collect();
    assert_eq!(got, [("stdin:2", NOT_UTF8), ("stdin:3", zero_time.as_bytes()), ("stdin:4", NOT_JSON)]);
    assert_eq!(dead[1].reason, r#"event "e2": occurred_at_ms 0 is not greater than 0"#);
}

fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().expect("the test recorder installs"))
}

fn counter(name_and_labels: &str) -> f64 {
    metrics()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_library_reports_counts_and_dead_letters_before_it_returns() {
    metrics();
    let broker = start_broker().await;
    let topics = topics();
    let kafka = KafkaOptions { bootstrap_servers: broker.bootstrap(), ..KafkaOptions::default() };
    kafka.ensure_topics(&topics.specs(&TopicOptions::default())).await.unwrap();
    let mut publisher = Publisher::new(&kafka, &topics, None).unwrap();
    let text = format!("{}\n{}\n\n{}\n", stock("e1", "SKU-A", "wh-nj"), "{}", stock("e2", "SKU-A", "wh-nj"));
    let mut heard = Vec::new();
    let report = publish_lines(text.as_bytes(), &mut publisher, |line, _| heard.push(line)).await.unwrap();

    let refused: Vec<usize> = report.refused.iter().map(|(line, _)| *line).collect();
    assert_eq!((report.lines, report.published, refused), (4, 2, vec![2]));
    assert_eq!(heard, [2]);
    assert_eq!(counter(r#"omnifold_connector_lines_refused_total{adapter="ndjson"}"#), 1.0);
    assert_eq!(counter(r#"omnifold_connector_deadletters_total{adapter="ndjson"}"#), 1.0);
    // flushed: a reader sees it at once, without the connector running any more
    drop(publisher);
    let dead = dead_letters(&read(&broker, &topics.deadletter, 1).await);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].source.as_str(), dead[0].value.as_slice()), ("stdin:2", b"{}".as_slice()));
    assert!(dead[0].reason.starts_with("invalid event json: missing field"), "{:?}", dead[0].reason);
}

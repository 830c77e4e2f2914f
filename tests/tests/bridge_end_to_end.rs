//! The on-call sink (`omnifold-connector oncall`) against a real broker and a local stand-in
//! for PagerDuty's Events API v2: transient failures are retried, a refused page is dead-lettered once, and restarts
//! (graceful or an abort mid-way) neither lose nor repeat a delivery.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use omnifold_connector::oncall::{DeliveryOptions, Oncall, OncallError, OncallOptions};
use omnifold_proto::{Escalation, EscalationRule, Severity};
use omnifold_runtime::deadletter::{ERROR_HEADER, SOURCE_HEADER};
use omnifold_testkit::Broker;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const ROUTING_KEY: &str = "e2e0routing0key0000000000000000a";
const WAIT: Duration = Duration::from_secs(60);

/// What the stand-in endpoint answers and what it saw.
#[derive(Default)]
struct Endpoint {
    /// Answers given first, whatever the page: (status, Retry-After).
    script: VecDeque<(u16, Option<&'static str>)>,
    /// Pages always answered 400.
    refuse: Vec<String>,
    /// Once this many pages were accepted, answer 503 to everything.
    fail_after: Option<usize>,
    /// Every request: dedup_key and the status answered.
    requests: Vec<(String, u16)>,
    /// The bodies answered 202, in order.
    accepted: Vec<Value>,
}

impl Endpoint {
    fn answer(&mut self, dedup_key: &str) -> (u16, Option<&'static str>) {
        if self.refuse.iter().any(|r| r == dedup_key) {
            return (400, None);
        }
        if let Some(answer) = self.script.pop_front() {
            return answer;
        }
        if self.fail_after.is_some_and(|n| self.accepted.len() >= n) {
            return (503, None);
        }
        (202, None)
    }

    fn accepted_keys(&self) -> Vec<String> {
        self.accepted.iter().map(|b| b["dedup_key"].as_str().unwrap().to_string()).collect()
    }

    fn statuses_of(&self, dedup_key: &str) -> Vec<u16> {
        self.requests.iter().filter(|(k, _)| k == dedup_key).map(|(_, s)| *s).collect()
    }
}

type Shared = Arc<Mutex<Endpoint>>;

async fn enqueue(State(endpoint): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    let dedup_key = body["dedup_key"].as_str().unwrap_or_default().to_string();
    let mut endpoint = endpoint.lock().unwrap();
    let (status, retry_after) = endpoint.answer(&dedup_key);
    endpoint.requests.push((dedup_key.clone(), status));
    let status = StatusCode::from_u16(status).unwrap();
    if status.is_success() {
        endpoint.accepted.push(body);
        let answer = json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key});
        return (status, Json(answer)).into_response();
    }
    let mut headers = HeaderMap::new();
    if let Some(retry_after) = retry_after {
        headers.insert("retry-after", retry_after.parse().unwrap());
    }
    (status, headers, Json(json!({"status": "invalid event", "message": "Event object is invalid"})))
        .into_response()
}

async fn start_endpoint(endpoint: Shared) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/v2/enqueue", axum::routing::post(enqueue)).with_state(endpoint);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn escalation(n: usize) -> Escalation {
    let channel = if n.is_multiple_of(2) { "amazon" } else { "shopify" };
    let event = format!("ev-{n:02}");
    Escalation {
        escalation_id: format!("price_jump/{channel}/SKU-{n:02}/{event}"),
        severity: Severity::Warning as i32,
        channel: channel.to_string(),
        owner: format!("owner of {channel}"),
        on_call: format!("pd-{channel}"),
        summary: format!("the price of SKU-{n:02} on {channel} jumped"),
        cause: vec![event],
        rule: EscalationRule::PriceJump as i32,
        occurred_at_ms: 1_794_182_400_000 + n as i64 * 60_000,
    }
}

async fn publish(broker: &Broker, escalations: &[Escalation]) {
    for e in escalations {
        broker
            .produce(&topics().escalations, e.channel.as_bytes(), &e.encode_to_vec())
            .await
            .expect("produced");
    }
}

fn oncall_options(broker: &Broker, endpoint: SocketAddr, store: &Path, key_file: &Path) -> OncallOptions {
    OncallOptions {
        kafka: kafka(broker),
        topics: topic_options(),
        group_id: "omnifold-oncall".into(),
        endpoint: format!("http://{endpoint}/v2/enqueue"),
        store: store.to_path_buf(),
        routing_key_file: Some(key_file.to_path_buf()),
        delivery: DeliveryOptions {
            attempt_timeout_ms: 5_000,
            initial_backoff_ms: 100,
            max_backoff_ms: 400,
            ..DeliveryOptions::default()
        },
    }
}

/// The sink running in a task; `stop` ends it gracefully, `kill` aborts it.
struct RunningSink {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), OncallError>>,
}

impl RunningSink {
    fn start(options: OncallOptions) -> RunningSink {
        let sink = Oncall::new(options).expect("the sink builds");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sink.run(async {
            let _ = stopped.await;
        }));
        RunningSink { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task).await.expect("stopped in time").unwrap().expect("the sink ran");
    }

    /// As a crash would, at whatever await point the sink is.
    async fn kill(self) {
        self.task.abort();
        assert!(self.task.await.unwrap_err().is_cancelled());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn escalations_are_delivered_once_through_retries_restarts_and_a_kill() {
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let endpoint: Shared = Arc::default();
    let addr = start_endpoint(endpoint.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("routing-key");
    std::fs::write(&key_file, format!("{ROUTING_KEY}\n")).unwrap();
    let store = dir.path().join("oncall");
    let options = || oncall_options(&broker, addr, &store, &key_file);
    let all: Vec<Escalation> = (1..=12).map(escalation).collect();
    let id = |n: usize| all[n - 1].escalation_id.clone();

    // 1. retries: 503, 503, 429 (Retry-After: 1) on the first page; the 3rd is refused with 400
    {
        let mut e = endpoint.lock().unwrap();
        e.script = VecDeque::from([(503, None), (503, None), (429, Some("1"))]);
        e.refuse = vec![id(3)];
    }
    publish(&broker, &all[..6]).await;
    let sink = RunningSink::start(options());
    wait_until("5 pages accepted", WAIT, || endpoint.lock().unwrap().accepted.len() == 5).await;
    sink.stop().await;
    {
        let e = endpoint.lock().unwrap();
        assert_eq!(e.accepted_keys(), [id(1), id(2), id(4), id(5), id(6)]);
        assert_eq!(e.statuses_of(&id(1)), [503, 503, 429, 202]);
        assert_eq!(e.statuses_of(&id(3)), [400], "a refusal is not retried");
        check_shape(&e.accepted[0], &all[0]);
    }
    let dead = read(&broker, &topics().deadletter, 1).await;
    assert_eq!(dead.len(), 1);
    let reason = String::from_utf8_lossy(header(&dead[0], ERROR_HEADER).unwrap()).into_owned();
    assert!(reason.starts_with(&format!("endpoint refused escalation {} with 400", id(3))), "{reason}");
    assert!(!reason.contains(ROUTING_KEY));
    assert_eq!(header(&dead[0], SOURCE_HEADER).unwrap(), b"omnifold.escalations.v1/0/2");
    assert_eq!(dead[0].value.as_deref(), Some(all[2].encode_to_vec().as_slice()), "the original bytes");

    // 2. a restart resumes after the last delivery: only the new page goes out
    publish(&broker, &all[6..7]).await;
    let sink = RunningSink::start(options());
    wait_until("the 7th page accepted", WAIT, || endpoint.lock().unwrap().accepted.len() == 6).await;
    // a moment more in which a re-delivery would show
    tokio::time::sleep(Duration::from_millis(500)).await;
    sink.stop().await;
    {
        let e = endpoint.lock().unwrap();
        assert_eq!(e.accepted_keys(), [id(1), id(2), id(4), id(5), id(6), id(7)]);
        assert_eq!(e.statuses_of(&id(3)), [400], "nor re-sent after a restart");
    }

    // 3. killed mid-way: 2 of 5 new pages go through, then the endpoint fails and the sink
    // is aborted while it retries; a new sink delivers the rest
    endpoint.lock().unwrap().fail_after = Some(8);
    publish(&broker, &all[7..]).await;
    let sink = RunningSink::start(options());
    wait_until("a failure after 2 more pages", WAIT, || {
        let e = endpoint.lock().unwrap();
        e.accepted.len() == 8 && e.requests.last().is_some_and(|(_, status)| *status == 503)
    })
    .await;
    sink.kill().await;
    endpoint.lock().unwrap().fail_after = None;
    let sink = RunningSink::start(options());
    wait_until("every page accepted", WAIT, || endpoint.lock().unwrap().accepted.len() == 11).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sink.stop().await;

    let e = endpoint.lock().unwrap();
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for key in e.accepted_keys() {
        *times.entry(key).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = (1..=12).filter(|&n| n != 3).map(|n| (id(n), 1)).collect();
    assert_eq!(times, want, "every page delivered, none twice");
    assert_eq!(e.accepted_keys(), (1..=12).filter(|&n| n != 3).map(id).collect::<Vec<_>>(), "in order");
}

/// The PagerDuty Events API v2 trigger of an escalation.
fn check_shape(body: &Value, escalation: &Escalation) {
    assert_eq!(
        body,
        &json!({
            "routing_key": ROUTING_KEY,
            "event_action": "trigger",
            "dedup_key": escalation.escalation_id,
            "payload": {
                "summary": escalation.summary,
                "source": "omnifold",
                "severity": "warning",
                "component": escalation.channel,
                "custom_details": {
                    "owner": escalation.owner,
                    "on_call": escalation.on_call,
                    "rule": "PRICE_JUMP",
                    "cause": escalation.cause,
                    "occurred_at_ms": escalation.occurred_at_ms,
                    "escalation_id": escalation.escalation_id,
                }
            }
        })
    );
}

//! The SP-API pull client (`amazon-poll`) against a local fake SP-API on 127.0.0.1 and the
//! real broker (nisshi). The fake pages getOrders and getOrderItems (NextToken), filters
//! orders by LastUpdatedAfter/LastUpdatedBefore, throttles (429 with x-amzn-RateLimit-Limit)
//! and fails (503) some requests, and expires access tokens (a short expires_in, and a token
//! refused with 401 after a few uses). The events published are exactly the orders' facts,
//! once; a restart from the checkpoint publishes only what changed since, and then nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use omnifold_connector::config::ConnectorConfig;
use omnifold_connector::publish::Publisher;
use omnifold_connector::spapi;
use omnifold_connector::timefmt::{format_ms, parse_ms};
use omnifold_proto::Event;
use omnifold_runtime::{KafkaOptions, TopicOptions, Topics, wall_clock_ms};
use omnifold_testkit::Broker;
use prost::Message as _;
use serde_json::{Value, json};

const MARKETPLACE: &str = "ATVPDKIKX0DER";
const REFRESH_TOKEN: &str = "Atzr|fake-refresh-token";
const CLIENT_SECRET: &str = "fake-client-secret";
/// A token answers this many API requests, then 401 (revoked, as if it had expired).
const USES_PER_TOKEN: u32 = 6;

struct Item {
    id: String,
    sku: String,
    ordered: i64,
    shipped: i64,
}

struct Order {
    id: String,
    status: &'static str,
    purchase_ms: i64,
    last_update_ms: i64,
    items: Vec<Item>,
}

#[derive(Default)]
struct Fake {
    orders: Vec<Order>,
    /// Access token -> (expires at, uses).
    tokens: HashMap<String, (Instant, u32)>,
    token_forms: Vec<HashMap<String, String>>,
    api_requests: usize,
    throttled: usize,
    unavailable: usize,
    unauthorized: usize,
    /// (LastUpdatedAfter, LastUpdatedBefore) of each first getOrders page.
    windows: Vec<(i64, i64)>,
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn fields(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn token(state: Arc<Mutex<Fake>>, body: Bytes) -> Response {
    let mut fake = state.lock().unwrap();
    let form = fields(std::str::from_utf8(&body).unwrap());
    fake.token_forms.push(form.clone());
    if form.get("refresh_token").map(String::as_str) != Some(REFRESH_TOKEN)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return (StatusCode::BAD_REQUEST, r#"{"error":"invalid_grant"}"#).into_response();
    }
    let n = fake.token_forms.len();
    // the first token lives 2 s, the next ones an hour
    let expires_in = if n == 1 { 2 } else { 3600 };
    let access = format!("Atza|token-{n}");
    fake.tokens.insert(access.clone(), (Instant::now() + Duration::from_secs(expires_in), 0));
    axum::Json(json!({ "access_token": access, "token_type": "bearer", "expires_in": expires_in }))
        .into_response()
}

/// Checks the token and fails some requests; None lets the request through.
fn gate(fake: &mut Fake, headers: &HeaderMap) -> Option<Response> {
    let token = headers.get("x-amz-access-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    let valid = match fake.tokens.get_mut(token) {
        Some((expires, uses)) if Instant::now() < *expires && *uses < USES_PER_TOKEN => {
            *uses += 1;
            true
        }
        _ => false,
    };
    if !valid {
        fake.unauthorized += 1;
        let body = json!({ "errors": [{
            "code": "Unauthorized",
            "message": "Access to requested resource is denied.",
            "details": "The access token you provided has expired.",
        }]});
        return Some((StatusCode::UNAUTHORIZED, axum::Json(body)).into_response());
    }
    fake.api_requests += 1;
    let n = fake.api_requests;
    if n == 3 {
        fake.unavailable += 1;
        return Some((StatusCode::SERVICE_UNAVAILABLE, "").into_response());
    }
    if n.is_multiple_of(5) {
        fake.throttled += 1;
        let body = json!({ "errors": [{ "code": "QuotaExceeded", "message": "You exceeded your quota" }] });
        return Some(
            (StatusCode::TOO_MANY_REQUESTS, [("x-amzn-RateLimit-Limit", "50.0")], axum::Json(body))
                .into_response(),
        );
    }
    None
}

fn answer(payload: Value) -> Response {
    ([("x-amzn-RateLimit-Limit", "50.0")], axum::Json(json!({ "payload": payload }))).into_response()
}

async fn orders(state: Arc<Mutex<Fake>>, headers: HeaderMap, uri: Uri) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(refused) = gate(&mut fake, &headers) {
        return refused;
    }
    let query = fields(uri.query().unwrap_or(""));
    assert_eq!(query.get("MarketplaceIds").map(String::as_str), Some(MARKETPLACE));
    // a NextToken carries the window and where the next page starts
    let (after, before, from) = match query.get("NextToken") {
        Some(token) => {
            let parts: Vec<i64> = token.split('|').map(|p| p.parse().unwrap()).collect();
            (parts[0], parts[1], parts[2] as usize)
        }
        None => {
            let date = |name: &str| parse_ms(&query[name]).unwrap_or_else(|| panic!("{name} is a date"));
            let (after, before) = (date("LastUpdatedAfter"), date("LastUpdatedBefore"));
            fake.windows.push((after, before));
            (after, before, 0)
        }
    };
    let mut listed: Vec<&Order> =
        fake.orders.iter().filter(|o| after <= o.last_update_ms && o.last_update_ms <= before).collect();
    listed.sort_by_key(|o| o.last_update_ms);
    let page: Vec<Value> = listed
        .iter()
        .skip(from)
        .take(2)
        .map(|o| {
            json!({
                "AmazonOrderId": o.id,
                "PurchaseDate": format_ms(o.purchase_ms),
                "LastUpdateDate": format_ms(o.last_update_ms),
                "OrderStatus": o.status,
                "FulfillmentChannel": "MFN",
                "MarketplaceId": MARKETPLACE,
            })
        })
        .collect();
    let mut payload = json!({ "Orders": page, "LastUpdatedBefore": format_ms(before) });
    if from + 2 < listed.len() {
        payload["NextToken"] = json!(format!("{after}|{before}|{}", from + 2));
    }
    answer(payload)
}

async fn order_items(state: Arc<Mutex<Fake>>, headers: HeaderMap, id: String, uri: Uri) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(refused) = gate(&mut fake, &headers) {
        return refused;
    }
    let from: usize = fields(uri.query().unwrap_or("")).get("NextToken").map_or(0, |t| t.parse().unwrap());
    let order = fake.orders.iter().find(|o| o.id == id).expect("a known order");
    // one item per page
    let item = &order.items[from];
    let mut json_item = json!({
        "OrderItemId": item.id,
        "SellerSKU": item.sku,
        "QuantityOrdered": item.ordered,
        "QuantityShipped": item.shipped,
    });
    if item.ordered > 0 && order.status != "Pending" {
        json_item["ItemPrice"] =
            json!({ "CurrencyCode": "USD", "Amount": format!("{}.00", 20 * item.ordered) });
    }
    let mut payload = json!({ "AmazonOrderId": order.id, "OrderItems": [json_item] });
    if from + 1 < order.items.len() {
        payload["NextToken"] = json!((from + 1).to_string());
    }
    answer(payload)
}

async fn fake_spapi(orders_: Vec<Order>) -> (String, Arc<Mutex<Fake>>) {
    let fake = Arc::new(Mutex::new(Fake { orders: orders_, ..Fake::default() }));
    let (a, b, c) = (fake.clone(), fake.clone(), fake.clone());
    let router = Router::new()
        .route("/auth/o2/token", post(move |body: Bytes| token(a.clone(), body)))
        .route("/orders/v0/orders", get(move |headers: HeaderMap, uri: Uri| orders(b.clone(), headers, uri)))
        .route(
            "/orders/v0/orders/{id}/orderItems",
            get(move |headers: HeaderMap, Path(id): Path<String>, uri: Uri| {
                order_items(c.clone(), headers, id, uri)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}"), fake)
}

fn item(id: &str, ordered: i64, shipped: i64) -> Item {
    Item { id: id.into(), sku: format!("SKU-{id}"), ordered, shipped }
}

/// The facts of an order, as event ids: what each item placed, shipped and cancelled.
fn facts(order: &Order) -> Vec<String> {
    let mut ids = Vec::new();
    for item in &order.items {
        let prefix = format!("amazon:order:{}:item:{}", order.id, item.id);
        match order.status {
            "Pending" => {}
            "Canceled" => ids.push(format!("{prefix}:cancelled")),
            _ => {
                ids.push(format!("{prefix}:placed"));
                ids.extend((1..=item.shipped).map(|n| format!("{prefix}:shipped:{n}")));
            }
        }
    }
    ids
}

const HOUR: i64 = 3_600_000;

fn config(api: &str, dir: &std::path::Path, start_after: i64) -> ConnectorConfig {
    let secret = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path.display().to_string()
    };
    let text = format!(
        r#"
[amazon]
channel = "amazon"
default_marketplace = "{MARKETPLACE}"
mfn_location = "wh-nj"
[amazon.sp_api]
endpoint = "{api}"
token_url = "{api}/auth/o2/token"
client_id = "amzn1.application-oa2-client.fake"
client_secret = {{ file = "{client_secret}" }}
refresh_token = {{ file = "{refresh_token}" }}
marketplace_ids = ["{MARKETPLACE}"]
state = "{state}"
start_after = "{start_after}"
max_window_ms = {window}
settle_ms = 500
overlap_ms = {overlap}
initial_backoff_ms = 10
max_backoff_ms = 200
"#,
        client_secret = secret("client-secret", CLIENT_SECRET),
        refresh_token = secret("refresh-token", REFRESH_TOKEN),
        state = dir.join("spapi").display(),
        start_after = format_ms(start_after),
        window = 2 * HOUR,
        overlap = HOUR + HOUR / 2,
    );
    ConnectorConfig::parse(&text).expect("the test config parses")
}

async fn poll(
    broker: &Broker,
    config: &ConnectorConfig,
) -> (spapi::PollReport, i64, spapi::client::ClientStats) {
    let kafka = KafkaOptions { bootstrap_servers: broker.bootstrap(), ..KafkaOptions::default() };
    let publisher = Publisher::new(&kafka, &topics(), None).unwrap();
    let mut poller = spapi::source(config.amazon.clone().unwrap(), publisher).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), poller.run_once())
        .await
        .expect("the poll ends in time")
        .expect("the poll succeeds");
    let checkpoint = poller.checkpoint().unwrap().expect("a checkpoint after a poll");
    (report, checkpoint, poller.client_stats())
}

fn topics() -> Topics {
    Topics::new(&TopicOptions::default().prefix)
}

async fn published(broker: &Broker, expected: usize) -> Vec<String> {
    let records = broker.read_all(&topics().events, expected, Duration::from_secs(30)).await.unwrap();
    let mut ids: Vec<String> =
        records.iter().map(|r| Event::decode(r.value.as_deref().unwrap()).unwrap().event_id).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_pages_throttles_and_restarts_from_its_checkpoint_publishing_each_fact_once() {
    let broker = Broker::start().await.expect("broker starts (deploy/install-broker.sh installs nisshi)");
    broker.create_topic(&topics().events, 3, false).await.unwrap();
    let now = wall_clock_ms();
    let order = |id: &str, status, hours_ago: i64, items| Order {
        id: id.into(),
        status,
        purchase_ms: now - hours_ago * HOUR - HOUR / 4,
        last_update_ms: now - hours_ago * HOUR,
        items,
    };
    let orders = vec![
        order("111-0000001-0000001", "Unshipped", 5, vec![item("A1", 2, 0), item("A2", 1, 0)]),
        order("111-0000002-0000002", "Shipped", 4, vec![item("B1", 2, 2)]),
        order("111-0000003-0000003", "Canceled", 3, vec![item("C1", 0, 0)]),
        order("111-0000004-0000004", "Pending", 2, vec![item("D1", 1, 0)]),
        order(
            "111-0000005-0000005",
            "Unshipped",
            1,
            vec![item("E1", 1, 0), item("E2", 3, 0), item("E3", 1, 0)],
        ),
    ];
    let mut expected: Vec<String> = orders.iter().flat_map(facts).collect();
    expected.sort();
    let (api, fake) = fake_spapi(orders).await;
    let dir = tempfile::tempdir().unwrap();
    let start_after = now - 6 * HOUR;
    let config = config(&api, dir.path(), start_after);
    let overlap = HOUR + HOUR / 2;

    let (report, first_checkpoint, stats) = poll(&broker, &config).await;
    assert_eq!(published(&broker, expected.len()).await, expected, "every fact once: {report:?}");
    assert_eq!(report.published, expected.len());
    assert!(report.windows >= 3, "6 hours in windows of 2: {report:?}");
    {
        let fake = fake.lock().unwrap();
        assert!(fake.throttled >= 1 && fake.unavailable == 1, "429s and a 503 were retried");
        assert!(fake.unauthorized >= 1, "a refused token was exchanged for a new one");
        assert!(fake.token_forms.len() >= 2 && (fake.token_forms.len() as u64) == stats.token_exchanges);
        assert!(
            (stats.token_exchanges as usize) < fake.api_requests,
            "tokens are cached, not exchanged per request: {stats:?}"
        );
        for form in &fake.token_forms {
            assert_eq!(form["grant_type"], "refresh_token");
            assert_eq!(form["client_id"], "amzn1.application-oa2-client.fake");
        }
        assert_eq!(fake.windows[0], (start_after - overlap, start_after + 2 * HOUR));
        // the windows follow one another, each starting the overlap before the last one's end
        for pair in fake.windows.windows(2) {
            assert_eq!(pair[1].0, pair[0].1 - overlap);
        }
        assert_eq!(fake.windows.last().unwrap().1, first_checkpoint);
    }

    // the first order ships a unit after the checkpoint; a restart reads it (and, in the
    // overlap, orders it already published, which publish nothing again)
    {
        let mut fake = fake.lock().unwrap();
        let first = &mut fake.orders[0];
        first.status = "PartiallyShipped";
        first.items[0].shipped = 1;
        first.last_update_ms = first_checkpoint + 1;
    }
    while wall_clock_ms() - 500 <= first_checkpoint + 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let windows_before = fake.lock().unwrap().windows.len();
    let (report, second_checkpoint, _) = poll(&broker, &config).await;
    expected.push("amazon:order:111-0000001-0000001:item:A1:shipped:1".to_string());
    expected.sort();
    assert_eq!(published(&broker, expected.len()).await, expected, "only the new fact: {report:?}");
    assert_eq!(report.published, 1);
    assert!(report.unchanged >= 1, "orders in the overlap are not read again: {report:?}");
    assert_eq!(fake.lock().unwrap().windows[windows_before].0, first_checkpoint - overlap);

    // nothing changed: nothing is published
    while wall_clock_ms() - 500 <= second_checkpoint {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let windows_before = fake.lock().unwrap().windows.len();
    let (report, _, _) = poll(&broker, &config).await;
    assert_eq!(report.published, 0, "{report:?}");
    assert_eq!(published(&broker, expected.len()).await, expected);
    let windows = fake.lock().unwrap().windows.clone();
    assert!(windows.len() > windows_before, "a restart polls from its checkpoint");
    assert_eq!(windows[windows_before].0, second_checkpoint - overlap);
}

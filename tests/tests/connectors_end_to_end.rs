//! Shopify webhooks POSTed to the connector's receiver become events on the real broker,
//! the coordinator turns them into availability changes, and the push-back sink sends each
//! channel's number to a local recording server standing in for Shopify (its GraphQL Admin
//! API, comparing `changeFromQuantity` as Shopify does) and Amazon, which answers 429 and 5xx
//! some of the time. Numbers follow deploy/local/contract.toml (safety
//! stock 5, scarcity threshold 40, proportional scarcity, max shares 0.7 / 0.6 / 0.4 / 0.3).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::*;
use omnifold_connector::config::ConnectorConfig;
use omnifold_connector::http::{Intake, shopify_router, sign};
use omnifold_connector::publish::Publisher;
use omnifold_connector::pushback::{PushStats, Pushback};
use omnifold_connector::shopify::ShopifyMapping;
use omnifold_runtime::load_contract;
use omnifold_testkit::Broker;
use serde_json::{Value, json};

const SECRET: &str = "e2e-shopify-app-secret";
const SHOPIFY_TOKEN: &str = "shpat-e2e-token";
const AMAZON_TOKEN: &str = "Atza|e2e-token";

/// What the stand-in channel API saw.
#[derive(Default)]
struct Recorder {
    requests: usize,
    rate_limited: usize,
    server_errors: usize,
    /// Accepted requests in arrival order: (method, path and query, token header, body);
    /// Shopify's reads are answered but not listed.
    accepted: Vec<(String, String, String, Value)>,
    /// Shopify's `available` at the location push-back sets.
    shopify_available: i64,
}

/// Requests 1, 2 and 3 fail with 429 (Retry-After: 1), 500 and 503; after that every third
/// request fails, with 429 or 500.
async fn channel_api(
    state: Arc<Mutex<Recorder>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut recorder = state.lock().unwrap();
    recorder.requests += 1;
    let n = recorder.requests;
    let failure = match n {
        1 => Some(StatusCode::TOO_MANY_REQUESTS),
        2 => Some(StatusCode::INTERNAL_SERVER_ERROR),
        3 => Some(StatusCode::SERVICE_UNAVAILABLE),
        n if n % 3 == 1 && n % 2 == 0 => Some(StatusCode::TOO_MANY_REQUESTS),
        n if n % 3 == 1 => Some(StatusCode::INTERNAL_SERVER_ERROR),
        _ => None,
    };
    match failure {
        Some(StatusCode::TOO_MANY_REQUESTS) => {
            recorder.rate_limited += 1;
            return (StatusCode::TOO_MANY_REQUESTS, [("Retry-After", "1")], "slow down").into_response();
        }
        Some(status) => {
            recorder.server_errors += 1;
            return (status, "try again").into_response();
        }
        None => {}
    }
    let token = headers
        .get("x-shopify-access-token")
        .or_else(|| headers.get("x-amz-access-token"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if uri.path() == SHOPIFY_GRAPHQL {
        let query = body["query"].as_str().unwrap_or("");
        if query.starts_with("query") {
            let level =
                json!({ "quantities": [{ "name": "available", "quantity": recorder.shopify_available }] });
            return axum::Json(json!({ "data": { "inventoryItem": { "inventoryLevel": level } } }))
                .into_response();
        }
        let quantity = &body["variables"]["input"]["quantities"][0];
        if quantity["changeFromQuantity"].as_i64() != Some(recorder.shopify_available) {
            let error = json!({ "code": "CHANGE_FROM_QUANTITY_STALE", "message": "stale" });
            let answer = json!({ "data": { "inventorySetQuantities": { "userErrors": [error] } } });
            return axum::Json(answer).into_response();
        }
        recorder.shopify_available = quantity["quantity"].as_i64().unwrap();
        recorder.accepted.push((method.to_string(), uri.to_string(), token, body));
        let answer = json!({ "data": { "inventorySetQuantities": {
            "inventoryAdjustmentGroup": { "id": "gid://shopify/InventoryAdjustmentGroup/1" },
            "userErrors": [],
        }}});
        return axum::Json(answer).into_response();
    }
    recorder.accepted.push((method.to_string(), uri.to_string(), token, body));
    (StatusCode::OK, "{}").into_response()
}

const SHOPIFY_GRAPHQL: &str = "/admin/api/2026-10/graphql.json";

async fn start(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn config(api: &str, secrets: &std::path::Path, state: &std::path::Path) -> ConnectorConfig {
    let secret = |name: &str, value: &str| {
        let path = secrets.join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path.display().to_string()
    };
    let text = format!(
        r#"
[shopify]
channel = "shopify"
secret = {{ file = "{webhook}" }}
currency = "USD"
[shopify.locations]
"655441491" = "wh-nj"
[shopify.inventory_items]
"808950810" = "IPOD2008PINK"

[amazon]
channel = "amazon"
default_marketplace = "ATVPDKIKX0DER"
[amazon.fba_locations]
ATVPDKIKX0DER = "fba-us"

[pushback]
state = "{state}"
initial_backoff_ms = 50
max_backoff_ms = 2000
[pushback.shopify]
channel = "shopify"
base_url = "{api}"
location_id = "70000000001"
access_token = {{ file = "{shopify}" }}
[pushback.amazon]
channel = "amazon"
base_url = "{api}"
seller_id = "SELLER1"
marketplace_ids = ["ATVPDKIKX0DER"]
access_token = {{ file = "{amazon}" }}
"#,
        webhook = secret("webhook", SECRET),
        shopify = secret("shopify", SHOPIFY_TOKEN),
        amazon = secret("amazon", AMAZON_TOKEN),
        state = state.display(),
    );
    ConnectorConfig::parse(&text).expect("the e2e connector config parses")
}

fn inventory(available: i64) -> Value {
    json!({
        "inventory_item_id": 808950810u64,
        "location_id": 655441491u64,
        "available": available,
        "updated_at": "2026-11-02T10:00:00-05:00",
    })
}

fn order(id: u64, quantity: i64, minute: u32) -> Value {
    json!({
        "id": id,
        "currency": "USD",
        "created_at": format!("2026-11-02T10:{minute:02}:00-05:00"),
        "cancelled_at": format!("2026-11-02T10:{:02}:30-05:00", minute),
        "line_items": [{
            "id": id * 10 + 1,
            "sku": "IPOD2008PINK",
            "variant_id": 808950810u64,
            "quantity": quantity,
            "price": "49.00",
            "discount_allocations": [],
        }],
    })
}

async fn webhook(base: &str, topic: &str, id: &str, body: &Value) -> Value {
    let body = serde_json::to_vec(body).unwrap();
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{base}/webhooks/shopify"))
        .header("X-Shopify-Topic", topic)
        .header("X-Shopify-Webhook-Id", id)
        .header("X-Shopify-Shop-Domain", "e2e.myshopify.com")
        .header("X-Shopify-API-Version", "2024-04")
        .header("X-Shopify-Hmac-Sha256", sign(SECRET.as_bytes(), &body))
        .body(body)
        .send()
        .await
        .expect("the receiver answers");
    assert_eq!(response.status().as_u16(), 200, "webhook {id}");
    response.json().await.unwrap()
}

/// Runs the push-back sink until every availability record in the topic is sent.
async fn push_back(broker: &Broker, config: &ConnectorConfig) -> PushStats {
    let mut pushback = Pushback::new(&kafka(broker), &topics(), config).unwrap();
    tokio::time::timeout(Duration::from_secs(120), pushback.run(std::future::pending(), true))
        .await
        .expect("push-back caught up in time")
        .expect("push-back ran")
}

/// Whether `pushed` appears in `published` in order (not necessarily contiguous).
fn is_subsequence(pushed: &[i64], published: &[i64]) -> bool {
    let mut rest = published.iter();
    pushed.iter().all(|p| rest.any(|q| q == p))
}

#[tokio::test(flavor = "multi_thread")]
async fn shopify_webhooks_to_coordinator_to_channel_apis() {
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let api = {
        let recorder = recorder.clone();
        start(Router::new().fallback(move |method, uri, headers, body| {
            channel_api(recorder.clone(), method, uri, headers, body)
        }))
        .await
    };
    let config = config(&api, dir.path(), &dir.path().join("pushback"));

    // the receiver, publishing through the one publish path, checked against the contract
    let rules = load_contract(&contract_path()).unwrap();
    assert_eq!(config.problems(&rules), Vec::<String>::new());
    let shopify = config.shopify.as_ref().unwrap();
    let publisher = Publisher::new(&kafka(&broker), &topics(), Some(rules)).unwrap();
    let receiver = start(shopify_router(
        ShopifyMapping::from_config(&config, shopify),
        shopify.secret.load().unwrap(),
        Intake::new(publisher),
        1 << 20,
    ))
    .await;

    let store = tempfile::tempdir().unwrap();
    let mut stats = Vec::new();
    // stock 100 at wh-nj: sellable 95, normal mode: shopify 66, amazon 57 (+0 FBA)
    assert_eq!(webhook(&receiver, "inventory_levels/update", "w1", &inventory(100)).await["published"], 1);
    // 10 placed: ATP 90, sellable 85: shopify 59, amazon 51
    assert_eq!(webhook(&receiver, "orders/create", "w2", &order(9001, 10, 5)).await["published"], 1);
    // a redelivery publishes nothing
    assert_eq!(webhook(&receiver, "orders/create", "w2", &order(9001, 10, 5)).await["duplicate"], true);
    run_until_caught_up(&broker, store.path()).await;
    stats.push(push_back(&broker, &config).await);

    // 50 more: ATP 40, sellable 35 < 40, proportional on shopify's 60 units: shopify's quota 35
    // capped at floor(0.7 x 35) = 24, amazon 0
    assert_eq!(webhook(&receiver, "orders/create", "w3", &order(9002, 50, 10)).await["published"], 1);
    run_until_caught_up(&broker, store.path()).await;
    stats.push(push_back(&broker, &config).await);

    // cancelled: back to ATP 90 and normal mode: shopify 59, amazon 51
    assert_eq!(webhook(&receiver, "orders/cancelled", "w4", &order(9002, 50, 10)).await["published"], 1);
    run_until_caught_up(&broker, store.path()).await;
    stats.push(push_back(&broker, &config).await);

    let published = availability(&read(&broker, &topics().availability, 16).await);
    let series = |channel: &str| -> Vec<i64> {
        published
            .iter()
            .filter(|a| a.channel == channel && a.sku == "IPOD2008PINK")
            .map(|a| a.available)
            .collect()
    };
    assert_eq!(series("shopify"), [66, 59, 24, 59]);
    assert_eq!(series("amazon"), [57, 51, 0, 51]);

    let pushback = Pushback::new(&kafka(&broker), &topics(), &config).unwrap();
    assert_eq!(pushback.last_pushed("shopify", "IPOD2008PINK"), Some(59));
    assert_eq!(pushback.last_pushed("amazon", "IPOD2008PINK"), Some(51));
    assert_eq!(
        pushback.last_pushed("eu-market", "IPOD2008PINK"),
        None,
        "channels without an API are not pushed"
    );
    drop(pushback);
    let pushed: usize = stats.iter().map(|s| s.pushed).sum();
    let retries: usize = stats.iter().map(|s| s.retries + s.rate_limited).sum();

    let (shopify_pushes, amazon_pushes) = {
        let recorder = recorder.lock().unwrap();
        assert!(recorder.rate_limited >= 1 && recorder.server_errors >= 1, "the API failed some of the time");
        assert_eq!(pushed, recorder.accepted.len(), "{stats:?}");
        let conflicts: usize = stats.iter().map(|s| s.conflicts).sum();
        assert_eq!(conflicts, 0, "nobody else changes shopify's number: {stats:?}");
        assert!(retries >= 3, "{stats:?}");
        let mut shopify = Vec::new();
        let mut amazon = Vec::new();
        for (method, path, token, body) in &recorder.accepted {
            if path == SHOPIFY_GRAPHQL {
                assert_eq!((method.as_str(), token.as_str()), ("POST", SHOPIFY_TOKEN));
                let quantity = &body["variables"]["input"]["quantities"][0];
                assert_eq!(quantity["locationId"], "gid://shopify/Location/70000000001");
                assert_eq!(quantity["inventoryItemId"], "gid://shopify/InventoryItem/808950810");
                shopify.push(quantity["quantity"].as_i64().unwrap());
            } else {
                assert_eq!(
                    path,
                    "/listings/2021-08-01/items/SELLER1/IPOD2008PINK?marketplaceIds=ATVPDKIKX0DER"
                );
                assert_eq!((method.as_str(), token.as_str()), ("PATCH", AMAZON_TOKEN));
                assert_eq!(body["patches"][0]["op"], "replace");
                assert_eq!(body["patches"][0]["path"], "/attributes/fulfillment_availability");
                assert_eq!(body["patches"][0]["value"][0]["fulfillment_channel_code"], "DEFAULT");
                amazon.push(body["patches"][0]["value"][0]["quantity"].as_i64().unwrap());
            }
        }
        (shopify, amazon)
    };
    eprintln!("push-back: {stats:?}; shopify got {shopify_pushes:?}, amazon got {amazon_pushes:?}");
    // in order: what reached each channel is the coordinator's sequence with some numbers
    // skipped (superseded while the channel was failing), never an older after a newer, and
    // each phase's last number did reach it
    assert!(is_subsequence(&shopify_pushes, &series("shopify")), "{shopify_pushes:?}");
    assert!(is_subsequence(&amazon_pushes, &series("amazon")), "{amazon_pushes:?}");
    assert!(is_subsequence(&[59, 24, 59], &shopify_pushes), "{shopify_pushes:?}");
    assert!(is_subsequence(&[51, 0, 51], &amazon_pushes), "{amazon_pushes:?}");
    assert_eq!(shopify_pushes.last(), Some(&59));
    assert_eq!(amazon_pushes.last(), Some(&51));

    // a restart reads the compacted topic again and sends nothing already sent
    let before = recorder.lock().unwrap().requests;
    let again = push_back(&broker, &config).await;
    assert_eq!(again.pushed, 0, "{again:?}");
    assert_eq!(recorder.lock().unwrap().requests, before);

    let final_numbers: BTreeMap<(String, String), i64> = final_availability(&published);
    assert_eq!(final_numbers[&("shopify".to_string(), "IPOD2008PINK".to_string())], 59);
}

//! The HTTP receivers over real loopback HTTP: signatures (good, bad, missing), redelivery,
//! malformed and oversized bodies, and that every rejection is counted by adapter and
//! reason. Events go to a [`MemorySink`], which applies the publisher's own check, or to a
//! sink whose acknowledgements the test gives (`HeldSink`): a delivery not acknowledged in
//! time is answered 503, and remembered as done only once its events are acknowledged.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use omnifold_connector::amazon::AmazonMapping;
use omnifold_connector::config::Secret;
use omnifold_connector::http::{Intake, amazon_router, shopify_router, sign, woocommerce_router};
use omnifold_connector::publish::{Ack, MemorySink, PublishError, PublishOutcome, Sink};
use omnifold_connector::shopify::ShopifyMapping;
use omnifold_connector::woocommerce::WooMapping;
use omnifold_proto::Event;
use tokio::sync::{Mutex, oneshot};

const SECRET: &[u8] = b"hush-this-is-the-app-secret";

fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().expect("the test recorder installs"))
}

/// The counter's value in the Prometheus rendering (0 when absent).
fn counter(name_and_labels: &str) -> f64 {
    metrics()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// A channel sample from the repository's `tests/fixtures/payloads`.
fn payload(name: &str) -> Vec<u8> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/payloads").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read the channel sample {}: {e}", path.display()))
}

async fn start(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn shopify_mapping() -> ShopifyMapping {
    ShopifyMapping {
        channel: "shopify".into(),
        currency: "USD".into(),
        locations: [("655441491".to_string(), "wh-nj".to_string())].into(),
        inventory_items: [("808950810".to_string(), "IPOD2008PINK".to_string())].into(),
        ..ShopifyMapping::default()
    }
}

async fn shopify_server(max_body: usize) -> (String, Arc<Mutex<Intake<MemorySink>>>) {
    metrics();
    let intake = Intake::new(MemorySink::default());
    let router = shopify_router(shopify_mapping(), Secret::new(SECRET), intake.clone(), max_body);
    (start(router).await, intake)
}

async fn post_shopify(
    base: &str,
    topic: &str,
    webhook_id: &str,
    body: &[u8],
    signature: Option<String>,
) -> (u16, serde_json::Value) {
    let mut request = client()
        .post(format!("{base}/webhooks/shopify"))
        .header("X-Shopify-Topic", topic)
        .header("X-Shopify-Webhook-Id", webhook_id)
        .header("X-Shopify-Shop-Domain", "example.myshopify.com")
        .header("X-Shopify-API-Version", "2024-04")
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("X-Shopify-Hmac-Sha256", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

async fn published(intake: &Mutex<Intake<MemorySink>>) -> usize {
    intake.lock().await.sink.events.len()
}

#[tokio::test]
async fn shopify_signatures_good_bad_and_missing() {
    let (base, intake) = shopify_server(1 << 20).await;
    let body = payload("shopify-orders-create.json");
    let bad_before =
        counter(r#"omnifold_connector_rejections_total{adapter="shopify",reason="bad_signature"}"#);
    let missing_before =
        counter(r#"omnifold_connector_rejections_total{adapter="shopify",reason="missing_signature"}"#);

    let (status, answer) = post_shopify(&base, "orders/create", "w-missing", &body, None).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"], "x-shopify-hmac-sha256 is missing");

    // signed with another secret
    let (status, _) =
        post_shopify(&base, "orders/create", "w-bad", &body, Some(sign(b"not-the-secret", &body))).await;
    assert_eq!(status, 401);
    // the right secret over a different body
    let (status, _) = post_shopify(&base, "orders/create", "w-bad", &body, Some(sign(SECRET, b"{}"))).await;
    assert_eq!(status, 401);
    // not even base64
    let (status, _) = post_shopify(&base, "orders/create", "w-bad", &body, Some("%%%".into())).await;
    assert_eq!(status, 401);
    assert_eq!(published(&intake).await, 0, "nothing unsigned is published");

    let (status, answer) =
        post_shopify(&base, "orders/create", "w-good", &body, Some(sign(SECRET, &body))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["published"], 3);
    assert_eq!(published(&intake).await, 3);

    assert!(
        counter(r#"omnifold_connector_rejections_total{adapter="shopify",reason="bad_signature"}"#)
            >= bad_before + 3.0
    );
    assert!(
        counter(r#"omnifold_connector_rejections_total{adapter="shopify",reason="missing_signature"}"#)
            >= missing_before + 1.0
    );
}

#[tokio::test]
async fn shopify_redelivery_publishes_nothing_new() {
    let (base, intake) = shopify_server(1 << 20).await;
    let body = payload("shopify-inventory-levels-update.json");
    let signature = sign(SECRET, &body);
    let (status, answer) =
        post_shopify(&base, "inventory_levels/update", "w-1", &body, Some(signature.clone())).await;
    assert_eq!((status, answer["published"].as_u64()), (200, Some(1)));
    let first = intake.lock().await.sink.events.clone();

    let (status, answer) =
        post_shopify(&base, "inventory_levels/update", "w-1", &body, Some(signature.clone())).await;
    assert_eq!(status, 200);
    assert_eq!(answer["duplicate"], true, "{answer}");
    assert_eq!(intake.lock().await.sink.events, first, "the redelivery published nothing");

    // a redelivery the receiver no longer remembers maps to the same event ids, which the
    // coordinator ignores: a business fact keeps its id
    let forgetful = ShopifyMapping { ..shopify_mapping() };
    let again = forgetful.map("inventory_levels/update", "w-1", &body).unwrap();
    assert_eq!(again.events, first);
    let orders = payload("shopify-orders-create.json");
    let once = forgetful.map("orders/create", "w-2", &orders).unwrap();
    let twice = forgetful.map("orders/create", "w-3", &orders).unwrap();
    assert_eq!(once.events, twice.events, "order facts keep their ids across webhook ids");
}

/// Issue 16, item 2: an inventory level replayed under a new webhook id after a later one is
/// not published again and does not set on-hand back; it is answered as ignored
/// (`stale_level`) and counted.
#[tokio::test]
async fn shopify_inventory_level_replayed_after_a_later_one_is_ignored() {
    let (base, intake) = shopify_server(1 << 20).await;
    let ignored = r#"omnifold_connector_ignored_total{adapter="shopify",reason="stale_level"}"#;
    let before = counter(ignored);
    let old = payload("shopify-inventory-levels-update.json");
    let mut newer: serde_json::Value = serde_json::from_slice(&old).unwrap();
    newer["available"] = 38.into();
    newer["updated_at"] = "2024-04-02T09:10:00-05:00".into();
    let newer = serde_json::to_vec(&newer).unwrap();

    for (id, body) in [("lvl-1", &old), ("lvl-2", &newer)] {
        let (status, answer) =
            post_shopify(&base, "inventory_levels/update", id, body, Some(sign(SECRET, body))).await;
        assert_eq!((status, answer["published"].as_u64()), (200, Some(1)), "{answer}");
    }
    // the first level again, under a webhook id never seen
    let (status, answer) =
        post_shopify(&base, "inventory_levels/update", "lvl-3", &old, Some(sign(SECRET, &old))).await;
    assert_eq!((status, answer["published"].as_u64()), (200, Some(0)), "{answer}");
    assert_eq!(answer["ignored"][0]["reason"], "stale_level", "{answer}");
    assert_eq!(answer["ignored"][0]["item"], "level inventory:808950810:655441491");
    assert!(counter(ignored) >= before + 1.0);

    let ids: Vec<String> = intake.lock().await.sink.events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(
        ids,
        [
            "shopify:inventory:808950810:655441491:1712066244000:42",
            "shopify:inventory:808950810:655441491:1712067000000:38"
        ]
    );
}

#[tokio::test]
async fn shopify_malformed_and_oversized_bodies() {
    let (base, intake) = shopify_server(4096).await;
    let before = counter(r#"omnifold_connector_rejections_total{adapter="shopify",reason="malformed"}"#);

    let body = br#"{"id": 1, "currency": "USD", "line_items": [{"id": 2, "quantity": "many"}]}"#;
    let (status, answer) = post_shopify(&base, "orders/create", "w-m1", body, Some(sign(SECRET, body))).await;
    assert_eq!(status, 400);
    let message = answer["error"].as_str().unwrap();
    assert!(message.starts_with("malformed Shopify orders/create body: invalid type"), "{message}");

    let body = b"not json at all";
    let (status, answer) = post_shopify(&base, "orders/create", "w-m2", body, Some(sign(SECRET, body))).await;
    assert_eq!(status, 400, "{answer}");

    // a malformed delivery is not remembered: once fixed, the same id goes through
    let good = payload("shopify-inventory-levels-update.json");
    let (status, _) =
        post_shopify(&base, "inventory_levels/update", "w-m2", &good, Some(sign(SECRET, &good))).await;
    assert_eq!(status, 200);
    assert_eq!(published(&intake).await, 1);

    // missing topic header
    let response = client()
        .post(format!("{base}/webhooks/shopify"))
        .header("X-Shopify-Hmac-Sha256", sign(SECRET, &good))
        .header("X-Shopify-Webhook-Id", "w-m3")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    let big = payload("shopify-orders-create.json"); // 27 kB > 4 kB
    let (status, _) = post_shopify(&base, "orders/create", "w-big", &big, Some(sign(SECRET, &big))).await;
    assert_eq!(status, 413);
    assert_eq!(published(&intake).await, 1, "nothing malformed or oversized is published");
    assert!(
        counter(r#"omnifold_connector_rejections_total{adapter="shopify",reason="malformed"}"#)
            >= before + 2.0
    );
    assert!(
        counter(r#"omnifold_connector_rejections_total{adapter="shopify",reason="body_too_large"}"#) >= 1.0
    );
}

#[tokio::test]
async fn shopify_refusals_are_answered_200_and_counted() {
    let (base, intake) = shopify_server(1 << 20).await;
    let before = counter(r#"omnifold_connector_rejections_total{adapter="shopify",reason="empty_sku"}"#);
    let body = payload("shopify-orders-cancelled.json"); // empty SKUs, no variant mapping here
    let (status, answer) =
        post_shopify(&base, "orders/cancelled", "w-r1", &body, Some(sign(SECRET, &body))).await;
    assert_eq!(status, 200, "a refusal is permanent: the channel must not retry it");
    assert_eq!(answer["published"], 0);
    assert_eq!(answer["refused"][0]["reason"], "empty_sku");
    assert_eq!(published(&intake).await, 0);
    assert!(
        counter(r#"omnifold_connector_rejections_total{adapter="shopify",reason="empty_sku"}"#)
            >= before + 2.0
    );
}

/// Issue 16, item 5: orders/updated and orders/edited are taken (no longer
/// unsupported_topic), and a cancelled fulfillment, which the contract cannot un-ship, is
/// refused in the answer and in the rejections metric.
#[tokio::test]
async fn shopify_order_updates_edits_and_cancelled_fulfillments_are_answered() {
    let (base, intake) = shopify_server(1 << 20).await;
    let rejected = |reason: &str| {
        counter(&format!(r#"omnifold_connector_rejections_total{{adapter="shopify",reason="{reason}"}}"#))
    };
    let (cancelled_before, unsupported_before) =
        (rejected("fulfillment_cancelled"), rejected("unsupported_topic"));

    let body = payload("shopify-fulfillments-update-cancelled.json");
    let (status, answer) =
        post_shopify(&base, "fulfillments/update", "w-e1", &body, Some(sign(SECRET, &body))).await;
    assert_eq!((status, answer["published"].as_u64()), (200, Some(0)), "{answer}");
    assert_eq!(answer["refused"][0]["reason"], "fulfillment_cancelled", "{answer}");
    assert!(rejected("fulfillment_cancelled") >= cancelled_before + 1.0);

    let body = payload("shopify-orders-updated.json");
    let (status, answer) =
        post_shopify(&base, "orders/updated", "w-e2", &body, Some(sign(SECRET, &body))).await;
    assert_eq!((status, answer["published"].as_u64()), (200, Some(5)), "{answer}");

    let body = br#"{"order_edit": {"id": 1, "order_id": 450789469,
        "line_items": {"additions": [], "removals": [{"id": 518995019, "delta": 1}]}}}"#;
    let (status, answer) = post_shopify(&base, "orders/edited", "w-e3", body, Some(sign(SECRET, body))).await;
    assert_eq!((status, answer["published"].as_u64()), (200, Some(0)), "{answer}");
    assert_eq!(answer["ignored"][0]["reason"], "edit_in_orders_updated", "{answer}");
    assert_eq!(rejected("unsupported_topic"), unsupported_before, "both topics are mapped");
    assert_eq!(published(&intake).await, 5);
}

async fn post_woo(
    base: &str,
    body: &[u8],
    signature: Option<String>,
    delivery: &str,
) -> (u16, serde_json::Value) {
    let mut request = client()
        .post(format!("{base}/webhooks/woocommerce"))
        .header("X-WC-Webhook-Topic", "order.created")
        .header("X-WC-Webhook-Resource", "order")
        .header("X-WC-Webhook-Event", "created")
        .header("X-WC-Webhook-Delivery-ID", delivery)
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("X-WC-Webhook-Signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, serde_json::from_str(&response.text().await.unwrap()).unwrap())
}

#[tokio::test]
async fn woocommerce_signatures_ping_and_redelivery() {
    metrics();
    let intake = Intake::new(MemorySink::default());
    let mapping = WooMapping {
        channel: "eu-market".into(),
        products: [("93".to_string(), "WOO-SINGLE-1".to_string())].into(),
        ship_location: None,
    };
    let base = start(woocommerce_router(mapping, Secret::new(SECRET), intake.clone(), 1 << 20)).await;
    let body = payload("woocommerce-order-created.json");

    assert_eq!(post_woo(&base, &body, None, "1").await.0, 401);
    assert_eq!(post_woo(&base, &body, Some(sign(b"wrong", &body)), "1").await.0, 401);
    assert_eq!(published(&intake).await, 0);

    // WooCommerce's unsigned ping when a webhook is saved
    let (status, answer) = post_woo(&base, b"webhook_id=12", None, "0").await;
    assert_eq!((status, answer["published"].as_u64()), (200, Some(0)));

    let (status, answer) = post_woo(&base, &body, Some(sign(SECRET, &body)), "1").await;
    assert_eq!((status, answer["published"].as_u64()), (200, Some(2)), "{answer}");
    let (status, answer) = post_woo(&base, &body, Some(sign(SECRET, &body)), "1").await;
    assert_eq!((status, &answer["duplicate"]), (200, &serde_json::Value::Bool(true)));
    assert_eq!(published(&intake).await, 2);

    // partial refunds: listed by total only, each refused and counted
    let before = counter(
        r#"omnifold_connector_rejections_total{adapter="woocommerce",reason="refund_without_lines"}"#,
    );
    let refunds = payload("woocommerce-order-completed-with-refunds.json");
    let (status, answer) = post_woo(&base, &refunds, Some(sign(SECRET, &refunds)), "3").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["refused"][0]["reason"], "refund_without_lines", "{answer}");
    assert!(
        counter(
            r#"omnifold_connector_rejections_total{adapter="woocommerce",reason="refund_without_lines"}"#
        ) >= before + 2.0
    );
    let before = published(&intake).await;

    let broken = b"{\"id\": 727}";
    let (status, answer) = post_woo(&base, broken, Some(sign(SECRET, broken)), "2").await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("missing field"), "{answer}");
    assert_eq!(published(&intake).await, before);
}

#[tokio::test]
async fn amazon_endpoint_token_and_notification_dedup() {
    metrics();
    let intake = Intake::new(MemorySink::default());
    let mapping = AmazonMapping {
        channel: "amazon".into(),
        default_marketplace: "ATVPDKIKX0DER".into(),
        default_fulfillment_channel: "AFN".into(),
        fba_locations: [("ATVPDKIKX0DER".to_string(), "fba-us".to_string())].into(),
        asins: [("B007IBIWZY".to_string(), "SKU-0001".to_string())].into(),
        ..AmazonMapping::default()
    };
    let base = start(amazon_router(mapping, Some(Secret::new("relay-token")), intake.clone(), 1 << 20)).await;
    let body = payload("amazon-pricing-health.json");
    let post = |path: &'static str, token: Option<&'static str>, body: Vec<u8>| {
        let base = base.clone();
        async move {
            let mut request = client().post(format!("{base}{path}")).body(body);
            if let Some(token) = token {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, serde_json::from_str::<serde_json::Value>(&response.text().await.unwrap()).unwrap())
        }
    };
    assert_eq!(post("/amazon/notifications", None, body.clone()).await.0, 401);
    assert_eq!(post("/amazon/notifications", Some("nope"), body.clone()).await.0, 401);
    let (status, answer) = post("/amazon/notifications", Some("relay-token"), body.clone()).await;
    assert_eq!((status, answer["published"].as_u64()), (200, Some(1)), "{answer}");
    let (status, answer) = post("/amazon/notifications", Some("relay-token"), body.clone()).await;
    assert_eq!((status, &answer["duplicate"]), (200, &serde_json::Value::Bool(true)));

    let (status, answer) = post(
        "/amazon/notifications",
        Some("relay-token"),
        br#"{"NotificationType":"ORDER_CHANGE","Payload":{}}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"], "NotificationMetadata.NotificationId is missing");

    let items = payload("amazon-orders-getOrderItems-sandbox.json");
    let (status, answer) = post("/amazon/order-items", Some("relay-token"), items).await;
    assert_eq!((status, answer["published"].as_u64()), (200, Some(1)), "{answer}");
    assert_eq!(published(&intake).await, 2);

    // Orders API v2026-01-01 getOrder, on the same endpoint: the order is placed; its shipped
    // units are refused here, this mapping having no MFN location
    let order = payload("amazon-orders-getOrder-2026-01-01.json");
    let (status, answer) = post("/amazon/order-items", Some("relay-token"), order).await;
    assert_eq!((status, answer["published"].as_u64()), (200, Some(1)), "{answer}");
    assert_eq!(answer["refused"][0]["reason"], "missing_location", "{answer}");
    let (status, answer) =
        post("/amazon/order-items", Some("relay-token"), br#"{"order": {"orderId": "1"}}"#.to_vec()).await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("getOrder 2026-01-01"), "{answer}");
    assert_eq!(published(&intake).await, 3);
}

/// Keeps events like a [`MemorySink`], but each is acknowledged only when the test says.
#[derive(Default)]
struct HeldSink {
    events: Vec<Event>,
    acks: Vec<oneshot::Sender<Result<(), PublishError>>>,
}

impl HeldSink {
    /// Acknowledges every event sent so far (or fails them all).
    fn release(&mut self, outcome: impl Fn() -> Result<(), PublishError>) {
        for ack in self.acks.drain(..) {
            let _ = ack.send(outcome());
        }
    }
}

impl Sink for HeldSink {
    async fn publish(&mut self, event: &Event) -> Result<(), PublishOutcome> {
        self.send(event).map(drop)
    }

    async fn flush(&mut self) -> Result<(), PublishError> {
        Ok(())
    }

    fn send(&mut self, event: &Event) -> Result<Ack, PublishOutcome> {
        let (given, ack) = oneshot::channel();
        self.events.push(event.clone());
        self.acks.push(given);
        Ok(Ack::later(async move { ack.await.unwrap_or(Err(PublishError::Cancelled)) }))
    }
}

/// Posts the delivery until it is no longer answered "still being published".
async fn post_settled(base: &str, id: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) =
            post_shopify(base, "inventory_levels/update", id, body, Some(sign(SECRET, body))).await;
        let in_progress = answer["error"].as_str().is_some_and(|e| e.contains("still being published"));
        if !in_progress {
            return (status, answer);
        }
        assert!(Instant::now() < deadline, "{id} stays in progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn unacknowledged_delivery_is_503_in_time_and_done_only_once_acknowledged() {
    metrics();
    let intake = Intake::with_publish_timeout(HeldSink::default(), Duration::from_millis(200));
    let base = start(shopify_router(shopify_mapping(), Secret::new(SECRET), intake.clone(), 1 << 20)).await;
    let body = payload("shopify-inventory-levels-update.json");
    let post = |id: &'static str| {
        post_shopify(&base, "inventory_levels/update", id, &body, Some(sign(SECRET, &body)))
    };
    let sent = || async { intake.lock().await.sink.events.len() };

    let started = Instant::now();
    let (status, answer) = post("w-1").await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "the broker did not acknowledge the events within 200ms; retry later");
    assert!(started.elapsed() < Duration::from_secs(5));

    // its events are still on their way: a redelivery now sends nothing again
    let (status, answer) = post("w-1").await;
    assert_eq!(status, 503);
    assert_eq!(answer["error"], "an earlier delivery with this id is still being published; retry later");
    assert_eq!(sent().await, 1);

    // acknowledged after the answer: the delivery is done, its redelivery a duplicate
    intake.lock().await.sink.release(|| Ok(()));
    let (status, answer) = post_settled(&base, "w-1", &body).await;
    assert_eq!((status, &answer["duplicate"]), (200, &serde_json::Value::Bool(true)), "{answer}");
    assert_eq!(sent().await, 1);

    // failed after the answer: a redelivery sends the events again
    assert_eq!(post("w-2").await.0, 503);
    intake.lock().await.sink.release(|| Err(PublishError::Cancelled));
    let (status, _) = post_settled(&base, "w-2", &body).await;
    assert_eq!(status, 503, "not acknowledged again");
    assert_eq!(sent().await, 3);
    intake.lock().await.sink.release(|| Ok(()));
    let (status, answer) = post_settled(&base, "w-2", &body).await;
    assert_eq!((status, &answer["duplicate"]), (200, &serde_json::Value::Bool(true)), "{answer}");
    assert_eq!(sent().await, 3);
}

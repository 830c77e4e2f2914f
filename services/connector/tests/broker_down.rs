//! A receiver publishing to a real broker (nisshi, from omnifold-testkit) that goes away:
//! signed deliveries sent together are each answered 503 within the publish timeout, none
//! waiting for another; once the broker is back, a redelivery is answered 200 and its events
//! are on the events topic once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use omnifold_connector::config::Secret;
use omnifold_connector::http::{Intake, shopify_router, sign};
use omnifold_connector::publish::Publisher;
use omnifold_connector::shopify::ShopifyMapping;
use omnifold_proto::Event;
use omnifold_runtime::{KafkaOptions, TopicOptions, Topics};
use omnifold_testkit::{Broker, Storage};
use prost::Message as _;

const SECRET: &[u8] = b"hush-this-is-the-app-secret";
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// The bound each answer is held to: the publish timeout, with a generous margin for a
/// loaded machine, and still inside Shopify's 5 s.
const ANSWER_BOUND: Duration = Duration::from_secs(5);

/// A channel sample from the repository's `tests/fixtures/payloads`.
fn payload(name: &str) -> Vec<u8> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/payloads").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read the channel sample {}: {e}", path.display()))
}

fn mapping() -> ShopifyMapping {
    ShopifyMapping {
        channel: "shopify".into(),
        currency: "USD".into(),
        locations: [("655441491".to_string(), "wh-nj".to_string())].into(),
        inventory_items: [
            ("808950810".to_string(), "IPOD2008PINK".to_string()),
            ("808950811".to_string(), "IPOD2008BLUE".to_string()),
        ]
        .into(),
        ..ShopifyMapping::default()
    }
}

async fn start(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// One signed Shopify webhook.
#[derive(Clone)]
struct Webhook {
    topic: &'static str,
    id: &'static str,
    body: Vec<u8>,
}

/// Posts the webhook; its status, its answer and how long the answer took.
async fn post(base: &str, webhook: &Webhook) -> (u16, serde_json::Value, Duration) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = Instant::now();
    let response = client
        .post(format!("{base}/webhooks/shopify"))
        .header("X-Shopify-Topic", webhook.topic)
        .header("X-Shopify-Webhook-Id", webhook.id)
        .header("X-Shopify-Hmac-Sha256", sign(SECRET, &webhook.body))
        .body(webhook.body.clone())
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    (status, answer, started.elapsed())
}

/// Posts the webhook until it is answered 200 (a 503 is the channel's cue to retry).
async fn redeliver(base: &str, webhook: &Webhook) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, answer, _) = post(base, webhook).await;
        if status == 200 {
            return answer;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(Instant::now() < deadline, "{} still answered 503: {answer}", webhook.id);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How many times each event id is on the topic.
async fn event_counts(broker: &Broker, topic: &str, expected: usize) -> BTreeMap<String, usize> {
    let records = broker.read_all(topic, expected, Duration::from_secs(30)).await.expect("topic read");
    let mut counts = BTreeMap::new();
    for record in records {
        let event = Event::decode(record.value.as_deref().unwrap_or_default()).expect("an event");
        *counts.entry(event.event_id).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_get_503_in_bounded_time_while_the_broker_is_down_and_publish_once_after() {
    // sqlite storage: the topic and what was acknowledged outlive the restart
    let mut broker = Broker::start_with_storage(Storage::Sqlite)
        .await
        .expect("broker starts (deploy/install-broker.sh installs nisshi)");
    let topics = Topics::new(&TopicOptions::default().prefix);
    broker.create_topic(&topics.events, 3, false).await.unwrap();
    let kafka = KafkaOptions { bootstrap_servers: broker.bootstrap(), ..KafkaOptions::default() };
    let publisher = Publisher::new(&kafka, &topics, None).unwrap();
    let intake = Intake::with_publish_timeout(publisher, PUBLISH_TIMEOUT);
    let base = start(shopify_router(mapping(), Secret::new(SECRET), intake, 1 << 20)).await;

    let inventory = payload("shopify-inventory-levels-update.json");
    let up = Webhook { topic: "inventory_levels/update", id: "w-up", body: inventory.clone() };
    let (status, answer, _) = post(&base, &up).await;
    assert_eq!((status, answer["published"].as_u64()), (200, Some(1)), "{answer}");

    broker.kill();
    // a later level of the item and one of another item: two more distinct facts (of two
    // items, so that the order the concurrent deliveries are mapped in does not matter)
    let later = |item: u64, available: i64| {
        let mut level: serde_json::Value = serde_json::from_slice(&inventory).unwrap();
        level["inventory_item_id"] = item.into();
        level["available"] = available.into();
        level["updated_at"] = "2024-04-02T09:01:00-05:00".into();
        serde_json::to_vec(&level).unwrap()
    };
    let webhooks = [
        Webhook { topic: "orders/create", id: "w-1", body: payload("shopify-orders-create.json") },
        Webhook { topic: "inventory_levels/update", id: "w-2", body: later(808950810, 41) },
        Webhook { topic: "inventory_levels/update", id: "w-3", body: later(808950811, 40) },
    ];
    let sending: Vec<_> = webhooks
        .iter()
        .map(|webhook| {
            let (base, webhook) = (base.clone(), webhook.clone());
            tokio::spawn(async move { post(&base, &webhook).await })
        })
        .collect();
    for (webhook, sent) in webhooks.iter().zip(sending) {
        let (status, answer, took) = sent.await.unwrap();
        assert_eq!(status, 503, "{}: {answer}", webhook.id);
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains("retry later"), "{error}");
        // one after another, the third would wait three publish timeouts
        assert!(took < ANSWER_BOUND, "{} was answered after {took:?}", webhook.id);
    }

    broker.restart().await.expect("the broker restarts");
    for webhook in &webhooks {
        // a duplicate when the first attempt's events got through after the restart
        let answer = redeliver(&base, webhook).await;
        let published = answer["published"].as_u64().is_some_and(|n| n > 0);
        assert!(published || answer["duplicate"] == true, "{answer}");
    }
    let counts = event_counts(&broker, &topics.events, 6).await;
    assert_eq!(counts.len(), 6, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "every event once: {counts:?}");
    let ids: Vec<&str> = counts.keys().map(String::as_str).collect();
    assert!(ids.contains(&"shopify:inventory:808950811:655441491:1712066460000:40"), "{ids:?}");
}

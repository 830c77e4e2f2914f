//! The push-back requests against a local stand-in API: the answer decides between done,
//! rate limited (Retry-After), retry (5xx) and refused (other 4xx, or nothing to address).
//! And the run against a real broker (nisshi): it knows it has caught up by the end of each
//! partition, not by a high watermark, which nisshi answers short of the end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{patch, post};
use omnifold_connector::config::{ConnectorConfig, Secret};
use omnifold_connector::pushback::{PushResult, Pushback, Stamp, Target, encode_path, push};
use omnifold_proto::ChannelAvailability;
use omnifold_runtime::{KafkaOptions, Topics};
use omnifold_testkit::Broker;
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn start(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn shopify(base: &str) -> Target {
    Target::Shopify {
        url: format!("{base}/admin/api/2024-04/inventory_levels/set.json"),
        location_id: 7,
        token: Secret::new("t"),
        items: HashMap::from([
            ("SKU-A".to_string(), 11),
            ("SKU-B".to_string(), 12),
            ("SKU-C".to_string(), 13),
        ]),
    }
}

#[tokio::test]
async fn answers_decide_what_happens_next() {
    let router = Router::new()
        .route(
            "/admin/api/2024-04/inventory_levels/set.json",
            post(|body: axum::Json<serde_json::Value>| async move {
                match body["inventory_item_id"].as_u64() {
                    Some(11) => (StatusCode::OK, "{}").into_response(),
                    Some(12) => (StatusCode::TOO_MANY_REQUESTS, [("Retry-After", "2")], "").into_response(),
                    _ => (StatusCode::BAD_GATEWAY, "").into_response(),
                }
            }),
        )
        .route(
            "/listings/2021-08-01/items/{seller}/{sku}",
            patch(|| async { (StatusCode::BAD_REQUEST, r#"{"errors":[{"code":"InvalidInput"}]}"#) }),
        );
    let base = start(router).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let target = shopify(&base);
    assert_eq!(push(&client, &target, "SKU-A", 5).await, PushResult::Done);
    assert_eq!(push(&client, &target, "SKU-B", 5).await, PushResult::RateLimited(Duration::from_secs(2)));
    assert!(matches!(push(&client, &target, "SKU-C", 5).await, PushResult::Retry(_)));
    assert!(matches!(push(&client, &target, "SKU-Z", 5).await, PushResult::Refused("unmapped_sku", _)));

    let amazon = Target::Amazon {
        base_url: base.clone(),
        seller_id: "S1".into(),
        marketplace_ids: vec!["ATVPDKIKX0DER".into()],
        token: Secret::new("a"),
        product_type: "PRODUCT".into(),
        fulfillment_channel_code: "DEFAULT".into(),
        seller_skus: HashMap::new(),
    };
    match push(&client, &amazon, "SKU A/1", 3).await {
        PushResult::Refused("push_refused", message) => {
            assert!(message.contains("InvalidInput"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // nobody listening: retried, not dropped
    let closed = shopify("http://127.0.0.1:9");
    assert!(matches!(push(&client, &closed, "SKU-A", 1).await, PushResult::Retry(_)));
}

#[test]
fn newer_is_a_later_offset_in_the_same_partition() {
    let at = |partition, offset, decided_at_ms| Stamp { partition, offset, decided_at_ms };
    assert!(at(0, 5, 100).is_newer_than(&at(0, 4, 200)), "a late event's record is still newer");
    assert!(!at(0, 4, 200).is_newer_than(&at(0, 5, 100)));
    assert!(!at(0, 5, 100).is_newer_than(&at(0, 5, 100)));
    assert!(at(1, 0, 300).is_newer_than(&at(0, 9, 200)), "across partitions, decided_at_ms decides");
    assert_eq!(encode_path("SKU A/1+é"), "SKU%20A%2F1%2B%C3%A9");
}

/// A stand-in for Shopify's inventory_levels/set that records the numbers it is sent.
async fn recording_shopify() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let router = Router::new().route(
        "/admin/api/2024-04/inventory_levels/set.json",
        post(move |body: axum::Json<serde_json::Value>| async move {
            recorder.lock().unwrap().push(body.0);
            (StatusCode::OK, "{}")
        }),
    );
    (start(router).await, seen)
}

fn pushback_config(api: &str, dir: &std::path::Path, items: usize) -> ConnectorConfig {
    let token = dir.join("token");
    std::fs::write(&token, "shpat-test\n").unwrap();
    let items: String = (0..items).map(|i| format!("\"{}\" = \"SKU-{i}\"\n", 100 + i)).collect();
    let text = format!(
        r#"
[shopify]
channel = "shopify"
secret = {{ env = "OMNIFOLD_UNUSED_WEBHOOK_SECRET" }}
currency = "USD"
[shopify.inventory_items]
{items}
[pushback]
state = "{state}"
[pushback.shopify]
channel = "shopify"
base_url = "{api}"
location_id = "7"
access_token = {{ file = "{token}" }}
"#,
        state = dir.join("state").display(),
        token = token.display(),
    );
    ConnectorConfig::parse(&text).expect("the test config parses")
}

/// Produces one availability record per SKU into partition 0, all in one batch: nisshi then
/// answers ListOffsets with the batch's base offset, far short of its end.
async fn produce_one_batch(broker: &Broker, topic: &str, skus: usize) {
    let producer: FutureProducer = broker.client_config().set("linger.ms", "200").create().unwrap();
    let values: Vec<(String, Vec<u8>)> = (0..skus)
        .map(|i| {
            let record = ChannelAvailability {
                sku: format!("SKU-{i}"),
                channel: "shopify".into(),
                available: 10 + i as i64,
                decided_at_ms: 1_794_182_400_000,
                ..ChannelAvailability::default()
            };
            (format!("shopify/SKU-{i}"), record.encode_to_vec())
        })
        .collect();
    let deliveries: Vec<_> = values
        .iter()
        .map(|(key, value)| {
            let record = FutureRecord::to(topic).partition(0).key(key).payload(value);
            producer.send_result(record).map_err(|(error, _)| error).unwrap()
        })
        .collect();
    for delivery in deliveries {
        delivery.await.unwrap().map_err(|(error, _)| error).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn caught_up_means_the_end_of_every_partition_on_the_real_broker() {
    let broker = Broker::start().await.expect("broker starts (deploy/install-broker.sh installs nisshi)");
    let topics = Topics::new("omnifold.");
    // two partitions: the second stays empty and must not hold the run up
    broker.create_topic(&topics.availability, 2, true).await.unwrap();
    let kafka = KafkaOptions { bootstrap_servers: broker.bootstrap(), ..KafkaOptions::default() };
    let (api, seen) = recording_shopify().await;
    let dir = tempfile::tempdir().unwrap();
    let config = pushback_config(&api, dir.path(), 5);

    let run = |config: ConnectorConfig| {
        let kafka = kafka.clone();
        let topics = topics.clone();
        async move {
            let mut pushback = Pushback::new(&kafka, &topics, &config).unwrap();
            tokio::time::timeout(Duration::from_secs(60), pushback.run(std::future::pending(), true))
                .await
                .expect("push-back caught up in time")
                .expect("push-back ran")
        }
    };
    let stats = run(config.clone()).await;
    assert_eq!((stats.records, stats.pushed), (0, 0), "an empty topic is caught up at once");

    produce_one_batch(&broker, &topics.availability, 5).await;
    let stats = run(config).await;
    assert_eq!((stats.records, stats.pushed), (5, 5), "{stats:?}");
    let available: Vec<i64> =
        seen.lock().unwrap().iter().map(|body| body["available"].as_i64().unwrap()).collect();
    assert_eq!(available, [10, 11, 12, 13, 14], "every record of the batch was pushed");
}

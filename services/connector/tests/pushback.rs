//! The push-back requests against a local stand-in API: the answer decides between done,
//! rate limited (Retry-After), retry (5xx) and refused (other 4xx, or nothing to address).
//! Shopify's GraphQL `inventorySetQuantities` against a recording stand-in that keeps levels
//! and compares `changeFromQuantity` as Shopify does: a change made on its side meanwhile is
//! read, counted and set over once, never silently. And the run against a real broker
//! (nisshi): it knows it has caught up by the end of each partition, not by a high
//! watermark, which nisshi answers short of the end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{patch, post};
use omnifold_connector::config::{ConnectorConfig, Secret, ShopifyApi};
use omnifold_connector::pushback::{
    PushRequest, PushResult, Pushback, Stamp, Target, encode_path, push, reference,
};
use omnifold_proto::ChannelAvailability;
use omnifold_runtime::{KafkaOptions, Topics};
use omnifold_testkit::Broker;
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

async fn start(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn shopify(base: &str) -> Target {
    Target::Shopify {
        url: format!("{base}/admin/api/2024-04/inventory_levels/set.json"),
        api: ShopifyApi::Rest,
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
    let number = |sku, available| PushRequest::new(sku, available, "gid://omnifold/test/1");
    assert_eq!(push(&client, &target, &number("SKU-A", 5)).await, PushResult::Done);
    assert_eq!(
        push(&client, &target, &number("SKU-B", 5)).await,
        PushResult::RateLimited(Duration::from_secs(2))
    );
    assert!(matches!(push(&client, &target, &number("SKU-C", 5)).await, PushResult::Retry(_)));
    assert!(matches!(
        push(&client, &target, &number("SKU-Z", 5)).await,
        PushResult::Refused("unmapped_sku", _)
    ));

    let amazon = Target::Amazon {
        base_url: base.clone(),
        seller_id: "S1".into(),
        marketplace_ids: vec!["ATVPDKIKX0DER".into()],
        token: Secret::new("a"),
        product_type: "PRODUCT".into(),
        fulfillment_channel_code: "DEFAULT".into(),
        seller_skus: HashMap::new(),
    };
    match push(&client, &amazon, &number("SKU A/1", 3)).await {
        PushResult::Refused("push_refused", message) => {
            assert!(message.contains("InvalidInput"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // nobody listening: retried, not dropped
    let closed = shopify("http://127.0.0.1:9");
    assert!(matches!(push(&client, &closed, &number("SKU-A", 1)).await, PushResult::Retry(_)));
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

/// A stand-in for Shopify's GraphQL Admin API: inventory levels by (item gid, location gid),
/// `inventorySetQuantities` that compares `changeFromQuantity` with the level as Shopify does
/// (since 2026-04: it must be given; stale is the user error CHANGE_FROM_QUANTITY_STALE), the
/// `inventoryLevel` read, and every request recorded with its token.
#[derive(Default)]
struct FakeShopify {
    levels: HashMap<(String, String), i64>,
    /// Every request: (token header, body).
    requests: Vec<(String, Value)>,
    /// Answer the next request THROTTLED.
    throttle_next: bool,
    /// Answer every request with this top-level GraphQL error code.
    error: Option<&'static str>,
    /// Someone on Shopify's side sells one unit right after each read.
    sell_after_read: bool,
}

const GRAPHQL: &str = "/admin/api/2026-10/graphql.json";

fn gids(item: u64, location: u64) -> (String, String) {
    (format!("gid://shopify/InventoryItem/{item}"), format!("gid://shopify/Location/{location}"))
}

fn graphql_answer(fake: &mut FakeShopify, token: String, body: Value) -> Value {
    fake.requests.push((token, body.clone()));
    if std::mem::take(&mut fake.throttle_next) {
        return json!({
            "errors": [{ "message": "Throttled", "extensions": { "code": "THROTTLED" } }],
            "extensions": { "cost": {
                "requestedQueryCost": 10,
                "actualQueryCost": null,
                "throttleStatus": { "maximumAvailable": 2000.0, "currentlyAvailable": 4, "restoreRate": 2.0 },
            }},
        });
    }
    if let Some(code) = fake.error {
        return json!({ "errors": [{ "message": "denied", "extensions": { "code": code } }] });
    }
    let query = body["query"].as_str().unwrap_or("");
    let variables = &body["variables"];
    if query.starts_with("query") {
        let key = (
            variables["item"].as_str().unwrap().to_string(),
            variables["location"].as_str().unwrap().to_string(),
        );
        let Some(level) = fake.levels.get(&key).copied() else {
            return json!({ "data": { "inventoryItem": { "inventoryLevel": null } } });
        };
        if fake.sell_after_read {
            fake.levels.insert(key, level - 1);
        }
        return json!({ "data": { "inventoryItem": { "inventoryLevel": {
            "quantities": [{ "name": "available", "quantity": level }],
        }}}});
    }
    assert!(query.contains("inventorySetQuantities(input: $input) @idempotent(key: \""), "{query}");
    let input = &variables["input"];
    assert_eq!((input["name"].as_str(), input["reason"].as_str()), (Some("available"), Some("correction")));
    let quantity = &input["quantities"][0];
    let key = (
        quantity["inventoryItemId"].as_str().unwrap().to_string(),
        quantity["locationId"].as_str().unwrap().to_string(),
    );
    let user_error = |code: &str, message: &str| {
        json!({ "data": { "inventorySetQuantities": {
            "inventoryAdjustmentGroup": null,
            "userErrors": [{ "code": code, "field": ["input", "quantities", "0", "changeFromQuantity"], "message": message }],
        }}})
    };
    let Some(from) = quantity.get("changeFromQuantity") else {
        return user_error("CHANGE_FROM_QUANTITY_REQUIRED", "changeFromQuantity must be given");
    };
    let current = fake.levels.get(&key).copied();
    if from.as_i64() != current {
        return user_error(
            "CHANGE_FROM_QUANTITY_STALE",
            "The quantity has been updated since it was last read",
        );
    }
    fake.levels.insert(key, quantity["quantity"].as_i64().unwrap());
    json!({ "data": { "inventorySetQuantities": {
        "inventoryAdjustmentGroup": { "id": "gid://shopify/InventoryAdjustmentGroup/1" },
        "userErrors": [],
    }}})
}

async fn fake_shopify() -> (String, Arc<Mutex<FakeShopify>>) {
    let fake = Arc::new(Mutex::new(FakeShopify::default()));
    let state = fake.clone();
    let router = Router::new().route(
        GRAPHQL,
        post(move |headers: axum::http::HeaderMap, body: axum::Json<Value>| async move {
            let token =
                headers.get("x-shopify-access-token").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            axum::Json(graphql_answer(&mut state.lock().unwrap(), token, body.0))
        }),
    );
    (start(router).await, fake)
}

/// The mutations a fake saw: (changeFromQuantity, quantity, idempotency key).
fn mutations(fake: &FakeShopify) -> Vec<(i64, i64, String)> {
    fake.requests
        .iter()
        .filter(|(_, body)| body["query"].as_str().unwrap().starts_with("mutation"))
        .map(|(_, body)| {
            let query = body["query"].as_str().unwrap();
            let key = query.split("@idempotent(key: \"").nth(1).unwrap().split('"').next().unwrap();
            let quantity = &body["variables"]["input"]["quantities"][0];
            (
                quantity["changeFromQuantity"].as_i64().unwrap(),
                quantity["quantity"].as_i64().unwrap(),
                key.to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn graphql_compares_with_the_quantity_set_last_and_never_overwrites_silently() {
    let (base, fake) = fake_shopify().await;
    let target = Target::Shopify {
        url: format!("{base}{GRAPHQL}"),
        api: ShopifyApi::Graphql,
        location_id: 7,
        token: Secret::new("shpat-graphql"),
        items: HashMap::from([("SKU-A".to_string(), 11), ("SKU-N".to_string(), 13)]),
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let level = |fake: &Arc<Mutex<FakeShopify>>| fake.lock().unwrap().levels.get(&gids(11, 7)).copied();
    fake.lock().unwrap().levels.insert(gids(11, 7), 40);

    // the first push knows nothing set before: it reads Shopify's number and compares with it
    let reference = "gid://omnifold/ChannelAvailability/shopify:SKU-A:0:5";
    let first = PushRequest::new("SKU-A", 30, reference);
    assert_eq!(push(&client, &target, &first).await, PushResult::Done);
    assert_eq!(level(&fake), Some(30));
    {
        let fake = fake.lock().unwrap();
        assert_eq!(fake.requests.len(), 2, "a read, then the set");
        let (token, set) = &fake.requests[1];
        assert_eq!(token, "shpat-graphql");
        let input = &set["variables"]["input"];
        assert_eq!(input["referenceDocumentUri"], reference);
        assert_eq!(input["quantities"][0]["inventoryItemId"], "gid://shopify/InventoryItem/11");
        assert_eq!(input["quantities"][0]["locationId"], "gid://shopify/Location/7");
        assert_eq!(mutations(&fake)[0].0, 40);
    }

    // a sale on Shopify's side meanwhile: 30 -> 27. The set from 30 is stale; the pusher
    // reads 27 and sets 25 from it, under a new idempotency key
    fake.lock().unwrap().levels.insert(gids(11, 7), 27);
    let second = PushRequest { last_set: Some(30), ..PushRequest::new("SKU-A", 25, reference) };
    assert_eq!(
        push(&client, &target, &second).await,
        PushResult::DoneAfterConflict { expected: 30, found: 27 }
    );
    assert_eq!(level(&fake), Some(25));
    let sets = mutations(&fake.lock().unwrap());
    assert_eq!(
        sets.iter().map(|(from, to, _)| (*from, *to)).collect::<Vec<_>>(),
        [(40, 30), (30, 25), (27, 25)]
    );
    assert_ne!(sets[1].2, sets[2].2, "another changeFromQuantity is another request");

    // with the number Shopify already has set last, a set from it is one request
    let before = fake.lock().unwrap().requests.len();
    let third = PushRequest { last_set: Some(25), ..PushRequest::new("SKU-A", 20, reference) };
    assert_eq!(push(&client, &target, &third).await, PushResult::Done);
    assert_eq!(fake.lock().unwrap().requests.len(), before + 1);

    // sold again right after every read: after one fresh read it retries later, not blindly
    fake.lock().unwrap().sell_after_read = true;
    let fourth = PushRequest { last_set: Some(30), ..PushRequest::new("SKU-A", 15, reference) };
    assert_eq!(
        push(&client, &target, &fourth).await,
        PushResult::StillConflicting { expected: 30, found: 20 }
    );
    assert_eq!(level(&fake), Some(19), "Shopify's sale stands");
    fake.lock().unwrap().sell_after_read = false;

    // throttled: the wait is the missing cost over the restore rate, (10 - 4) / 2 s
    fake.lock().unwrap().throttle_next = true;
    let fifth = PushRequest { last_set: Some(19), ..PushRequest::new("SKU-A", 12, reference) };
    assert_eq!(push(&client, &target, &fifth).await, PushResult::RateLimited(Duration::from_secs(3)));
    assert_eq!(level(&fake), Some(19));

    // an item not stocked at the location, and a GraphQL error, refuse the number
    assert!(matches!(
        push(&client, &target, &PushRequest::new("SKU-N", 5, reference)).await,
        PushResult::Refused("not_stocked", _)
    ));
    fake.lock().unwrap().error = Some("ACCESS_DENIED");
    match push(&client, &target, &fifth).await {
        PushResult::Refused("graphql_error", message) => {
            assert!(message.contains("ACCESS_DENIED"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(level(&fake), Some(19));
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

/// Produces one availability record per (SKU number, available) into partition 0, all in one
/// batch: nisshi then answers ListOffsets with the batch's base offset, far short of its end.
async fn produce_one_batch(broker: &Broker, topic: &str, numbers: &[(usize, i64)]) {
    let producer: FutureProducer = broker.client_config().set("linger.ms", "200").create().unwrap();
    let values: Vec<(String, Vec<u8>)> = numbers
        .iter()
        .map(|(i, available)| {
            let record = ChannelAvailability {
                sku: format!("SKU-{i}"),
                channel: "shopify".into(),
                available: *available,
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
    let (api, fake) = fake_shopify().await;
    for i in 0..5 {
        fake.lock().unwrap().levels.insert(gids(100 + i, 7), 0);
    }
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

    let batch: Vec<(usize, i64)> = (0..5).map(|i| (i, 10 + i as i64)).collect();
    produce_one_batch(&broker, &topics.availability, &batch).await;
    let stats = run(config.clone()).await;
    assert_eq!((stats.records, stats.pushed, stats.conflicts), (5, 5, 0), "{stats:?}");
    let set: Vec<i64> = mutations(&fake.lock().unwrap()).iter().map(|(_, to, _)| *to).collect();
    assert_eq!(set, [10, 11, 12, 13, 14], "every record of the batch was pushed");

    // a sale on Shopify's side (10 -> 9), then a newer number for SKU-0: the restart reads
    // the compare quantity from its store, finds it stale, reads 9 and sets 8 from it
    fake.lock().unwrap().levels.insert(gids(100, 7), 9);
    produce_one_batch(&broker, &topics.availability, &[(0, 8)]).await;
    let stats = run(config.clone()).await;
    assert_eq!((stats.records, stats.pushed, stats.conflicts), (6, 1, 1), "{stats:?}");
    let sets = mutations(&fake.lock().unwrap());
    let last: Vec<(i64, i64)> = sets[5..].iter().map(|(from, to, _)| (*from, *to)).collect();
    assert_eq!(last, [(10, 8), (9, 8)]);
    assert_eq!(fake.lock().unwrap().levels[&gids(100, 7)], 8);
    let pushback = Pushback::new(&kafka, &topics, &config).unwrap();
    assert_eq!(pushback.last_set("shopify", "SKU-0"), Some(8));
    assert_eq!(pushback.last_set("shopify", "SKU-1"), Some(11));
}

#[test]
fn a_record_is_referenced_by_its_place() {
    let stamp = Stamp { partition: 2, offset: 41, decided_at_ms: 0 };
    assert_eq!(
        reference("shopify", "SKU A/1", &stamp),
        "gid://omnifold/ChannelAvailability/shopify:SKU%20A%2F1:2:41"
    );
}

#[test]
fn graphql_by_default_at_the_current_version_and_rest_behind_a_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = pushback_config("https://shop.example", dir.path(), 1);
    let url = |config: &ConnectorConfig| match &Target::from_config(config).unwrap()["shopify"] {
        Target::Shopify { url, api, .. } => (url.clone(), *api),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        url(&config),
        ("https://shop.example/admin/api/2026-10/graphql.json".to_string(), ShopifyApi::Graphql)
    );
    let mut rest = config.clone();
    let shopify = rest.pushback.as_mut().unwrap().shopify.as_mut().unwrap();
    shopify.api = "rest".parse().unwrap();
    shopify.api_version = "2025-07".into();
    assert_eq!(
        url(&rest),
        ("https://shop.example/admin/api/2025-07/inventory_levels/set.json".to_string(), ShopifyApi::Rest)
    );
    assert!("soap".parse::<ShopifyApi>().is_err());
}

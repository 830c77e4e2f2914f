//! The push-back requests against a local stand-in API: the answer decides between done,
//! rate limited (Retry-After), retry (5xx) and refused (other 4xx, or nothing to address).

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{patch, post};
use omnifold_connector::config::Secret;
use omnifold_connector::pushback::{PushResult, Stamp, Target, encode_path, push};

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

//! Events published by the generic connector into a real broker come back from the
//! coordinator as availability, alerts, escalations and dead letters, read with a plain
//! rdkafka consumer. Numbers follow deploy/local/contract.toml (safety stock 5, scarcity
//! threshold 40, proportional scarcity, max shares 0.7 / 0.6 / 0.4 / 0.3).

mod common;

use std::collections::BTreeMap;

use common::*;
use omnifold_runtime::deadletter::{ERROR_HEADER, SOURCE_HEADER};
use omnifold_runtime::outbox::OUTBOX_HEADER;
use omnifold_testkit::Broker;

const T0: i64 = 1_794_182_400_000;

fn lines() -> String {
    let at = |minutes: i64| T0 + minutes * 60_000;
    [
        format!(r#"{{"event_id":"e1","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-A","location_id":"wh-nj","on_hand":100}}"#, at(0)),
        format!(r#"{{"event_id":"e2","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-A","location_id":"fba-us","on_hand":10}}"#, at(1)),
        "this is not json".to_string(),
        format!(r#"{{"event_id":"e3","channel":"shopify","occurred_at_ms":{},"type":"OrderLinePlaced","order_id":"SHO-1","line_id":"1","sku":"SKU-A","quantity":70,"unit_price":{{"amount":"19.99","currency":"USD"}}}}"#, at(2)),
        format!(r#"{{"event_id":"e4","channel":"shopify","occurred_at_ms":{},"type":"OrderLineShipped","order_id":"SHO-1","line_id":"1","sku":"SKU-A","quantity":70,"location_id":"wh-nj"}}"#, at(3)),
        format!(r#"{{"event_id":"e5","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-A","location_id":"the-moon","on_hand":1}}"#, at(4)),
        format!(r#"{{"event_id":"e1","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-A","location_id":"wh-nj","on_hand":0}}"#, at(5)),
    ]
    .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn connector_to_coordinator_to_topics() {
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let report = publish_ndjson(&broker, &lines()).await;
    assert_eq!(report.published, 6, "{report:?}");
    assert_eq!(report.refused.len(), 1);
    assert_eq!(report.refused[0].0, 3, "the bad line is named by its number");
    assert!(report.refused[0].1.contains("invalid event json"), "{report:?}");

    let store = tempfile::tempdir().unwrap();
    run_until_caught_up(&broker, store.path()).await;
    let topics = topics();

    // e1: sellable 95, normal: floor(0.7 x 95) = 66, 57, 38, 28. e2: amazon + 10 at FBA.
    // e3: ATP 30, sellable 25 < 40: proportional on 28-day units (shopify 70, others 0):
    // shopify's quota 25 is capped at floor(0.7 x 25) = 17; amazon keeps its FBA 10.
    let published = availability(&read(&broker, &topics.availability, 9).await);
    let by_event: Vec<(String, String, i64)> =
        published.iter().map(|a| (a.reason_event_id.clone(), a.channel.clone(), a.available)).collect();
    assert_eq!(published.len(), 9, "{by_event:?}");
    let want: BTreeMap<(String, String), i64> = [
        (("amazon", "SKU-A"), 10),
        (("eu-market", "SKU-A"), 0),
        (("shopify", "SKU-A"), 17),
        (("wholesale", "SKU-A"), 0),
    ]
    .into_iter()
    .map(|((c, s), n)| ((c.to_string(), s.to_string()), n))
    .collect();
    assert_eq!(final_availability(&published), want);

    let alert_records = read(&broker, &topics.alerts, 1).await;
    let raised: Vec<String> = alerts(&alert_records).iter().map(alert_record).collect();
    assert_eq!(raised, vec!["RAISED allocation_breach/SKU-A/line=shopify:SHO-1:1/e3"]);
    let alert = &alerts(&alert_records)[0];
    assert!(alert.detected_at_ms > 0, "detected_at_ms is stamped");
    assert_eq!((alert.accountable.as_str(), alert.owner.as_str()), ("shopify", "Maya Chen"));
    assert!(header(&alert_records[0], OUTBOX_HEADER).is_some(), "outputs carry their outbox stamp");

    // 70 units in an hour is shopify's first order of SKU-A: no baseline yet, so no
    // ORDER_SPIKE page (CONTRACT.md section 6, the warm-up); the breach is not critical
    let pages = escalations(&read_to_end(&broker, &topics.escalations).await);
    assert!(pages.is_empty(), "{pages:?}");

    // e4 is worth its line's terms: 70 x 19.99, no discount, fee or cost; once, in both forms
    let ledger = read_to_end(&broker, &topics.ledger_json).await;
    assert_eq!(ledger.len(), 1, "one accepted shipment, one entry");
    let entry: serde_json::Value = serde_json::from_slice(ledger[0].value.as_deref().unwrap()).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../schemas/ledger-entry.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the ledger schema compiles");
    assert!(validator.is_valid(&entry), "{entry}");
    let want = serde_json::json!({
        "entry_id": "shipment/e4", "kind": "SHIPMENT", "channel": "shopify", "sku": "SKU-A",
        "order_id": "SHO-1", "line_id": "1", "occurred_at_ms": T0 + 3 * 60_000, "reason_event_id": "e4",
        "currency": "USD", "units": 70, "gross_revenue": "1399.3", "discount": "0", "channel_fee": "0",
        "cogs": "0", "fulfillment_cost": "0", "unit_cost": "0",
        "event_partition": ledger[0].partition, "event_offset": 3
    });
    assert_eq!(entry, want, "the fourth record of SKU-A's partition, in the same partition of the ledger");
    assert_eq!(ledger[0].key.as_deref(), Some(b"SKU-A".as_slice()));
    let binary: Vec<omnifold_proto::LedgerEntry> = read_to_end(&broker, &topics.ledger)
        .await
        .iter()
        .map(|r| prost::Message::decode(r.value.as_deref().unwrap()).unwrap())
        .collect();
    let progress = omnifold_proto::LedgerKind::Progress as i32;
    assert_eq!(binary.iter().filter(|e| e.kind != progress).count(), 1);
    assert!(binary.iter().any(|e| e.kind == progress), "with the coordinator's progress markers");

    // the line that is not JSON by the connector, the unknown location by the coordinator;
    // not the duplicate
    let dead = read(&broker, &topics.deadletter, 2).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let reason = |record: &omnifold_testkit::Record| {
        String::from_utf8_lossy(header(record, ERROR_HEADER).unwrap()).into_owned()
    };
    assert!(reason(&dead[0]).starts_with("invalid event json"), "{}", reason(&dead[0]));
    assert_eq!(header(&dead[0], SOURCE_HEADER), Some(b"stdin:3".as_slice()));
    assert_eq!(reason(&dead[1]), r#"event "e5": unknown location the-moon"#);
    assert_eq!(dead[1].key.as_deref(), Some(b"SKU-A".as_slice()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_from_the_store_without_repeating_outputs() {
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let all = lines();
    let lines: Vec<&str> = all.lines().collect();
    publish_ndjson(&broker, &lines[..3].join("\n")).await;
    let store = tempfile::tempdir().unwrap();
    run_until_caught_up(&broker, store.path()).await;
    publish_ndjson(&broker, &lines[3..].join("\n")).await;
    run_until_caught_up(&broker, store.path()).await;
    run_until_caught_up(&broker, store.path()).await;

    let topics = topics();
    let published = availability(&read(&broker, &topics.availability, 9).await);
    assert_eq!(published.len(), 9, "a restart re-sends nothing");
    let raised = alerts(&read(&broker, &topics.alerts, 1).await);
    assert_eq!(raised.len(), 1);
}

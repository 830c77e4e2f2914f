//! Replenishment and routing against the real broker: events published by the generic
//! connector come back from the coordinator as records on the compacted replenishment and
//! routing topics, once each, with the hand-worked numbers of CONTRACT.md section 10 under
//! deploy/local/contract.toml (lead time 14 at wh-nj, review 7, target cover 30, a case of 12
//! for SKU-0001; FBA target 21 days, at least 10 units; shopify ships from wh-nj, then
//! 3pl-rotterdam).

mod common;

use common::*;
use omnifold_proto::{Replenishment, ReplenishmentAction, RoutingDecision, RoutingState};
use omnifold_runtime::outbox::OUTBOX_HEADER;
use omnifold_testkit::Broker;
use prost::Message as _;

const T0: i64 = 1_794_182_400_000;

fn lines() -> String {
    let at = |minutes: i64| T0 + minutes * 60_000;
    let price = r#""unit_price":{"amount":"19.99","currency":"USD"}"#;
    [
        format!(r#"{{"event_id":"e1","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-0001","location_id":"wh-nj","on_hand":100}}"#, at(0)),
        format!(r#"{{"event_id":"e2","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-0001","location_id":"3pl-rotterdam","on_hand":20}}"#, at(1)),
        format!(r#"{{"event_id":"e3","channel":"shopify","occurred_at_ms":{},"type":"OrderLinePlaced","order_id":"SHO-1","line_id":"1","sku":"SKU-0001","quantity":56,{price}}}"#, at(2)),
        format!(r#"{{"event_id":"e4","channel":"shopify","occurred_at_ms":{},"type":"OrderLinePlaced","order_id":"SHO-2","line_id":"1","sku":"SKU-0001","quantity":50,{price}}}"#, at(3)),
        format!(r#"{{"event_id":"e5","occurred_at_ms":{},"type":"StockAdjusted","sku":"SKU-0001","location_id":"wh-nj","delta":156,"reason":"receipt"}}"#, at(4)),
        format!(r#"{{"event_id":"e6","channel":"shopify","occurred_at_ms":{},"type":"OrderLineShipped","order_id":"SHO-2","line_id":"1","sku":"SKU-0001","quantity":10,"location_id":"3pl-rotterdam"}}"#, at(5)),
        format!(r#"{{"event_id":"f1","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-0002","location_id":"wh-nj","on_hand":200}}"#, at(0)),
        format!(r#"{{"event_id":"f2","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-0002","location_id":"fba-us","on_hand":60}}"#, at(1)),
        format!(r#"{{"event_id":"f3","channel":"amazon","occurred_at_ms":{},"type":"OrderLinePlaced","order_id":"AMZ-1","line_id":"1","sku":"SKU-0002","quantity":56,"location_id":"fba-us",{price}}}"#, at(2)),
    ]
    .join("\n")
}

fn key(record: &omnifold_testkit::Record) -> String {
    String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_publishes_suggestions_and_routing_once() {
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let report = publish_ndjson(&broker, &lines()).await;
    assert_eq!(report.published, 9, "{report:?}");
    let store = tempfile::tempdir().unwrap();
    run_until_caught_up(&broker, store.path()).await;
    let topics = topics();

    let records = read_to_end(&broker, &topics.replenishment).await;
    let mut got: Vec<(String, String, String, i64, String, String)> = records
        .iter()
        .map(|record| {
            assert!(header(record, OUTBOX_HEADER).is_some(), "published through the outbox");
            let r = Replenishment::decode(record.value.as_deref().unwrap()).unwrap();
            let action = ReplenishmentAction::try_from(r.action).unwrap().as_str_name().to_string();
            (key(record), r.reason_event_id, action, r.units, r.location, r.from_location)
        })
        .collect();
    got.sort();
    let row = |key: &str, reason: &str, action: &str, units: i64, to: &str, from: &str| {
        (
            key.to_string(),
            reason.to_string(),
            format!("REPLENISHMENT_ACTION_{action}"),
            units,
            to.into(),
            from.into(),
        )
    };
    // e4: U = 106 in the shared pool, ATP 14: 14 x 28 < 106 x (14 + 7); needed
    // ceil((106 x 44 - 14 x 28) / 28) = 153, thirteen cases of 12 = 156. e5 lands them: cleared.
    // f3: FBA ATP 4, U 56: needed ceil((56 x 21 - 4 x 28) / 28) = 38; the shared pool (200,
    // no demand) spares it all.
    assert_eq!(
        got,
        vec![
            row("dedicated:amazon/SKU-0002", "f3", "TRANSFER", 38, "fba-us", "wh-nj"),
            row("shared/SKU-0001", "e4", "REORDER", 156, "wh-nj", ""),
            row("shared/SKU-0001", "e5", "NONE", 0, "", ""),
        ]
    );
    let reorder = records
        .iter()
        .map(|r| Replenishment::decode(r.value.as_deref().unwrap()).unwrap())
        .find(|r| r.reason_event_id == "e4")
        .unwrap();
    assert_eq!(
        (
            reorder.atp,
            reorder.units_placed_28d,
            reorder.needed,
            reorder.case_pack,
            reorder.lead_time_days.as_str()
        ),
        (14, 106, 153, 12, "14")
    );

    let records = read_to_end(&broker, &topics.routing).await;
    let mut got: Vec<(String, String, String, String, bool, String)> = records
        .iter()
        .map(|record| {
            let r = RoutingDecision::decode(record.value.as_deref().unwrap()).unwrap();
            let state = RoutingState::try_from(r.state).unwrap().as_str_name().to_string();
            (key(record), r.reason_event_id, state, r.location, r.split, r.shipped_from)
        })
        .collect();
    got.sort();
    let row = |key: &str, reason: &str, state: &str, location: &str, split: bool, from: &str| {
        (
            key.to_string(),
            reason.to_string(),
            format!("ROUTING_STATE_{state}"),
            location.into(),
            split,
            from.into(),
        )
    };
    // e3: wh-nj has 100 free; e4: wh-nj 44 and rotterdam 20 free, neither covers 50: split to
    // wh-nj; e6 ships from rotterdam instead
    assert_eq!(
        got,
        vec![
            row("shopify/SHO-1/1", "e3", "ADVISED", "wh-nj", false, ""),
            row("shopify/SHO-2/1", "e4", "ADVISED", "wh-nj", true, ""),
            row("shopify/SHO-2/1", "e6", "SHIPPED_ELSEWHERE", "wh-nj", true, "3pl-rotterdam"),
        ]
    );
}

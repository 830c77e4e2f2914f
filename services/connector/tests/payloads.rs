//! Every real channel sample in `tests/fixtures/payloads` maps to the events written out
//! below, worked by hand from the payloads (see the README there, which names each sample's
//! public source, and the disagreements noted at each test). The samples are read from
//! `../../tests/fixtures/payloads` relative to this crate.

use std::path::{Path, PathBuf};

use omnifold_connector::amazon::AmazonMapping;
use omnifold_connector::b2b::B2bMapping;
use omnifold_connector::config::ConnectorConfig;
use omnifold_connector::mapping::Mapped;
use omnifold_connector::shopify::ShopifyMapping;
use omnifold_connector::woocommerce::WooMapping;
use omnifold_proto::{
    Body, CompetitorPriceObserved, Event, Money, OrderLineCancelled, OrderLinePlaced, OrderLineReturned,
    OrderLineShipped, PriceSet, StockCounted,
};

/// The mappings the expectations below assume.
const CONFIG: &str = r#"
[shopify]
channel = "shopify"
secret = { env = "UNUSED_IN_MAPPING_TESTS" }
currency = "USD"
[shopify.locations]
"80901996854" = "3pl-rotterdam"
"24826418" = "wh-nj"
"487838322" = "wh-nj"
"655441491" = "wh-nj"
[shopify.variants]
"44872881537334" = "SNOWBOARD-POWDER"
"44872881570102" = "SNOWBOARD-ELECTRIC"
[shopify.inventory_items]
"808950810" = "IPOD2008PINK"

[amazon]
channel = "amazon"
default_marketplace = "ATVPDKIKX0DER"
mfn_location = "wh-nj"
mfn_quantity_location = "wh-nj"
[amazon.fba_locations]
ATVPDKIKX0DER = "fba-us"
[amazon.asins]
"123" = "SKU-0001"
B007IBIWZY = "SKU-0002"

[woocommerce]
channel = "eu-market"
secret = { env = "UNUSED_IN_MAPPING_TESTS" }
[woocommerce.products]
"93" = "WOO-SINGLE-1"
"87" = "WOO-ALBUM-2"
"34" = "WOO-NINJA"

[drop_dir]
channel = "wholesale"
dir = "unused"
currency = "USD"
"#;

fn payloads_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/payloads")
}

fn payload(name: &str) -> Vec<u8> {
    let path = payloads_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the channel sample {}: {e}. The samples live in the repository's \
             tests/fixtures/payloads; without them these tests cannot run.",
            path.display()
        )
    })
}

fn config() -> ConnectorConfig {
    ConnectorConfig::parse(CONFIG).expect("the test config parses")
}

fn shopify() -> ShopifyMapping {
    let config = config();
    ShopifyMapping::from_config(&config, config.shopify.as_ref().unwrap())
}

fn amazon() -> AmazonMapping {
    AmazonMapping::from_options(config().amazon.as_ref().unwrap())
}

fn woo() -> WooMapping {
    WooMapping::from_options(config().woocommerce.as_ref().unwrap())
}

fn b2b() -> B2bMapping {
    B2bMapping::from_options(config().drop_dir.as_ref().unwrap())
}

fn ev(id: &str, channel: &str, at: i64, body: Body) -> Event {
    Event { event_id: id.into(), channel: channel.into(), occurred_at_ms: at, body: Some(body) }
}

fn m(amount: &str, currency: &str) -> Option<Money> {
    Some(Money::new(amount, currency))
}

#[allow(clippy::too_many_arguments)]
fn placed(
    order: &str,
    line: &str,
    sku: &str,
    quantity: i64,
    unit: Option<Money>,
    discount: Option<Money>,
    location: Option<&str>,
) -> Body {
    Body::OrderLinePlaced(OrderLinePlaced {
        order_id: order.into(),
        line_id: line.into(),
        sku: sku.into(),
        quantity,
        unit_price: unit,
        discount,
        channel_fee: None,
        location_id: location.map(String::from),
    })
}

fn shipped(order: &str, line: &str, sku: &str, quantity: i64, location: &str) -> Body {
    Body::OrderLineShipped(OrderLineShipped {
        order_id: order.into(),
        line_id: line.into(),
        sku: sku.into(),
        quantity,
        location_id: location.into(),
        fulfillment_cost: None,
    })
}

fn cancelled(order: &str, line: &str, sku: &str) -> Body {
    Body::OrderLineCancelled(OrderLineCancelled {
        order_id: order.into(),
        line_id: line.into(),
        sku: sku.into(),
    })
}

fn counted(sku: &str, location: &str, on_hand: i64) -> Body {
    Body::StockCounted(StockCounted { sku: sku.into(), location_id: location.into(), on_hand })
}

fn competitor(sku: &str, who: &str, price: Option<Money>) -> Body {
    Body::CompetitorPriceObserved(CompetitorPriceObserved { sku: sku.into(), competitor: who.into(), price })
}

fn price(sku: &str, price: Option<Money>) -> Body {
    Body::PriceSet(PriceSet { sku: sku.into(), price })
}

fn reasons(refusals: &[omnifold_connector::mapping::Refusal]) -> Vec<&'static str> {
    refusals.iter().map(|r| r.reason).collect()
}

fn assert_events(mapped: &Mapped, want: Vec<Event>) {
    assert_eq!(mapped.events, want, "refused: {:?}, ignored: {:?}", mapped.refused, mapped.ignored);
}

/// Every file in tests/fixtures/payloads is covered by a test below (its README.md, which
/// lists the sources, is the one file that is not a sample): a new sample fails here until
/// it is mapped.
#[test]
fn every_sample_is_covered() {
    let covered = [
        "README.md",
        "amazon-any-offer-changed.json",
        "amazon-fba-inventory-availability-changes.json",
        "amazon-fba-myi-unsuppressed-inventory-report.json",
        "amazon-listings-item-mfn-quantity-change.json",
        "amazon-order-change.json",
        "amazon-orders-getOrder-2026-01-01.json",
        "amazon-orders-getOrderItems-sandbox.json",
        "amazon-orders-getOrderItems.json",
        "amazon-pricing-health.json",
        "edi-x12-850.edi",
        "shopify-fulfillments-create-webhook-fixture.json",
        "shopify-fulfillments-create.json",
        "shopify-fulfillments-update-cancelled.json",
        "shopify-inventory-levels-update.json",
        "shopify-orders-cancelled.json",
        "shopify-orders-create-3pl.json",
        "shopify-orders-create.json",
        "shopify-orders-updated.json",
        "shopify-products-update-variants.json",
        "shopify-products-update.json",
        "shopify-refunds-create.json",
        "woocommerce-order-completed-with-refunds.json",
        "woocommerce-order-created.json",
    ];
    let dir = payloads_dir();
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the channel samples are not found at {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, covered, "a sample was added or removed: map it and extend these tests");
}

// ---------------------------------------------------------------------------------------------
// Shopify

/// README: 3x OrderLinePlaced, discount = sum of discount_allocations, no fee, no location;
/// the embedded fulfillments and refunds emit nothing. Agreed.
#[test]
fn shopify_orders_create() {
    let mapped = shopify().map("orders/create", "wh-1", &payload("shopify-orders-create.json")).unwrap();
    let at = 1_199_980_800_000; // processed_at 2008-01-10T11:00:00-05:00
    let o = "450789469";
    assert_events(
        &mapped,
        vec![
            ev(
                "shopify:order:450789469:line:466157049:placed",
                "shopify",
                at,
                placed(o, "466157049", "IPOD2008GREEN", 1, m("199.00", "USD"), m("3.34", "USD"), None),
            ),
            ev(
                "shopify:order:450789469:line:518995019:placed",
                "shopify",
                at,
                placed(o, "518995019", "IPOD2008RED", 1, m("199.00", "USD"), m("3.33", "USD"), None),
            ),
            ev(
                "shopify:order:450789469:line:703073504:placed",
                "shopify",
                at,
                placed(o, "703073504", "IPOD2008BLACK", 1, m("199.00", "USD"), m("3.33", "USD"), None),
            ),
        ],
    );
    assert!(mapped.refused.is_empty() && mapped.ignored.is_empty());
}

/// README: OrderLinePlaced at location 80901996854. Shopify location ids are not contract
/// locations: the id is mapped through [shopify.locations] (here to 3pl-rotterdam).
#[test]
fn shopify_orders_create_3pl() {
    let mapped = shopify().map("orders/create", "wh-2", &payload("shopify-orders-create-3pl.json")).unwrap();
    assert_events(
        &mapped,
        vec![ev(
            "shopify:order:5324830114101:line:13925006311734:placed",
            "shopify",
            1_679_675_846_000,
            placed(
                "5324830114101",
                "13925006311734",
                "sku-hosted-1",
                1,
                m("2629.95", "USD"),
                None,
                Some("3pl-rotterdam"),
            ),
        )],
    );
}

/// README: OrderLineCancelled x2 "(qty 1, 2)". The contract's OrderLineCancelled has no
/// quantity: it releases whatever is open on the line. Empty SKUs fall back to the variant
/// mapping; the no_restock refund of unshipped lines is not a return and emits nothing.
#[test]
fn shopify_orders_cancelled() {
    let body = payload("shopify-orders-cancelled.json");
    let mapped = shopify().map("orders/cancelled", "wh-3", &body).unwrap();
    let at = 1_679_695_698_000; // cancelled_at 2023-03-24T18:08:18-04:00
    assert_events(
        &mapped,
        vec![
            ev(
                "shopify:order:5324790137142:line:13924936679734:cancelled",
                "shopify",
                at,
                cancelled("5324790137142", "13924936679734", "SNOWBOARD-POWDER"),
            ),
            ev(
                "shopify:order:5324790137142:line:13924936712502:cancelled",
                "shopify",
                at,
                cancelled("5324790137142", "13924936712502", "SNOWBOARD-ELECTRIC"),
            ),
        ],
    );

    // without the fallback mapping the lines are refused, each with a clear reason
    let bare = ShopifyMapping { variants: Default::default(), ..shopify() };
    let mapped = bare.map("orders/cancelled", "wh-3", &body).unwrap();
    assert!(mapped.events.is_empty());
    assert_eq!(reasons(&mapped.refused), ["empty_sku", "empty_sku"]);
    assert_eq!(
        mapped.refused[0].message,
        "line 13924936679734 has no SKU and its variant 44872881537334 is not in [shopify.variants]"
    );
}

/// README: OrderLineShipped{1, 24826418, no fulfillment cost}. Agreed, with the location
/// mapped (24826418 -> wh-nj).
#[test]
fn shopify_fulfillments_create() {
    let mapped =
        shopify().map("fulfillments/create", "wh-4", &payload("shopify-fulfillments-create.json")).unwrap();
    assert_events(
        &mapped,
        vec![ev(
            "shopify:fulfillment:1069019875:line:1071823181:shipped",
            "shopify",
            1_712_066_511_000,
            shipped("450789469", "1071823181", "crappy_shoes_red", 1, "wh-nj"),
        )],
    );
}

/// README: OrderLineShipped qty 1, location null. Disagreement: the fulfillment is
/// `pending` (requested from the fulfillment service, not shipped), so no units left;
/// the shipment is its later fulfillments/update with status success. Also a shipment
/// without a location would be dead-lettered (location_id is required): such a fulfillment
/// takes shopify.default_ship_location, or is refused.
#[test]
fn shopify_fulfillment_webhook_fixture_is_pending() {
    let body = payload("shopify-fulfillments-create-webhook-fixture.json");
    let mapped = shopify().map("fulfillments/create", "wh-5", &body).unwrap();
    assert!(mapped.events.is_empty());
    assert_eq!(reasons(&mapped.ignored), ["fulfillment_not_shipped"]);

    // the same fulfillment once successful, without a location
    let text = String::from_utf8(body).unwrap().replace(r#""status": "pending""#, r#""status": "success""#);
    let mapped = shopify().map("fulfillments/update", "wh-6", text.as_bytes()).unwrap();
    assert_eq!(reasons(&mapped.refused), ["missing_location"]);
    let with_default = ShopifyMapping { default_ship_location: Some("wh-nj".into()), ..shopify() };
    let mapped = with_default.map("fulfillments/update", "wh-6", text.as_bytes()).unwrap();
    assert_events(
        &mapped,
        vec![ev(
            "shopify:fulfillment:255858046:line:466157049:shipped",
            "shopify",
            1_398_706_083_000, // updated_at 2014-04-28T13:28:03-04:00
            shipped("450789469", "466157049", "IPOD2008GREEN", 1, "wh-nj"),
        )],
    );
}

/// README: the order after an update (here: a metafield added), as orders/updated delivers
/// it. Its three placements are exactly orders/create's (same ids, times and bodies: a repeat
/// the coordinator ignores, and the placement of a line an edit added); lines 466157049 and
/// 703073504 have current_quantity 0 (their units were refunded) and are cancelled, at
/// updated_at: the cancel releases what they still have open, nothing if they shipped.
#[test]
fn shopify_orders_updated() {
    let mapped = shopify().map("orders/updated", "wh-20", &payload("shopify-orders-updated.json")).unwrap();
    let created = shopify().map("orders/create", "wh-1", &payload("shopify-orders-create.json")).unwrap();
    let at = 1_712_066_620_000; // updated_at 2024-04-02T09:03:40-05:00
    let o = "450789469";
    let mut want = created.events.clone();
    want.push(ev(
        "shopify:order:450789469:line:466157049:cancelled",
        "shopify",
        at,
        cancelled(o, "466157049", "IPOD2008GREEN"),
    ));
    want.push(ev(
        "shopify:order:450789469:line:703073504:cancelled",
        "shopify",
        at,
        cancelled(o, "703073504", "IPOD2008BLACK"),
    ));
    assert_events(&mapped, want);
    assert!(mapped.refused.is_empty() && mapped.ignored.is_empty(), "{mapped:?}");
}

/// Issue 16, item 5: an order edit. orders/edited names line ids and deltas only, so it
/// publishes nothing and lists each change as ignored (what orders/updated does with it);
/// the orders/updated of the edit places the added line, cancels the line removed entirely,
/// and refuses (partial_cancel, quantity_increased) what the contract cannot express. Units
/// refunded as returns are not removals. Hand-written bodies in the shape of Shopify's.
#[test]
fn shopify_order_edit_is_mapped_from_orders_updated() {
    let edited = br#"{"order_edit": {"id": 78912328, "app_id": null, "created_at": "2024-06-03T10:00:00-04:00",
        "committed_at": "2024-06-03T10:00:05-04:00", "notify_customer": false, "order_id": 5001,
        "staff_note": "", "user_id": null,
        "line_items": {"additions": [{"id": 9004, "delta": 2}], "removals": [{"id": 9001, "delta": 2}, {"id": 9002, "delta": 1}]},
        "discounts": {"line_item": {"additions": [], "removals": []}},
        "shipping_lines": {"additions": [], "removals": []}}}"#;
    let mapped = shopify().map("orders/edited", "wh-21", edited).unwrap();
    assert!(mapped.events.is_empty() && mapped.refused.is_empty());
    assert_eq!(reasons(&mapped.ignored), ["edit_in_orders_updated"; 3]);
    assert_eq!(mapped.ignored[1].item, "line 9001");
    assert!(mapped.ignored[1].message.contains("removed 2 unit(s) of line 9001"), "{:?}", mapped.ignored);

    let line = |id: u64, sku: &str, quantity: i64, current: i64| {
        serde_json::json!({"id": id, "sku": sku, "quantity": quantity, "current_quantity": current,
            "price": "10.00", "discount_allocations": []})
    };
    let updated = serde_json::json!({
        "id": 5001, "currency": "USD",
        "created_at": "2024-06-01T09:00:00-04:00", "processed_at": "2024-06-01T09:00:00-04:00",
        "updated_at": "2024-06-03T10:00:06-04:00",
        "line_items": [
            line(9001, "SKU-A", 3, 1), // 2 of 3 removed by the edit
            line(9002, "SKU-B", 1, 0), // removed entirely
            line(9003, "SKU-C", 2, 1), // 1 refunded as a return: not a removal
            line(9004, "SKU-D", 2, 2), // added by the edit
            line(9005, "SKU-E", 1, 3), // raised
        ],
        "refunds": [{"id": 77, "order_id": 5001, "refund_line_items": [
            {"id": 1, "line_item_id": 9003, "quantity": 1, "restock_type": "return"}]}],
    });
    let mapped = shopify().map("orders/updated", "wh-22", &serde_json::to_vec(&updated).unwrap()).unwrap();
    let (placed_at, updated_at) = (1_717_246_800_000, 1_717_423_206_000);
    let unit = m("10.00", "USD");
    let mut want: Vec<Event> = [
        ("9001", "SKU-A", 3),
        ("9002", "SKU-B", 1),
        ("9003", "SKU-C", 2),
        ("9004", "SKU-D", 2),
        ("9005", "SKU-E", 1),
    ]
    .into_iter()
    .map(|(id, sku, quantity)| {
        ev(
            &format!("shopify:order:5001:line:{id}:placed"),
            "shopify",
            placed_at,
            placed("5001", id, sku, quantity, unit.clone(), None, None),
        )
    })
    .collect();
    want.push(ev(
        "shopify:order:5001:line:9002:cancelled",
        "shopify",
        updated_at,
        cancelled("5001", "9002", "SKU-B"),
    ));
    assert_events(&mapped, want);
    assert_eq!(reasons(&mapped.refused), ["partial_cancel", "quantity_increased"]);
    assert_eq!(mapped.refused[0].item, "line 9001");
    assert!(
        mapped.refused[0].message.starts_with("2 of the line's 3 units were removed"),
        "{:?}",
        mapped.refused
    );
    assert_eq!(mapped.refused[1].item, "line 9005");
}

/// README: a fulfillment cancelled after it shipped. The contract has no event that un-ships
/// units, so it is refused (fulfillment_cancelled), with the reason, rather than dropped.
#[test]
fn shopify_fulfillment_cancelled_is_refused() {
    let body = payload("shopify-fulfillments-update-cancelled.json");
    let mapped = shopify().map("fulfillments/update", "wh-23", &body).unwrap();
    assert!(mapped.events.is_empty());
    assert_eq!(reasons(&mapped.refused), ["fulfillment_cancelled"]);
    assert_eq!(mapped.refused[0].item, "fulfillment 1069019871");
}

/// README: 2x OrderLineReturned{1, refund = subtotal (+tax?), restock, 487838322}. The
/// refund is the subtotal without tax (unit prices and revenue are before tax);
/// legacy_restock restocks, at the mapped location (487838322 -> wh-nj). Note: the fixture's
/// subtotals (195.66 for the line discounted 3.33, 195.67 for the one discounted 3.34) and
/// its 209.00 transaction do not add up; they are taken as written.
#[test]
fn shopify_refunds_create() {
    let mapped = shopify().map("refunds/create", "wh-7", &payload("shopify-refunds-create.json")).unwrap();
    let at = 1_712_066_351_000; // processed_at 2024-04-02T08:59:11-05:00
    let returned = |line: &str, sku: &str, refund: &str| {
        Body::OrderLineReturned(OrderLineReturned {
            order_id: "450789469".into(),
            line_id: line.into(),
            sku: sku.into(),
            quantity: 1,
            refund: m(refund, "USD"),
            restock: true,
            location_id: Some("wh-nj".into()),
        })
    };
    assert_events(
        &mapped,
        vec![
            ev(
                "shopify:refund:509562969:line:104689539:returned",
                "shopify",
                at,
                returned("703073504", "IPOD2008BLACK", "195.66"),
            ),
            ev(
                "shopify:refund:509562969:line:709875399:returned",
                "shopify",
                at,
                returned("466157049", "IPOD2008GREEN", "195.67"),
            ),
        ],
    );
}

/// README: StockCounted{sku looked up from the item, 655441491, 42}. Agreed (item 808950810
/// -> IPOD2008PINK, location -> wh-nj); note "available" is Shopify's sellable count, not
/// physical on-hand: units Shopify already committed to open orders are not in it. At the
/// location push-back writes to, the update is our own echo and is ignored. The id is the
/// fact's (item, location, updated_at, count), whatever the webhook id.
#[test]
fn shopify_inventory_levels_update() {
    let body = payload("shopify-inventory-levels-update.json");
    let mapped = shopify().map("inventory_levels/update", "wh-8", &body).unwrap();
    assert_events(
        &mapped,
        vec![ev(
            "shopify:inventory:808950810:655441491:1712066244000:42",
            "",
            1_712_066_244_000, // updated_at 2024-04-02T08:57:24-05:00
            counted("IPOD2008PINK", "wh-nj", 42),
        )],
    );
    let replayed = shopify().map("inventory_levels/update", "wh-other", &body).unwrap();
    assert_eq!(replayed.events, mapped.events, "a replay under a new webhook id is the same fact");

    let echo = ShopifyMapping { echo_location: Some("655441491".into()), ..shopify() };
    let mapped = echo.map("inventory_levels/update", "wh-8", &body).unwrap();
    assert!(mapped.events.is_empty());
    assert_eq!(reasons(&mapped.ignored), ["pushback_echo"]);

    let unmapped = ShopifyMapping { inventory_items: Default::default(), ..shopify() };
    let mapped = unmapped.map("inventory_levels/update", "wh-8", &body).unwrap();
    assert_eq!(reasons(&mapped.refused), ["unmapped_inventory_item"]);
}

/// README: PriceSet{TSHIRT-001, 29.99}. Agreed; the currency is the shop's (configured).
#[test]
fn shopify_products_update() {
    let mapped = shopify().map("products/update", "wh-9", &payload("shopify-products-update.json")).unwrap();
    assert_events(
        &mapped,
        vec![ev(
            "shopify:webhook:wh-9:variant:123456789:price",
            "shopify",
            1_745_350_200_000,
            price("TSHIRT-001", m("29.99", "USD")),
        )],
    );
}

/// README: PriceSet per variant, no stock events. Agreed. The first variant's SKU is the
/// literal text "Updating the Product SKU" (the fixture renamed it); it is a non-empty SKU and
/// is taken as written. The time is the product's updated_at (the time of the webhook).
#[test]
fn shopify_products_update_variants() {
    let mapped =
        shopify().map("products/update", "wh-10", &payload("shopify-products-update-variants.json")).unwrap();
    let at = 1_712_066_415_000; // 2024-04-02T09:00:15-05:00
    assert_events(
        &mapped,
        vec![
            ev(
                "shopify:webhook:wh-10:variant:808950810:price",
                "shopify",
                at,
                price("Updating the Product SKU", m("2000.00", "USD")),
            ),
            ev(
                "shopify:webhook:wh-10:variant:49148385:price",
                "shopify",
                at,
                price("IPOD2008RED", m("199.00", "USD")),
            ),
            ev(
                "shopify:webhook:wh-10:variant:39072856:price",
                "shopify",
                at,
                price("IPOD2008GREEN", m("199.00", "USD")),
            ),
            ev(
                "shopify:webhook:wh-10:variant:457924702:price",
                "shopify",
                at,
                price("IPOD2008BLACK", m("199.00", "USD")),
            ),
        ],
    );
}

#[test]
fn shopify_unknown_topic_and_malformed_bodies() {
    let mapped = shopify().map("carts/update", "wh-11", b"{}").unwrap();
    assert_eq!(reasons(&mapped.refused), ["unsupported_topic"]);
    let error = shopify().map("orders/create", "wh-12", b"{\"id\": 1").unwrap_err();
    assert!(error.0.starts_with("malformed Shopify orders/create body:"), "{error}");
    let error = shopify().map("orders/create", "wh-12", br#"{"id": 1, "currency": "USD"}"#).unwrap_err();
    assert!(error.0.contains("missing field `line_items`"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Amazon

/// README: OrderLineCancelled{qty 10} "once the Orders API confirms the cancel". This
/// notification is a buyer's *request* on an Unshipped order: nothing is cancelled yet, so
/// nothing is emitted (counted as ignored, cancel_not_confirmed). The cancel is emitted when
/// an ORDER_CHANGE reports OrderStatus Canceled, shown here on the same payload. (And, as
/// for Shopify, a cancel has no quantity.)
#[test]
fn amazon_order_change() {
    let body = payload("amazon-order-change.json");
    let mapped = amazon().map_notification(&body).unwrap();
    assert!(mapped.events.is_empty());
    assert_eq!(reasons(&mapped.ignored), ["cancel_not_confirmed"]);

    let text = String::from_utf8(body)
        .unwrap()
        .replace(r#""OrderStatus": "Unshipped""#, r#""OrderStatus": "Canceled""#);
    let mapped = amazon().map_notification(text.as_bytes()).unwrap();
    assert_events(
        &mapped,
        vec![ev(
            "amazon:order:903-8868176-2219830:item:OIID34853450:cancelled",
            "amazon",
            1_669_750_924_284, // TimeOfOrderChange 2022-11-29T19:42:04.284Z
            cancelled("903-8868176-2219830", "OIID34853450", "SellerSKUID1"),
        )],
    );
}

/// README: StockCounted per marketplace (FBA-US / FBA-CA). The sample is the payload only;
/// here it is wrapped in a notification envelope. The count is Fulfillable (50): reserved
/// units (e.g. PendingCustomerOrder) are not sellable, and inbound ones not yet there. The
/// contract has no Canadian FBA location, so the CA marketplace is refused
/// (unmapped_marketplace) rather than guessed.
#[test]
fn amazon_fba_inventory_availability_changes() {
    let inner = String::from_utf8(payload("amazon-fba-inventory-availability-changes.json")).unwrap();
    let body = format!(
        r#"{{"NotificationVersion":"1.0","NotificationType":"FBA_INVENTORY_AVAILABILITY_CHANGES",
            "PayloadVersion":"1.0","EventTime":"2024-05-01T12:00:00Z",
            "NotificationMetadata":{{"NotificationId":"fba-test-1"}},"Payload":{inner}}}"#
    );
    let mapped = amazon().map_notification(body.as_bytes()).unwrap();
    assert_events(
        &mapped,
        vec![ev(
            "amazon:fba:SELLERSKU-1:ATVPDKIKX0DER:1714564800000:50",
            "",
            1_714_564_800_000,
            counted("SELLERSKU-1", "fba-us", 50),
        )],
    );
    assert_eq!(reasons(&mapped.refused), ["unmapped_marketplace"]);

    // the same level notified again under another NotificationId is the same fact
    let again = body.replace("fba-test-1", "fba-test-2");
    assert_eq!(amazon().map_notification(again.as_bytes()).unwrap().events, mapped.events);
}

/// Absolute levels: a level older than the last one applied for its seller SKU and
/// marketplace is ignored (`stale_level`) instead of setting on-hand back; one as old passes
/// (the same fact, which the coordinator deduplicates by id). Receiver and directory share
/// the marks (clones of one mapping).
#[test]
fn amazon_older_fba_and_mfn_levels_are_ignored() {
    let inner = String::from_utf8(payload("amazon-fba-inventory-availability-changes.json")).unwrap();
    let fba = |id: &str, time: &str, fulfillable: i64| {
        let inner = inner.replacen(r#""Fulfillable": 50"#, &format!(r#""Fulfillable": {fulfillable}"#), 1);
        format!(
            r#"{{"NotificationType":"FBA_INVENTORY_AVAILABILITY_CHANGES","EventTime":"{time}",
                "NotificationMetadata":{{"NotificationId":"{id}"}},"Payload":{inner}}}"#
        )
    };
    let receiver = amazon();
    let directory = receiver.clone();
    let map = |mapping: &AmazonMapping, body: &str| {
        mapping.marked(mapping.map_notification(body.as_bytes()).unwrap())
    };

    let newer = map(&receiver, &fba("n-2", "2024-05-01T12:05:00Z", 47));
    assert_eq!(newer.events.len(), 1);
    let late = map(&directory, &fba("n-1", "2024-05-01T12:00:00Z", 50));
    assert!(late.events.is_empty(), "{:?}", late.events);
    assert_eq!(reasons(&late.ignored), ["stale_level"]);
    assert_eq!(late.ignored[0].item, "level fba:SELLERSKU-1:ATVPDKIKX0DER");
    let replay = map(&receiver, &fba("n-3", "2024-05-01T12:05:00Z", 47));
    assert_eq!(replay.events, newer.events, "the same fact again passes, under the same id");

    let mfn = String::from_utf8(payload("amazon-listings-item-mfn-quantity-change.json")).unwrap();
    let first = map(&receiver, &mfn);
    assert_eq!(first.events[0].event_id, "amazon:mfn:NLS-SHOES-03:1612378770194:99");
    let older = mfn
        .replace("2021-02-03T18:59:30.194Z", "2021-02-03T18:00:00Z")
        .replace(r#""Quantity": 99"#, r#""Quantity": 120"#);
    let older = map(&directory, &older);
    assert!(older.events.is_empty());
    assert_eq!(reasons(&older.ignored), ["stale_level"]);
}

/// README: CompetitorPriceObserved, ASIN mapped to a SKU, one per offer plus the buy box.
/// Agreed: seller 111's offer and the New buy box (the trigger's condition; the Used one
/// does not compete with a New listing). Prices are listing prices (shipping apart), to
/// compare like with like against our own listed price.
#[test]
fn amazon_any_offer_changed() {
    let mapped = amazon().map_notification(&payload("amazon-any-offer-changed.json")).unwrap();
    let at = 1_594_669_324_284;
    let id = "amazon:notification:d0e9e693-c3ad-4373-979f-ed4ec98dd746";
    assert_events(
        &mapped,
        vec![
            ev(
                &format!("{id}:offer:111"),
                "amazon",
                at,
                competitor("SKU-0001", "seller:111", m("23.0", "USD")),
            ),
            ev(&format!("{id}:buybox:new"), "amazon", at, competitor("SKU-0001", "buybox", m("10.0", "USD"))),
        ],
    );

    let unmapped = AmazonMapping { asins: Default::default(), ..amazon() };
    let mapped = unmapped.map_notification(&payload("amazon-any-offer-changed.json")).unwrap();
    assert_eq!(reasons(&mapped.refused), ["unmapped_asin"]);
}

/// README: CompetitorPriceObserved{buybox, 8184.23}, no PriceSet. Agreed.
#[test]
fn amazon_pricing_health() {
    let mapped = amazon().map_notification(&payload("amazon-pricing-health.json")).unwrap();
    assert_events(
        &mapped,
        vec![ev(
            "amazon:notification:23ae41cd-3537-4676-af46-6ee9abf8802e:buybox:new",
            "amazon",
            1_600_896_613_409,
            competitor("SKU-0002", "buybox", m("8184.23", "USD")),
        )],
    );
}

/// README: StockCounted{NLS-SHOES-03, MFN, 99}. Agreed when amazon.mfn_quantity_location is
/// set. By default it is not: the MFN quantity is the number push-back writes to Amazon, so
/// counting it as stock would feed our own output back in.
#[test]
fn amazon_listings_item_mfn_quantity_change() {
    let body = payload("amazon-listings-item-mfn-quantity-change.json");
    let mapped = amazon().map_notification(&body).unwrap();
    assert_events(
        &mapped,
        vec![ev(
            "amazon:mfn:NLS-SHOES-03:1612378770194:99",
            "",
            1_612_378_770_194,
            counted("NLS-SHOES-03", "wh-nj", 99),
        )],
    );
    let default = AmazonMapping { mfn_quantity_location: None, ..amazon() };
    let mapped = default.map_notification(&body).unwrap();
    assert!(mapped.events.is_empty());
    assert_eq!(reasons(&mapped.ignored), ["mfn_quantity_not_counted"]);
}

/// README: 2x OrderLinePlaced (unit = ItemPrice / qty) and OrderLineShipped qty 1 for the
/// first item. Agreed: 17.95 / 2 = 8.975 exactly. The response has no date: the time is
/// when it was received (or our optional top-level PurchaseDate). Without a FulfillmentChannel
/// the order is taken as FBA (amazon.default_fulfillment_channel), so it reserves and ships
/// at the marketplace's FBA location. JPY has no rate in the example contract: the publisher
/// (with the contract) refuses these events, as the coordinator would.
#[test]
fn amazon_get_order_items() {
    let received = 1_700_000_000_000;
    let mapped = amazon().map_order_items(&payload("amazon-orders-getOrderItems.json"), received).unwrap();
    let o = "903-1671087-0812628";
    assert_events(
        &mapped,
        vec![
            ev(
                "amazon:order:903-1671087-0812628:item:68828574383266:placed",
                "amazon",
                received,
                placed(o, "68828574383266", "CBA_OTF_1", 1, m("25.99", "JPY"), None, Some("fba-us")),
            ),
            ev(
                "amazon:order:903-1671087-0812628:item:68828574383266:shipped:1",
                "amazon",
                received,
                shipped(o, "68828574383266", "CBA_OTF_1", 1, "fba-us"),
            ),
            ev(
                "amazon:order:903-1671087-0812628:item:79039765272157:placed",
                "amazon",
                received,
                placed(o, "79039765272157", "CBA_OTF_5", 2, m("8.975", "JPY"), None, Some("fba-us")),
            ),
        ],
    );
}

/// README: OrderLinePlaced. Agreed; the 0.00 promotion is no discount.
#[test]
fn amazon_get_order_items_sandbox() {
    let received = 1_700_000_000_000;
    let mapped =
        amazon().map_order_items(&payload("amazon-orders-getOrderItems-sandbox.json"), received).unwrap();
    assert_events(
        &mapped,
        vec![ev(
            "amazon:order:902-1845936-5435065:item:05015851154158:placed",
            "amazon",
            received,
            placed(
                "902-1845936-5435065",
                "05015851154158",
                "NABetaASINB00551Q3CS",
                1,
                m("10.00", "USD"),
                None,
                Some("fba-us"),
            ),
        )],
    );

    // with the order's own date and channel, as getOrder gives them
    let text = String::from_utf8(payload("amazon-orders-getOrderItems-sandbox.json")).unwrap();
    let text =
        text.replacen('{', r#"{"PurchaseDate": "2024-05-01T12:00:00Z", "FulfillmentChannel": "MFN","#, 1);
    let mapped = amazon().map_order_items(text.as_bytes(), received).unwrap();
    assert_eq!(mapped.events[0].occurred_at_ms, 1_714_564_800_000);
    let Some(Body::OrderLinePlaced(line)) = &mapped.events[0].body else { panic!() };
    assert_eq!(line.location_id.as_deref(), Some("wh-nj"));
}

/// README: OrderLinePlaced{3 @ 29.99 GBP} and 3 shipped units. Agreed: the v2026-01-01
/// getOrder response (Amazon retires v0) is accepted beside v0's getOrderItems, on the same
/// endpoint and with the same ids. The unit price is `unitPrice` (no division, unlike v0's
/// ItemPrice), the placement is dated `createdTime`, the shipments `lastUpdatedTime`;
/// `fulfilledBy` MERCHANT ships from amazon.mfn_location. The promotion names no amount, so
/// there is no discount. GBP has no rate in the example contract, as JPY.
#[test]
fn amazon_get_order_2026_01_01() {
    let body = payload("amazon-orders-getOrder-2026-01-01.json");
    let mapped = amazon().map_order_items(&body, 1).unwrap();
    let (o, item, sku) = ("202-1234567-8901234", "20212345678901", "ECHO-DOT-4-UK-CHARCOAL-3PACK");
    let (placed_at, shipped_at) = (1_735_118_100_000, 1_735_144_200_000); // 2024-12-25 09:15, 16:30 Z
    let prefix = format!("amazon:order:{o}:item:{item}");
    let mut want = vec![ev(
        &format!("{prefix}:placed"),
        "amazon",
        placed_at,
        placed(o, item, sku, 3, m("29.99", "GBP"), None, Some("wh-nj")),
    )];
    for unit in 1..=3 {
        want.push(ev(
            &format!("{prefix}:shipped:{unit}"),
            "amazon",
            shipped_at,
            shipped(o, item, sku, 1, "wh-nj"),
        ));
    }
    assert_events(&mapped, want);
    assert!(mapped.refused.is_empty() && mapped.ignored.is_empty(), "{mapped:?}");

    let text = String::from_utf8(body).unwrap();
    // FBA in a marketplace with an FBA location; an item discount in the proceeds
    let fba = text
        .replace(r#""fulfilledBy": "MERCHANT""#, r#""fulfilledBy": "AMAZON""#)
        .replace(r#""marketplaceId": "A1F83G8C2ARO7P""#, r#""marketplaceId": "ATVPDKIKX0DER""#)
        .replacen(
            r#""breakdowns": [
            {
              "type": "ITEM","#,
            r#""breakdowns": [
            {"type": "DISCOUNT", "subtotal": {"amount": "-6.00", "currencyCode": "GBP"},
             "detailedBreakdowns": [
               {"subtype": "ITEM", "value": {"amount": "-5.00", "currencyCode": "GBP"}},
               {"subtype": "SHIPPING", "value": {"amount": "-1.00", "currencyCode": "GBP"}}]},
            {
              "type": "ITEM","#,
            1,
        );
    let mapped = amazon().map_order_items(fba.as_bytes(), 1).unwrap();
    assert_eq!(
        mapped.events[0].body,
        Some(placed(o, item, sku, 3, m("29.99", "GBP"), m("5.00", "GBP"), Some("fba-us")))
    );
    assert_eq!(mapped.events.len(), 4);

    // a cancelled order: placed (if it never was) and cancelled, nothing shipped
    let cancelled_order = text
        .replace(r#""fulfillmentStatus": "SHIPPED""#, r#""fulfillmentStatus": "CANCELLED""#)
        .replace(r#""quantityFulfilled": 3"#, r#""quantityFulfilled": 0"#);
    let mapped = amazon().map_order_items(cancelled_order.as_bytes(), 1).unwrap();
    let ids: Vec<&str> = mapped.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, [format!("{prefix}:placed"), format!("{prefix}:cancelled")]);
    assert_eq!(mapped.events[1].body, Some(cancelled(o, item, sku)));
    assert_eq!(mapped.events[1].occurred_at_ms, shipped_at);

    let error = amazon().map_order_items(br#"{"order": {"orderId": "1"}}"#, 1).unwrap_err();
    assert!(error.0.starts_with("malformed Amazon getOrder 2026-01-01 body: missing field"), "{error}");
    let error = amazon().map_order_items(br#"{"orders": []}"#, 1).unwrap_err();
    assert!(error.0.contains("missing field `payload`"), "{error}");
}

/// README: StockCounted{AB-8675309, FBA, 20 (fulfillable) or 35 (warehouse)}. The file has
/// no real rows; a report is built from its header and documented example values. 20:
/// afn-warehouse-quantity includes unsellable and reserved units.
#[test]
fn amazon_myi_report() {
    #[derive(serde::Deserialize)]
    struct Doc {
        header: Vec<String>,
        #[serde(rename = "documentedExampleValues")]
        values: std::collections::BTreeMap<String, String>,
    }
    let doc: Doc =
        serde_json::from_slice(&payload("amazon-fba-myi-unsuppressed-inventory-report.json")).unwrap();
    let row: Vec<String> =
        doc.header.iter().map(|h| doc.values.get(h).cloned().unwrap_or_default()).collect();
    let report = format!("{}\n{}\n", doc.header.join("\t"), row.join("\t"));
    let mapped = amazon().map_myi_report(&report, "r1", 1_714_564_800_000, None);
    assert_events(
        &mapped,
        vec![ev("amazon:myi:r1:line:2", "", 1_714_564_800_000, counted("AB-8675309", "fba-us", 20))],
    );

    // the report has no time: a report file older (by its time) than the last one applied
    // is ignored, per seller SKU and marketplace
    let mapping = amazon();
    assert_eq!(mapping.marked(mapping.map_myi_report(&report, "r2", 2_000, None)).events.len(), 1);
    let older = mapping.marked(mapping.map_myi_report(&report, "r1", 1_000, None));
    assert!(older.events.is_empty());
    assert_eq!(older.ignored[0].item, "level myi:AB-8675309:ATVPDKIKX0DER");
}

// ---------------------------------------------------------------------------------------------
// WooCommerce and wholesale

/// README: 2x OrderLinePlaced, discount = subtotal - total = 0. Agreed: line 315 has no SKU
/// and falls back to [woocommerce.products] (product 93); the unit price is subtotal /
/// quantity (6.00 / 2), tax and shipping apart.
#[test]
fn woocommerce_order_created() {
    let mapped = woo().map("order.created", &payload("woocommerce-order-created.json")).unwrap();
    let at = 1_490_210_882_000; // date_created_gmt 2017-03-22T19:28:02
    assert_events(
        &mapped,
        vec![
            ev(
                "woocommerce:order:727:line:315:placed",
                "eu-market",
                at,
                placed("727", "315", "WOO-SINGLE-1", 2, m("3.00", "USD"), None, None),
            ),
            ev(
                "woocommerce:order:727:line:316:placed",
                "eu-market",
                at,
                placed("727", "316", "Bar3", 1, m("12.00", "USD"), None, None),
            ),
        ],
    );
    let bare = WooMapping { products: Default::default(), ..woo() };
    let mapped = bare.map("order.created", &payload("woocommerce-order-created.json")).unwrap();
    assert_eq!(mapped.events.len(), 1);
    assert_eq!(reasons(&mapped.refused), ["empty_sku"]);
}

/// README: a completed order with two partial refunds (726: -10.00, 724: -9.00), listed by
/// total only. The lines are placed (not shipped: no woocommerce.ship_location here, ignored
/// as no_ship_location); each refund is refused (refund_without_lines): without its lines and
/// quantities no return can be expressed. Refunded in full, the order's lines are returned
/// when it shipped and cancelled when it did not.
#[test]
fn woocommerce_refunds_and_the_refunded_status() {
    let body = payload("woocommerce-order-completed-with-refunds.json");
    let mapped = woo().map("order.updated", &body).unwrap();
    let placed_at = 1_490_123_760_000; // date_created_gmt 2017-03-21T19:16:00
    let line = |id: &str, sku: &str, unit: &str| {
        ev(
            &format!("woocommerce:order:723:line:{id}:placed"),
            "eu-market",
            placed_at,
            placed("723", id, sku, 1, m(unit, "USD"), None, None),
        )
    };
    let placements = vec![line("311", "WOO-ALBUM-2", "9.00"), line("313", "WOO-NINJA", "20.00")];
    assert_events(&mapped, placements.clone());
    assert_eq!(reasons(&mapped.refused), ["refund_without_lines", "refund_without_lines"]);
    assert_eq!(mapped.refused[0].item, "refund 726");
    assert!(mapped.refused[0].message.contains("(-10.00, no reason given)"), "{:?}", mapped.refused);
    assert_eq!(reasons(&mapped.ignored), ["no_ship_location"]);

    let refunded =
        String::from_utf8(body).unwrap().replace(r#""status": "completed""#, r#""status": "refunded""#);
    let refunded_at = 1_490_126_091_000; // date_modified_gmt 2017-03-21T19:54:51
    let shipping = WooMapping { ship_location: Some("wh-nj".into()), ..woo() };
    let mapped = shipping.map("order.updated", refunded.as_bytes()).unwrap();
    let returned = |id: &str, sku: &str, refund: &str| {
        ev(
            &format!("woocommerce:order:723:line:{id}:returned"),
            "eu-market",
            refunded_at,
            Body::OrderLineReturned(OrderLineReturned {
                order_id: "723".into(),
                line_id: id.into(),
                sku: sku.into(),
                quantity: 1,
                refund: m(refund, "USD"),
                restock: false,
                location_id: None,
            }),
        )
    };
    let shipped_line = |id: &str, sku: &str| {
        ev(
            &format!("woocommerce:order:723:line:{id}:shipped"),
            "eu-market",
            refunded_at,
            shipped("723", id, sku, 1, "wh-nj"),
        )
    };
    assert_events(
        &mapped,
        vec![
            placements[0].clone(),
            shipped_line("311", "WOO-ALBUM-2"),
            returned("311", "WOO-ALBUM-2", "9.00"),
            placements[1].clone(),
            shipped_line("313", "WOO-NINJA"),
            returned("313", "WOO-NINJA", "20.00"),
        ],
    );
    assert!(mapped.refused.is_empty() && mapped.ignored.is_empty(), "{mapped:?}");

    // refunded without having shipped: the lines are cancelled
    let mapped = woo().map("order.updated", refunded.as_bytes()).unwrap();
    let ids: Vec<&str> = mapped.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["woocommerce:order:723:line:311:cancelled", "woocommerce:order:723:line:313:cancelled"]);
    assert!(mapped.refused.is_empty(), "{mapped:?}");
}

/// README: 3x OrderLinePlaced (B2B). Agreed: the SKU is the buyer's part number (BP; the VN
/// element holds a description), quantities in the PO's unit (YD) as written, the PO date
/// (BEG05) as the time, the PO number as the order, PO101 as the line.
#[test]
fn edi_x12_850() {
    let text = String::from_utf8(payload("edi-x12-850.edi")).unwrap();
    let mapped = b2b().map_x12(&text);
    let at = 1_406_160_000_000; // 2014-07-24
    let po = "4600000406";
    assert_events(
        &mapped,
        vec![
            ev(
                "x12:000123456:4600000406:line:000100001:placed",
                "wholesale",
                at,
                placed(po, "000100001", "A_QU001-BLK", 2500, m("2.53", "USD"), None, None),
            ),
            ev(
                "x12:000123456:4600000406:line:000200001:placed",
                "wholesale",
                at,
                placed(po, "000200001", "A_QF001-BLK", 2000, m("3.41", "USD"), None, None),
            ),
            ev(
                "x12:000123456:4600000406:line:000200002:placed",
                "wholesale",
                at,
                placed(po, "000200002", "A_QF001-RED", 1000, m("3.41", "USD"), None, None),
            ),
        ],
    );
    assert!(mapped.refused.is_empty(), "{:?}", mapped.refused);
}

// ---------------------------------------------------------------------------------------------
// Against the example contract

/// The deploy config fits the example contract, and every event mapped from the samples with
/// it passes the contract's checks, except the JPY order (no fx rate for JPY).
#[test]
fn deploy_config_and_sample_events_fit_the_contract() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let rules = omnifold_runtime::load_contract(&root.join("deploy/local/contract.toml")).unwrap();
    let deploy = ConnectorConfig::load(&root.join("deploy/local/connectors.toml")).unwrap();
    assert_eq!(deploy.problems(&rules), Vec::<String>::new());
    assert_eq!(config().problems(&rules), Vec::<String>::new());

    let mut events = Vec::new();
    for (topic, file) in [
        ("orders/create", "shopify-orders-create.json"),
        ("orders/create", "shopify-orders-create-3pl.json"),
        ("orders/cancelled", "shopify-orders-cancelled.json"),
        ("fulfillments/create", "shopify-fulfillments-create.json"),
        ("refunds/create", "shopify-refunds-create.json"),
        ("inventory_levels/update", "shopify-inventory-levels-update.json"),
        ("products/update", "shopify-products-update.json"),
        ("products/update", "shopify-products-update-variants.json"),
    ] {
        events.extend(shopify().map(topic, "w", &payload(file)).unwrap().events);
    }
    for file in [
        "amazon-any-offer-changed.json",
        "amazon-pricing-health.json",
        "amazon-listings-item-mfn-quantity-change.json",
    ] {
        events.extend(amazon().map_notification(&payload(file)).unwrap().events);
    }
    events.extend(
        amazon().map_order_items(&payload("amazon-orders-getOrderItems-sandbox.json"), 1).unwrap().events,
    );
    events.extend(woo().map("order.created", &payload("woocommerce-order-created.json")).unwrap().events);
    events.extend(
        shopify().map("orders/updated", "w", &payload("shopify-orders-updated.json")).unwrap().events,
    );
    events.extend(
        woo().map("order.updated", &payload("woocommerce-order-completed-with-refunds.json")).unwrap().events,
    );
    events.extend(b2b().map_x12(&String::from_utf8(payload("edi-x12-850.edi")).unwrap()).events);
    assert_eq!(events.len(), 3 + 1 + 2 + 1 + 2 + 1 + 1 + 4 + 2 + 1 + 1 + 1 + 2 + 3 + 5 + 2);
    for event in &events {
        omnifold_domain::fact::check(&rules, event).unwrap_or_else(|e| panic!("{}: {e}", event.event_id));
    }

    let jpy = amazon().map_order_items(&payload("amazon-orders-getOrderItems.json"), 1).unwrap();
    let gbp = amazon().map_order_items(&payload("amazon-orders-getOrder-2026-01-01.json"), 1).unwrap();
    for event in jpy.events.iter().chain(&gbp.events) {
        if let Some(Body::OrderLinePlaced(_)) = event.body {
            let error = omnifold_domain::fact::check(&rules, event).unwrap_err();
            assert!(error.to_string().contains("JPY") || error.to_string().contains("GBP"), "{error}");
        }
    }
}

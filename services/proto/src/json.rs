//! The JSON form of inbound events (CONTRACT.md section 2): one object per line, envelope
//! and body fields side by side, `type` naming the body, money as `{amount, currency}`.
//!
//! Parsing only checks the shape (fields present and of the right JSON type). The rules
//! (positive quantities, known channels, rates...) are the fold's to enforce, so that an
//! event breaks them in the same way whether it arrived as JSON or protobuf.

use serde::{Deserialize, Serialize};

use crate::v1::{self, StockAdjustmentReason};
use crate::{Body, Event, Money};

/// A JSON line that does not have the shape of an event.
#[derive(Debug, thiserror::Error)]
#[error("invalid event json: {0}")]
pub struct JsonError(#[from] serde_json::Error);

/// Parses one NDJSON line into an event.
pub fn event_from_json(line: &str) -> Result<Event, JsonError> {
    let json: JsonEvent = serde_json::from_str(line)?;
    Ok(json.into())
}

/// Writes an event as one JSON line (without the newline).
pub fn event_to_json(event: &Event) -> String {
    let json = JsonEvent::from(event.clone());
    serde_json::to_string(&json).expect("event json serialization cannot fail")
}

#[derive(Serialize, Deserialize)]
struct JsonEvent {
    event_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    channel: String,
    occurred_at_ms: i64,
    #[serde(flatten)]
    body: JsonBody,
}

#[derive(Serialize, Deserialize)]
struct JsonMoney {
    amount: String,
    currency: String,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum JsonReason {
    Receipt,
    Damage,
    TransferIn,
    TransferOut,
    Correction,
    Other,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type")]
enum JsonBody {
    OrderLinePlaced {
        order_id: String,
        line_id: String,
        sku: String,
        quantity: i64,
        unit_price: JsonMoney,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        discount: Option<JsonMoney>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_fee: Option<JsonMoney>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location_id: Option<String>,
    },
    OrderLineCancelled {
        order_id: String,
        line_id: String,
        sku: String,
    },
    OrderLineShipped {
        order_id: String,
        line_id: String,
        sku: String,
        quantity: i64,
        location_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fulfillment_cost: Option<JsonMoney>,
    },
    OrderLineReturned {
        order_id: String,
        line_id: String,
        sku: String,
        quantity: i64,
        refund: JsonMoney,
        restock: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location_id: Option<String>,
    },
    StockAdjusted {
        sku: String,
        location_id: String,
        delta: i64,
        reason: JsonReason,
    },
    StockCounted {
        sku: String,
        location_id: String,
        on_hand: i64,
    },
    PriceSet {
        sku: String,
        price: JsonMoney,
    },
    CostSet {
        sku: String,
        unit_cost: JsonMoney,
    },
    PromotionScheduled {
        promotion_id: String,
        sku: String,
        percent_off: String,
        starts_at_ms: i64,
        ends_at_ms: i64,
    },
    PromotionCancelled {
        promotion_id: String,
        sku: String,
    },
    CompetitorPriceObserved {
        sku: String,
        competitor: String,
        price: JsonMoney,
    },
    ChannelCostRecorded {
        category: String,
        amount: JsonMoney,
        period_start_ms: i64,
        period_end_ms: i64,
    },
}

impl From<JsonMoney> for Money {
    fn from(m: JsonMoney) -> Self {
        Money { amount: m.amount, currency: m.currency }
    }
}

impl From<Money> for JsonMoney {
    fn from(m: Money) -> Self {
        JsonMoney { amount: m.amount, currency: m.currency }
    }
}

impl From<JsonReason> for StockAdjustmentReason {
    fn from(r: JsonReason) -> Self {
        match r {
            JsonReason::Receipt => Self::Receipt,
            JsonReason::Damage => Self::Damage,
            JsonReason::TransferIn => Self::TransferIn,
            JsonReason::TransferOut => Self::TransferOut,
            JsonReason::Correction => Self::Correction,
            JsonReason::Other => Self::Other,
        }
    }
}

fn reason_to_json(reason: i32) -> JsonReason {
    match StockAdjustmentReason::try_from(reason).unwrap_or_default() {
        StockAdjustmentReason::Receipt => JsonReason::Receipt,
        StockAdjustmentReason::Damage => JsonReason::Damage,
        StockAdjustmentReason::TransferIn => JsonReason::TransferIn,
        StockAdjustmentReason::TransferOut => JsonReason::TransferOut,
        StockAdjustmentReason::Correction => JsonReason::Correction,
        StockAdjustmentReason::Other | StockAdjustmentReason::Unspecified => JsonReason::Other,
    }
}

fn money_or_zero(m: Option<Money>) -> JsonMoney {
    m.map(Into::into).unwrap_or(JsonMoney { amount: String::new(), currency: String::new() })
}

impl From<JsonEvent> for Event {
    fn from(json: JsonEvent) -> Self {
        Event {
            event_id: json.event_id,
            channel: json.channel,
            occurred_at_ms: json.occurred_at_ms,
            body: Some(json.body.into()),
        }
    }
}

impl From<JsonBody> for Body {
    fn from(body: JsonBody) -> Self {
        match body {
            JsonBody::OrderLinePlaced {
                order_id,
                line_id,
                sku,
                quantity,
                unit_price,
                discount,
                channel_fee,
                location_id,
            } => Body::OrderLinePlaced(v1::OrderLinePlaced {
                order_id,
                line_id,
                sku,
                quantity,
                unit_price: Some(unit_price.into()),
                discount: discount.map(Into::into),
                channel_fee: channel_fee.map(Into::into),
                location_id,
            }),
            JsonBody::OrderLineCancelled { order_id, line_id, sku } => {
                Body::OrderLineCancelled(v1::OrderLineCancelled { order_id, line_id, sku })
            }
            JsonBody::OrderLineShipped {
                order_id,
                line_id,
                sku,
                quantity,
                location_id,
                fulfillment_cost,
            } => Body::OrderLineShipped(v1::OrderLineShipped {
                order_id,
                line_id,
                sku,
                quantity,
                location_id,
                fulfillment_cost: fulfillment_cost.map(Into::into),
            }),
            JsonBody::OrderLineReturned {
                order_id,
                line_id,
                sku,
                quantity,
                refund,
                restock,
                location_id,
            } => Body::OrderLineReturned(v1::OrderLineReturned {
                order_id,
                line_id,
                sku,
                quantity,
                refund: Some(refund.into()),
                restock,
                location_id,
            }),
            JsonBody::StockAdjusted { sku, location_id, delta, reason } => {
                Body::StockAdjusted(v1::StockAdjusted {
                    sku,
                    location_id,
                    delta,
                    reason: StockAdjustmentReason::from(reason) as i32,
                })
            }
            JsonBody::StockCounted { sku, location_id, on_hand } => {
                Body::StockCounted(v1::StockCounted { sku, location_id, on_hand })
            }
            JsonBody::PriceSet { sku, price } => {
                Body::PriceSet(v1::PriceSet { sku, price: Some(price.into()) })
            }
            JsonBody::CostSet { sku, unit_cost } => {
                Body::CostSet(v1::CostSet { sku, unit_cost: Some(unit_cost.into()) })
            }
            JsonBody::PromotionScheduled { promotion_id, sku, percent_off, starts_at_ms, ends_at_ms } => {
                Body::PromotionScheduled(v1::PromotionScheduled {
                    promotion_id,
                    sku,
                    percent_off,
                    starts_at_ms,
                    ends_at_ms,
                })
            }
            JsonBody::PromotionCancelled { promotion_id, sku } => {
                Body::PromotionCancelled(v1::PromotionCancelled { promotion_id, sku })
            }
            JsonBody::CompetitorPriceObserved { sku, competitor, price } => {
                Body::CompetitorPriceObserved(v1::CompetitorPriceObserved {
                    sku,
                    competitor,
                    price: Some(price.into()),
                })
            }
            JsonBody::ChannelCostRecorded { category, amount, period_start_ms, period_end_ms } => {
                Body::ChannelCostRecorded(v1::ChannelCostRecorded {
                    category,
                    amount: Some(amount.into()),
                    period_start_ms,
                    period_end_ms,
                })
            }
        }
    }
}

impl From<Event> for JsonEvent {
    fn from(event: Event) -> Self {
        JsonEvent {
            event_id: event.event_id,
            channel: event.channel,
            occurred_at_ms: event.occurred_at_ms,
            body: event.body.expect("an event to serialize has a body").into(),
        }
    }
}

impl From<Body> for JsonBody {
    fn from(body: Body) -> Self {
        match body {
            Body::OrderLinePlaced(b) => JsonBody::OrderLinePlaced {
                order_id: b.order_id,
                line_id: b.line_id,
                sku: b.sku,
                quantity: b.quantity,
                unit_price: money_or_zero(b.unit_price),
                discount: b.discount.map(Into::into),
                channel_fee: b.channel_fee.map(Into::into),
                location_id: b.location_id,
            },
            Body::OrderLineCancelled(b) => {
                JsonBody::OrderLineCancelled { order_id: b.order_id, line_id: b.line_id, sku: b.sku }
            }
            Body::OrderLineShipped(b) => JsonBody::OrderLineShipped {
                order_id: b.order_id,
                line_id: b.line_id,
                sku: b.sku,
                quantity: b.quantity,
                location_id: b.location_id,
                fulfillment_cost: b.fulfillment_cost.map(Into::into),
            },
            Body::OrderLineReturned(b) => JsonBody::OrderLineReturned {
                order_id: b.order_id,
                line_id: b.line_id,
                sku: b.sku,
                quantity: b.quantity,
                refund: money_or_zero(b.refund),
                restock: b.restock,
                location_id: b.location_id,
            },
            Body::StockAdjusted(b) => JsonBody::StockAdjusted {
                sku: b.sku,
                location_id: b.location_id,
                delta: b.delta,
                reason: reason_to_json(b.reason),
            },
            Body::StockCounted(b) => {
                JsonBody::StockCounted { sku: b.sku, location_id: b.location_id, on_hand: b.on_hand }
            }
            Body::PriceSet(b) => JsonBody::PriceSet { sku: b.sku, price: money_or_zero(b.price) },
            Body::CostSet(b) => JsonBody::CostSet { sku: b.sku, unit_cost: money_or_zero(b.unit_cost) },
            Body::PromotionScheduled(b) => JsonBody::PromotionScheduled {
                promotion_id: b.promotion_id,
                sku: b.sku,
                percent_off: b.percent_off,
                starts_at_ms: b.starts_at_ms,
                ends_at_ms: b.ends_at_ms,
            },
            Body::PromotionCancelled(b) => {
                JsonBody::PromotionCancelled { promotion_id: b.promotion_id, sku: b.sku }
            }
            Body::CompetitorPriceObserved(b) => JsonBody::CompetitorPriceObserved {
                sku: b.sku,
                competitor: b.competitor,
                price: money_or_zero(b.price),
            },
            Body::ChannelCostRecorded(b) => JsonBody::ChannelCostRecorded {
                category: b.category,
                amount: money_or_zero(b.amount),
                period_start_ms: b.period_start_ms,
                period_end_ms: b.period_end_ms,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_example() {
        let line = r#"{"event_id": "ev-42", "channel": "shopify", "occurred_at_ms": 1794182460000,
            "type": "OrderLinePlaced", "order_id": "SHO-1", "line_id": "1", "sku": "SKU-3",
            "quantity": 2, "unit_price": {"amount": "19.99", "currency": "USD"}}"#;
        let event = event_from_json(line).unwrap();
        assert_eq!(event.event_id, "ev-42");
        assert_eq!(event.partition_key(), "SKU-3");
        let Some(Body::OrderLinePlaced(placed)) = &event.body else { panic!("wrong body") };
        assert_eq!(placed.quantity, 2);
        assert_eq!(placed.unit_price, Some(Money::new("19.99", "USD")));
        assert_eq!(placed.discount, None);
    }

    #[test]
    fn round_trips_through_json() {
        let line = r#"{"event_id":"s1","occurred_at_ms":5,"type":"StockAdjusted","sku":"A","location_id":"wh","delta":-3,"reason":"transfer_out"}"#;
        let event = event_from_json(line).unwrap();
        assert_eq!(event_to_json(&event), line);
    }

    #[test]
    fn names_the_missing_field() {
        let err = event_from_json(r#"{"event_id":"x","occurred_at_ms":1,"type":"StockCounted","sku":"A"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("missing field `location_id`"), "{err}");
    }

    #[test]
    fn names_an_unknown_type() {
        let err = event_from_json(r#"{"event_id":"x","occurred_at_ms":1,"type":"Teleported"}"#).unwrap_err();
        assert!(err.to_string().contains("Teleported"), "{err}");
    }

    #[test]
    fn channel_level_events_are_keyed_by_channel() {
        let line = r#"{"event_id":"c","channel":"amazon","occurred_at_ms":1,"type":"ChannelCostRecorded","category":"ads","amount":{"amount":"10","currency":"USD"},"period_start_ms":0,"period_end_ms":10}"#;
        assert_eq!(event_from_json(line).unwrap().partition_key(), "amazon");
    }

    #[test]
    fn a_shipment_with_every_amount_fits_the_buffer_it_is_written_into() {
        let entry = v1::LedgerEntry {
            entry_id: "shipment/shopify-web-order-000123456789-line-1-shipped".into(),
            kind: v1::LedgerKind::Shipment as i32,
            channel: "amazon-marketplace".into(),
            sku: "SKU-000123-BLUE-XL".into(),
            order_id: "order-000123456789".into(),
            line_id: "line-1".into(),
            occurred_at_ms: 1_767_225_600_000,
            reason_event_id: "shopify-web-order-000123456789-line-1-shipped".into(),
            currency: "USD".into(),
            units: 12,
            gross_revenue: "1234.56".into(),
            discount: "123.45".into(),
            channel_fee: "185.18".into(),
            cogs: "617.28".into(),
            fulfillment_cost: "42.00".into(),
            unit_cost: "51.44".into(),
            event_partition: 11,
            event_offset: 123_456_789,
            ..Default::default()
        };
        let json = ledger_to_json(&entry);
        assert!(json.len() <= LEDGER_JSON_BYTES, "{} bytes", json.len());
        let read: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(read["kind"], "SHIPMENT");
        assert_eq!(read["gross_revenue"], "1234.56");
    }
}

/// The JSON form of a contribution ledger entry (`omnifold.ledger.json.v1`,
/// `schemas/ledger-entry.schema.json`): the proto's fields by name, the kind without its
/// prefix, amounts as decimal strings, and fields that do not apply to the kind left out. As
/// the UTF-8 bytes of the record's value, written into a buffer that holds most entries whole
/// (grown from serde_json's 128 bytes, two reallocations an entry were a third of its cost).
pub fn ledger_to_json(entry: &v1::LedgerEntry) -> Vec<u8> {
    ledger_ref_to_json(&crate::borrowed::LedgerEntryRef::of(entry))
}

/// [`ledger_to_json`] of an entry's borrowed fields, as the coordinator writes it.
pub fn ledger_ref_to_json(entry: &crate::borrowed::LedgerEntryRef<'_>) -> Vec<u8> {
    let kind = v1::LedgerKind::try_from(entry.kind).unwrap_or_default();
    let json = JsonLedgerEntry {
        entry_id: entry.entry_id,
        kind: kind.as_str_name().trim_start_matches("LEDGER_KIND_"),
        channel: entry.channel,
        sku: non_empty(entry.sku),
        order_id: non_empty(entry.order_id),
        line_id: non_empty(entry.line_id),
        occurred_at_ms: entry.occurred_at_ms,
        reason_event_id: entry.reason_event_id,
        currency: entry.currency,
        units: (kind != v1::LedgerKind::ChannelCost).then_some(entry.units),
        gross_revenue: non_empty(entry.gross_revenue),
        discount: non_empty(entry.discount),
        channel_fee: non_empty(entry.channel_fee),
        cogs: non_empty(entry.cogs),
        fulfillment_cost: non_empty(entry.fulfillment_cost),
        refund: non_empty(entry.refund),
        restocked_cogs: non_empty(entry.restocked_cogs),
        restocked_units: (kind == v1::LedgerKind::Return).then_some(entry.restocked_units),
        unit_cost: non_empty(entry.unit_cost),
        operating_cost: non_empty(entry.operating_cost),
        cost_category: non_empty(entry.cost_category),
        period_start_ms: (kind == v1::LedgerKind::ChannelCost).then_some(entry.period_start_ms),
        period_end_ms: (kind == v1::LedgerKind::ChannelCost).then_some(entry.period_end_ms),
        event_partition: entry.event_partition,
        event_offset: entry.event_offset,
    };
    let mut bytes = Vec::with_capacity(LEDGER_JSON_BYTES);
    serde_json::to_writer(&mut bytes, &json).expect("ledger json serialization cannot fail");
    bytes
}

/// Room for a ledger entry's JSON: a shipment with every amount and long ids takes 499 bytes,
/// and a test holds such an entry within this.
const LEDGER_JSON_BYTES: usize = 768;

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

#[derive(Serialize)]
struct JsonLedgerEntry<'a> {
    entry_id: &'a str,
    kind: &'a str,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sku: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line_id: Option<&'a str>,
    occurred_at_ms: i64,
    reason_event_id: &'a str,
    currency: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    units: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gross_revenue: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    discount: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_fee: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cogs: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fulfillment_cost: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restocked_cogs: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restocked_units: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_cost: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operating_cost: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_category: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period_start_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period_end_ms: Option<i64>,
    event_partition: i32,
    event_offset: i64,
}

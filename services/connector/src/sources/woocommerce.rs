//! WooCommerce order webhooks (order.created, order.updated, order.restored), signed with
//! X-WC-Webhook-Signature = base64(HMAC-SHA256(body, secret)).
//!
//! Ids follow the fact: `woocommerce:order:<id>:line:<line>:placed|cancelled|shipped|returned`,
//! so the same order delivered again (or updated without a change of status) changes nothing.
//! The status decides: pending, on-hold and processing place the lines; completed places and
//! ships them (at `ship_location`); cancelled and failed cancel them. Refunded (the whole
//! order refunded) returns every line of an order that shipped (completed, with a
//! `ship_location`): the whole line, its refund the line's total after discounts and before
//! tax, not restocked (the webhook does not say whether WooCommerce restocked; on-hand comes
//! back through counts); a refunded order that never shipped has its lines cancelled.
//!
//! A partial refund is listed in the order's `refunds` with its total only: without its lines
//! and quantities the contract cannot express it (a return names a line and a quantity), so
//! each is refused (`refund_without_lines`), on every delivery of the order that lists it
//! (a cancelled or refunded order's refunds are covered by its lines' cancels or returns).
//! Any other status (e.g. checkout-draft, trash) is listed as ignored. Nothing is dropped
//! without an entry in the answer.
//!
//! The source: [`WooWebhooks`], the [`Adapter`] of the one webhook receiver, built by
//! [`source`] from `[woocommerce]`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::HeaderMap;
use omnifold_proto::{Body, OrderLineCancelled, OrderLinePlaced, OrderLineReturned, OrderLineShipped};
use serde::Deserialize;

use crate::config::{ConfigError, Secret, WooOptions};
use crate::decimal::{Dec, per_unit};
use crate::http::{
    Adapter, Delivery, HttpSource, Refused, header, required_header, verify_signature, webhook_source,
};
use crate::mapping::{Malformed, Mapped, money, money_if_positive, non_empty};
use crate::publish::Sink;
use crate::timefmt::parse_ms;

const SIGNATURE_HEADER: &str = "x-wc-webhook-signature";

/// The WooCommerce receiver of `[woocommerce]`, publishing to `sink`.
pub fn source<S: Sink + 'static>(options: WooOptions, sink: S) -> Result<HttpSource, ConfigError> {
    let webhooks =
        WooWebhooks { mapping: WooMapping::from_options(&options), secret: options.secret.load()? };
    let publish_timeout = Duration::from_millis(options.publish_timeout_ms);
    Ok(webhook_source(webhooks, options.listen, options.max_body_bytes, publish_timeout, sink))
}

/// WooCommerce's order webhooks: signed with the webhook's secret (X-WC-Webhook-Signature),
/// told apart by X-WC-Webhook-Topic, redeliveries by X-WC-Webhook-Delivery-ID when present.
pub struct WooWebhooks {
    pub mapping: WooMapping,
    pub secret: Secret,
}

impl Adapter for WooWebhooks {
    const NAME: &'static str = "woocommerce";
    const PATH: &'static str = "/webhooks/woocommerce";

    /// WooCommerce pings a new webhook with an unsigned `webhook_id=N` form body.
    fn is_ping(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        headers.get(SIGNATURE_HEADER).is_none() && is_ping(body)
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Refused> {
        verify_signature(headers, SIGNATURE_HEADER, &self.secret, body)
    }

    fn delivery(&self, headers: &HeaderMap, _body: &[u8]) -> Result<Delivery, Refused> {
        let topic = required_header(headers, "x-wc-webhook-topic", "X-WC-Webhook-Topic")?;
        let id = header(headers, "x-wc-webhook-delivery-id").map(str::to_string);
        Ok(Delivery { topic, id })
    }

    fn map(&self, delivery: &Delivery, body: &[u8]) -> Result<Mapped, Malformed> {
        self.mapping.map(&delivery.topic, body)
    }
}

/// How WooCommerce ids become contract ids; built from `[woocommerce]`.
#[derive(Debug, Clone, Default)]
pub struct WooMapping {
    pub channel: String,
    pub products: BTreeMap<String, String>,
    pub ship_location: Option<String>,
}

/// Whether the body is WooCommerce's unsigned ping of a new webhook (`webhook_id=N`).
pub fn is_ping(body: &[u8]) -> bool {
    std::str::from_utf8(body)
        .ok()
        .and_then(|b| b.trim().strip_prefix("webhook_id="))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

impl WooMapping {
    pub fn from_options(options: &WooOptions) -> Self {
        WooMapping {
            channel: options.channel.clone(),
            products: options.products.clone(),
            ship_location: options.ship_location.clone(),
        }
    }

    /// Maps one webhook body of `topic` (X-WC-Webhook-Topic).
    pub fn map(&self, topic: &str, body: &[u8]) -> Result<Mapped, Malformed> {
        if !matches!(topic, "order.created" | "order.updated" | "order.restored") {
            let mut mapped = Mapped::default();
            mapped.refuse(
                format!("topic {topic}"),
                "unsupported_topic",
                format!("topic {topic} is not mapped"),
            );
            return Ok(mapped);
        }
        let order: Order =
            serde_json::from_slice(body).map_err(|e| Malformed::json(&format!("WooCommerce {topic}"), &e))?;
        Ok(self.order(&order))
    }

    fn order(&self, order: &Order) -> Mapped {
        let mut mapped = Mapped::default();
        let what = format!("order {}", order.id);
        // a refunded order shipped if it was completed and completion ships (ship_location)
        let shipped_before = order.date_completed_gmt.is_some() && self.ship_location.is_some();
        let (place, cancel, ship, give_back) = match order.status.as_str() {
            "pending" | "on-hold" | "processing" => (true, false, false, false),
            "completed" => (true, false, true, false),
            "cancelled" | "failed" => (false, true, false, false),
            "refunded" if shipped_before => (true, false, true, true),
            "refunded" => (false, true, false, false),
            other => {
                mapped.ignore(what, "status_not_mapped", format!("status {other:?} changes no stock"));
                return mapped;
            }
        };
        // a cancelled or refunded order's refunds are covered by its lines' cancels or returns
        if place && !give_back {
            for refund in &order.refunds {
                let reason = refund.reason.as_deref().filter(|r| !r.is_empty()).unwrap_or("no reason given");
                mapped.refuse(
                    format!("refund {}", refund.id),
                    "refund_without_lines",
                    format!(
                        "refund {} of order {} ({}, {reason}): the order webhook gives a refund's total \
                         only, not its lines and quantities, and a return needs both",
                        refund.id,
                        order.id,
                        refund.total.map_or("no total".to_string(), |t| t.0.to_string()),
                    ),
                );
            }
        }
        let placed_at = parse_utc(&order.date_created_gmt);
        let modified_at = parse_utc(&order.date_modified_gmt).or(placed_at);
        let completed_at = parse_utc(&order.date_completed_gmt).or(modified_at);
        let Some(placed_at) = placed_at else {
            mapped.refuse(what, "bad_time", "date_created_gmt is missing or not a date-time");
            return mapped;
        };
        let ship_location = match (&self.ship_location, ship) {
            (Some(location), true) => Some(location.clone()),
            (None, true) => {
                mapped.ignore(
                    what.clone(),
                    "no_ship_location",
                    "completed, but woocommerce.ship_location is not set",
                );
                None
            }
            _ => None,
        };
        for line in &order.line_items {
            let item = format!("line {}", line.id);
            let Some(sku) = self.sku(&mut mapped, line, &item) else { continue };
            let prefix = format!("woocommerce:order:{}:line:{}", order.id, line.id);
            if line.quantity <= 0 {
                mapped.refuse(item, "bad_quantity", format!("quantity {} is not above 0", line.quantity));
                continue;
            }
            if place {
                // subtotal is the line before discounts, total after them
                let (unit, rounding) = per_unit(line.subtotal.0, line.quantity);
                let discount = line.subtotal.0 - line.total.0 + rounding;
                mapped.push(
                    format!("{prefix}:placed"),
                    &self.channel,
                    placed_at,
                    Body::OrderLinePlaced(OrderLinePlaced {
                        order_id: order.id.to_string(),
                        line_id: line.id.to_string(),
                        sku: sku.clone(),
                        quantity: line.quantity,
                        unit_price: Some(money(unit, &order.currency)),
                        discount: money_if_positive(discount, &order.currency),
                        channel_fee: None,
                        location_id: None,
                    }),
                );
            }
            if let (Some(location), Some(at)) = (&ship_location, completed_at) {
                mapped.push(
                    format!("{prefix}:shipped"),
                    &self.channel,
                    at,
                    Body::OrderLineShipped(OrderLineShipped {
                        order_id: order.id.to_string(),
                        line_id: line.id.to_string(),
                        sku: sku.clone(),
                        quantity: line.quantity,
                        location_id: location.clone(),
                        fulfillment_cost: None,
                    }),
                );
            }
            if give_back
                && ship_location.is_some()
                && let Some(at) = modified_at
            {
                mapped.push(
                    format!("{prefix}:returned"),
                    &self.channel,
                    at,
                    Body::OrderLineReturned(OrderLineReturned {
                        order_id: order.id.to_string(),
                        line_id: line.id.to_string(),
                        sku: sku.clone(),
                        quantity: line.quantity,
                        refund: Some(money(line.total.0, &order.currency)),
                        restock: false,
                        location_id: None,
                    }),
                );
            }
            if cancel && let Some(at) = modified_at {
                mapped.push(
                    format!("{prefix}:cancelled"),
                    &self.channel,
                    at,
                    Body::OrderLineCancelled(OrderLineCancelled {
                        order_id: order.id.to_string(),
                        line_id: line.id.to_string(),
                        sku,
                    }),
                );
            }
        }
        mapped
    }

    fn sku(&self, mapped: &mut Mapped, line: &LineItem, item: &str) -> Option<String> {
        if let Some(sku) = non_empty(line.sku.as_deref()) {
            return Some(sku.to_string());
        }
        let product = if line.variation_id != 0 { line.variation_id } else { line.product_id };
        match self.products.get(&product.to_string()) {
            Some(sku) => Some(sku.clone()),
            None => {
                mapped.refuse(
                    item,
                    "empty_sku",
                    format!("{item} has no SKU and product {product} is not in [woocommerce.products]"),
                );
                None
            }
        }
    }
}

/// WooCommerce's `*_gmt` fields are UTC without an offset.
fn parse_utc(text: &Option<String>) -> Option<i64> {
    text.as_deref().and_then(parse_ms).filter(|ms| *ms > 0)
}

#[derive(Deserialize)]
struct Order {
    id: u64,
    status: String,
    currency: String,
    #[serde(default)]
    date_created_gmt: Option<String>,
    #[serde(default)]
    date_modified_gmt: Option<String>,
    #[serde(default)]
    date_completed_gmt: Option<String>,
    line_items: Vec<LineItem>,
    /// The order's refunds, each with its total only.
    #[serde(default)]
    refunds: Vec<Refund>,
}

#[derive(Deserialize)]
struct Refund {
    id: u64,
    /// `reason` in the REST reference; the docs' example response spells it `refund`.
    #[serde(default, alias = "refund")]
    reason: Option<String>,
    #[serde(default)]
    total: Option<Dec>,
}

#[derive(Deserialize)]
struct LineItem {
    id: u64,
    #[serde(default)]
    product_id: u64,
    #[serde(default)]
    variation_id: u64,
    quantity: i64,
    subtotal: Dec,
    total: Dec,
    #[serde(default)]
    sku: Option<String>,
}

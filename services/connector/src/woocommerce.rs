//! WooCommerce order webhooks (order.created, order.updated, order.restored), signed with
//! X-WC-Webhook-Signature = base64(HMAC-SHA256(body, secret)).
//!
//! Ids follow the fact: `woocommerce:order:<id>:line:<line>:placed|cancelled|shipped`, so the
//! same order delivered again (or updated without a change of status) changes nothing. The
//! status decides: pending, on-hold and processing place the lines; completed places and
//! ships them (at `ship_location`); cancelled and failed cancel them.

use std::collections::BTreeMap;

use omnifold_proto::{Body, OrderLineCancelled, OrderLinePlaced, OrderLineShipped};
use serde::Deserialize;

use crate::config::WooOptions;
use crate::decimal::{Dec, per_unit};
use crate::mapping::{Malformed, Mapped, money, money_if_positive, non_empty};
use crate::timefmt::parse_ms;

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
        let (place, cancel, ship) = match order.status.as_str() {
            "pending" | "on-hold" | "processing" => (true, false, false),
            "completed" => (true, false, true),
            "cancelled" | "failed" => (false, true, false),
            other => {
                mapped.ignore(what, "status_not_mapped", format!("status {other:?} changes no stock"));
                return mapped;
            }
        };
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

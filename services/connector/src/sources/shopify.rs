//! Shopify webhooks: orders/create, orders/updated, orders/edited, orders/cancelled,
//! fulfillments/create (and /update), refunds/create, inventory_levels/update and
//! products/update, mapped to contract events.
//!
//! Order edits. orders/edited names the edited lines and their deltas only (no SKU, no price,
//! so nothing can be published from it); Shopify sends orders/updated with every edit, and the
//! edit's facts are mapped from that full order: a line added by the edit is placed (each line
//! is placed under the id orders/create gives it, so a line placed before is a repeat the
//! coordinator ignores), and a line whose `current_quantity` fell to 0 (removed by an edit or
//! refunded away) is cancelled. The contract cannot express a partial removal (its
//! OrderLineCancelled releases the whole open line) nor more units on a line already placed:
//! a line with fewer current units than ordered ones, beyond those refunded as returns, is
//! refused (`partial_cancel`) on each orders/updated that shows it; a raised quantity shows in
//! orders/updated only as the line's new quantity, which the connector (keeping no order
//! state) cannot tell from the old one, so orders/edited lists each addition, and each
//! removal, as ignored with what orders/updated does with it. A cancelled fulfillment is
//! refused (`fulfillment_cancelled`): if it had shipped, the contract has no event that
//! un-ships its units, and its payload does not say whether it had.
//!
//! Event ids follow the business fact, so a redelivered webhook (same X-Shopify-Webhook-Id)
//! or the same fact in a second delivery maps to the same ids and the coordinator ignores the
//! repeat: `shopify:order:<order>:line:<line>:placed|cancelled`,
//! `shopify:fulfillment:<fulfillment>:line:<line>:shipped`,
//! `shopify:refund:<refund>:line:<refund line>:returned`. An inventory level is the fact of
//! its item at its location as of its `updated_at`, with the count itself:
//! `shopify:inventory:<item>:<location>:<updated_at ms>:<available>` (the count is in the id
//! because `updated_at` has whole seconds: two changes within one second are two facts). A
//! level older than the last one applied for its (item, location) is ignored (`stale_level`,
//! [`LevelMarks`]), so a late replay never sets on-hand back. products/update has no fact id
//! of its own and takes the webhook id: `shopify:webhook:<webhook id>:variant:<variant>:price`.
//!
//! The source: [`ShopifyWebhooks`], the [`Adapter`] of the one webhook receiver, built by
//! [`source`] from [`ShopifySourceOptions`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;

use omnifold_proto::{
    Body, OrderLineCancelled, OrderLinePlaced, OrderLineReturned, OrderLineShipped, PriceSet, StockCounted,
};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::config::{ConfigError, ConnectorConfig, Secret, ShopifyOptions};
use crate::decimal::Dec;
use crate::http::{
    Adapter, Delivery, HttpSource, Refused, required_header, verify_signature, webhook_source,
};
use crate::mapping::{Malformed, Mapped, money, money_if_positive, non_empty};
use crate::publish::Sink;
use crate::sources::levels::LevelMarks;
use crate::timefmt::parse_ms;

/// The topics the receiver maps; any other is answered 200 and counted as refused.
pub const TOPICS: [&str; 9] = [
    "orders/create",
    "orders/updated",
    "orders/edited",
    "orders/cancelled",
    "fulfillments/create",
    "fulfillments/update",
    "refunds/create",
    "inventory_levels/update",
    "products/update",
];

/// `omnifold-connector shopify`: the `[shopify]` section, and the Shopify location push-back
/// writes to, whose inventory updates are echoes (`[pushback.shopify] location_id`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifySourceOptions {
    pub shopify: ShopifyOptions,
    #[serde(default)]
    pub echo_location: Option<String>,
}

impl ShopifySourceOptions {
    pub fn from_config(config: &ConnectorConfig, shopify: &ShopifyOptions) -> Self {
        let echo_location = config.shopify_echo_location().map(str::to_string);
        ShopifySourceOptions { shopify: shopify.clone(), echo_location }
    }
}

/// The Shopify receiver, publishing to `sink`.
pub fn source<S: Sink + 'static>(options: ShopifySourceOptions, sink: S) -> Result<HttpSource, ConfigError> {
    let ShopifySourceOptions { shopify, echo_location } = options;
    let levels = LevelMarks::open_or_in_memory(shopify.state.as_deref())
        .map_err(|error| ConfigError::Invalid(error.to_string()))?;
    let mapping =
        ShopifyMapping { echo_location, levels: Arc::new(levels), ..ShopifyMapping::from_options(&shopify) };
    let webhooks = ShopifyWebhooks { mapping, secret: shopify.secret.load()? };
    let publish_timeout = Duration::from_millis(shopify.publish_timeout_ms);
    Ok(webhook_source(webhooks, shopify.listen, shopify.max_body_bytes, publish_timeout, sink))
}

/// Shopify's webhooks: signed with the app's secret (X-Shopify-Hmac-Sha256), told apart by
/// X-Shopify-Topic, redeliveries by X-Shopify-Webhook-Id.
pub struct ShopifyWebhooks {
    pub mapping: ShopifyMapping,
    pub secret: Secret,
}

impl Adapter for ShopifyWebhooks {
    const NAME: &'static str = "shopify";
    const PATH: &'static str = "/webhooks/shopify";

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Refused> {
        verify_signature(headers, "x-shopify-hmac-sha256", &self.secret, body)
    }

    fn delivery(&self, headers: &HeaderMap, _body: &[u8]) -> Result<Delivery, Refused> {
        let topic = required_header(headers, "x-shopify-topic", "X-Shopify-Topic")?;
        let id = required_header(headers, "x-shopify-webhook-id", "X-Shopify-Webhook-Id")?;
        Ok(Delivery { topic, id: Some(id) })
    }

    fn map(&self, delivery: &Delivery, body: &[u8]) -> Result<Mapped, Malformed> {
        self.mapping.map_marked(&delivery.topic, delivery.id.as_deref().unwrap_or_default(), body)
    }
}

/// How Shopify ids become contract ids; built from `[shopify]` of the connector config.
#[derive(Debug, Clone, Default)]
pub struct ShopifyMapping {
    pub channel: String,
    pub currency: String,
    pub locations: BTreeMap<String, String>,
    pub variants: BTreeMap<String, String>,
    pub inventory_items: BTreeMap<String, String>,
    pub default_ship_location: Option<String>,
    /// The Shopify location push-back writes to: its inventory updates are echoes.
    pub echo_location: Option<String>,
    /// The newest inventory level applied per (item, location); [`Self::map_marked`] drops
    /// older ones. Clones share them.
    pub levels: Arc<LevelMarks>,
}

impl ShopifyMapping {
    /// The mapping of `[shopify]`, with the echo location push-back's settings give.
    pub fn from_config(config: &ConnectorConfig, options: &ShopifyOptions) -> Self {
        let echo_location = config.shopify_echo_location().map(str::to_string);
        ShopifyMapping { echo_location, ..ShopifyMapping::from_options(options) }
    }

    /// The mapping of `[shopify]` alone: no location is an echo.
    pub fn from_options(options: &ShopifyOptions) -> Self {
        ShopifyMapping {
            channel: options.channel.clone(),
            currency: options.currency.clone(),
            locations: options.locations.clone(),
            variants: options.variants.clone(),
            inventory_items: options.inventory_items.clone(),
            default_ship_location: options.default_ship_location.clone(),
            echo_location: None,
            levels: Arc::default(),
        }
    }

    /// [`Self::map`], then the levels older than the last applied for their (item, location)
    /// dropped (ignored, `stale_level`) and the marks raised: what the receiver publishes.
    pub fn map_marked(&self, topic: &str, webhook_id: &str, body: &[u8]) -> Result<Mapped, Malformed> {
        let mut mapped = self.map(topic, webhook_id, body)?;
        self.levels.apply(&mut mapped);
        Ok(mapped)
    }

    /// Maps one webhook body of `topic`. `webhook_id` is X-Shopify-Webhook-Id.
    pub fn map(&self, topic: &str, webhook_id: &str, body: &[u8]) -> Result<Mapped, Malformed> {
        match topic {
            "orders/create" => Ok(self.order_created(&parse(topic, body)?)),
            "orders/updated" => Ok(self.order_updated(&parse(topic, body)?)),
            "orders/edited" => Ok(self.order_edited(&parse::<EditedOrder>(topic, body)?.order_edit)),
            "orders/cancelled" => Ok(self.order_cancelled(&parse(topic, body)?)),
            "fulfillments/create" | "fulfillments/update" => Ok(self.fulfillment(&parse(topic, body)?)),
            "refunds/create" => Ok(self.refund(&parse(topic, body)?)),
            "inventory_levels/update" => Ok(self.inventory_level(&parse(topic, body)?)),
            "products/update" => Ok(self.product(webhook_id, &parse(topic, body)?)),
            other => {
                let mut mapped = Mapped::default();
                mapped.refuse(
                    format!("topic {other}"),
                    "unsupported_topic",
                    format!("topic {other} is not mapped"),
                );
                Ok(mapped)
            }
        }
    }

    fn order_created(&self, order: &Order) -> Mapped {
        let mut mapped = Mapped::default();
        let Some(at) = time(&mut mapped, "order", [&order.processed_at, &order.created_at]) else {
            return mapped;
        };
        let location = order.location_id.and_then(|id| self.locations.get(&id.to_string()).cloned());
        if let Some(id) = order.location_id
            && location.is_none()
        {
            mapped.ignore(
                format!("order {}", order.id),
                "unmapped_order_location",
                format!(
                    "order location {id} is not in [shopify.locations]; the lines reserve in the shared pool"
                ),
            );
        }
        for line in &order.line_items {
            let item = format!("line {}", line.id);
            if line.gift_card {
                mapped.ignore(item, "gift_card", "gift cards hold no stock");
                continue;
            }
            let Some(sku) = self.sku(&mut mapped, line.sku.as_deref(), line.variant_id, &item) else {
                continue;
            };
            if line.quantity <= 0 {
                mapped.refuse(item, "bad_quantity", format!("quantity {} is not above 0", line.quantity));
                continue;
            }
            let Some(price) = line.price else {
                mapped.refuse(item, "missing_price", "the line has no price");
                continue;
            };
            let discount: Decimal = line.discount_allocations.iter().map(|d| d.amount.0).sum();
            mapped.push(
                format!("shopify:order:{}:line:{}:placed", order.id, line.id),
                &self.channel,
                at,
                Body::OrderLinePlaced(OrderLinePlaced {
                    order_id: order.id.to_string(),
                    line_id: line.id.to_string(),
                    sku,
                    quantity: line.quantity,
                    unit_price: Some(money(price.0, &order.currency)),
                    discount: money_if_positive(discount, &order.currency),
                    channel_fee: None,
                    location_id: location.clone(),
                }),
            );
        }
        mapped
    }

    /// orders/updated: the placements as orders/create maps them (same ids, times and bodies),
    /// then what removals did to each line; see the module documentation.
    fn order_updated(&self, order: &Order) -> Mapped {
        let mut mapped = self.order_created(order);
        if mapped.refused.iter().any(|r| r.reason == "bad_time") {
            return mapped;
        }
        let Some(at) =
            time(&mut mapped, "order", [&order.updated_at, &order.processed_at, &order.created_at])
        else {
            return mapped;
        };
        // units refunded as returns (or refunds without restocking) are the refunds' to map;
        // units refunded as `cancel` were removed from the line like an edit's
        let mut returned: BTreeMap<u64, i64> = BTreeMap::new();
        for line in order.refunds.iter().flat_map(|r| &r.refund_line_items) {
            if line.restock_type.as_deref() != Some("cancel") {
                *returned.entry(line.line_item_id).or_default() += line.quantity;
            }
        }
        for line in &order.line_items {
            let Some(current) = line.current_quantity else { continue };
            if line.gift_card || line.quantity <= 0 {
                continue;
            }
            // a line without a SKU was refused by its placement above
            let Some(sku) = self.known_sku(line.sku.as_deref(), line.variant_id) else { continue };
            let item = format!("line {}", line.id);
            if current == 0 {
                mapped.push(
                    format!("shopify:order:{}:line:{}:cancelled", order.id, line.id),
                    &self.channel,
                    at,
                    Body::OrderLineCancelled(OrderLineCancelled {
                        order_id: order.id.to_string(),
                        line_id: line.id.to_string(),
                        sku,
                    }),
                );
            } else if current > line.quantity {
                mapped.refuse(
                    item,
                    "quantity_increased",
                    format!(
                        "current_quantity {current} is above the {} units placed: the contract has no \
                         event that adds units to a placed line",
                        line.quantity
                    ),
                );
            } else {
                let removed = line.quantity - current - returned.get(&line.id).copied().unwrap_or(0);
                if removed > 0 {
                    mapped.refuse(
                        item,
                        "partial_cancel",
                        format!(
                            "{removed} of the line's {} units were removed ({current} remain): the \
                             contract's OrderLineCancelled releases the whole line and no event \
                             releases part of it, so they stay reserved until the line ships or is \
                             cancelled",
                            line.quantity
                        ),
                    );
                }
            }
        }
        mapped
    }

    /// orders/edited: no SKUs, no prices; each line change is listed with what orders/updated,
    /// sent with the same edit, publishes for it.
    fn order_edited(&self, edit: &OrderEdit) -> Mapped {
        let mut mapped = Mapped::default();
        let changes = edit.line_items.as_ref();
        for addition in changes.iter().flat_map(|c| &c.additions) {
            mapped.ignore(
                format!("line {}", addition.id),
                "edit_in_orders_updated",
                format!(
                    "edit {} of order {} added {} unit(s) on line {}: orders/updated places a new line; \
                     more units on a line already placed cannot be expressed (no contract event adds \
                     units to a placed line)",
                    edit.id, edit.order_id, addition.delta, addition.id
                ),
            );
        }
        for removal in changes.iter().flat_map(|c| &c.removals) {
            mapped.ignore(
                format!("line {}", removal.id),
                "edit_in_orders_updated",
                format!(
                    "edit {} of order {} removed {} unit(s) of line {}: orders/updated cancels the \
                     line if none remain and refuses a partial removal (partial_cancel)",
                    edit.id, edit.order_id, removal.delta, removal.id
                ),
            );
        }
        if mapped.ignored.is_empty() {
            mapped.ignore(
                format!("edit {}", edit.id),
                "edit_without_lines",
                format!("edit {} of order {} changed no line item", edit.id, edit.order_id),
            );
        }
        mapped
    }

    fn order_cancelled(&self, order: &Order) -> Mapped {
        let mut mapped = Mapped::default();
        let Some(at) = time(&mut mapped, "order", [&order.cancelled_at, &order.updated_at]) else {
            return mapped;
        };
        for line in &order.line_items {
            let item = format!("line {}", line.id);
            if line.gift_card {
                mapped.ignore(item, "gift_card", "gift cards hold no stock");
                continue;
            }
            let Some(sku) = self.sku(&mut mapped, line.sku.as_deref(), line.variant_id, &item) else {
                continue;
            };
            mapped.push(
                format!("shopify:order:{}:line:{}:cancelled", order.id, line.id),
                &self.channel,
                at,
                Body::OrderLineCancelled(OrderLineCancelled {
                    order_id: order.id.to_string(),
                    line_id: line.id.to_string(),
                    sku,
                }),
            );
        }
        mapped
    }

    fn fulfillment(&self, fulfillment: &Fulfillment) -> Mapped {
        let mut mapped = Mapped::default();
        let status = fulfillment.status.as_deref().unwrap_or("");
        if status == "cancelled" {
            mapped.refuse(
                format!("fulfillment {}", fulfillment.id),
                "fulfillment_cancelled",
                format!(
                    "fulfillment {} of order {} was cancelled: if it had shipped (status success), \
                     its units stay shipped, the contract having no event that un-ships them; if it \
                     had not, nothing shipped",
                    fulfillment.id, fulfillment.order_id
                ),
            );
            return mapped;
        }
        if status != "success" {
            mapped.ignore(
                format!("fulfillment {}", fulfillment.id),
                "fulfillment_not_shipped",
                format!("fulfillment status {status:?}: only a successful fulfillment ships units"),
            );
            return mapped;
        }
        let Some(at) = time(&mut mapped, "fulfillment", [&fulfillment.updated_at, &fulfillment.created_at])
        else {
            return mapped;
        };
        let location = match fulfillment.location_id {
            Some(id) => match self.locations.get(&id.to_string()) {
                Some(location) => location.clone(),
                None => {
                    mapped.refuse(
                        format!("fulfillment {}", fulfillment.id),
                        "unmapped_location",
                        format!("Shopify location {id} is not in [shopify.locations]"),
                    );
                    return mapped;
                }
            },
            None => match &self.default_ship_location {
                Some(location) => location.clone(),
                None => {
                    mapped.refuse(
                        format!("fulfillment {}", fulfillment.id),
                        "missing_location",
                        "the fulfillment names no location_id and shopify.default_ship_location is not set",
                    );
                    return mapped;
                }
            },
        };
        for line in &fulfillment.line_items {
            let item = format!("line {}", line.id);
            let Some(sku) = self.sku(&mut mapped, line.sku.as_deref(), line.variant_id, &item) else {
                continue;
            };
            if line.quantity <= 0 {
                mapped.refuse(item, "bad_quantity", format!("quantity {} is not above 0", line.quantity));
                continue;
            }
            mapped.push(
                format!("shopify:fulfillment:{}:line:{}:shipped", fulfillment.id, line.id),
                &self.channel,
                at,
                Body::OrderLineShipped(OrderLineShipped {
                    order_id: fulfillment.order_id.to_string(),
                    line_id: line.id.to_string(),
                    sku,
                    quantity: line.quantity,
                    location_id: location.clone(),
                    fulfillment_cost: None,
                }),
            );
        }
        mapped
    }

    fn refund(&self, refund: &Refund) -> Mapped {
        let mut mapped = Mapped::default();
        let Some(at) = time(&mut mapped, "refund", [&refund.processed_at, &refund.created_at]) else {
            return mapped;
        };
        for line in &refund.refund_line_items {
            let item = format!("refund line {}", line.id);
            let restock = match line.restock_type.as_deref().unwrap_or("no_restock") {
                "return" | "legacy_restock" => true,
                "no_restock" => false,
                "cancel" => {
                    mapped.ignore(
                        item,
                        "refund_of_unfulfilled",
                        "restock_type cancel: unfulfilled units removed, not a return; orders/updated \
                         cancels the line if none remain, else refuses the partial cancel",
                    );
                    continue;
                }
                other => {
                    mapped.refuse(
                        item,
                        "unknown_restock_type",
                        format!("restock_type {other:?} is not known"),
                    );
                    continue;
                }
            };
            let sku = line.line_item.as_ref().and_then(|l| l.sku.as_deref());
            let variant = line.line_item.as_ref().and_then(|l| l.variant_id);
            let Some(sku) = self.sku(&mut mapped, sku, variant, &item) else { continue };
            if line.quantity <= 0 {
                mapped.refuse(item, "bad_quantity", format!("quantity {} is not above 0", line.quantity));
                continue;
            }
            let amount = line.subtotal_set.as_ref().map(|s| &s.shop_money);
            let (value, currency) = match (amount, line.subtotal) {
                (Some(m), _) => (m.amount.0, m.currency_code.clone()),
                (None, Some(subtotal)) => (subtotal.0, String::new()),
                (None, None) => {
                    mapped.refuse(item, "missing_price", "the refund line has no subtotal");
                    continue;
                }
            };
            if currency.is_empty() {
                mapped.refuse(item, "missing_currency", "the refund line's subtotal has no currency");
                continue;
            }
            let location_id = if restock {
                match line.location_id.map(|id| (id, self.locations.get(&id.to_string()))) {
                    Some((_, Some(location))) => Some(location.clone()),
                    Some((id, None)) => {
                        mapped.refuse(
                            item,
                            "unmapped_location",
                            format!("Shopify location {id} is not in [shopify.locations]"),
                        );
                        continue;
                    }
                    None => match &self.default_ship_location {
                        Some(location) => Some(location.clone()),
                        None => {
                            mapped.refuse(
                                item,
                                "missing_location",
                                "a restocked refund line names no location_id",
                            );
                            continue;
                        }
                    },
                }
            } else {
                None
            };
            mapped.push(
                format!("shopify:refund:{}:line:{}:returned", refund.id, line.id),
                &self.channel,
                at,
                Body::OrderLineReturned(OrderLineReturned {
                    order_id: refund.order_id.to_string(),
                    line_id: line.line_item_id.to_string(),
                    sku,
                    quantity: line.quantity,
                    refund: Some(money(value, &currency)),
                    restock,
                    location_id,
                }),
            );
        }
        mapped
    }

    fn inventory_level(&self, level: &InventoryLevel) -> Mapped {
        let mut mapped = Mapped::default();
        let item = format!("inventory item {} at {}", level.inventory_item_id, level.location_id);
        let location = level.location_id.to_string();
        if self.echo_location.as_deref() == Some(location.as_str()) {
            mapped.ignore(
                item,
                "pushback_echo",
                format!("location {location} is where push-back sets availability"),
            );
            return mapped;
        }
        let Some(at) = time(&mut mapped, "inventory level", [&level.updated_at]) else { return mapped };
        let Some(sku) = self.inventory_items.get(&level.inventory_item_id.to_string()).cloned() else {
            mapped.refuse(
                item,
                "unmapped_inventory_item",
                format!("inventory item {} is not in [shopify.inventory_items]", level.inventory_item_id),
            );
            return mapped;
        };
        let Some(location_id) = self.locations.get(&location).cloned() else {
            mapped.refuse(
                item,
                "unmapped_location",
                format!("Shopify location {location} is not in [shopify.locations]"),
            );
            return mapped;
        };
        let Some(available) = level.available else {
            mapped.ignore(item, "untracked", "available is null: the item is not tracked at this location");
            return mapped;
        };
        if available < 0 {
            mapped.refuse(
                item,
                "negative_stock",
                format!("available {available} is below 0; a count cannot be"),
            );
            return mapped;
        }
        let (item, shopify_location) = (level.inventory_item_id, level.location_id);
        mapped.push_level(
            format!("shopify:inventory:{item}:{shopify_location}:{at}:{available}"),
            format!("inventory:{item}:{shopify_location}"),
            at,
            Body::StockCounted(StockCounted { sku, location_id, on_hand: available }),
        );
        mapped
    }

    fn product(&self, webhook_id: &str, product: &Product) -> Mapped {
        let mut mapped = Mapped::default();
        let Some(at) = time(&mut mapped, "product", [&product.updated_at]) else { return mapped };
        for variant in &product.variants {
            let item = format!("variant {}", variant.id);
            let Some(sku) = self.sku(&mut mapped, variant.sku.as_deref(), Some(variant.id), &item) else {
                continue;
            };
            let Some(price) = variant.price else {
                mapped.refuse(item, "missing_price", "the variant has no price");
                continue;
            };
            mapped.push(
                format!("shopify:webhook:{webhook_id}:variant:{}:price", variant.id),
                &self.channel,
                at,
                Body::PriceSet(PriceSet { sku, price: Some(money(price.0, &self.currency)) }),
            );
        }
        mapped
    }

    /// The line's SKU, else the configured SKU of its variant.
    fn known_sku(&self, sku: Option<&str>, variant: Option<u64>) -> Option<String> {
        non_empty(sku)
            .map(str::to_string)
            .or_else(|| variant.and_then(|v| self.variants.get(&v.to_string())).cloned())
    }

    /// The line's SKU, else the configured SKU of its variant, else a refusal.
    fn sku(
        &self,
        mapped: &mut Mapped,
        sku: Option<&str>,
        variant: Option<u64>,
        item: &str,
    ) -> Option<String> {
        if let Some(sku) = non_empty(sku) {
            return Some(sku.to_string());
        }
        match variant.and_then(|v| self.variants.get(&v.to_string())) {
            Some(sku) => Some(sku.clone()),
            None => {
                let variant = variant.map_or("none".to_string(), |v| v.to_string());
                mapped.refuse(
                    item,
                    "empty_sku",
                    format!("{item} has no SKU and its variant {variant} is not in [shopify.variants]"),
                );
                None
            }
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(topic: &str, body: &[u8]) -> Result<T, Malformed> {
    serde_json::from_slice(body).map_err(|e| Malformed::json(&format!("Shopify {topic}"), &e))
}

/// The first timestamp present, parsed; a refusal of the whole payload when none parses.
fn time<const N: usize>(mapped: &mut Mapped, what: &str, candidates: [&Option<String>; N]) -> Option<i64> {
    let text = candidates.iter().find_map(|c| c.as_deref());
    match text.and_then(parse_ms) {
        Some(ms) if ms > 0 => Some(ms),
        _ => {
            mapped.refuse(what, "bad_time", format!("{what} has no usable timestamp ({text:?})"));
            None
        }
    }
}

#[derive(Deserialize)]
struct Order {
    id: u64,
    currency: String,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    processed_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    cancelled_at: Option<String>,
    #[serde(default)]
    location_id: Option<u64>,
    line_items: Vec<LineItem>,
    #[serde(default)]
    refunds: Vec<OrderRefund>,
}

/// A refund as an order lists it: the quantities it took from each line.
#[derive(Deserialize)]
struct OrderRefund {
    #[serde(default)]
    refund_line_items: Vec<RefundedQuantity>,
}

#[derive(Deserialize)]
struct RefundedQuantity {
    line_item_id: u64,
    quantity: i64,
    #[serde(default)]
    restock_type: Option<String>,
}

/// The body of orders/edited.
#[derive(Deserialize)]
struct EditedOrder {
    order_edit: OrderEdit,
}

#[derive(Deserialize)]
struct OrderEdit {
    id: u64,
    order_id: u64,
    #[serde(default)]
    line_items: Option<LineChanges>,
}

#[derive(Deserialize)]
struct LineChanges {
    #[serde(default)]
    additions: Vec<LineDelta>,
    #[serde(default)]
    removals: Vec<LineDelta>,
}

#[derive(Deserialize)]
struct LineDelta {
    id: u64,
    delta: i64,
}

#[derive(Deserialize)]
struct LineItem {
    id: u64,
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    variant_id: Option<u64>,
    quantity: i64,
    /// The quantity less what edits and refunds removed (orders; absent before API 2023-01).
    #[serde(default)]
    current_quantity: Option<i64>,
    #[serde(default)]
    price: Option<Dec>,
    #[serde(default)]
    gift_card: bool,
    #[serde(default)]
    discount_allocations: Vec<DiscountAllocation>,
}

#[derive(Deserialize)]
struct DiscountAllocation {
    amount: Dec,
}

#[derive(Deserialize)]
struct Fulfillment {
    id: u64,
    order_id: u64,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    location_id: Option<u64>,
    line_items: Vec<LineItem>,
}

#[derive(Deserialize)]
struct Refund {
    id: u64,
    order_id: u64,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    processed_at: Option<String>,
    #[serde(default)]
    refund_line_items: Vec<RefundLine>,
}

#[derive(Deserialize)]
struct RefundLine {
    id: u64,
    line_item_id: u64,
    quantity: i64,
    #[serde(default)]
    location_id: Option<u64>,
    #[serde(default)]
    restock_type: Option<String>,
    #[serde(default)]
    subtotal: Option<Dec>,
    #[serde(default)]
    subtotal_set: Option<MoneySet>,
    #[serde(default)]
    line_item: Option<RefundedItem>,
}

#[derive(Deserialize)]
struct RefundedItem {
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    variant_id: Option<u64>,
}

#[derive(Deserialize)]
struct MoneySet {
    shop_money: ShopMoney,
}

#[derive(Deserialize)]
struct ShopMoney {
    amount: Dec,
    currency_code: String,
}

#[derive(Deserialize)]
struct InventoryLevel {
    inventory_item_id: u64,
    location_id: u64,
    #[serde(default)]
    available: Option<i64>,
    #[serde(default)]
    updated_at: Option<String>,
}

#[derive(Deserialize)]
struct Product {
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    variants: Vec<Variant>,
}

#[derive(Deserialize)]
struct Variant {
    id: u64,
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    price: Option<Dec>,
}

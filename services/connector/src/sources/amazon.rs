//! Amazon SP-API: notifications (ORDER_CHANGE, FBA_INVENTORY_AVAILABILITY_CHANGES,
//! ANY_OFFER_CHANGED, PRICING_HEALTH, LISTINGS_ITEM_MFN_QUANTITY_CHANGE), Orders API responses
//! (v0 getOrderItems and v2026-01-01 getOrder) and FBA "manage inventory" (MYI) reports.
//!
//! Notifications carry no signature; they are deduplicated on
//! `NotificationMetadata.NotificationId`. Offer and pricing events' ids start with it:
//! `amazon:notification:<id>:...`. Order facts use the order item:
//! `amazon:order:<order>:item:<item>:placed|cancelled`, and one event per shipped unit,
//! `...:shipped:<n>`, so that a later, larger QuantityShipped only adds the new units.
//!
//! Absolute levels follow the fact, not the notification, so that the same level notified
//! again under a new NotificationId is the same event:
//! `amazon:fba:<seller sku>:<marketplace>:<EventTime ms>:<Fulfillable>` and
//! `amazon:mfn:<seller sku>:<EventTime ms>:<Quantity>` (their payloads have no time of their
//! own; the envelope's EventTime, when the change happened, dates them). A level older than
//! the last one applied for its seller SKU and marketplace is ignored (`stale_level`,
//! [`LevelMarks`]); MYI report rows, which have no time at all, are marked by the file's
//! modification time (see [`AmazonMapping::map_myi_report`]).
//!
//! The source, built by [`source`] from [`AmazonSourceOptions`]: the receiver's two
//! [`Adapter`]s ([`AmazonNotifications`], [`AmazonOrderItems`]) and a watched directory of the
//! same payloads, either or both, stopped by one shutdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use omnifold_proto::{
    Body, CompetitorPriceObserved, OrderLineCancelled, OrderLinePlaced, OrderLineShipped, StockCounted,
};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{AmazonOptions, ConfigError, Secret};
use crate::decimal::{Dec, per_unit};
use crate::files::{DirSource, FileReport, FilesError};
use crate::http::{Adapter, Delivery, HttpSource, Intake, Refused, amazon_router, verify_bearer};
use crate::mapping::{Malformed, Mapped, money, money_if_positive, non_empty};
use crate::publish::{PublishError, Sink};
use crate::sources::levels::LevelMarks;
use crate::sources::{Shutdown, SourceError};
use crate::timefmt::parse_ms;

/// `omnifold-connector amazon`: the `[amazon]` section, and what the command line adds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmazonSourceOptions {
    pub amazon: AmazonOptions,
    /// Serve POST /amazon/notifications and /amazon/order-items on `amazon.listen`.
    #[serde(default = "serve_http")]
    pub http: bool,
    /// Also process the notification files (and MYI reports) dropped here.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(default = "poll_ms")]
    pub poll_ms: u64,
}

fn serve_http() -> bool {
    true
}

fn poll_ms() -> u64 {
    2000
}

/// The Amazon source: the receiver, the directory watcher, or both.
pub struct AmazonSource<S> {
    http: Option<HttpSource>,
    dir: Option<DirSource<AmazonMapping, S>>,
}

/// Builds what `options` ask for; each part publishes to a sink of its own from `open_sink`.
pub async fn source<S: Sink + 'static>(
    options: AmazonSourceOptions,
    mut open_sink: impl FnMut() -> Result<S, PublishError>,
) -> Result<AmazonSource<S>, SourceError> {
    let AmazonSourceOptions { amazon, http, dir, poll_ms } = options;
    let state = amazon.state.clone();
    let levels = tokio::task::spawn_blocking(move || LevelMarks::open_or_in_memory(state.as_deref()))
        .await
        .map_err(|e| ConfigError::Invalid(format!("cannot open the level state: {e}")))?
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    // the receiver and the directory share the marks
    let mapping = AmazonMapping { levels: Arc::new(levels), ..AmazonMapping::from_options(&amazon) };
    let dir = match dir {
        Some(dir) => {
            let poll = Duration::from_millis(poll_ms);
            Some(DirSource::open(dir, None, mapping.clone(), open_sink()?, poll).await?)
        }
        None => None,
    };
    let http = if http { Some(receiver(&amazon, mapping, open_sink()?)?) } else { None };
    Ok(AmazonSource { http, dir })
}

fn receiver<S: Sink + 'static>(
    amazon: &AmazonOptions,
    mapping: AmazonMapping,
    sink: S,
) -> Result<HttpSource, SourceError> {
    let token = amazon.token.as_ref().map(|t| t.load()).transpose()?;
    let intake = Intake::with_publish_timeout(sink, Duration::from_millis(amazon.publish_timeout_ms));
    let router = amazon_router(mapping, token, intake, amazon.max_body_bytes);
    let describe =
        format!("amazon notifications on POST {}, {}", AmazonNotifications::PATH, AmazonOrderItems::PATH);
    Ok(HttpSource::new(amazon.listen, router, describe))
}

impl<S: Sink + 'static> AmazonSource<S> {
    /// Processes the directory's files once (none without a directory).
    pub async fn run_once(&mut self) -> Result<Vec<FileReport>, FilesError> {
        match &mut self.dir {
            Some(dir) => dir.run_once().await,
            None => Ok(Vec::new()),
        }
    }

    /// Runs the receiver and the watcher until `shutdown`. Beside the receiver, a failing
    /// watcher is logged and the receiver goes on; a failing receiver stops the watcher.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), SourceError> {
        let shutdown = Shutdown::new(shutdown);
        match (self.http, self.dir) {
            (Some(http), Some(dir)) => serve_and_watch(http, dir, shutdown).await,
            (Some(http), None) => http.run(shutdown.wait()).await,
            (None, Some(dir)) => Ok(dir.run(shutdown.wait()).await?),
            (None, None) => Ok(()),
        }
    }
}

async fn serve_and_watch<S: Sink + 'static>(
    http: HttpSource,
    dir: DirSource<AmazonMapping, S>,
    shutdown: Shutdown,
) -> Result<(), SourceError> {
    let serving = async {
        let served = http.run(shutdown.clone().wait()).await;
        shutdown.trigger();
        served
    };
    let watching = async {
        if let Err(error) = dir.run(shutdown.clone().wait()).await {
            tracing::error!(%error, "amazon directory watcher stopped");
        }
    };
    tokio::join!(serving, watching).0
}

/// SP-API notifications on `POST /amazon/notifications` (e.g. relayed from SQS): no signature
/// of their own, so an optional bearer token; redeliveries told by their NotificationId.
pub struct AmazonNotifications {
    pub mapping: AmazonMapping,
    pub token: Option<Secret>,
}

impl Adapter for AmazonNotifications {
    const NAME: &'static str = "amazon";
    const PATH: &'static str = "/amazon/notifications";

    fn verify(&self, headers: &HeaderMap, _body: &[u8]) -> Result<(), Refused> {
        verify_bearer(headers, self.token.as_ref())
    }

    fn delivery(&self, _headers: &HeaderMap, body: &[u8]) -> Result<Delivery, Refused> {
        let id = notification_id(body).map_err(|malformed| Refused::bad_request("malformed", malformed.0))?;
        Ok(Delivery { topic: String::new(), id: Some(id) })
    }

    fn map(&self, _delivery: &Delivery, body: &[u8]) -> Result<Mapped, Malformed> {
        self.mapping.map_notification(body).map(|mapped| self.mapping.marked(mapped))
    }
}

/// Orders API responses on `POST /amazon/order-items`, v0 getOrderItems or v2026-01-01
/// getOrder ([`AmazonMapping::map_order_items`]): no delivery id; a getOrderItems response has
/// no time of its own but the time it is received.
pub struct AmazonOrderItems {
    pub mapping: AmazonMapping,
    pub token: Option<Secret>,
}

impl Adapter for AmazonOrderItems {
    const NAME: &'static str = "amazon";
    const PATH: &'static str = "/amazon/order-items";

    fn verify(&self, headers: &HeaderMap, _body: &[u8]) -> Result<(), Refused> {
        verify_bearer(headers, self.token.as_ref())
    }

    fn delivery(&self, _headers: &HeaderMap, _body: &[u8]) -> Result<Delivery, Refused> {
        Ok(Delivery::default())
    }

    fn map(&self, _delivery: &Delivery, body: &[u8]) -> Result<Mapped, Malformed> {
        self.mapping.map_order_items(body, omnifold_runtime::wall_clock_ms())
    }
}

/// How Amazon ids become contract ids; built from `[amazon]` of the connector config.
#[derive(Debug, Clone, Default)]
pub struct AmazonMapping {
    pub channel: String,
    pub default_marketplace: String,
    pub default_fulfillment_channel: String,
    pub fba_locations: BTreeMap<String, String>,
    pub mfn_location: Option<String>,
    pub mfn_quantity_location: Option<String>,
    pub asins: BTreeMap<String, String>,
    pub skus: BTreeMap<String, String>,
    /// The newest FBA, MFN and report level applied per seller SKU (and marketplace);
    /// [`Self::marked`] drops older ones. Clones share them.
    pub levels: Arc<LevelMarks>,
}

impl AmazonMapping {
    pub fn from_options(options: &AmazonOptions) -> Self {
        AmazonMapping {
            channel: options.channel.clone(),
            default_marketplace: options.default_marketplace.clone(),
            default_fulfillment_channel: options.default_fulfillment_channel.clone(),
            fba_locations: options.fba_locations.clone(),
            mfn_location: options.mfn_location.clone(),
            mfn_quantity_location: options.mfn_quantity_location.clone(),
            asins: options.asins.clone(),
            skus: options.skus.clone(),
            levels: Arc::default(),
        }
    }

    /// `mapped` without the levels older than the last applied for their seller SKU and
    /// marketplace (ignored, `stale_level`), the marks raised: what the source publishes.
    pub fn marked(&self, mut mapped: Mapped) -> Mapped {
        self.levels.apply(&mut mapped);
        mapped
    }

    /// Maps one notification (the full envelope).
    pub fn map_notification(&self, body: &[u8]) -> Result<Mapped, Malformed> {
        let envelope: Envelope =
            serde_json::from_slice(body).map_err(|e| Malformed::json("Amazon notification", &e))?;
        let id = envelope.id()?;
        let event_time = envelope.event_time.as_deref().and_then(parse_ms);
        let payload = envelope.payload.get();
        let kind = envelope.notification_type.as_str();
        let parse_error = |e: serde_json::Error| Malformed::new(format!("malformed {kind} payload: {e}"));
        Ok(match kind {
            "ORDER_CHANGE" => {
                let p: OrderChangePayload = serde_json::from_str(payload).map_err(parse_error)?;
                self.order_change(&p.order_change_notification, event_time)
            }
            "FBA_INVENTORY_AVAILABILITY_CHANGES" => {
                let p: FbaPayload = serde_json::from_str(payload).map_err(parse_error)?;
                self.fba_inventory(&id, &p, event_time)
            }
            "ANY_OFFER_CHANGED" => {
                let p: AnyOfferPayload = serde_json::from_str(payload).map_err(parse_error)?;
                self.any_offer_changed(&id, &p.any_offer_changed_notification, event_time)
            }
            "PRICING_HEALTH" => {
                let p: PricingHealthPayload = serde_json::from_str(payload).map_err(parse_error)?;
                self.pricing_health(&id, &p, event_time)
            }
            "LISTINGS_ITEM_MFN_QUANTITY_CHANGE" => {
                let p: MfnQuantityPayload = serde_json::from_str(payload).map_err(parse_error)?;
                self.mfn_quantity(&p, event_time)
            }
            other => {
                let mut mapped = Mapped::default();
                mapped.refuse(
                    format!("notification {id}"),
                    "unsupported_notification",
                    format!("notification type {other} is not mapped"),
                );
                mapped
            }
        })
    }

    /// Maps an Orders API response: a v2026-01-01 getOrder response (`{"order": ...}`, see
    /// [`Self::map_get_order`]) or a v0 getOrderItems response (`{"payload": ...}`). Both
    /// give the same ids for the same order items, so an order read once through each version
    /// is placed and shipped once.
    ///
    /// A getOrderItems response has no time of its own: `occurred_at` is our optional
    /// top-level `PurchaseDate`, else `received_at_ms`. With our optional top-level
    /// `OrderStatus` `Canceled` (from getOrders) every item is cancelled, dated by the
    /// top-level `LastUpdateDate`, as ORDER_CHANGE's Canceled does.
    pub fn map_order_items(&self, body: &[u8], received_at_ms: i64) -> Result<Mapped, Malformed> {
        #[derive(Deserialize)]
        struct Version {
            #[serde(default)]
            order: Option<serde::de::IgnoredAny>,
        }
        let version: Version =
            serde_json::from_slice(body).map_err(|e| Malformed::json("Amazon Orders API", &e))?;
        if version.order.is_some() {
            return self.map_get_order(body);
        }
        let response: OrderItemsResponse =
            serde_json::from_slice(body).map_err(|e| Malformed::json("Amazon getOrderItems", &e))?;
        let mut mapped = Mapped::default();
        let at = match &response.purchase_date {
            Some(text) => match parse_ms(text) {
                Some(ms) => ms,
                None => return Err(Malformed::new(format!("PurchaseDate {text:?} is not a date-time"))),
            },
            None => received_at_ms,
        };
        let order = &response.payload.amazon_order_id;
        let marketplace = response.marketplace_id.as_deref().unwrap_or(&self.default_marketplace);
        let fulfillment =
            response.fulfillment_channel.as_deref().unwrap_or(&self.default_fulfillment_channel);
        let location = self.fulfillment_location(fulfillment, marketplace);
        let cancelled_at = match (response.order_status.as_deref(), &response.last_update_date) {
            (Some("Canceled"), Some(text)) => match parse_ms(text) {
                Some(ms) => Some(ms.max(at)),
                None => return Err(Malformed::new(format!("LastUpdateDate {text:?} is not a date-time"))),
            },
            (Some("Canceled"), None) => Some(at),
            _ => None,
        };
        for item in &response.payload.order_items {
            let what = format!("order item {}", item.order_item_id);
            let Some(sku) = self.seller_sku(&mut mapped, item.seller_sku.as_deref(), &what) else { continue };
            if let Some(cancelled_at) = cancelled_at {
                // releases what the line has open if it was placed from an earlier read
                mapped.push(
                    format!("amazon:order:{order}:item:{}:cancelled", item.order_item_id),
                    &self.channel,
                    cancelled_at,
                    Body::OrderLineCancelled(OrderLineCancelled {
                        order_id: order.clone(),
                        line_id: item.order_item_id.clone(),
                        sku,
                    }),
                );
                continue;
            }
            if item.quantity_ordered <= 0 {
                mapped.ignore(what, "nothing_ordered", "QuantityOrdered is 0 (the item was cancelled)");
                continue;
            }
            let Some(price) = &item.item_price else {
                mapped.refuse(
                    what,
                    "missing_price",
                    "ItemPrice is absent (a pending order has no price yet)",
                );
                continue;
            };
            let currency = price.currency_code.as_str();
            // ItemPrice is the line's price: unit price x quantity (Orders API model).
            let (unit, rounding) = per_unit(price.amount.0, item.quantity_ordered);
            let promotion = item.promotion_discount.as_ref().map_or(Decimal::ZERO, |d| d.amount.0);
            let prefix = format!("amazon:order:{order}:item:{}", item.order_item_id);
            mapped.push(
                format!("{prefix}:placed"),
                &self.channel,
                at,
                Body::OrderLinePlaced(OrderLinePlaced {
                    order_id: order.clone(),
                    line_id: item.order_item_id.clone(),
                    sku: sku.clone(),
                    quantity: item.quantity_ordered,
                    unit_price: Some(money(unit, currency)),
                    discount: money_if_positive(promotion + rounding, currency),
                    channel_fee: None,
                    location_id: location.clone(),
                }),
            );
            self.shipped_units(
                &mut mapped,
                order,
                &item.order_item_id,
                &sku,
                item.quantity_shipped,
                &location,
                at,
            );
        }
        Ok(mapped)
    }

    /// Maps an Orders API v2026-01-01 getOrder response (`{"order": ...}`), the version that
    /// replaces v0. It dates the order (`createdTime`, the placements' time; shipments and
    /// cancellations take `lastUpdatedTime`), names its marketplace (`salesChannel`) and who
    /// fulfils it (`fulfillment.fulfilledBy`: `AMAZON` is FBA, `MERCHANT` MFN; without it
    /// `amazon.default_fulfillment_channel`). Per item: the unit price is `product.price.
    /// unitPrice` (not a line total as v0's ItemPrice), the discount the item part of the
    /// `DISCOUNT` proceeds (its `ITEM` detailed breakdown when there is one; the model does not
    /// say its sign, so its magnitude), the shipped units `fulfillment.quantityFulfilled`, one
    /// event each as for v0. An item whose cancellation was executed, or every item of a
    /// `CANCELLED` order, is cancelled; a buyer's cancellation request alone cancels nothing.
    /// Ask for `includedData` FULFILLMENT, PROCEEDS and CANCELLATION: without them there are
    /// no shipments, discounts or item cancellations to map.
    pub fn map_get_order(&self, body: &[u8]) -> Result<Mapped, Malformed> {
        let response: GetOrderResponse =
            serde_json::from_slice(body).map_err(|e| Malformed::json("Amazon getOrder 2026-01-01", &e))?;
        let order = &response.order;
        let date = |field: &str, text: &str| {
            parse_ms(text)
                .filter(|ms| *ms > 0)
                .ok_or_else(|| Malformed::new(format!("{field} {text:?} is not a date-time")))
        };
        let placed_at = date("createdTime", &order.created_time)?;
        let changed_at = match &order.last_updated_time {
            Some(text) => date("lastUpdatedTime", text)?.max(placed_at),
            None => placed_at,
        };
        let marketplace = order
            .sales_channel
            .as_ref()
            .and_then(|c| c.marketplace_id.as_deref())
            .unwrap_or(&self.default_marketplace);
        let fulfillment = order.fulfillment.as_ref();
        let fulfilled_by = match fulfillment.and_then(|f| f.fulfilled_by.as_deref()) {
            Some("AMAZON") => "AFN",
            Some("MERCHANT") => "MFN",
            _ => self.default_fulfillment_channel.as_str(),
        };
        let order_cancelled = fulfillment.and_then(|f| f.fulfillment_status.as_deref()) == Some("CANCELLED");
        let location = self.fulfillment_location(fulfilled_by, marketplace);
        let order_id = &order.order_id;
        let mut mapped = Mapped::default();
        for item in &order.order_items {
            let what = format!("order item {}", item.order_item_id);
            let Some(sku) = self.seller_sku(&mut mapped, item.product.seller_sku.as_deref(), &what) else {
                continue;
            };
            let cancellation = item.cancellation.as_ref();
            let cancelled =
                order_cancelled || cancellation.is_some_and(|c| c.cancellation_execution.is_some());
            let prefix = format!("amazon:order:{order_id}:item:{}", item.order_item_id);
            let price = item.product.price.as_ref().and_then(|p| p.unit_price.as_ref());
            match price {
                _ if item.quantity_ordered <= 0 => {
                    if !cancelled {
                        mapped.ignore(
                            what.clone(),
                            "nothing_ordered",
                            "quantityOrdered is 0 (the item was cancelled)",
                        );
                    }
                }
                // a cancelled item without a price was never placed: its cancel below is all
                None if cancelled => {}
                None => mapped.refuse(
                    what.clone(),
                    "missing_price",
                    "product.price.unitPrice is absent (a pending order has no price yet)",
                ),
                Some(price) => {
                    let currency = price.currency_code.as_str();
                    mapped.push(
                        format!("{prefix}:placed"),
                        &self.channel,
                        placed_at,
                        Body::OrderLinePlaced(OrderLinePlaced {
                            order_id: order_id.clone(),
                            line_id: item.order_item_id.clone(),
                            sku: sku.clone(),
                            quantity: item.quantity_ordered,
                            unit_price: Some(money(price.amount.0, currency)),
                            discount: money_if_positive(item.discount(), currency),
                            channel_fee: None,
                            location_id: location.clone(),
                        }),
                    );
                    let shipped = item.fulfillment.as_ref().map_or(0, |f| f.quantity_fulfilled);
                    let item_id = &item.order_item_id;
                    self.shipped_units(&mut mapped, order_id, item_id, &sku, shipped, &location, changed_at);
                }
            }
            if cancelled {
                // releases what the line still has open, also a line placed from an earlier read
                mapped.push(
                    format!("{prefix}:cancelled"),
                    &self.channel,
                    changed_at,
                    Body::OrderLineCancelled(OrderLineCancelled {
                        order_id: order_id.clone(),
                        line_id: item.order_item_id.clone(),
                        sku,
                    }),
                );
            } else if cancellation.is_some_and(|c| c.cancellation_request.is_some()) {
                mapped.ignore(
                    what,
                    "cancel_not_confirmed",
                    "the buyer requested a cancellation; the cancel comes when it is executed",
                );
            }
        }
        Ok(mapped)
    }

    /// One OrderLineShipped per shipped unit, numbered, so that repeats are deduplicated.
    #[allow(clippy::too_many_arguments)]
    fn shipped_units(
        &self,
        mapped: &mut Mapped,
        order: &str,
        item: &str,
        sku: &str,
        shipped: i64,
        location: &Option<String>,
        at: i64,
    ) {
        if shipped <= 0 {
            return;
        }
        let Some(location) = location else {
            mapped.refuse(
                format!("order item {item}"),
                "missing_location",
                "shipped units but no location: set amazon.fba_locations for the marketplace or amazon.mfn_location",
            );
            return;
        };
        for unit in 1..=shipped {
            mapped.push(
                format!("amazon:order:{order}:item:{item}:shipped:{unit}"),
                &self.channel,
                at,
                Body::OrderLineShipped(OrderLineShipped {
                    order_id: order.to_string(),
                    line_id: item.to_string(),
                    sku: sku.to_string(),
                    quantity: 1,
                    location_id: location.clone(),
                    fulfillment_cost: None,
                }),
            );
        }
    }

    fn fulfillment_location(&self, fulfillment: &str, marketplace: &str) -> Option<String> {
        match fulfillment {
            "AFN" => self.fba_locations.get(marketplace).cloned(),
            _ => self.mfn_location.clone(),
        }
    }

    fn order_change(&self, change: &OrderChange, event_time: Option<i64>) -> Mapped {
        let mut mapped = Mapped::default();
        let order = &change.amazon_order_id;
        let what = format!("order {order}");
        let Some(at) =
            change.trigger.as_ref().and_then(|t| t.time.as_deref()).and_then(parse_ms).or(event_time)
        else {
            mapped.refuse(what, "bad_time", "neither TimeOfOrderChange nor EventTime is a date-time");
            return mapped;
        };
        let Some(summary) = &change.summary else {
            mapped.ignore(what, "no_summary", "the notification has no order summary");
            return mapped;
        };
        let status = summary.order_status.as_deref().unwrap_or("");
        if status == "Canceled" {
            for item in &summary.order_items {
                let what = format!("order item {}", item.order_item_id);
                let Some(sku) = self.seller_sku(&mut mapped, item.seller_sku.as_deref(), &what) else {
                    continue;
                };
                mapped.push(
                    format!("amazon:order:{order}:item:{}:cancelled", item.order_item_id),
                    &self.channel,
                    at,
                    Body::OrderLineCancelled(OrderLineCancelled {
                        order_id: order.clone(),
                        line_id: item.order_item_id.clone(),
                        sku,
                    }),
                );
            }
            return mapped;
        }
        let fulfillment = match summary.fulfillment_type.as_deref() {
            Some("AFN") => "AFN",
            _ => "MFN",
        };
        let marketplace = summary.marketplace_id.as_deref().unwrap_or(&self.default_marketplace);
        let location = self.fulfillment_location(fulfillment, marketplace);
        let mut shipped_any = false;
        for item in &summary.order_items {
            if item.quantity_shipped <= 0 {
                continue;
            }
            let what = format!("order item {}", item.order_item_id);
            let Some(sku) = self.seller_sku(&mut mapped, item.seller_sku.as_deref(), &what) else { continue };
            self.shipped_units(
                &mut mapped,
                order,
                &item.order_item_id,
                &sku,
                item.quantity_shipped,
                &location,
                at,
            );
            shipped_any = true;
        }
        if !shipped_any {
            let reason = change.trigger.as_ref().and_then(|t| t.reason.clone()).unwrap_or_default();
            let requested_cancel = reason.to_lowercase().contains("cancel")
                || summary.order_items.iter().any(|i| i.is_buyer_requested_cancel == Some(true));
            if requested_cancel {
                mapped.ignore(
                    what,
                    "cancel_not_confirmed",
                    format!("{reason:?} with status {status}: a request, not a cancellation; the cancel comes when the order is Canceled"),
                );
            } else {
                mapped.ignore(
                    what,
                    "no_prices",
                    format!(
                        "status {status}: ORDER_CHANGE carries no prices; placements come from the Orders API"
                    ),
                );
            }
        }
        mapped
    }

    fn fba_inventory(&self, id: &str, payload: &FbaPayload, event_time: Option<i64>) -> Mapped {
        let mut mapped = Mapped::default();
        let Some(at) = event_time else {
            mapped.refuse(
                format!("notification {id}"),
                "bad_time",
                "EventTime is missing or not a date-time",
            );
            return mapped;
        };
        let what = format!("SKU {}", payload.sku);
        let Some(sku) = self.seller_sku(&mut mapped, Some(&payload.sku), &what) else { return mapped };
        for market in &payload.by_marketplace {
            let what = format!("{what} in {}", market.marketplace_id);
            let Some(location_id) = self.fba_locations.get(&market.marketplace_id).cloned() else {
                mapped.refuse(
                    what,
                    "unmapped_marketplace",
                    format!("marketplace {} is not in [amazon.fba_locations]", market.marketplace_id),
                );
                continue;
            };
            let on_hand = market.inventory.fulfillable;
            if on_hand < 0 {
                mapped.refuse(what, "negative_stock", format!("Fulfillable {on_hand} is below 0"));
                continue;
            }
            let (seller_sku, marketplace) = (&payload.sku, &market.marketplace_id);
            mapped.push_level(
                format!("amazon:fba:{seller_sku}:{marketplace}:{at}:{on_hand}"),
                format!("fba:{seller_sku}:{marketplace}"),
                at,
                Body::StockCounted(StockCounted { sku: sku.clone(), location_id, on_hand }),
            );
        }
        mapped
    }

    fn any_offer_changed(&self, id: &str, change: &AnyOfferChanged, event_time: Option<i64>) -> Mapped {
        let mut mapped = Mapped::default();
        let trigger = &change.trigger;
        let Some(at) = trigger.time.as_deref().and_then(parse_ms).or(event_time) else {
            mapped.refuse(
                format!("notification {id}"),
                "bad_time",
                "neither TimeOfOfferChange nor EventTime is a date-time",
            );
            return mapped;
        };
        let Some(sku) = self.asin_sku(&mut mapped, &trigger.asin) else { return mapped };
        for offer in &change.offers {
            if change.seller_id.as_deref() == Some(offer.seller_id.as_str()) {
                mapped.ignore(
                    format!("offer of {}", offer.seller_id),
                    "own_offer",
                    "our own offer is not a competitor",
                );
                continue;
            }
            let Some(price) = &offer.listing_price else {
                mapped.refuse(
                    format!("offer of {}", offer.seller_id),
                    "missing_price",
                    "the offer has no ListingPrice",
                );
                continue;
            };
            mapped.push(
                format!("amazon:notification:{id}:offer:{}", offer.seller_id),
                &self.channel,
                at,
                Body::CompetitorPriceObserved(CompetitorPriceObserved {
                    sku: sku.clone(),
                    competitor: format!("seller:{}", offer.seller_id),
                    price: Some(money(price.amount.0, &price.currency_code)),
                }),
            );
        }
        let condition = trigger.item_condition.as_deref().unwrap_or("new");
        for buy_box in change.summary.iter().flat_map(|s| &s.buy_box_prices) {
            if !buy_box.condition.eq_ignore_ascii_case(condition) {
                continue;
            }
            if let Some(price) = &buy_box.listing_price {
                self.buy_box(&mut mapped, id, &sku, &buy_box.condition, price, at);
            }
        }
        mapped
    }

    fn pricing_health(&self, id: &str, health: &PricingHealthPayload, event_time: Option<i64>) -> Mapped {
        let mut mapped = Mapped::default();
        let trigger = &health.offer_change_trigger;
        let Some(at) = trigger.time.as_deref().and_then(parse_ms).or(event_time) else {
            mapped.refuse(
                format!("notification {id}"),
                "bad_time",
                "neither timeOfOfferChange nor eventTime is a date-time",
            );
            return mapped;
        };
        let Some(sku) = self.asin_sku(&mut mapped, &trigger.asin) else { return mapped };
        let condition = trigger.item_condition.as_deref().unwrap_or("new");
        for buy_box in health.summary.iter().flat_map(|s| &s.buy_box_prices) {
            if !buy_box.condition.eq_ignore_ascii_case(condition) {
                continue;
            }
            if let Some(price) = &buy_box.listing_price {
                self.buy_box(&mut mapped, id, &sku, &buy_box.condition, price, at);
            }
        }
        mapped
    }

    fn buy_box(&self, mapped: &mut Mapped, id: &str, sku: &str, condition: &str, price: &AmzMoney, at: i64) {
        mapped.push(
            format!("amazon:notification:{id}:buybox:{}", condition.to_lowercase()),
            &self.channel,
            at,
            Body::CompetitorPriceObserved(CompetitorPriceObserved {
                sku: sku.to_string(),
                competitor: "buybox".to_string(),
                price: Some(money(price.amount.0, &price.currency_code)),
            }),
        );
    }

    fn mfn_quantity(&self, payload: &MfnQuantityPayload, event_time: Option<i64>) -> Mapped {
        let mut mapped = Mapped::default();
        let what = format!("SKU {}", payload.sku);
        let Some(location_id) = self.mfn_quantity_location.clone() else {
            mapped.ignore(
                what,
                "mfn_quantity_not_counted",
                "amazon.mfn_quantity_location is not set (push-back echo)",
            );
            return mapped;
        };
        if payload.fulfillment_channel_code.as_deref().is_some_and(|c| c != "DEFAULT") {
            mapped.ignore(what, "not_mfn", "only the DEFAULT (merchant) fulfillment channel is counted");
            return mapped;
        }
        let Some(at) = event_time else {
            mapped.refuse(what, "bad_time", "EventTime is missing or not a date-time");
            return mapped;
        };
        let Some(sku) = self.seller_sku(&mut mapped, Some(&payload.sku), &what) else { return mapped };
        if payload.quantity < 0 {
            mapped.refuse(what, "negative_stock", format!("Quantity {} is below 0", payload.quantity));
            return mapped;
        }
        let (seller_sku, on_hand) = (&payload.sku, payload.quantity);
        mapped.push_level(
            format!("amazon:mfn:{seller_sku}:{at}:{on_hand}"),
            format!("mfn:{seller_sku}"),
            at,
            Body::StockCounted(StockCounted { sku, location_id, on_hand }),
        );
        mapped
    }

    /// Maps an FBA MYI report (`GET_FBA_MYI_UNSUPPRESSED_INVENTORY_DATA`, tab-separated):
    /// StockCounted{sku, the marketplace's FBA location, afn-fulfillable-quantity} per row.
    ///
    /// The report has no timestamp, neither per row nor for the whole (its creation time is in
    /// the Reports API's metadata, not in the document). So the ids follow the report's
    /// content: `report_id` names it (the file's SHA-256, so the same report dropped again
    /// under any name maps to the same ids, which the coordinator ignores), and the row its
    /// line, `amazon:myi:<report>:line:<n>`. `at` dates the rows: the file's modification time.
    /// The rows are marked per seller SKU and marketplace on that time apart from the FBA
    /// notifications (a file's time is when it was written, not when Amazon counted): a report
    /// file older than the last one applied is ignored (`stale_level`); a new file of an old
    /// report cannot be told from a new report.
    pub fn map_myi_report(&self, text: &str, report_id: &str, at: i64, marketplace: Option<&str>) -> Mapped {
        let mut mapped = Mapped::default();
        let marketplace = marketplace.unwrap_or(&self.default_marketplace);
        let Some(location_id) = self.fba_locations.get(marketplace).cloned() else {
            mapped.refuse(
                "report",
                "unmapped_marketplace",
                format!("marketplace {marketplace} is not in [amazon.fba_locations]"),
            );
            return mapped;
        };
        let mut lines = text.lines().enumerate();
        let Some((_, header)) = lines.next() else { return mapped };
        let columns: Vec<&str> = header.split('\t').map(str::trim).collect();
        let find = |name: &str| columns.iter().position(|c| *c == name);
        let (Some(sku_col), Some(qty_col)) = (find("sku"), find("afn-fulfillable-quantity")) else {
            mapped.refuse("header", "bad_header", "the report has no sku or afn-fulfillable-quantity column");
            return mapped;
        };
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let row = format!("line {}", i + 1);
            let cells: Vec<&str> = line.split('\t').collect();
            let Some(sku) = self.seller_sku(&mut mapped, cells.get(sku_col).copied(), &row) else { continue };
            let Some(on_hand) =
                cells.get(qty_col).and_then(|q| q.trim().parse::<i64>().ok()).filter(|q| *q >= 0)
            else {
                mapped.refuse(row, "bad_quantity", "afn-fulfillable-quantity is not a whole number >= 0");
                continue;
            };
            let seller_sku = cells.get(sku_col).map_or("", |s| s.trim());
            mapped.push_level(
                format!("amazon:myi:{report_id}:line:{}", i + 1),
                format!("myi:{seller_sku}:{marketplace}"),
                at,
                Body::StockCounted(StockCounted { sku, location_id: location_id.clone(), on_hand }),
            );
        }
        mapped
    }

    fn seller_sku(&self, mapped: &mut Mapped, sku: Option<&str>, what: &str) -> Option<String> {
        match non_empty(sku) {
            Some(sku) => Some(self.skus.get(sku).cloned().unwrap_or_else(|| sku.to_string())),
            None => {
                mapped.refuse(what, "empty_sku", format!("{what} has no seller SKU"));
                None
            }
        }
    }

    fn asin_sku(&self, mapped: &mut Mapped, asin: &str) -> Option<String> {
        let sku = self.asins.get(asin).cloned();
        if sku.is_none() {
            mapped.refuse(
                format!("ASIN {asin}"),
                "unmapped_asin",
                format!("ASIN {asin} is not in [amazon.asins]"),
            );
        }
        sku
    }
}

/// The NotificationId of a notification body, the deduplication key.
pub fn notification_id(body: &[u8]) -> Result<String, Malformed> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| Malformed::json("Amazon notification", &e))?;
    envelope.id()
}

/// Whether a JSON body is a notification (else it is taken as a getOrderItems response).
pub fn is_notification(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "NotificationType", alias = "notificationType")]
        _kind: String,
    }
    serde_json::from_slice::<Probe>(body).is_ok()
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "NotificationType", alias = "notificationType")]
    notification_type: String,
    #[serde(rename = "EventTime", alias = "eventTime", default)]
    event_time: Option<String>,
    #[serde(rename = "NotificationMetadata", alias = "notificationMetadata", default)]
    metadata: Option<Metadata>,
    #[serde(rename = "Payload", alias = "payload")]
    payload: Box<RawValue>,
}

impl Envelope {
    fn id(&self) -> Result<String, Malformed> {
        self.metadata
            .as_ref()
            .map(|m| m.notification_id.trim().to_string())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Malformed::new("NotificationMetadata.NotificationId is missing"))
    }
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(rename = "NotificationId", alias = "notificationId")]
    notification_id: String,
}

#[derive(Deserialize)]
struct AmzMoney {
    #[serde(rename = "Amount", alias = "amount")]
    amount: Dec,
    #[serde(rename = "CurrencyCode", alias = "currencyCode")]
    currency_code: String,
}

#[derive(Deserialize)]
struct OrderChangePayload {
    #[serde(rename = "OrderChangeNotification")]
    order_change_notification: OrderChange,
}

#[derive(Deserialize)]
struct OrderChange {
    #[serde(rename = "AmazonOrderId")]
    amazon_order_id: String,
    #[serde(rename = "OrderChangeTrigger", default)]
    trigger: Option<OrderChangeTrigger>,
    #[serde(rename = "Summary", default)]
    summary: Option<OrderSummary>,
}

#[derive(Deserialize)]
struct OrderChangeTrigger {
    #[serde(rename = "TimeOfOrderChange", default)]
    time: Option<String>,
    #[serde(rename = "ChangeReason", default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct OrderSummary {
    #[serde(rename = "MarketplaceId", default)]
    marketplace_id: Option<String>,
    #[serde(rename = "OrderStatus", default)]
    order_status: Option<String>,
    #[serde(rename = "FulfillmentType", default)]
    fulfillment_type: Option<String>,
    #[serde(rename = "OrderItems", default)]
    order_items: Vec<ChangedItem>,
}

#[derive(Deserialize)]
struct ChangedItem {
    #[serde(rename = "OrderItemId")]
    order_item_id: String,
    #[serde(rename = "SellerSKU", default)]
    seller_sku: Option<String>,
    #[serde(rename = "QuantityShipped", default)]
    quantity_shipped: i64,
    #[serde(rename = "IsBuyerRequestedCancel", default)]
    is_buyer_requested_cancel: Option<bool>,
}

#[derive(Deserialize)]
struct FbaPayload {
    #[serde(rename = "SKU")]
    sku: String,
    #[serde(rename = "FulfillmentInventoryByMarketplace", default)]
    by_marketplace: Vec<FbaMarketplace>,
}

#[derive(Deserialize)]
struct FbaMarketplace {
    #[serde(rename = "MarketplaceId")]
    marketplace_id: String,
    #[serde(rename = "FulfillmentInventory")]
    inventory: FbaInventory,
}

#[derive(Deserialize)]
struct FbaInventory {
    #[serde(rename = "Fulfillable")]
    fulfillable: i64,
}

#[derive(Deserialize)]
struct AnyOfferPayload {
    #[serde(rename = "AnyOfferChangedNotification")]
    any_offer_changed_notification: AnyOfferChanged,
}

#[derive(Deserialize)]
struct AnyOfferChanged {
    #[serde(rename = "SellerId", default)]
    seller_id: Option<String>,
    #[serde(rename = "OfferChangeTrigger")]
    trigger: OfferTrigger,
    #[serde(rename = "Summary", default)]
    summary: Option<OfferSummary>,
    #[serde(rename = "Offers", default)]
    offers: Vec<Offer>,
}

#[derive(Deserialize)]
struct OfferTrigger {
    #[serde(rename = "ASIN", alias = "asin")]
    asin: String,
    #[serde(rename = "ItemCondition", alias = "itemCondition", default)]
    item_condition: Option<String>,
    #[serde(rename = "TimeOfOfferChange", alias = "timeOfOfferChange", default)]
    time: Option<String>,
}

#[derive(Deserialize)]
struct OfferSummary {
    #[serde(rename = "BuyBoxPrices", alias = "buyBoxPrices", default)]
    buy_box_prices: Vec<BuyBoxPrice>,
}

#[derive(Deserialize)]
struct BuyBoxPrice {
    #[serde(rename = "Condition", alias = "condition")]
    condition: String,
    #[serde(rename = "ListingPrice", alias = "listingPrice", default)]
    listing_price: Option<AmzMoney>,
}

#[derive(Deserialize)]
struct Offer {
    #[serde(rename = "SellerId")]
    seller_id: String,
    #[serde(rename = "ListingPrice", default)]
    listing_price: Option<AmzMoney>,
}

#[derive(Deserialize)]
struct PricingHealthPayload {
    #[serde(rename = "offerChangeTrigger")]
    offer_change_trigger: OfferTrigger,
    #[serde(default)]
    summary: Option<OfferSummary>,
}

#[derive(Deserialize)]
struct MfnQuantityPayload {
    #[serde(rename = "Sku")]
    sku: String,
    #[serde(rename = "Quantity")]
    quantity: i64,
    #[serde(rename = "FulfillmentChannelCode", default)]
    fulfillment_channel_code: Option<String>,
}

#[derive(Deserialize)]
struct OrderItemsResponse {
    payload: OrderItemsPayload,
    /// Not part of getOrderItems: an optional addition from getOrder, to date the order.
    #[serde(rename = "PurchaseDate", default)]
    purchase_date: Option<String>,
    /// Not part of getOrderItems: `AFN` or `MFN` from getOrder.
    #[serde(rename = "FulfillmentChannel", default)]
    fulfillment_channel: Option<String>,
    /// Not part of getOrderItems: the order's marketplace from getOrder.
    #[serde(rename = "MarketplaceId", default)]
    marketplace_id: Option<String>,
    /// Not part of getOrderItems: the order's status from getOrders/getOrder; `Canceled`
    /// cancels every item.
    #[serde(rename = "OrderStatus", default)]
    order_status: Option<String>,
    /// Not part of getOrderItems: when the order last changed, which dates a cancellation.
    #[serde(rename = "LastUpdateDate", default)]
    last_update_date: Option<String>,
}

/// Orders API v2026-01-01 `GetOrderResponse`: the fields mapped.
#[derive(Deserialize)]
struct GetOrderResponse {
    order: Order2026,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Order2026 {
    order_id: String,
    created_time: String,
    #[serde(default)]
    last_updated_time: Option<String>,
    #[serde(default)]
    sales_channel: Option<SalesChannel2026>,
    #[serde(default)]
    fulfillment: Option<OrderFulfillment2026>,
    order_items: Vec<OrderItem2026>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SalesChannel2026 {
    #[serde(default)]
    marketplace_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderFulfillment2026 {
    #[serde(default)]
    fulfillment_status: Option<String>,
    #[serde(default)]
    fulfilled_by: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderItem2026 {
    order_item_id: String,
    quantity_ordered: i64,
    product: ItemProduct2026,
    #[serde(default)]
    proceeds: Option<ItemProceeds2026>,
    #[serde(default)]
    cancellation: Option<ItemCancellation2026>,
    #[serde(default)]
    fulfillment: Option<ItemFulfillment2026>,
}

impl OrderItem2026 {
    /// The item part of the DISCOUNT proceeds, as a positive amount.
    fn discount(&self) -> Decimal {
        let breakdowns = self.proceeds.iter().flat_map(|p| &p.breakdowns);
        breakdowns
            .filter(|b| b.kind == "DISCOUNT")
            .map(|b| {
                if b.detailed_breakdowns.is_empty() {
                    return b.subtotal.amount.0.abs();
                }
                let items = b.detailed_breakdowns.iter().filter(|d| d.subtype.as_deref() == Some("ITEM"));
                items.filter_map(|d| d.value.as_ref()).map(|v| v.amount.0.abs()).sum()
            })
            .sum()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemProduct2026 {
    #[serde(default)]
    seller_sku: Option<String>,
    #[serde(default)]
    price: Option<ItemPrice2026>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemPrice2026 {
    #[serde(default)]
    unit_price: Option<AmzMoney>,
}

#[derive(Deserialize)]
struct ItemProceeds2026 {
    #[serde(default)]
    breakdowns: Vec<ProceedsBreakdown2026>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProceedsBreakdown2026 {
    #[serde(rename = "type")]
    kind: String,
    subtotal: AmzMoney,
    #[serde(default)]
    detailed_breakdowns: Vec<DetailedBreakdown2026>,
}

#[derive(Deserialize)]
struct DetailedBreakdown2026 {
    #[serde(default)]
    subtype: Option<String>,
    #[serde(default)]
    value: Option<AmzMoney>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemCancellation2026 {
    #[serde(default)]
    cancellation_request: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    cancellation_execution: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemFulfillment2026 {
    #[serde(default)]
    quantity_fulfilled: i64,
}

#[derive(Deserialize)]
struct OrderItemsPayload {
    #[serde(rename = "AmazonOrderId")]
    amazon_order_id: String,
    #[serde(rename = "OrderItems")]
    order_items: Vec<OrderItem>,
}

#[derive(Deserialize)]
struct OrderItem {
    #[serde(rename = "OrderItemId")]
    order_item_id: String,
    #[serde(rename = "SellerSKU", default)]
    seller_sku: Option<String>,
    #[serde(rename = "QuantityOrdered")]
    quantity_ordered: i64,
    #[serde(rename = "QuantityShipped", default)]
    quantity_shipped: i64,
    #[serde(rename = "ItemPrice", default)]
    item_price: Option<AmzMoney>,
    #[serde(rename = "PromotionDiscount", default)]
    promotion_discount: Option<AmzMoney>,
}

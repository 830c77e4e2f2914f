//! The Amazon SP-API pull client (`omnifold-connector amazon-poll`): orders read from the
//! Orders API v0, since notifications carry no order items.
//!
//! It polls `GET /orders/v0/orders` by `MarketplaceIds`, `LastUpdatedAfter` and
//! `LastUpdatedBefore` in windows, following `payload.NextToken`, and per order (unless its
//! `LastUpdateDate` was published already, or it is still `Pending`, without prices) all
//! pages of `GET /orders/v0/orders/{id}/orderItems` (`payload.OrderItems`,
//! `payload.NextToken`). The items go through the mapping of `POST /amazon/order-items`,
//! [`AmazonMapping::map_order_items`], as one getOrderItems body with the order's
//! `PurchaseDate`, `FulfillmentChannel`, `MarketplaceId`, `OrderStatus` and `LastUpdateDate`
//! beside it, so the ids are the receiver's: `amazon:order:<order>:item:<item>:placed`,
//! `...:shipped:<n>`, `...:cancelled`.
//!
//! A window ends `settle_ms` before now (Amazon wants `LastUpdatedBefore` two minutes in the
//! past) and covers at most `max_window_ms`; its end becomes the checkpoint once every order
//! in it is published and acknowledged ([`checkpoint`]). Requests are rate-limited per
//! operation and retried ([`client`]); the access token comes from an LWA refresh token
//! ([`lwa`]). Secrets come from the config's `{ env }` or `{ file }`, never the command line,
//! and are never logged.

pub mod checkpoint;
pub mod client;
pub mod limiter;
pub mod lwa;

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use self::checkpoint::{Checkpoints, OrderMark};
use self::client::{Client, ClientStats, Retry};
use self::limiter::{GET_ORDER_ITEMS, GET_ORDERS};
use self::lwa::Credentials;
use crate::amazon::AmazonMapping;
use crate::config::{AmazonOptions, ConfigError, SpApiOptions};
use crate::deliver::{count_ignored, count_rejection, deliver};
use crate::publish::{PublishError, Sink};
use crate::pushback::encode_path;
use crate::timefmt::{format_ms, parse_ms};

const ADAPTER: &str = "amazon";

/// Why the poller could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpApiError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the connector config has no [amazon.sp_api]")]
    NotConfigured,
    #[error("amazon.sp_api.start_after is needed: the state has no checkpoint yet")]
    NoStart,
    #[error("lwa: {0}")]
    Auth(String),
    #[error("{operation}: {error}")]
    Http { operation: &'static str, error: String },
    #[error("{operation} answered {status}: {body}")]
    Status { operation: &'static str, status: u16, body: String },
    #[error("{operation} failed {attempts} times, last: {last}")]
    GaveUp { operation: &'static str, attempts: u32, last: String },
    #[error("{operation}: the answer is not what the API documents: {error}")]
    Json { operation: &'static str, error: String },
    #[error("the poller's state: {0}")]
    State(String),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// What a run of windows came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    pub windows: usize,
    /// Orders listed by getOrders.
    pub orders: usize,
    /// Orders listed again with a `LastUpdateDate` already published: not read again.
    pub unchanged: usize,
    pub published: usize,
    pub refused: usize,
    pub ignored: usize,
}

/// The poller; built by [`source`].
pub struct AmazonPoll<S> {
    options: SpApiOptions,
    mapping: AmazonMapping,
    client: Client,
    store: Checkpoints,
    sink: S,
}

/// Builds the poller of `[amazon]` and its `[amazon.sp_api]`: secrets loaded, its store open.
pub async fn source<S: Sink>(amazon: AmazonOptions, sink: S) -> Result<AmazonPoll<S>, SpApiError> {
    let options = amazon.sp_api.clone().ok_or(SpApiError::NotConfigured)?;
    let credentials = Credentials {
        token_url: options.token_url.clone(),
        client_id: options.client_id.clone(),
        client_secret: options.client_secret.load()?,
        refresh_token: options.refresh_token.load()?,
    };
    let plans = HashMap::from([("getOrders", GET_ORDERS), ("getOrderItems", GET_ORDER_ITEMS)]);
    let retry = Retry {
        max_retries: options.max_retries,
        initial_backoff: Duration::from_millis(options.initial_backoff_ms),
        max_backoff: Duration::from_millis(options.max_backoff_ms),
    };
    let timeout = Duration::from_millis(options.request_timeout_ms);
    let client = Client::new(&options.endpoint, credentials, plans, retry, timeout)?;
    let path = options.state.clone();
    let store = tokio::task::spawn_blocking(move || Checkpoints::open(&path))
        .await
        .map_err(|e| SpApiError::State(e.to_string()))??;
    Ok(AmazonPoll { mapping: AmazonMapping::from_options(&amazon), options, client, store, sink })
}

#[derive(Deserialize)]
struct OrdersAnswer {
    payload: OrdersPayload,
}

#[derive(Deserialize)]
struct OrdersPayload {
    #[serde(rename = "Orders", default)]
    orders: Vec<OrderSummary>,
    #[serde(rename = "NextToken", default)]
    next_token: Option<String>,
}

/// The getOrders fields the mapping needs.
#[derive(Deserialize)]
struct OrderSummary {
    #[serde(rename = "AmazonOrderId")]
    amazon_order_id: String,
    #[serde(rename = "LastUpdateDate")]
    last_update_date: String,
    #[serde(rename = "PurchaseDate", default)]
    purchase_date: Option<String>,
    #[serde(rename = "OrderStatus", default)]
    order_status: Option<String>,
    #[serde(rename = "FulfillmentChannel", default)]
    fulfillment_channel: Option<String>,
    #[serde(rename = "MarketplaceId", default)]
    marketplace_id: Option<String>,
}

#[derive(Deserialize)]
struct ItemsAnswer {
    payload: ItemsPayload,
}

#[derive(Deserialize)]
struct ItemsPayload {
    #[serde(rename = "OrderItems", default)]
    order_items: Vec<Value>,
    #[serde(rename = "NextToken", default)]
    next_token: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(operation: &'static str, value: Value) -> Result<T, SpApiError> {
    serde_json::from_value(value).map_err(|e| SpApiError::Json { operation, error: e.to_string() })
}

impl<S: Sink> AmazonPoll<S> {
    /// The end of the last window polled completely (Unix ms).
    pub fn checkpoint(&self) -> Result<Option<i64>, SpApiError> {
        self.store.checkpoint()
    }

    pub fn client_stats(&self) -> ClientStats {
        self.client.stats()
    }

    /// Polls window after window until the last ends `settle_ms` before now.
    pub async fn run_once(&mut self) -> Result<PollReport, SpApiError> {
        let mut report = PollReport::default();
        let start_after = self.options.start_after.as_deref().and_then(parse_ms);
        let mut start = self.store.checkpoint()?.or(start_after).ok_or(SpApiError::NoStart)?;
        let end = omnifold_runtime::wall_clock_ms() - self.options.settle_ms as i64;
        while start < end {
            let before = end.min(start.saturating_add(self.options.max_window_ms as i64));
            let after = start - self.options.overlap_ms as i64;
            self.window(after, before, &mut report).await?;
            self.store.advance(before).await?;
            tracing::info!(
                after = %format_ms(after),
                before = %format_ms(before),
                orders = report.orders,
                published = report.published,
                "amazon orders polled up to the checkpoint"
            );
            report.windows += 1;
            start = before;
        }
        Ok(report)
    }

    /// Polls until `shutdown`, every `poll_interval_ms`. A failed poll (the API or the broker
    /// unreachable after the retries) is logged and tried again at the next one, from the
    /// checkpoint; a broken store stops the poller.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), SpApiError> {
        tokio::pin!(shutdown);
        let interval = Duration::from_millis(self.options.poll_interval_ms);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                polled = self.run_once() => match polled {
                    Ok(report) => tracing::debug!(?report, "amazon poll done"),
                    Err(error @ SpApiError::State(_)) => return Err(error),
                    Err(error) => tracing::error!(%error, "amazon poll failed; trying again from the checkpoint"),
                },
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Every page of getOrders for one window, each order published.
    async fn window(&mut self, after: i64, before: i64, report: &mut PollReport) -> Result<(), SpApiError> {
        let marketplaces: Vec<String> = self.options.marketplace_ids.iter().map(|m| encode_path(m)).collect();
        let marketplaces = marketplaces.join(",");
        let mut next: Option<String> = None;
        loop {
            let query = match &next {
                None => format!(
                    "MarketplaceIds={marketplaces}&LastUpdatedAfter={}&LastUpdatedBefore={}&MaxResultsPerPage=100",
                    encode_path(&format_ms(after)),
                    encode_path(&format_ms(before)),
                ),
                Some(token) => format!("MarketplaceIds={marketplaces}&NextToken={}", encode_path(token)),
            };
            let answer = self.client.get("getOrders", &format!("/orders/v0/orders?{query}")).await?;
            let page: OrdersAnswer = parse("getOrders", answer)?;
            for order in page.payload.orders {
                report.orders += 1;
                self.order(order, report).await?;
            }
            next = page.payload.next_token.filter(|t| !t.is_empty());
            if next.is_none() {
                return Ok(());
            }
        }
    }

    /// One order: its items read and published, unless nothing changed since.
    async fn order(&mut self, order: OrderSummary, report: &mut PollReport) -> Result<(), SpApiError> {
        let id = &order.amazon_order_id;
        let Some(last_update_ms) = parse_ms(&order.last_update_date) else {
            report.refused += 1;
            count_rejection(ADAPTER, "bad_time");
            tracing::warn!(order = %id, "LastUpdateDate {:?} is not a date-time; skipped", order.last_update_date);
            return Ok(());
        };
        let mark = self.store.order(id)?;
        if mark.as_ref().is_some_and(|m| m.last_update_ms >= last_update_ms) {
            report.unchanged += 1;
            return Ok(());
        }
        if order.order_status.as_deref() == Some("Pending") {
            // no prices before payment is authorized; its next status changes LastUpdateDate
            report.ignored += 1;
            count_ignored(ADAPTER, "pending_order");
            return Ok(());
        }
        let items = self.order_items(id).await?;
        let body = json!({
            "payload": { "AmazonOrderId": id, "OrderItems": items },
            "PurchaseDate": order.purchase_date,
            "FulfillmentChannel": order.fulfillment_channel,
            "MarketplaceId": order.marketplace_id,
            "OrderStatus": order.order_status,
            "LastUpdateDate": order.last_update_date,
        });
        let body = serde_json::to_vec(&body).map_err(|e| SpApiError::State(e.to_string()))?;
        let mut event_ids = mark.map(|m| m.event_ids).unwrap_or_default();
        match self.mapping.map_order_items(&body, omnifold_runtime::wall_clock_ms()) {
            Ok(mut mapped) => {
                mapped.events.retain(|e| !event_ids.contains(&e.event_id));
                event_ids.extend(mapped.events.iter().map(|e| e.event_id.clone()));
                let delivered = deliver(&mut self.sink, ADAPTER, mapped).await?;
                report.published += delivered.published;
                report.refused += delivered.refused.len();
                report.ignored += delivered.ignored.len();
            }
            Err(malformed) => {
                report.refused += 1;
                count_rejection(ADAPTER, "malformed");
                tracing::warn!(order = %id, "the order's items cannot be mapped: {malformed}");
            }
        }
        self.store.mark(id, &OrderMark { last_update_ms, event_ids }).await
    }

    /// Every page of getOrderItems for one order.
    async fn order_items(&mut self, order_id: &str) -> Result<Vec<Value>, SpApiError> {
        let path = format!("/orders/v0/orders/{}/orderItems", encode_path(order_id));
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let url = match &next {
                None => path.clone(),
                Some(token) => format!("{path}?NextToken={}", encode_path(token)),
            };
            let page: ItemsAnswer = parse("getOrderItems", self.client.get("getOrderItems", &url).await?)?;
            items.extend(page.payload.order_items);
            next = page.payload.next_token.filter(|t| !t.is_empty());
            if next.is_none() {
                return Ok(items);
            }
        }
    }
}

//! The HTTP receivers (Shopify, WooCommerce, Amazon): size-limited bodies, signatures
//! checked before anything is parsed, redeliveries answered without publishing, malformed
//! bodies answered 400, every rejection counted by adapter and reason.
//!
//! A delivery is answered 200 only once its events are acknowledged by the broker; if the
//! broker cannot be reached the answer is 503, so the channel delivers again.

// an early answer is an axum `Response`, returned as the `Err` of the checks
#![allow(clippy::result_large_err)]

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Mutex;

use crate::amazon::AmazonMapping;
use crate::config::Secret;
use crate::deliver::{Delivered, count_rejection, deliver};
use crate::mapping::{Malformed, Mapped};
use crate::publish::Sink;
use crate::shopify::ShopifyMapping;
use crate::woocommerce::WooMapping;

/// Delivery ids remembered per receiver to answer redeliveries without publishing.
pub const RECENT_IDS: usize = 10_000;

/// Whether `signature` is base64(HMAC-SHA256(body, secret)), compared in constant time.
pub fn signature_matches(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// base64(HMAC-SHA256(body, secret)): what a channel puts in its signature header.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A bounded set of recently seen ids: the oldest is forgotten first.
#[derive(Debug)]
pub struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        RecentIds { set: HashSet::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    /// Remembers `id`; false when it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if !self.set.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// The publish side a receiver shares: the sink and its recent delivery ids, behind one lock
/// so that "seen?", publish and "remember" happen as one step.
pub struct Intake<S> {
    pub sink: S,
    pub recent: RecentIds,
}

impl<S: Sink> Intake<S> {
    pub fn new(sink: S) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Intake { sink, recent: RecentIds::new(RECENT_IDS) }))
    }
}

/// What a receiver answers.
#[derive(Debug, serde::Serialize)]
struct Answer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    delivered: Option<&'a Delivered>,
}

fn answer(
    status: StatusCode,
    error: Option<&str>,
    duplicate: bool,
    delivered: Option<&Delivered>,
) -> Response {
    let body = serde_json::to_string(&Answer { error, duplicate, delivered }).unwrap_or_default();
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn reject(adapter: &'static str, status: StatusCode, reason: &'static str, message: &str) -> Response {
    count_rejection(adapter, reason);
    tracing::warn!(adapter, reason, status = status.as_u16(), "rejected delivery: {message}");
    answer(status, Some(message), false, None)
}

fn body_or_reject(adapter: &'static str, body: Result<Bytes, BytesRejection>) -> Result<Bytes, Response> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let reason =
            if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "unreadable_body" };
        reject(adapter, status, reason, &rejection.body_text())
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Checks the signature header; `Err` is the 401 answer.
fn verify(
    adapter: &'static str,
    headers: &HeaderMap,
    name: &str,
    secret: &Secret,
    body: &[u8],
) -> Result<(), Response> {
    match headers.get(name) {
        None => {
            Err(reject(adapter, StatusCode::UNAUTHORIZED, "missing_signature", &format!("{name} is missing")))
        }
        Some(value) => match value.to_str() {
            Ok(signature) if signature_matches(secret.expose(), body, signature) => Ok(()),
            _ => Err(reject(
                adapter,
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                &format!("{name} does not match the body"),
            )),
        },
    }
}

/// Publishes a mapped delivery once: a delivery id seen before is answered as a duplicate.
async fn publish_once<S: Sink>(
    intake: &Mutex<Intake<S>>,
    adapter: &'static str,
    delivery_id: Option<&str>,
    map: impl FnOnce() -> Result<Mapped, Malformed>,
) -> Response {
    let mut intake = intake.lock().await;
    if let Some(id) = delivery_id
        && intake.recent.contains(id)
    {
        metrics::counter!("omnifold_connector_duplicates_total", "adapter" => adapter).increment(1);
        tracing::info!(adapter, delivery = id, "redelivery: nothing published");
        return answer(StatusCode::OK, None, true, None);
    }
    let mapped = match map() {
        Ok(mapped) => mapped,
        Err(malformed) => return reject(adapter, StatusCode::BAD_REQUEST, "malformed", &malformed.0),
    };
    match deliver(&mut intake.sink, adapter, mapped).await {
        Ok(delivered) => {
            if let Some(id) = delivery_id {
                intake.recent.insert(id);
            }
            answer(StatusCode::OK, None, false, Some(&delivered))
        }
        Err(error) => {
            metrics::counter!("omnifold_connector_publish_failures_total", "adapter" => adapter).increment(1);
            tracing::error!(adapter, %error, "cannot publish; answering 503 so the channel retries");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("events could not be published; retry later"),
                false,
                None,
            )
        }
    }
}

struct ShopifyState<S> {
    mapping: ShopifyMapping,
    secret: Secret,
    intake: Arc<Mutex<Intake<S>>>,
}

/// `POST /webhooks/shopify`: every Shopify topic on one address, told apart by X-Shopify-Topic.
pub fn shopify_router<S: Sink + 'static>(
    mapping: ShopifyMapping,
    secret: Secret,
    intake: Arc<Mutex<Intake<S>>>,
    max_body_bytes: usize,
) -> Router {
    let state = Arc::new(ShopifyState { mapping, secret, intake });
    Router::new()
        .route("/webhooks/shopify", post(shopify_webhook::<S>))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn shopify_webhook<S: Sink + 'static>(
    State(state): State<Arc<ShopifyState<S>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const ADAPTER: &str = "shopify";
    let body = match body_or_reject(ADAPTER, body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(response) = verify(ADAPTER, &headers, "x-shopify-hmac-sha256", &state.secret, &body) {
        return response;
    }
    let Some(topic) = header(&headers, "x-shopify-topic") else {
        return reject(ADAPTER, StatusCode::BAD_REQUEST, "missing_header", "X-Shopify-Topic is missing");
    };
    let Some(webhook_id) = header(&headers, "x-shopify-webhook-id") else {
        return reject(ADAPTER, StatusCode::BAD_REQUEST, "missing_header", "X-Shopify-Webhook-Id is missing");
    };
    publish_once(&state.intake, ADAPTER, Some(webhook_id), || state.mapping.map(topic, webhook_id, &body))
        .await
}

struct WooState<S> {
    mapping: WooMapping,
    secret: Secret,
    intake: Arc<Mutex<Intake<S>>>,
}

/// `POST /webhooks/woocommerce`: order webhooks, told apart by X-WC-Webhook-Topic.
pub fn woocommerce_router<S: Sink + 'static>(
    mapping: WooMapping,
    secret: Secret,
    intake: Arc<Mutex<Intake<S>>>,
    max_body_bytes: usize,
) -> Router {
    let state = Arc::new(WooState { mapping, secret, intake });
    Router::new()
        .route("/webhooks/woocommerce", post(woo_webhook::<S>))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn woo_webhook<S: Sink + 'static>(
    State(state): State<Arc<WooState<S>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const ADAPTER: &str = "woocommerce";
    let body = match body_or_reject(ADAPTER, body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    // WooCommerce pings a new webhook with an unsigned `webhook_id=N` form body: acknowledge
    // it, publish nothing.
    if headers.get("x-wc-webhook-signature").is_none() && crate::woocommerce::is_ping(&body) {
        return answer(StatusCode::OK, None, false, Some(&Delivered::default()));
    }
    if let Err(response) = verify(ADAPTER, &headers, "x-wc-webhook-signature", &state.secret, &body) {
        return response;
    }
    let Some(topic) = header(&headers, "x-wc-webhook-topic") else {
        return reject(ADAPTER, StatusCode::BAD_REQUEST, "missing_header", "X-WC-Webhook-Topic is missing");
    };
    let delivery = header(&headers, "x-wc-webhook-delivery-id");
    publish_once(&state.intake, ADAPTER, delivery, || state.mapping.map(topic, &body)).await
}

struct AmazonState<S> {
    mapping: AmazonMapping,
    token: Option<Secret>,
    intake: Arc<Mutex<Intake<S>>>,
}

/// `POST /amazon/notifications` (an SP-API notification, e.g. relayed from SQS) and
/// `POST /amazon/order-items` (an Orders API getOrderItems response).
pub fn amazon_router<S: Sink + 'static>(
    mapping: AmazonMapping,
    token: Option<Secret>,
    intake: Arc<Mutex<Intake<S>>>,
    max_body_bytes: usize,
) -> Router {
    let state = Arc::new(AmazonState { mapping, token, intake });
    Router::new()
        .route("/amazon/notifications", post(amazon_notification::<S>))
        .route("/amazon/order-items", post(amazon_order_items::<S>))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

fn check_token(adapter: &'static str, headers: &HeaderMap, token: Option<&Secret>) -> Result<(), Response> {
    let Some(token) = token else { return Ok(()) };
    let given = header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(reject(
            adapter,
            StatusCode::UNAUTHORIZED,
            "missing_signature",
            "Authorization: Bearer is missing",
        )),
        Some(given) if constant_time_eq(given.as_bytes(), token.expose()) => Ok(()),
        Some(_) => {
            Err(reject(adapter, StatusCode::UNAUTHORIZED, "bad_signature", "the bearer token does not match"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // compare MACs of both under a fixed key: equal-length, constant-time comparison
    let tag = |x: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"omnifold-token-compare").expect("any key length");
        mac.update(x);
        mac
    };
    tag(a).verify_slice(&tag(b).finalize().into_bytes()).is_ok()
}

async fn amazon_notification<S: Sink + 'static>(
    State(state): State<Arc<AmazonState<S>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const ADAPTER: &str = "amazon";
    let body = match body_or_reject(ADAPTER, body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(response) = check_token(ADAPTER, &headers, state.token.as_ref()) {
        return response;
    }
    let notification_id = match crate::amazon::notification_id(&body) {
        Ok(id) => id,
        Err(malformed) => return reject(ADAPTER, StatusCode::BAD_REQUEST, "malformed", &malformed.0),
    };
    publish_once(&state.intake, ADAPTER, Some(&notification_id), || state.mapping.map_notification(&body))
        .await
}

async fn amazon_order_items<S: Sink + 'static>(
    State(state): State<Arc<AmazonState<S>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    const ADAPTER: &str = "amazon";
    let body = match body_or_reject(ADAPTER, body) {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(response) = check_token(ADAPTER, &headers, state.token.as_ref()) {
        return response;
    }
    let received = omnifold_runtime::wall_clock_ms();
    publish_once(&state.intake, ADAPTER, None, || state.mapping.map_order_items(&body, received)).await
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

//! The HTTP receiver: one router and one handler, generic over a channel [`Adapter`] (Shopify,
//! WooCommerce, Amazon). Size-limited bodies, the request verified (signature or token)
//! before anything is parsed, redeliveries answered without publishing, malformed bodies
//! answered 400, every rejection counted by adapter and reason.
//!
//! A delivery is answered 200 only once its events are acknowledged by the broker; if the
//! broker cannot be reached the answer is 503, so the channel delivers again. The answer waits
//! `publish_timeout` at most: channels give up on a slow answer (Shopify after about 5 s) and
//! drop webhooks that keep failing, while the client would hold an event for minutes. Each
//! delivery waits for its own events only, never under the lock the deliveries share.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

use crate::amazon::{AmazonMapping, AmazonNotifications, AmazonOrderItems};
use crate::config::Secret;
use crate::deliver::{Delivered, Queued, count_rejection, queue, settle};
use crate::mapping::{Malformed, Mapped};
use crate::publish::{PublishError, Sink};
use crate::shopify::{ShopifyMapping, ShopifyWebhooks};
use crate::sources::SourceError;
use crate::woocommerce::{WooMapping, WooWebhooks};

/// Delivery ids remembered per receiver to answer redeliveries without publishing.
pub const RECENT_IDS: usize = 10_000;

/// How long a delivery waits for its events' acknowledgement before it is answered 503, in
/// ms, unless a receiver's `publish_timeout_ms` says otherwise.
pub const PUBLISH_TIMEOUT_MS: u64 = 2000;

/// What a channel adapter provides to the receiver. The receiver calls, in order:
/// [`Adapter::is_ping`], [`Adapter::verify`], [`Adapter::delivery`], then, unless the delivery
/// id was seen before, [`Adapter::map`].
pub trait Adapter: Send + Sync + 'static {
    /// The adapter's label in metrics and logs, e.g. `shopify`.
    const NAME: &'static str;
    /// Where the channel POSTs, e.g. `/webhooks/shopify`.
    const PATH: &'static str;

    /// A request acknowledged before any check, publishing nothing (WooCommerce's unsigned
    /// ping of a new webhook).
    fn is_ping(&self, _headers: &HeaderMap, _body: &[u8]) -> bool {
        false
    }

    /// That the request comes from the channel: its signature over the body, or its token.
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Refused>;

    /// Which delivery the request is: its topic, and its id when the channel gives one.
    fn delivery(&self, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, Refused>;

    /// The delivery's events and refusals; `Err` when the body cannot be read at all.
    fn map(&self, delivery: &Delivery, body: &[u8]) -> Result<Mapped, Malformed>;
}

/// Which delivery a request is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// What the payload is, e.g. `orders/create`; empty where the path says it.
    pub topic: String,
    /// The channel's id of the delivery, repeated by its redeliveries.
    pub id: Option<String>,
}

/// A request refused before its payload is mapped: the answer's status, a stable reason for
/// `omnifold_connector_rejections_total` and the message answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl Refused {
    pub fn unauthorized(reason: &'static str, message: impl Into<String>) -> Self {
        Refused { status: StatusCode::UNAUTHORIZED, reason, message: message.into() }
    }

    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Refused { status: StatusCode::BAD_REQUEST, reason, message: message.into() }
    }
}

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

/// Checks that header `name` (lowercase) signs the body with `secret`.
pub fn verify_signature(
    headers: &HeaderMap,
    name: &str,
    secret: &Secret,
    body: &[u8],
) -> Result<(), Refused> {
    let Some(value) = headers.get(name) else {
        return Err(Refused::unauthorized("missing_signature", format!("{name} is missing")));
    };
    match value.to_str() {
        Ok(signature) if signature_matches(secret.expose(), body, signature) => Ok(()),
        _ => Err(Refused::unauthorized("bad_signature", format!("{name} does not match the body"))),
    }
}

/// Checks `Authorization: Bearer <token>` when a token is set.
pub fn verify_bearer(headers: &HeaderMap, token: Option<&Secret>) -> Result<(), Refused> {
    let Some(token) = token else { return Ok(()) };
    match header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer ")) {
        None => Err(Refused::unauthorized("missing_signature", "Authorization: Bearer is missing")),
        Some(given) if constant_time_eq(given.as_bytes(), token.expose()) => Ok(()),
        Some(_) => Err(Refused::unauthorized("bad_signature", "the bearer token does not match")),
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

/// A header's trimmed, non-empty value.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// A header the delivery cannot do without; `shown` is its name as the answer spells it.
pub fn required_header(headers: &HeaderMap, name: &str, shown: &str) -> Result<String, Refused> {
    header(headers, name)
        .map(str::to_string)
        .ok_or_else(|| Refused::bad_request("missing_header", format!("{shown} is missing")))
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

/// The publish side a receiver shares: the sink and the delivery ids it knows, behind one
/// lock so that "seen?", queueing the events and "in progress" happen as one step. The lock
/// is not held while the broker is awaited, so deliveries do not wait for one another.
pub struct Intake<S> {
    pub sink: S,
    /// Deliveries whose events were all acknowledged: their redeliveries publish nothing.
    pub recent: RecentIds,
    /// Deliveries whose events are queued and not yet acknowledged (or given up).
    in_progress: HashSet<String>,
    /// How long a delivery waits for its events' acknowledgement before it is answered 503.
    pub publish_timeout: Duration,
}

impl<S: Sink> Intake<S> {
    pub fn new(sink: S) -> Arc<Mutex<Self>> {
        Self::with_publish_timeout(sink, Duration::from_millis(PUBLISH_TIMEOUT_MS))
    }

    pub fn with_publish_timeout(sink: S, publish_timeout: Duration) -> Arc<Mutex<Self>> {
        let recent = RecentIds::new(RECENT_IDS);
        Arc::new(Mutex::new(Intake { sink, recent, in_progress: HashSet::new(), publish_timeout }))
    }

    /// Queues a delivery's events unless its id is known, and marks it in progress.
    fn begin(
        &mut self,
        id: Option<&str>,
        map: impl FnOnce() -> Result<Mapped, Malformed>,
    ) -> Result<Queued, NotQueued> {
        if let Some(id) = id {
            if self.recent.contains(id) {
                return Err(NotQueued::Duplicate);
            }
            if self.in_progress.contains(id) {
                return Err(NotQueued::InProgress);
            }
        }
        let mapped = map().map_err(NotQueued::Malformed)?;
        // on a failure part of the events may be queued: the id is not kept as in progress,
        // so a redelivery sends them all again (with the same event ids)
        let queued = queue(&mut self.sink, mapped).map_err(NotQueued::Failed)?;
        if let Some(id) = id {
            self.in_progress.insert(id.to_string());
        }
        Ok(queued)
    }

    /// Ends a delivery in progress: done once its events were acknowledged, else forgotten so
    /// that a redelivery publishes them again.
    fn end(&mut self, id: &str, acknowledged: bool) {
        self.in_progress.remove(id);
        if acknowledged {
            self.recent.insert(id);
        }
    }
}

/// Why a delivery's events were not queued.
#[derive(Debug)]
enum NotQueued {
    /// Its id's events were acknowledged before.
    Duplicate,
    /// Its id's events are queued and not yet acknowledged.
    InProgress,
    Malformed(Malformed),
    Failed(PublishError),
}

/// `POST A::PATH`, answered by the adapter through `intake`; bodies over `max_body_bytes`
/// are answered 413.
pub fn webhook_router<A: Adapter, S: Sink + 'static>(
    adapter: A,
    intake: Arc<Mutex<Intake<S>>>,
    max_body_bytes: usize,
) -> Router {
    let receiver = Arc::new(Receiver { adapter, intake });
    Router::new()
        .route(A::PATH, post(receive::<A, S>))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(receiver)
}

/// A receiver of one adapter's webhooks on `listen`, publishing to `sink` and answering 503
/// when its events are not acknowledged within `publish_timeout`.
pub fn webhook_source<A: Adapter, S: Sink + 'static>(
    adapter: A,
    listen: SocketAddr,
    max_body_bytes: usize,
    publish_timeout: Duration,
    sink: S,
) -> HttpSource {
    let router = webhook_router(adapter, Intake::with_publish_timeout(sink, publish_timeout), max_body_bytes);
    HttpSource::new(listen, router, format!("{} webhooks on POST {}", A::NAME, A::PATH))
}

/// `POST /webhooks/shopify`: every Shopify topic on one address, told apart by X-Shopify-Topic.
pub fn shopify_router<S: Sink + 'static>(
    mapping: ShopifyMapping,
    secret: Secret,
    intake: Arc<Mutex<Intake<S>>>,
    max_body_bytes: usize,
) -> Router {
    webhook_router(ShopifyWebhooks { mapping, secret }, intake, max_body_bytes)
}

/// `POST /webhooks/woocommerce`: order webhooks, told apart by X-WC-Webhook-Topic.
pub fn woocommerce_router<S: Sink + 'static>(
    mapping: WooMapping,
    secret: Secret,
    intake: Arc<Mutex<Intake<S>>>,
    max_body_bytes: usize,
) -> Router {
    webhook_router(WooWebhooks { mapping, secret }, intake, max_body_bytes)
}

/// `POST /amazon/notifications` (an SP-API notification, e.g. relayed from SQS) and
/// `POST /amazon/order-items` (an Orders API response: v0 getOrderItems or v2026-01-01
/// getOrder), on one intake.
pub fn amazon_router<S: Sink + 'static>(
    mapping: AmazonMapping,
    token: Option<Secret>,
    intake: Arc<Mutex<Intake<S>>>,
    max_body_bytes: usize,
) -> Router {
    let notifications = AmazonNotifications { mapping: mapping.clone(), token: token.clone() };
    let order_items = AmazonOrderItems { mapping, token };
    webhook_router(notifications, intake.clone(), max_body_bytes).merge(webhook_router(
        order_items,
        intake,
        max_body_bytes,
    ))
}

struct Receiver<A, S> {
    adapter: A,
    intake: Arc<Mutex<Intake<S>>>,
}

/// What a request is once every check before mapping passed.
enum Accepted {
    Ping,
    Delivery(Delivery, Bytes),
}

async fn receive<A: Adapter, S: Sink + 'static>(
    State(receiver): State<Arc<Receiver<A, S>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match accept(&receiver.adapter, &headers, body) {
        Err(refused) => reject(A::NAME, &refused),
        Ok(Accepted::Ping) => answer(StatusCode::OK, None, false, Some(&Delivered::default())),
        Ok(Accepted::Delivery(delivery, body)) => {
            let map = || receiver.adapter.map(&delivery, &body);
            publish_once(&receiver.intake, A::NAME, delivery.id.as_deref(), map).await
        }
    }
}

/// The checks before mapping, in the order the answers promise: body, ping, verification,
/// delivery.
fn accept<A: Adapter>(
    adapter: &A,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Accepted, Refused> {
    let body = body.map_err(unreadable)?;
    if adapter.is_ping(headers, &body) {
        return Ok(Accepted::Ping);
    }
    adapter.verify(headers, &body)?;
    let delivery = adapter.delivery(headers, &body)?;
    Ok(Accepted::Delivery(delivery, body))
}

fn unreadable(rejection: BytesRejection) -> Refused {
    let status = rejection.status();
    let reason = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "unreadable_body" };
    Refused { status, reason, message: rejection.body_text() }
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

fn reject(adapter: &'static str, refused: &Refused) -> Response {
    let Refused { status, reason, message } = refused;
    count_rejection(adapter, reason);
    tracing::warn!(adapter, reason, status = status.as_u16(), "rejected delivery: {message}");
    answer(*status, Some(message), false, None)
}

/// Publishes a mapped delivery once. A delivery id whose events were acknowledged is answered
/// as a duplicate, one whose events are still on their way 503 without publishing again. The
/// answer waits for the acknowledgement `publish_timeout` at most, then is 503; the wait goes
/// on in the background, and remembers the delivery as done only if the events get through.
async fn publish_once<S: Sink + 'static>(
    intake: &Arc<Mutex<Intake<S>>>,
    adapter: &'static str,
    delivery_id: Option<&str>,
    map: impl FnOnce() -> Result<Mapped, Malformed>,
) -> Response {
    let (queued, timeout) = {
        let mut intake = intake.lock().await;
        match intake.begin(delivery_id, map) {
            Ok(queued) => (queued, intake.publish_timeout),
            Err(not_queued) => return answer_not_queued(adapter, delivery_id, not_queued),
        }
    };
    // spawned right after `begin`, with no await between: a dropped request cannot leave
    // the id in progress for good
    let settling =
        tokio::spawn(settle_delivery(intake.clone(), adapter, delivery_id.map(str::to_string), queued));
    match tokio::time::timeout(timeout, settling).await {
        Ok(Ok(Ok(delivered))) => answer(StatusCode::OK, None, false, Some(&delivered)),
        Ok(Ok(Err(error))) => cannot_publish(adapter, &error),
        Ok(Err(join)) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Ok(Err(_)) => cannot_publish(adapter, &PublishError::Cancelled),
        Err(_) => not_acknowledged(adapter, delivery_id, timeout),
    }
}

/// Waits for a delivery's events and ends it; on a task of its own, so that it ends also
/// after the answer stopped waiting.
async fn settle_delivery<S: Sink>(
    intake: Arc<Mutex<Intake<S>>>,
    adapter: &'static str,
    id: Option<String>,
    queued: Queued,
) -> Result<Delivered, PublishError> {
    let settled = settle(adapter, queued).await;
    if let Some(id) = id {
        intake.lock().await.end(&id, settled.is_ok());
    }
    settled
}

fn answer_not_queued(adapter: &'static str, id: Option<&str>, not_queued: NotQueued) -> Response {
    let id = id.unwrap_or("-");
    match not_queued {
        NotQueued::Duplicate => duplicate(adapter, id),
        NotQueued::InProgress => in_progress(adapter, id),
        NotQueued::Malformed(malformed) => reject(adapter, &Refused::bad_request("malformed", malformed.0)),
        NotQueued::Failed(error) => cannot_publish(adapter, &error),
    }
}

fn duplicate(adapter: &'static str, id: &str) -> Response {
    metrics::counter!("omnifold_connector_duplicates_total", "adapter" => adapter).increment(1);
    tracing::info!(adapter, delivery = id, "redelivery: nothing published");
    answer(StatusCode::OK, None, true, None)
}

fn in_progress(adapter: &'static str, id: &str) -> Response {
    tracing::info!(adapter, delivery = id, "redelivery while its events are on their way: nothing published");
    let message = "an earlier delivery with this id is still being published; retry later";
    answer(StatusCode::SERVICE_UNAVAILABLE, Some(message), false, None)
}

fn cannot_publish(adapter: &'static str, error: &PublishError) -> Response {
    metrics::counter!("omnifold_connector_publish_failures_total", "adapter" => adapter).increment(1);
    tracing::error!(adapter, %error, "cannot publish; answering 503 so the channel retries");
    let message = "events could not be published; retry later";
    answer(StatusCode::SERVICE_UNAVAILABLE, Some(message), false, None)
}

fn not_acknowledged(adapter: &'static str, id: Option<&str>, timeout: Duration) -> Response {
    metrics::counter!("omnifold_connector_publish_failures_total", "adapter" => adapter).increment(1);
    tracing::warn!(
        adapter,
        delivery = id.unwrap_or("-"),
        "events not acknowledged within {timeout:?}; answering 503, still waiting for them"
    );
    let message = format!("the broker did not acknowledge the events within {timeout:?}; retry later");
    answer(StatusCode::SERVICE_UNAVAILABLE, Some(&message), false, None)
}

/// A receiver ready to run: its router and the address to serve it on.
pub struct HttpSource {
    listen: SocketAddr,
    router: Router,
    /// What is served where, for the start-up log line.
    describe: String,
}

impl HttpSource {
    pub fn new(listen: SocketAddr, router: Router, describe: impl Into<String>) -> Self {
        HttpSource { listen, router, describe: describe.into() }
    }

    /// Serves until `shutdown` resolves, then lets the requests in progress finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), SourceError> {
        let listener = bind(self.listen).await?;
        tracing::info!(addr = %self.listen, "{}", self.describe);
        serve(listener, self.router, shutdown).await.map_err(SourceError::Serve)
    }
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
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, SourceError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|error| SourceError::Bind { addr, error })
}

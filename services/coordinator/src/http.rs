//! Decision provenance over HTTP: `GET /v1/prices/{sku}` answers "what is this SKU's price on
//! every channel, and why?" with [`pricing::explain`] of the SKU's stored state, at the SKU's
//! own clock (`SkuState::latest_ms`), so the answer is what the fold last decided.
//!
//! The coordinator owns its store and a store cannot be opened by a second process, so the
//! endpoint is served from inside the coordinator ([`HttpServer`]). It is read-only and
//! unauthenticated, hence loopback only. The client side ([`fetch_prices`], [`render_table`])
//! is what `omnifold-coordinator price` uses.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use omnifold_domain::Rules;
use omnifold_domain::pricing::{self, PriceExplanation};
use omnifold_runtime::partitioner::partition_for;
use omnifold_runtime::{Store, StoreError};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::watch::event_time;

/// How long a stop waits for open connections to finish before it drops them.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The `price` command's whole-request timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("refusing to serve prices on {0}: the endpoint is unauthenticated, so it binds to loopback only")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("http server failed: {0}")]
    Serve(std::io::Error),
    #[error("request to {url} failed: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("{url} answered {status}: {message}")]
    Status { url: String, status: u16, message: String },
}

/// What the endpoint reads: the coordinator's store and contract.
#[derive(Clone)]
pub struct PriceSource {
    store: Store,
    rules: Arc<Rules>,
    /// Partitions of the events topic, which locate a SKU's state.
    events_partitions: i32,
}

impl PriceSource {
    pub fn new(store: Store, rules: Rules, events_partitions: i32) -> Self {
        PriceSource { store, rules: Arc::new(rules), events_partitions }
    }

    /// The SKU's prices at its own clock; `None` for a SKU the coordinator never saw.
    /// Blocking (a store read): call it from a blocking thread.
    pub fn explain(&self, sku: &str) -> Result<Option<PriceExplanation>, StoreError> {
        // a SKU's state lives under the input partition its events are keyed to
        let partition = partition_for(sku.as_bytes(), self.events_partitions);
        let state = crate::engine::load_core_with_prices(&self.store, partition, sku)?;
        Ok(state.map(|state| pricing::explain(&self.rules, sku, &state.prices, state.latest_ms)))
    }
}

/// The endpoint's routes; anything else is a JSON 404.
pub fn router(source: PriceSource) -> Router {
    Router::new().route("/v1/prices/{sku}", get(get_prices)).fallback(unknown_route).with_state(source)
}

/// Serves the endpoint on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    source: PriceSource,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    axum::serve(listener, router(source)).with_graceful_shutdown(shutdown).await.map_err(HttpError::Serve)
}

async fn get_prices(State(source): State<PriceSource>, Path(sku): Path<String>) -> Response {
    let lookup = {
        let sku = sku.clone();
        tokio::task::spawn_blocking(move || source.explain(&sku)).await
    };
    match lookup {
        Ok(Ok(Some(explanation))) => Json(explanation).into_response(),
        Ok(Ok(None)) => error_response(StatusCode::NOT_FOUND, format!("unknown sku {sku}")),
        Ok(Err(error)) => {
            tracing::error!(sku, %error, "price lookup failed");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "the store could not be read".to_string())
        }
        Err(error) => {
            tracing::error!(sku, %error, "price lookup task failed");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "the lookup failed".to_string())
        }
    }
}

async fn unknown_route() -> Response {
    error_response(StatusCode::NOT_FOUND, "no such route; try /v1/prices/{sku}".to_string())
}

fn error_response(status: StatusCode, error: String) -> Response {
    (status, Json(serde_json::json!({ "error": error }))).into_response()
}

/// The endpoint running in the background. Dropping it also stops the server, without
/// waiting.
pub struct HttpServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), HttpError>>,
}

impl HttpServer {
    /// Binds `addr` (loopback only; port 0 picks a free port) and serves in a task.
    pub async fn start(addr: SocketAddr, source: PriceSource) -> Result<HttpServer, HttpError> {
        if !addr.ip().is_loopback() {
            return Err(HttpError::NotLoopback(addr));
        }
        let listener = TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| HttpError::Bind { addr, source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        // a dropped sender resolves the receiver too, so any exit of the owner stops the server
        let task = tokio::spawn(serve(listener, source, async {
            let _ = stopped.await;
        }));
        tracing::info!(%addr, "serving prices over http");
        Ok(HttpServer { addr, stop, task })
    }

    /// [`HttpServer::start`] when an address is configured.
    pub async fn start_if(
        addr: Option<SocketAddr>,
        source: PriceSource,
    ) -> Result<Option<HttpServer>, HttpError> {
        match addr {
            Some(addr) => Ok(Some(HttpServer::start(addr, source).await?)),
            None => Ok(None),
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, waits up to 5 s for open requests, then drops them. A failure of the
    /// server is logged: it never decides the fate of the coordinator.
    pub async fn stop(self) {
        let HttpServer { addr, stop, mut task } = self;
        let _ = stop.send(());
        match tokio::time::timeout(STOP_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => tracing::info!(%addr, "stopped serving prices"),
            Ok(Ok(Err(error))) => tracing::error!(%addr, %error, "price server failed"),
            Ok(Err(error)) => tracing::error!(%addr, %error, "price server task failed"),
            Err(_) => {
                task.abort();
                tracing::warn!(%addr, "price server did not stop in time, dropped its connections");
            }
        }
    }
}

/// Client side: a [`PriceExplanation`] as received. Numbers stay the decimal strings they
/// are on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceView {
    pub sku: String,
    pub at_ms: i64,
    pub reporting_currency: String,
    pub unit_cost: Option<SourcedView>,
    pub channels: Vec<ChannelView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteView {
    pub amount: String,
    pub currency: String,
    pub reporting: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcedView {
    #[serde(flatten)]
    pub quote: QuoteView,
    pub event_id: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionView {
    pub promotion_id: String,
    pub percent_off: String,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloorView {
    #[serde(flatten)]
    pub quote: QuoteView,
    pub fee_rate: String,
    pub margin_floor: String,
    pub cost_event_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompetitorView {
    pub competitor: String,
    #[serde(flatten)]
    pub price: SourcedView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelView {
    pub channel: String,
    pub listed: Option<SourcedView>,
    pub promotions: Vec<PromotionView>,
    pub discount: String,
    pub effective: Option<QuoteView>,
    pub floor: Option<FloorView>,
    pub map: Option<QuoteView>,
    pub map_applies: bool,
    pub below_floor: bool,
    pub below_map: bool,
    pub competitors: Vec<CompetitorView>,
}

/// `GET http://{addr}/v1/prices/{sku}`; a 404 or any other error status is an error carrying
/// the server's message.
pub async fn fetch_prices(addr: SocketAddr, sku: &str) -> Result<PriceView, HttpError> {
    let url = prices_url(addr, sku);
    let request_error =
        |source: reqwest::Error| HttpError::Request { url: url.to_string(), source: source.without_url() };
    let client = reqwest::Client::builder().timeout(CLIENT_TIMEOUT).build().map_err(request_error)?;
    let response = client.get(url.clone()).send().await.map_err(request_error)?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        return Err(HttpError::Status { url: url.to_string(), status: status.as_u16(), message });
    }
    response.json().await.map_err(request_error)
}

/// The SKU goes in as one path segment, percent-encoded.
fn prices_url(addr: SocketAddr, sku: &str) -> reqwest::Url {
    let mut url =
        reqwest::Url::parse(&format!("http://{addr}/v1/prices")).expect("a socket address makes a url");
    url.path_segments_mut().expect("an http url has a path").push(sku);
    url
}

const HEADERS: [&str; 7] = ["channel", "listed", "promotions", "effective", "floor", "MAP", "flags"];

/// The explanation as an aligned table: each number with the event that set it in brackets.
pub fn render_table(view: &PriceView) -> String {
    let currency = &view.reporting_currency;
    let mut out = format!("{} at {} UTC, reporting currency {currency}\n", view.sku, event_time(view.at_ms));
    let cost = view.unit_cost.as_ref().map_or("unknown".to_string(), |c| sourced(c, currency));
    let _ = writeln!(out, "unit cost: {cost}\n");
    let rows: Vec<[String; 7]> = view.channels.iter().map(|c| channel_row(c, currency)).collect();
    out.push_str(&aligned(&HEADERS.map(str::to_string), &rows));
    let competitors: Vec<[String; 3]> = view
        .channels
        .iter()
        .flat_map(|c| {
            c.competitors
                .iter()
                .map(move |o| [c.channel.clone(), o.competitor.clone(), sourced(&o.price, currency)])
        })
        .collect();
    if !competitors.is_empty() {
        out.push_str("\ncompetitors:\n");
        out.push_str(&aligned(&["channel", "competitor", "price"].map(str::to_string), &competitors));
    }
    out.push_str(
        "\neffective = listed x (1 - promotions); floor = unit cost / (1 - fee_rate - margin_floor)\n",
    );
    out
}

fn channel_row(c: &ChannelView, currency: &str) -> [String; 7] {
    let dash = || "-".to_string();
    let promotions: Vec<String> = c
        .promotions
        .iter()
        .map(|p| format!("{} {} off [{}]", p.promotion_id, percent(&p.percent_off), p.event_id))
        .collect();
    let floor = c.floor.as_ref().map(|f| format!("{} [cost {}]", quote(&f.quote, currency), f.cost_event_id));
    let map = c.map.as_ref().map(|m| {
        let applies = if c.map_applies { "" } else { ", not applied" };
        format!("{} [contract{applies}]", quote(m, currency))
    });
    let mut flags = Vec::new();
    if c.below_floor {
        flags.push("BELOW_FLOOR");
    }
    if c.below_map {
        flags.push("BELOW_MAP");
    }
    [
        c.channel.clone(),
        c.listed.as_ref().map_or_else(dash, |l| sourced(l, currency)),
        if promotions.is_empty() { dash() } else { promotions.join(", ") },
        c.effective.as_ref().map_or_else(dash, |e| quote(e, currency)),
        floor.unwrap_or_else(dash),
        map.unwrap_or_else(dash),
        if flags.is_empty() { "ok".to_string() } else { flags.join(" ") },
    ]
}

/// `55.00 EUR (59.40 USD)` for a foreign amount, `57.00 USD` for one in reporting currency.
fn quote(q: &QuoteView, reporting_currency: &str) -> String {
    match &q.reporting {
        Some(reporting) if q.currency != reporting_currency => {
            format!("{} {} ({reporting} {reporting_currency})", q.amount, q.currency)
        }
        _ => format!("{} {}", q.amount, q.currency),
    }
}

fn sourced(s: &SourcedView, reporting_currency: &str) -> String {
    format!("{} [{}]", quote(&s.quote, reporting_currency), s.event_id)
}

/// `0.05` as `5%`; a value that does not parse is shown as sent.
fn percent(fraction: &str) -> String {
    match Decimal::from_str(fraction) {
        Ok(value) => format!("{}%", (value * Decimal::ONE_HUNDRED).normalize()),
        Err(_) => fraction.to_string(),
    }
}

/// Left-aligned columns, two spaces apart, without trailing spaces.
fn aligned<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in std::iter::once(header).chain(rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnifold_domain::SkuState;
    use omnifold_domain::money::Amount;
    use omnifold_domain::pricing::{PriceBook, Set};

    fn rules() -> Rules {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/contract.toml");
        omnifold_runtime::load_contract(&path).expect("the local contract loads")
    }

    fn set(amount: &str, currency: &str, event_id: &str) -> Set<Amount> {
        Set {
            value: Amount { value: amount.parse().unwrap(), currency: currency.into() },
            event_id: event_id.into(),
            at_ms: 1,
        }
    }

    /// A store holding SKU-0001 priced on amazon below its MAP, under 3 input partitions.
    fn store_with_a_price(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).unwrap();
        let mut book = PriceBook::default();
        book.set_price("amazon", set("47.00", "USD", "ev-amazon"));
        book.set_price("eu-market", set("55.00", "EUR", "ev-eu"));
        book.set_cost(set("42.00", "USD", "ev-cost"));
        book.observe("amazon", "rival", set("46.00", "USD", "ev-rival"));
        let mut state = SkuState::default();
        state.latest_ms = 1_794_182_400_000;
        let mut commit = store.begin().unwrap();
        let partition = partition_for(b"SKU-0001", 3);
        commit.put_state(partition, "SKU-0001", &state);
        crate::engine::put_prices(&mut commit, partition, "SKU-0001", &book);
        store.commit(commit).unwrap();
        store
    }

    #[tokio::test]
    async fn serves_the_explanation_of_a_stored_sku_and_404_for_an_unknown_one() {
        let dir = tempfile::tempdir().unwrap();
        let source = PriceSource::new(store_with_a_price(dir.path()), rules(), 3);
        let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), source).await.unwrap();
        let addr = server.local_addr();

        let view = fetch_prices(addr, "SKU-0001").await.unwrap();
        assert_eq!(view.at_ms, 1_794_182_400_000);
        let amazon = view.channels.iter().find(|c| c.channel == "amazon").unwrap();
        assert_eq!(amazon.listed.as_ref().unwrap().event_id, "ev-amazon");
        assert_eq!(amazon.floor.as_ref().unwrap().cost_event_id, "ev-cost");
        assert_eq!(amazon.floor.as_ref().unwrap().quote.amount, "56.00");
        assert_eq!(amazon.map.as_ref().unwrap().amount, "49.00");
        assert!(amazon.below_floor && amazon.below_map);

        match fetch_prices(addr, "SKU-NOPE").await {
            Err(HttpError::Status { status: 404, message, .. }) => {
                assert_eq!(message, "unknown sku SKU-NOPE")
            }
            other => panic!("expected a 404, got {other:?}"),
        }
        let raw = reqwest::get(format!("http://{addr}/v1/elsewhere")).await.unwrap();
        assert_eq!(raw.status(), 404);
        let body: serde_json::Value = raw.json().await.unwrap();
        assert!(body["error"].is_string());
        server.stop().await;
    }

    #[tokio::test]
    async fn refuses_a_non_loopback_address() {
        let dir = tempfile::tempdir().unwrap();
        let source = PriceSource::new(Store::open(dir.path()).unwrap(), rules(), 3);
        let result = HttpServer::start("0.0.0.0:0".parse().unwrap(), source).await;
        assert!(matches!(result, Err(HttpError::NotLoopback(_))));
    }

    #[test]
    fn skus_are_one_percent_encoded_path_segment() {
        let url = prices_url("127.0.0.1:8080".parse().unwrap(), "SKU 1/b");
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/v1/prices/SKU%201%2Fb");
    }

    #[test]
    fn the_table_names_the_event_behind_each_number() {
        let dir = tempfile::tempdir().unwrap();
        let source = PriceSource::new(store_with_a_price(dir.path()), rules(), 3);
        let json = serde_json::to_string(&source.explain("SKU-0001").unwrap().unwrap()).unwrap();
        let view: PriceView = serde_json::from_str(&json).unwrap();
        let table = render_table(&view);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "SKU-0001 at 2026-11-09 00:00 UTC, reporting currency USD");
        assert_eq!(lines[1], "unit cost: 42.00 USD [ev-cost]");
        let header = lines[3];
        assert!(header.starts_with("channel    listed"), "{table}");
        let amazon = lines.iter().find(|l| l.starts_with("amazon")).unwrap();
        for part in [
            "47.00 USD [ev-amazon]",
            "56.00 USD [cost ev-cost]",
            "49.00 USD [contract]",
            "BELOW_FLOOR BELOW_MAP",
        ] {
            assert!(amazon.contains(part), "{part:?} missing in {amazon:?}");
        }
        let eu = lines.iter().find(|l| l.starts_with("eu-market")).unwrap();
        assert!(eu.contains("55.00 EUR (59.40 USD) [ev-eu]"), "{eu:?}");
        assert!(eu.contains("[contract, not applied]"), "{eu:?}");
        // every column starts at the same offset on every row
        let column = header.find("effective").unwrap();
        assert_eq!(&amazon[column..column + 9], "47.00 USD");
        assert!(table.contains("rival") && table.contains("46.00 USD [ev-rival]"), "{table}");
    }

    #[test]
    fn percent_off_reads_as_a_percentage() {
        assert_eq!(percent("0.05"), "5%");
        assert_eq!(percent("0.125"), "12.5%");
        assert_eq!(percent("n/a"), "n/a");
    }
}

//! `omnifold-reporter serve`: the weekly page over HTTP, read from the snapshots topic on
//! every request (so it shows the latest revisions, whoever produced them).
//!
//! Routes: `/` (the latest week), `/weeks/{week}` (e.g. `/weeks/2026-W47`) and
//! `/weeks/{week}/snapshots.json` (the week's snapshots in their JSON form); with an
//! operations feed (`serve --contract`), `/operations` (the operations page) and
//! `/operations.txt` (its terminal table), built from the feed's store on every request. The
//! pages are read-only and unauthenticated, so the server binds to loopback only.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use omnifold_runtime::KafkaOptions;
use tokio::net::TcpListener;

use crate::json::SnapshotJson;
use crate::operations_feed::OperationsFeed;
use crate::operations_page::render_operations_page;
use crate::operations_table::render_operations_table;
use crate::operations_view::OperationsView;
use crate::page::{escape, render_page};
use crate::readback::latest_snapshots;
use crate::view::{ViewError, WeekView};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("refusing to serve on {0}: the page is unauthenticated, so it binds to loopback only")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("http server failed: {0}")]
    Serve(std::io::Error),
}

/// Where the pages read from.
#[derive(Clone)]
pub struct PageSource {
    kafka: Arc<KafkaOptions>,
    topic: Arc<String>,
    operations: Option<OperationsFeed>,
}

impl PageSource {
    pub fn new(kafka: KafkaOptions, snapshots_topic: String) -> Self {
        PageSource { kafka: Arc::new(kafka), topic: Arc::new(snapshots_topic), operations: None }
    }

    /// Serves `/operations` from `feed`'s store (kept current by whoever follows the feed).
    pub fn with_operations(self, feed: OperationsFeed) -> Self {
        PageSource { operations: Some(feed), ..self }
    }
}

/// The routes.
pub fn router(source: PageSource) -> Router {
    Router::new()
        .route("/", get(latest_page))
        .route("/weeks/{week}", get(week_page))
        .route("/weeks/{week}/snapshots.json", get(week_json))
        .route("/operations", get(operations_page))
        .route("/operations.txt", get(operations_text))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such page; try / or /weeks/2026-W47") })
        .with_state(source)
}

/// Binds `addr` (loopback only) and serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    source: PageSource,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    if !addr.ip().is_loopback() {
        return Err(HttpError::NotLoopback(addr));
    }
    let listener = TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| HttpError::Bind { addr, source })?;
    tracing::info!(addr = %local, "serving the weekly report");
    axum::serve(listener, router(source)).with_graceful_shutdown(shutdown).await.map_err(HttpError::Serve)
}

async fn latest_page(State(source): State<PageSource>) -> Response {
    page(source, None).await
}

async fn week_page(State(source): State<PageSource>, Path(week): Path<String>) -> Response {
    page(source, Some(week)).await
}

async fn page(source: PageSource, week: Option<String>) -> Response {
    match view(source, week).await {
        Ok(view) => Html(render_page(&view)).into_response(),
        Err(response) => response,
    }
}

async fn week_json(State(source): State<PageSource>, Path(week): Path<String>) -> Response {
    let snapshots = match read(source).await {
        Ok(snapshots) => snapshots,
        Err(response) => return response,
    };
    let week: Vec<SnapshotJson> =
        snapshots.values().filter(|s| s.week == week).map(SnapshotJson::from).collect();
    if week.is_empty() {
        return error(StatusCode::NOT_FOUND, "no snapshot for that week");
    }
    let body = serde_json::to_string(&week).expect("snapshots serialize");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn view(source: PageSource, week: Option<String>) -> Result<WeekView, Response> {
    let snapshots = read(source).await?;
    WeekView::build(&snapshots, week.as_deref()).map_err(|e| match e {
        ViewError::Empty | ViewError::NoWeek(..) => error(StatusCode::NOT_FOUND, &e.to_string()),
        ViewError::BadWeek(_) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    })
}

async fn read(
    source: PageSource,
) -> Result<std::collections::BTreeMap<String, omnifold_proto::ContributionSnapshot>, Response> {
    let task = tokio::task::spawn_blocking(move || latest_snapshots(&source.kafka, &source.topic)).await;
    match task {
        Ok(Ok(snapshots)) => Ok(snapshots),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read the snapshots");
            Err(error(StatusCode::SERVICE_UNAVAILABLE, "the snapshots topic cannot be read"))
        }
        Err(e) => {
            tracing::error!(error = %e, "snapshot read task failed");
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, "the snapshots could not be read"))
        }
    }
}

async fn operations_page(State(source): State<PageSource>) -> Response {
    match operations_view(source).await {
        Ok(view) => Html(render_operations_page(&view, true)).into_response(),
        Err(response) => response,
    }
}

async fn operations_text(State(source): State<PageSource>) -> Response {
    match operations_view(source).await {
        Ok(view) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], render_operations_table(&view))
            .into_response(),
        Err(response) => response,
    }
}

async fn operations_view(source: PageSource) -> Result<OperationsView, Response> {
    let Some(feed) = source.operations else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "the operations page needs the contract: start serve with --contract FILE",
        ));
    };
    match tokio::task::spawn_blocking(move || feed.operations_view()).await {
        Ok(Ok(view)) => Ok(view),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot build the operations view");
            Err(error(StatusCode::SERVICE_UNAVAILABLE, "the operations store cannot be read"))
        }
        Err(e) => {
            tracing::error!(error = %e, "operations view task failed");
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, "the operations view could not be built"))
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status}</title></head>\
         <body><p>{}</p></body></html>",
        escape(message)
    );
    (status, Html(body)).into_response()
}

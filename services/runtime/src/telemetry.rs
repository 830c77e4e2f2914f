//! Logs and metrics set-up shared by the binaries, and the shutdown signal.
//!
//! Metric names follow `omnifold_<noun>_<unit>_total` for counters (units: `events`,
//! `records`, `deadletters`...), and `omnifold_<noun>_<unit>` for gauges and histograms.

use std::net::SocketAddr;

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info`), coloured only on a
/// terminal so that log files stay greppable.
pub fn init_logs() {
    let filter = tracing_subscriber_filter();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

fn tracing_subscriber_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Serves Prometheus metrics on `addr` (loopback by default in every example).
pub fn serve_metrics(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a sigterm handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

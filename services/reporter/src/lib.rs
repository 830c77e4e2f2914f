//! The reporter: weekly contribution of every sales channel (CONTRACT.md section 7), with
//! exactly-once snapshots through a store outbox, and its readers (a terminal table, an HTML
//! page, an HTTP server).
//!
//! Two stages, each a consumer-group member, run in every instance (see ARCHITECTURE.md,
//! "Reporter scale-out"): [`ingest`] folds input partitions into partial figures and
//! publishes them to the internal partials topic; [`merge`] merges them and emits the
//! snapshot revisions. The math is `omnifold_domain::report`.

pub mod cli;
pub mod consumer;
pub mod event_source;
pub mod handover;
pub mod handover_page;
pub mod http;
pub mod ingest;
pub mod json;
pub mod merge;
pub mod operations;
pub mod operations_feed;
pub mod operations_page;
pub mod operations_table;
pub mod operations_view;
pub mod options;
pub mod page;
pub mod readback;
pub mod service;
pub mod state;
pub mod table;
pub mod topics;
pub mod view;

pub use options::{ReporterError, ReporterOptions};
pub use service::Reporter;
pub use topics::ReportTopics;

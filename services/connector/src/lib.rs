//! Connectors, in two symmetric halves. [`sources`] take each channel's payloads in and hand
//! contract events to a sink; [`sinks`] send them on: [`publish::Publisher`] to the events
//! topic (validate, key per the contract, send with the idempotent producer). The other
//! sinks take the coordinator's outputs out: [`pushback`] each channel's published
//! availability back through the channel's API, [`oncall`] the escalations to an on-call
//! endpoint in the PagerDuty Events API v2 shape.
//!
//! Every source and sink is built from an options struct (serde: its section of the connector
//! config, [`config::ConnectorConfig`], plus what the command line adds; `ndjson`'s and
//! `oncall`'s from the command line alone) and runs with
//! `run(shutdown)`. Each channel's mapping is a pure function from payload bytes to
//! [`mapping::Mapped`]; the sources hand that to [`deliver::deliver`], which publishes and
//! counts.

pub mod config;
pub mod decimal;
pub mod deliver;
pub mod mapping;
pub mod sinks;
pub mod sled_dir;
pub mod sources;
pub mod timefmt;

// the paths callers knew before sources and sinks had modules of their own
pub use sinks::{oncall, publish, pushback};
pub use sources::{amazon, b2b, files, http, ndjson, shopify, spapi, woocommerce};

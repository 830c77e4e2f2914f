//! Connectors: each channel's payloads in, contract events out, all through one publish
//! path ([`publish::Publisher`]): validate, map to `Event`, key per the contract, send with
//! the idempotent producer. And the way back: [`pushback`] sets each channel's published
//! availability through the channel's API.
//!
//! Adapters: [`ndjson`] (the contract's JSON form), [`shopify`], [`amazon`], [`woocommerce`]
//! (HTTP receivers in [`http`]), [`b2b`] (X12 850 and CSV in a drop directory, [`files`]).
//! Each adapter's mapping is a pure function from payload bytes to [`mapping::Mapped`]; the
//! receivers and watchers hand that to [`deliver::deliver`], which publishes and counts.
//! Adapter settings (channel ids, id mappings, secrets) come from the connector config,
//! [`config::ConnectorConfig`], not from the coordination contract.

pub mod amazon;
pub mod b2b;
pub mod config;
pub mod decimal;
pub mod deliver;
pub mod files;
pub mod http;
pub mod mapping;
pub mod ndjson;
pub mod publish;
pub mod pushback;
pub mod shopify;
pub mod timefmt;
pub mod woocommerce;

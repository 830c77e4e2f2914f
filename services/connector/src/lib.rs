//! Connectors: each channel's payloads in, contract events out, all through one publish
//! path ([`publish::Publisher`]): validate, map to `Event`, key per the contract, send with
//! the idempotent producer.

pub mod ndjson;
pub mod publish;

//! Sinks: where contract events and published availability go.
//!
//! - [`publish`]: the one publish path of every source, to the events topic (and the
//!   dead-letter topic for what a source cannot turn into an event).
//! - [`pushback`]: `omnifold.availability.v1` back to the channels' APIs, in order,
//!   rate-limited, built from `[pushback]` and run until shutdown.

pub mod publish;
pub mod pushback;

//! Sinks: where contract events, published availability and escalations go.
//!
//! - [`publish`]: the one publish path of every source, to the events topic (and the
//!   dead-letter topic for what a source cannot turn into an event).
//! - [`pushback`]: `omnifold.availability.v1` back to the channels' APIs, in order,
//!   rate-limited, built from `[pushback]` and run until shutdown.
//! - [`oncall`]: `omnifold.escalations.v1` to an on-call endpoint in the PagerDuty Events
//!   API v2 shape, exactly once per escalation id, built from its options and run until
//!   shutdown.

pub mod oncall;
pub mod publish;
pub mod pushback;

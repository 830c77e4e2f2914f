//! The coordinator: folds channel events into stock allocation, alerts and escalations
//! (CONTRACT.md sections 4 to 6), with exactly-once effects through a store outbox.

pub mod cli;
pub mod engine;
pub mod group;
pub mod http;
pub mod key_filter;
pub mod pacing;
pub mod persister;
pub mod progress;
pub mod recent_lines;
pub mod service;
pub mod status;
pub mod unsent;
pub mod watch;

pub use service::{Coordinator, CoordinatorError, CoordinatorOptions, Position, output_records};

//! omnifold's domain: the coordination contract and the pure fold that turns inbound events
//! into projections, availability, alerts and escalations.
//!
//! Architecture invariant: this crate never sees Kafka, the store, async or the clock. Its inputs
//! are the contract and events; its outputs are state and records to publish. That is what
//! makes replay exact and the rules testable as data (see `tests/scenarios`).

pub mod alerts;
pub mod allocation;
pub mod calendar;
pub mod contract;
pub mod cover;
pub mod demand;
pub mod escalation;
pub mod fact;
pub mod fold;
pub mod keyed;
pub mod ledger;
pub mod money;
pub mod price_alerts;
pub mod pricing;
pub mod replenishment;
pub mod report;
pub mod routing;
pub mod small_map;
pub mod stock;
pub mod stock_alerts;

pub use contract::{Contract, ContractProblem, Rules};
pub use fact::Rejection;
pub use fold::{Changes, Fold, Outcome, Output, PartitionState, RecordKey, SkuState};

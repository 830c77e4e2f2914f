//! The wire contract of omnifold (CONTRACT.md sections 2 and 4 to 7) as Rust types.
//!
//! The messages are generated at build time from `proto/omnifold/v1/*.proto`. The [`json`]
//! module holds the NDJSON form of inbound events that the generic connector reads.

pub mod borrowed;
pub mod json;

/// Generated protobuf messages of package `omnifold.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/omnifold.v1.rs"));
}

pub use v1::event::Body;
pub use v1::*;

impl Body {
    /// The contract's name of the body, as used in the JSON form's `type` field.
    pub fn type_name(&self) -> &'static str {
        match self {
            Body::OrderLinePlaced(_) => "OrderLinePlaced",
            Body::OrderLineCancelled(_) => "OrderLineCancelled",
            Body::OrderLineShipped(_) => "OrderLineShipped",
            Body::OrderLineReturned(_) => "OrderLineReturned",
            Body::StockAdjusted(_) => "StockAdjusted",
            Body::StockCounted(_) => "StockCounted",
            Body::PriceSet(_) => "PriceSet",
            Body::CostSet(_) => "CostSet",
            Body::PromotionScheduled(_) => "PromotionScheduled",
            Body::PromotionCancelled(_) => "PromotionCancelled",
            Body::CompetitorPriceObserved(_) => "CompetitorPriceObserved",
            Body::ChannelCostRecorded(_) => "ChannelCostRecorded",
        }
    }

    /// The SKU the body is about; `None` for channel-level bodies.
    pub fn sku(&self) -> Option<&str> {
        let sku = match self {
            Body::OrderLinePlaced(b) => &b.sku,
            Body::OrderLineCancelled(b) => &b.sku,
            Body::OrderLineShipped(b) => &b.sku,
            Body::OrderLineReturned(b) => &b.sku,
            Body::StockAdjusted(b) => &b.sku,
            Body::StockCounted(b) => &b.sku,
            Body::PriceSet(b) => &b.sku,
            Body::CostSet(b) => &b.sku,
            Body::PromotionScheduled(b) => &b.sku,
            Body::PromotionCancelled(b) => &b.sku,
            Body::CompetitorPriceObserved(b) => &b.sku,
            Body::ChannelCostRecorded(_) => return None,
        };
        Some(sku)
    }
}

impl Event {
    /// The record key of this event on the events topic: the SKU, or the channel id for
    /// channel-level events (CONTRACT.md section 1).
    pub fn partition_key(&self) -> &str {
        match self.body.as_ref().and_then(Body::sku) {
            Some(sku) => sku,
            None => &self.channel,
        }
    }
}

impl Money {
    /// Shorthand for building a money value.
    pub fn new(amount: impl Into<String>, currency: impl Into<String>) -> Self {
        Money { amount: amount.into(), currency: currency.into() }
    }
}

impl AlertKind {
    /// The contract's name, e.g. `OVERSELL`.
    pub fn name(self) -> &'static str {
        self.as_str_name().trim_start_matches("ALERT_KIND_")
    }
}

impl Severity {
    /// The contract's name, e.g. `CRITICAL`.
    pub fn name(self) -> &'static str {
        self.as_str_name().trim_start_matches("SEVERITY_")
    }
}

impl AlertState {
    /// The contract's name, e.g. `RAISED`.
    pub fn name(self) -> &'static str {
        self.as_str_name().trim_start_matches("ALERT_STATE_")
    }
}

impl AllocationMode {
    /// The contract's name, e.g. `SCARCITY`.
    pub fn name(self) -> &'static str {
        self.as_str_name().trim_start_matches("ALLOCATION_MODE_")
    }
}

impl AllocationRule {
    /// The contract's name, e.g. `proportional`.
    pub fn name(self) -> &'static str {
        match self {
            AllocationRule::Unspecified => "unspecified",
            AllocationRule::MaxShare => "max_share",
            AllocationRule::Priority => "priority",
            AllocationRule::Proportional => "proportional",
        }
    }
}

impl EscalationRule {
    /// The contract's name, e.g. `ORDER_SPIKE`.
    pub fn name(self) -> &'static str {
        self.as_str_name().trim_start_matches("ESCALATION_RULE_")
    }
}

impl Decision {
    /// The contract's name, e.g. `RETIRE_REVIEW`.
    pub fn name(self) -> &'static str {
        self.as_str_name().trim_start_matches("DECISION_")
    }
}

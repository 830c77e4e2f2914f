//! What every adapter's mapping returns: the events of one payload, and the parts of it that
//! were refused or deliberately ignored, each with a reason. Mapping is pure: no I/O, no
//! clock; the adapters hand the result to the one publish path ([`crate::deliver`]).

use omnifold_proto::{Body, Event, Money};
use rust_decimal::Decimal;
use serde::Serialize;

/// A part of a payload that produced no event, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// What was refused, e.g. `line 13924936679734` or `row 4`.
    pub item: String,
    /// A short, stable label for metrics, e.g. `empty_sku`.
    pub reason: &'static str,
    /// One readable sentence for logs and reject files.
    pub message: String,
}

/// The result of mapping one payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    pub events: Vec<Event>,
    /// Parts that should have produced events but could not (counted as rejections).
    pub refused: Vec<Refusal>,
    /// Parts that by design produce no event (e.g. a pending fulfillment).
    pub ignored: Vec<Refusal>,
    /// The absolute levels among `events` (a count that replaces on-hand), for the source's
    /// high-water marks ([`crate::sources::levels`]); mapping only names them.
    pub levels: Vec<Level>,
}

/// An absolute level a mapped event sets: what it counts and when the channel counted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    /// The event that sets it.
    pub event_id: String,
    /// What is counted, in the channel's own ids, e.g. `inventory:<item>:<location>`.
    pub key: String,
    /// When the channel counted it (the event's time).
    pub at_ms: i64,
}

impl Mapped {
    pub fn push(&mut self, event_id: String, channel: &str, occurred_at_ms: i64, body: Body) {
        self.events.push(Event { event_id, channel: channel.to_string(), occurred_at_ms, body: Some(body) });
    }

    /// Pushes an event that sets an absolute level (a `StockCounted`), and names the level:
    /// `key` is what is counted, in the channel's own ids.
    pub fn push_level(&mut self, event_id: String, key: String, occurred_at_ms: i64, body: Body) {
        self.levels.push(Level { event_id: event_id.clone(), key, at_ms: occurred_at_ms });
        self.push(event_id, "", occurred_at_ms, body);
    }

    pub fn refuse(&mut self, item: impl Into<String>, reason: &'static str, message: impl Into<String>) {
        self.refused.push(Refusal { item: item.into(), reason, message: message.into() });
    }

    pub fn ignore(&mut self, item: impl Into<String>, reason: &'static str, message: impl Into<String>) {
        self.ignored.push(Refusal { item: item.into(), reason, message: message.into() });
    }

    /// Appends another mapping's events and refusals.
    pub fn extend(&mut self, other: Mapped) {
        self.events.extend(other.events);
        self.refused.extend(other.refused);
        self.ignored.extend(other.ignored);
        self.levels.extend(other.levels);
    }
}

/// A payload that cannot be mapped at all (answered with 400, nothing published).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl Malformed {
    pub fn new(message: impl Into<String>) -> Self {
        Malformed(message.into())
    }

    pub fn json(what: &str, error: &serde_json::Error) -> Self {
        Malformed(format!("malformed {what} body: {error}"))
    }
}

/// Money from an exact decimal.
pub fn money(amount: Decimal, currency: &str) -> Money {
    Money::new(amount.to_string(), currency)
}

/// `Some(money)` when the amount is above zero; an absent discount means 0.
pub fn money_if_positive(amount: Decimal, currency: &str) -> Option<Money> {
    (amount > Decimal::ZERO).then(|| money(amount, currency))
}

/// A trimmed, non-empty SKU.
pub fn non_empty(sku: Option<&str>) -> Option<&str> {
    sku.map(str::trim).filter(|s| !s.is_empty())
}

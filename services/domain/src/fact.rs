//! Checking an inbound event against CONTRACT.md section 2 without looking at state, and
//! turning it into a typed [`Fact`]. Checks that need state (a line that must exist, a
//! promotion scheduled twice) live with the state they read.

use std::fmt;

use omnifold_proto::{Body, Event, Money};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use compact_str::CompactString;

use crate::contract::Rules;
use crate::money::{Amount, MoneyError, parse_decimal};
use crate::report::week::WEEK_MS;

/// Identity of an order line: (channel, order_id, line_id). A fold held in memory keeps one
/// per line it ever saw; ids up to 24 bytes are held inline, without an allocation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LineKey {
    pub channel: CompactString,
    pub order_id: CompactString,
    pub line_id: CompactString,
}

impl fmt::Display for LineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.channel, self.order_id, self.line_id)
    }
}

/// Why an event was refused. It goes to the dead-letter topic with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("payload is not a decodable omnifold.v1.Event: {0}")]
    Undecodable(String),
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("event_id is {0} characters long, more than 200")]
    EventIdTooLong(usize),
    #[error("occurred_at_ms {0} is not greater than 0")]
    BadTime(i64),
    #[error("occurred_at_ms {0} is after the year 9999")]
    TimeOutOfRange(i64),
    #[error(
        "period [{start}, {end}) is negative, after the year 9999 or longer than {MAX_PERIOD_WEEKS} weeks"
    )]
    PeriodOutOfRange { start: i64, end: i64 },
    #[error("{0} needs a channel")]
    MissingChannel(&'static str),
    #[error("unknown channel {0}")]
    UnknownChannel(String),
    #[error("unknown location {0}")]
    UnknownLocation(String),
    #[error("{field}: {source}")]
    Money { field: &'static str, source: MoneyError },
    #[error("{field} {value} is not greater than 0")]
    NotPositive { field: &'static str, value: i64 },
    #[error("{0} must be greater than 0")]
    ZeroPrice(&'static str),
    #[error("delta is 0")]
    ZeroDelta,
    #[error("on_hand {0} is negative")]
    NegativeCount(i64),
    #[error("percent_off {0} is outside (0, 1)")]
    PercentOffOutOfRange(String),
    #[error("empty or inverted period [{start}, {end})")]
    EmptyPeriod { start: i64, end: i64 },
    #[error("a restocked return needs a location_id")]
    RestockWithoutLocation,
    #[error("order line {0} is already placed")]
    DuplicateLine(LineKey),
    #[error("order line {line} is not known for sku {sku} (never placed, or placed with another sku)")]
    UnknownLine { line: LineKey, sku: String },
    #[error("shipment of {quantity} exceeds the open quantity {open} of order line {line}")]
    ShipBeyondOpen { line: LineKey, quantity: i64, open: i64 },
    #[error(
        "return of {quantity} exceeds the {returnable} shipped and not yet returned units of order line {line}"
    )]
    ReturnBeyondShipped { line: LineKey, quantity: i64, returnable: i64 },
    #[error("promotion {0} is already scheduled")]
    DuplicatePromotion(String),
    #[error("promotion {0} is not known")]
    UnknownPromotion(String),
}

/// A placed order line.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub line: LineKey,
    pub sku: CompactString,
    pub quantity: i64,
    pub location: Option<String>,
    pub unit_price: Amount,
    pub discount: Option<Amount>,
    pub channel_fee: Option<Amount>,
}

/// A shipment of an order line.
#[derive(Debug, Clone, PartialEq)]
pub struct Shipped {
    pub line: LineKey,
    pub sku: CompactString,
    pub quantity: i64,
    pub location: String,
    pub fulfillment_cost: Option<Amount>,
}

/// A return of an order line.
#[derive(Debug, Clone, PartialEq)]
pub struct Returned {
    pub line: LineKey,
    pub sku: CompactString,
    pub quantity: i64,
    pub refund: Amount,
    /// The location restocked units go back to; `None` when nothing is restocked.
    pub restock_at: Option<String>,
}

/// A promotion as scheduled.
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    pub promotion_id: String,
    pub sku: CompactString,
    pub percent_off: Decimal,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
}

/// An inbound event that passed every stateless check of CONTRACT.md section 2.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    Placed(Placed),
    Cancelled { line: LineKey, sku: CompactString },
    Shipped(Shipped),
    Returned(Returned),
    Adjusted { sku: CompactString, location: String, delta: i64 },
    Counted { sku: CompactString, location: String, on_hand: i64 },
    PriceSet { sku: CompactString, price: Amount },
    CostSet { sku: CompactString, unit_cost: Amount },
    PromotionScheduled(Promotion),
    PromotionCancelled { promotion_id: String, sku: CompactString },
    CompetitorObserved { sku: CompactString, competitor: String, price: Amount },
    ChannelCost { category: String, amount: Amount, period_start_ms: i64, period_end_ms: i64 },
}

impl Fact {
    /// The SKU this fact is about; `None` for channel-level facts.
    pub fn sku(&self) -> Option<&str> {
        match self {
            Fact::Placed(p) => Some(&p.sku),
            Fact::Shipped(s) => Some(&s.sku),
            Fact::Returned(r) => Some(&r.sku),
            Fact::PromotionScheduled(p) => Some(&p.sku),
            Fact::Cancelled { sku, .. }
            | Fact::Adjusted { sku, .. }
            | Fact::Counted { sku, .. }
            | Fact::PriceSet { sku, .. }
            | Fact::CostSet { sku, .. }
            | Fact::PromotionCancelled { sku, .. }
            | Fact::CompetitorObserved { sku, .. } => Some(sku),
            Fact::ChannelCost { .. } => None,
        }
    }
}

/// A ChannelCostRecorded period longer than this many weeks (about ten years) is refused:
/// the report spreads it over one cell per week.
pub const MAX_PERIOD_WEEKS: i64 = 530;

/// 10000-01-01T00:00:00Z. Later event times (and periods) are refused: every week up to the
/// watermark is reported, so one absurd timestamp would close billions of weeks.
pub const MAX_TIME_MS: i64 = 253_402_300_800_000;

/// Checks the envelope and body of `event` and builds its fact.
pub fn check(rules: &Rules, event: &Event) -> Result<Fact, Rejection> {
    check_envelope(event)?;
    let body = event.body.as_ref().expect("checked by check_envelope");
    let checker = Checker { rules, channel: &event.channel };
    checker.channel_rule(body)?;
    checker.body(body)
}

/// Checks the envelope alone: event id, event time and body.
pub fn check_envelope(event: &Event) -> Result<(), Rejection> {
    if event.event_id.is_empty() {
        return Err(Rejection::MissingField("event_id"));
    }
    let len = event.event_id.chars().count();
    if len > 200 {
        return Err(Rejection::EventIdTooLong(len));
    }
    if event.occurred_at_ms <= 0 {
        return Err(Rejection::BadTime(event.occurred_at_ms));
    }
    // every week up to the latest event time is reported: one absurd time would open
    // billions of weeks, so the coordinator refuses it like everything else it refuses
    if event.occurred_at_ms > MAX_TIME_MS {
        return Err(Rejection::TimeOutOfRange(event.occurred_at_ms));
    }
    if event.body.is_none() {
        return Err(Rejection::MissingField("body"));
    }
    Ok(())
}

struct Checker<'a> {
    rules: &'a Rules,
    channel: &'a str,
}

impl Checker<'_> {
    /// Stock events carry no channel (a known one is ignored); CostSet may carry one; every
    /// other body needs a known channel.
    fn channel_rule(&self, body: &Body) -> Result<(), Rejection> {
        let optional = matches!(body, Body::StockAdjusted(_) | Body::StockCounted(_) | Body::CostSet(_));
        if self.channel.is_empty() {
            return if optional { Ok(()) } else { Err(Rejection::MissingChannel(body.type_name())) };
        }
        match self.rules.channel(self.channel) {
            Some(_) => Ok(()),
            None => Err(Rejection::UnknownChannel(self.channel.to_string())),
        }
    }

    fn body(&self, body: &Body) -> Result<Fact, Rejection> {
        Ok(match body {
            Body::OrderLinePlaced(b) => Fact::Placed(Placed {
                line: self.line(&b.order_id, &b.line_id)?,
                sku: sku(&b.sku)?,
                quantity: positive("quantity", b.quantity)?,
                location: b.location_id.as_deref().map(|l| self.location(l)).transpose()?,
                unit_price: self.money("unit_price", b.unit_price.as_ref())?,
                discount: self.optional_money("discount", b.discount.as_ref())?,
                channel_fee: self.optional_money("channel_fee", b.channel_fee.as_ref())?,
            }),
            Body::OrderLineCancelled(b) => {
                Fact::Cancelled { line: self.line(&b.order_id, &b.line_id)?, sku: sku(&b.sku)? }
            }
            Body::OrderLineShipped(b) => Fact::Shipped(Shipped {
                line: self.line(&b.order_id, &b.line_id)?,
                sku: sku(&b.sku)?,
                quantity: positive("quantity", b.quantity)?,
                location: self.location(required("location_id", &b.location_id)?)?,
                fulfillment_cost: self.optional_money("fulfillment_cost", b.fulfillment_cost.as_ref())?,
            }),
            Body::OrderLineReturned(b) => Fact::Returned(Returned {
                line: self.line(&b.order_id, &b.line_id)?,
                sku: sku(&b.sku)?,
                quantity: positive("quantity", b.quantity)?,
                refund: self.money("refund", b.refund.as_ref())?,
                restock_at: self.restock_location(b.restock, b.location_id.as_deref())?,
            }),
            Body::StockAdjusted(b) => {
                if b.delta == 0 {
                    return Err(Rejection::ZeroDelta);
                }
                Fact::Adjusted { sku: sku(&b.sku)?, location: self.location(&b.location_id)?, delta: b.delta }
            }
            Body::StockCounted(b) => {
                if b.on_hand < 0 {
                    return Err(Rejection::NegativeCount(b.on_hand));
                }
                Fact::Counted {
                    sku: sku(&b.sku)?,
                    location: self.location(&b.location_id)?,
                    on_hand: b.on_hand,
                }
            }
            Body::PriceSet(b) => {
                Fact::PriceSet { sku: sku(&b.sku)?, price: self.price("price", b.price.as_ref())? }
            }
            Body::CostSet(b) => {
                Fact::CostSet { sku: sku(&b.sku)?, unit_cost: self.money("unit_cost", b.unit_cost.as_ref())? }
            }
            Body::PromotionScheduled(b) => Fact::PromotionScheduled(Promotion {
                promotion_id: required("promotion_id", &b.promotion_id)?.to_string(),
                sku: sku(&b.sku)?,
                percent_off: percent_off(&b.percent_off)?,
                starts_at_ms: b.starts_at_ms,
                ends_at_ms: period(b.starts_at_ms, b.ends_at_ms)?,
            }),
            Body::PromotionCancelled(b) => Fact::PromotionCancelled {
                promotion_id: required("promotion_id", &b.promotion_id)?.to_string(),
                sku: sku(&b.sku)?,
            },
            Body::CompetitorPriceObserved(b) => Fact::CompetitorObserved {
                sku: sku(&b.sku)?,
                competitor: required("competitor", &b.competitor)?.to_string(),
                price: self.money("price", b.price.as_ref())?,
            },
            Body::ChannelCostRecorded(b) => Fact::ChannelCost {
                category: required("category", &b.category)?.to_string(),
                amount: self.money("amount", b.amount.as_ref())?,
                period_start_ms: b.period_start_ms,
                period_end_ms: cost_period(b.period_start_ms, b.period_end_ms)?,
            },
        })
    }

    fn line(&self, order_id: &str, line_id: &str) -> Result<LineKey, Rejection> {
        Ok(LineKey {
            channel: self.channel.into(),
            order_id: required("order_id", order_id)?.into(),
            line_id: required("line_id", line_id)?.into(),
        })
    }

    fn location(&self, id: &str) -> Result<String, Rejection> {
        let id = required("location_id", id)?;
        match self.rules.location(id) {
            Some(_) => Ok(id.to_string()),
            None => Err(Rejection::UnknownLocation(id.to_string())),
        }
    }

    fn restock_location(&self, restock: bool, location: Option<&str>) -> Result<Option<String>, Rejection> {
        match (restock, location) {
            (false, _) => Ok(None),
            (true, None | Some("")) => Err(Rejection::RestockWithoutLocation),
            (true, Some(id)) => self.location(id).map(Some),
        }
    }

    fn money(&self, field: &'static str, money: Option<&Money>) -> Result<Amount, Rejection> {
        let money = money.ok_or(Rejection::MissingField(field))?;
        let amount = Amount::parse(money).map_err(|source| Rejection::Money { field, source })?;
        if !self.rules.contract.has_rate(&amount.currency) {
            let source = MoneyError::NoRate(amount.currency.into());
            return Err(Rejection::Money { field, source });
        }
        Ok(amount)
    }

    fn optional_money(
        &self,
        field: &'static str,
        money: Option<&Money>,
    ) -> Result<Option<Amount>, Rejection> {
        money.map(|m| self.money(field, Some(m))).transpose()
    }

    /// A listed price must be greater than 0.
    fn price(&self, field: &'static str, money: Option<&Money>) -> Result<Amount, Rejection> {
        let amount = self.money(field, money)?;
        if amount.value.is_zero() {
            return Err(Rejection::ZeroPrice(field));
        }
        Ok(amount)
    }
}

fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str, Rejection> {
    if value.is_empty() { Err(Rejection::MissingField(field)) } else { Ok(value) }
}

/// A SKU id as the fact holds it: inline up to 24 bytes, so checking an event allocates
/// nothing for it.
fn sku(value: &str) -> Result<CompactString, Rejection> {
    required("sku", value).map(CompactString::from)
}

fn positive(field: &'static str, value: i64) -> Result<i64, Rejection> {
    if value > 0 { Ok(value) } else { Err(Rejection::NotPositive { field, value }) }
}

fn percent_off(text: &str) -> Result<Decimal, Rejection> {
    let value = parse_decimal(required("percent_off", text)?)
        .map_err(|_| Rejection::PercentOffOutOfRange(text.to_string()))?;
    if value > Decimal::ZERO && value < Decimal::ONE {
        Ok(value)
    } else {
        Err(Rejection::PercentOffOutOfRange(text.to_string()))
    }
}

/// Checks that [start, end) is a non-empty period and returns its end.
/// A channel cost's period: spread over one cell per week, so it is bounded.
fn cost_period(start: i64, end: i64) -> Result<i64, Rejection> {
    let end = period(start, end)?;
    if start < 0 || end > MAX_TIME_MS || end - start > MAX_PERIOD_WEEKS * WEEK_MS {
        return Err(Rejection::PeriodOutOfRange { start, end });
    }
    Ok(end)
}

fn period(start: i64, end: i64) -> Result<i64, Rejection> {
    if end > start { Ok(end) } else { Err(Rejection::EmptyPeriod { start, end }) }
}

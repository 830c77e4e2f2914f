//! The first stage of the report: one input partition's own share of every weekly figure.
//!
//! [`EventLedger`] folds one partition of `omnifold.events.v1`. It accepts and refuses
//! events exactly as the coordinator does (the stateless checks of [`fact::check`], then the
//! same stateful rules: duplicate ids, unknown or over-shipped lines, promotions), because a
//! refused event must be excluded from every figure. To pro-rate a line's discount and fee
//! it keeps each line's terms (placed quantity, unit price, discount, fee), and to price
//! COGS it keeps the SKU's unit cost as last set. [`AlertLedger`] counts the RAISED alerts of
//! one partition of `omnifold.alerts.v1`.
//!
//! Both produce [`Partial`]s per [`Cell`]; the figures of a cell are attributed by the event
//! time of the event that caused them (an operating-cost period by its overlap with the week).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use omnifold_proto::{Alert, AlertKind, AlertState, Event, Severity};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::partial::{Cell, Partial, prorate};
use super::week::Calendar;
use crate::contract::Rules;
use crate::fact::{self, Fact, LineKey, Placed, Rejection, Returned, Shipped};
use crate::ledger::{optional, reporting};

/// What an accepted event changed: the SKU whose book changed (if any), and the figures it
/// adds per cell.
type Recorded = (Option<String>, Vec<(Cell, Partial)>);

/// The terms of one order line, in reporting currency, and how many units went where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineTerms {
    pub placed: i64,
    pub shipped: i64,
    pub cancelled: i64,
    pub returned: i64,
    pub unit_price: Decimal,
    /// The whole line's discount.
    pub discount: Decimal,
    /// The whole line's channel fee.
    pub channel_fee: Decimal,
}

impl LineTerms {
    fn open(&self) -> i64 {
        self.placed - self.shipped - self.cancelled
    }
}

/// What the report needs to know of one SKU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuBook {
    pub lines: BTreeMap<LineKey, LineTerms>,
    /// The unit cost in reporting currency, as last set (in processing order).
    pub unit_cost: Option<Decimal>,
    /// Promotions by (channel, promotion_id): whether each is cancelled. Kept only to accept
    /// and refuse promotion events as the coordinator does.
    pub promotions: BTreeMap<(String, String), bool>,
}

/// The event times an input partition accepted: the watermark and the first reported week
/// follow from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

impl Span {
    fn include(&mut self, at_ms: i64) {
        self.first_ms = Some(self.first_ms.map_or(at_ms, |first| first.min(at_ms)));
        self.last_ms = Some(self.last_ms.map_or(at_ms, |last| last.max(at_ms)));
    }

    /// The span covering both.
    pub fn union(self, other: Span) -> Span {
        let pick = |a: Option<i64>, b: Option<i64>, f: fn(i64, i64) -> i64| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            (a, b) => a.or(b),
        };
        Span {
            first_ms: pick(self.first_ms, other.first_ms, i64::min),
            last_ms: pick(self.last_ms, other.last_ms, i64::max),
        }
    }
}

/// Which input topic a partial comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SourceKind {
    Events,
    Alerts,
}

/// One input partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Source {
    pub kind: SourceKind,
    pub partition: i32,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SourceKind::Events => "events",
            SourceKind::Alerts => "alerts",
        };
        write!(f, "{kind}/{}", self.partition)
    }
}

/// What one input partition knows after consuming up to (not including) `offset`: its span
/// and the absolute value of every cell that changed. Absolute, not deltas: applying a
/// record twice, or an older one after a newer one, changes nothing (see `merge.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialRecord {
    pub source: Source,
    pub offset: i64,
    pub span: Span,
    pub cells: Vec<(Cell, Partial)>,
}

/// How far an input partition is from its end: `behind` records were unread when its next
/// offset was `offset` ([`END_UNKNOWN`] while its end is not known). Not a figure: the
/// merger publishes a week's first revision only once every events partition is at its end
/// or past the week, and holds restatements while an input is replayed (see
/// [`super::merge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lag {
    pub source: Source,
    pub offset: i64,
    pub behind: i64,
}

/// `behind` of a partition whose end is not known (no high watermark yet, or one older than
/// the position): not at its end, and not far enough behind to hold restatements.
pub const END_UNKNOWN: i64 = -1;

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Accepted: the id is remembered; `sku`'s book (if any) and `cells` changed.
    Accepted { sku: Option<String>, cells: BTreeSet<Cell> },
    /// An id already accepted: ignored.
    Duplicate,
    /// Refused: nothing changed; the event goes to the dead-letter topic.
    Rejected(Rejection),
}

/// The report's state of one events partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLedger {
    pub skus: HashMap<String, SkuBook>,
    pub seen: HashSet<String>,
    pub cells: BTreeMap<Cell, Partial>,
    pub span: Span,
}

impl EventLedger {
    /// Applies one event; a refused or duplicate event changes nothing.
    pub fn apply(&mut self, rules: &Rules, event: &Event) -> Applied {
        if self.seen.contains(&event.event_id) {
            return Applied::Duplicate;
        }
        let fact = match fact::check(rules, event) {
            Ok(fact) => fact,
            Err(rejection) => return Applied::Rejected(rejection),
        };
        let at_ms = event.occurred_at_ms;
        let calendar = Calendar::of(&rules.contract.reporting);
        let figures = match fact.sku().map(str::to_string) {
            None => channel_cost(rules, &calendar, &event.channel, &fact),
            Some(sku) => {
                self.record_sku(rules, &sku, &fact, Cell::new(calendar.week_of(at_ms), &event.channel))
            }
        };
        let (sku, figures) = match figures {
            Ok(figures) => figures,
            Err(rejection) => return Applied::Rejected(rejection),
        };
        let mut cells = BTreeSet::new();
        for (cell, partial) in figures {
            self.cells.entry(cell.clone()).or_default().merge(&partial);
            cells.insert(cell);
        }
        self.span.include(at_ms);
        self.seen.insert(event.event_id.clone());
        Applied::Accepted { sku, cells }
    }

    fn record_sku(
        &mut self,
        rules: &Rules,
        sku: &str,
        fact: &Fact,
        cell: Cell,
    ) -> Result<Recorded, Rejection> {
        let existed = self.skus.contains_key(sku);
        let book = self.skus.entry(sku.to_string()).or_default();
        match book.record(rules, fact, cell) {
            Ok(figures) => Ok((Some(sku.to_string()), figures)),
            Err(rejection) => {
                if !existed {
                    self.skus.remove(sku);
                }
                Err(rejection)
            }
        }
    }

    /// The record of this partition's cells in `changed`, as of `offset`.
    pub fn record(&self, partition: i32, offset: i64, changed: &BTreeSet<Cell>) -> PartialRecord {
        let source = Source { kind: SourceKind::Events, partition };
        PartialRecord { source, offset, span: self.span, cells: pick(&self.cells, changed) }
    }
}

fn pick(cells: &BTreeMap<Cell, Partial>, changed: &BTreeSet<Cell>) -> Vec<(Cell, Partial)> {
    changed.iter().filter_map(|cell| cells.get(cell).map(|p| (cell.clone(), p.clone()))).collect()
}

/// A ChannelCostRecorded: its amount spread over the weeks its period overlaps, in
/// proportion to the overlap in milliseconds.
fn channel_cost(
    rules: &Rules,
    calendar: &Calendar,
    channel: &str,
    fact: &Fact,
) -> Result<Recorded, Rejection> {
    let Fact::ChannelCost { amount, period_start_ms: start, period_end_ms: end, .. } = fact else {
        return Ok((None, Vec::new()));
    };
    // fact::check bounds the period (and every event time), so the spread is bounded too
    let (start, end) = (*start, *end);
    let (first, last) = (calendar.week_of(start), calendar.week_of(end - 1));
    let total = reporting(rules, "amount", amount)?;
    let length = end - start;
    let mut figures = Vec::new();
    let mut week = first;
    while week <= last {
        let before = calendar.start_ms(week).max(start) - start;
        let after = calendar.end_ms(week).min(end) - start;
        let partial =
            Partial { recorded_operating_cost: prorate(total, before, after, length), ..Partial::default() };
        figures.push((Cell::new(week, channel), partial));
        week = week.next();
    }
    Ok((None, figures))
}

impl SkuBook {
    /// Checks a fact against the book, then records it; on error nothing has changed.
    /// Returns the figures it adds to `cell` (the event's week and channel).
    fn record(&mut self, rules: &Rules, fact: &Fact, cell: Cell) -> Result<Vec<(Cell, Partial)>, Rejection> {
        let partial = match fact {
            Fact::Placed(placed) => {
                self.place(rules, placed)?;
                None
            }
            Fact::Cancelled { line, sku } => {
                let terms = self.line_mut(line, sku)?;
                terms.cancelled += terms.open();
                None
            }
            Fact::Shipped(shipped) => Some(self.ship(rules, shipped)?),
            Fact::Returned(returned) => Some(self.take_return(rules, returned)?),
            Fact::CostSet { unit_cost, .. } => {
                self.unit_cost = Some(reporting(rules, "unit_cost", unit_cost)?);
                None
            }
            Fact::PromotionScheduled(promotion) => {
                let key = (cell.channel.clone(), promotion.promotion_id.clone());
                if self.promotions.contains_key(&key) {
                    return Err(Rejection::DuplicatePromotion(format!("{}:{}", key.0, key.1)));
                }
                self.promotions.insert(key, false);
                None
            }
            Fact::PromotionCancelled { promotion_id, .. } => {
                let key = (cell.channel.clone(), promotion_id.clone());
                let cancelled = self
                    .promotions
                    .get_mut(&key)
                    .ok_or_else(|| Rejection::UnknownPromotion(format!("{}:{}", key.0, key.1)))?;
                *cancelled = true;
                None
            }
            Fact::Adjusted { .. }
            | Fact::Counted { .. }
            | Fact::PriceSet { .. }
            | Fact::CompetitorObserved { .. }
            | Fact::ChannelCost { .. } => None,
        };
        Ok(partial.into_iter().map(|partial| (cell.clone(), partial)).collect())
    }

    fn place(&mut self, rules: &Rules, placed: &Placed) -> Result<(), Rejection> {
        if self.lines.contains_key(&placed.line) {
            return Err(Rejection::DuplicateLine(placed.line.clone()));
        }
        let terms = LineTerms {
            placed: placed.quantity,
            shipped: 0,
            cancelled: 0,
            returned: 0,
            unit_price: reporting(rules, "unit_price", &placed.unit_price)?,
            discount: optional(rules, "discount", placed.discount.as_ref())?,
            channel_fee: optional(rules, "channel_fee", placed.channel_fee.as_ref())?,
        };
        self.lines.insert(placed.line.clone(), terms);
        Ok(())
    }

    /// Revenue, discount and fee shares, COGS at the cost in force, fulfillment.
    fn ship(&mut self, rules: &Rules, shipped: &Shipped) -> Result<Partial, Rejection> {
        let fulfillment = optional(rules, "fulfillment_cost", shipped.fulfillment_cost.as_ref())?;
        let unit_cost = self.unit_cost.unwrap_or(Decimal::ZERO);
        let terms = self.line_mut(&shipped.line, &shipped.sku)?;
        let (quantity, open) = (shipped.quantity, terms.open());
        if quantity > open {
            return Err(Rejection::ShipBeyondOpen { line: shipped.line.clone(), quantity, open });
        }
        let (before, after) = (terms.shipped, terms.shipped + quantity);
        terms.shipped = after;
        let units = Decimal::from(quantity);
        Ok(Partial {
            gross_revenue: terms.unit_price * units,
            discounts: prorate(terms.discount, before, after, terms.placed),
            channel_fees: prorate(terms.channel_fee, before, after, terms.placed),
            cogs: unit_cost * units,
            fulfillment_costs: fulfillment,
            units_shipped: quantity,
            orders: BTreeSet::from([shipped.line.order_id.clone()]),
            ..Partial::default()
        })
    }

    /// The refund, and the cost in force of restocked units.
    fn take_return(&mut self, rules: &Rules, returned: &Returned) -> Result<Partial, Rejection> {
        let refund = reporting(rules, "refund", &returned.refund)?;
        let unit_cost = self.unit_cost.unwrap_or(Decimal::ZERO);
        let terms = self.line_mut(&returned.line, &returned.sku)?;
        let returnable = terms.shipped - terms.returned;
        if returned.quantity > returnable {
            let line = returned.line.clone();
            return Err(Rejection::ReturnBeyondShipped { line, quantity: returned.quantity, returnable });
        }
        terms.returned += returned.quantity;
        let restocked = if returned.restock_at.is_some() {
            unit_cost * Decimal::from(returned.quantity)
        } else {
            Decimal::ZERO
        };
        Ok(Partial { refunds: refund, restocked_cogs: restocked, ..Partial::default() })
    }

    fn line_mut(&mut self, line: &LineKey, sku: &str) -> Result<&mut LineTerms, Rejection> {
        self.lines
            .get_mut(line)
            .ok_or_else(|| Rejection::UnknownLine { line: line.clone(), sku: sku.to_string() })
    }
}

/// The report's state of one alerts partition: RAISED alert counts per cell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertLedger {
    /// Ids of the RAISED alerts counted; a re-delivered alert is counted once.
    pub seen: HashSet<String>,
    pub cells: BTreeMap<Cell, Partial>,
}

impl AlertLedger {
    /// Counts a RAISED alert once for each contract channel it names, in the week of its
    /// `occurred_at_ms`, and a CRITICAL one also for the channel accountable for it. Returns
    /// the cells that changed; empty for anything else.
    pub fn apply(&mut self, rules: &Rules, alert: &Alert) -> BTreeSet<Cell> {
        let mut changed = BTreeSet::new();
        if alert.state != AlertState::Raised as i32 || !self.seen.insert(alert.alert_id.clone()) {
            return changed;
        }
        let week = Calendar::of(&rules.contract.reporting).week_of(alert.occurred_at_ms);
        let kind = AlertKind::try_from(alert.kind).map_or("UNKNOWN", AlertKind::name).to_string();
        let channels: BTreeSet<&String> =
            alert.channels.iter().filter(|c| rules.channel(c).is_some()).collect();
        for channel in channels {
            let cell = Cell::new(week, channel);
            *self.cells.entry(cell.clone()).or_default().alerts.entry(kind.clone()).or_default() += 1;
            changed.insert(cell);
        }
        let critical = alert.severity == Severity::Critical as i32;
        if let Some(channel) = accountable_channel(rules, alert).filter(|_| critical) {
            let cell = Cell::new(week, channel);
            let partial = self.cells.entry(cell.clone()).or_default();
            *partial.accountable_critical.entry(kind).or_default() += 1;
            if !alert.sku.is_empty() {
                *partial.accountable_critical_skus.entry(alert.sku.clone()).or_default() += 1;
            }
            changed.insert(cell);
        }
        changed
    }

    /// The record of this partition's cells in `changed`, as of `offset`.
    pub fn record(&self, partition: i32, offset: i64, changed: &BTreeSet<Cell>) -> PartialRecord {
        let source = Source { kind: SourceKind::Alerts, partition };
        PartialRecord { source, offset, span: Span::default(), cells: pick(&self.cells, changed) }
    }
}

/// The contract channel accountable for an alert, if any (none: `operations`).
///
/// An alert written before contract v1.1 has no `accountable`. For the kinds whose
/// accountable is by definition the subject's channel (CONTRACT.md section 5) that is the one
/// channel it names; for the others it depended on the raising event, which the alert does
/// not carry, so no channel is held accountable.
fn accountable_channel<'a>(rules: &Rules, alert: &'a Alert) -> Option<&'a str> {
    let accountable = if alert.accountable.is_empty() {
        let subject_channel = matches!(
            AlertKind::try_from(alert.kind),
            Ok(AlertKind::PriceBelowFloor
                | AlertKind::MapViolation
                | AlertKind::CompetitorUndercut
                | AlertKind::AllocationBreach)
        );
        match alert.channels.as_slice() {
            [channel] if subject_channel => channel.as_str(),
            _ => return None,
        }
    } else {
        alert.accountable.as_str()
    };
    rules.channel(accountable).is_some().then_some(accountable)
}

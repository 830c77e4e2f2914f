//! The first stage of the report: one input partition's own share of every weekly figure.
//!
//! [`PartitionLedger`] folds one partition of the contribution ledger (`omnifold.ledger.v1`),
//! which mirrors the events partition of the same number: the coordinator, the only
//! acceptor, wrote there what each event it accepted is worth. No rule is applied again
//! here; an entry is summed into the cell of its week and channel. [`AlertLedger`] counts the
//! RAISED alerts of one partition of `omnifold.alerts.v1`.
//!
//! Both produce [`Partial`]s per [`Cell`]; the figures of a cell are attributed by the event
//! time of the event that caused them (an operating-cost period by its overlap with the week).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;

use omnifold_proto::{Alert, AlertKind, AlertState, LedgerEntry, LedgerKind, Severity};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::partial::{Cell, Partial, prorate};
use super::week::Calendar;
use crate::contract::Rules;

/// The event times an input partition accepted: the watermark and the first reported week
/// follow from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

impl Span {
    fn include(&mut self, first_ms: i64, last_ms: i64) {
        self.first_ms = Some(self.first_ms.map_or(first_ms, |first| first.min(first_ms)));
        self.last_ms = Some(self.last_ms.map_or(last_ms, |last| last.max(last_ms)));
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

/// Which input topic a partial comes from: an events partition (read through the ledger
/// partition that mirrors it) or an alerts partition.
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
/// and the absolute value of every cell that changed, plus the orders it saw shipped since
/// its last record. Cells are absolute, not deltas: applying a record twice, or an older one
/// after a newer one, changes nothing (see `merge.rs`); orders are a set per cell, which the
/// merge stage unites, so they are idempotent too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialRecord {
    pub source: Source,
    pub offset: i64,
    pub span: Span,
    pub cells: Vec<(Cell, Partial)>,
    /// Order ids with a shipment in the cell, read since the source's previous record: each
    /// shipment's order travels once, never a cell's whole set.
    #[serde(default)]
    pub orders: Vec<(Cell, BTreeSet<String>)>,
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

/// What applying one ledger entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Folded: `cells` changed (none for a progress marker).
    Folded { cells: BTreeSet<Cell> },
    /// An entry of an event already folded (the coordinator's store was rebuilt and wrote
    /// its ledger again): ignored.
    Duplicate,
}

/// A ledger entry the report cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("ledger entry {entry}: {field} {value:?} is not a decimal")]
    NotDecimal { entry: String, field: &'static str, value: String },
    #[error("ledger entry {entry}: unknown kind {kind}")]
    UnknownKind { entry: String, kind: i32 },
    #[error("ledger entry {entry}: the period [{start}, {end}) is empty or out of range")]
    BadPeriod { entry: String, start: i64, end: i64 },
}

/// The report's state of one ledger partition: its cells, the span of event times the
/// coordinator accepted there, how far it has folded the events partition, and whether the
/// coordinator was at that partition's end at its last marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLedger {
    #[serde(skip)]
    pub cells: BTreeMap<Cell, Partial>,
    pub span: Span,
    /// The highest event offset whose entry is folded; entries at or below it are
    /// duplicates. Positions, not ids: the state does not grow with the entries.
    pub folded_through: i64,
    /// `events_behind` of the last progress marker ([`END_UNKNOWN`] before one).
    pub coordinator_behind: i64,
    /// Orders shipped since the last [`PartitionLedger::record`], by cell.
    #[serde(skip)]
    shipped: BTreeMap<Cell, BTreeSet<String>>,
}

impl Default for PartitionLedger {
    fn default() -> Self {
        PartitionLedger {
            cells: BTreeMap::new(),
            span: Span::default(),
            folded_through: -1,
            coordinator_behind: END_UNKNOWN,
            shipped: BTreeMap::new(),
        }
    }
}

impl PartitionLedger {
    /// Folds one entry; an entry that cannot be read changes nothing.
    pub fn apply(&mut self, rules: &Rules, entry: &LedgerEntry) -> Result<Applied, EntryError> {
        let kind = LedgerKind::try_from(entry.kind)
            .map_err(|_| EntryError::UnknownKind { entry: entry.entry_id.clone(), kind: entry.kind })?;
        if kind == LedgerKind::Progress {
            self.progress(entry);
            return Ok(Applied::Folded { cells: BTreeSet::new() });
        }
        if entry.event_offset <= self.folded_through {
            return Ok(Applied::Duplicate);
        }
        let calendar = Calendar::of(&rules.contract.reporting);
        let cell = Cell::new(calendar.week_of(entry.occurred_at_ms), &entry.channel);
        let figures = match kind {
            LedgerKind::Shipment => vec![(cell.clone(), shipment(entry)?)],
            LedgerKind::Return => vec![(cell.clone(), returned(entry)?)],
            LedgerKind::ChannelCost => spread(&calendar, entry)?,
            LedgerKind::Unspecified | LedgerKind::Progress => {
                return Err(EntryError::UnknownKind { entry: entry.entry_id.clone(), kind: entry.kind });
            }
        };
        if kind == LedgerKind::Shipment {
            self.shipped.entry(cell).or_default().insert(entry.order_id.clone());
        }
        let mut cells = BTreeSet::new();
        for (cell, partial) in figures {
            self.cells.entry(cell.clone()).or_default().merge(&partial);
            cells.insert(cell);
        }
        self.folded_through = entry.event_offset;
        Ok(Applied::Folded { cells })
    }

    fn progress(&mut self, entry: &LedgerEntry) {
        // 0: the marker covers no accepted event (accepted event times are > 0)
        if entry.occurred_at_ms > 0 {
            self.span.include(entry.earliest_at_ms, entry.occurred_at_ms);
        }
        self.coordinator_behind = entry.events_behind;
    }

    /// The record of this partition's cells in `changed`, as of `offset`, with the orders
    /// shipped since the last record.
    pub fn record(&mut self, partition: i32, offset: i64, changed: &BTreeSet<Cell>) -> PartialRecord {
        let source = Source { kind: SourceKind::Events, partition };
        let orders = std::mem::take(&mut self.shipped).into_iter().collect();
        PartialRecord { source, offset, span: self.span, cells: pick(&self.cells, changed), orders }
    }
}

fn pick(cells: &BTreeMap<Cell, Partial>, changed: &BTreeSet<Cell>) -> Vec<(Cell, Partial)> {
    changed.iter().filter_map(|cell| cells.get(cell).map(|p| (cell.clone(), p.clone()))).collect()
}

fn amount(entry: &LedgerEntry, field: &'static str, value: &str) -> Result<Decimal, EntryError> {
    if value.is_empty() {
        return Ok(Decimal::ZERO);
    }
    Decimal::from_str(value).map_err(|_| EntryError::NotDecimal {
        entry: entry.entry_id.clone(),
        field,
        value: value.to_string(),
    })
}

fn shipment(entry: &LedgerEntry) -> Result<Partial, EntryError> {
    Ok(Partial {
        gross_revenue: amount(entry, "gross_revenue", &entry.gross_revenue)?,
        discounts: amount(entry, "discount", &entry.discount)?,
        channel_fees: amount(entry, "channel_fee", &entry.channel_fee)?,
        cogs: amount(entry, "cogs", &entry.cogs)?,
        fulfillment_costs: amount(entry, "fulfillment_cost", &entry.fulfillment_cost)?,
        units_shipped: entry.units,
        ..Partial::default()
    })
}

fn returned(entry: &LedgerEntry) -> Result<Partial, EntryError> {
    Ok(Partial {
        refunds: amount(entry, "refund", &entry.refund)?,
        restocked_cogs: amount(entry, "restocked_cogs", &entry.restocked_cogs)?,
        ..Partial::default()
    })
}

/// A channel cost's amount spread over the weeks its period overlaps, in proportion to the
/// overlap in milliseconds.
fn spread(calendar: &Calendar, entry: &LedgerEntry) -> Result<Vec<(Cell, Partial)>, EntryError> {
    let (start, end) = (entry.period_start_ms, entry.period_end_ms);
    // the coordinator's fact::check bounds accepted periods; a foreign entry is refused
    // rather than spread over millions of weeks
    let longest = crate::fact::MAX_PERIOD_WEEKS * 7 * 86_400_000;
    if start < 0 || end <= start || end > crate::fact::MAX_TIME_MS || end - start > longest {
        return Err(EntryError::BadPeriod { entry: entry.entry_id.clone(), start, end });
    }
    let total = amount(entry, "operating_cost", &entry.operating_cost)?;
    let (first, last) = (calendar.week_of(start), calendar.week_of(end - 1));
    let length = end - start;
    let mut figures = Vec::new();
    let mut week = first;
    while week <= last {
        let before = calendar.start_ms(week).max(start) - start;
        let after = calendar.end_ms(week).min(end) - start;
        let partial =
            Partial { recorded_operating_cost: prorate(total, before, after, length), ..Partial::default() };
        figures.push((Cell::new(week, &entry.channel), partial));
        week = week.next();
    }
    Ok(figures)
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
        let cells = pick(&self.cells, changed);
        PartialRecord { source, offset, span: Span::default(), cells, orders: Vec::new() }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Contract;
    use rust_decimal_macros::dec;

    fn rules() -> Rules {
        let text = include_str!("../../tests/report_scenarios/contract.toml");
        let value: serde_json::Value = toml::from_str(text).expect("the test contract parses");
        Rules::new(serde_json::from_value::<Contract>(value).expect("a contract"))
    }

    /// 2026-11-09T00:00:00Z, a Monday.
    const MONDAY: i64 = 1_794_182_400_000;
    const DAY: i64 = 86_400_000;

    fn shipment(offset: i64, order: &str, at_ms: i64) -> LedgerEntry {
        LedgerEntry {
            entry_id: format!("shipment/e{offset}"),
            kind: LedgerKind::Shipment as i32,
            channel: "shop".into(),
            sku: "S".into(),
            order_id: order.into(),
            occurred_at_ms: at_ms,
            units: 2,
            gross_revenue: "20".into(),
            discount: "1.5".into(),
            channel_fee: "0.333333333333".into(),
            cogs: "8".into(),
            fulfillment_cost: "3".into(),
            event_offset: offset,
            ..LedgerEntry::default()
        }
    }

    fn marker(offset: i64, accepted: Option<(i64, i64)>, behind: i64) -> LedgerEntry {
        let mut entry = crate::ledger::progress("USD", 0, offset, accepted, behind == 0);
        entry.events_behind = behind;
        entry
    }

    #[test]
    fn sums_entries_by_week_and_skips_an_event_folded_before() {
        let (rules, mut ledger) = (rules(), PartitionLedger::default());
        let cell = Cell::new(Calendar::of(&rules.contract.reporting).week_of(MONDAY), "shop");
        for (offset, order) in [(3, "o1"), (5, "o2")] {
            assert_eq!(
                ledger.apply(&rules, &shipment(offset, order, MONDAY + DAY)),
                Ok(Applied::Folded { cells: BTreeSet::from([cell.clone()]) })
            );
        }
        // the ledger written again by a rebuilt coordinator store
        assert_eq!(ledger.apply(&rules, &shipment(5, "o2", MONDAY + DAY)), Ok(Applied::Duplicate));
        assert_eq!(ledger.apply(&rules, &shipment(4, "o9", MONDAY + DAY)), Ok(Applied::Duplicate));
        let partial = &ledger.cells[&cell];
        assert_eq!(
            (partial.gross_revenue, partial.discounts, partial.channel_fees, partial.units_shipped),
            (dec!(40), dec!(3), dec!(0.666666666666), 4)
        );
        let record = ledger.record(0, 7, &BTreeSet::from([cell.clone()]));
        assert_eq!(record.orders, vec![(cell.clone(), BTreeSet::from(["o1".to_string(), "o2".to_string()]))]);
        assert!(ledger.record(0, 8, &BTreeSet::new()).orders.is_empty(), "orders travel once");
    }

    #[test]
    fn markers_give_the_span_and_the_coordinators_end() {
        let (rules, mut ledger) = (rules(), PartitionLedger::default());
        assert_eq!(ledger.coordinator_behind, END_UNKNOWN);
        ledger.apply(&rules, &marker(9, Some((MONDAY + DAY, MONDAY + 2 * DAY)), END_UNKNOWN)).unwrap();
        ledger.apply(&rules, &marker(12, None, 0)).unwrap();
        ledger.apply(&rules, &marker(15, Some((MONDAY, MONDAY + 3 * DAY)), 0)).unwrap();
        assert_eq!(ledger.span, Span { first_ms: Some(MONDAY), last_ms: Some(MONDAY + 3 * DAY) });
        assert_eq!(ledger.coordinator_behind, 0);
        assert_eq!(ledger.folded_through, -1, "markers are positions, not entries to skip by");
        ledger.apply(&rules, &marker(20, None, END_UNKNOWN)).unwrap();
        assert_eq!(ledger.coordinator_behind, END_UNKNOWN, "the last marker has the last word");
    }

    #[test]
    fn refuses_an_entry_it_cannot_read_and_changes_nothing() {
        let (rules, mut ledger) = (rules(), PartitionLedger::default());
        let bad_amount = LedgerEntry { cogs: "1,5".into(), ..shipment(1, "o1", MONDAY) };
        assert!(matches!(
            ledger.apply(&rules, &bad_amount),
            Err(EntryError::NotDecimal { field: "cogs", .. })
        ));
        let endless = LedgerEntry {
            kind: LedgerKind::ChannelCost as i32,
            operating_cost: "10".into(),
            period_start_ms: 0,
            period_end_ms: crate::fact::MAX_TIME_MS,
            ..shipment(2, "", MONDAY)
        };
        assert!(matches!(ledger.apply(&rules, &endless), Err(EntryError::BadPeriod { .. })));
        let unknown = LedgerEntry { kind: 42, ..shipment(3, "o1", MONDAY) };
        assert!(matches!(ledger.apply(&rules, &unknown), Err(EntryError::UnknownKind { kind: 42, .. })));
        assert_eq!(ledger, PartitionLedger::default());
    }

    #[test]
    fn spreads_a_channel_cost_over_the_weeks_its_period_overlaps() {
        let (rules, mut ledger) = (rules(), PartitionLedger::default());
        let cost = LedgerEntry {
            kind: LedgerKind::ChannelCost as i32,
            operating_cost: "70".into(),
            period_start_ms: MONDAY + 4 * DAY,
            period_end_ms: MONDAY + 11 * DAY,
            ..shipment(1, "", MONDAY)
        };
        let Ok(Applied::Folded { cells }) = ledger.apply(&rules, &cost) else { panic!("folded") };
        let spread: Vec<Decimal> = cells.iter().map(|c| ledger.cells[c].recorded_operating_cost).collect();
        assert_eq!(spread, [dec!(30), dec!(40)], "3 of its 7 days in W46, 4 in W47");
    }
}

//! The second stage of the report: merge every source's partials per cell, decide which
//! weeks are closed, and emit a snapshot revision whenever a closed week's figures change.
//!
//! The merger is a pure state machine over [`PartialRecord`]s. Records are absolute (a
//! source's whole value of a cell as of an input offset), so the merger keeps, per cell and
//! source, the record with the highest offset: re-delivered, replayed or reordered records
//! of one source change nothing. Once every record is in, the merged figures are the same
//! whichever instances produced them and in whatever order they arrived.
//!
//! Emission (CONTRACT.md section 7): the watermark is the latest accepted event time over
//! every events source minus `allowed_lateness_ms`; a week is closed once the watermark is
//! at or past its end; every closed week from the week of the earliest accepted event is
//! reported for every contract channel.
//!
//! A closed week is published as revision 1 once every partition of the events topic has
//! been read either to its end or to an accepted event at or after the week's end, as its
//! records and lags say (a partition nothing was heard of yet, or whose end is not known, is
//! neither). So the first revision holds every in-time event in the log: one partition's
//! clock does not close a week whose events another partition has not delivered yet.
//!
//! A published week whose figures change (a late event, a late alert, a neighbour channel's
//! revenue moving the shares, an earlier week changing the negative streak) is emitted again
//! as the next revision with the fields that changed. Restatements are held while an events
//! partition reports more than [`HOLD_BEHIND`] unread records (an alerts partition: any
//! unread record): during a replay every late input would otherwise restate its week again
//! and again; the held weeks are restated once, when every input is near its end. Both rules
//! read the records, so the merger stays a function of the records it merged (and of the
//! events topic's partition count, when the service gives it).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use super::figures::{ChannelWeek, compute_week};
use super::ledger::{Lag, PartialRecord, Source, SourceKind, Span};
use super::partial::{Cell, Partial};
use super::week::{Calendar, Week};
use crate::contract::Rules;

/// Inputs further behind their end than this many records hold restatements back.
pub const HOLD_BEHIND: i64 = 1_000;

/// One emitted revision of a cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub figures: ChannelWeek,
    /// 1 for the first emission, then +1 for every restatement.
    pub revision: u32,
    /// On a restatement: the names of the fields that changed (snapshot field names).
    pub changed_fields: Vec<String>,
}

impl Snapshot {
    /// The record key, `<iso-week>/<channel>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.figures.week, self.figures.channel)
    }
}

/// How far a source's records have been merged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMark {
    /// The highest record offset seen from the source.
    pub offset: i64,
    pub span: Span,
    /// The source's unread records, as last reported, and the offset they were counted from.
    pub behind: i64,
    pub behind_at: i64,
}

/// Every source's latest value of one cell, with the offset it was computed at.
pub type CellInputs = BTreeMap<Source, (i64, Partial)>;

/// What changed in the merger's state since the last [`Merger::take_changes`], for a store
/// that persists only what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub sources: BTreeSet<Source>,
    pub cells: BTreeSet<Cell>,
    pub emitted: BTreeSet<Cell>,
    /// Cells whose distinct order count changed.
    pub orders: BTreeSet<Cell>,
}

/// The (cell, order id) pairs already counted: the one part of the merge stage's state that
/// grows with the orders, so the merger only asks, and the service keeps it in its store,
/// one key per pair, instead of in memory.
pub trait OrderIndex {
    /// Notes that `order` shipped in `cell`; true the first time.
    fn insert(&mut self, cell: &Cell, order: &str) -> bool;
}

impl OrderIndex for HashSet<(Cell, String)> {
    fn insert(&mut self, cell: &Cell, order: &str) -> bool {
        HashSet::insert(self, (cell.clone(), order.to_string()))
    }
}

/// The merge stage's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merger {
    pub sources: BTreeMap<Source, SourceMark>,
    pub cells: BTreeMap<Cell, CellInputs>,
    /// The last emitted revision of every cell.
    pub emitted: BTreeMap<Cell, Snapshot>,
    /// Distinct orders shipped per cell.
    pub orders: BTreeMap<Cell, i64>,
    /// Weeks whose inputs changed since the last evaluation.
    dirty: BTreeSet<Week>,
    /// Every reported week is re-evaluated at the next evaluation (after a restore, when the
    /// dirty weeks were not stored); unchanged weeks emit nothing.
    everything_dirty: bool,
    /// The events topic's partition count, when known: a partition never heard of also keeps
    /// a week's first revision back. Configuration, not state.
    events_partitions: Option<i32>,
    changes: Changes,
}

impl Merger {
    /// A merger restored from stored state; nothing is dirty.
    pub fn restore(
        sources: BTreeMap<Source, SourceMark>,
        cells: BTreeMap<Cell, CellInputs>,
        emitted: BTreeMap<Cell, Snapshot>,
        orders: BTreeMap<Cell, i64>,
    ) -> Self {
        Merger { sources, cells, emitted, orders, everything_dirty: true, ..Merger::default() }
    }

    /// Tells the merger how many partitions the events topic has.
    pub fn set_events_partitions(&mut self, partitions: i32) {
        self.events_partitions = Some(partitions);
    }

    /// Merges one record and returns the snapshots it causes, in (week, channel order).
    pub fn apply(
        &mut self,
        rules: &Rules,
        record: &PartialRecord,
        orders: &mut dyn OrderIndex,
    ) -> Vec<Snapshot> {
        self.absorb(record, orders);
        self.evaluate(rules)
    }

    /// Merges several records and lags (one input batch of an instance), then evaluates
    /// once: weeks are closed against everything the batch says, which spares restatements.
    pub fn apply_all(
        &mut self,
        rules: &Rules,
        records: &[PartialRecord],
        lags: &[Lag],
        orders: &mut dyn OrderIndex,
    ) -> Vec<Snapshot> {
        for record in records {
            self.absorb(record, orders);
        }
        for lag in lags {
            self.note_lag(lag);
        }
        self.evaluate(rules)
    }

    /// Records how far a source is behind; a count from an older offset changes nothing.
    pub fn note_lag(&mut self, lag: &Lag) {
        // a source first heard of by its lag is stored even if the lag equals the default
        let known = self.sources.contains_key(&lag.source);
        let mark = self.sources.entry(lag.source).or_default();
        let newer = lag.offset >= mark.behind_at && (mark.behind, mark.behind_at) != (lag.behind, lag.offset);
        if newer {
            mark.behind = lag.behind;
            mark.behind_at = lag.offset;
        }
        if newer || !known {
            self.changes.sources.insert(lag.source);
        }
    }

    /// Merges one record without evaluating.
    pub fn absorb(&mut self, record: &PartialRecord, orders: &mut dyn OrderIndex) {
        for (cell, ids) in &record.orders {
            let new = ids.iter().filter(|id| orders.insert(cell, id)).count() as i64;
            if new > 0 {
                *self.orders.entry(cell.clone()).or_default() += new;
                self.changes.orders.insert(cell.clone());
                self.dirty.insert(cell.week);
            }
        }
        let mark = self.sources.entry(record.source).or_default();
        if record.offset > mark.offset {
            mark.offset = record.offset;
            mark.span = record.span;
            self.changes.sources.insert(record.source);
        }
        for (cell, partial) in &record.cells {
            let inputs = self.cells.entry(cell.clone()).or_default();
            let newer = inputs.get(&record.source).is_none_or(|(offset, _)| record.offset > *offset);
            if newer && inputs.get(&record.source).is_none_or(|(_, old)| old != partial) {
                self.dirty.insert(cell.week);
            }
            if newer {
                inputs.insert(record.source, (record.offset, partial.clone()));
                self.changes.cells.insert(cell.clone());
            }
        }
    }

    /// The watermark: the latest accepted event time minus the allowed lateness.
    pub fn watermark(&self, rules: &Rules) -> Option<i64> {
        let last = self.events_span().last_ms?;
        Some(last.saturating_sub(rules.contract.reporting.allowed_lateness_ms))
    }

    fn events_span(&self) -> Span {
        self.sources
            .iter()
            .filter(|(source, _)| source.kind == SourceKind::Events)
            .fold(Span::default(), |span, (_, mark)| span.union(mark.span))
    }

    /// The weeks to report: from the earliest accepted event's week to the last closed week.
    pub fn closed_weeks(&self, rules: &Rules) -> Option<(Week, Week)> {
        let calendar = Calendar::of(&rules.contract.reporting);
        let first = calendar.week_of(self.events_span().first_ms?);
        // The last week whose end is at or before the watermark.
        let last = calendar.week_of(self.watermark(rules)?).previous();
        (first <= last).then_some((first, last))
    }

    /// Emits every closed week whose first revision is due (see [`Merger::first_revisions_through`])
    /// and, unless [`Merger::holding`], every published week whose figures changed.
    pub fn evaluate(&mut self, rules: &Rules) -> Vec<Snapshot> {
        let holding = self.holding();
        let (dirty, everything) = if holding {
            (BTreeSet::new(), false)
        } else {
            (std::mem::take(&mut self.dirty), std::mem::take(&mut self.everything_dirty))
        };
        let Some((first, last)) = self.closed_weeks(rules) else { return Vec::new() };
        let Some(any_channel) = rules.channels_in_order().next().map(|c| c.id.clone()) else {
            return Vec::new();
        };
        let due = self.first_revisions_through(rules, last);
        let published =
            |merger: &Merger, week: Week| merger.emitted.contains_key(&Cell::new(week, &any_channel));
        let mut queue: BTreeSet<Week> = dirty.range(first..=last).copied().collect();
        let mut week = first;
        while week <= last {
            if everything || (!published(self, week) && due.is_some_and(|due| week <= due)) {
                queue.insert(week);
            }
            week = week.next();
        }
        let mut snapshots = Vec::new();
        while let Some(week) = queue.pop_first() {
            if published(self, week) && holding {
                // a restatement (of the next week's streak, say) waits for the hold to end
                self.dirty.insert(week);
                continue;
            }
            if !published(self, week) && due.is_none_or(|due| week > due) {
                continue;
            }
            let streak_moved = self.evaluate_week(rules, week, first, &mut snapshots);
            if streak_moved && week < last {
                queue.insert(week.next());
            }
        }
        snapshots
    }

    /// The last week that may be published as revision 1 (CONTRACT.md section 7): at most
    /// `last`, the last closed week, and no later than any events partition has been read,
    /// unless it is read to its end. `None` while some partition allows no week at all.
    pub fn first_revisions_through(&self, rules: &Rules, last: Week) -> Option<Week> {
        let calendar = Calendar::of(&rules.contract.reporting);
        let mut through = last;
        for source in self.events_partitions() {
            let mark = self.sources.get(&source)?;
            if mark.behind == 0 {
                continue;
            }
            // read past week w's end, i.e. to an accepted event at or after it
            let passed = calendar.week_of(mark.span.last_ms?).previous();
            through = through.min(passed);
        }
        Some(through)
    }

    /// Every events partition: the topic's, when known, and every one heard of.
    fn events_partitions(&self) -> BTreeSet<Source> {
        let partition = |partition| Source { kind: SourceKind::Events, partition };
        let mut all: BTreeSet<Source> = (0..self.events_partitions.unwrap_or(0)).map(partition).collect();
        all.extend(self.sources.keys().filter(|source| source.kind == SourceKind::Events));
        all
    }

    /// Whether an input is too far behind for restatements to be emitted: an events
    /// partition more than [`HOLD_BEHIND`] records behind, or an alerts partition with any
    /// unread record (alerts are few; each late one would restate a week).
    pub fn holding(&self) -> bool {
        self.sources.iter().any(|(source, mark)| match source.kind {
            SourceKind::Events => mark.behind > HOLD_BEHIND,
            SourceKind::Alerts => mark.behind > 0,
        })
    }

    /// Recomputes one week and emits what changed; returns whether any channel's negative
    /// streak changed (the next week's decision depends on it).
    fn evaluate_week(&mut self, rules: &Rules, week: Week, first: Week, out: &mut Vec<Snapshot>) -> bool {
        let negative_before = if week > first { self.streaks(week.previous()) } else { BTreeMap::new() };
        let mut streak_moved = false;
        for figures in compute_week(rules, week, &self.merged(week), &negative_before) {
            let cell = Cell::new(week, &figures.channel);
            let previous = self.emitted.get(&cell);
            streak_moved |= previous.map_or(0, |p| p.figures.negative_weeks) != figures.negative_weeks;
            let snapshot = match previous {
                None => Snapshot { figures, revision: 1, changed_fields: Vec::new() },
                Some(previous) => {
                    let changed = changed_fields(&previous.figures, &figures);
                    if changed.is_empty() {
                        continue;
                    }
                    Snapshot { figures, revision: previous.revision + 1, changed_fields: changed }
                }
            };
            self.emitted.insert(cell.clone(), snapshot.clone());
            self.changes.emitted.insert(cell);
            out.push(snapshot);
        }
        streak_moved
    }

    fn streaks(&self, week: Week) -> BTreeMap<String, u32> {
        let from = Cell { week, channel: String::new() };
        let to = Cell { week: week.next(), channel: String::new() };
        self.emitted
            .range(from..to)
            .map(|(cell, s)| (cell.channel.clone(), s.figures.negative_weeks))
            .collect()
    }

    /// Each channel's partials of `week`, summed over every source.
    pub fn merged(&self, week: Week) -> BTreeMap<String, Partial> {
        let from = Cell { week, channel: String::new() };
        let to = Cell { week: week.next(), channel: String::new() };
        let mut merged: BTreeMap<String, Partial> = BTreeMap::new();
        for (cell, inputs) in self.cells.range(from..to) {
            let total = merged.entry(cell.channel.clone()).or_default();
            for (_, partial) in inputs.values() {
                total.merge(partial);
            }
        }
        for (cell, count) in self.orders.range(Cell { week, channel: String::new() }..) {
            if cell.week != week {
                break;
            }
            merged.entry(cell.channel.clone()).or_default().orders_shipped = *count;
        }
        merged
    }

    /// Replaces the last emitted revision of a cell (a service adopting the revision number
    /// found on the topic, or re-emitting under a higher one).
    pub fn replace_emitted(&mut self, snapshot: Snapshot) {
        let cell = Cell::new(snapshot.figures.week, &snapshot.figures.channel);
        self.emitted.insert(cell.clone(), snapshot);
        self.changes.emitted.insert(cell);
    }

    /// What changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }
}

/// Every snapshot field a restatement can list, in the order it lists them.
pub const CHANGEABLE_FIELDS: [&str; 23] = [
    "gross_revenue",
    "discounts",
    "net_revenue",
    "cogs",
    "restocked_cogs",
    "channel_fees",
    "fulfillment_costs",
    "refunds",
    "contribution_before_operating",
    "operating_cost",
    "contribution",
    "contribution_margin",
    "revenue_share",
    "operating_cost_share",
    "orders_shipped",
    "units_shipped",
    "alerts_raised",
    "critical_alerts",
    "negative_weeks",
    "owner",
    "channel_name",
    "decision",
    "next_action",
];

/// The snapshot fields that differ, by name (numbers compared numerically).
pub fn changed_fields(old: &ChannelWeek, new: &ChannelWeek) -> Vec<String> {
    let checks = [
        ("gross_revenue", old.gross_revenue != new.gross_revenue),
        ("discounts", old.discounts != new.discounts),
        ("net_revenue", old.net_revenue != new.net_revenue),
        ("cogs", old.cogs != new.cogs),
        ("restocked_cogs", old.restocked_cogs != new.restocked_cogs),
        ("channel_fees", old.channel_fees != new.channel_fees),
        ("fulfillment_costs", old.fulfillment_costs != new.fulfillment_costs),
        ("refunds", old.refunds != new.refunds),
        (
            "contribution_before_operating",
            old.contribution_before_operating != new.contribution_before_operating,
        ),
        ("operating_cost", old.operating_cost != new.operating_cost),
        ("contribution", old.contribution != new.contribution),
        ("contribution_margin", old.contribution_margin != new.contribution_margin),
        ("revenue_share", old.revenue_share != new.revenue_share),
        ("operating_cost_share", old.operating_cost_share != new.operating_cost_share),
        ("orders_shipped", old.orders_shipped != new.orders_shipped),
        ("units_shipped", old.units_shipped != new.units_shipped),
        ("alerts_raised", old.alerts_raised != new.alerts_raised),
        ("critical_alerts", old.critical_alerts != new.critical_alerts),
        ("negative_weeks", old.negative_weeks != new.negative_weeks),
        ("owner", old.owner != new.owner),
        ("channel_name", old.channel_name != new.channel_name),
        ("decision", old.decision != new.decision),
        ("next_action", old.next_action != new.next_action),
    ];
    debug_assert!(checks.iter().map(|(name, _)| *name).eq(CHANGEABLE_FIELDS));
    checks.iter().filter(|(_, changed)| *changed).map(|(name, _)| name.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Contract;
    use crate::report::ledger::{END_UNKNOWN, PartitionLedger, SourceKind};
    use omnifold_proto::{LedgerEntry, LedgerKind};

    fn rules() -> Rules {
        let text = include_str!("../../tests/report_scenarios/contract.toml");
        let value: serde_json::Value = toml::from_str(text).expect("the test contract parses");
        Rules::new(serde_json::from_value::<Contract>(value).expect("a contract"))
    }

    /// A coordinator's progress marker: it accepted an event at `at_ms` and read through `offset`.
    fn marker(offset: i64, at_ms: i64) -> LedgerEntry {
        LedgerEntry {
            kind: LedgerKind::Progress as i32,
            event_offset: offset,
            earliest_at_ms: at_ms,
            occurred_at_ms: at_ms,
            events_behind: END_UNKNOWN,
            ..LedgerEntry::default()
        }
    }

    /// 2026-11-09T00:00:00Z, a Monday.
    const MONDAY: i64 = 1_794_182_400_000;
    const DAY: i64 = 86_400_000;

    fn events(partition: i32) -> Source {
        Source { kind: SourceKind::Events, partition }
    }

    fn keys(snapshots: &[Snapshot]) -> Vec<String> {
        snapshots.iter().map(|s| format!("{} r{}", s.key(), s.revision)).collect()
    }

    #[test]
    fn a_first_revision_waits_for_every_events_partition() {
        let rules = rules();
        let mut merger = Merger::default();
        let mut orders = HashSet::new();
        merger.set_events_partitions(3);
        let lag = |partition, offset, behind| Lag { source: events(partition), offset, behind };
        // partition 0 closes W46: its watermark, 8d00:00 - 1 h, is past W46's end (7d00:00)
        let mut zero = PartitionLedger::default();
        zero.apply(&rules, &marker(0, MONDAY)).unwrap();
        zero.apply(&rules, &marker(1, MONDAY + 8 * DAY)).unwrap();
        let held = merger.apply_all(
            &rules,
            &[zero.record(0, 2, &BTreeSet::new())],
            &[lag(0, 2, 0), lag(1, 0, 5)],
            &mut orders,
        );
        assert!(held.is_empty(), "partition 1 has 5 unread records and partition 2 was never heard of");
        assert_eq!(merger.closed_weeks(&rules).map(|(_, last)| last.label()), Some("2026-W46".into()));
        assert!(
            merger.apply_all(&rules, &[], &[lag(2, 0, END_UNKNOWN)], &mut orders).is_empty(),
            "partition 2's end is unknown"
        );
        assert!(
            merger.apply_all(&rules, &[], &[lag(2, 0, 0)], &mut orders).is_empty(),
            "partition 2 is at its end, 1 is not"
        );
        // partition 1 reads a W46 event: still before the end of the week
        let mut one = PartitionLedger::default();
        one.apply(&rules, &marker(2, MONDAY + 6 * DAY)).unwrap();
        let record = one.record(1, 1, &BTreeSet::new());
        assert!(
            merger.apply_all(&rules, &[record], &[lag(1, 1, 4)], &mut orders).is_empty(),
            "partition 1 is still in W46"
        );
        // an accepted event at the end of W46: partition 1 is past it, though still behind
        one.apply(&rules, &marker(3, MONDAY + 7 * DAY)).unwrap();
        let record = one.record(1, 2, &BTreeSet::new());
        let alerts = Lag { source: Source { kind: SourceKind::Alerts, partition: 0 }, offset: 0, behind: 3 };
        let emitted = merger.apply_all(&rules, &[record], &[lag(1, 2, 3), alerts], &mut orders);
        let want = ["2026-W46/shop r1", "2026-W46/amzn r1", "2026-W46/market r1", "2026-W46/whole r1"];
        assert_eq!(keys(&emitted), want, "the unread alert holds no first revision");
    }

    #[test]
    fn holds_restatements_while_an_input_is_far_behind_then_restates_once() {
        let rules = rules();
        let (mut ledger, mut merger) = (PartitionLedger::default(), Merger::default());
        let mut orders = HashSet::new();
        ledger.apply(&rules, &marker(0, MONDAY)).unwrap();
        ledger.apply(&rules, &marker(1, MONDAY + 8 * DAY)).unwrap();
        assert_eq!(
            merger.apply(&rules, &ledger.record(0, 2, &BTreeSet::new()), &mut orders).len(),
            4,
            "W46 is out"
        );
        // partition 1 replays, with a W46 sale among its first records
        let cell = Cell::new(Calendar::new(0).week_of(MONDAY), "shop");
        let sale = Partial { gross_revenue: rust_decimal::Decimal::TEN, ..Partial::default() };
        let span = Span { first_ms: Some(MONDAY + DAY), last_ms: Some(MONDAY + DAY) };
        let late =
            PartialRecord { source: events(1), offset: 1, span, cells: vec![(cell, sale)], orders: vec![] };
        let lag = |offset, behind| Lag { source: events(1), offset, behind };
        let held = merger.apply_all(&rules, &[late], &[lag(1, HOLD_BEHIND + 1)], &mut orders);
        assert!(held.is_empty(), "held: another input is replaying");
        assert!(merger.holding());
        assert!(
            merger.apply_all(&rules, &[], &[lag(0, 0), lag(5, 4_000)], &mut orders).is_empty(),
            "the later count wins"
        );
        assert!(
            merger.apply_all(&rules, &[], &[lag(3, 0)], &mut orders).is_empty(),
            "an older count changes nothing"
        );
        let alerts = Source { kind: SourceKind::Alerts, partition: 0 };
        let unread_alert = Lag { source: alerts, offset: 1, behind: 1 };
        assert!(
            merger.apply_all(&rules, &[], &[lag(9, HOLD_BEHIND), unread_alert], &mut orders).is_empty(),
            "one unread alert holds"
        );
        let restated =
            merger.apply_all(&rules, &[], &[Lag { offset: 2, behind: 0, ..unread_alert }], &mut orders);
        assert_eq!(restated.len(), 4, "W46 restated once for every channel (the shares moved)");
        assert!(restated.iter().all(|s| s.revision == 2));
    }

    #[test]
    fn a_restored_merger_emits_what_a_running_one_would() {
        let rules = rules();
        let mut ledger = PartitionLedger::default();
        ledger.apply(&rules, &marker(0, MONDAY)).unwrap();
        ledger.apply(&rules, &marker(1, MONDAY + 8 * DAY)).unwrap();
        let mut running = Merger::default();
        let mut orders = HashSet::new();
        running.apply(&rules, &ledger.record(0, 1, &BTreeSet::new()), &mut orders);
        assert_eq!(running.emitted.len(), 4, "W46 is out");
        // W46 changes while another input holds emission; the dirty week is not stored
        let source = Source { kind: SourceKind::Alerts, partition: 1 };
        let hold = Lag { source, offset: 5, behind: 5_000 };
        let cell = Cell::new(Calendar::new(0).week_of(MONDAY), "shop");
        let late = Partial { gross_revenue: rust_decimal::Decimal::TEN, ..Partial::default() };
        let change = PartialRecord {
            source,
            offset: 6,
            span: Span::default(),
            cells: vec![(cell, late)],
            orders: vec![],
        };
        assert!(running.apply_all(&rules, &[change], &[hold], &mut orders).is_empty(), "held");
        let mut restored = Merger::restore(
            running.sources.clone(),
            running.cells.clone(),
            running.emitted.clone(),
            running.orders.clone(),
        );
        let release = [Lag { offset: 7, behind: 0, ..hold }];
        let from_restored = restored.apply_all(&rules, &[], &release, &mut orders);
        assert_eq!(from_restored, running.apply_all(&rules, &[], &release, &mut orders));
        assert_eq!(from_restored.len(), 4, "W46 restated for every channel (the shares moved)");
        assert_eq!(restored.emitted, running.emitted);
    }

    #[test]
    fn an_order_counts_once_per_week_and_channel_whatever_sends_it() {
        let rules = rules();
        let (mut merger, mut orders) = (Merger::default(), HashSet::new());
        let week = Calendar::new(0).week_of(MONDAY);
        let (shop, whole) = (Cell::new(week, "shop"), Cell::new(week, "whole"));
        let ids = |list: &[&str]| list.iter().map(|id| id.to_string()).collect::<BTreeSet<String>>();
        let record = |partition, offset, orders: Vec<(Cell, BTreeSet<String>)>| PartialRecord {
            source: events(partition),
            offset,
            span: Span { first_ms: Some(MONDAY), last_ms: Some(MONDAY + 8 * DAY) },
            cells: Vec::new(),
            orders,
        };
        let records = [
            // o1's lines have SKUs in two partitions; o2 shipped twice in one
            record(0, 1, vec![(shop.clone(), ids(&["o1", "o2"]))]),
            record(1, 1, vec![(shop.clone(), ids(&["o1"])), (whole.clone(), ids(&["o1"]))]),
            record(0, 2, vec![(shop.clone(), ids(&["o2", "o3"]))]),
            // a replayed partition sends its orders again
            record(1, 1, vec![(shop.clone(), ids(&["o1"]))]),
        ];
        let emitted = merger.apply_all(&rules, &records, &[], &mut orders);
        let count = |channel: &str| {
            emitted.iter().find(|s| s.figures.channel == channel).map(|s| s.figures.orders_shipped)
        };
        assert_eq!((count("shop"), count("whole")), (Some(3), Some(1)));
        assert_eq!(orders.len(), 4, "the index holds each (cell, order) once");
    }
}

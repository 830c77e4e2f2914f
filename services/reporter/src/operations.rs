//! The operations view's state: the alerts, escalations and availability topics (and, for
//! the channel handover, the ledger and the event log) folded into a keyed store, one key per
//! thing that is still worth showing.
//!
//! Memory and disk are bounded by what is open and by the windows, never by history:
//! - an open conflict is kept under `a/<alert_id>` from its RAISED record until its RESOLVED
//!   record removes it. ALLOCATION_BREACH is one-shot (CONTRACT.md section 5: never
//!   resolved), so it is never held open; it counts in the windowed figures only;
//! - every RAISED alert is kept under `r/<time>/<alert_id>` for [`HISTORY_WINDOW_MS`] (the
//!   handover's eight weeks), escalations under `p/<time>/<escalation_id>` for
//!   [`PAGE_WINDOW_MS`]; both are let go once per event day, and views filter by the exact
//!   window;
//! - availability keeps the latest number of each channel of a SKU under `v/<sku>` (the
//!   topic is compacted to that anyway) and marks the SKUs whose latest decision was made in
//!   scarcity under `z/<sku>`, so a view reads the scarce ones only;
//! - the ledger is summed per (week, channel, SKU) under `l/<week>/...` for the last
//!   [`LEDGER_WEEKS`] weeks of the ledger's own clock; older weeks are removed whole; the
//!   highest event offset folded per ledger partition is kept under `m/ledger-through/<p>`,
//!   so an entry published again is not summed twice;
//! - events are counted per (channel, connector, adapter) under `s/...`.
//!
//! Time is event time: "now" is the latest `occurred_at_ms` (or `decided_at_ms`) of the
//! alerts, escalations and availability records folded, never the wall clock, so a replay of
//! the same topics gives the same view.

use std::collections::{BTreeMap, BTreeSet};

use omnifold_domain::Rules;
use omnifold_domain::report::Calendar;
use omnifold_proto::{
    Alert, AlertKind, AlertState, AllocationMode, AllocationRule, Body, ChannelAvailability, Escalation,
    EscalationRule, Event, LedgerEntry, LedgerKind, Replenishment, ReplenishmentAction, RoutingDecision,
    RoutingState, Severity,
};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::event_source::EventSource;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// The operations page shows the pages of the last seven days.
pub const PAGE_WINDOW_MS: i64 = 7 * DAY_MS;
/// Raised alerts are kept eight weeks: the handover ranks a channel's SKUs by conflicts over
/// the same eight weeks as its figures.
pub const HISTORY_WINDOW_MS: i64 = 56 * DAY_MS;
/// Weeks of ledger sums kept, the latest included.
pub const LEDGER_WEEKS: i64 = 8;

/// The kinds that are raised and never resolved (CONTRACT.md section 5).
const ONE_SHOT: [&str; 1] = ["ALLOCATION_BREACH"];

#[derive(Debug, thiserror::Error)]
pub enum OperationsError {
    #[error(transparent)]
    Store(#[from] omnifold_runtime::StoreError),
    #[error("corrupt {key} in the operations store: {source}")]
    Decode { key: String, source: serde_json::Error },
}

/// Read access to the keyed state: the store, an in-memory map, or a batch over either.
pub trait Keyed {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, OperationsError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, OperationsError>;
}

/// Typed reads over any [`Keyed`].
pub trait KeyedExt: Keyed {
    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, OperationsError> {
        self.get_raw(key)?.map(|bytes| decode(key, &bytes)).transpose()
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>, OperationsError> {
        self.scan_raw(prefix)?
            .into_iter()
            .map(|(key, bytes)| {
                let value = decode(&key, &bytes)?;
                Ok((key, value))
            })
            .collect()
    }
}

impl<K: Keyed + ?Sized> KeyedExt for K {}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, OperationsError> {
    serde_json::from_slice(bytes).map_err(|source| OperationsError::Decode { key: key.to_string(), source })
}

/// The state held in memory: for tests, and for readers of a store copied out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryKeyed(pub BTreeMap<String, Vec<u8>>);

impl Keyed for MemoryKeyed {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, OperationsError> {
        Ok(self.0.get(key).cloned())
    }

    fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, OperationsError> {
        Ok(self
            .0
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }
}

impl MemoryKeyed {
    /// Applies what a batch wrote.
    pub fn apply(&mut self, writes: BTreeMap<String, Option<Vec<u8>>>) {
        for (key, value) in writes {
            match value {
                Some(value) => self.0.insert(key, value),
                None => self.0.remove(&key),
            };
        }
    }
}

/// The writes of one batch over the state it started from; reads see the writes. Its
/// writes are committed at once (with the input offsets, see `operations_feed.rs`).
pub struct Batch<'a, K: Keyed + ?Sized> {
    base: &'a K,
    writes: BTreeMap<String, Option<Vec<u8>>>,
}

impl<'a, K: Keyed + ?Sized> Batch<'a, K> {
    pub fn new(base: &'a K) -> Self {
        Batch { base, writes: BTreeMap::new() }
    }

    pub fn put<T: Serialize>(&mut self, key: String, value: &T) {
        let bytes = serde_json::to_vec(value).expect("operations state serializes");
        self.writes.insert(key, Some(bytes));
    }

    pub fn remove(&mut self, key: String) {
        self.writes.insert(key, None);
    }

    /// How many keys the batch writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Key to value, `None` to remove.
    pub fn into_writes(self) -> BTreeMap<String, Option<Vec<u8>>> {
        self.writes
    }
}

impl<K: Keyed + ?Sized> Keyed for Batch<'_, K> {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, OperationsError> {
        match self.writes.get(key) {
            Some(written) => Ok(written.clone()),
            None => self.base.get_raw(key),
        }
    }

    fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, OperationsError> {
        let mut merged: BTreeMap<String, Vec<u8>> = self.base.scan_raw(prefix)?.into_iter().collect();
        let written = self.writes.range(prefix.to_string()..).take_while(|(key, _)| key.starts_with(prefix));
        for (key, value) in written {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }
}

/// A conflict raised and not resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenConflict {
    pub alert_id: String,
    pub kind: String,
    pub severity: String,
    pub sku: String,
    pub channels: Vec<String>,
    pub location: String,
    pub pool: String,
    /// COMPETITOR_UNDERCUT's competitor, from the record's details.
    pub competitor: String,
    /// A channel id or `operations`, filled for records written before contract v1.1.
    pub accountable: String,
    pub summary: String,
    pub raised_at_ms: i64,
}

/// A raised alert as the windowed figures count it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaisedAlert {
    pub alert_id: String,
    pub kind: String,
    pub severity: String,
    pub sku: String,
    pub channels: Vec<String>,
    pub accountable: String,
    pub at_ms: i64,
}

/// One escalation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub escalation_id: String,
    pub rule: String,
    pub severity: String,
    /// A channel id or `global`.
    pub target: String,
    pub on_call: String,
    pub summary: String,
    pub at_ms: i64,
}

/// A channel's latest published number for a SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Number {
    pub available: i64,
    pub mode: String,
    pub rule: String,
    pub decided_at_ms: i64,
    pub reason_event_id: String,
}

/// Every channel's latest number for one SKU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuNumbers {
    pub sku: String,
    pub channels: BTreeMap<String, Number>,
}

impl SkuNumbers {
    /// The latest decision: the number decided last (a decision publishes every number that
    /// changed with the same time), so its mode is the SKU's mode now.
    pub fn latest(&self) -> Option<&Number> {
        self.channels.values().max_by_key(|n| n.decided_at_ms)
    }
}

/// A SKU's contribution on one channel in one week, from the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuMoney {
    pub week: i64,
    pub channel: String,
    pub sku: String,
    /// Before operating cost: net revenue less COGS, fees, fulfillment and refunds, plus
    /// restocked COGS.
    pub contribution: Decimal,
    pub net_revenue: Decimal,
    pub units: i64,
}

/// Events of one channel from one connector and adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCount {
    /// Empty for events of no one channel: stock at shared locations, costs for every channel.
    pub channel: String,
    pub connector: String,
    pub adapter: String,
    pub events: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub last_event_id: String,
}

/// What the fold reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Alert(Alert),
    Escalation(Escalation),
    Availability(ChannelAvailability),
    Ledger(LedgerEntry),
    Event(Event),
    /// The coordinator's reorder and transfer suggestions (CONTRACT.md section 10).
    Replenishment(Replenishment),
    /// The coordinator's routing advice and notes (CONTRACT.md section 10).
    Routing(RoutingDecision),
}

const NOW: &str = "m/now";
const PRUNED_DAY: &str = "m/pruned-day";
const LEDGER_WEEKS_KEY: &str = "m/ledger-weeks";

pub fn open_key(alert_id: &str) -> String {
    format!("a/{alert_id}")
}

fn timed_key(prefix: &str, at_ms: i64, id: &str) -> String {
    format!("{prefix}/{:020}/{id}", at_ms.max(0))
}

/// The highest event offset of ledger partition `partition` whose entry is folded.
fn ledger_through_key(partition: i32) -> String {
    format!("m/ledger-through/{partition}")
}

fn ledger_week_prefix(week: i64) -> String {
    format!("l/{week:020}/")
}

/// The latest event time folded, 0 before any.
pub fn now_ms(state: &impl Keyed) -> Result<i64, OperationsError> {
    Ok(state.get::<i64>(NOW)?.unwrap_or(0))
}

/// Folds one record into the batch.
pub fn fold<K: Keyed + ?Sized>(
    rules: &Rules,
    batch: &mut Batch<'_, K>,
    input: &Input,
) -> Result<(), OperationsError> {
    match input {
        Input::Alert(alert) => fold_alert(batch, alert),
        Input::Escalation(escalation) => fold_escalation(batch, escalation),
        Input::Availability(availability) => fold_availability(batch, availability),
        Input::Ledger(entry) => fold_ledger(rules, batch, entry),
        Input::Event(event) => fold_event(rules, batch, event),
        Input::Replenishment(record) => fold_replenishment(batch, record),
        Input::Routing(record) => fold_routing(batch, record),
    }
}

/// A pool's current suggestion, as the coordinator published it last: kept under
/// `q/<pool>/<sku>` and removed by its NONE record, so only live suggestions are held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggestion {
    pub sku: String,
    pub pool: String,
    /// `REORDER` or `TRANSFER`.
    pub action: String,
    pub units: i64,
    pub location: String,
    pub from_location: String,
    pub atp: i64,
    pub velocity: String,
    pub cover_days: String,
    pub reason_event_id: String,
    pub decided_at_ms: i64,
}

/// A routing exception: advice that had to split, or a shipment from another location than
/// advised. Kept under `x/<time>/<key>` for [`PAGE_WINDOW_MS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingException {
    pub channel: String,
    pub order_id: String,
    pub line_id: String,
    pub sku: String,
    pub quantity: i64,
    pub advised: String,
    pub split: bool,
    /// Empty for a split advice.
    pub shipped_from: String,
    pub at_ms: i64,
    pub reason_event_id: String,
}

fn fold_replenishment<K: Keyed + ?Sized>(
    batch: &mut Batch<'_, K>,
    record: &Replenishment,
) -> Result<(), OperationsError> {
    advance(batch, record.decided_at_ms)?;
    let key = format!("q/{}/{}", record.pool, record.sku);
    let action = ReplenishmentAction::try_from(record.action).unwrap_or(ReplenishmentAction::Unspecified);
    if matches!(action, ReplenishmentAction::None | ReplenishmentAction::Unspecified) {
        batch.remove(key);
        return Ok(());
    }
    let suggestion = Suggestion {
        sku: record.sku.clone(),
        pool: record.pool.clone(),
        action: action.as_str_name().trim_start_matches("REPLENISHMENT_ACTION_").to_string(),
        units: record.units,
        location: record.location.clone(),
        from_location: record.from_location.clone(),
        atp: record.atp,
        velocity: record.velocity.clone(),
        cover_days: record.cover_days.clone(),
        reason_event_id: record.reason_event_id.clone(),
        decided_at_ms: record.decided_at_ms,
    };
    batch.put(key, &suggestion);
    Ok(())
}

fn fold_routing<K: Keyed + ?Sized>(
    batch: &mut Batch<'_, K>,
    record: &RoutingDecision,
) -> Result<(), OperationsError> {
    advance(batch, record.decided_at_ms)?;
    let elsewhere = record.state == RoutingState::ShippedElsewhere as i32;
    if !elsewhere && !record.split {
        return Ok(());
    }
    let exception = RoutingException {
        channel: record.channel.clone(),
        order_id: record.order_id.clone(),
        line_id: record.line_id.clone(),
        sku: record.sku.clone(),
        quantity: record.quantity,
        advised: record.location.clone(),
        split: record.split,
        shipped_from: record.shipped_from.clone(),
        at_ms: record.decided_at_ms,
        reason_event_id: record.reason_event_id.clone(),
    };
    let id = format!("{}/{}/{}/{}", record.channel, record.order_id, record.line_id, record.reason_event_id);
    batch.put(timed_key("x", record.decided_at_ms, &id), &exception);
    Ok(())
}

/// The live suggestions of one action (`REORDER` or `TRANSFER`), by pool and SKU.
pub fn suggestions(state: &impl Keyed, action: &str) -> Result<Vec<Suggestion>, OperationsError> {
    let all = state.scan::<Suggestion>("q/")?.into_iter().map(|(_, s)| s);
    Ok(all.filter(|s| s.action == action).collect())
}

/// The routing exceptions after `since_ms`, oldest first.
pub fn routing_exceptions_since(
    state: &impl Keyed,
    since_ms: i64,
) -> Result<Vec<RoutingException>, OperationsError> {
    let all = state.scan::<RoutingException>("x/")?.into_iter().map(|(_, x)| x);
    Ok(all.filter(|x| x.at_ms > since_ms).collect())
}

/// Lets go of pages and raised alerts older than their windows, once per event day: called
/// at the end of every batch.
pub fn finish<K: Keyed + ?Sized>(batch: &mut Batch<'_, K>) -> Result<(), OperationsError> {
    let now = now_ms(batch)?;
    let day = now.div_euclid(DAY_MS);
    if batch.get::<i64>(PRUNED_DAY)? == Some(day) {
        return Ok(());
    }
    for (prefix, window) in [("p/", PAGE_WINDOW_MS), ("r/", HISTORY_WINDOW_MS), ("x/", PAGE_WINDOW_MS)] {
        for (key, _) in batch.scan_raw(prefix)? {
            if timed_key_ms(&key).is_some_and(|at| at <= now - window) {
                batch.remove(key);
            }
        }
    }
    batch.put(PRUNED_DAY.to_string(), &day);
    Ok(())
}

fn timed_key_ms(key: &str) -> Option<i64> {
    key.get(2..22)?.parse().ok()
}

fn advance<K: Keyed + ?Sized>(batch: &mut Batch<'_, K>, at_ms: i64) -> Result<i64, OperationsError> {
    let now = now_ms(batch)?;
    if at_ms > now {
        batch.put(NOW.to_string(), &at_ms);
        return Ok(at_ms);
    }
    Ok(now)
}

fn fold_alert<K: Keyed + ?Sized>(batch: &mut Batch<'_, K>, alert: &Alert) -> Result<(), OperationsError> {
    let now = advance(batch, alert.occurred_at_ms)?;
    match AlertState::try_from(alert.state) {
        Ok(AlertState::Raised) => {
            let kind = kind_name(alert.kind);
            if !ONE_SHOT.contains(&kind.as_str()) {
                batch.put(open_key(&alert.alert_id), &open_conflict(alert));
            }
            if alert.occurred_at_ms > now - HISTORY_WINDOW_MS {
                let raised = RaisedAlert {
                    alert_id: alert.alert_id.clone(),
                    kind,
                    severity: severity_name(alert.severity),
                    sku: alert.sku.clone(),
                    channels: alert.channels.clone(),
                    accountable: accountable_of(alert),
                    at_ms: alert.occurred_at_ms,
                };
                batch.put(timed_key("r", alert.occurred_at_ms, &alert.alert_id), &raised);
            }
        }
        Ok(AlertState::Resolved) => batch.remove(open_key(&alert.alert_id)),
        _ => tracing::debug!(alert_id = alert.alert_id, "skipped an alert without a state"),
    }
    Ok(())
}

fn open_conflict(alert: &Alert) -> OpenConflict {
    let competitor = alert.details.iter().find(|d| d.key == "competitor").map(|d| d.value.clone());
    OpenConflict {
        alert_id: alert.alert_id.clone(),
        kind: kind_name(alert.kind),
        severity: severity_name(alert.severity),
        sku: alert.sku.clone(),
        channels: alert.channels.clone(),
        location: alert.location.clone(),
        pool: alert.pool.clone(),
        competitor: competitor.unwrap_or_default(),
        accountable: accountable_of(alert),
        summary: alert.summary.clone(),
        raised_at_ms: alert.occurred_at_ms,
    }
}

/// The alert's accountable party. A record written before contract v1.1 has none: the kinds
/// whose subject is one channel are that channel's, the rest operations' (as the weekly
/// report counts them).
pub fn accountable_of(alert: &Alert) -> String {
    if !alert.accountable.is_empty() {
        return alert.accountable.clone();
    }
    use AlertKind::*;
    let kind = AlertKind::try_from(alert.kind).unwrap_or(Unspecified);
    match (kind, alert.channels.first()) {
        (PriceBelowFloor | MapViolation | CompetitorUndercut | AllocationBreach, Some(channel)) => {
            channel.clone()
        }
        _ => omnifold_domain::alerts::OPERATIONS.to_string(),
    }
}

pub fn kind_name(kind: i32) -> String {
    AlertKind::try_from(kind).unwrap_or(AlertKind::Unspecified).name().to_string()
}

pub fn severity_name(severity: i32) -> String {
    Severity::try_from(severity).unwrap_or(Severity::Unspecified).name().to_string()
}

fn fold_escalation<K: Keyed + ?Sized>(
    batch: &mut Batch<'_, K>,
    escalation: &Escalation,
) -> Result<(), OperationsError> {
    let now = advance(batch, escalation.occurred_at_ms)?;
    if escalation.occurred_at_ms <= now - PAGE_WINDOW_MS {
        return Ok(());
    }
    let page = Page {
        escalation_id: escalation.escalation_id.clone(),
        rule: EscalationRule::try_from(escalation.rule)
            .unwrap_or(EscalationRule::Unspecified)
            .name()
            .to_string(),
        severity: severity_name(escalation.severity),
        target: escalation.channel.clone(),
        on_call: escalation.on_call.clone(),
        summary: escalation.summary.clone(),
        at_ms: escalation.occurred_at_ms,
    };
    batch.put(timed_key("p", escalation.occurred_at_ms, &escalation.escalation_id), &page);
    Ok(())
}

fn fold_availability<K: Keyed + ?Sized>(
    batch: &mut Batch<'_, K>,
    availability: &ChannelAvailability,
) -> Result<(), OperationsError> {
    advance(batch, availability.decided_at_ms)?;
    let key = format!("v/{}", availability.sku);
    let mut numbers: SkuNumbers = batch.get(&key)?.unwrap_or_default();
    numbers.sku = availability.sku.clone();
    let number = Number {
        available: availability.available,
        mode: AllocationMode::try_from(availability.mode)
            .unwrap_or(AllocationMode::Unspecified)
            .name()
            .to_string(),
        rule: AllocationRule::try_from(availability.rule)
            .unwrap_or(AllocationRule::Unspecified)
            .name()
            .to_string(),
        decided_at_ms: availability.decided_at_ms,
        reason_event_id: availability.reason_event_id.clone(),
    };
    numbers.channels.insert(availability.channel.clone(), number);
    let scarce = numbers.latest().is_some_and(|n| n.mode == AllocationMode::Scarcity.name());
    let marker = format!("z/{}", availability.sku);
    if scarce {
        batch.put(marker, &true);
    } else {
        batch.remove(marker);
    }
    batch.put(key, &numbers);
    Ok(())
}

fn fold_ledger<K: Keyed + ?Sized>(
    rules: &Rules,
    batch: &mut Batch<'_, K>,
    entry: &LedgerEntry,
) -> Result<(), OperationsError> {
    if !first_delivery(batch, entry)? {
        metrics::counter!("omnifold_operations_ledger_entries_duplicate_total").increment(1);
        return Ok(());
    }
    let Some((contribution, net_revenue, units)) = sku_money(entry) else { return Ok(()) };
    let week = Calendar::of(&rules.contract.reporting).week_of(entry.occurred_at_ms).0;
    let mut weeks: BTreeSet<i64> = batch.get(LEDGER_WEEKS_KEY)?.unwrap_or_default();
    let latest = weeks.last().copied().unwrap_or(week).max(week);
    if week <= latest - LEDGER_WEEKS {
        return Ok(());
    }
    if weeks.insert(week) {
        for old in weeks.iter().copied().filter(|w| *w <= latest - LEDGER_WEEKS).collect::<Vec<_>>() {
            for (key, _) in batch.scan_raw(&ledger_week_prefix(old))? {
                batch.remove(key);
            }
            weeks.remove(&old);
        }
        batch.put(LEDGER_WEEKS_KEY.to_string(), &weeks);
    }
    let key = format!("{}{}/{}", ledger_week_prefix(week), entry.channel, entry.sku);
    let mut money: SkuMoney = batch.get(&key)?.unwrap_or_default();
    money.week = week;
    money.channel = entry.channel.clone();
    money.sku = entry.sku.clone();
    money.contribution += contribution;
    money.net_revenue += net_revenue;
    money.units += units;
    batch.put(key, &money);
    Ok(())
}

/// Whether `entry` is folded for the first time, and if so marks its event folded. The
/// coordinator may publish an entry again (its store rebuilt from the event log, or a
/// partition re-folded by its new owner); ledger partition p mirrors events partition p in
/// the order the coordinator accepted them and an event yields at most one entry, so, as the
/// weekly report's `PartitionLedger::apply` does, the highest event offset folded per
/// partition tells a repeat: positions, not ids, so the state does not grow. Progress markers
/// carry no figures and move nothing.
fn first_delivery<K: Keyed + ?Sized>(
    batch: &mut Batch<'_, K>,
    entry: &LedgerEntry,
) -> Result<bool, OperationsError> {
    let money = matches!(
        LedgerKind::try_from(entry.kind),
        Ok(LedgerKind::Shipment | LedgerKind::Return | LedgerKind::ChannelCost)
    );
    if !money {
        return Ok(true);
    }
    let key = ledger_through_key(entry.event_partition);
    if batch.get::<i64>(&key)?.is_some_and(|through| entry.event_offset <= through) {
        return Ok(false);
    }
    batch.put(key, &entry.event_offset);
    Ok(true)
}

/// What a ledger entry adds to its SKU: (contribution before operating cost, net revenue,
/// units shipped). `None` for entries that are not about one SKU (channel costs, markers).
fn sku_money(entry: &LedgerEntry) -> Option<(Decimal, Decimal, i64)> {
    let amount = |text: &str| text.parse::<Decimal>().unwrap_or_default();
    match LedgerKind::try_from(entry.kind) {
        Ok(LedgerKind::Shipment) => {
            let net = amount(&entry.gross_revenue) - amount(&entry.discount);
            let costs = amount(&entry.channel_fee) + amount(&entry.cogs) + amount(&entry.fulfillment_cost);
            Some((net - costs, net, entry.units))
        }
        Ok(LedgerKind::Return) => {
            Some((amount(&entry.restocked_cogs) - amount(&entry.refund), Decimal::ZERO, 0))
        }
        _ => None,
    }
}

fn fold_event<K: Keyed + ?Sized>(
    rules: &Rules,
    batch: &mut Batch<'_, K>,
    event: &Event,
) -> Result<(), OperationsError> {
    let source = EventSource::of(&event.event_id);
    let channel = event_channel(rules, event);
    let key = format!("s/{channel}/{}/{}", source.connector, source.adapter);
    let mut count: SourceCount = batch.get(&key)?.unwrap_or_else(|| SourceCount {
        channel: channel.clone(),
        connector: source.connector.to_string(),
        adapter: source.adapter.to_string(),
        first_ms: event.occurred_at_ms,
        ..SourceCount::default()
    });
    count.events += 1;
    count.first_ms = count.first_ms.min(event.occurred_at_ms);
    if event.occurred_at_ms >= count.last_ms {
        count.last_ms = event.occurred_at_ms;
        count.last_event_id = event.event_id.clone();
    }
    batch.put(key, &count);
    Ok(())
}

/// The channel an event belongs to: its own, or for a stock event (which has none) the
/// channel its location is dedicated to; empty at a shared location and for a unit cost of
/// every channel.
fn event_channel(rules: &Rules, event: &Event) -> String {
    if !event.channel.is_empty() {
        return event.channel.clone();
    }
    let location = match &event.body {
        Some(Body::StockAdjusted(body)) => &body.location_id,
        Some(Body::StockCounted(body)) => &body.location_id,
        _ => return String::new(),
    };
    rules.location(location).and_then(|l| l.dedicated_to.clone()).unwrap_or_default()
}

/// The open conflicts, in key order.
pub fn open_conflicts(state: &impl Keyed) -> Result<Vec<OpenConflict>, OperationsError> {
    Ok(state.scan::<OpenConflict>("a/")?.into_iter().map(|(_, c)| c).collect())
}

/// The raised alerts at or after `since_ms` (exclusive), oldest first.
pub fn raised_since(state: &impl Keyed, since_ms: i64) -> Result<Vec<RaisedAlert>, OperationsError> {
    Ok(state.scan::<RaisedAlert>("r/")?.into_iter().map(|(_, r)| r).filter(|r| r.at_ms > since_ms).collect())
}

/// The pages after `since_ms`, oldest first.
pub fn pages_since(state: &impl Keyed, since_ms: i64) -> Result<Vec<Page>, OperationsError> {
    Ok(state.scan::<Page>("p/")?.into_iter().map(|(_, p)| p).filter(|p| p.at_ms > since_ms).collect())
}

/// The SKUs whose latest decision was made in scarcity mode, by SKU.
pub fn scarce_skus(state: &impl Keyed) -> Result<Vec<SkuNumbers>, OperationsError> {
    let mut scarce = Vec::new();
    for (key, _) in state.scan_raw("z/")? {
        if let Some(numbers) = state.get::<SkuNumbers>(&format!("v/{}", &key[2..]))? {
            scarce.push(numbers);
        }
    }
    Ok(scarce)
}

/// The ledger sums of one channel, every week kept, and the weeks kept.
pub fn channel_money(
    state: &impl Keyed,
    channel: &str,
) -> Result<(Vec<SkuMoney>, Vec<i64>), OperationsError> {
    let weeks: BTreeSet<i64> = state.get(LEDGER_WEEKS_KEY)?.unwrap_or_default();
    let mut money = Vec::new();
    for week in &weeks {
        let prefix = format!("{}{channel}/", ledger_week_prefix(*week));
        money.extend(state.scan::<SkuMoney>(&prefix)?.into_iter().map(|(_, m)| m));
    }
    Ok((money, weeks.into_iter().collect()))
}

/// Event counts by source of one channel (`""`: events of no one channel).
pub fn channel_sources(state: &impl Keyed, channel: &str) -> Result<Vec<SourceCount>, OperationsError> {
    Ok(state.scan::<SourceCount>(&format!("s/{channel}/"))?.into_iter().map(|(_, s)| s).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use omnifold_proto::Detail;

    use super::*;

    /// 2026-11-09T00:00:00Z, the Monday starting 2026-W46.
    pub const T0: i64 = 1_794_182_400_000;

    pub fn rules() -> Rules {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/local/contract.toml");
        omnifold_runtime::load_contract(std::path::Path::new(path)).expect("the example contract loads")
    }

    pub fn alert(
        id: &str,
        kind: AlertKind,
        severity: Severity,
        sku: &str,
        accountable: &str,
        at: i64,
    ) -> Alert {
        Alert {
            alert_id: id.to_string(),
            kind: kind as i32,
            state: AlertState::Raised as i32,
            severity: severity as i32,
            sku: sku.to_string(),
            accountable: accountable.to_string(),
            occurred_at_ms: at,
            ..Alert::default()
        }
    }

    pub fn resolved(raised: &Alert, at: i64) -> Alert {
        Alert { state: AlertState::Resolved as i32, occurred_at_ms: at, ..raised.clone() }
    }

    pub fn page(id: &str, rule: EscalationRule, target: &str, at: i64) -> Escalation {
        Escalation {
            escalation_id: id.to_string(),
            severity: Severity::Critical as i32,
            channel: target.to_string(),
            on_call: format!("pd-{target}"),
            summary: format!("{id} summary"),
            rule: rule as i32,
            occurred_at_ms: at,
            ..Escalation::default()
        }
    }

    pub fn number(
        sku: &str,
        channel: &str,
        available: i64,
        mode: AllocationMode,
        at: i64,
    ) -> ChannelAvailability {
        ChannelAvailability {
            sku: sku.to_string(),
            channel: channel.to_string(),
            available,
            mode: mode as i32,
            rule: AllocationRule::Proportional as i32,
            reason_event_id: format!("ev-{at}"),
            decided_at_ms: at,
        }
    }

    /// Folds `inputs` one batch each, as the feed commits them.
    pub fn folded(inputs: &[Input]) -> MemoryKeyed {
        let rules = rules();
        let mut state = MemoryKeyed::default();
        for input in inputs {
            let mut batch = Batch::new(&state);
            fold(&rules, &mut batch, input).unwrap();
            finish(&mut batch).unwrap();
            let writes = batch.into_writes();
            state.apply(writes);
        }
        state
    }

    fn keys(state: &MemoryKeyed, prefix: &str) -> Vec<String> {
        state.0.keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }

    #[test]
    fn a_resolved_alert_leaves_and_a_one_shot_is_never_open() {
        let oversell = alert(
            "oversell/A/pool=shared/e1",
            AlertKind::Oversell,
            Severity::Critical,
            "A",
            "operations",
            T0,
        );
        let breach =
            alert("allocation_breach/A/e2", AlertKind::AllocationBreach, Severity::Warning, "A", "", T0 + 1);
        let mut low = alert("low_cover/B/e3", AlertKind::LowCover, Severity::Warning, "B", "shopify", T0 + 2);
        low.details = vec![Detail { key: "competitor".into(), value: "none".into() }];
        let state = folded(&[
            Input::Alert(oversell.clone()),
            Input::Alert(breach),
            Input::Alert(low),
            Input::Alert(resolved(&oversell, T0 + 3)),
        ]);
        assert_eq!(keys(&state, "a/"), ["a/low_cover/B/e3"]);
        let open = open_conflicts(&state).unwrap();
        assert_eq!(open[0].competitor, "none");
        assert_eq!(open[0].accountable, "shopify");
        let raised: Vec<String> = raised_since(&state, 0).unwrap().into_iter().map(|r| r.alert_id).collect();
        assert_eq!(raised, ["oversell/A/pool=shared/e1", "allocation_breach/A/e2", "low_cover/B/e3"]);
        assert_eq!(raised_since(&state, 0).unwrap()[1].accountable, "operations", "no channel named");
        assert_eq!(now_ms(&state).unwrap(), T0 + 3);
    }

    #[test]
    fn a_raise_and_its_resolution_in_one_batch_leave_nothing_open() {
        let rules = rules();
        let raised =
            alert("map_violation/A/shopify/e1", AlertKind::MapViolation, Severity::Critical, "A", "", T0);
        let state = MemoryKeyed::default();
        let mut batch = Batch::new(&state);
        fold(&rules, &mut batch, &Input::Alert(Alert { channels: vec!["shopify".into()], ..raised.clone() }))
            .unwrap();
        assert_eq!(open_conflicts(&batch).unwrap()[0].accountable, "shopify", "v1.0: the subject's channel");
        fold(&rules, &mut batch, &Input::Alert(resolved(&raised, T0 + 1))).unwrap();
        assert!(open_conflicts(&batch).unwrap().is_empty());
    }

    #[test]
    fn pages_and_raised_alerts_are_let_go_after_their_windows() {
        let state = folded(&[
            Input::Escalation(page("old", EscalationRule::StockDrop, "global", T0)),
            Input::Alert(alert("x/A/e1", AlertKind::LowCover, Severity::Warning, "A", "operations", T0)),
            Input::Escalation(page("edge", EscalationRule::OrderSpike, "shopify", T0 + DAY_MS)),
            // 8 days later: "old" is past the 7 days, "edge" exactly at the boundary
            Input::Escalation(page("new", EscalationRule::CriticalAlert, "amazon", T0 + 8 * DAY_MS)),
        ]);
        let ids: Vec<String> = pages_since(&state, 0).unwrap().into_iter().map(|p| p.escalation_id).collect();
        assert_eq!(ids, ["new"], "(now - 7 d, now] is half-open: the page at now - 7 d is gone");
        assert_eq!(keys(&state, "r/").len(), 1, "raised alerts stay 56 days");
        let later = folded(&[
            Input::Alert(alert("x/A/e1", AlertKind::LowCover, Severity::Warning, "A", "operations", T0)),
            Input::Escalation(page("late", EscalationRule::CriticalAlert, "amazon", T0 + 56 * DAY_MS)),
            // older than the window when it arrives: never kept
            Input::Escalation(page("stale", EscalationRule::CriticalAlert, "amazon", T0 + DAY_MS)),
        ]);
        assert!(keys(&later, "r/").is_empty());
        assert_eq!(keys(&later, "p/").len(), 1);
        assert_eq!(keys(&later, "a/").len(), 1, "an open conflict stays however old");
    }

    #[test]
    fn the_latest_decision_says_whether_a_sku_is_scarce() {
        let state = folded(&[
            Input::Availability(number("A", "shopify", 10, AllocationMode::Normal, T0)),
            Input::Availability(number("A", "amazon", 4, AllocationMode::Scarcity, T0 + 5)),
            Input::Availability(number("B", "amazon", 4, AllocationMode::Scarcity, T0 + 5)),
            Input::Availability(number("B", "shopify", 9, AllocationMode::Normal, T0 + 6)),
        ]);
        let scarce = scarce_skus(&state).unwrap();
        assert_eq!(scarce.len(), 1);
        assert_eq!(scarce[0].sku, "A");
        assert_eq!(scarce[0].channels["shopify"].available, 10, "every channel's latest number");
        assert_eq!(keys(&state, "z/"), ["z/A"]);
    }

    /// A shipment of the event at `offset` of events (and ledger) partition 0.
    fn shipment(offset: i64, channel: &str, sku: &str, at: i64, gross: &str) -> LedgerEntry {
        LedgerEntry {
            kind: LedgerKind::Shipment as i32,
            entry_id: format!("shipment/ev-{offset}"),
            event_offset: offset,
            channel: channel.into(),
            sku: sku.into(),
            occurred_at_ms: at,
            units: 2,
            gross_revenue: gross.into(),
            discount: "1".into(),
            channel_fee: "0.5".into(),
            cogs: "4".into(),
            fulfillment_cost: "2".into(),
            ..LedgerEntry::default()
        }
    }

    #[test]
    fn ledger_sums_keep_eight_weeks() {
        let refund = LedgerEntry {
            kind: LedgerKind::Return as i32,
            channel: "shopify".into(),
            sku: "A".into(),
            occurred_at_ms: T0 + DAY_MS,
            refund: "3".into(),
            restocked_cogs: "2".into(),
            event_offset: 1,
            ..LedgerEntry::default()
        };
        let cost = LedgerEntry {
            kind: LedgerKind::ChannelCost as i32,
            channel: "shopify".into(),
            event_offset: 2,
            ..refund.clone()
        };
        let state = folded(&[
            Input::Ledger(shipment(0, "shopify", "A", T0, "20")),
            Input::Ledger(refund),
            Input::Ledger(cost),
            Input::Ledger(shipment(3, "amazon", "A", T0, "20")),
        ]);
        let (money, weeks) = channel_money(&state, "shopify").unwrap();
        assert_eq!(weeks.len(), 1);
        assert_eq!(money.len(), 1);
        // 20 - 1 - 0.5 - 4 - 2 = 12.5, then -3 + 2
        assert_eq!(money[0].contribution, Decimal::new(115, 1));
        assert_eq!(money[0].net_revenue, Decimal::from(19));
        assert_eq!(money[0].units, 2);
        let later = folded(&[
            Input::Ledger(shipment(0, "shopify", "A", T0, "20")),
            Input::Ledger(shipment(1, "shopify", "B", T0 + 7 * 7 * DAY_MS, "20")),
            Input::Ledger(shipment(2, "shopify", "C", T0 + 8 * 7 * DAY_MS, "20")),
            Input::Ledger(shipment(3, "shopify", "late", T0, "20")),
        ]);
        let (money, weeks) = channel_money(&later, "shopify").unwrap();
        let skus: Vec<&str> = money.iter().map(|m| m.sku.as_str()).collect();
        assert_eq!(skus, ["B", "C"], "W46 fell out of the eight weeks, and a late entry for it is dropped");
        assert_eq!(weeks.len(), 2);
    }

    /// Shipments of events 0..=3 of partition 0 and event 0 of partition 1, with the
    /// coordinator's progress markers among them.
    fn ledger_of_two_partitions() -> Vec<Input> {
        let on = |partition: i32, entry: LedgerEntry| {
            Input::Ledger(LedgerEntry { event_partition: partition, ..entry })
        };
        let marker = |partition: i32, offset: i64| {
            on(partition, omnifold_domain::ledger::progress("USD", partition, offset, Some((T0, T0)), true))
        };
        vec![
            on(0, shipment(0, "shopify", "A", T0, "20")),
            marker(0, 0),
            on(0, shipment(1, "shopify", "A", T0 + 1, "30")),
            on(1, shipment(0, "shopify", "A", T0 + 2, "40")),
            on(0, shipment(2, "shopify", "B", T0 + 3, "10")),
            marker(1, 0),
            on(0, shipment(3, "amazon", "A", T0 + 4, "50")),
            marker(0, 3),
        ]
    }

    fn money_of(state: &impl Keyed) -> Vec<SkuMoney> {
        let (mut money, _) = channel_money(state, "shopify").unwrap();
        money.extend(channel_money(state, "amazon").unwrap().0);
        money
    }

    #[test]
    fn a_ledger_entry_published_again_is_summed_once() {
        let once = folded(&ledger_of_two_partitions());
        let shopify_a = &money_of(&once)[0];
        assert_eq!(shopify_a.units, 6, "event 0 of partition 1 is not event 0 of partition 0");
        assert_eq!(shopify_a.net_revenue, Decimal::from(87));
        // the coordinator's store rebuilt from the event log: the whole ledger again
        let mut twice = ledger_of_two_partitions();
        twice.extend(ledger_of_two_partitions());
        assert_eq!(money_of(&folded(&twice)), money_of(&once));
        // a partition moved: its new owner re-folds events 1..=3 of partition 0, then goes on
        let mut moved: Vec<Input> = ledger_of_two_partitions();
        moved.extend(ledger_of_two_partitions().into_iter().filter(
            |input| matches!(input, Input::Ledger(e) if e.event_partition == 0 && e.event_offset >= 1),
        ));
        moved.push(Input::Ledger(shipment(4, "shopify", "B", T0 + 5, "10")));
        let money = money_of(&folded(&moved));
        let shopify_b = money.iter().find(|m| m.channel == "shopify" && m.sku == "B").unwrap();
        assert_eq!(shopify_b.units, 4, "event 2 once and the new event 4");
        assert_eq!(money.iter().map(|m| m.units).sum::<i64>(), 2 * 6);
    }

    #[test]
    fn a_repeat_within_one_batch_is_summed_once() {
        let rules = rules();
        let state = MemoryKeyed::default();
        let mut batch = Batch::new(&state);
        for input in ledger_of_two_partitions().iter().chain(&ledger_of_two_partitions()) {
            fold(&rules, &mut batch, input).unwrap();
        }
        finish(&mut batch).unwrap();
        let mut committed = MemoryKeyed::default();
        committed.apply(batch.into_writes());
        assert_eq!(money_of(&committed), money_of(&folded(&ledger_of_two_partitions())));
        assert_eq!(committed.get::<i64>("m/ledger-through/0").unwrap(), Some(3), "kept with the sums");
        assert_eq!(committed.get::<i64>("m/ledger-through/1").unwrap(), Some(0));
    }

    #[test]
    fn events_are_counted_by_channel_and_source() {
        let event = |id: &str, channel: &str, body: Body, at: i64| Event {
            event_id: id.into(),
            channel: channel.into(),
            occurred_at_ms: at,
            body: Some(body),
        };
        let count = |location: &str| {
            Body::StockCounted(omnifold_proto::StockCounted {
                sku: "A".into(),
                location_id: location.into(),
                on_hand: 1,
            })
        };
        let placed = Body::OrderLinePlaced(omnifold_proto::OrderLinePlaced::default());
        let state = folded(&[
            Input::Event(event("shopify:order:1:line:1:placed", "shopify", placed.clone(), T0 + 5)),
            Input::Event(event("shopify:order:2:line:1:placed", "shopify", placed.clone(), T0)),
            Input::Event(event("amazon:myi:r1:line:1", "", count("fba-us"), T0)),
            Input::Event(event("ev-1", "", count("wh-nj"), T0)),
        ]);
        let shopify = channel_sources(&state, "shopify").unwrap();
        assert_eq!(shopify.len(), 1);
        assert_eq!((shopify[0].events, shopify[0].first_ms, shopify[0].last_ms), (2, T0, T0 + 5));
        assert_eq!(shopify[0].last_event_id, "shopify:order:1:line:1:placed");
        assert_eq!(channel_sources(&state, "amazon").unwrap()[0].connector, "amazon", "fba-us is amazon's");
        assert_eq!(channel_sources(&state, "").unwrap()[0].connector, "ndjson");
        assert_eq!(now_ms(&state).unwrap(), 0, "events do not move the operations clock");
    }
}

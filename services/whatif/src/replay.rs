//! One scenario replayed: the coordinator's fold over every events partition held whole in
//! memory ([`PartitionState`], as `ledger::written_for` does), its ledger summed per partition
//! ([`PartitionLedger`]), its alerts counted ([`AlertLedger`]) and everything merged once at
//! the end ([`Merger`]): the code the coordinator and the reporter run, with no store, no
//! outbox and no topic. Nothing here decides what is accepted; only the scenario's changes
//! to the input are made here:
//!
//! - **Retirement** ([`crate::scenario::Cut`]): events of the retired channel at or after the
//!   cut are not folded; per SKU, at its first event at or after the cut, the channel's
//!   listings are withdrawn and its open lines cancelled through the fold (synthetic
//!   `OrderLineCancelled` events `what-if/retire/<channel>/<order>/<line>` at the cut time),
//!   and the SKU is folded under the retired contract from then on.
//! - **Shift** (`--shift FROM=TO:F`): of each dropped placement of the retired channel,
//!   `floor(F x units)` (telescoped per SKU, so the shifted total is exactly
//!   `floor(F x all dropped units)`) is placed on TO instead, as a synthetic line
//!   `what-if-<from>-<order>`/`<line>` at TO's effective price for the SKU at that moment
//!   (listed price less its running promotions, in TO's price currency), no discount, a
//!   channel fee of TO's `fee_rate` x price x units, and the same location when TO may
//!   reserve there (else the shared pool). Units cannot move when TO lists no price for the
//!   SKU then: they are counted as not shifted. The moved line follows the dropped one: its
//!   shipments (the same fraction, telescoped; the fulfillment cost pro rata), cancellation
//!   and returns (refund at the moved line's price). Nothing else follows demand: TO's own
//!   orders, prices and stock are as they were.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use omnifold_domain::fact::LineKey;
use omnifold_domain::ledger::progress;
use omnifold_domain::money::Amount;
use omnifold_domain::report::{
    AlertLedger, Calendar, Cell, Lag, Merger, Partial, PartialRecord, PartitionLedger, Snapshot, Source,
    SourceKind, Span, Week,
};
use omnifold_domain::{Fold, Outcome, Output, PartitionState, Rules};
use omnifold_proto::{
    AlertKind, AlertState, AllocationMode, Body, EscalationRule, Event, Money, OrderLineCancelled,
    OrderLinePlaced, OrderLineReturned, OrderLineShipped,
};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::foresight::{Foresight, line_of};
use crate::history::{History, SkuIndex};
use crate::scenario::{Cut, Scenario};

/// One availability decision published: after event `event` (its index in the history; a
/// synthetic event counts at the event that caused it), channel `channel` may sell
/// `available` units of SKU `sku`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Decision {
    pub event: u32,
    pub sku: u32,
    pub channel: u16,
    pub available: i64,
}

/// Units placed and shipped by one channel (accepted events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Units {
    pub placed: i64,
    pub shipped: i64,
}

/// Everything one scenario's replay produced that the answer compares.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub name: String,
    pub events: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub rejected: usize,
    /// Events of a retired channel not folded.
    pub dropped: usize,
    /// Synthetic events folded (retirement cancellations, shifted lines).
    pub synthetic: usize,
    /// Every decision, sorted.
    pub decisions: Vec<Decision>,
    /// The last published number per (channel, SKU), absent = 0, as the compacted
    /// availability topic holds it.
    pub final_availability: BTreeMap<(String, String), i64>,
    /// Milliseconds each SKU spent in scarcity, as its published decisions say.
    pub scarcity_ms: HashMap<u32, i64>,
    /// RAISED alerts by kind.
    pub alerts: BTreeMap<String, i64>,
    /// RAISED alerts by kind and accountable party.
    pub alerts_by_accountable: BTreeMap<(String, String), i64>,
    /// Units short in the pool when each OVERSELL was raised (its `atp` negated), summed.
    pub oversold_units: i64,
    /// Escalations by rule; CRITICAL_ALERT pages by the alert kind too (`CRITICAL_ALERT/OVERSELL`).
    pub pages: BTreeMap<String, i64>,
    /// Alert records as (alert id, state name), and escalation ids, in the order produced.
    pub alert_records: Vec<(String, String)>,
    pub escalation_ids: Vec<String>,
    pub units: BTreeMap<String, Units>,
    /// Shift: units placed on the target instead, and units that could not move.
    pub shifted_units: i64,
    pub unshifted_units: i64,
    /// The final figures of every reported week and channel (what the last revisions say).
    pub snapshots: Vec<Snapshot>,
    /// Weeks from which the retired channel is retired (its cells are zero from then on).
    pub retired_from_week: Option<(String, Week)>,
}

/// What the replay reports as it goes, read by the progress printer.
#[derive(Debug, Default)]
pub struct Counter(pub AtomicU64);

impl Counter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Channel ids by index, over every scenario's contract.
#[derive(Debug, Clone, Default)]
pub struct Channels(pub Vec<String>);

impl Channels {
    pub fn of(scenarios: &[Scenario]) -> Channels {
        let mut names: Vec<String> = Vec::new();
        for scenario in scenarios {
            for channel in scenario.rules.channels_in_order() {
                if !names.contains(&channel.id) {
                    names.push(channel.id.clone());
                }
            }
        }
        Channels(names)
    }

    fn index(&self, channel: &str) -> u16 {
        self.0.iter().position(|c| c == channel).unwrap_or(u16::MAX as usize) as u16
    }
}

struct Part {
    state: PartitionState,
    ledger: PartitionLedger,
    /// Ledger positions: one per event folded, synthetic ones included.
    folded: i64,
    /// The earliest and latest accepted event times.
    accepted: Option<(i64, i64)>,
}

struct ShiftedLine {
    order_id: String,
    placed: i64,
    moved: i64,
    shipped: i64,
    returned: i64,
    price: Amount,
}

/// Events decoded at a time, and handed to the threads that replay them.
pub const CHUNK_EVENTS: usize = 4_096;

/// Replays `history` under `scenario`, decoding it as it goes; `foresight` is the history's
/// ([`Foresight::of`]).
pub fn replay(
    history: &History,
    foresight: &Foresight,
    skus: &SkuIndex,
    channels: &Channels,
    scenario: &Scenario,
    progress: &Counter,
) -> Run {
    let chunks = history.chunks(CHUNK_EVENTS);
    replay_decoded(history, chunks, foresight, skus, channels, scenario, progress)
}

/// Replays `history` under `scenario` from its events already decoded, in order, a chunk at a
/// time: [`crate::run_all`] decodes the history once for every scenario.
pub fn replay_decoded(
    history: &History,
    chunks: impl IntoIterator<Item = Arc<Vec<Event>>>,
    foresight: &Foresight,
    skus: &SkuIndex,
    channels: &Channels,
    scenario: &Scenario,
    progress: &Counter,
) -> Run {
    let mut replay = Replay::new(history, foresight, skus, channels, scenario);
    let mut i = 0;
    for chunk in chunks {
        for event in chunk.iter() {
            replay.event(i as u32, history.partitions[i], event);
            i += 1;
        }
        progress.0.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    assert_eq!(i, history.len(), "every event of the history is replayed");
    replay.finish(history)
}

struct Replay<'a> {
    foresight: &'a Foresight,
    skus: &'a SkuIndex,
    channels: &'a Channels,
    scenario: &'a Scenario,
    before: Fold,
    after: Option<Fold>,
    /// The contract the report is computed with (the retired one when there is a cut).
    report_rules: Rules,
    parts: Vec<Part>,
    switched: HashSet<String>,
    alerts: AlertLedger,
    scarce_since: HashMap<u32, i64>,
    dropped_by_sku: HashMap<String, i64>,
    shifted: HashMap<LineKey, ShiftedLine>,
    run: Run,
}

impl<'a> Replay<'a> {
    fn new(
        history: &History,
        foresight: &'a Foresight,
        skus: &'a SkuIndex,
        channels: &'a Channels,
        scenario: &'a Scenario,
    ) -> Self {
        let parts = (0..history.partition_count.max(1))
            .map(|_| Part {
                state: PartitionState::default(),
                ledger: PartitionLedger::default(),
                folded: 0,
                accepted: None,
            })
            .collect();
        let after = scenario.cut.as_ref().map(|cut| Fold::new(cut.after.clone()));
        let report_rules =
            scenario.cut.as_ref().map_or_else(|| scenario.rules.clone(), |cut| cut.after.clone());
        Replay {
            foresight,
            skus,
            channels,
            scenario,
            before: Fold::new(scenario.rules.clone()),
            after,
            report_rules,
            parts,
            switched: HashSet::default(),
            alerts: AlertLedger::default(),
            scarce_since: HashMap::default(),
            dropped_by_sku: HashMap::default(),
            shifted: HashMap::default(),
            run: Run { name: scenario.name.clone(), events: history.len(), ..Run::default() },
        }
    }

    fn event(&mut self, i: u32, partition: i32, event: &Event) {
        let Some(cut) = &self.scenario.cut else {
            self.fold_history(i, partition, false, event);
            return;
        };
        let sku = event.body.as_ref().and_then(Body::sku);
        let late = event.occurred_at_ms >= cut.at_ms;
        if late
            && let Some(sku) = sku
            && !self.switched.contains(sku)
        {
            self.switch(i, partition, sku);
        }
        if late && event.channel == cut.channel {
            self.run.dropped += 1;
            if self.scenario.shift.is_some() {
                self.shift(i, partition, event);
            }
            return;
        }
        let after = match sku {
            Some(sku) => self.switched.contains(sku),
            None => late,
        };
        self.fold_history(i, partition, after, event);
    }

    /// Folds the history's event `i` as [`Replay::fold`] does, with what the history says of
    /// what comes after it: an id no other event carries is not remembered, and a settled
    /// line no later event names is let go.
    fn fold_history(&mut self, i: u32, partition: i32, after: bool, event: &Event) {
        let unique = self.foresight.unique_id(i as usize);
        self.fold_as(i, partition, after, event, unique);
        if self.foresight.last_line_use(i as usize)
            && let Some((sku, line)) = line_of(event)
        {
            self.parts[partition as usize].state.let_go_settled_line(sku, &line);
        }
    }

    /// Folds an event of the replay's own making (a retirement's cancellation, a shift).
    fn fold(&mut self, i: u32, partition: i32, after: bool, event: &Event) {
        self.fold_as(i, partition, after, event, false);
    }

    fn fold_as(&mut self, i: u32, partition: i32, after: bool, event: &Event, unique: bool) {
        let fold = if after { self.after.as_ref().expect("a cut") } else { &self.before };
        let p = partition as usize;
        let offset = self.parts[p].folded;
        self.parts[p].folded += 1;
        // as `ledger::written_for` does, with the accepted event times kept as a span and
        // written as one progress marker per partition at the end instead of one per event
        let state = &mut self.parts[p].state;
        let outcome = if unique { fold.apply_unrepeated(state, event) } else { fold.apply(state, event) };
        match outcome {
            Outcome::Applied { outputs, .. } => {
                let at = event.occurred_at_ms;
                let accepted = &mut self.parts[p].accepted;
                *accepted = Some(accepted.map_or((at, at), |(lo, hi)| (lo.min(at), hi.max(at))));
                self.run.applied += 1;
                self.count_units(event);
                for output in outputs {
                    match output {
                        Output::Ledger(mut entry) => {
                            (entry.event_partition, entry.event_offset) = (partition, offset);
                            // the fold's own entries always read; a refusal would be a bug in the fold
                            let applied = self.parts[p].ledger.apply(&self.report_rules, &entry.to_message());
                            applied.expect("the fold's ledger entries read");
                        }
                        other => self.observe(i, other),
                    }
                }
            }
            Outcome::Duplicate => self.run.duplicates += 1,
            Outcome::Rejected(_) => self.run.rejected += 1,
        }
    }

    fn count_units(&mut self, event: &Event) {
        let (placed, shipped) = match &event.body {
            Some(Body::OrderLinePlaced(b)) => (b.quantity, 0),
            Some(Body::OrderLineShipped(b)) => (0, b.quantity),
            _ => return,
        };
        let units = self.run.units.entry(event.channel.clone()).or_default();
        units.placed += placed;
        units.shipped += shipped;
    }

    fn observe(&mut self, i: u32, output: Output) {
        match output {
            Output::Availability(a) => {
                let sku = self.skus.get(&a.sku).unwrap_or(u32::MAX);
                let channel = self.channels.index(&a.channel);
                self.run.decisions.push(Decision { event: i, sku, channel, available: a.available });
                let scarce = a.mode == AllocationMode::Scarcity as i32;
                match (scarce, self.scarce_since.get(&sku).copied()) {
                    (true, None) => {
                        self.scarce_since.insert(sku, a.decided_at_ms);
                    }
                    (false, Some(since)) => {
                        self.scarce_since.remove(&sku);
                        *self.run.scarcity_ms.entry(sku).or_default() += (a.decided_at_ms - since).max(0);
                    }
                    _ => {}
                }
            }
            Output::Alert(alert) => {
                let state = AlertState::try_from(alert.state).map_or("UNKNOWN", AlertState::name);
                self.run.alert_records.push((alert.alert_id.clone(), state.to_string()));
                if alert.state == AlertState::Raised as i32 {
                    let kind = AlertKind::try_from(alert.kind).map_or("UNKNOWN", AlertKind::name).to_string();
                    if kind == "OVERSELL" {
                        let atp = alert.details.iter().find(|d| d.key == "atp");
                        let atp: i64 = atp.and_then(|d| d.value.parse().ok()).unwrap_or(0);
                        self.run.oversold_units += (-atp).max(0);
                    }
                    *self
                        .run
                        .alerts_by_accountable
                        .entry((kind.clone(), alert.accountable.clone()))
                        .or_default() += 1;
                    *self.run.alerts.entry(kind).or_default() += 1;
                }
                self.alerts.apply(&self.report_rules, &alert);
            }
            Output::Escalation(escalation) => {
                let rule = EscalationRule::try_from(escalation.rule)
                    .map_or("UNKNOWN", |r| r.as_str_name().trim_start_matches("ESCALATION_RULE_"))
                    .to_string();
                let key = if rule == "CRITICAL_ALERT" {
                    let kind = escalation.cause.first().and_then(|c| c.split('/').next()).unwrap_or("");
                    format!("{rule}/{}", kind.to_uppercase())
                } else {
                    rule
                };
                *self.run.pages.entry(key).or_default() += 1;
                self.run.escalation_ids.push(escalation.escalation_id);
            }
            Output::Ledger(_) => {}
            // outputs the fold may gain (replenishment, routing) are not compared yet
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    /// The SKU reaches the cut: the retired channel's listings are withdrawn and its open
    /// lines cancelled, folded under the retired contract.
    fn switch(&mut self, i: u32, partition: i32, sku: &str) {
        let cut = self.scenario.cut.as_ref().expect("a cut");
        self.switched.insert(sku.to_string());
        let Some(state) = self.parts[partition as usize].state.skus.get_mut(sku) else { return };
        let channel = cut.channel.as_str();
        state.prices.listed.remove(channel);
        state.prices.promotions.retain(|(c, _), _| c != channel);
        state.prices.competitors.retain(|(c, _), _| c != channel);
        let at_ms = cut.at_ms.max(state.latest_ms).max(1);
        let open: Vec<LineKey> = state
            .stock
            .lines
            .iter()
            .filter(|(key, line)| key.channel == channel && line.open() > 0)
            .map(|(key, _)| key.clone())
            .collect();
        for line in open {
            let event = Event {
                event_id: format!("what-if/retire/{}/{}/{}", line.channel, line.order_id, line.line_id),
                channel: line.channel.to_string(),
                occurred_at_ms: at_ms,
                body: Some(Body::OrderLineCancelled(OrderLineCancelled {
                    order_id: line.order_id.to_string(),
                    line_id: line.line_id.to_string(),
                    sku: sku.to_string(),
                })),
            };
            self.run.synthetic += 1;
            self.fold(i, partition, true, &event);
        }
    }

    /// A dropped event of the retired channel, moved in part to the shift's target.
    fn shift(&mut self, i: u32, partition: i32, event: &Event) {
        let (cut, shift) =
            (self.scenario.cut.as_ref().expect("a cut"), self.scenario.shift.as_ref().expect("a shift"));
        let to = shift.to.as_str();
        let key = |order_id: &str, line_id: &str| LineKey {
            channel: event.channel.as_str().into(),
            order_id: order_id.into(),
            line_id: line_id.into(),
        };
        let synthetic = match &event.body {
            Some(Body::OrderLinePlaced(placed)) => {
                let dropped = self.dropped_by_sku.entry(placed.sku.clone()).or_default();
                let before = *dropped;
                *dropped += placed.quantity;
                let moved = floor(shift.fraction * Decimal::from(*dropped))
                    - floor(shift.fraction * Decimal::from(before));
                if moved <= 0 {
                    return;
                }
                let state = self.parts[partition as usize].state.skus.get(&placed.sku);
                let Some(price) = state.and_then(|s| s.prices.effective(to, event.occurred_at_ms)) else {
                    self.run.unshifted_units += moved;
                    return;
                };
                let rules = &cut.after;
                let fee_rate = rules.channel(to).map_or(Decimal::ZERO, |c| c.fee_rate);
                let location = placed.location_id.clone().filter(|l| {
                    rules.location(l).is_some_and(|l| l.dedicated_to.as_deref().is_none_or(|d| d == to))
                });
                let order_id = format!("what-if-{}-{}", event.channel, placed.order_id);
                self.shifted.insert(
                    key(&placed.order_id, &placed.line_id),
                    ShiftedLine {
                        order_id: order_id.clone(),
                        placed: placed.quantity,
                        moved,
                        shipped: 0,
                        returned: 0,
                        price: price.clone(),
                    },
                );
                self.run.shifted_units += moved;
                Body::OrderLinePlaced(OrderLinePlaced {
                    order_id,
                    line_id: placed.line_id.clone(),
                    sku: placed.sku.clone(),
                    quantity: moved,
                    unit_price: Some(money(price.value, &price.currency)),
                    discount: None,
                    channel_fee: Some(money(fee_rate * price.value * Decimal::from(moved), &price.currency)),
                    location_id: location,
                })
            }
            Some(Body::OrderLineShipped(shipped)) => {
                let Some(line) = self.shifted.get_mut(&key(&shipped.order_id, &shipped.line_id)) else {
                    return;
                };
                let before = line.shipped;
                line.shipped += shipped.quantity;
                let moved =
                    share(line.shipped, line.moved, line.placed) - share(before, line.moved, line.placed);
                if moved <= 0 {
                    return;
                }
                let fulfillment = shipped.fulfillment_cost.as_ref().map(|cost| {
                    let amount: Decimal = cost.amount.parse().unwrap_or_default();
                    money(amount * Decimal::from(moved) / Decimal::from(shipped.quantity), &cost.currency)
                });
                Body::OrderLineShipped(OrderLineShipped {
                    order_id: line.order_id.clone(),
                    line_id: shipped.line_id.clone(),
                    sku: shipped.sku.clone(),
                    quantity: moved,
                    location_id: shipped.location_id.clone(),
                    fulfillment_cost: fulfillment,
                })
            }
            Some(Body::OrderLineCancelled(cancelled)) => {
                let Some(line) = self.shifted.get(&key(&cancelled.order_id, &cancelled.line_id)) else {
                    return;
                };
                Body::OrderLineCancelled(OrderLineCancelled {
                    order_id: line.order_id.clone(),
                    line_id: cancelled.line_id.clone(),
                    sku: cancelled.sku.clone(),
                })
            }
            Some(Body::OrderLineReturned(returned)) => {
                let Some(line) = self.shifted.get_mut(&key(&returned.order_id, &returned.line_id)) else {
                    return;
                };
                let before = line.returned;
                line.returned += returned.quantity;
                let moved =
                    share(line.returned, line.moved, line.placed) - share(before, line.moved, line.placed);
                if moved <= 0 {
                    return;
                }
                Body::OrderLineReturned(OrderLineReturned {
                    order_id: line.order_id.clone(),
                    line_id: returned.line_id.clone(),
                    sku: returned.sku.clone(),
                    quantity: moved,
                    refund: Some(money(line.price.value * Decimal::from(moved), &line.price.currency)),
                    restock: returned.restock,
                    location_id: returned.location_id.clone(),
                })
            }
            _ => return,
        };
        let synthetic = Event {
            event_id: format!("what-if/shift/{}", event.event_id),
            channel: to.to_string(),
            occurred_at_ms: event.occurred_at_ms,
            body: Some(synthetic),
        };
        self.run.synthetic += 1;
        self.fold(i, partition, true, &synthetic);
    }

    fn finish(mut self, history: &History) -> Run {
        let end = history.len() as u32;
        if let Some(cut) = &self.scenario.cut {
            let reached = history.reaches(cut.at_ms);
            if reached {
                // SKUs with no event after the cut are retired at the end of the history
                let mut waiting: Vec<(i32, String)> = Vec::new();
                for (p, part) in self.parts.iter().enumerate() {
                    waiting.extend(
                        part.state
                            .skus
                            .keys()
                            .filter(|s| !self.switched.contains(*s))
                            .map(|s| (p as i32, s.clone())),
                    );
                }
                waiting.sort();
                for (partition, sku) in waiting {
                    self.switch(end, partition, &sku);
                }
            }
        }
        for part in &self.parts {
            for (sku, state) in &part.state.skus {
                for (channel, available) in &state.published {
                    if *available != 0 {
                        self.run.final_availability.insert((channel.clone(), sku.clone()), *available);
                    }
                }
                if let Some(since) = self.skus.get(sku).and_then(|id| self.scarce_since.get(&id)) {
                    let id = self.skus.get(sku).expect("interned");
                    *self.run.scarcity_ms.entry(id).or_default() += (state.latest_ms - since).max(0);
                }
            }
        }
        self.run.decisions.sort_unstable();
        self.run.snapshots = self.report(history);
        self.run
    }

    /// Every partition's cells merged once, with every partition at its end: the figures
    /// the reporter's last revisions hold once it has read everything.
    fn report(&mut self, history: &History) -> Vec<Snapshot> {
        let rules = &self.report_rules;
        let mut records = Vec::new();
        let mut lags = Vec::new();
        let mut span = Span::default();
        let currency = rules.contract.reporting_currency.clone();
        for (p, part) in self.parts.iter_mut().enumerate() {
            let marker = progress(&currency, p as i32, part.folded, part.accepted, true);
            part.ledger.apply(rules, &marker).expect("a progress marker reads");
            let cells: BTreeSet<Cell> = part.ledger.cells.keys().cloned().collect();
            span = span.union(part.ledger.span);
            records.push(part.ledger.record(p as i32, part.folded, &cells));
            lags.push(Lag {
                source: Source { kind: SourceKind::Events, partition: p as i32 },
                offset: part.folded,
                behind: 0,
            });
        }
        let alert_cells: BTreeSet<Cell> = self.alerts.cells.keys().cloned().collect();
        records.push(self.alerts.record(0, history.len() as i64 + 1, &alert_cells));
        if let Some(cut) = &self.scenario.cut {
            let adjustment = retirement_costs(&self.scenario.rules, cut, &self.parts, span);
            self.run.retired_from_week = Some((cut.channel.clone(), cut_week(cut, rules)));
            records.push(PartialRecord {
                source: Source { kind: SourceKind::Alerts, partition: 1 },
                offset: 1,
                span: Span::default(),
                cells: adjustment,
                orders: Vec::new(),
            });
        }
        let mut merger = Merger::default();
        merger.set_events_partitions(history.partition_count.max(1));
        let mut orders = std::collections::HashSet::new();
        merger.apply_all(rules, &records, &lags, &mut orders);
        merger.emitted.into_values().collect()
    }
}

/// The first week with no operating cost for the retired channel: the first week starting
/// at or after the cut (the cut's own week when retired from the start of the history).
pub fn cut_week(cut: &Cut, rules: &Rules) -> Week {
    let calendar = Calendar::of(&rules.contract.reporting);
    let week = calendar.week_of(cut.at_ms);
    if cut.from_start || calendar.start_ms(week) == cut.at_ms { week } else { week.next() }
}

/// The report is computed under the retired contract (no weekly operating cost for the
/// channel): the channel's weekly cost is added back for the weeks before the cut week, and
/// the recorded costs spread over weeks from the cut week on are taken out.
fn retirement_costs(before: &Rules, cut: &Cut, parts: &[Part], span: Span) -> Vec<(Cell, Partial)> {
    let (Some(first), Some(last)) = (span.first_ms, span.last_ms) else { return Vec::new() };
    let calendar = Calendar::of(&cut.after.contract.reporting);
    let from = cut_week(cut, &cut.after);
    let weekly = before.channel(&cut.channel).map(|c| &c.weekly_operating_cost).map(|cost| {
        before
            .contract
            .to_reporting(&Amount { value: cost.amount, currency: cost.currency.as_str().into() })
            .map(omnifold_domain::report::partial::round)
            .unwrap_or_default()
    });
    let mut cells = Vec::new();
    let mut week = calendar.week_of(first);
    while week <= calendar.week_of(last) {
        let cell = Cell::new(week, &cut.channel);
        let cost = if week < from {
            weekly.unwrap_or_default()
        } else {
            -parts
                .iter()
                .filter_map(|p| p.ledger.cells.get(&cell))
                .map(|c| c.recorded_operating_cost)
                .sum::<Decimal>()
        };
        if !cost.is_zero() {
            cells.push((cell, Partial { recorded_operating_cost: cost, ..Partial::default() }));
        }
        week = week.next();
    }
    cells
}

fn floor(value: Decimal) -> i64 {
    value.floor().to_i64().unwrap_or(0)
}

/// floor(done x moved / placed): the moved line's share of `done` units of the dropped one.
fn share(done: i64, moved: i64, placed: i64) -> i64 {
    if placed == 0 { 0 } else { done * moved / placed }
}

fn money(value: Decimal, currency: &str) -> Money {
    let value = value.round_dp_with_strategy(12, RoundingStrategy::MidpointNearestEven).normalize();
    Money { amount: value.to_string(), currency: currency.to_string() }
}

//! The coordinator's fold: one inbound event in, the state change and its effects out.
//!
//! After each accepted event of a SKU everything about that SKU is re-evaluated at the SKU's
//! clock, the event's own `occurred_at_ms` (CONTRACT.md section 4). Nothing here reads the
//! wall clock, does I/O or iterates a hash map into an output, so the same events in the
//! same order always give the same state and the same outputs.

use std::collections::BTreeSet;

use compact_str::CompactString;
use omnifold_proto::{Alert, Escalation, Event, ReplenishmentAction};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::alerts::{self, Cause, OpenAlert, Trigger};
use crate::allocation::{PublishedAvailability, allocate};
use crate::contract::Rules;
use crate::demand::{Point, Span};
use crate::escalation;
use crate::fact::{self, Fact, LineKey, Rejection};
use crate::ledger;
use crate::price_alerts;
use crate::pricing::{PriceBook, PromotionKey, Set};
use crate::replenishment::{self, Suggested};
use crate::routing;
use crate::small_map::SmallMap;
use crate::stock::{Atps, Line, Stock};
use crate::stock_alerts;

/// Everything the coordinator knows of one SKU.
///
/// Serialized, it is the SKU's *core*: bounded by the contract (channels, locations, pools,
/// open alerts, live promotions, competitors), never by history. What grows with history is
/// kept apart and stored under its own keys: order lines and promotion ids as keyed records
/// ([`crate::keyed`]), trailing placements by hour ([`crate::demand`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuState {
    /// The latest event time applied to the SKU; it only bounds what is kept.
    pub latest_ms: i64,
    pub stock: Stock,
    /// Stored apart from the core, and written only when it changed: most events (orders,
    /// stock) leave it as it was, and it was two fifths of the core's bytes.
    #[serde(skip)]
    pub prices: PriceBook,
    /// Each channel's last published availability; absent means 0.
    pub published: SmallMap<String, i64>,
    /// Open alerts by condition key. Stored apart from the core, like the prices: they change
    /// only when an alert is raised or resolved.
    #[serde(skip)]
    pub alerts: SmallMap<String, OpenAlert>,
    /// Channels whose ORDER_SPIKE fired and has not been re-armed.
    pub spiking: BTreeSet<String>,
    /// Each channel's first accepted placement of the SKU (event time): the start of the
    /// history its ORDER_SPIKE baseline is measured over. One entry per channel.
    #[serde(default)]
    pub first_placed: SmallMap<String, i64>,
    /// Each pool's last published replenishment suggestion (section 10), by pool name; a
    /// pool whose suggestion went back to none has no entry. One entry per pool.
    #[serde(default)]
    pub suggested: SmallMap<String, Suggested>,
    /// Where the price conditions are known not to have changed (a memo, never stored).
    #[serde(skip)]
    pub prices_steady: price_alerts::Steady,
    /// Which parts stored apart from the core changed since the last write (a memo, never
    /// stored).
    #[serde(skip)]
    changed_parts: ChangedParts,
}

/// The parts of a SKU's state stored apart from its core that changed since the last write.
/// Not part of the state's identity: two states that hold the same are equal whatever they
/// have written.
#[derive(Debug, Clone, Copy, Default)]
struct ChangedParts {
    prices: bool,
    alerts: bool,
}

impl PartialEq for ChangedParts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ChangedParts {}

/// A keyed record an event may read, which its runner must provide first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordKey {
    Line(LineKey),
    Promotion(PromotionKey),
}

/// What of a SKU's state changed since it was last written, as the store writes it: the
/// core (always, when anything changed), and these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Whether [`SkuState::prices`] changed.
    pub prices: bool,
    /// Whether [`SkuState::alerts`] changed.
    pub alerts: bool,
    /// The keys of the changed order lines, each in the working set ([`SkuState::line`]).
    pub lines: Vec<LineKey>,
    pub promotions: Vec<PromotionKey>,
    /// Every placement of each changed segment (an hour); an empty segment is deleted.
    pub segments: Vec<(i64, Vec<Point>)>,
}

impl SkuState {
    /// Provides a stored line the next event reads (see [`Fold::record_key`]).
    pub fn provide_line(&mut self, key: LineKey, line: Line) {
        self.stock.lines.provide(key, line);
    }

    /// A line of the working set, as written: a changed line is read here, not cloned.
    pub fn line(&self, key: &LineKey) -> Option<&Line> {
        self.stock.lines.get(key)
    }

    /// Provides a stored promotion id the next event reads.
    pub fn provide_promotion(&mut self, key: PromotionKey) {
        self.prices.scheduled.provide(key, ());
    }

    /// Whether the working set holds the record: a runner need not load it.
    pub fn holds(&self, key: &RecordKey) -> bool {
        match key {
            RecordKey::Line(line) => self.stock.lines.contains(line),
            RecordKey::Promotion(promotion) => self.prices.scheduled.contains(promotion),
        }
    }

    /// Restores the stored placements of a segment into a state loaded from its core.
    pub fn restore_segment(&mut self, points: Vec<Point>) {
        self.stock.demand.restore_segment(points, self.latest_ms);
    }

    /// Hands over what changed since the last call, to be written with the core.
    pub fn take_changes(&mut self) -> Changes {
        let segments = self.stock.demand.take_changed_segments();
        let parts = std::mem::take(&mut self.changed_parts);
        Changes {
            prices: parts.prices,
            alerts: parts.alerts,
            lines: self.stock.lines.take_changed_keys(),
            promotions: self.prices.scheduled.take_changed_keys(),
            segments: segments.into_iter().map(|s| (s, self.stock.demand.segment(s))).collect(),
        }
    }

    /// For a state held whole in memory and never written.
    pub fn forget_changes(&mut self) {
        self.changed_parts = ChangedParts::default();
        self.stock.lines.forget_changes();
        self.prices.scheduled.forget_changes();
        self.stock.demand.forget_changes();
    }

    /// Counts the prices and the alerts as changed, so that the next write stores them: for
    /// a state not loaded from its parts (held whole, or built by hand).
    pub fn mark_parts_changed(&mut self) {
        self.changed_parts = ChangedParts { prices: true, alerts: true };
    }

    /// Empties the working sets of records after a write: they stay in the store, and an
    /// event reads the one it names with a point read. Keeping open lines loaded instead
    /// would let a SKU's memory grow with every line that is never shipped or cancelled.
    pub fn unload_records(&mut self) {
        self.stock.lines.unload_written();
        self.prices.scheduled.unload_written();
    }

    /// An estimate of the bytes the state holds in memory, for the cache budget. Calibrated
    /// on the catalogue benchmark (100,000 SKUs of the benchmark mix): what the process grew
    /// by, less the store's caches, divided by the SKUs held; it errs high, so the budget
    /// holds.
    pub fn approx_bytes(&self) -> usize {
        const BASE: usize = 3_584;
        BASE + self.stock.demand.held() * 32
            + self.stock.lines.len() * 256
            + self.prices.scheduled.len() * 128
            + self.prices.promotions.len() * 512
            + self.prices.competitors.len() * 256
            + self.alerts.len() * 1_024
    }
}

/// The state of one input partition held whole in memory: its SKUs, every record, and the
/// ids of the events it accepted. The pure form of the fold, for tests and replays; the
/// coordinator keeps a bounded cache over its store instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionState {
    pub skus: FxHashMap<String, SkuState>,
    pub seen: FxHashSet<CompactString>,
}

impl PartitionState {
    /// Lets go of a settled order line (nothing open: shipped or cancelled in full) that no
    /// later event names, as a replay that read the whole history knows. The fold reads a line
    /// only for an event naming it, so no output changes; a what-if retirement also looks
    /// for the lines still open, which are kept. The state then holds the open lines instead
    /// of every line ever placed.
    pub fn let_go_settled_line(&mut self, sku: &str, line: &LineKey) {
        let Some(state) = self.skus.get_mut(sku) else { return };
        if state.stock.lines.get(line).is_some_and(|line| line.open() == 0) {
            state.stock.lines.let_go(line);
        }
    }
}

/// One record the fold asks to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Availability(PublishedAvailability),
    Alert(Alert),
    Escalation(Escalation),
    /// A contribution ledger entry (`crate::ledger`).
    Ledger(ledger::PublishedEntry),
    /// A pool's changed reorder or transfer suggestion (`crate::replenishment`).
    Replenishment(replenishment::PublishedReplenishment),
    /// Routing advice for a line placed without a location, or a note that it shipped from
    /// elsewhere (`crate::routing`).
    Routing(routing::PublishedRouting),
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted: the id is remembered, `sku` (if any) changed, `outputs` are to be published.
    Applied { sku: Option<CompactString>, outputs: Vec<Output> },
    /// An id already accepted: ignored, not dead-lettered.
    Duplicate,
    /// Refused: nothing changed; the event goes to the dead-letter topic with this reason.
    Rejected(Rejection),
}

/// The fold over a contract.
#[derive(Debug, Clone)]
pub struct Fold {
    rules: Rules,
}

impl Fold {
    pub fn new(rules: Rules) -> Self {
        Fold { rules }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Applies one event to a partition's state held whole in memory.
    pub fn apply(&self, state: &mut PartitionState, event: &Event) -> Outcome {
        if state.seen.contains(event.event_id.as_str()) {
            return Outcome::Duplicate;
        }
        let outcome = self.apply_unrepeated(state, event);
        if matches!(outcome, Outcome::Applied { .. }) {
            state.seen.insert(event.event_id.as_str().into());
        }
        outcome
    }

    /// [`Fold::apply`] for an event whose id no other event of its partition carries (a
    /// replay that read the whole history knows): it cannot be a duplicate, and its id need
    /// not be remembered, so neither is looked up nor kept.
    pub fn apply_unrepeated(&self, state: &mut PartitionState, event: &Event) -> Outcome {
        let fact = match self.check(event) {
            Ok(fact) => fact,
            Err(rejection) => return Outcome::Rejected(rejection),
        };
        let Some(sku) = fact.sku() else {
            return match self.apply_channel_fact(event, &fact) {
                Ok(outputs) => Outcome::Applied { sku: None, outputs },
                Err(rejection) => Outcome::Rejected(rejection),
            };
        };
        let (sku_state, existed) = match state.skus.get_mut(sku) {
            Some(sku_state) => (sku_state, true),
            None => (state.skus.entry(sku.into()).or_default(), false),
        };
        let result = self.apply_fact(sku_state, event, &fact);
        sku_state.forget_changes();
        match result {
            Ok(outputs) => Outcome::Applied { sku: Some(sku.into()), outputs },
            Err(rejection) => {
                if !existed {
                    state.skus.remove(sku);
                }
                Outcome::Rejected(rejection)
            }
        }
    }

    /// The stateless checks of an event (CONTRACT.md section 2), giving its fact.
    pub fn check(&self, event: &Event) -> Result<Fact, Rejection> {
        fact::check(&self.rules, event)
    }

    /// The keyed record applying `fact` reads, if any; a runner that holds a SKU's records
    /// in a store provides it (or learns it does not exist) before [`Fold::apply_fact`].
    pub fn record_key(event: &Event, fact: &Fact) -> Option<RecordKey> {
        match fact {
            Fact::Placed(placed) => Some(RecordKey::Line(placed.line.clone())),
            Fact::Cancelled { line, .. } => Some(RecordKey::Line(line.clone())),
            Fact::Shipped(shipped) => Some(RecordKey::Line(shipped.line.clone())),
            Fact::Returned(returned) => Some(RecordKey::Line(returned.line.clone())),
            Fact::PromotionScheduled(promotion) => {
                Some(RecordKey::Promotion((event.channel.clone(), promotion.promotion_id.clone())))
            }
            Fact::PromotionCancelled { promotion_id, .. } => {
                Some(RecordKey::Promotion((event.channel.clone(), promotion_id.clone())))
            }
            _ => None,
        }
    }

    /// Applies a checked channel-level fact (one without a SKU): no state, only its ledger
    /// entry.
    pub fn apply_channel_fact(&self, event: &Event, fact: &Fact) -> Result<Vec<Output>, Rejection> {
        let cause = Cause {
            sku: "",
            event_id: &event.event_id,
            at_ms: event.occurred_at_ms,
            channel: &event.channel,
            trigger: Trigger::Other,
        };
        Ok(ledger::channel_cost(&self.rules, cause, fact)?.into_iter().map(Output::Ledger).collect())
    }

    /// Applies a checked fact of a SKU to that SKU's state, whose working set holds the
    /// fact's record if it exists. On `Err` the state is as it was.
    pub fn apply_fact(
        &self,
        state: &mut SkuState,
        event: &Event,
        fact: &Fact,
    ) -> Result<Vec<Output>, Rejection> {
        let sku = fact.sku().expect("a fact of a sku");
        let cause = Cause {
            sku,
            event_id: &event.event_id,
            at_ms: event.occurred_at_ms,
            channel: &event.channel,
            trigger: trigger_of(fact),
        };
        let mut step = Step { rules: &self.rules, state, cause, outputs: Vec::new() };
        step.record(&event.channel, fact)?;
        step.evaluate();
        Ok(step.outputs)
    }
}

/// Applying one fact to one SKU.
struct Step<'a> {
    rules: &'a Rules,
    state: &'a mut SkuState,
    cause: Cause<'a>,
    /// Escalations and one-shot alerts found while recording, before re-evaluation.
    outputs: Vec<Output>,
}

impl Step<'_> {
    /// Records the fact in the SKU's state. On error nothing has changed.
    fn record(&mut self, channel: &str, fact: &Fact) -> Result<(), Rejection> {
        let at_ms = self.cause.at_ms;
        match fact {
            Fact::Placed(placed) => {
                let last_published = self.state.published.get(channel).copied().unwrap_or(0);
                let terms = ledger::terms(self.rules, placed)?;
                let advice = match placed.location {
                    None => routing::advise(self.rules, &self.state.stock, channel, placed.quantity),
                    Some(_) => None,
                };
                self.state.stock.place(self.rules, placed, terms, at_ms)?;
                if let Some(advice) = advice {
                    self.state.stock.advise(&placed.line, advice.location(), advice.split);
                    self.outputs.push(Output::Routing(routing::advised(placed, advice, self.cause)));
                }
                if let Some(breach) = stock_alerts::allocation_breach(placed, last_published) {
                    self.cause.trigger = Trigger::BreachingPlacement;
                    self.outputs.push(Output::Alert(alerts::raise(self.rules, &breach, self.cause)));
                }
                // no String allocated per placement: a channel's first placement is inserted once
                match self.state.first_placed.get_mut(channel) {
                    Some(first) => *first = (*first).min(at_ms),
                    None => {
                        self.state.first_placed.insert(channel.to_string(), at_ms);
                    }
                }
                self.check_spike(channel);
            }
            Fact::Cancelled { line, sku } => self.state.stock.cancel(line, sku)?,
            Fact::Shipped(shipped) => {
                let (unit_cost, fulfillment) = (self.unit_cost()?, ledger::fulfillment(self.rules, shipped)?);
                let line = self.state.stock.ship(shipped)?;
                let shipment = ledger::Shipment { shipped, line: &line, unit_cost, fulfillment };
                self.outputs.push(Output::Ledger(ledger::shipment(self.rules, self.cause, shipment)));
                let (key, sku, from) = (&shipped.line, &shipped.sku, &shipped.location);
                if let Some(note) = routing::shipped_elsewhere(key, sku, &line, from, self.cause) {
                    self.outputs.push(Output::Routing(note));
                }
            }
            Fact::Returned(returned) => {
                let unit_cost = self.unit_cost()?;
                let entry = ledger::returned(self.rules, self.cause, returned, unit_cost)?;
                self.state.stock.take_return(returned)?;
                self.outputs.push(Output::Ledger(entry));
            }
            Fact::Adjusted { location, delta, .. } => {
                let prior = self.state.stock.adjust(location, *delta);
                self.check_drop(location, prior, prior + delta);
            }
            Fact::Counted { location, on_hand, .. } => {
                let prior = self.state.stock.count(location, *on_hand);
                self.check_drop(location, prior, *on_hand);
            }
            Fact::PriceSet { price, .. } => {
                let set = Set { value: price.clone(), event_id: self.cause.event_id.to_string(), at_ms };
                let previous = self.state.prices.set_price(channel, set);
                if let Some(previous) = previous {
                    self.check_jump(channel, &previous.value, price);
                }
            }
            Fact::CostSet { unit_cost, .. } => {
                let set = Set { value: unit_cost.clone(), event_id: self.cause.event_id.to_string(), at_ms };
                self.state.prices.set_cost(set);
            }
            Fact::PromotionScheduled(promotion) => {
                self.state.prices.schedule(channel, promotion, self.cause.event_id)?;
            }
            Fact::PromotionCancelled { promotion_id, .. } => {
                self.state.prices.cancel(channel, promotion_id)?
            }
            Fact::CompetitorObserved { competitor, price, .. } => {
                let set = Set { value: price.clone(), event_id: self.cause.event_id.to_string(), at_ms };
                self.state.prices.observe(channel, competitor, set);
            }
            Fact::ChannelCost { .. } => unreachable!("channel-level facts have no sku"),
        }
        if touches_prices(fact) {
            self.state.prices_steady.clear();
            self.state.changed_parts.prices = true;
        }
        Ok(())
    }

    /// The SKU's unit cost in force, in reporting currency.
    fn unit_cost(&self) -> Result<rust_decimal::Decimal, Rejection> {
        ledger::unit_cost(self.rules, self.state.prices.unit_cost.as_ref().map(|set| &set.value))
    }

    /// Re-evaluates availability and every condition of the SKU at its clock.
    fn evaluate(&mut self) {
        let now = self.cause.at_ms;
        self.state.latest_ms = self.state.latest_ms.max(now);
        self.state.stock.demand.prune(self.state.latest_ms);
        if self.state.prices.let_go(self.state.latest_ms) {
            self.state.prices_steady.clear();
            self.state.changed_parts.prices = true;
        }
        // the outputs of the event itself go after what evaluation publishes: moved behind
        // it in the same list, not into a second one allocated per event
        let early = self.outputs.len();
        // evaluation reads stock and never changes it, so every pool's ATP is read once
        let atps = self.state.stock.atps(self.rules);
        self.publish_availability(&atps, now);
        self.publish_replenishment(&atps, now);
        self.outputs.rotate_left(early);
        let early_at = self.outputs.len() - early;
        // of the event's own outputs, its alerts stay here, the rest follow the new alerts
        let later: SmallVec<[Output; 2]> =
            self.outputs.extract_if(early_at.., |output| !matches!(output, Output::Alert(_))).collect();
        let (rules, sku) = (self.rules, self.cause.sku);
        let (stock, prices, open) = (&mut self.state.stock, &self.state.prices, &self.state.alerts);
        let mut holding = stock_alerts::holding(rules, stock, &atps, now, open);
        let steady = &mut self.state.prices_steady;
        holding.extend(price_alerts::holding_unless_steady(rules, sku, prices, now, open, steady));
        let read = || {
            let mut readings = stock_alerts::readings(rules, stock, &atps, now);
            readings.extend(price_alerts::readings(rules, sku, prices, now));
            readings
        };
        let records = alerts::reconcile(rules, &mut self.state.alerts, &holding, read, self.cause);
        // the open alerts change exactly when one is raised or resolved, each with a record
        self.state.changed_parts.alerts |= !records.is_empty();
        let escalations: Vec<Output> = records
            .iter()
            .filter_map(|alert| escalation::for_alert(self.rules, alert))
            .map(Output::Escalation)
            .collect();
        self.outputs.extend(records.into_iter().map(Output::Alert));
        self.outputs.extend(later);
        self.outputs.extend(escalations);
    }

    fn publish_availability(&mut self, atps: &Atps, now: i64) {
        for decision in allocate(self.rules, &mut self.state.stock, atps, now) {
            // a channel's entry is made once, not a String per decision
            match self.state.published.get_mut(decision.channel) {
                Some(last) if *last == decision.available => continue,
                Some(last) => *last = decision.available,
                None if decision.available == 0 => continue,
                None => {
                    self.state.published.insert(decision.channel.to_string(), decision.available);
                }
            }
            self.outputs.push(Output::Availability(PublishedAvailability {
                sku: self.cause.sku.into(),
                channel: decision.channel.into(),
                available: decision.available,
                mode: decision.mode as i32,
                rule: decision.rule as i32,
                reason_event_id: self.cause.event_id.into(),
                decided_at_ms: now,
            }));
        }
    }

    /// A pool's suggestion is published when it differs from the last one published; a
    /// suggestion of none only to clear one.
    fn publish_replenishment(&mut self, atps: &Atps, now: i64) {
        for plan in replenishment::suggestions(self.rules, &mut self.state.stock, atps, now, self.cause.sku) {
            let last = self.state.suggested.get(plan.pool_name.as_ref());
            if plan.repeats(last) {
                continue;
            }
            if plan.action == ReplenishmentAction::None {
                self.state.suggested.remove(plan.pool_name.as_ref());
            } else {
                self.state.suggested.insert(plan.pool_name.to_string(), plan.suggested());
            }
            self.outputs.push(Output::Replenishment(plan.record(self.cause)));
        }
    }

    /// ORDER_SPIKE is edge-triggered per (channel, SKU) and re-armed by a placement that
    /// finds it false.
    fn check_spike(&mut self, channel: &str) {
        let now = self.cause.at_ms;
        let demand = escalation::Demand {
            units_last_hour: self.state.stock.demand.units(channel, now, Span::Hour),
            units_28d: self.state.stock.demand.units(channel, now, Span::Month),
            selling_ms: self.state.first_placed.get(channel).map_or(0, |first| now - first),
        };
        if !escalation::spike_holds(self.rules, channel, demand) {
            self.state.spiking.remove(channel);
            return;
        }
        if self.state.spiking.insert(channel.to_string()) {
            let spike = escalation::order_spike(self.rules, channel, demand, self.cause);
            self.outputs.push(Output::Escalation(spike));
        }
    }

    fn check_drop(&mut self, location: &str, prior: i64, after: i64) {
        if let Some(drop) = escalation::stock_drop(self.rules, location, prior, after, self.cause) {
            self.outputs.push(Output::Escalation(drop));
        }
    }

    fn check_jump(&mut self, channel: &str, previous: &crate::money::Amount, price: &crate::money::Amount) {
        let contract = &self.rules.contract;
        let (Ok(previous), Ok(price)) = (contract.to_reporting(previous), contract.to_reporting(price))
        else {
            return;
        };
        if let Some(jump) = escalation::price_jump(self.rules, channel, previous, price, self.cause) {
            self.outputs.push(Output::Escalation(jump));
        }
    }
}

/// Whether the fact changes what a price rule reads: the listed prices, the cost, the
/// promotions or the competitors' prices. Every kind is named, so a new one must be decided.
fn touches_prices(fact: &Fact) -> bool {
    match fact {
        Fact::PriceSet { .. }
        | Fact::CostSet { .. }
        | Fact::PromotionScheduled(_)
        | Fact::PromotionCancelled { .. }
        | Fact::CompetitorObserved { .. } => true,
        Fact::Placed(_)
        | Fact::Cancelled { .. }
        | Fact::Shipped(_)
        | Fact::Returned(_)
        | Fact::Adjusted { .. }
        | Fact::Counted { .. }
        | Fact::ChannelCost { .. } => false,
    }
}

/// What an event is, as far as accountability cares; a placement turns into a breaching one
/// when it raises ALLOCATION_BREACH.
fn trigger_of(fact: &Fact) -> Trigger {
    match fact {
        Fact::Placed(_) => Trigger::Placement,
        Fact::PriceSet { .. } => Trigger::PriceSet,
        Fact::PromotionScheduled(_) => Trigger::PromotionScheduled,
        _ => Trigger::Other,
    }
}

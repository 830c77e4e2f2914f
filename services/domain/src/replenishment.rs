//! Reorder suggestions for the shared pool and transfer suggestions into dedicated FBA pools
//! (CONTRACT.md section 10), from each pool's trailing 28-day placements, which
//! [`crate::demand`] keeps incrementally per pool: no event reads the SKU's history.
//!
//! Every test is made without division (velocity = U / 28 is multiplied out), so the
//! thresholds are exact; the velocity and cover the records show are rounded for reading.

use std::borrow::Cow;

use compact_str::{CompactString, ToCompactString};
use omnifold_proto::borrowed::ReplenishmentRef;
use omnifold_proto::{Replenishment, ReplenishmentAction};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::alerts::Cause;
use crate::allocation::PerChannel;
use crate::contract::{Rules, TransferPool};
use crate::cover::{Shortfall, WINDOW_DAYS};
use crate::demand::Span;
use crate::stock::{Atps, Pool, Stock};

/// What a suggestion says, as compared to decide whether it changed: the numbers behind it
/// move with every event, the suggestion itself far less often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggested {
    pub action: i32,
    pub units: i64,
    pub location: String,
    pub from_location: String,
}

impl Suggested {
    pub fn is_none(&self) -> bool {
        self.action == ReplenishmentAction::None as i32
    }
}

/// A suggestion as the fold publishes it (a `Replenishment` record): its ids and figures as
/// text inline up to 24 bytes, encoded from them as they are, as
/// [`crate::allocation::PublishedAvailability`] is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishedReplenishment {
    pub sku: CompactString,
    pub pool: CompactString,
    /// A [`ReplenishmentAction`], as the record holds it.
    pub action: i32,
    pub units: i64,
    pub location: CompactString,
    pub from_location: CompactString,
    pub atp: i64,
    pub open_inbound: i64,
    pub units_placed_28d: i64,
    pub velocity: CompactString,
    pub cover_days: CompactString,
    pub lead_time_days: CompactString,
    pub review_period_days: CompactString,
    pub target_cover_days: CompactString,
    pub reorder_point: CompactString,
    pub case_pack: i64,
    pub fba_target_cover_days: CompactString,
    pub needed: i64,
    pub shared_atp: i64,
    pub shared_target: i64,
    pub shared_spare: i64,
    pub min_transfer_units: i64,
    pub reason_event_id: CompactString,
    pub decided_at_ms: i64,
}

impl PublishedReplenishment {
    pub fn fields(&self) -> ReplenishmentRef<'_> {
        ReplenishmentRef {
            sku: &self.sku,
            pool: &self.pool,
            action: self.action,
            units: self.units,
            location: &self.location,
            from_location: &self.from_location,
            atp: self.atp,
            open_inbound: self.open_inbound,
            units_placed_28d: self.units_placed_28d,
            velocity: &self.velocity,
            cover_days: &self.cover_days,
            lead_time_days: &self.lead_time_days,
            review_period_days: &self.review_period_days,
            target_cover_days: &self.target_cover_days,
            reorder_point: &self.reorder_point,
            case_pack: self.case_pack,
            fba_target_cover_days: &self.fba_target_cover_days,
            needed: self.needed,
            shared_atp: self.shared_atp,
            shared_target: self.shared_target,
            shared_spare: self.shared_spare,
            min_transfer_units: self.min_transfer_units,
            reason_event_id: &self.reason_event_id,
            decided_at_ms: self.decided_at_ms,
        }
    }

    /// The record's protobuf encoding.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        self.fields().encode_to_vec()
    }

    pub fn to_message(&self) -> Replenishment {
        self.fields().to_message()
    }
}

/// A pool's suggestion worked out in numbers. Every event of a SKU works one out for each
/// pool; only one that differs from the last published is rendered into a record
/// ([`Plan::record`]), so the per-event path formats no text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'r> {
    pub pool_name: Cow<'r, str>,
    pub action: ReplenishmentAction,
    pub units: i64,
    pub location: &'r str,
    pub from_location: &'r str,
    atp: i64,
    units_28d: i64,
    needed: i64,
    terms: Terms,
}

/// What only the record shows, by kind of suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Terms {
    Reorder { lead: Decimal, review: Decimal, target: Decimal, pack: i64 },
    Transfer { target: Decimal, shared_atp: i64, shared_target: i64, spare: i64, min_transfer_units: i64 },
}

impl<'r> Plan<'r> {
    /// Nothing to do for the pool, with the numbers behind that.
    fn none(pool_name: Cow<'r, str>, atp: i64, units_28d: i64, terms: Terms) -> Self {
        Plan {
            pool_name,
            action: ReplenishmentAction::None,
            units: 0,
            location: "",
            from_location: "",
            atp,
            units_28d,
            needed: 0,
            terms,
        }
    }

    /// Whether it says what `last` said (absent: none).
    pub fn repeats(&self, last: Option<&Suggested>) -> bool {
        match last {
            Some(last) => {
                last.action == self.action as i32
                    && last.units == self.units
                    && last.location == self.location
                    && last.from_location == self.from_location
            }
            None => self.action == ReplenishmentAction::None,
        }
    }

    pub fn suggested(&self) -> Suggested {
        Suggested {
            action: self.action as i32,
            units: self.units,
            location: self.location.to_string(),
            from_location: self.from_location.to_string(),
        }
    }

    /// The record published for it.
    pub fn record(&self, cause: Cause) -> PublishedReplenishment {
        let mut record = PublishedReplenishment {
            sku: cause.sku.into(),
            pool: self.pool_name.as_ref().into(),
            action: self.action as i32,
            units: self.units,
            location: self.location.into(),
            from_location: self.from_location.into(),
            atp: self.atp,
            units_placed_28d: self.units_28d,
            needed: self.needed,
            velocity: velocity(self.units_28d).to_compact_string(),
            cover_days: cover_days(self.atp, self.units_28d),
            reason_event_id: cause.event_id.into(),
            decided_at_ms: cause.at_ms,
            ..PublishedReplenishment::default()
        };
        match &self.terms {
            Terms::Reorder { lead, review, target, pack } => {
                let point = Decimal::from(self.units_28d) * (lead + review) / Decimal::from(WINDOW_DAYS);
                record.open_inbound = 0;
                record.lead_time_days = lead.normalize().to_compact_string();
                record.review_period_days = review.normalize().to_compact_string();
                record.target_cover_days = target.normalize().to_compact_string();
                record.reorder_point = point.round_dp(2).normalize().to_compact_string();
                record.case_pack = *pack;
            }
            Terms::Transfer { target, shared_atp, shared_target, spare, min_transfer_units } => {
                record.fba_target_cover_days = target.normalize().to_compact_string();
                record.shared_atp = *shared_atp;
                record.shared_target = *shared_target;
                record.shared_spare = *spare;
                record.min_transfer_units = *min_transfer_units;
            }
        }
        record
    }
}

/// The suggestion of every pool the contract asks about, in order: the shared pool, then the
/// dedicated FBA pools in (priority, id) order of their channels.
pub fn suggestions<'r>(
    rules: &'r Rules,
    stock: &mut Stock,
    atps: &Atps,
    now: i64,
    sku: &str,
) -> PerChannel<Plan<'r>> {
    let mut plans = PerChannel::new();
    if rules.contract.replenishment.is_none() && rules.contract.transfers.is_none() {
        return plans;
    }
    let shared = SharedPool::read(rules, stock, atps, now);
    if rules.contract.replenishment.is_some()
        && let Some(plan) = reorder(rules, &shared, sku)
    {
        plans.push(plan);
    }
    if rules.contract.transfers.is_some() {
        for dedicated in rules.transfer_pools() {
            if let Some(plan) = transfer(rules, stock, atps, &shared, dedicated, now) {
                plans.push(plan);
            }
        }
    }
    plans
}

/// What every suggestion reads of the shared pool, read once per event.
struct SharedPool {
    /// Units placed on lines reserving in it in the trailing 28 days.
    units_28d: i64,
    atp: i64,
}

impl SharedPool {
    fn read(rules: &Rules, stock: &mut Stock, atps: &Atps, now: i64) -> Self {
        let pool = Pool::Shared;
        let units_28d = stock.demand.pool_units(&rules.pool_series(&pool), now, Span::Month);
        SharedPool { units_28d, atp: atps.shared() }
    }
}

fn velocity(units: i64) -> Decimal {
    (Decimal::from(units) / Decimal::from(WINDOW_DAYS)).round_dp(4).normalize()
}

fn cover_days(atp: i64, units: i64) -> CompactString {
    if units == 0 {
        return CompactString::default();
    }
    let cover = Decimal::from(atp) * Decimal::from(WINDOW_DAYS) / Decimal::from(units);
    cover.round_dp(1).normalize().to_compact_string()
}

/// The location an order for the shared pool lands at: the first shared location of the
/// contract (its lead time override applies).
fn receiving_location(rules: &Rules) -> Option<&str> {
    rules.contract.locations.iter().find(|l| l.dedicated_to.is_none()).map(|l| l.id.as_str())
}

/// Reorder when ATP + inbound < v x (L + R); order ceil(v x (L + T) - (ATP + inbound)),
/// rounded up to the case pack.
fn reorder<'r>(rules: &'r Rules, shared: &SharedPool, sku: &str) -> Option<Plan<'r>> {
    let config = rules.contract.replenishment.as_ref()?;
    let location = receiving_location(rules)?;
    let (units, atp) = (shared.units_28d, shared.atp);
    let inbound = 0;
    let lead = config.location_lead_time_days.get(location).copied().unwrap_or(config.lead_time_days);
    let (review, target) = (config.review_period_days, config.target_cover_days);
    let pack = config.case_pack.get(sku).copied().unwrap_or(1).max(1);
    let position = atp + inbound;
    let terms = Terms::Reorder { lead, review, target, pack };
    let mut plan = Plan::none(rules.pool_name(&Pool::Shared), atp, units, terms);
    // 28 x (ATP + inbound) < U x (L + R) is ATP + inbound < v x (L + R) without division
    if Shortfall::of(units, lead + review, position).is_short() {
        let needed = Shortfall::of(units, lead + target, position).units();
        if needed > 0 {
            plan.needed = needed;
            plan.units = (needed + pack - 1) / pack * pack;
            plan.action = ReplenishmentAction::Reorder;
            plan.location = location;
        }
    }
    Some(plan)
}

/// The shared location with the most on-hand, ties to the earlier in the contract.
fn richest_shared<'r>(rules: &'r Rules, stock: &Stock) -> Option<&'r str> {
    let shared = rules.contract.locations.iter().filter(|l| l.dedicated_to.is_none());
    let mut best: Option<(&str, i64)> = None;
    for location in shared {
        let on_hand = stock.on_hand_at(&location.id);
        if best.is_none_or(|(_, most)| on_hand > most) {
            best = Some((&location.id, on_hand));
        }
    }
    best.map(|(id, _)| id)
}

/// Move min(needed, spare) when the FBA pool's cover is below `fba_target_cover_days` and it
/// comes to at least `min_transfer_units`.
fn transfer<'r>(
    rules: &'r Rules,
    stock: &mut Stock,
    atps: &Atps,
    shared: &SharedPool,
    dedicated: &'r TransferPool,
    now: i64,
) -> Option<Plan<'r>> {
    let config = rules.contract.transfers.as_ref()?;
    let fba = dedicated.fba_location.as_str();
    let units = stock.demand.pool_units(&dedicated.series, now, Span::Month);
    let atp = atps.of(rules, &dedicated.pool);
    let (shared_units, shared_atp) = (shared.units_28d, shared.atp);
    let shared_cover = match &rules.contract.replenishment {
        Some(replenishment) => replenishment.target_cover_days,
        None => rules.contract.allocation.reorder_cover_days,
    };
    let shared_target = Shortfall::of(shared_units, shared_cover, 0).units().max(0);
    let spare = (shared_atp - shared_target).max(0);
    let target = config.fba_target_cover_days;
    let min_transfer_units = config.min_transfer_units;
    let terms = Terms::Transfer { target, shared_atp, shared_target, spare, min_transfer_units };
    let mut plan = Plan::none(Cow::Borrowed(&dedicated.name), atp, units, terms);
    // cover < target, i.e. 28 x ATP < U x F; no cover figure (U = 0) raises nothing
    let shortfall = Shortfall::of(units, target, atp);
    if units > 0 && shortfall.is_short() {
        let needed = shortfall.units();
        plan.needed = needed;
        let moved = needed.min(spare);
        if moved > 0
            && moved >= min_transfer_units
            && let Some(from) = richest_shared(rules, stock)
        {
            plan.action = ReplenishmentAction::Transfer;
            plan.units = moved;
            plan.location = fba;
            plan.from_location = from;
        }
    }
    Some(plan)
}

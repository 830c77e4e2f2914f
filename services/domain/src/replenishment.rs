//! Reorder suggestions for the shared pool and transfer suggestions into dedicated FBA pools
//! (CONTRACT.md section 10), from each pool's trailing 28-day placements, which
//! [`crate::demand`] keeps incrementally per pool: no event reads the SKU's history.
//!
//! Every test is made without division (velocity = U / 28 is multiplied out), so the
//! thresholds are exact; the velocity and cover the records show are rounded for reading.

use omnifold_proto::{Replenishment, ReplenishmentAction};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::alerts::Cause;
use crate::contract::{LocationKind, Rules};
use crate::demand::Span;
use crate::stock::{Pool, Stock};

const WINDOW_DAYS: i64 = 28;

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
    pub fn of(record: &Replenishment) -> Self {
        Suggested {
            action: record.action,
            units: record.units,
            location: record.location.clone(),
            from_location: record.from_location.clone(),
        }
    }

    pub fn is_none(&self) -> bool {
        self.action == ReplenishmentAction::None as i32
    }
}

/// The suggestion of every pool the contract asks about, in order: the shared pool, then the
/// dedicated FBA pools in (priority, id) order of their channels.
pub fn suggestions(rules: &Rules, stock: &mut Stock, now: i64, cause: Cause) -> Vec<Replenishment> {
    let mut records = Vec::new();
    if rules.contract.replenishment.is_some()
        && let Some(record) = reorder(rules, stock, now, cause)
    {
        records.push(record);
    }
    if rules.contract.transfers.is_some() {
        for channel in rules.channels_in_order() {
            if let Some(record) = transfer(rules, stock, &channel.id, now, cause) {
                records.push(record);
            }
        }
    }
    records
}

/// ceil(n / d) for d > 0.
fn ceil_div(n: Decimal, d: i64) -> i64 {
    let q = (n / Decimal::from(d)).ceil();
    i64::try_from(q).unwrap_or(i64::MAX)
}

fn velocity(units: i64) -> Decimal {
    (Decimal::from(units) / Decimal::from(WINDOW_DAYS)).round_dp(4).normalize()
}

fn cover_days(atp: i64, units: i64) -> String {
    if units == 0 {
        return String::new();
    }
    let cover = Decimal::from(atp) * Decimal::from(WINDOW_DAYS) / Decimal::from(units);
    cover.round_dp(1).normalize().to_string()
}

fn base(sku: &str, pool: &Pool, atp: i64, units: i64, cause: Cause) -> Replenishment {
    Replenishment {
        sku: sku.to_string(),
        pool: pool.name(),
        action: ReplenishmentAction::None as i32,
        atp,
        units_placed_28d: units,
        velocity: velocity(units).to_string(),
        cover_days: cover_days(atp, units),
        reason_event_id: cause.event_id.to_string(),
        decided_at_ms: cause.at_ms,
        ..Replenishment::default()
    }
}

/// The location an order for the shared pool lands at: the first shared location of the
/// contract (its lead time override applies).
fn receiving_location(rules: &Rules) -> Option<&str> {
    rules.contract.locations.iter().find(|l| l.dedicated_to.is_none()).map(|l| l.id.as_str())
}

/// Reorder when ATP + inbound < v x (L + R); order ceil(v x (L + T) - (ATP + inbound)),
/// rounded up to the case pack.
fn reorder(rules: &Rules, stock: &mut Stock, now: i64, cause: Cause) -> Option<Replenishment> {
    let config = rules.contract.replenishment.as_ref()?;
    let location = receiving_location(rules)?;
    let pool = Pool::Shared;
    let units = stock.demand.pool_units(&pool.name(), now, Span::Month);
    let atp = stock.atp(rules, &pool);
    let inbound = 0;
    let lead = config.location_lead_time_days.get(location).copied().unwrap_or(config.lead_time_days);
    let (review, target) = (config.review_period_days, config.target_cover_days);
    let pack = config.case_pack.get(cause.sku).copied().unwrap_or(1).max(1);
    let position = Decimal::from(atp + inbound);
    let days = Decimal::from(WINDOW_DAYS);
    let mut record = base(cause.sku, &pool, atp, units, cause);
    record.open_inbound = inbound;
    record.lead_time_days = lead.normalize().to_string();
    record.review_period_days = review.normalize().to_string();
    record.target_cover_days = target.normalize().to_string();
    let point = Decimal::from(units) * (lead + review) / days;
    record.reorder_point = point.round_dp(2).normalize().to_string();
    record.case_pack = pack;
    record.location = location.to_string();
    // 28 x (ATP + inbound) < U x (L + R) is ATP + inbound < v x (L + R) without division
    if position * days < Decimal::from(units) * (lead + review) {
        let needed = ceil_div(Decimal::from(units) * (lead + target) - position * days, WINDOW_DAYS);
        if needed > 0 {
            record.needed = needed;
            record.units = (needed + pack - 1) / pack * pack;
            record.action = ReplenishmentAction::Reorder as i32;
        }
    }
    if record.action == ReplenishmentAction::None as i32 {
        record.location.clear();
    }
    Some(record)
}

/// The FBA location dedicated to a channel: its first `fba` location in contract order.
fn fba_location<'a>(rules: &'a Rules, channel: &str) -> Option<&'a str> {
    rules
        .contract
        .locations
        .iter()
        .find(|l| l.kind == LocationKind::Fba && l.dedicated_to.as_deref() == Some(channel))
        .map(|l| l.id.as_str())
}

/// The shared location with the most on-hand, ties to the earlier in the contract.
fn richest_shared(rules: &Rules, stock: &Stock) -> Option<String> {
    let shared = rules.contract.locations.iter().filter(|l| l.dedicated_to.is_none());
    let mut best: Option<(&str, i64)> = None;
    for location in shared {
        let on_hand = stock.on_hand_at(&location.id);
        if best.is_none_or(|(_, most)| on_hand > most) {
            best = Some((&location.id, on_hand));
        }
    }
    best.map(|(id, _)| id.to_string())
}

/// Move min(needed, spare) when the FBA pool's cover is below `fba_target_cover_days` and it
/// comes to at least `min_transfer_units`.
fn transfer(
    rules: &Rules,
    stock: &mut Stock,
    channel: &str,
    now: i64,
    cause: Cause,
) -> Option<Replenishment> {
    let config = rules.contract.transfers.as_ref()?;
    let fba = fba_location(rules, channel)?;
    let pool = Pool::Dedicated(channel.to_string());
    let units = stock.demand.pool_units(&pool.name(), now, Span::Month);
    let atp = stock.atp(rules, &pool);
    let shared_units = stock.demand.pool_units(&Pool::Shared.name(), now, Span::Month);
    let shared_atp = stock.atp(rules, &Pool::Shared);
    let shared_cover = match &rules.contract.replenishment {
        Some(replenishment) => replenishment.target_cover_days,
        None => rules.contract.allocation.reorder_cover_days,
    };
    let shared_target = ceil_div(Decimal::from(shared_units) * shared_cover, WINDOW_DAYS).max(0);
    let spare = (shared_atp - shared_target).max(0);
    let target = config.fba_target_cover_days;
    let days = Decimal::from(WINDOW_DAYS);
    let mut record = base(cause.sku, &pool, atp, units, cause);
    record.fba_target_cover_days = target.normalize().to_string();
    record.shared_atp = shared_atp;
    record.shared_target = shared_target;
    record.shared_spare = spare;
    record.min_transfer_units = config.min_transfer_units;
    // cover < target, i.e. 28 x ATP < U x F; no cover figure (U = 0) raises nothing
    if units > 0 && Decimal::from(atp) * days < Decimal::from(units) * target {
        let needed = ceil_div(Decimal::from(units) * target - Decimal::from(atp) * days, WINDOW_DAYS);
        record.needed = needed;
        let moved = needed.min(spare);
        let from = richest_shared(rules, stock);
        if moved > 0
            && moved >= config.min_transfer_units
            && let Some(from) = from
        {
            record.action = ReplenishmentAction::Transfer as i32;
            record.units = moved;
            record.location = fba.to_string();
            record.from_location = from;
        }
    }
    Some(record)
}

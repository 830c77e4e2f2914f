//! The stock conditions of CONTRACT.md section 5: OVERSELL, NEGATIVE_STOCK, LOW_COVER (held
//! conditions) and ALLOCATION_BREACH (one-shot, raised at placement).

use omnifold_proto::{AlertKind, Severity};
use rust_decimal::Decimal;

use crate::alerts::{self, Condition, Holding, Open, Reading};
use crate::contract::Rules;
use crate::cover::{Shortfall, WINDOW_DAYS};
use crate::demand::Span;
use crate::fact::Placed;
use crate::stock::{Atps, Pool, Stock};

/// The channels a stock alert on `pool` names: the dedicated channel, or every shared seller.
pub fn pool_channels(rules: &Rules, pool: &Pool) -> Vec<String> {
    match pool {
        Pool::Dedicated(channel) => vec![channel.clone()],
        Pool::Shared => rules.shared_sellers().map(|c| c.id.clone()).collect(),
    }
}

/// Every stock condition that holds for the SKU now; those with an alert in `open` by key
/// only.
pub fn holding(rules: &Rules, stock: &mut Stock, atps: &Atps, now: i64, open: &Open) -> Vec<Holding> {
    let mut conditions = Vec::new();
    conditions.extend(oversells(rules, stock, atps, open));
    conditions.extend(negative_stock(rules, stock, open));
    conditions.extend(low_cover(rules, stock, atps, now, open));
    conditions
}

/// The numbers of every stock subject that can resolve, whether or not its condition holds.
pub fn readings(rules: &Rules, stock: &mut Stock, atps: &Atps, now: i64) -> Vec<Reading> {
    let mut readings: Vec<Reading> = rules
        .stocked_pools()
        .iter()
        .map(|pool| Reading {
            key: rules.oversell_key(pool).into_owned(),
            details: pool_details(atps.of(rules, pool), reserved(stock, pool)),
        })
        .collect();
    readings.extend(stock.on_hand.iter().map(|(location, units)| Reading {
        key: alerts::key(AlertKind::NegativeStock, &location_subject(location)),
        details: location_details(*units),
    }));
    let placed = stock.demand.total(now, Span::Month);
    readings.push(Reading {
        key: alerts::key(AlertKind::LowCover, ""),
        details: cover_details(rules, atps.shared(), placed),
    });
    readings
}

/// Lazily, as [`negative_stock`]: [`holding`] collects both into one list, not a list each.
fn oversells<'a>(
    rules: &'a Rules,
    stock: &'a Stock,
    atps: &'a Atps,
    open: &'a Open,
) -> impl Iterator<Item = Holding> + 'a {
    rules.stocked_pools().iter().filter_map(move |pool| {
        let atp = atps.of(rules, pool);
        if atp >= 0 {
            return None;
        }
        let key = rules.oversell_key(pool).into_owned();
        Some(alerts::hold_keyed(open, key, || Condition {
            kind: AlertKind::Oversell,
            subject: pool_subject(pool),
            severity: Severity::Critical,
            channels: pool_channels(rules, pool),
            location: String::new(),
            pool: pool.name(),
            summary: format!("the {} pool is oversold by {} units", pool.name(), -atp),
            subject_details: Vec::new(),
            details: pool_details(atp, reserved(stock, pool)),
            recommended_action: "replenish or transfer stock into the pool, or cancel open orders".into(),
        }))
    })
}

fn reserved(stock: &Stock, pool: &Pool) -> i64 {
    stock.reserved.get(pool).copied().unwrap_or(0)
}

fn pool_subject(pool: &Pool) -> String {
    format!("pool={}", pool.name())
}

/// The key of a pool's OVERSELL condition; [`Rules::oversell_key`] holds those of the
/// contract's pools.
pub(crate) fn oversell_key(pool: &Pool) -> String {
    alerts::key(AlertKind::Oversell, &pool_subject(pool))
}

fn pool_details(atp: i64, reserved: i64) -> Vec<(String, String)> {
    vec![
        ("atp".into(), atp.to_string()),
        ("on_hand".into(), (atp + reserved).to_string()),
        ("reserved".into(), reserved.to_string()),
    ]
}

fn negative_stock<'a>(
    rules: &'a Rules,
    stock: &'a Stock,
    open: &'a Open,
) -> impl Iterator<Item = Holding> + 'a {
    stock.on_hand.iter().filter(|(_, units)| **units < 0).map(move |(location, units)| {
        alerts::hold(open, AlertKind::NegativeStock, location_subject(location), |subject| {
            let pool = Pool::of_location(rules, location);
            Condition {
                kind: AlertKind::NegativeStock,
                subject,
                severity: Severity::Critical,
                channels: pool_channels(rules, &pool),
                location: location.clone(),
                pool: pool.name(),
                summary: format!("on-hand at {location} is {units}, below zero"),
                subject_details: Vec::new(),
                details: location_details(*units),
                recommended_action: format!("count the stock at {location} and correct the record"),
            }
        })
    })
}

fn location_subject(location: &str) -> String {
    format!("location={location}")
}

fn location_details(on_hand: i64) -> Vec<(String, String)> {
    vec![("on_hand".into(), on_hand.to_string())]
}

/// ATP(shared) x 28 / units placed in 28 days < reorder_cover_days, compared without division.
fn low_cover(rules: &Rules, stock: &mut Stock, atps: &Atps, now: i64, open: &Open) -> Option<Holding> {
    let placed = stock.demand.total(now, Span::Month);
    if placed <= 0 {
        return None;
    }
    let atp = atps.shared();
    let cover_days = rules.contract.allocation.reorder_cover_days;
    if !Shortfall::of(placed, cover_days, atp).is_short() {
        return None;
    }
    Some(alerts::hold(open, AlertKind::LowCover, String::new(), |subject| Condition {
        kind: AlertKind::LowCover,
        subject,
        severity: Severity::Warning,
        channels: pool_channels(rules, &Pool::Shared),
        location: String::new(),
        pool: Pool::Shared.name(),
        summary: format!(
            "the shared pool covers {} days of demand, below {cover_days}",
            cover(atp, placed).expect("units were placed")
        ),
        subject_details: Vec::new(),
        details: cover_details(rules, atp, placed),
        recommended_action: "reorder or transfer stock to the shared pool".into(),
    }))
}

/// Days of demand the shared pool covers; none without demand to cover.
fn cover(atp: i64, placed: i64) -> Option<Decimal> {
    (placed > 0)
        .then(|| (Decimal::from(atp) * Decimal::from(WINDOW_DAYS) / Decimal::from(placed)).round_dp(1))
}

/// With nothing placed in 28 days, cover_days is left out: there is no demand to divide by.
fn cover_details(rules: &Rules, atp: i64, placed: i64) -> Vec<(String, String)> {
    let mut details =
        vec![("atp_shared".into(), atp.to_string()), ("units_placed_28d".into(), placed.to_string())];
    if let Some(cover) = cover(atp, placed) {
        details.push(("cover_days".into(), cover.to_string()));
    }
    details.push(("reorder_cover_days".into(), rules.contract.allocation.reorder_cover_days.to_string()));
    details
}

/// ALLOCATION_BREACH: the line asks for more than the channel's last published number.
pub fn allocation_breach(placed: &Placed, last_published: i64) -> Option<Condition> {
    if placed.quantity <= last_published {
        return None;
    }
    let line = &placed.line;
    Some(Condition {
        kind: AlertKind::AllocationBreach,
        subject: format!("line={line}"),
        severity: Severity::Warning,
        channels: vec![line.channel.to_string()],
        location: placed.location.clone().unwrap_or_default(),
        pool: String::new(),
        subject_details: Vec::new(),
        summary: format!(
            "{} sold {} units of a line while its published availability was {}",
            line.channel, placed.quantity, last_published
        ),
        details: vec![
            ("quantity".into(), placed.quantity.to_string()),
            ("published_available".into(), last_published.to_string()),
            ("order_id".into(), line.order_id.to_string()),
            ("line_id".into(), line.line_id.to_string()),
        ],
        recommended_action: format!(
            "check that {} reads omnifold's availability before selling",
            line.channel
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Contract;

    #[test]
    fn a_pools_oversell_key_is_made_once_as_its_subject_makes_it() {
        let contract: Contract = toml::from_str(include_str!("../tests/scenarios/contract.toml")).unwrap();
        let rules = Rules::new(contract);
        let foreign = Pool::Dedicated("a-channel-no-longer-named".into());
        assert!(rules.stocked_pools().len() > 1, "the contract has dedicated pools");
        for pool in rules.stocked_pools().iter().chain([&foreign]) {
            let made = alerts::key(AlertKind::Oversell, &pool_subject(pool));
            assert_eq!(rules.oversell_key(pool), made);
        }
        assert_eq!(rules.oversell_key(&Pool::Shared), "OVERSELL/pool=shared");
    }
}

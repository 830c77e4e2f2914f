//! Escalation to on-call (CONTRACT.md section 6): every RAISED CRITICAL alert, and the
//! unusual-event rules ORDER_SPIKE, STOCK_DROP and PRICE_JUMP.

use omnifold_proto::{Alert, AlertState, Escalation, EscalationRule, Severity};
use rust_decimal::Decimal;

use crate::alerts::{Cause, OPERATIONS};
use crate::contract::Rules;
use crate::stock::{HOUR_MS, WINDOW_MS};

const DAY_MS: i64 = 24 * HOUR_MS;

/// The channel key of escalations that concern more than one channel.
pub const GLOBAL: &str = "global";

/// Who an escalation goes to: a channel with its people, or `global` with the operations
/// owner and on-call when `party` is [`OPERATIONS`] (or no contract channel).
fn target(rules: &Rules, party: &str) -> (String, String, String) {
    let (owner, on_call) = rules.people_of(party);
    let channel = if rules.channel(party).is_some() { party.to_string() } else { GLOBAL.to_string() };
    (channel, owner.to_string(), on_call.to_string())
}

struct Draft {
    escalation_id: String,
    severity: Severity,
    /// A channel id, or [`OPERATIONS`].
    party: String,
    summary: String,
    cause: Vec<String>,
    rule: EscalationRule,
    at_ms: i64,
}

fn build(rules: &Rules, draft: Draft) -> Escalation {
    let (channel, owner, on_call) = target(rules, &draft.party);
    Escalation {
        escalation_id: draft.escalation_id,
        severity: draft.severity as i32,
        channel,
        owner,
        on_call,
        summary: draft.summary,
        cause: draft.cause,
        rule: draft.rule as i32,
        occurred_at_ms: draft.at_ms,
    }
}

/// CRITICAL_ALERT: one escalation for a RAISED CRITICAL alert, to its accountable channel (or
/// `global` and the operations people).
pub fn for_alert(rules: &Rules, alert: &Alert) -> Option<Escalation> {
    if alert.state != AlertState::Raised as i32 || alert.severity != Severity::Critical as i32 {
        return None;
    }
    Some(build(
        rules,
        Draft {
            escalation_id: format!("critical_alert/{}", alert.alert_id),
            severity: Severity::Critical,
            party: alert.accountable.clone(),
            summary: alert.summary.clone(),
            cause: vec![alert.alert_id.clone()],
            rule: EscalationRule::CriticalAlert,
            at_ms: alert.occurred_at_ms,
        },
    ))
}

/// STOCK_DROP: a movement that removes more than stock_drop_fraction of a positive on-hand;
/// to the location's dedicated channel, or `global` and the operations people at a shared one.
pub fn stock_drop(
    rules: &Rules,
    location: &str,
    prior: i64,
    after: i64,
    cause: Cause<'_>,
) -> Option<Escalation> {
    let removed = prior - after;
    if prior <= 0 || removed <= 0 {
        return None;
    }
    let fraction = rules.contract.escalation.stock_drop_fraction;
    if Decimal::from(removed) <= fraction * Decimal::from(prior) {
        return None;
    }
    Some(build(
        rules,
        Draft {
            escalation_id: format!("stock_drop/{}/{location}/{}", cause.sku, cause.event_id),
            severity: Severity::Warning,
            party: rules
                .location(location)
                .and_then(|l| l.dedicated_to.clone())
                .unwrap_or_else(|| OPERATIONS.to_string()),
            summary: format!(
                "{} at {location} dropped from {prior} to {after} units in one movement",
                cause.sku
            ),
            cause: vec![cause.event_id.to_string()],
            rule: EscalationRule::StockDrop,
            at_ms: cause.at_ms,
        },
    ))
}

/// What ORDER_SPIKE compares for one (channel, SKU) at a placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    pub units_last_hour: i64,
    pub units_28d: i64,
    /// now - the channel's first accepted placement of the SKU, in ms.
    pub selling_ms: i64,
}

/// Whether ORDER_SPIKE holds (CONTRACT.md section 6): units in the last hour exceed both
/// spike_factor x the baseline and the channel's spike_min_units. The baseline is units in 28
/// days over the hours the channel has sold the SKU within them, min(672, selling_ms / 1 h);
/// there is none, hence no spike, before spike_min_history_days of selling.
///
/// Exact without dividing: with h = min(672 h, selling_ms) in ms, units > factor x
/// units_28d / (h / 1 h) is units x h > factor x units_28d x 1 h.
pub fn spike_holds(rules: &Rules, channel: &str, demand: Demand) -> bool {
    let escalation = &rules.contract.escalation;
    let min_history_ms = escalation.spike_min_history_days * Decimal::from(DAY_MS);
    if demand.selling_ms <= 0 || Decimal::from(demand.selling_ms) < min_history_ms {
        return false;
    }
    let hours_ms = Decimal::from(demand.selling_ms.min(WINDOW_MS));
    let units = Decimal::from(demand.units_last_hour);
    let over_baseline =
        units * hours_ms > escalation.spike_factor * Decimal::from(demand.units_28d) * Decimal::from(HOUR_MS);
    over_baseline && demand.units_last_hour > rules.spike_min_units(channel)
}

/// ORDER_SPIKE: one escalation when the condition becomes true for (channel, SKU).
pub fn order_spike(rules: &Rules, channel: &str, demand: Demand, cause: Cause<'_>) -> Escalation {
    let Demand { units_last_hour, units_28d, .. } = demand;
    build(
        rules,
        Draft {
            escalation_id: format!("order_spike/{channel}/{}/{}", cause.sku, cause.event_id),
            severity: Severity::Warning,
            party: channel.to_string(),
            summary: format!(
                "{channel} placed {units_last_hour} units of {} in the last hour against {units_28d} in 28 days",
                cause.sku
            ),
            cause: vec![cause.event_id.to_string()],
            rule: EscalationRule::OrderSpike,
            at_ms: cause.at_ms,
        },
    )
}

/// PRICE_JUMP: a listed price that moves by more than price_jump_fraction of the previous one.
pub fn price_jump(
    rules: &Rules,
    channel: &str,
    previous: Decimal,
    price: Decimal,
    cause: Cause<'_>,
) -> Option<Escalation> {
    let fraction = rules.contract.escalation.price_jump_fraction;
    if (price - previous).abs() <= fraction * previous {
        return None;
    }
    Some(build(
        rules,
        Draft {
            escalation_id: format!("price_jump/{channel}/{}/{}", cause.sku, cause.event_id),
            severity: Severity::Warning,
            party: channel.to_string(),
            summary: format!("{channel} moved the price of {} from {previous} to {price}", cause.sku),
            cause: vec![cause.event_id.to_string()],
            rule: EscalationRule::PriceJump,
            at_ms: cause.at_ms,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Contract;

    fn rules(patch: impl FnOnce(&mut Contract)) -> Rules {
        let mut contract: Contract =
            toml::from_str(include_str!("../tests/scenarios/contract.toml")).unwrap();
        patch(&mut contract);
        Rules::new(contract)
    }

    const HOUR: i64 = HOUR_MS;

    #[test]
    fn no_spike_before_the_minimum_history_then_the_baseline_is_the_hours_of_selling() {
        // factor 4, floor 20, 1 day of history: 30 units in the hour against 30 in 28 days
        let rules = rules(|_| {});
        let at = |selling_ms| Demand { units_last_hour: 30, units_28d: 30, selling_ms };
        assert!(!spike_holds(&rules, "shop", at(0)), "a first placement has no baseline");
        assert!(!spike_holds(&rules, "shop", at(24 * HOUR - 1)), "a millisecond short of one day");
        // 24 h of selling: baseline 30 / 24 = 1.25, 4 x 1.25 = 5 < 30
        assert!(spike_holds(&rules, "shop", at(24 * HOUR)));
        // 96 units in 28 days over 24 h: 4 x 4 = 16 < 30, still a spike; 180: 4 x 7.5 = 30, not more
        assert!(spike_holds(&rules, "shop", Demand { units_28d: 96, ..at(24 * HOUR) }));
        assert!(!spike_holds(&rules, "shop", Demand { units_28d: 180, ..at(24 * HOUR) }));
        // beyond 28 days the hours are capped at 672: 4 x 5040 / 672 = 30, not more
        assert!(!spike_holds(&rules, "shop", Demand { units_28d: 5_040, ..at(1_000 * HOUR) }));
        assert!(spike_holds(&rules, "shop", Demand { units_28d: 5_039, ..at(1_000 * HOUR) }));
    }

    #[test]
    fn a_channel_floor_replaces_the_global_one() {
        let demand = Demand { units_last_hour: 30, units_28d: 30, selling_ms: 48 * HOUR };
        let whole_floor = |contract: &mut Contract| {
            contract.channels.iter_mut().find(|c| c.id == "whole").unwrap().spike_min_units = Some(100);
        };
        let rules = rules(whole_floor);
        assert!(spike_holds(&rules, "shop", demand), "shop keeps the global floor of 20");
        assert!(!spike_holds(&rules, "whole", demand), "30 units is not above whole's own 100");
    }

    #[test]
    fn history_days_is_a_decimal() {
        let rules = rules(|contract| contract.escalation.spike_min_history_days = Decimal::new(5, 1));
        let demand = Demand { units_last_hour: 30, units_28d: 30, selling_ms: 12 * HOUR };
        assert!(spike_holds(&rules, "shop", demand), "half a day of history is enough");
    }
}

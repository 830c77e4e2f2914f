//! Escalation to on-call (CONTRACT.md section 6): every RAISED CRITICAL alert, and the
//! unusual-event rules ORDER_SPIKE, STOCK_DROP and PRICE_JUMP.

use omnifold_proto::{Alert, AlertState, Escalation, EscalationRule, Severity};
use rust_decimal::Decimal;

use crate::alerts::Cause;
use crate::contract::Rules;
use crate::stock::{HOUR_MS, WINDOW_MS};

/// The channel key of escalations that concern more than one channel.
pub const GLOBAL: &str = "global";

/// Who an escalation goes to: one channel, or `global` with the first channel's people.
fn target(rules: &Rules, channels: &[String]) -> (String, String, String) {
    let first = channels.first().and_then(|c| rules.channel(c));
    let (owner, on_call) = first.map(|c| (c.owner.clone(), c.on_call.clone())).unwrap_or_default();
    let channel = if channels.len() == 1 { channels[0].clone() } else { GLOBAL.to_string() };
    (channel, owner, on_call)
}

struct Draft {
    escalation_id: String,
    severity: Severity,
    channels: Vec<String>,
    summary: String,
    cause: Vec<String>,
    rule: EscalationRule,
    at_ms: i64,
}

fn build(rules: &Rules, draft: Draft) -> Escalation {
    let (channel, owner, on_call) = target(rules, &draft.channels);
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

/// CRITICAL_ALERT: one escalation for a RAISED CRITICAL alert.
pub fn for_alert(rules: &Rules, alert: &Alert) -> Option<Escalation> {
    if alert.state != AlertState::Raised as i32 || alert.severity != Severity::Critical as i32 {
        return None;
    }
    Some(build(
        rules,
        Draft {
            escalation_id: format!("critical_alert/{}", alert.alert_id),
            severity: Severity::Critical,
            channels: alert.channels.clone(),
            summary: alert.summary.clone(),
            cause: vec![alert.alert_id.clone()],
            rule: EscalationRule::CriticalAlert,
            at_ms: alert.occurred_at_ms,
        },
    ))
}

/// STOCK_DROP: a movement that removes more than stock_drop_fraction of a positive on-hand.
pub fn stock_drop(
    rules: &Rules,
    location: &str,
    channels: Vec<String>,
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
            channels,
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

/// Whether ORDER_SPIKE holds for a channel: units in the last hour exceed both
/// spike_factor x (units in 28 days / 672) and spike_min_units.
pub fn spike_holds(rules: &Rules, units_last_hour: i64, units_28d: i64) -> bool {
    let rules = &rules.contract.escalation;
    let hourly_average = Decimal::from(units_28d) / Decimal::from(WINDOW_MS / HOUR_MS);
    let units = Decimal::from(units_last_hour);
    units > rules.spike_factor * hourly_average && units_last_hour > rules.spike_min_units
}

/// ORDER_SPIKE: one escalation when the condition becomes true for (channel, SKU).
pub fn order_spike(
    rules: &Rules,
    channel: &str,
    units_last_hour: i64,
    units_28d: i64,
    cause: Cause<'_>,
) -> Escalation {
    build(
        rules,
        Draft {
            escalation_id: format!("order_spike/{channel}/{}/{}", cause.sku, cause.event_id),
            severity: Severity::Warning,
            channels: vec![channel.to_string()],
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
            channels: vec![channel.to_string()],
            summary: format!("{channel} moved the price of {} from {previous} to {price}", cause.sku),
            cause: vec![cause.event_id.to_string()],
            rule: EscalationRule::PriceJump,
            at_ms: cause.at_ms,
        },
    ))
}

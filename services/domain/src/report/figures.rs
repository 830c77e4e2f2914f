//! The weekly contribution of CONTRACT.md section 7: from a week's merged partials to every
//! channel's figures, shares, decision and next action.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::partial::{Partial, round};
use super::week::{Calendar, Week};
use crate::contract::{Channel, Rules};

/// What the report recommends for a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Keep,
    Fix,
    RetireReview,
}

impl Decision {
    /// The contract's name, e.g. `RETIRE_REVIEW`.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Keep => "KEEP",
            Decision::Fix => "FIX",
            Decision::RetireReview => "RETIRE_REVIEW",
        }
    }
}

/// One channel's figures for one week, in reporting currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelWeek {
    pub week: Week,
    pub channel: String,
    pub channel_name: String,
    pub owner: String,
    pub currency: String,
    pub week_start_ms: i64,
    pub week_end_ms: i64,
    pub gross_revenue: Decimal,
    pub discounts: Decimal,
    pub net_revenue: Decimal,
    pub cogs: Decimal,
    pub restocked_cogs: Decimal,
    pub channel_fees: Decimal,
    pub fulfillment_costs: Decimal,
    pub refunds: Decimal,
    pub contribution_before_operating: Decimal,
    pub operating_cost: Decimal,
    pub contribution: Decimal,
    pub contribution_margin: Option<Decimal>,
    pub revenue_share: Option<Decimal>,
    pub operating_cost_share: Option<Decimal>,
    pub orders_shipped: i64,
    pub units_shipped: i64,
    /// RAISED alerts naming the channel, by kind.
    pub alerts_raised: BTreeMap<String, i64>,
    /// RAISED CRITICAL alerts accountable to the channel: the alerts that make it FIX.
    pub critical_alerts: i64,
    /// Consecutive weeks with a negative contribution, ending with this one (0 if this
    /// week's is not negative).
    pub negative_weeks: u32,
    pub decision: Decision,
    pub next_action: String,
}

/// The figures of every contract channel for `week`, in (priority, id) order.
///
/// `merged` holds each channel's partials summed over every source (absent = nothing
/// happened); `negative_before` is each channel's `negative_weeks` in the week before
/// (absent = 0, e.g. before the first reported week).
pub fn compute_week(
    rules: &Rules,
    week: Week,
    merged: &BTreeMap<String, Partial>,
    negative_before: &BTreeMap<String, u32>,
) -> Vec<ChannelWeek> {
    let calendar = Calendar::of(&rules.contract.reporting);
    let empty = Partial::default();
    let mut weeks: Vec<ChannelWeek> = rules
        .channels_in_order()
        .map(|channel| {
            let partial = merged.get(&channel.id).unwrap_or(&empty);
            let mut figures = base_figures(rules, &calendar, week, channel, partial);
            let before = negative_before.get(&channel.id).copied().unwrap_or(0);
            figures.negative_weeks = if figures.contribution < Decimal::ZERO { before + 1 } else { 0 };
            figures
        })
        .collect();
    let total_net: Decimal = weeks.iter().map(|w| w.net_revenue).sum();
    let total_operating: Decimal = weeks.iter().map(|w| w.operating_cost).sum();
    for figures in &mut weeks {
        figures.revenue_share = ratio(figures.net_revenue, total_net);
        figures.operating_cost_share = ratio(figures.operating_cost, total_operating);
        let channel = rules.channel(&figures.channel).expect("a contract channel");
        let partial = merged.get(&channel.id).unwrap_or(&empty);
        let (decision, next_action) = decide(rules, channel, figures, partial, (total_net, total_operating));
        figures.decision = decision;
        figures.next_action = next_action;
    }
    weeks
}

/// Every figure that depends on the channel alone.
fn base_figures(
    rules: &Rules,
    calendar: &Calendar,
    week: Week,
    channel: &Channel,
    partial: &Partial,
) -> ChannelWeek {
    let weekly = &channel.weekly_operating_cost;
    let weekly = rules
        .contract
        .to_reporting(&crate::money::Amount {
            value: weekly.amount,
            currency: weekly.currency.as_str().into(),
        })
        .map(round)
        .expect("the contract checks that every channel's operating cost has a rate");
    let net_revenue = partial.gross_revenue - partial.discounts;
    let contribution_before_operating =
        net_revenue - partial.cogs - partial.channel_fees - partial.fulfillment_costs - partial.refunds
            + partial.restocked_cogs;
    let operating_cost = weekly + partial.recorded_operating_cost;
    let contribution = contribution_before_operating - operating_cost;
    ChannelWeek {
        week,
        channel: channel.id.clone(),
        channel_name: channel.name.clone(),
        owner: channel.owner.clone(),
        currency: rules.contract.reporting_currency.clone(),
        week_start_ms: calendar.start_ms(week),
        week_end_ms: calendar.end_ms(week),
        gross_revenue: partial.gross_revenue,
        discounts: partial.discounts,
        net_revenue,
        cogs: partial.cogs,
        restocked_cogs: partial.restocked_cogs,
        channel_fees: partial.channel_fees,
        fulfillment_costs: partial.fulfillment_costs,
        refunds: partial.refunds,
        contribution_before_operating,
        operating_cost,
        contribution,
        contribution_margin: ratio(contribution, net_revenue),
        revenue_share: None,
        operating_cost_share: None,
        orders_shipped: partial.orders_shipped,
        units_shipped: partial.units_shipped,
        alerts_raised: partial.alerts.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.clone(), *n)).collect(),
        critical_alerts: partial.accountable_critical.values().sum(),
        negative_weeks: 0,
        decision: Decision::Keep,
        next_action: String::new(),
    }
}

/// part / whole rounded to 12 places; absent when whole is 0.
fn ratio(part: Decimal, whole: Decimal) -> Option<Decimal> {
    if whole.is_zero() { None } else { Some(round(part / whole)) }
}

/// Whether part / whole < bound, exactly (no rounded quotient decides).
fn share_below(part: Decimal, whole: Decimal, bound: Decimal) -> bool {
    if whole > Decimal::ZERO { part < bound * whole } else { whole < Decimal::ZERO && part > bound * whole }
}

/// Whether part / whole > bound, exactly.
fn share_above(part: Decimal, whole: Decimal, bound: Decimal) -> bool {
    if whole > Decimal::ZERO { part > bound * whole } else { whole < Decimal::ZERO && part < bound * whole }
}

fn decide(
    rules: &Rules,
    channel: &Channel,
    figures: &ChannelWeek,
    partial: &Partial,
    (total_net, total_operating): (Decimal, Decimal),
) -> (Decision, String) {
    let reporting = &rules.contract.reporting;
    let (owner, id, week) = (&channel.owner, &channel.id, figures.week);
    let small_and_costly = share_below(figures.net_revenue, total_net, reporting.retire_revenue_share)
        && share_above(figures.operating_cost, total_operating, reporting.retire_cost_share);
    if small_and_costly {
        let revenue = percent(figures.revenue_share.unwrap_or_default());
        let cost = percent(figures.operating_cost_share.unwrap_or_default());
        let action = format!(
            "{owner} to review whether to retire {id}: it brought {revenue} of net revenue for {cost} of operating cost in {week}."
        );
        return (Decision::RetireReview, action);
    }
    let streak = reporting.retire_negative_weeks;
    if streak > 0 && figures.negative_weeks >= streak {
        let n = figures.negative_weeks;
        let action = format!(
            "{owner} to review whether to retire {id}: its contribution has been negative for {n} consecutive weeks up to {week}."
        );
        return (Decision::RetireReview, action);
    }
    let currency = &figures.currency;
    let contribution = money(figures.contribution);
    match (figures.contribution < Decimal::ZERO, figures.critical_alerts > 0) {
        (true, true) => {
            let (remedy, alerts) = (remedy(id, partial), alert_cause(partial));
            (
                Decision::Fix,
                format!(
                    "{owner} to {remedy} and lift {id}'s contribution of {contribution} {currency}: {alerts} in {week}."
                ),
            )
        }
        (true, false) => (Decision::Fix, format!("{owner} to fix {id}: {}.", loss_cause(figures))),
        (false, true) => {
            let (remedy, alerts) = (remedy(id, partial), alert_cause(partial));
            (Decision::Fix, format!("{owner} to {remedy}: {alerts} in {week}."))
        }
        (false, false) => (
            Decision::Keep,
            format!("{owner} to keep {id} as it is: contribution {contribution} {currency} in {week}."),
        ),
    }
}

/// How many SKUs a next action names before `…`.
const TOP_SKUS: usize = 3;

/// What the owner should do about the channel's accountable CRITICAL alerts: one remedy when
/// every kind calls for the same, else a general one.
fn remedy(id: &str, partial: &Partial) -> String {
    let remedies: BTreeSet<Option<String>> =
        partial.accountable_critical.keys().map(|kind| kind_remedy(kind, id)).collect();
    match remedies.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(remedy)] => remedy.clone(),
        _ => format!("resolve the critical alerts {id} caused"),
    }
}

fn kind_remedy(kind: &str, id: &str) -> Option<String> {
    let remedy = match kind {
        // accountable only when a placement of the channel's went past its published number
        "OVERSELL" | "NEGATIVE_STOCK" | "LOW_COVER" | "ALLOCATION_BREACH" => {
            format!("stop {id} selling past its allocation")
        }
        "PRICE_BELOW_FLOOR" => format!("raise {id}'s prices back above its margin floor"),
        "MAP_VIOLATION" => format!("bring {id}'s prices back up to MAP"),
        "CHANNEL_PRICE_SPREAD" | "PROMOTION_COLLISION" => format!("realign {id}'s prices and promotions"),
        "COMPETITOR_UNDERCUT" => format!("review {id}'s prices against its competitors"),
        _ => return None,
    };
    Some(remedy)
}

/// The alerts behind a FIX, e.g. `3 oversell and 1 MAP violation alerts on 2 SKUs (SKU-B,
/// SKU-A)`: counts by kind, then the SKUs with the most alerts, ties by SKU id.
fn alert_cause(partial: &Partial) -> String {
    let counts: Vec<String> =
        partial.accountable_critical.iter().map(|(kind, n)| format!("{n} {}", kind_words(kind))).collect();
    let total: i64 = partial.accountable_critical.values().sum();
    let noun = if total == 1 { "alert" } else { "alerts" };
    let skus = &partial.accountable_critical_skus;
    if skus.is_empty() {
        return format!("{} {noun}", join_words(&counts));
    }
    let mut ranked: Vec<(&String, &i64)> = skus.iter().collect();
    ranked.sort_by(|(a, m), (b, n)| n.cmp(m).then_with(|| a.cmp(b)));
    let mut named: Vec<&str> = ranked.iter().take(TOP_SKUS).map(|(sku, _)| sku.as_str()).collect();
    if ranked.len() > TOP_SKUS {
        named.push("…");
    }
    let sku_noun = if skus.len() == 1 { "SKU" } else { "SKUs" };
    format!("{} {noun} on {} {sku_noun} ({})", join_words(&counts), skus.len(), named.join(", "))
}

/// `MAP_VIOLATION` -> `MAP violation`, `NEGATIVE_STOCK` -> `negative stock`.
fn kind_words(kind: &str) -> String {
    let words: Vec<String> = kind
        .split('_')
        .map(|word| if word == "MAP" { word.to_string() } else { word.to_ascii_lowercase() })
        .collect();
    words.join(" ")
}

/// `a`, `a and b`, `a, b and c`.
fn join_words(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [only] => only.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The figure behind a loss: the contribution, the net revenue it came from and the largest
/// cost (ties go to the first listed).
fn loss_cause(figures: &ChannelWeek) -> String {
    let costs = [
        ("operating cost", figures.operating_cost),
        ("cost of goods", figures.cogs - figures.restocked_cogs),
        ("channel fees", figures.channel_fees),
        ("fulfillment costs", figures.fulfillment_costs),
        ("refunds", figures.refunds),
    ];
    let (name, amount) = costs.iter().fold(costs[0], |top, cost| if cost.1 > top.1 { *cost } else { top });
    let currency = &figures.currency;
    format!(
        "contribution {} {currency} in {} on net revenue {} {currency}, the largest cost being {name} at {} {currency}",
        money(figures.contribution),
        figures.week,
        money(figures.net_revenue),
        money(amount)
    )
}

/// A fraction as a percentage with one decimal, e.g. `4.2%`.
pub fn percent(fraction: Decimal) -> String {
    let value =
        (fraction * Decimal::ONE_HUNDRED).round_dp_with_strategy(1, RoundingStrategy::MidpointAwayFromZero);
    format!("{value:.1}%")
}

/// An amount rounded to the cent for sentences and tables, e.g. `-1234.50`. The figures
/// themselves are never rounded.
pub fn money(value: Decimal) -> String {
    let value = value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    let value = if value.is_zero() { Decimal::ZERO } else { value };
    format!("{value:.2}")
}

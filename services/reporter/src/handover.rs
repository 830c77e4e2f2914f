//! `omnifold-reporter handover CHANNEL`: everything a new owner needs to take a channel over
//! without rebuilding context: its rules from the contract, its last eight weeks of figures
//! and decisions, its open conflicts and recent pages, the SKUs that make its money and its
//! trouble, and where its events come from.
//!
//! Built from the contract, the snapshots topic (weeks) and the operations state
//! (`operations.rs`: conflicts, pages, the ledger's SKU contribution, the event log's
//! sources); rendered by `handover_page.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use omnifold_domain::Rules;
use omnifold_domain::contract::Channel;
use omnifold_domain::report::Week;
use omnifold_proto::ContributionSnapshot;
use rust_decimal::Decimal;

use crate::operations::{
    HISTORY_WINDOW_MS, Keyed, OperationsError, PAGE_WINDOW_MS, Page, SourceCount, channel_money,
    channel_sources, now_ms, open_conflicts, pages_since, raised_since,
};
use crate::operations_view::{ConflictRow, PageGroup, conflict_rows, page_groups, severity_rank};
use crate::view::{Row, TREND_WEEKS, row};

/// How many SKUs each ranking shows.
pub const TOP_SKUS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("{0} is not a channel of the contract; its channels are {1}")]
    UnknownChannel(String, String),
    #[error(transparent)]
    State(#[from] OperationsError),
}

/// A SKU's contribution on the channel over the ledger weeks kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuFigure {
    pub sku: String,
    pub contribution: Decimal,
    pub net_revenue: Decimal,
    pub units: i64,
}

/// A SKU's alerts on the channel (naming it or accountable to it) over eight weeks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuConflicts {
    pub sku: String,
    pub alerts: usize,
    /// Of those, the ones the channel is accountable for, and the CRITICAL ones.
    pub accountable: usize,
    pub critical: usize,
    pub kinds: Vec<String>,
}

/// One published week of the channel.
#[derive(Debug, Clone, PartialEq)]
pub struct WeekFigures {
    pub week: String,
    pub row: Row,
}

/// One rule of the contract, as a label and its plain meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLine {
    pub label: String,
    pub value: String,
}

/// The whole handover of one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoverView {
    pub channel: String,
    pub name: String,
    pub owner: String,
    pub on_call: String,
    pub reporting_currency: String,
    pub rules: Vec<RuleLine>,
    /// The latest event time the operations state has seen.
    pub now_ms: i64,
    /// Up to eight published weeks, newest first.
    pub weeks: Vec<WeekFigures>,
    pub conflicts: Vec<ConflictRow>,
    pub page_groups: Vec<PageGroup>,
    /// Pages to the channel in the last seven days, newest first.
    pub pages: Vec<Page>,
    /// The ledger weeks the SKU figures cover, oldest first.
    pub ledger_weeks: Vec<String>,
    pub top_contribution: Vec<SkuFigure>,
    /// How many SKUs the channel shipped or refunded in those weeks.
    pub skus_with_money: usize,
    pub top_conflicts: Vec<SkuConflicts>,
    /// Its events by connector and adapter, most first.
    pub sources: Vec<SourceCount>,
    /// Events of no one channel: stock at shared locations, unit costs for every channel.
    pub shared_sources: Vec<SourceCount>,
}

/// Refuses a channel the contract does not have, naming those it has.
pub fn check_channel<'a>(rules: &'a Rules, channel: &str) -> Result<&'a Channel, HandoverError> {
    rules.channel(channel).ok_or_else(|| {
        let known: Vec<String> = rules.channels_in_order().map(|c| c.id.clone()).collect();
        HandoverError::UnknownChannel(channel.to_string(), known.join(", "))
    })
}

impl HandoverView {
    pub fn build(
        rules: &Rules,
        channel: &str,
        state: &impl Keyed,
        snapshots: &BTreeMap<String, ContributionSnapshot>,
    ) -> Result<Self, HandoverError> {
        let config = check_channel(rules, channel)?;
        let now = now_ms(state)?;
        let conflicts = conflict_rows(rules, open_conflicts(state)?, now)
            .into_iter()
            .filter(|r| r.accountable == channel || r.channels.iter().any(|c| c == channel))
            .collect();
        let mut pages: Vec<Page> =
            pages_since(state, now - PAGE_WINDOW_MS)?.into_iter().filter(|p| p.target == channel).collect();
        let page_groups = page_groups(rules, &pages);
        pages.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then_with(|| a.escalation_id.cmp(&b.escalation_id)));
        let (money, weeks) = channel_money(state, channel)?;
        let (top_contribution, skus_with_money) = top_contribution(&money);
        let mut sources = channel_sources(state, channel)?;
        sources.sort_by(|a, b| {
            b.events.cmp(&a.events).then_with(|| {
                (a.connector.as_str(), a.adapter.as_str()).cmp(&(b.connector.as_str(), b.adapter.as_str()))
            })
        });
        let shared_sources = channel_sources(state, "")?;
        Ok(HandoverView {
            channel: config.id.clone(),
            name: config.name.clone(),
            owner: config.owner.clone(),
            on_call: config.on_call.clone(),
            reporting_currency: rules.contract.reporting_currency.clone(),
            rules: rule_lines(rules, config),
            now_ms: now,
            weeks: recent_weeks(snapshots, channel),
            conflicts,
            page_groups,
            pages,
            ledger_weeks: weeks.into_iter().map(|w| Week(w).label()).collect(),
            top_contribution,
            skus_with_money,
            top_conflicts: top_conflicts(&raised_since(state, now - HISTORY_WINDOW_MS)?, channel),
            sources,
            shared_sources,
        })
    }
}

/// The channel's last eight published weeks, newest first.
fn recent_weeks(snapshots: &BTreeMap<String, ContributionSnapshot>, channel: &str) -> Vec<WeekFigures> {
    let mut weeks: Vec<(Week, WeekFigures)> = snapshots
        .values()
        .filter(|s| s.channel == channel)
        .filter_map(|s| {
            Some((Week::from_str(&s.week).ok()?, WeekFigures { week: s.week.clone(), row: row(s) }))
        })
        .collect();
    weeks.sort_by_key(|(week, _)| std::cmp::Reverse(*week));
    weeks.into_iter().take(TREND_WEEKS as usize).map(|(_, w)| w).collect()
}

fn top_contribution(money: &[crate::operations::SkuMoney]) -> (Vec<SkuFigure>, usize) {
    let mut by_sku: BTreeMap<&str, SkuFigure> = BTreeMap::new();
    for m in money {
        let figure = by_sku.entry(&m.sku).or_insert_with(|| SkuFigure {
            sku: m.sku.clone(),
            contribution: Decimal::ZERO,
            net_revenue: Decimal::ZERO,
            units: 0,
        });
        figure.contribution += m.contribution;
        figure.net_revenue += m.net_revenue;
        figure.units += m.units;
    }
    let count = by_sku.len();
    let mut ranked: Vec<SkuFigure> = by_sku.into_values().collect();
    ranked.sort_by(|a, b| b.contribution.cmp(&a.contribution).then_with(|| a.sku.cmp(&b.sku)));
    ranked.truncate(TOP_SKUS);
    (ranked, count)
}

fn top_conflicts(raised: &[crate::operations::RaisedAlert], channel: &str) -> Vec<SkuConflicts> {
    let mut by_sku: BTreeMap<&str, (SkuConflicts, BTreeSet<String>)> = BTreeMap::new();
    for alert in raised {
        let accountable = alert.accountable == channel;
        if !accountable && !alert.channels.iter().any(|c| c == channel) {
            continue;
        }
        let (entry, kinds) = by_sku.entry(&alert.sku).or_insert_with(|| {
            let empty = SkuConflicts {
                sku: alert.sku.clone(),
                alerts: 0,
                accountable: 0,
                critical: 0,
                kinds: Vec::new(),
            };
            (empty, BTreeSet::new())
        });
        entry.alerts += 1;
        entry.accountable += usize::from(accountable);
        entry.critical += usize::from(severity_rank(&alert.severity) == severity_rank("CRITICAL"));
        kinds.insert(alert.kind.clone());
    }
    let mut ranked: Vec<SkuConflicts> = by_sku
        .into_values()
        .map(|(mut entry, kinds)| {
            entry.kinds = kinds.into_iter().collect();
            entry
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.alerts.cmp(&a.alerts).then(b.accountable.cmp(&a.accountable)).then_with(|| a.sku.cmp(&b.sku))
    });
    ranked.truncate(TOP_SKUS);
    ranked
}

/// The channel's rules in plain words, each with the contract's own figure.
fn rule_lines(rules: &Rules, channel: &Channel) -> Vec<RuleLine> {
    let contract = &rules.contract;
    let rank = rules.channels_in_order().position(|c| c.id == channel.id).map_or(0, |i| i + 1);
    let count = contract.channels.len();
    let dedicated: Vec<&str> = contract
        .locations
        .iter()
        .filter(|l| l.dedicated_to.as_deref() == Some(channel.id.as_str()))
        .map(|l| l.id.as_str())
        .collect();
    let shared: Vec<&str> =
        contract.locations.iter().filter(|l| l.dedicated_to.is_none()).map(|l| l.id.as_str()).collect();
    let mut pool = if channel.sells_from_shared_pool {
        format!("sells from the shared pool ({})", list_or_none(&shared))
    } else {
        "does not sell from the shared pool".to_string()
    };
    if !dedicated.is_empty() {
        pool.push_str(&format!("; its own pool: {}", dedicated.join(", ")));
    }
    let map = if channel.map_applies {
        let prices: Vec<String> = contract
            .pricing
            .map
            .iter()
            .map(|(sku, m)| format!("{sku} {} {}", m.amount, m.currency))
            .collect();
        format!("applies: never below {}", list_or_none(&prices))
    } else {
        "does not apply".to_string()
    };
    let escalation = &contract.escalation;
    let (spike_units, whose) = match channel.spike_min_units {
        Some(units) => (units, "its own floor"),
        None => (escalation.spike_min_units, "the global floor"),
    };
    let cost = &channel.weekly_operating_cost;
    let line = |label: &str, value: String| RuleLine { label: label.to_string(), value };
    vec![
        line("owner", channel.owner.clone()),
        line("on-call", channel.on_call.clone()),
        line("selling currency", channel.currency.clone()),
        line(
            "priority",
            format!("{} ({rank} of {count} under scarcity; lower is served first)", channel.priority),
        ),
        line(
            "share",
            format!(
                "at most {} of the shared sellable stock (max_share {})",
                pct(channel.max_share),
                channel.max_share
            ),
        ),
        line("pool", pool),
        line("fees", format!("{} of the price (fee_rate {})", pct(channel.fee_rate), channel.fee_rate)),
        line(
            "margin floor",
            format!(
                "{} (margin_floor {}): the effective price x (1 - {} - {}) must cover the unit cost",
                pct(channel.margin_floor),
                channel.margin_floor,
                channel.fee_rate,
                channel.margin_floor
            ),
        ),
        line("MAP", map),
        line("operating cost", format!("{} {} a week", cost.amount, cost.currency)),
        line(
            "spike floor",
            format!(
                "ORDER_SPIKE pages above {} units in an hour ({whose}) and {}x the hourly baseline",
                spike_units, escalation.spike_factor
            ),
        ),
        line(
            "escalations",
            format!(
                "pages for conflicts it is accountable for go to {}; shared stock and the rest to operations ({}, {})",
                channel.on_call, contract.operations.owner, contract.operations.on_call
            ),
        ),
    ]
}

fn pct(fraction: Decimal) -> String {
    omnifold_domain::report::figures::percent(fraction)
}

fn list_or_none(items: &[impl AsRef<str>]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use omnifold_proto::{Decision, LedgerEntry, LedgerKind};

    use super::*;
    use crate::operations::Input;
    use crate::operations::tests::{T0, folded, rules};

    pub fn snapshots() -> BTreeMap<String, ContributionSnapshot> {
        (0..10)
            .map(|back: i64| {
                let week = Week(Week::from_str("2026-W46").unwrap().0 - back).label();
                let snapshot = ContributionSnapshot {
                    week: week.clone(),
                    channel: "amazon".into(),
                    revision: 1,
                    currency: "USD".into(),
                    net_revenue: "1000".into(),
                    contribution: format!("{}", 100 - back * 30),
                    decision: if back > 3 { Decision::Fix as i32 } else { Decision::Keep as i32 },
                    next_action: format!("Luis Ortega to act on {week}."),
                    ..ContributionSnapshot::default()
                };
                (format!("{week}/amazon"), snapshot)
            })
            .collect()
    }

    /// A shipment of the event at `offset`: the operations fold sums each position once.
    fn shipment(offset: i64, sku: &str, gross: &str) -> Input {
        Input::Ledger(LedgerEntry {
            event_offset: offset,
            kind: LedgerKind::Shipment as i32,
            channel: "amazon".into(),
            sku: sku.into(),
            occurred_at_ms: T0,
            units: 1,
            gross_revenue: gross.into(),
            ..LedgerEntry::default()
        })
    }

    pub fn view() -> HandoverView {
        let mut inputs =
            vec![shipment(0, "SKU-1", "30"), shipment(1, "SKU-2", "50"), shipment(2, "SKU-1", "25.5")];
        for input in crate::operations_view::tests::scenario_inputs() {
            inputs.push(input);
        }
        let state = folded(&inputs);
        HandoverView::build(&rules(), "amazon", &state, &snapshots()).unwrap()
    }

    #[test]
    fn the_rules_come_from_the_contract() {
        let view = view();
        let rules: Vec<String> = view.rules.iter().map(|r| format!("{}: {}", r.label, r.value)).collect();
        assert_eq!(
            rules,
            [
                "owner: Luis Ortega",
                "on-call: pd-marketplaces",
                "selling currency: USD",
                "priority: 2 (2 of 4 under scarcity; lower is served first)",
                "share: at most 60.0% of the shared sellable stock (max_share 0.6)",
                "pool: sells from the shared pool (wh-nj, 3pl-rotterdam); its own pool: fba-us",
                "fees: 15.0% of the price (fee_rate 0.15)",
                "margin floor: 10.0% (margin_floor 0.10): the effective price x (1 - 0.15 - 0.10) must cover the unit cost",
                "MAP: applies: never below SKU-0001 49.00 USD, SKU-0002 79.00 USD, SKU-0003 24.00 USD",
                "operating cost: 2500.00 USD a week",
                "spike floor: ORDER_SPIKE pages above 40 units in an hour (the global floor) and 6x the hourly baseline",
                "escalations: pages for conflicts it is accountable for go to pd-marketplaces; shared stock and the rest to operations (Priya Raman, pd-operations)",
            ]
        );
    }

    #[test]
    fn eight_weeks_newest_first() {
        let weeks: Vec<(String, Decimal)> =
            view().weeks.iter().map(|w| (w.row.next_action.clone(), w.row.contribution)).collect();
        assert_eq!(weeks.len(), 8);
        assert_eq!(weeks[0], ("Luis Ortega to act on 2026-W46.".to_string(), Decimal::from(100)));
        assert_eq!(weeks[7], ("Luis Ortega to act on 2026-W39.".to_string(), Decimal::from(-110)));
    }

    #[test]
    fn conflicts_pages_and_skus_of_the_channel() {
        let view = view();
        let open: Vec<&str> = view.conflicts.iter().map(|c| c.alert_id.as_str()).collect();
        assert_eq!(
            open,
            [
                "price_below_floor/SKU-1/amazon/p1",
                "oversell/SKU-4/pool=shared/o2",
                "map_violation/SKU-1/amazon/p1"
            ],
            "accountable to amazon, or naming it (the shared-pool oversell)"
        );
        let pages: Vec<&str> = view.pages.iter().map(|p| p.escalation_id.as_str()).collect();
        assert_eq!(pages, ["critical_alert/map_violation/SKU-1/amazon/p1"]);
        assert_eq!(view.page_groups.len(), 1);
        let money: Vec<(&str, Decimal, i64)> =
            view.top_contribution.iter().map(|s| (s.sku.as_str(), s.contribution, s.units)).collect();
        assert_eq!(money, [("SKU-1", Decimal::new(555, 1), 2), ("SKU-2", Decimal::from(50), 1)]);
        assert_eq!(view.ledger_weeks, ["2026-W46"]);
        let conflicts: Vec<(&str, usize, usize, usize)> = view
            .top_conflicts
            .iter()
            .map(|s| (s.sku.as_str(), s.alerts, s.accountable, s.critical))
            .collect();
        assert_eq!(conflicts, [("SKU-1", 2, 2, 2), ("SKU-2", 1, 1, 1), ("SKU-4", 1, 0, 1)]);
        assert_eq!(view.top_conflicts[0].kinds, ["MAP_VIOLATION", "PRICE_BELOW_FLOOR"]);
    }

    #[test]
    fn an_unknown_channel_is_named() {
        let error = HandoverView::build(&rules(), "ebay", &folded(&[]), &BTreeMap::new()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "ebay is not a channel of the contract; its channels are shopify, amazon, eu-market, wholesale"
        );
    }
}

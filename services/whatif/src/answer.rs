//! The answer: every scenario side by side with the baseline, in the form of
//! `schemas/what-if.schema.json`. Amounts are exact decimal strings in the reporting
//! currency, as in the snapshots; every `delta` is the scenario minus the baseline.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use omnifold_domain::report::{ChannelWeek, Week, decimal_text};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::history::{History, SkuIndex};
use crate::replay::{Channels, Decision, Run};
use crate::scenario::Scenario;

/// Said in every answer, because it is what a replay can and cannot know.
pub const DEMAND_HELD_FIXED: &str = "Demand is held fixed: every scenario replays the same orders at the same \
times. A changed rule changes what each channel is offered, what conflicts and pages follow and what the \
orders are worth, not how many orders come in; orders lost on a retired channel are not moved to another \
unless --shift moves a stated fraction of them.";

/// How many SKUs the answer names as most affected.
pub const MOST_AFFECTED: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub history: HistoryInfo,
    pub currency: String,
    pub demand_held_fixed: String,
    pub scenarios: Vec<ScenarioAnswer>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryInfo {
    pub source: String,
    pub events: usize,
    pub partitions: i32,
    pub skus: usize,
    pub unreadable: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_unreadable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ms: Option<i64>,
}

/// A count and its change against the baseline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub value: i64,
    pub delta: i64,
}

impl Count {
    fn of(value: i64, baseline: i64) -> Count {
        Count { value, delta: value - baseline }
    }
}

/// An amount and its change against the baseline, as exact decimal strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Amount {
    pub value: String,
    pub delta: String,
}

impl Amount {
    pub fn of(value: Decimal, baseline: Decimal) -> Amount {
        Amount { value: decimal_text(value), delta: decimal_text(value - baseline) }
    }

    pub fn value(&self) -> Decimal {
        self.value.parse().unwrap_or_default()
    }

    pub fn delta(&self) -> Decimal {
        self.delta.parse().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioAnswer {
    pub name: String,
    pub changes: Vec<String>,
    pub assumptions: Vec<String>,
    pub events: EventCounts,
    pub availability: Availability,
    pub stock_conflicts: StockConflicts,
    pub pricing_conflicts: BTreeMap<String, Count>,
    pub alerts_by_kind: BTreeMap<String, Count>,
    pub pages_by_rule: BTreeMap<String, Count>,
    pub weeks: Vec<WeekRow>,
    pub channels: Vec<ChannelTotal>,
    pub total_contribution: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift: Option<ShiftAnswer>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventCounts {
    pub applied: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub dropped: usize,
    pub synthetic: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Availability {
    /// Availability records published.
    pub decisions: Count,
    /// Decisions (event, SKU, channel, number) the scenario and the baseline do not share.
    pub decisions_changed: i64,
    /// Final sellable units gained by the channels that gained (what the others lost, or
    /// what freed stock added).
    pub units_shifted: i64,
    pub scarcity_hours: HoursDelta,
    pub channels: Vec<ChannelUnits>,
    pub most_affected_skus: Vec<AffectedSku>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HoursDelta {
    pub value: f64,
    pub delta: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChannelUnits {
    pub channel: String,
    /// Sum over SKUs of the last published number.
    pub final_available: Count,
    pub units_placed: Count,
    pub units_shipped: Count,
}

#[derive(Debug, Clone, Serialize)]
pub struct AffectedSku {
    pub sku: String,
    pub decisions_changed: i64,
    pub final_available_delta: i64,
    pub scarcity_hours_delta: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StockConflicts {
    pub oversell: Count,
    pub negative_stock: Count,
    pub allocation_breach: Count,
    /// Units short in their pool when each OVERSELL was raised, summed.
    pub oversold_units: Count,
    pub oversold_units_avoided: i64,
    pub oversold_units_caused: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WeekRow {
    pub week: String,
    pub channel: String,
    pub net_revenue: Amount,
    pub operating_cost: Amount,
    pub contribution: Amount,
    pub decision: String,
    pub baseline_decision: String,
    /// The channel is retired in this scenario from this week on.
    pub retired: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChannelTotal {
    pub channel: String,
    pub net_revenue: Amount,
    pub operating_cost: Amount,
    pub contribution: Amount,
    /// The decision of the last reported week.
    pub last_decision: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShiftAnswer {
    pub from: String,
    pub to: String,
    pub fraction: String,
    pub units_shifted: i64,
    pub units_not_shifted: i64,
}

const PRICING_KINDS: [&str; 5] = [
    "PRICE_BELOW_FLOOR",
    "MAP_VIOLATION",
    "CHANNEL_PRICE_SPREAD",
    "PROMOTION_COLLISION",
    "COMPETITOR_UNDERCUT",
];

/// Compares every run with the first (the baseline).
pub fn answer(
    history: &History,
    skus: &SkuIndex,
    channels: &Channels,
    scenarios: &[Scenario],
    runs: &[Run],
) -> Answer {
    let base = &runs[0];
    let first_ms = history.start_ms();
    let last_ms = history.last_ms();
    Answer {
        history: HistoryInfo {
            source: history.source.clone(),
            events: history.len(),
            partitions: history.partition_count,
            skus: skus.names.len(),
            unreadable: history.unreadable,
            first_unreadable: history.first_unreadable.clone(),
            first_ms,
            last_ms,
        },
        currency: scenarios[0].rules.contract.reporting_currency.clone(),
        demand_held_fixed: DEMAND_HELD_FIXED.to_string(),
        scenarios: scenarios.iter().zip(runs).map(|(s, run)| compare(skus, channels, s, base, run)).collect(),
    }
}

fn compare(
    skus: &SkuIndex,
    channels: &Channels,
    scenario: &Scenario,
    base: &Run,
    run: &Run,
) -> ScenarioAnswer {
    let (changed, by_sku) = changed_decisions(&base.decisions, &run.decisions);
    fn final_of(run: &Run) -> (BTreeMap<String, i64>, HashMap<&str, i64>) {
        let mut by_channel: BTreeMap<String, i64> = BTreeMap::new();
        let mut by_sku: HashMap<&str, i64> = HashMap::new();
        for ((channel, sku), units) in &run.final_availability {
            *by_channel.entry(channel.clone()).or_default() += units;
            *by_sku.entry(sku.as_str()).or_default() += units;
        }
        (by_channel, by_sku)
    }
    let ((base_final, base_sku), (run_final, run_sku)) = (final_of(base), final_of(run));
    let channel_units: Vec<ChannelUnits> = channels
        .0
        .iter()
        .map(|channel| {
            let get = |m: &BTreeMap<String, i64>| m.get(channel).copied().unwrap_or(0);
            let units = |r: &Run| r.units.get(channel).copied().unwrap_or_default();
            ChannelUnits {
                channel: channel.clone(),
                final_available: Count::of(get(&run_final), get(&base_final)),
                units_placed: Count::of(units(run).placed, units(base).placed),
                units_shipped: Count::of(units(run).shipped, units(base).shipped),
            }
        })
        .collect();
    let units_shifted = channel_units.iter().map(|c| c.final_available.delta.max(0)).sum();
    let hours = |ms: i64| ms as f64 / 3_600_000.0;
    let scarcity = |r: &Run| r.scarcity_ms.values().sum::<i64>();
    let mut affected: BTreeSet<u32> = by_sku.keys().copied().collect();
    for sku in base.scarcity_ms.keys().chain(run.scarcity_ms.keys()) {
        affected.insert(*sku);
    }
    let mut most: Vec<AffectedSku> = affected
        .into_iter()
        .filter_map(|id| {
            let name = skus.names.get(id as usize)?;
            let sku = AffectedSku {
                sku: name.clone(),
                decisions_changed: by_sku.get(&id).copied().unwrap_or(0),
                final_available_delta: run_sku.get(name.as_str()).copied().unwrap_or(0)
                    - base_sku.get(name.as_str()).copied().unwrap_or(0),
                scarcity_hours_delta: hours(
                    run.scarcity_ms.get(&id).copied().unwrap_or(0)
                        - base.scarcity_ms.get(&id).copied().unwrap_or(0),
                ),
            };
            (sku.decisions_changed > 0 || sku.final_available_delta != 0 || sku.scarcity_hours_delta != 0.0)
                .then_some(sku)
        })
        .collect();
    most.sort_by(|a, b| {
        (b.decisions_changed, b.final_available_delta.abs())
            .cmp(&(a.decisions_changed, a.final_available_delta.abs()))
            .then_with(|| a.sku.cmp(&b.sku))
    });
    most.truncate(MOST_AFFECTED);

    let kind = |r: &Run, k: &str| r.alerts.get(k).copied().unwrap_or(0);
    let counts = |a: &BTreeMap<String, i64>, b: &BTreeMap<String, i64>| {
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        keys.into_iter()
            .map(|k| (k.clone(), Count::of(b.get(k).copied().unwrap_or(0), a.get(k).copied().unwrap_or(0))))
            .collect::<BTreeMap<_, _>>()
    };
    let oversold = Count::of(run.oversold_units, base.oversold_units);
    let stock_conflicts = StockConflicts {
        oversell: Count::of(kind(run, "OVERSELL"), kind(base, "OVERSELL")),
        negative_stock: Count::of(kind(run, "NEGATIVE_STOCK"), kind(base, "NEGATIVE_STOCK")),
        allocation_breach: Count::of(kind(run, "ALLOCATION_BREACH"), kind(base, "ALLOCATION_BREACH")),
        oversold_units: oversold,
        oversold_units_avoided: (-oversold.delta).max(0),
        oversold_units_caused: oversold.delta.max(0),
    };
    let pricing_conflicts =
        PRICING_KINDS.iter().map(|k| (k.to_string(), Count::of(kind(run, k), kind(base, k)))).collect();

    let (weeks, channel_totals, total) = weeks(scenario, base, run);
    let assumptions = assumptions(scenario);
    let shift = scenario.shift.as_ref().map(|shift| ShiftAnswer {
        from: scenario.cut.as_ref().map(|c| c.channel.clone()).unwrap_or_default(),
        to: shift.to.clone(),
        fraction: shift.fraction.normalize().to_string(),
        units_shifted: run.shifted_units,
        units_not_shifted: run.unshifted_units,
    });
    ScenarioAnswer {
        name: scenario.name.clone(),
        changes: scenario.changes.clone(),
        assumptions,
        events: EventCounts {
            applied: run.applied,
            duplicates: run.duplicates,
            rejected: run.rejected,
            dropped: run.dropped,
            synthetic: run.synthetic,
        },
        availability: Availability {
            decisions: Count::of(run.decisions.len() as i64, base.decisions.len() as i64),
            decisions_changed: changed,
            units_shifted,
            scarcity_hours: HoursDelta {
                value: round1(hours(scarcity(run))),
                delta: round1(hours(scarcity(run) - scarcity(base))),
            },
            channels: channel_units,
            most_affected_skus: most
                .into_iter()
                .map(|s| AffectedSku { scarcity_hours_delta: round1(s.scarcity_hours_delta), ..s })
                .collect(),
        },
        stock_conflicts,
        pricing_conflicts,
        alerts_by_kind: counts(&base.alerts, &run.alerts),
        pages_by_rule: counts(&base.pages, &run.pages),
        weeks,
        channels: channel_totals,
        total_contribution: total,
        shift,
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// The decisions one run makes and the other does not (or makes with another number), and
/// how many per SKU.
pub fn changed_decisions(base: &[Decision], run: &[Decision]) -> (i64, HashMap<u32, i64>) {
    let key = |d: &Decision| (d.event, d.sku, d.channel);
    let (mut i, mut j, mut changed) = (0, 0, 0i64);
    let mut by_sku: HashMap<u32, i64> = HashMap::new();
    let mut note = |sku: u32| {
        changed += 1;
        *by_sku.entry(sku).or_default() += 1;
    };
    while i < base.len() || j < run.len() {
        match (base.get(i), run.get(j)) {
            (Some(a), Some(b)) if key(a) == key(b) => {
                if a.available != b.available {
                    note(a.sku);
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if key(a) < key(b) => {
                note(a.sku);
                i += 1;
            }
            (Some(_), Some(b)) => {
                note(b.sku);
                j += 1;
            }
            (Some(a), None) => {
                note(a.sku);
                i += 1;
            }
            (None, Some(b)) => {
                note(b.sku);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (changed, by_sku)
}

fn weeks(scenario: &Scenario, base: &Run, run: &Run) -> (Vec<WeekRow>, Vec<ChannelTotal>, Amount) {
    fn index(r: &Run) -> BTreeMap<(Week, String), &ChannelWeek> {
        r.snapshots.iter().map(|s| ((s.figures.week, s.figures.channel.clone()), &s.figures)).collect()
    }
    let (base_weeks, run_weeks) = (index(base), index(run));
    let keys: BTreeSet<_> = base_weeks.keys().chain(run_weeks.keys()).cloned().collect();
    let order: Vec<String> = scenario.rules.channels_in_order().map(|c| c.id.clone()).collect();
    let mut keys: Vec<_> = keys.into_iter().collect();
    keys.sort_by_key(|(week, channel)| {
        (*week, order.iter().position(|c| c == channel).unwrap_or(usize::MAX))
    });
    let zero = Decimal::ZERO;
    let mut rows = Vec::new();
    // per channel: (net, base net, cost, base cost, contribution, base contribution, last decision)
    type Totals = (Decimal, Decimal, Decimal, Decimal, Decimal, Decimal, String);
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    for key in keys {
        let (b, r) = (base_weeks.get(&key), run_weeks.get(&key));
        let value = |f: Option<&&ChannelWeek>, pick: fn(&ChannelWeek) -> Decimal| f.map_or(zero, |f| pick(f));
        let retired = run.retired_from_week.as_ref().is_some_and(|(c, from)| *c == key.1 && key.0 >= *from);
        let name = |d: Option<&&ChannelWeek>| d.map_or("-", |d| d.decision.name()).to_string();
        let decision = if retired { "RETIRED".to_string() } else { name(r) };
        let (net, base_net) = (value(r, |f| f.net_revenue), value(b, |f| f.net_revenue));
        let (cost, base_cost) = (value(r, |f| f.operating_cost), value(b, |f| f.operating_cost));
        let (contribution, base_contribution) = (value(r, |f| f.contribution), value(b, |f| f.contribution));
        let total = totals.entry(key.1.clone()).or_default();
        total.0 += net;
        total.1 += base_net;
        total.2 += cost;
        total.3 += base_cost;
        total.4 += contribution;
        total.5 += base_contribution;
        total.6 = decision.clone();
        rows.push(WeekRow {
            week: key.0.label(),
            channel: key.1.clone(),
            net_revenue: Amount::of(net, base_net),
            operating_cost: Amount::of(cost, base_cost),
            contribution: Amount::of(contribution, base_contribution),
            decision,
            baseline_decision: name(b),
            retired,
        });
    }
    let mut channel_totals: Vec<ChannelTotal> = totals
        .into_iter()
        .map(|(channel, t)| ChannelTotal {
            channel,
            net_revenue: Amount::of(t.0, t.1),
            operating_cost: Amount::of(t.2, t.3),
            contribution: Amount::of(t.4, t.5),
            last_decision: t.6,
        })
        .collect();
    channel_totals.sort_by_key(|c| order.iter().position(|o| *o == c.channel).unwrap_or(usize::MAX));
    let (all, all_base) = channel_totals.iter().fold((zero, zero), |(a, b), c| {
        (a + c.contribution.value(), b + c.contribution.value() - c.contribution.delta())
    });
    (rows, channel_totals, Amount::of(all, all_base))
}

/// What the scenario's numbers rest on, in plain words.
fn assumptions(scenario: &Scenario) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(cut) = &scenario.cut {
        let when = if cut.from_start {
            "from the start of the history".to_string()
        } else {
            format!("from {}", crate::scenario::format_time(cut.at_ms))
        };
        out.push(format!(
            "{} is retired {when}: its events from then on are dropped; per SKU, at its first event from then on, \
             its prices, promotions and competitor prices are withdrawn and its open lines cancelled (their \
             reservations freed); its dedicated locations become shared stock; its weekly operating cost and \
             recorded costs are removed from the first week that starts at or after the retirement.",
            cut.channel
        ));
    }
    if let Some(shift) = &scenario.shift {
        out.push(format!(
            "{} of the retired channel's dropped units (rounded down, per SKU) are placed on {} at {}'s effective \
             price of the SKU at that moment, with {}'s fee rate and no discount; their shipments, cancellations and \
             returns follow the dropped lines in proportion. Units {} lists no price for are not moved.",
            shift.fraction.normalize(),
            shift.to,
            shift.to,
            shift.to,
            shift.to
        ));
    }
    out
}

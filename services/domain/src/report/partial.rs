//! Partial weekly figures: what one input partition knows of one (week, channel) cell.
//!
//! Every field is a sum or a set union, so partials of different partitions merge by
//! addition in any order and give the same result: decimal addition is exact here because
//! every amount has at most [`SCALE`] decimal places (see [`prorate`]).

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::week::Week;

/// Decimal places kept by every division (pro-rata shares, spreads, ratios).
///
/// Multiplications of exact amounts by exact rates stay exact; a division such as 10 / 3
/// cannot, so its result is rounded half-to-even at this scale. Pro-rata shares telescope
/// (see [`prorate`]), so a line or a cost period still adds up to its exact amount.
pub const SCALE: u32 = 12;

/// Rounds a quotient to [`SCALE`] places, half to even.
pub fn round(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(SCALE, RoundingStrategy::MidpointNearestEven)
}

/// The share of `total` for the part (before, after] of `whole`:
/// round(total x after / whole) - round(total x before / whole).
///
/// Cumulative rounding telescopes: the shares of consecutive parts sum to exactly
/// round(total x covered / whole), hence to `total` once the whole is covered.
pub fn prorate(total: Decimal, before: i64, after: i64, whole: i64) -> Decimal {
    cumulative(total, after, whole) - cumulative(total, before, whole)
}

fn cumulative(total: Decimal, part: i64, whole: i64) -> Decimal {
    if part <= 0 {
        return Decimal::ZERO;
    }
    if part >= whole {
        return total;
    }
    round(total * Decimal::from(part) / Decimal::from(whole))
}

/// One reporting cell: a week of one channel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cell {
    pub week: Week,
    pub channel: String,
}

impl Cell {
    pub fn new(week: Week, channel: &str) -> Self {
        Cell { week, channel: channel.to_string() }
    }

    /// The snapshot key, `<iso-week>/<channel>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.week, self.channel)
    }
}

/// The additive figures of one cell from one source, in reporting currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    pub gross_revenue: Decimal,
    pub discounts: Decimal,
    pub cogs: Decimal,
    pub restocked_cogs: Decimal,
    pub channel_fees: Decimal,
    pub fulfillment_costs: Decimal,
    pub refunds: Decimal,
    /// The share of ChannelCostRecorded amounts whose period overlaps the week.
    pub recorded_operating_cost: Decimal,
    pub units_shipped: i64,
    /// Distinct orders with a shipment in the week. Not a source's figure: sources send the
    /// order ids they saw shipped ([`super::ledger::PartialRecord::orders`]) and the merge
    /// stage counts each (cell, order) once, so an order split over SKUs (and so over
    /// partitions) counts once. Filled in by [`super::merge::Merger::merged`].
    #[serde(default)]
    pub orders_shipped: i64,
    /// RAISED alerts naming the channel, by kind name (e.g. `OVERSELL`).
    pub alerts: BTreeMap<String, i64>,
    /// RAISED CRITICAL alerts accountable to the channel (CONTRACT.md section 5), by kind
    /// name: they make the decision FIX. Counted apart from `alerts`, because a shared-pool
    /// OVERSELL names every channel but is accountable to operations.
    #[serde(default)]
    pub accountable_critical: BTreeMap<String, i64>,
    /// The same alerts by SKU, for the next action to name the SKUs most involved. One entry
    /// per SKU with such an alert in the cell, so it stays as small as the alerts are few.
    #[serde(default)]
    pub accountable_critical_skus: BTreeMap<String, i64>,
}

impl Partial {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Partial) {
        self.gross_revenue += other.gross_revenue;
        self.discounts += other.discounts;
        self.cogs += other.cogs;
        self.restocked_cogs += other.restocked_cogs;
        self.channel_fees += other.channel_fees;
        self.fulfillment_costs += other.fulfillment_costs;
        self.refunds += other.refunds;
        self.recorded_operating_cost += other.recorded_operating_cost;
        self.units_shipped += other.units_shipped;
        self.orders_shipped += other.orders_shipped;
        add_counts(&mut self.alerts, &other.alerts);
        add_counts(&mut self.accountable_critical, &other.accountable_critical);
        add_counts(&mut self.accountable_critical_skus, &other.accountable_critical_skus);
    }
}

fn add_counts(into: &mut BTreeMap<String, i64>, from: &BTreeMap<String, i64>) {
    for (name, count) in from {
        *into.entry(name.clone()).or_default() += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn prorated_shares_add_up_to_the_whole() {
        let parts = [prorate(dec!(10), 0, 1, 3), prorate(dec!(10), 1, 2, 3), prorate(dec!(10), 2, 3, 3)];
        assert_eq!(parts, [dec!(3.333333333333), dec!(3.333333333334), dec!(3.333333333333)]);
        assert_eq!(parts.iter().sum::<Decimal>(), dec!(10));
        assert_eq!(prorate(dec!(6), 0, 1, 2), dec!(3));
        assert_eq!(prorate(dec!(6), 0, 2, 2), dec!(6));
    }

    #[test]
    fn merging_is_order_free() {
        let a = Partial { gross_revenue: dec!(1.5), units_shipped: 1, ..Partial::default() };
        let b = Partial { gross_revenue: dec!(2.25), units_shipped: 2, ..Partial::default() };
        let (mut ab, mut ba) = (a.clone(), b.clone());
        ab.merge(&b);
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.units_shipped, 3);
    }
}

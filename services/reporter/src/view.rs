//! What `show`, `page` and `serve` display: one week of every channel read back from the
//! snapshots topic, plus the last eight weeks of contribution for the trend.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use omnifold_domain::report::Week;
use omnifold_proto::{ContributionSnapshot, Decision};
use rust_decimal::Decimal;

/// How many weeks the trend shows, the selected one included.
pub const TREND_WEEKS: i64 = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ViewError {
    #[error("no snapshot has been published yet")]
    Empty,
    #[error("no snapshot for week {0}; published weeks: {1}")]
    NoWeek(String, String),
    #[error(transparent)]
    BadWeek(#[from] omnifold_domain::report::week::BadWeek),
}

/// One channel's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub channel: String,
    pub channel_name: String,
    pub owner: String,
    pub revision: u32,
    pub gross_revenue: Decimal,
    pub net_revenue: Decimal,
    pub contribution_before_operating: Decimal,
    pub operating_cost: Decimal,
    pub contribution: Decimal,
    pub contribution_margin: Option<Decimal>,
    pub revenue_share: Option<Decimal>,
    pub operating_cost_share: Option<Decimal>,
    pub orders_shipped: i64,
    pub units_shipped: i64,
    pub alerts: Vec<(String, i64)>,
    pub critical_alerts: i64,
    pub decision: String,
    pub next_action: String,
}

/// A week of every channel, and the trend before it.
#[derive(Debug, Clone, PartialEq)]
pub struct WeekView {
    pub week: String,
    pub monday: String,
    pub sunday: String,
    pub currency: String,
    /// By net revenue, largest first (then by channel id).
    pub rows: Vec<Row>,
    /// Every published week of the trend window, oldest first, with each row channel's
    /// contribution (absent when not published).
    pub trend: Vec<(String, BTreeMap<String, Decimal>)>,
}

impl WeekView {
    /// The view of `week`, or of the latest published week when `None`.
    pub fn build(
        snapshots: &BTreeMap<String, ContributionSnapshot>,
        week: Option<&str>,
    ) -> Result<Self, ViewError> {
        let weeks: BTreeSet<Week> = snapshots.values().filter_map(|s| Week::from_str(&s.week).ok()).collect();
        let selected = match week {
            Some(label) => Week::from_str(label)?,
            None => *weeks.last().ok_or(ViewError::Empty)?,
        };
        if !weeks.contains(&selected) {
            let known: Vec<String> = weeks.iter().map(|w| w.label()).collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            return Err(ViewError::NoWeek(selected.label(), known));
        }
        let label = selected.label();
        let mut rows: Vec<Row> = snapshots.values().filter(|s| s.week == label).map(row).collect();
        rows.sort_by(|a, b| b.net_revenue.cmp(&a.net_revenue).then_with(|| a.channel.cmp(&b.channel)));
        let currency =
            snapshots.values().find(|s| s.week == label).map(|s| s.currency.clone()).unwrap_or_default();
        let trend = (0..TREND_WEEKS)
            .rev()
            .map(|back| Week(selected.0 - back))
            .filter(|w| weeks.contains(w))
            .map(|w| {
                let label = w.label();
                let values = snapshots
                    .values()
                    .filter(|s| s.week == label)
                    .filter_map(|s| Some((s.channel.clone(), decimal(&s.contribution)?)))
                    .collect();
                (label, values)
            })
            .collect();
        Ok(WeekView {
            week: label,
            monday: selected.monday(),
            sunday: selected.sunday(),
            currency,
            rows,
            trend,
        })
    }

    pub fn total_net_revenue(&self) -> Decimal {
        self.rows.iter().map(|r| r.net_revenue).sum()
    }

    pub fn total_contribution(&self) -> Decimal {
        self.rows.iter().map(|r| r.contribution).sum()
    }

    /// Every alert kind raised on any channel, in name order.
    pub fn alert_kinds(&self) -> Vec<String> {
        let kinds: BTreeSet<&String> =
            self.rows.iter().flat_map(|r| r.alerts.iter().map(|(k, _)| k)).collect();
        kinds.into_iter().cloned().collect()
    }
}

pub(crate) fn row(s: &ContributionSnapshot) -> Row {
    let zero = |text: &str| decimal(text).unwrap_or_default();
    Row {
        channel: s.channel.clone(),
        channel_name: s.channel_name.clone(),
        owner: s.owner.clone(),
        revision: s.revision,
        gross_revenue: zero(&s.gross_revenue),
        net_revenue: zero(&s.net_revenue),
        contribution_before_operating: zero(&s.contribution_before_operating),
        operating_cost: zero(&s.operating_cost),
        contribution: zero(&s.contribution),
        contribution_margin: s.contribution_margin.as_deref().and_then(decimal),
        revenue_share: s.revenue_share.as_deref().and_then(decimal),
        operating_cost_share: s.operating_cost_share.as_deref().and_then(decimal),
        orders_shipped: s.orders_shipped,
        units_shipped: s.units_shipped,
        alerts: s.alerts_raised.iter().map(|a| (a.kind.clone(), a.count)).collect(),
        critical_alerts: s.critical_alerts,
        decision: Decision::try_from(s.decision).unwrap_or(Decision::Unspecified).name().to_string(),
        next_action: s.next_action.clone(),
    }
}

fn decimal(text: &str) -> Option<Decimal> {
    Decimal::from_str(text).ok()
}

/// An amount to the cent with thousands separators, e.g. `-12,345.60`.
pub fn money(value: Decimal) -> String {
    let text = omnifold_domain::report::figures::money(value);
    let (sign, digits) = text.strip_prefix('-').map_or(("", text.as_str()), |d| ("-", d));
    let (whole, cents) = digits.split_once('.').unwrap_or((digits, "00"));
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{cents}")
}

/// A fraction as a percentage, or `-` when absent.
pub fn percent(value: Option<Decimal>) -> String {
    value.map_or_else(|| "-".to_string(), omnifold_domain::report::figures::percent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn formats_money_and_shares() {
        assert_eq!(money(dec!(1234567.891)), "1,234,567.89");
        assert_eq!(money(dec!(-40)), "-40.00");
        assert_eq!(money(dec!(0.004)), "0.00");
        assert_eq!(money(dec!(999.999)), "1,000.00");
        assert_eq!(percent(Some(dec!(0.024122807018))), "2.4%");
        assert_eq!(percent(None), "-");
    }

    fn snapshot(week: &str, channel: &str, net: &str, contribution: &str) -> ContributionSnapshot {
        ContributionSnapshot {
            week: week.into(),
            channel: channel.into(),
            revision: 1,
            net_revenue: net.into(),
            contribution: contribution.into(),
            currency: "USD".into(),
            ..ContributionSnapshot::default()
        }
    }

    #[test]
    fn selects_a_week_and_its_trend() {
        let snapshots: BTreeMap<String, ContributionSnapshot> = [
            snapshot("2026-W46", "a", "10", "1"),
            snapshot("2026-W46", "b", "20", "-2"),
            snapshot("2026-W47", "a", "30", "3"),
            snapshot("2026-W47", "b", "5", "-4"),
            snapshot("2026-W37", "a", "1", "1"),
        ]
        .into_iter()
        .map(|s| (format!("{}/{}", s.week, s.channel), s))
        .collect();
        let latest = WeekView::build(&snapshots, None).unwrap();
        assert_eq!(latest.week, "2026-W47");
        assert_eq!(latest.rows.iter().map(|r| r.channel.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let weeks: Vec<&str> = latest.trend.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(weeks, ["2026-W46", "2026-W47"], "W37 is outside the 8 weeks");
        assert_eq!(latest.total_contribution(), dec!(-1));
        let w46 = WeekView::build(&snapshots, Some("2026-W46")).unwrap();
        assert_eq!(w46.rows[0].channel, "b", "largest net revenue first");
        assert!(matches!(WeekView::build(&snapshots, Some("2026-W40")), Err(ViewError::NoWeek(..))));
        assert_eq!(WeekView::build(&BTreeMap::new(), None), Err(ViewError::Empty));
    }
}

//! What the operations owner reads (`omnifold-reporter operations`, `/operations`): the open
//! conflicts by kind, the pages of the last seven days by rule and target, the SKUs in
//! scarcity mode with every channel's number, and each channel's attention (alerts and pages
//! it is accountable for) beside its contribution.
//!
//! Built from the folded state (`operations.rs`) and the contract, which names the owner and
//! on-call of every accountable party now, not when the alert was written. Ages are in event
//! time: "now" is the latest event time the state has seen.

use std::collections::BTreeMap;

use omnifold_domain::Rules;
use omnifold_domain::alerts::OPERATIONS;
use omnifold_domain::escalation::GLOBAL;
use rust_decimal::Decimal;

use crate::operations::{
    DAY_MS, HOUR_MS, Keyed, MINUTE_MS, OpenConflict, OperationsError, PAGE_WINDOW_MS, Page, RoutingException,
    Suggestion, now_ms, open_conflicts, pages_since, raised_since, routing_exceptions_since, scarce_skus,
    suggestions,
};
use crate::view::WeekView;

/// An open conflict as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRow {
    pub alert_id: String,
    pub kind: String,
    pub severity: String,
    pub sku: String,
    /// What it is about besides the SKU: `pool shared`, `location wh-nj`, `channel amazon`.
    pub subject: String,
    pub channels: Vec<String>,
    pub raised_at_ms: i64,
    /// Event time since it was raised.
    pub age_ms: i64,
    pub accountable: String,
    pub owner: String,
    pub on_call: String,
    pub action: String,
    pub summary: String,
}

/// The open conflicts of one kind, most severe and oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictGroup {
    pub kind: String,
    pub rows: Vec<ConflictRow>,
}

/// The pages of one rule to one target in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageGroup {
    pub rule: String,
    /// A channel id or `global`.
    pub target: String,
    pub owner: String,
    pub on_call: String,
    pub count: usize,
    pub latest_ms: i64,
    pub latest_summary: String,
}

/// A SKU in scarcity mode: its latest decision and every channel's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScarceSku {
    pub sku: String,
    pub decided_at_ms: i64,
    pub rule: String,
    /// By [`OperationsView::scarcity_channels`]; `None` when the channel never had a number.
    pub numbers: Vec<Option<i64>>,
}

/// What one accountable party costs in attention, beside what its channel brings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attention {
    /// A channel id or `operations`.
    pub party: String,
    pub owner: String,
    /// Open conflicts it is accountable for.
    pub open: usize,
    /// Alerts raised in the window it is accountable for, and how many were CRITICAL.
    pub alerts: usize,
    pub critical: usize,
    /// Pages to it (`global` for operations) in the window.
    pub pages: usize,
    /// alerts + pages: each is one interruption of somebody.
    pub attention: usize,
    /// From the latest published week; `None` for operations or before any snapshot.
    pub contribution: Option<Decimal>,
    pub decision: Option<String>,
}

/// The whole operations readback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationsView {
    /// The latest event time seen; 0 before any record.
    pub now_ms: i64,
    pub conflicts: Vec<ConflictGroup>,
    pub page_groups: Vec<PageGroup>,
    /// Every page of the window, newest first.
    pub pages: Vec<Page>,
    pub scarcity_channels: Vec<String>,
    pub scarcity: Vec<ScarceSku>,
    pub attention: Vec<Attention>,
    /// The coordinator's live reorder suggestions (shared pool), by SKU.
    pub to_order: Vec<Suggestion>,
    /// The coordinator's live transfer suggestions into FBA, by pool and SKU.
    pub to_move: Vec<Suggestion>,
    /// Routing that split or shipped elsewhere in the last 7 days, newest first.
    pub routing_exceptions: Vec<RoutingException>,
    /// The week the contributions come from, and its currency.
    pub week: Option<String>,
    pub currency: String,
}

impl OperationsView {
    /// The view of `state`; contributions come from `week` when a week is published.
    pub fn build(
        rules: &Rules,
        state: &impl Keyed,
        week: Option<&WeekView>,
    ) -> Result<Self, OperationsError> {
        let now = now_ms(state)?;
        let rows = conflict_rows(rules, open_conflicts(state)?, now);
        let mut pages = pages_since(state, now - PAGE_WINDOW_MS)?;
        let raised = raised_since(state, now - PAGE_WINDOW_MS)?;
        let attention = attention(rules, &rows, &raised, &pages, week);
        let page_groups = page_groups(rules, &pages);
        pages.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then_with(|| a.escalation_id.cmp(&b.escalation_id)));
        let scarcity_channels: Vec<String> = rules.channels_in_order().map(|c| c.id.clone()).collect();
        let scarcity = scarce_skus(state)?
            .into_iter()
            .filter_map(|numbers| {
                let latest = numbers.latest()?.clone();
                Some(ScarceSku {
                    sku: numbers.sku.clone(),
                    decided_at_ms: latest.decided_at_ms,
                    rule: latest.rule,
                    numbers: scarcity_channels
                        .iter()
                        .map(|c| numbers.channels.get(c).map(|n| n.available))
                        .collect(),
                })
            })
            .collect();
        Ok(OperationsView {
            now_ms: now,
            conflicts: group_by_kind(rows),
            page_groups,
            pages,
            scarcity_channels,
            scarcity,
            attention,
            to_order: suggestions(state, "REORDER")?,
            to_move: suggestions(state, "TRANSFER")?,
            routing_exceptions: {
                let mut exceptions = routing_exceptions_since(state, now - PAGE_WINDOW_MS)?;
                exceptions.reverse();
                exceptions
            },
            week: week.map(|w| w.week.clone()),
            currency: week.map(|w| w.currency.clone()).unwrap_or_default(),
        })
    }

    pub fn open_count(&self) -> usize {
        self.conflicts.iter().map(|g| g.rows.len()).sum()
    }

    pub fn critical_open(&self) -> usize {
        self.conflicts.iter().flat_map(|g| &g.rows).filter(|r| r.severity == "CRITICAL").count()
    }
}

/// How much an alert matters, for ordering: CRITICAL first.
pub fn severity_rank(severity: &str) -> u8 {
    match severity {
        "CRITICAL" => 3,
        "WARNING" => 2,
        "INFO" => 1,
        _ => 0,
    }
}

/// The open conflicts as rows, most severe first, then oldest, then by id.
pub fn conflict_rows(rules: &Rules, conflicts: Vec<OpenConflict>, now_ms: i64) -> Vec<ConflictRow> {
    let mut rows: Vec<ConflictRow> = conflicts.into_iter().map(|c| conflict_row(rules, c, now_ms)).collect();
    rows.sort_by(|a, b| {
        severity_rank(&b.severity)
            .cmp(&severity_rank(&a.severity))
            .then(a.raised_at_ms.cmp(&b.raised_at_ms))
            .then_with(|| a.alert_id.cmp(&b.alert_id))
    });
    rows
}

fn conflict_row(rules: &Rules, conflict: OpenConflict, now_ms: i64) -> ConflictRow {
    let (owner, on_call) = rules.people_of(&conflict.accountable);
    let (owner, on_call) = (owner.to_string(), on_call.to_string());
    ConflictRow {
        subject: subject(&conflict),
        action: recommended_action(&conflict, &owner),
        alert_id: conflict.alert_id,
        kind: conflict.kind,
        severity: conflict.severity,
        sku: conflict.sku,
        channels: conflict.channels,
        raised_at_ms: conflict.raised_at_ms,
        age_ms: (now_ms - conflict.raised_at_ms).max(0),
        accountable: conflict.accountable,
        owner,
        on_call,
        summary: conflict.summary,
    }
}

/// Groups rows (already in order) by kind; groups in the order of their first row, so the
/// kind with the most severe and oldest conflict leads.
fn group_by_kind(rows: Vec<ConflictRow>) -> Vec<ConflictGroup> {
    let mut groups: Vec<ConflictGroup> = Vec::new();
    for row in rows {
        match groups.iter_mut().find(|g| g.kind == row.kind) {
            Some(group) => group.rows.push(row),
            None => groups.push(ConflictGroup { kind: row.kind.clone(), rows: vec![row] }),
        }
    }
    groups
}

fn subject(conflict: &OpenConflict) -> String {
    if !conflict.location.is_empty() {
        return format!("location {}", conflict.location);
    }
    if !conflict.pool.is_empty() {
        return format!("pool {}", conflict.pool);
    }
    let channels = conflict.channels.join(", ");
    if !conflict.competitor.is_empty() {
        return format!("{channels} vs {}", conflict.competitor);
    }
    match conflict.channels.len() {
        0 => "-".to_string(),
        1 => format!("channel {channels}"),
        _ => format!("channels {channels}"),
    }
}

/// What the accountable owner should do, one rule per kind. A channel's remedies say what
/// the weekly snapshot's next action says for the same kind (`report/figures.rs`);
/// operations' are about the stock or the SKU-wide prices it answers for.
pub fn recommended_action(conflict: &OpenConflict, owner: &str) -> String {
    let sku = &conflict.sku;
    let party = &conflict.accountable;
    let remedy = if party != OPERATIONS {
        match conflict.kind.as_str() {
            "OVERSELL" | "NEGATIVE_STOCK" | "LOW_COVER" | "ALLOCATION_BREACH" => {
                format!("stop {party} selling past its allocation of {sku}")
            }
            "PRICE_BELOW_FLOOR" => format!("raise {party}'s price of {sku} back above its margin floor"),
            "MAP_VIOLATION" => format!("bring {party}'s price of {sku} back up to MAP"),
            "CHANNEL_PRICE_SPREAD" | "PROMOTION_COLLISION" => {
                format!("realign {party}'s prices and promotions of {sku}")
            }
            "COMPETITOR_UNDERCUT" => format!("review {party}'s price of {sku} against its competitors"),
            other => format!("resolve the {} on {sku}", kind_words(other)),
        }
    } else {
        match conflict.kind.as_str() {
            "OVERSELL" => format!("recount or replenish the {} pool of {sku}", conflict.pool),
            "NEGATIVE_STOCK" => format!("recount {sku} at {} and correct the record", conflict.location),
            "LOW_COVER" => format!("replenish the shared pool of {sku}"),
            "CHANNEL_PRICE_SPREAD" => format!("align the listed prices of {sku} across its channels"),
            "PROMOTION_COLLISION" => format!("cancel or reschedule one of the colliding promotions of {sku}"),
            other => format!("resolve the {} on {sku}", kind_words(other)),
        }
    };
    format!("{owner} to {remedy}")
}

/// `MAP_VIOLATION` -> `MAP violation`, `LOW_COVER` -> `low cover`.
pub fn kind_words(kind: &str) -> String {
    let words: Vec<String> = kind
        .split('_')
        .map(|word| if word == "MAP" { word.to_string() } else { word.to_ascii_lowercase() })
        .collect();
    words.join(" ")
}

/// Where a party sits in the contract's (priority, id) order; `global`/`operations` last.
fn party_rank(rules: &Rules, party: &str) -> usize {
    rules.channels_in_order().position(|c| c.id == party).unwrap_or(usize::MAX)
}

fn rule_rank(rule: &str) -> usize {
    ["CRITICAL_ALERT", "ORDER_SPIKE", "STOCK_DROP", "PRICE_JUMP"]
        .iter()
        .position(|r| *r == rule)
        .unwrap_or(usize::MAX)
}

/// Pages counted by (rule, target), in rule order then the contract's channel order.
pub(crate) fn page_groups(rules: &Rules, pages: &[Page]) -> Vec<PageGroup> {
    let mut groups: BTreeMap<(usize, usize, String, String), PageGroup> = BTreeMap::new();
    for page in pages {
        let key =
            (rule_rank(&page.rule), party_rank(rules, &page.target), page.rule.clone(), page.target.clone());
        let (owner, on_call) = rules.people_of(&page.target);
        let group = groups.entry(key).or_insert_with(|| PageGroup {
            rule: page.rule.clone(),
            target: page.target.clone(),
            owner: owner.to_string(),
            on_call: on_call.to_string(),
            count: 0,
            latest_ms: i64::MIN,
            latest_summary: String::new(),
        });
        group.count += 1;
        // pages come oldest first, so the last one at the latest time wins
        if page.at_ms >= group.latest_ms {
            group.latest_ms = page.at_ms;
            group.latest_summary = page.summary.clone();
        }
    }
    groups.into_values().collect()
}

fn attention(
    rules: &Rules,
    open: &[ConflictRow],
    raised: &[crate::operations::RaisedAlert],
    pages: &[Page],
    week: Option<&WeekView>,
) -> Vec<Attention> {
    let parties = rules.channels_in_order().map(|c| c.id.clone()).chain([OPERATIONS.to_string()]);
    parties
        .map(|party| {
            let target = if party == OPERATIONS { GLOBAL } else { party.as_str() };
            let accountable: Vec<_> = raised.iter().filter(|r| r.accountable == party).collect();
            let row = week.and_then(|w| w.rows.iter().find(|r| r.channel == party));
            let alerts = accountable.len();
            let pages = pages.iter().filter(|p| p.target == target).count();
            Attention {
                owner: rules.people_of(&party).0.to_string(),
                open: open.iter().filter(|r| r.accountable == party).count(),
                alerts,
                critical: accountable.iter().filter(|r| r.severity == "CRITICAL").count(),
                pages,
                attention: alerts + pages,
                contribution: row.map(|r| r.contribution),
                decision: row.map(|r| r.decision.clone()),
                party,
            }
        })
        .collect()
}

/// An event time as `YYYY-MM-DD HH:MM` (UTC).
pub fn event_time(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", rest / HOUR_MS, rest % HOUR_MS / MINUTE_MS)
}

/// An age in event time, e.g. `2d 3h`, `5h 12m`, `7m`.
pub fn age(ms: i64) -> String {
    let (days, hours, minutes) = (ms / DAY_MS, ms % DAY_MS / HOUR_MS, ms % HOUR_MS / MINUTE_MS);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else {
        format!("{minutes}m")
    }
}

/// (year, month, day) of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
pub(crate) mod tests {
    use omnifold_proto::{
        AlertKind, AllocationMode, Detail, EscalationRule, Replenishment, ReplenishmentAction,
        RoutingDecision, RoutingState, Severity,
    };

    use super::*;
    use crate::operations::tests::{T0, alert, folded, number, page, resolved, rules};
    use crate::operations::{Input, MemoryKeyed};

    #[test]
    fn formats_event_times_and_ages() {
        assert_eq!(event_time(T0), "2026-11-09 00:00");
        assert_eq!(event_time(T0 + 9 * DAY_MS + 12 * HOUR_MS + 28 * MINUTE_MS), "2026-11-18 12:28");
        assert_eq!(event_time(951_782_400_000), "2000-02-29 00:00");
        assert_eq!(age(2 * DAY_MS + 3 * HOUR_MS + 59 * MINUTE_MS), "2d 3h");
        assert_eq!(age(5 * HOUR_MS + 12 * MINUTE_MS + 59_999), "5h 12m");
        assert_eq!(age(7 * MINUTE_MS), "7m");
        assert_eq!(age(0), "0m");
    }

    /// A morning of conflicts on the example contract; now is T0 + 3 d 2 h.
    pub fn scenario() -> MemoryKeyed {
        folded(&scenario_inputs())
    }

    pub fn scenario_inputs() -> Vec<Input> {
        let mut oversell = alert(
            "oversell/SKU-4/pool=shared/o2",
            AlertKind::Oversell,
            Severity::Critical,
            "SKU-4",
            "shopify",
            T0 + DAY_MS,
        );
        oversell.pool = "shared".into();
        oversell.channels = vec!["shopify".into(), "amazon".into(), "eu-market".into(), "wholesale".into()];
        let mut ops_oversell = alert(
            "oversell/SKU-9/pool=shared/c1",
            AlertKind::Oversell,
            Severity::Critical,
            "SKU-9",
            "operations",
            T0 + 2 * DAY_MS,
        );
        ops_oversell.pool = "shared".into();
        let mut map = alert(
            "map_violation/SKU-1/amazon/p1",
            AlertKind::MapViolation,
            Severity::Critical,
            "SKU-1",
            "amazon",
            T0 + 2 * DAY_MS,
        );
        map.channels = vec!["amazon".into()];
        let mut floor = alert(
            "price_below_floor/SKU-1/amazon/p1",
            AlertKind::PriceBelowFloor,
            Severity::Critical,
            "SKU-1",
            "amazon",
            T0,
        );
        floor.channels = vec!["amazon".into()];
        let mut gone = floor.clone();
        gone.alert_id = "price_below_floor/SKU-2/amazon/p0".into();
        gone.sku = "SKU-2".into();
        let mut low = alert(
            "low_cover/SKU-4/o1",
            AlertKind::LowCover,
            Severity::Warning,
            "SKU-4",
            "operations",
            T0 + 3 * HOUR_MS,
        );
        low.pool = "shared".into();
        let mut undercut = alert(
            "competitor_undercut/SKU-3/eu-market/x1",
            AlertKind::CompetitorUndercut,
            Severity::Info,
            "SKU-3",
            "eu-market",
            T0 + DAY_MS,
        );
        undercut.channels = vec!["eu-market".into()];
        undercut.details = vec![Detail { key: "competitor".into(), value: "bargains".into() }];
        let breach = alert(
            "allocation_breach/SKU-4/line=shopify/1/1/o2",
            AlertKind::AllocationBreach,
            Severity::Warning,
            "SKU-4",
            "shopify",
            T0 + DAY_MS,
        );
        vec![
            Input::Alert(floor),
            Input::Alert(gone.clone()),
            Input::Alert(low),
            Input::Alert(oversell),
            Input::Alert(breach),
            Input::Alert(undercut),
            Input::Alert(map),
            Input::Alert(ops_oversell),
            Input::Alert(resolved(&gone, T0 + 2 * DAY_MS)),
            Input::Escalation(page(
                "critical_alert/oversell/SKU-4/pool=shared/o2",
                EscalationRule::CriticalAlert,
                "shopify",
                T0 + DAY_MS,
            )),
            Input::Escalation(page(
                "critical_alert/map_violation/SKU-1/amazon/p1",
                EscalationRule::CriticalAlert,
                "amazon",
                T0 + 2 * DAY_MS,
            )),
            Input::Escalation(page(
                "critical_alert/oversell/SKU-9/pool=shared/c1",
                EscalationRule::CriticalAlert,
                "global",
                T0 + 2 * DAY_MS,
            )),
            Input::Escalation(page(
                "stock_drop/SKU-9/wh-nj/c1",
                EscalationRule::StockDrop,
                "global",
                T0 + 2 * DAY_MS,
            )),
            Input::Escalation(page(
                "order_spike/shopify/SKU-4/o9",
                EscalationRule::OrderSpike,
                "shopify",
                T0 + 2 * DAY_MS + HOUR_MS,
            )),
            Input::Replenishment(suggestion(
                "shared",
                "SKU-4",
                ReplenishmentAction::Reorder,
                48,
                T0 + DAY_MS,
            )),
            Input::Replenishment(suggestion(
                "shared",
                "SKU-9",
                ReplenishmentAction::Reorder,
                12,
                T0 + DAY_MS,
            )),
            // a receipt landed: the coordinator cleared SKU-9's suggestion
            Input::Replenishment(suggestion(
                "shared",
                "SKU-9",
                ReplenishmentAction::None,
                0,
                T0 + 2 * DAY_MS,
            )),
            Input::Replenishment(suggestion(
                "dedicated:amazon",
                "SKU-1",
                ReplenishmentAction::Transfer,
                16,
                T0 + 2 * DAY_MS,
            )),
            Input::Routing(routed("o7", false, "", T0 + DAY_MS)),
            Input::Routing(routed("o8", true, "", T0 + DAY_MS)),
            Input::Routing(routed("o7", false, "3pl-rotterdam", T0 + 2 * DAY_MS)),
            Input::Availability(number("SKU-4", "shopify", 3, AllocationMode::Scarcity, T0 + DAY_MS)),
            Input::Availability(number("SKU-4", "amazon", 2, AllocationMode::Scarcity, T0 + DAY_MS)),
            Input::Availability(number(
                "SKU-4",
                "wholesale",
                0,
                AllocationMode::Scarcity,
                T0 + 3 * DAY_MS + 2 * HOUR_MS,
            )),
            Input::Availability(number("SKU-5", "shopify", 30, AllocationMode::Normal, T0 + DAY_MS)),
        ]
    }

    fn week() -> WeekView {
        let snapshot = |channel: &str, contribution: &str, decision: omnifold_proto::Decision| {
            omnifold_proto::ContributionSnapshot {
                week: "2026-W46".into(),
                channel: channel.into(),
                revision: 1,
                currency: "USD".into(),
                contribution: contribution.into(),
                decision: decision as i32,
                ..Default::default()
            }
        };
        let snapshots = [
            snapshot("shopify", "1200.5", omnifold_proto::Decision::Fix),
            snapshot("amazon", "-300", omnifold_proto::Decision::Fix),
            snapshot("wholesale", "800", omnifold_proto::Decision::Keep),
        ]
        .into_iter()
        .map(|s| (format!("{}/{}", s.week, s.channel), s))
        .collect();
        WeekView::build(&snapshots, None).unwrap()
    }

    fn suggestion(pool: &str, sku: &str, action: ReplenishmentAction, units: i64, at: i64) -> Replenishment {
        let transfer = action == ReplenishmentAction::Transfer;
        Replenishment {
            sku: sku.into(),
            pool: pool.into(),
            action: action as i32,
            units,
            location: if transfer { "fba-us".into() } else { "wh-nj".into() },
            from_location: if transfer { "wh-nj".into() } else { String::new() },
            atp: 10,
            velocity: "2".into(),
            cover_days: "5".into(),
            reason_event_id: format!("{sku}-{at}"),
            decided_at_ms: at,
            ..Replenishment::default()
        }
    }

    fn routed(order: &str, split: bool, shipped_from: &str, at: i64) -> RoutingDecision {
        let state =
            if shipped_from.is_empty() { RoutingState::Advised } else { RoutingState::ShippedElsewhere };
        RoutingDecision {
            channel: "shopify".into(),
            order_id: order.into(),
            line_id: "1".into(),
            sku: "SKU-4".into(),
            quantity: 5,
            location: "wh-nj".into(),
            split,
            state: state as i32,
            shipped_from: shipped_from.into(),
            reason_event_id: format!("{order}-{at}"),
            decided_at_ms: at,
            ..RoutingDecision::default()
        }
    }

    pub fn view() -> OperationsView {
        OperationsView::build(&rules(), &scenario(), Some(&week())).unwrap()
    }

    #[test]
    fn conflicts_by_kind_most_severe_and_oldest_first() {
        let view = view();
        assert_eq!(view.now_ms, T0 + 3 * DAY_MS + 2 * HOUR_MS);
        let rows: Vec<(&str, &str, &str, &str, &str)> = view
            .conflicts
            .iter()
            .flat_map(|g| &g.rows)
            .map(|r| {
                (
                    r.kind.as_str(),
                    r.sku.as_str(),
                    r.subject.as_str(),
                    r.accountable.as_str(),
                    r.owner.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("PRICE_BELOW_FLOOR", "SKU-1", "channel amazon", "amazon", "Luis Ortega"),
                ("OVERSELL", "SKU-4", "pool shared", "shopify", "Maya Chen"),
                ("OVERSELL", "SKU-9", "pool shared", "operations", "Priya Raman"),
                ("MAP_VIOLATION", "SKU-1", "channel amazon", "amazon", "Luis Ortega"),
                ("LOW_COVER", "SKU-4", "pool shared", "operations", "Priya Raman"),
                ("COMPETITOR_UNDERCUT", "SKU-3", "eu-market vs bargains", "eu-market", "Sophie Laurent"),
            ],
            "resolved alerts and one-shot breaches are not open"
        );
        let kinds: Vec<&str> = view.conflicts.iter().map(|g| g.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["PRICE_BELOW_FLOOR", "OVERSELL", "MAP_VIOLATION", "LOW_COVER", "COMPETITOR_UNDERCUT"]
        );
        let oversells = &view.conflicts[1].rows;
        assert_eq!(
            (oversells[0].age_ms, age(oversells[0].age_ms).as_str()),
            (2 * DAY_MS + 2 * HOUR_MS, "2d 2h")
        );
        assert_eq!(oversells[0].action, "Maya Chen to stop shopify selling past its allocation of SKU-4");
        assert_eq!(oversells[1].action, "Priya Raman to recount or replenish the shared pool of SKU-9");
        assert_eq!(
            view.conflicts[2].rows[0].action,
            "Luis Ortega to bring amazon's price of SKU-1 back up to MAP"
        );
        assert_eq!(view.conflicts[3].rows[0].action, "Priya Raman to replenish the shared pool of SKU-4");
        assert_eq!(view.open_count(), 6);
        assert_eq!(view.critical_open(), 4);
    }

    #[test]
    fn pages_of_the_window_by_rule_and_target() {
        let view = view();
        let groups: Vec<(&str, &str, &str, usize)> = view
            .page_groups
            .iter()
            .map(|g| (g.rule.as_str(), g.target.as_str(), g.on_call.as_str(), g.count))
            .collect();
        assert_eq!(
            groups,
            [
                ("CRITICAL_ALERT", "shopify", "pd-dtc-storefront", 1),
                ("CRITICAL_ALERT", "amazon", "pd-marketplaces", 1),
                ("CRITICAL_ALERT", "global", "pd-operations", 1),
                ("ORDER_SPIKE", "shopify", "pd-dtc-storefront", 1),
                ("STOCK_DROP", "global", "pd-operations", 1),
            ]
        );
        assert_eq!(view.pages[0].escalation_id, "order_spike/shopify/SKU-4/o9", "newest first");
    }

    #[test]
    fn scarce_skus_with_every_channels_number() {
        let view = view();
        assert_eq!(view.scarcity_channels, ["shopify", "amazon", "eu-market", "wholesale"]);
        assert_eq!(
            view.scarcity,
            [ScarceSku {
                sku: "SKU-4".into(),
                decided_at_ms: T0 + 3 * DAY_MS + 2 * HOUR_MS,
                rule: "proportional".into(),
                numbers: vec![Some(3), Some(2), None, Some(0)],
            }]
        );
    }

    /// (party, open, alerts, critical, pages, attention, contribution)
    type AttentionFigures<'a> = (&'a str, usize, usize, usize, usize, usize, Option<Decimal>);

    #[test]
    fn attention_counts_what_each_party_is_accountable_for() {
        let view = view();
        let rows: Vec<AttentionFigures<'_>> = view
            .attention
            .iter()
            .map(|a| (a.party.as_str(), a.open, a.alerts, a.critical, a.pages, a.attention, a.contribution))
            .collect();
        assert_eq!(
            rows,
            [
                // the oversell and its breach are shopify's; two pages to shopify
                ("shopify", 1, 2, 1, 2, 4, Some(Decimal::new(12005, 1))),
                // both SKU-1 price alerts and the one resolved since
                ("amazon", 2, 3, 3, 1, 4, Some(Decimal::from(-300))),
                ("eu-market", 1, 1, 0, 0, 1, None),
                ("wholesale", 0, 0, 0, 0, 0, Some(Decimal::from(800))),
                ("operations", 2, 2, 1, 2, 4, None),
            ]
        );
    }

    #[test]
    fn attention_counts_the_last_seven_days_only() {
        let old = alert("low_cover/A/e1", AlertKind::LowCover, Severity::Warning, "A", "shopify", T0);
        let state = folded(&[
            Input::Alert(old.clone()),
            Input::Escalation(page("order_spike/shopify/A/e1", EscalationRule::OrderSpike, "shopify", T0)),
            Input::Alert(resolved(&old, T0 + 7 * DAY_MS)),
            Input::Alert(alert(
                "low_cover/A/e2",
                AlertKind::LowCover,
                Severity::Warning,
                "A",
                "shopify",
                T0 + 7 * DAY_MS + 1,
            )),
        ]);
        let view = OperationsView::build(&rules(), &state, None).unwrap();
        let shopify = &view.attention[0];
        assert_eq!(
            (shopify.open, shopify.alerts, shopify.pages, shopify.attention),
            (1, 1, 0, 1),
            "the alert and page at now - 7 d fall out; the open one stays"
        );
        assert_eq!(view.conflicts[0].rows[0].age_ms, 0);
        assert_eq!(raised_since(&state, 0).unwrap().len(), 2, "raised alerts are kept 56 days");
    }

    #[test]
    fn an_empty_state_is_an_empty_view() {
        let view = OperationsView::build(&rules(), &MemoryKeyed::default(), None).unwrap();
        assert_eq!((view.now_ms, view.open_count(), view.pages.len(), view.week), (0, 0, 0, None));
        assert_eq!(view.attention.len(), 5);
    }
}

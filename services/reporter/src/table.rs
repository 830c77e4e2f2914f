//! `omnifold-reporter show`: one week of every channel as an aligned terminal table, then
//! each channel's decision and next action.

use std::fmt::Write as _;

use crate::view::{WeekView, money, percent};

/// Column headers, and whether the column is numeric (right-aligned).
const COLUMNS: [(&str, bool); 13] = [
    ("channel", false),
    ("owner", false),
    ("net revenue", true),
    ("before op.", true),
    ("op. cost", true),
    ("contribution", true),
    ("margin", true),
    ("rev. share", true),
    ("cost share", true),
    ("orders", true),
    ("units", true),
    ("alerts", false),
    ("decision", false),
];

/// The table as text, ending with a newline.
pub fn render_table(view: &WeekView) -> String {
    let mut cells: Vec<Vec<String>> = vec![COLUMNS.iter().map(|(h, _)| h.to_string()).collect()];
    for row in &view.rows {
        let alerts: Vec<String> = row.alerts.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
        cells.push(vec![
            row.channel.clone(),
            row.owner.clone(),
            money(row.net_revenue),
            money(row.contribution_before_operating),
            money(row.operating_cost),
            money(row.contribution),
            percent(row.contribution_margin),
            percent(row.revenue_share),
            percent(row.operating_cost_share),
            row.orders_shipped.to_string(),
            row.units_shipped.to_string(),
            if alerts.is_empty() { "-".to_string() } else { alerts.join(", ") },
            row.decision.clone(),
        ]);
    }
    let widths: Vec<usize> =
        (0..COLUMNS.len()).map(|c| cells.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    let _ = writeln!(out, "{} ({} to {}), amounts in {}", view.week, view.monday, view.sunday, view.currency);
    let _ = writeln!(out);
    for (i, row) in cells.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(COLUMNS)
            .map(
                |((cell, width), (_, numeric))| {
                    if numeric { format!("{cell:>width$}") } else { format!("{cell:<width$}") }
                },
            )
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "{}", rule.join("  "));
        }
    }
    let total = format!(
        "total net revenue {}, total contribution {}",
        money(view.total_net_revenue()),
        money(view.total_contribution())
    );
    let _ = writeln!(out, "\n{total}\n");
    let channel_width = view.rows.iter().map(|r| r.channel.chars().count()).max().unwrap_or(0);
    let decision_width = view.rows.iter().map(|r| r.decision.len()).max().unwrap_or(0);
    for row in &view.rows {
        let revision = if row.revision > 1 { format!(" (revision {})", row.revision) } else { String::new() };
        let _ = writeln!(
            out,
            "{:<channel_width$}  {:<decision_width$}  {}{revision}",
            row.channel, row.decision, row.next_action
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use omnifold_proto::{AlertCount, ContributionSnapshot, Decision};

    use super::*;

    #[test]
    fn aligns_every_column() {
        let snapshot =
            |channel: &str, net: &str, contribution: &str, decision: Decision| ContributionSnapshot {
                week: "2026-W47".into(),
                channel: channel.into(),
                owner: format!("{channel} owner"),
                revision: 1,
                currency: "USD".into(),
                net_revenue: net.into(),
                contribution_before_operating: net.into(),
                operating_cost: "100".into(),
                contribution: contribution.into(),
                revenue_share: Some("0.5".into()),
                decision: decision as i32,
                next_action: format!("{channel} owner to act."),
                ..ContributionSnapshot::default()
            };
        let mut amazon = snapshot("amazon", "12000.5", "11900.5", Decision::Fix);
        amazon.alerts_raised = vec![AlertCount { kind: "OVERSELL".into(), count: 2 }];
        let snapshots: BTreeMap<String, ContributionSnapshot> =
            [amazon, snapshot("wholesale", "50", "-50", Decision::RetireReview)]
                .into_iter()
                .map(|s| (format!("{}/{}", s.week, s.channel), s))
                .collect();
        let table = render_table(&WeekView::build(&snapshots, Some("2026-W47")).unwrap());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "2026-W47 (2026-11-16 to 2026-11-22), amounts in USD");
        assert!(lines[2].starts_with("channel    owner            net revenue"), "{table}");
        assert!(lines[4].contains("amazon     amazon owner       12,000.50"), "{table}");
        assert!(lines[4].contains("OVERSELL 2"), "{table}");
        assert!(lines[5].contains("     -50.00"), "{table}");
        let contribution_end = lines[2].find("contribution").unwrap() + "contribution".len();
        assert_eq!(
            lines[4][..contribution_end].trim_end().len(),
            contribution_end,
            "numbers end under their header"
        );
        assert!(table.contains("wholesale  RETIRE_REVIEW  wholesale owner to act."), "{table}");
    }
}

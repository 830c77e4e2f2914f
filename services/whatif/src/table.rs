//! The answer as terminal tables: one column per scenario, the baseline first, changes
//! against it in parentheses. Amounts are rounded to the cent for display only; the JSON
//! answer carries them exactly.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use rust_decimal::Decimal;

use crate::answer::{Amount, Answer, Count, ScenarioAnswer};

/// Every section, as plain text.
pub fn render_table(answer: &Answer) -> String {
    let mut out = String::new();
    let h = &answer.history;
    let _ = writeln!(
        out,
        "What if: {} events over {} SKUs from {} ({} partitions{})",
        h.events,
        h.skus,
        h.source,
        h.partitions,
        if h.unreadable > 0 {
            format!(", {} unreadable records skipped", h.unreadable)
        } else {
            String::new()
        }
    );
    let _ = writeln!(out, "{}\n", wrap(&answer.demand_held_fixed, 100));
    for s in &answer.scenarios {
        let changes =
            if s.changes.is_empty() { "the current contract".to_string() } else { s.changes.join(", ") };
        let _ = writeln!(out, "  {:<14} {changes}", s.name);
    }
    let scenarios = &answer.scenarios;
    let count =
        |f: &dyn Fn(&ScenarioAnswer) -> Count| scenarios.iter().map(|s| count_cell(f(s))).collect::<Vec<_>>();
    let mut rows: Vec<(String, Vec<String>)> = vec![
        ("availability records".into(), count(&|s| s.availability.decisions)),
        (
            "decisions changed".into(),
            scenarios.iter().map(|s| s.availability.decisions_changed.to_string()).collect(),
        ),
        (
            "units shifted".into(),
            scenarios.iter().map(|s| s.availability.units_shifted.to_string()).collect(),
        ),
        (
            "scarcity SKU-hours".into(),
            scenarios
                .iter()
                .map(|s| {
                    let h = s.availability.scarcity_hours;
                    if h.delta == 0.0 {
                        format!("{:.1}", h.value)
                    } else {
                        format!("{:.1} ({:+.1})", h.value, h.delta)
                    }
                })
                .collect(),
        ),
    ];
    let channels: Vec<String> =
        scenarios[0].availability.channels.iter().map(|c| c.channel.clone()).collect();
    for (i, channel) in channels.iter().enumerate() {
        rows.push((
            format!("final sellable {channel}"),
            count(&|s| s.availability.channels[i].final_available),
        ));
    }
    for (i, channel) in channels.iter().enumerate() {
        rows.push((format!("units placed {channel}"), count(&|s| s.availability.channels[i].units_placed)));
    }
    section(&mut out, "Availability", scenarios, &rows);

    let rows = vec![
        ("OVERSELL".to_string(), count(&|s| s.stock_conflicts.oversell)),
        ("NEGATIVE_STOCK".to_string(), count(&|s| s.stock_conflicts.negative_stock)),
        ("ALLOCATION_BREACH".to_string(), count(&|s| s.stock_conflicts.allocation_breach)),
        ("oversold units".to_string(), count(&|s| s.stock_conflicts.oversold_units)),
        (
            "  avoided".to_string(),
            scenarios.iter().map(|s| s.stock_conflicts.oversold_units_avoided.to_string()).collect(),
        ),
        (
            "  caused".to_string(),
            scenarios.iter().map(|s| s.stock_conflicts.oversold_units_caused.to_string()).collect(),
        ),
    ];
    section(&mut out, "Stock conflicts", scenarios, &rows);

    let mut rows = Vec::new();
    for kind in scenarios[0].pricing_conflicts.keys() {
        rows.push((kind.clone(), count(&|s| s.pricing_conflicts.get(kind).copied().unwrap_or_default())));
    }
    let rules: BTreeSet<&String> = scenarios.iter().flat_map(|s| s.pages_by_rule.keys()).collect();
    for rule in rules {
        rows.push((
            format!("pages {rule}"),
            count(&|s| s.pages_by_rule.get(rule).copied().unwrap_or_default()),
        ));
    }
    section(&mut out, "Pricing conflicts and pages", scenarios, &rows);

    let currency = &answer.currency;
    let mut rows = Vec::new();
    for (i, channel) in scenarios[0].channels.iter().enumerate() {
        rows.push((
            channel.channel.clone(),
            scenarios
                .iter()
                .map(|s| {
                    s.channels.get(i).map_or("-".into(), |c| {
                        format!("{} {}", amount_cell(&c.contribution), c.last_decision)
                    })
                })
                .collect(),
        ));
    }
    rows.push(("total".into(), scenarios.iter().map(|s| amount_cell(&s.total_contribution)).collect()));
    section(
        &mut out,
        &format!("Contribution over the history ({currency}), and the last week's decision"),
        scenarios,
        &rows,
    );

    let mut rows = Vec::new();
    for row in &scenarios[0].weeks {
        rows.push((
            format!("{} {}", row.week, row.channel),
            scenarios
                .iter()
                .map(|s| {
                    s.weeks
                        .iter()
                        .find(|w| w.week == row.week && w.channel == row.channel)
                        .map_or("-".into(), |w| format!("{} {}", amount_cell(&w.contribution), w.decision))
                })
                .collect(),
        ));
    }
    section(&mut out, &format!("Weekly contribution ({currency}) and decision"), scenarios, &rows);

    for s in scenarios.iter().skip(1) {
        if !s.availability.most_affected_skus.is_empty() {
            let _ = writeln!(out, "\nMost affected SKUs, {}:", s.name);
            let _ = writeln!(
                out,
                "  {:<16} {:>10} {:>14} {:>16}",
                "sku", "decisions", "final units", "scarcity hours"
            );
            for sku in &s.availability.most_affected_skus {
                let _ = writeln!(
                    out,
                    "  {:<16} {:>10} {:>+14} {:>+16.1}",
                    sku.sku, sku.decisions_changed, sku.final_available_delta, sku.scarcity_hours_delta
                );
            }
        }
        if let Some(shift) = &s.shift {
            let _ = writeln!(
                out,
                "\nShift, {}: {} units of {} moved to {} ({} could not move: no price on {})",
                s.name, shift.units_shifted, shift.from, shift.to, shift.units_not_shifted, shift.to
            );
        }
        for assumption in &s.assumptions {
            let _ = writeln!(out, "\nAssumed, {}: {}", s.name, wrap(assumption, 100));
        }
    }
    out
}

fn section(out: &mut String, title: &str, scenarios: &[ScenarioAnswer], rows: &[(String, Vec<String>)]) {
    let label = rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0).max(10);
    let widths: Vec<usize> = (0..scenarios.len())
        .map(|i| {
            rows.iter()
                .map(|(_, cells)| cells[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(scenarios[i].name.chars().count())
        })
        .collect();
    let _ = writeln!(out, "\n{title}");
    let mut header = format!("  {:<label$}", "");
    for (s, w) in scenarios.iter().zip(&widths) {
        let _ = write!(header, "  {:>w$}", s.name);
    }
    let _ = writeln!(out, "{}", header.trim_end());
    for (name, cells) in rows {
        let mut line = format!("  {name:<label$}");
        for (cell, w) in cells.iter().zip(&widths) {
            let _ = write!(line, "  {cell:>w$}");
        }
        let _ = writeln!(out, "{line}");
    }
}

fn count_cell(count: Count) -> String {
    if count.delta == 0 { count.value.to_string() } else { format!("{} ({:+})", count.value, count.delta) }
}

/// An amount rounded to the cent, with its change.
pub fn amount_cell(amount: &Amount) -> String {
    let (value, delta) = (cents(amount.value()), amount.delta());
    if delta.is_zero() {
        value
    } else {
        format!("{value} ({}{})", if delta > Decimal::ZERO { "+" } else { "" }, cents(delta))
    }
}

pub fn cents(value: Decimal) -> String {
    let rounded = value.round_dp(2);
    if rounded.is_zero() { "0.00".into() } else { format!("{rounded:.2}") }
}

fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

//! `omnifold-reporter operations`: the operations view as aligned terminal tables, in the
//! style of `show`.

use std::fmt::Write as _;

use crate::operations_view::{OperationsView, age, event_time};
use crate::view::money;

/// The view as text, ending with a newline.
pub fn render_operations_table(view: &OperationsView) -> String {
    let mut out = String::new();
    let scarce = view.scarcity.len();
    let _ = writeln!(
        out,
        "operations at {} UTC (latest event time seen): {} open conflicts ({} critical), {} pages in the last 7 days, {} {} in scarcity",
        event_time(view.now_ms),
        view.open_count(),
        view.critical_open(),
        view.pages.len(),
        scarce,
        if scarce == 1 { "SKU" } else { "SKUs" },
    );
    conflicts(&mut out, view);
    pages(&mut out, view);
    scarcity(&mut out, view);
    to_order(&mut out, view);
    to_move(&mut out, view);
    routing_exceptions(&mut out, view);
    attention(&mut out, view);
    out
}

fn to_order(out: &mut String, view: &OperationsView) {
    let columns = [
        ("sku", false),
        ("units", true),
        ("into", false),
        ("atp", true),
        ("per day", true),
        ("cover", true),
        ("since", false),
    ];
    let rows: Vec<Vec<String>> = view
        .to_order
        .iter()
        .map(|s| {
            let cover = if s.cover_days.is_empty() { "-".to_string() } else { format!("{}d", s.cover_days) };
            let since = event_time(s.decided_at_ms);
            vec![
                s.sku.clone(),
                s.units.to_string(),
                s.location.clone(),
                s.atp.to_string(),
                s.velocity.clone(),
                cover,
                since,
            ]
        })
        .collect();
    section(out, "to order: the coordinator's reorder suggestions for the shared pool", &columns, &rows);
}

fn to_move(out: &mut String, view: &OperationsView) {
    let columns = [
        ("sku", false),
        ("units", true),
        ("from", false),
        ("to", false),
        ("fba atp", true),
        ("per day", true),
        ("cover", true),
        ("since", false),
    ];
    let rows: Vec<Vec<String>> = view
        .to_move
        .iter()
        .map(|s| {
            let cover = if s.cover_days.is_empty() { "-".to_string() } else { format!("{}d", s.cover_days) };
            vec![
                s.sku.clone(),
                s.units.to_string(),
                s.from_location.clone(),
                s.location.clone(),
                s.atp.to_string(),
                s.velocity.clone(),
                cover,
                event_time(s.decided_at_ms),
            ]
        })
        .collect();
    section(out, "to move into FBA: the coordinator's transfer suggestions", &columns, &rows);
}

fn routing_exceptions(out: &mut String, view: &OperationsView) {
    let columns = [
        ("at", false),
        ("line", false),
        ("sku", false),
        ("units", true),
        ("advised", false),
        ("what", false),
    ];
    let rows: Vec<Vec<String>> = view
        .routing_exceptions
        .iter()
        .map(|x| {
            let what = if x.shipped_from.is_empty() {
                "split: no ship_from location covers it".to_string()
            } else {
                format!("shipped from {}", x.shipped_from)
            };
            let line = format!("{}/{}/{}", x.channel, x.order_id, x.line_id);
            vec![event_time(x.at_ms), line, x.sku.clone(), x.quantity.to_string(), x.advised.clone(), what]
        })
        .collect();
    section(
        out,
        "routing exceptions of the last 7 days (split advice, shipped elsewhere), newest first",
        &columns,
        &rows,
    );
}

/// A titled section: its rows aligned under their columns, or "none".
fn section(out: &mut String, title: &str, columns: &[(&str, bool)], rows: &[Vec<String>]) {
    let _ = writeln!(out, "\n{title}");
    if rows.is_empty() {
        out.push_str("none\n");
    } else {
        out.push_str(&aligned(columns, rows));
    }
}

fn conflicts(out: &mut String, view: &OperationsView) {
    out.push_str("\nopen conflicts, most severe and oldest first\n");
    if view.conflicts.is_empty() {
        out.push_str("none\n");
        return;
    }
    let rows: Vec<Vec<String>> = view
        .conflicts
        .iter()
        .flat_map(|g| &g.rows)
        .map(|r| {
            vec![
                r.kind.clone(),
                r.severity.clone(),
                r.sku.clone(),
                r.subject.clone(),
                age(r.age_ms),
                r.accountable.clone(),
                r.owner.clone(),
                r.action.clone(),
            ]
        })
        .collect();
    let columns = [
        ("kind", false),
        ("severity", false),
        ("sku", false),
        ("pool or channel", false),
        ("age", true),
        ("accountable", false),
        ("owner", false),
        ("recommended action", false),
    ];
    out.push_str(&aligned(&columns, &rows));
}

fn pages(out: &mut String, view: &OperationsView) {
    out.push_str("\npages of the last 7 days, by rule and target\n");
    if view.page_groups.is_empty() {
        out.push_str("none\n");
        return;
    }
    let rows: Vec<Vec<String>> = view
        .page_groups
        .iter()
        .map(|g| {
            vec![
                g.rule.clone(),
                g.target.clone(),
                g.owner.clone(),
                g.on_call.clone(),
                g.count.to_string(),
                event_time(g.latest_ms),
                g.latest_summary.clone(),
            ]
        })
        .collect();
    let columns = [
        ("rule", false),
        ("target", false),
        ("owner", false),
        ("on-call", false),
        ("pages", true),
        ("latest", false),
        ("latest summary", false),
    ];
    out.push_str(&aligned(&columns, &rows));
}

fn scarcity(out: &mut String, view: &OperationsView) {
    out.push_str("\nSKUs in scarcity mode, every channel's published number\n");
    if view.scarcity.is_empty() {
        out.push_str("none\n");
        return;
    }
    let mut columns: Vec<(&str, bool)> = vec![("sku", false), ("decided", false), ("rule", false)];
    columns.extend(view.scarcity_channels.iter().map(|c| (c.as_str(), true)));
    let rows: Vec<Vec<String>> = view
        .scarcity
        .iter()
        .map(|s| {
            let mut row = vec![s.sku.clone(), event_time(s.decided_at_ms), s.rule.clone()];
            row.extend(s.numbers.iter().map(|n| n.map_or_else(|| "-".to_string(), |n| n.to_string())));
            row
        })
        .collect();
    out.push_str(&aligned(&columns, &rows));
}

fn attention(out: &mut String, view: &OperationsView) {
    let week = match &view.week {
        Some(week) => format!("contribution of {week} in {}", view.currency),
        None => "no week published yet".to_string(),
    };
    let _ = writeln!(
        out,
        "\nattention of the last 7 days (alerts and pages accountable) beside contribution ({week})"
    );
    let rows: Vec<Vec<String>> = view
        .attention
        .iter()
        .map(|a| {
            vec![
                a.party.clone(),
                a.owner.clone(),
                a.open.to_string(),
                a.alerts.to_string(),
                a.critical.to_string(),
                a.pages.to_string(),
                a.attention.to_string(),
                a.contribution.map_or_else(|| "-".to_string(), money),
                a.decision.clone().unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    let columns = [
        ("channel", false),
        ("owner", false),
        ("open", true),
        ("alerts", true),
        ("critical", true),
        ("pages", true),
        ("attention", true),
        ("contribution", true),
        ("decision", false),
    ];
    out.push_str(&aligned(&columns, &rows));
}

/// Rows under a header and a rule, each column as wide as its widest cell; numeric columns
/// right-aligned. Trailing spaces are trimmed.
pub fn aligned(columns: &[(&str, bool)], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = columns.iter().map(|(h, _)| h.to_string()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| std::iter::once(&header).chain(rows).map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(columns)
            .map(
                |((cell, width), (_, numeric))| {
                    if *numeric { format!("{cell:>width$}") } else { format!("{cell:<width$}") }
                },
            )
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(out, "{}", rule.join("  "));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations_view::tests::view;

    #[test]
    fn prints_every_section_exactly() {
        let table = render_operations_table(&view());
        let expected = "\
operations at 2026-11-12 02:00 UTC (latest event time seen): 6 open conflicts (4 critical), 5 pages in the last 7 days, 1 SKU in scarcity

open conflicts, most severe and oldest first
kind                 severity  sku    pool or channel           age  accountable  owner           recommended action
-------------------  --------  -----  ---------------------  ------  -----------  --------------  ---------------------------------------------------------------------------
PRICE_BELOW_FLOOR    CRITICAL  SKU-1  channel amazon          3d 2h  amazon       Luis Ortega     Luis Ortega to raise amazon's price of SKU-1 back above its margin floor
OVERSELL             CRITICAL  SKU-4  pool shared             2d 2h  shopify      Maya Chen       Maya Chen to stop shopify selling past its allocation of SKU-4
OVERSELL             CRITICAL  SKU-9  pool shared             1d 2h  operations   Priya Raman     Priya Raman to recount or replenish the shared pool of SKU-9
MAP_VIOLATION        CRITICAL  SKU-1  channel amazon          1d 2h  amazon       Luis Ortega     Luis Ortega to bring amazon's price of SKU-1 back up to MAP
LOW_COVER            WARNING   SKU-4  pool shared            2d 23h  operations   Priya Raman     Priya Raman to replenish the shared pool of SKU-4
COMPETITOR_UNDERCUT  INFO      SKU-3  eu-market vs bargains   2d 2h  eu-market    Sophie Laurent  Sophie Laurent to review eu-market's price of SKU-3 against its competitors

pages of the last 7 days, by rule and target
rule            target   owner        on-call            pages  latest            latest summary
--------------  -------  -----------  -----------------  -----  ----------------  ----------------------------------------------------
CRITICAL_ALERT  shopify  Maya Chen    pd-dtc-storefront      1  2026-11-10 00:00  critical_alert/oversell/SKU-4/pool=shared/o2 summary
CRITICAL_ALERT  amazon   Luis Ortega  pd-marketplaces        1  2026-11-11 00:00  critical_alert/map_violation/SKU-1/amazon/p1 summary
CRITICAL_ALERT  global   Priya Raman  pd-operations          1  2026-11-11 00:00  critical_alert/oversell/SKU-9/pool=shared/c1 summary
ORDER_SPIKE     shopify  Maya Chen    pd-dtc-storefront      1  2026-11-11 01:00  order_spike/shopify/SKU-4/o9 summary
STOCK_DROP      global   Priya Raman  pd-operations          1  2026-11-11 00:00  stock_drop/SKU-9/wh-nj/c1 summary

SKUs in scarcity mode, every channel's published number
sku    decided           rule          shopify  amazon  eu-market  wholesale
-----  ----------------  ------------  -------  ------  ---------  ---------
SKU-4  2026-11-12 02:00  proportional        3       2          -          0

to order: the coordinator's reorder suggestions for the shared pool
sku    units  into   atp  per day  cover  since
-----  -----  -----  ---  -------  -----  ----------------
SKU-4     48  wh-nj   10        2     5d  2026-11-10 00:00

to move into FBA: the coordinator's transfer suggestions
sku    units  from   to      fba atp  per day  cover  since
-----  -----  -----  ------  -------  -------  -----  ----------------
SKU-1     16  wh-nj  fba-us       10        2     5d  2026-11-11 00:00

routing exceptions of the last 7 days (split advice, shipped elsewhere), newest first
at                line          sku    units  advised  what
----------------  ------------  -----  -----  -------  --------------------------------------
2026-11-11 00:00  shopify/o7/1  SKU-4      5  wh-nj    shipped from 3pl-rotterdam
2026-11-10 00:00  shopify/o8/1  SKU-4      5  wh-nj    split: no ship_from location covers it

attention of the last 7 days (alerts and pages accountable) beside contribution (contribution of 2026-W46 in USD)
channel     owner           open  alerts  critical  pages  attention  contribution  decision
----------  --------------  ----  ------  --------  -----  ---------  ------------  --------
shopify     Maya Chen          1       2         1      2          4      1,200.50  FIX
amazon      Luis Ortega        2       3         3      1          4       -300.00  FIX
eu-market   Sophie Laurent     1       1         0      0          1             -  -
wholesale   Dev Patel          0       0         0      0          0        800.00  KEEP
operations  Priya Raman        2       2         1      2          4             -  -
";
        assert_eq!(table, expected, "\n{table}");
    }
}

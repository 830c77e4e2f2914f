//! The channel handover as one self-contained HTML page (the weekly page's style, no script)
//! and as Markdown with the same sections, for a wiki or a ticket.

use std::fmt::Write as _;

use crate::handover::{HandoverView, WeekFigures};
use crate::operations::SourceCount;
use crate::operations_page::{
    close_page, conflict_row, conflicts_head, open_page, page_groups_table, page_list,
};
use crate::operations_view::{age, event_time};
use crate::page::{escape, exact, section, sign_class};
use crate::view::{money, percent};

/// The page.
pub fn render_handover_page(view: &HandoverView) -> String {
    let mut out = String::with_capacity(32 * 1024);
    open_page(&mut out, &format!("Handover of {}", view.channel), None);
    let _ = write!(
        out,
        "<header><h1>Handover: {name} <span id=\"channel\">({id})</span></h1>\n\
         <p class=\"sub\">owner {owner} &middot; on-call {on_call} &middot; as of {now} UTC, the latest event time seen</p></header>\n",
        name = escape(&view.name),
        id = escape(&view.channel),
        owner = escape(&view.owner),
        on_call = escape(&view.on_call),
        now = event_time(view.now_ms),
    );
    cards(&mut out, view);
    section(&mut out, "rules", "Rules from the contract", &rules(view));
    section(&mut out, "weeks", "Last 8 weeks: figures and decisions", &weeks(view));
    section(&mut out, "conflicts", "Open conflicts", &conflicts(view));
    section(&mut out, "pages", "Pages of the last 7 days", &pages(view));
    out.push_str("<div class=\"two\">");
    let span = ledger_span(view);
    section(
        &mut out,
        "top-contribution",
        &format!("Top SKUs by contribution ({})", escape(&span)),
        &top_contribution(view),
    );
    section(&mut out, "top-conflicts", "Top SKUs by conflicts (8 weeks)", &top_conflicts(view));
    out.push_str("</div>\n");
    section(&mut out, "sources", "Where its events come from", &sources(view));
    close_page(
        &mut out,
        "Rules from the coordination contract; weeks from <code>omnifold.snapshots.v1</code>; conflicts, pages, \
         SKU contribution (<code>omnifold.ledger.v1</code>, before operating cost) and event sources \
         (<code>omnifold.events.v1</code>, told by event id) from the reporter's operations store.",
    );
    out
}

fn ledger_span(view: &HandoverView) -> String {
    match (view.ledger_weeks.first(), view.ledger_weeks.last()) {
        (Some(first), Some(last)) if first != last => format!("{first} to {last}"),
        (Some(only), _) => only.clone(),
        _ => "no ledger yet".to_string(),
    }
}

fn cards(out: &mut String, view: &HandoverView) {
    let latest = view.weeks.first();
    let contribution = latest.map(|w| w.row.contribution);
    let cards = [
        (
            "contribution",
            format!("Contribution {}", week_of(view)),
            contribution.map_or_else(|| "-".to_string(), money),
            contribution.map_or("", sign_class),
        ),
        (
            "decision",
            "Decision".to_string(),
            latest.map_or_else(
                || "-".to_string(),
                |w| format!("<span class=\"badge {d}\">{d}</span>", d = escape(&w.row.decision)),
            ),
            "",
        ),
        ("open", "Open conflicts".to_string(), view.conflicts.len().to_string(), ""),
        ("pages", "Pages, last 7 days".to_string(), view.pages.len().to_string(), ""),
    ];
    out.push_str("<div class=\"cards\">");
    for (id, label, value, class) in cards {
        let _ = write!(
            out,
            "<div class=\"card\" id=\"card-{id}\"><div class=\"label\">{label}</div><div class=\"value {class}\">{value}</div></div>"
        );
    }
    out.push_str("</div>\n");
}

/// The label of the latest published week, e.g. `2026-W47`.
fn week_of(view: &HandoverView) -> String {
    view.weeks.first().map(|w| w.week.clone()).unwrap_or_default()
}

fn rules(view: &HandoverView) -> String {
    let mut html = String::from("<dl class=\"rules\">\n");
    for line in &view.rules {
        let _ = writeln!(
            html,
            "<dt>{}</dt><dd data-rule=\"{}\">{}</dd>",
            escape(&line.label),
            escape(&line.label),
            escape(&line.value)
        );
    }
    html.push_str("</dl>\n");
    html
}

fn weeks(view: &HandoverView) -> String {
    if view.weeks.is_empty() {
        return "<p id=\"no-weeks\">No week of this channel has been published yet.</p>\n".to_string();
    }
    let mut html = String::from(
        "<div class=\"scroll\"><table id=\"weeks-table\"><thead><tr><th>week</th><th class=\"num\">net rev.</th>\
         <th class=\"num\">op. cost</th><th class=\"num\">contribution</th><th class=\"num\">margin</th>\
         <th class=\"num\">rev. share</th><th class=\"num\">cost share</th><th class=\"num\">orders</th>\
         <th class=\"num\">units</th><th class=\"num\" title=\"critical alerts accountable\">critical</th>\
         <th>decision</th><th>next action</th></tr></thead>\n<tbody>\n",
    );
    for WeekFigures { week, row: w } in &view.weeks {
        let revision =
            if w.revision > 1 { format!(" <small>(revision {})</small>", w.revision) } else { String::new() };
        let _ = writeln!(
            html,
            "<tr data-week=\"{week}\"><td>{week}{revision}</td><td class=\"num\" data-field=\"net_revenue\" data-value=\"{}\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num {}\" data-field=\"contribution\" data-value=\"{}\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td><span class=\"badge {d}\">{d}</span></td>\
             <td class=\"wrap next-action\">{}</td></tr>",
            exact(w.net_revenue),
            money(w.net_revenue),
            money(w.operating_cost),
            sign_class(w.contribution),
            exact(w.contribution),
            money(w.contribution),
            percent(w.contribution_margin),
            percent(w.revenue_share),
            percent(w.operating_cost_share),
            w.orders_shipped,
            w.units_shipped,
            w.critical_alerts,
            escape(&w.next_action),
            week = escape(week),
            d = escape(&w.decision),
        );
    }
    html.push_str("</tbody></table></div>\n");
    html
}

fn conflicts(view: &HandoverView) -> String {
    if view.conflicts.is_empty() {
        return "<p id=\"no-conflicts\">No open conflict names this channel.</p>\n".to_string();
    }
    let mut html = conflicts_head("conflicts-table");
    html.push_str("<tbody>\n");
    for row in &view.conflicts {
        html.push_str(&conflict_row(row));
    }
    html.push_str("</tbody></table></div>\n");
    html
}

fn pages(view: &HandoverView) -> String {
    if view.pages.is_empty() {
        return "<p id=\"no-pages\">The channel was not paged in the last 7 days.</p>\n".to_string();
    }
    let mut html = page_groups_table(&view.page_groups);
    html.push_str(&page_list(&view.pages));
    html
}

fn top_contribution(view: &HandoverView) -> String {
    if view.top_contribution.is_empty() {
        return "<p id=\"no-contribution\">No shipment or return in the ledger weeks kept.</p>\n".to_string();
    }
    let mut html = format!(
        "<table id=\"top-contribution\"><thead><tr><th>sku</th><th class=\"num\">contribution ({c})</th>\
         <th class=\"num\">net rev.</th><th class=\"num\">units</th></tr></thead>\n<tbody>\n",
        c = escape(&view.reporting_currency)
    );
    for s in &view.top_contribution {
        let _ = writeln!(
            html,
            "<tr data-sku=\"{sku}\"><td>{sku}</td><td class=\"num {}\" data-field=\"contribution\" data-value=\"{}\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            sign_class(s.contribution),
            exact(s.contribution),
            money(s.contribution),
            money(s.net_revenue),
            s.units,
            sku = escape(&s.sku),
        );
    }
    let _ = writeln!(
        html,
        "</tbody></table>\n<p><small>{} of {} SKUs with money in the ledger</small></p>",
        view.top_contribution.len(),
        view.skus_with_money
    );
    html
}

fn top_conflicts(view: &HandoverView) -> String {
    if view.top_conflicts.is_empty() {
        return "<p id=\"no-sku-conflicts\">No alert named this channel in 8 weeks.</p>\n".to_string();
    }
    let mut html = String::from(
        "<table id=\"top-conflicts\"><thead><tr><th>sku</th><th class=\"num\">alerts</th>\
         <th class=\"num\" title=\"accountable to the channel\">its own</th><th class=\"num\">critical</th><th>kinds</th></tr></thead>\n<tbody>\n",
    );
    for s in &view.top_conflicts {
        let _ = writeln!(
            html,
            "<tr data-sku=\"{sku}\" data-alerts=\"{}\"><td>{sku}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"wrap\">{}</td></tr>",
            s.alerts,
            s.alerts,
            s.accountable,
            s.critical,
            escape(&s.kinds.join(", ")),
            sku = escape(&s.sku),
        );
    }
    html.push_str("</tbody></table>\n");
    html
}

fn sources(view: &HandoverView) -> String {
    let mut html = String::new();
    if view.sources.is_empty() {
        html.push_str("<p id=\"no-sources\">No event of this channel is in the event log yet.</p>\n");
    } else {
        html.push_str(&sources_table("sources-table", &view.sources));
    }
    if !view.shared_sources.is_empty() {
        html.push_str("<p>Events of no one channel (stock at shared locations, unit costs for every channel) come from:</p>\n");
        html.push_str(&sources_table("shared-sources-table", &view.shared_sources));
    }
    html.push_str(
        "<p><small>Events carry no source header: the connector and adapter are told by the form of the event id \
         each adapter derives; any other id came through the generic NDJSON connector.</small></p>\n",
    );
    html
}

fn sources_table(id: &str, sources: &[SourceCount]) -> String {
    let mut html = format!(
        "<div class=\"scroll\"><table id=\"{id}\"><thead><tr><th>connector</th><th>adapter</th><th class=\"num\">events</th>\
         <th>first (UTC)</th><th>last (UTC)</th><th>last event id</th></tr></thead>\n<tbody>\n"
    );
    for s in sources {
        let _ = writeln!(
            html,
            "<tr data-connector=\"{c}\" data-adapter=\"{a}\" data-events=\"{n}\"><td>{c}</td><td>{a}</td><td class=\"num\">{n}</td>\
             <td>{}</td><td>{}</td><td class=\"wrap\"><code>{}</code></td></tr>",
            event_time(s.first_ms),
            event_time(s.last_ms),
            escape(&s.last_event_id),
            c = escape(&s.connector),
            a = escape(&s.adapter),
            n = s.events,
        );
    }
    html.push_str("</tbody></table></div>\n");
    html
}

/// The same handover as Markdown (GitHub tables).
pub fn render_handover_markdown(view: &HandoverView) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Handover: {} ({})\n", view.name, view.channel);
    let _ = writeln!(
        md,
        "Owner {}, on-call {}; as of {} UTC, the latest event time seen.\n",
        view.owner,
        view.on_call,
        event_time(view.now_ms)
    );
    md.push_str("## Rules from the contract\n\n");
    for line in &view.rules {
        let _ = writeln!(md, "- **{}**: {}", line.label, line.value);
    }
    md.push_str("\n## Last 8 weeks: figures and decisions\n\n");
    let weeks: Vec<Vec<String>> = view
        .weeks
        .iter()
        .map(|WeekFigures { week, row: w }| {
            vec![
                week.clone(),
                money(w.net_revenue),
                money(w.operating_cost),
                money(w.contribution),
                percent(w.contribution_margin),
                w.critical_alerts.to_string(),
                w.decision.clone(),
                w.next_action.clone(),
            ]
        })
        .collect();
    let columns =
        ["week", "net revenue", "op. cost", "contribution", "margin", "critical", "decision", "next action"];
    md.push_str(&table(
        &columns,
        &[1, 2, 3, 4, 5],
        &weeks,
        "No week of this channel has been published yet.",
    ));
    md.push_str("\n## Open conflicts\n\n");
    let conflicts: Vec<Vec<String>> = view
        .conflicts
        .iter()
        .map(|r| {
            vec![
                r.kind.clone(),
                r.severity.clone(),
                r.sku.clone(),
                r.subject.clone(),
                age(r.age_ms),
                r.accountable.clone(),
                r.action.clone(),
            ]
        })
        .collect();
    let columns = ["kind", "severity", "sku", "pool or channel", "age", "accountable", "recommended action"];
    md.push_str(&table(&columns, &[4], &conflicts, "No open conflict names this channel."));
    md.push_str("\n## Pages of the last 7 days\n\n");
    let pages: Vec<Vec<String>> =
        view.pages.iter().map(|p| vec![event_time(p.at_ms), p.rule.clone(), p.summary.clone()]).collect();
    md.push_str(&table(
        &["time (UTC)", "rule", "summary"],
        &[],
        &pages,
        "The channel was not paged in the last 7 days.",
    ));
    let _ =
        writeln!(md, "\n## Top SKUs by contribution ({}, {})\n", ledger_span(view), view.reporting_currency);
    let money_rows: Vec<Vec<String>> = view
        .top_contribution
        .iter()
        .map(|s| vec![s.sku.clone(), money(s.contribution), money(s.net_revenue), s.units.to_string()])
        .collect();
    md.push_str(&table(
        &["sku", "contribution", "net revenue", "units"],
        &[1, 2, 3],
        &money_rows,
        "No shipment or return in the ledger weeks kept.",
    ));
    md.push_str("\n## Top SKUs by conflicts (8 weeks)\n\n");
    let conflict_rows: Vec<Vec<String>> = view
        .top_conflicts
        .iter()
        .map(|s| {
            vec![
                s.sku.clone(),
                s.alerts.to_string(),
                s.accountable.to_string(),
                s.critical.to_string(),
                s.kinds.join(", "),
            ]
        })
        .collect();
    md.push_str(&table(
        &["sku", "alerts", "its own", "critical", "kinds"],
        &[1, 2, 3],
        &conflict_rows,
        "No alert named this channel in 8 weeks.",
    ));
    md.push_str("\n## Where its events come from\n\n");
    let source_rows = |sources: &[SourceCount]| -> Vec<Vec<String>> {
        sources
            .iter()
            .map(|s| {
                vec![
                    s.connector.clone(),
                    s.adapter.clone(),
                    s.events.to_string(),
                    event_time(s.first_ms),
                    event_time(s.last_ms),
                    format!("`{}`", s.last_event_id),
                ]
            })
            .collect()
    };
    let columns = ["connector", "adapter", "events", "first (UTC)", "last (UTC)", "last event id"];
    md.push_str(&table(
        &columns,
        &[2],
        &source_rows(&view.sources),
        "No event of this channel is in the event log yet.",
    ));
    if !view.shared_sources.is_empty() {
        md.push_str("\nEvents of no one channel (stock at shared locations, unit costs for every channel) come from:\n\n");
        md.push_str(&table(&columns, &[2], &source_rows(&view.shared_sources), ""));
    }
    md
}

/// A GitHub table, or `empty` as a sentence when there are no rows.
fn table(columns: &[&str], numeric: &[usize], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("{empty}\n");
    }
    let cell = |text: &str| text.replace('|', "\\|");
    let mut md = format!("| {} |\n|", columns.join(" | "));
    for i in 0..columns.len() {
        md.push_str(if numeric.contains(&i) { " ---: |" } else { " --- |" });
    }
    md.push('\n');
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        let _ = writeln!(md, "| {} |", cells.join(" | "));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handover::tests::view;

    #[test]
    fn the_page_is_self_contained_and_carries_the_handover() {
        let page = render_handover_page(&view());
        for external in ["http://", "https://", "<script", "<link", "src=", "http-equiv"] {
            assert!(!page.contains(external), "the page refers to {external}");
        }
        for expected in [
            "<h1>Handover: Amazon US (FBA + MFN) <span id=\"channel\">(amazon)</span></h1>",
            "<dd data-rule=\"pool\">sells from the shared pool (wh-nj, 3pl-rotterdam); its own pool: fba-us</dd>",
            "<tr data-week=\"2026-W46\"><td>2026-W46</td>",
            "data-field=\"contribution\" data-value=\"-110\">-110.00</td>",
            "Luis Ortega to act on 2026-W39.",
            "data-alert-id=\"map_violation/SKU-1/amazon/p1\"",
            "<tr data-sku=\"SKU-1\"><td>SKU-1</td><td class=\"num pos\" data-field=\"contribution\" data-value=\"55.5\">55.50</td>",
            "<tr data-sku=\"SKU-1\" data-alerts=\"2\">",
            "Top SKUs by contribution (2026-W46)",
            "<p id=\"no-sources\">",
        ] {
            assert!(page.contains(expected), "the page lacks {expected}");
        }
        assert!(!page.contains("Luis Ortega to act on 2026-W38."), "eight weeks only");
    }

    #[test]
    fn the_markdown_has_the_same_sections() {
        let md = render_handover_markdown(&view());
        assert!(md.starts_with("# Handover: Amazon US (FBA + MFN) (amazon)\n\nOwner Luis Ortega, on-call pd-marketplaces; as of 2026-11-12 02:00 UTC"), "{md}");
        assert!(md.contains("- **priority**: 2 (2 of 4 under scarcity; lower is served first)\n"));
        assert!(md.contains("| week | net revenue | op. cost | contribution | margin | critical | decision | next action |\n| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |\n| 2026-W46 | 1,000.00 | 0.00 | 100.00 | - | 0 | KEEP | Luis Ortega to act on 2026-W46. |\n"), "{md}");
        assert!(md.contains("| PRICE_BELOW_FLOOR | CRITICAL | SKU-1 | channel amazon | 3d 2h | amazon | Luis Ortega to raise amazon's price of SKU-1 back above its margin floor |\n"), "{md}");
        assert!(md.contains("| SKU-1 | 55.50 | 55.50 | 2 |\n"), "{md}");
        assert!(md.contains("| SKU-1 | 2 | 2 | 2 | MAP_VIOLATION, PRICE_BELOW_FLOOR |\n"), "{md}");
        assert!(md.contains("No event of this channel is in the event log yet.\n"), "{md}");
        assert_eq!(table(&["a"], &[], &[vec!["x|y".into()]], ""), "| a |\n| --- |\n| x\\|y |\n");
    }
}

//! The operations view as one self-contained HTML page (inline CSS and SVG, no script), in
//! the weekly page's style (`page.rs`): served by `serve` at `/operations`, written by
//! `operations --out FILE`.
//!
//! Read from top to bottom it answers: what is broken now and who fixes it, who was woken
//! up this week, which SKUs are rationed, and which channel helps and which consumes
//! attention. Figures sit in `data-` attributes, so the page can be checked mechanically.

use std::fmt::Write as _;

use rust_decimal::Decimal;

use crate::operations::{Page, Suggestion};
use crate::operations_view::{ConflictRow, OperationsView, PageGroup, age, event_time};
use crate::page::{STYLE, escape, exact, float, section, sign_class};
use crate::view::money;

/// What the operations and handover pages add to the weekly page's style: severity badges
/// and text columns that wrap, so that wide tables still fit a 1280 px screen.
pub(crate) const EXTRA_STYLE: &str = "
.CRITICAL{background:#fed7d7;color:#822727}.WARNING{background:#feebc8;color:#7b341e}.INFO{background:#e2e8f0;color:#2d3748}
td.wrap{white-space:normal;min-width:160px}
tr.group th{background:#edf2f7;color:#1a202c;font-size:13px}
nav{margin:0 0 12px;font-size:13px}nav a{color:#2b6cb0;margin-right:14px}
details summary{cursor:pointer;color:#4a5568;margin:10px 0 6px}
dl.rules{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:0;font-size:14px}
dl.rules dt{color:#4a5568}dl.rules dd{margin:0}
.two{display:grid;grid-template-columns:1fr 1fr;gap:18px;margin:0 0 18px}.two section{margin:0}
@media (max-width:900px){.two{grid-template-columns:1fr}}
";
const ATTENTION: &str = "#dd6b20";

/// The start of a page: doctype, head with both styles, `<main>`. A served page refreshes
/// itself, since the records behind it keep arriving.
pub(crate) fn open_page(out: &mut String, title: &str, refresh_seconds: Option<u32>) {
    let refresh = refresh_seconds
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">\n"))
        .unwrap_or_default();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n{refresh}\
         <title>{}</title>\n<style>{STYLE}{EXTRA_STYLE}</style>\n</head>\n<body>\n<main>\n",
        escape(title)
    );
}

pub(crate) fn close_page(out: &mut String, footer: &str) {
    let _ = write!(out, "<footer>{footer}</footer>\n</main>\n</body>\n</html>\n");
}

/// The whole page; `served` adds the link back to the weekly page and a refresh.
pub fn render_operations_page(view: &OperationsView, served: bool) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let now = event_time(view.now_ms);
    open_page(&mut out, &format!("Operations, {now} UTC"), served.then_some(30));
    if served {
        out.push_str(
            "<nav><a href=\"/\">Weekly contribution</a><a href=\"/operations\">Operations</a></nav>\n",
        );
    }
    let _ = write!(
        out,
        "<header><h1>Operations <span id=\"now\" data-now-ms=\"{}\">{}</span></h1>\n\
         <p class=\"sub\">as of the latest event time seen, UTC &middot; ages in event time &middot; pages of the last 7 days</p></header>\n",
        view.now_ms,
        escape(&now)
    );
    cards(&mut out, view);
    section(&mut out, "conflicts", "Open conflicts, most severe and oldest first", &conflicts(view));
    section(&mut out, "pages", "Pages of the last 7 days, by rule and target", &pages(view));
    section(&mut out, "scarcity", "SKUs in scarcity mode", &scarcity(view));
    section(&mut out, "to-order", "To order (shared pool)", &to_order(view));
    section(&mut out, "to-move", "To move into FBA", &to_move(view));
    section(
        &mut out,
        "routing-exceptions",
        "Routing exceptions of the last 7 days",
        &routing_exceptions(view),
    );
    let title = match &view.week {
        Some(week) => format!("Attention beside contribution ({}, {})", escape(week), escape(&view.currency)),
        None => "Attention beside contribution".to_string(),
    };
    section(&mut out, "attention", &title, &attention(view));
    close_page(
        &mut out,
        "Built from <code>omnifold.alerts.v1</code>, <code>omnifold.escalations.v1</code> and \
         <code>omnifold.availability.v1</code> as kept in the reporter's operations store, owners and \
         on-call from the coordination contract, contributions from <code>omnifold.snapshots.v1</code>.",
    );
    out
}

fn cards(out: &mut String, view: &OperationsView) {
    let attention: usize = view.attention.iter().map(|a| a.attention).sum();
    let cards = [
        (
            "open",
            "Open conflicts",
            format!("{} <small>({} critical)</small>", view.open_count(), view.critical_open()),
        ),
        ("pages", "Pages, last 7 days", view.pages.len().to_string()),
        ("scarcity", "SKUs in scarcity", view.scarcity.len().to_string()),
        ("attention", "Alerts + pages, last 7 days", attention.to_string()),
    ];
    out.push_str("<div class=\"cards\">");
    for (id, label, value) in cards {
        let _ = write!(
            out,
            "<div class=\"card\" id=\"card-{id}\"><div class=\"label\">{label}</div><div class=\"value\">{value}</div></div>"
        );
    }
    out.push_str("</div>\n");
}

fn conflicts(view: &OperationsView) -> String {
    if view.conflicts.is_empty() {
        return "<p id=\"no-conflicts\">No conflict is open.</p>\n".to_string();
    }
    let mut html = conflicts_head("conflicts-table");
    for group in &view.conflicts {
        let _ = writeln!(
            html,
            "<tbody data-kind=\"{kind}\"><tr class=\"group\"><th colspan=\"7\">{kind} &middot; {}</th></tr>",
            group.rows.len(),
            kind = escape(&group.kind),
        );
        for row in &group.rows {
            html.push_str(&conflict_row(row));
        }
        html.push_str("</tbody>\n");
    }
    html.push_str("</table></div>\n");
    html
}

pub(crate) fn conflicts_head(id: &str) -> String {
    format!(
        "<div class=\"scroll\"><table id=\"{id}\"><thead><tr><th>severity</th><th>sku</th><th>pool or channel</th>\
         <th class=\"num\">age</th><th>accountable</th><th>owner</th><th>recommended action</th></tr></thead>\n"
    )
}

/// One open conflict; the summary and id ride in the title.
pub(crate) fn conflict_row(row: &ConflictRow) -> String {
    format!(
        "<tr data-alert-id=\"{id}\" data-kind=\"{kind}\" data-sku=\"{sku}\" data-accountable=\"{accountable}\" data-age-ms=\"{age_ms}\" title=\"{summary}\">\
         <td><span class=\"badge {severity}\">{severity}</span></td><td>{sku}</td><td class=\"wrap\">{subject}</td>\
         <td class=\"num\" title=\"raised {raised} UTC\">{age}</td><td>{accountable}</td>\
         <td title=\"on-call {on_call}\">{owner}</td><td class=\"wrap\">{action}</td></tr>\n",
        id = escape(&row.alert_id),
        kind = escape(&row.kind),
        sku = escape(&row.sku),
        accountable = escape(&row.accountable),
        age_ms = row.age_ms,
        summary = escape(&row.summary),
        severity = escape(&row.severity),
        subject = escape(&row.subject),
        raised = event_time(row.raised_at_ms),
        age = age(row.age_ms),
        on_call = escape(&row.on_call),
        owner = escape(&row.owner),
        action = escape(&row.action),
    )
}

fn pages(view: &OperationsView) -> String {
    if view.page_groups.is_empty() {
        return "<p id=\"no-pages\">Nobody was paged in the last 7 days.</p>\n".to_string();
    }
    let mut html = page_groups_table(&view.page_groups);
    html.push_str(&page_list(&view.pages));
    html
}

pub(crate) fn page_groups_table(groups: &[PageGroup]) -> String {
    let mut html = String::from(
        "<div class=\"scroll\"><table id=\"pages-table\"><thead><tr><th>rule</th><th>target</th><th>owner</th>\
         <th>on-call</th><th class=\"num\">pages</th><th>latest (UTC)</th><th>latest summary</th></tr></thead>\n<tbody>\n",
    );
    for group in groups {
        let _ = writeln!(
            html,
            "<tr data-rule=\"{rule}\" data-target=\"{target}\" data-count=\"{count}\"><td>{rule}</td><td>{target}</td>\
             <td>{owner}</td><td>{on_call}</td><td class=\"num\">{count}</td><td>{latest}</td><td class=\"wrap\">{summary}</td></tr>",
            rule = escape(&group.rule),
            target = escape(&group.target),
            count = group.count,
            owner = escape(&group.owner),
            on_call = escape(&group.on_call),
            latest = event_time(group.latest_ms),
            summary = escape(&group.latest_summary),
        );
    }
    html.push_str("</tbody></table></div>\n");
    html
}

/// Every page of the window, newest first, folded away.
pub(crate) fn page_list(pages: &[Page]) -> String {
    let mut html = format!(
        "<details><summary>Every page ({})</summary><div class=\"scroll\"><table id=\"page-list\"><thead><tr><th>time (UTC)</th>\
         <th>rule</th><th>target</th><th>summary</th></tr></thead>\n<tbody>\n",
        pages.len()
    );
    for page in pages {
        let _ = writeln!(
            html,
            "<tr data-escalation-id=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"wrap\">{}</td></tr>",
            escape(&page.escalation_id),
            event_time(page.at_ms),
            escape(&page.rule),
            escape(&page.target),
            escape(&page.summary)
        );
    }
    html.push_str("</tbody></table></div></details>\n");
    html
}

fn scarcity(view: &OperationsView) -> String {
    if view.scarcity.is_empty() {
        return "<p id=\"no-scarcity\">No SKU is in scarcity mode.</p>\n".to_string();
    }
    let mut html = String::from(
        "<div class=\"scroll\"><table id=\"scarcity-table\"><thead><tr><th>sku</th><th>decided (UTC)</th><th>rule</th>",
    );
    for channel in &view.scarcity_channels {
        let _ = write!(html, "<th class=\"num\">{}</th>", escape(channel));
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    for sku in &view.scarcity {
        let _ = write!(
            html,
            "<tr data-sku=\"{}\"><td>{}</td><td>{}</td><td>{}</td>",
            escape(&sku.sku),
            escape(&sku.sku),
            event_time(sku.decided_at_ms),
            escape(&sku.rule)
        );
        for (channel, number) in view.scarcity_channels.iter().zip(&sku.numbers) {
            let shown = number.map_or_else(|| "&middot;".to_string(), |n| n.to_string());
            let _ = write!(
                html,
                "<td class=\"num\" data-channel=\"{}\" data-available=\"{}\">{shown}</td>",
                escape(channel),
                number.map(|n| n.to_string()).unwrap_or_default()
            );
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody></table></div>\n");
    html
}

fn cover(days: &str) -> String {
    if days.is_empty() { "&middot;".to_string() } else { format!("{}&nbsp;d", escape(days)) }
}

/// A section's table, or the one line that says it has no row.
fn rows_or_none(none: (&str, &str), head: &str, rows: Vec<String>) -> String {
    let (none_id, none_text) = none;
    if rows.is_empty() {
        return format!("<p id=\"{none_id}\">{none_text}</p>\n");
    }
    let mut html = format!("<div class=\"scroll\">{head}\n<tbody>\n");
    for row in rows {
        html.push_str(&row);
        html.push('\n');
    }
    html.push_str("</tbody></table></div>\n");
    html
}

fn to_order(view: &OperationsView) -> String {
    let head = "<table id=\"to-order-table\"><thead><tr><th>sku</th><th class=\"num\">units</th>\
         <th>into</th><th class=\"num\">atp</th><th class=\"num\">per day</th><th class=\"num\">cover</th><th>since (UTC)</th></tr></thead>";
    let rows = view.to_order.iter().map(|s| suggestion_row(s, &format!("<td>{}</td>", escape(&s.location))));
    rows_or_none(("no-to-order", "Nothing to order."), head, rows.collect())
}

fn to_move(view: &OperationsView) -> String {
    let head = "<table id=\"to-move-table\"><thead><tr><th>sku</th><th class=\"num\">units</th>\
         <th>from</th><th>to</th><th class=\"num\">fba atp</th><th class=\"num\">per day</th><th class=\"num\">cover</th><th>since (UTC)</th></tr></thead>";
    let rows = view.to_move.iter().map(|s| {
        suggestion_row(s, &format!("<td>{}</td><td>{}</td>", escape(&s.from_location), escape(&s.location)))
    });
    rows_or_none(("no-to-move", "Nothing to move into FBA."), head, rows.collect())
}

/// One suggestion's row; `places` are its location cells (where to, or from and to).
fn suggestion_row(s: &Suggestion, places: &str) -> String {
    format!(
        "<tr data-sku=\"{sku}\" data-units=\"{units}\"><td>{sku}</td><td class=\"num\">{units}</td>{places}<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
        s.atp,
        escape(&s.velocity),
        cover(&s.cover_days),
        event_time(s.decided_at_ms),
        sku = escape(&s.sku),
        units = s.units,
    )
}

fn routing_exceptions(view: &OperationsView) -> String {
    let head = "<table id=\"routing-table\"><thead><tr><th>at (UTC)</th><th>line</th><th>sku</th>\
         <th class=\"num\">units</th><th>advised</th><th>what</th></tr></thead>";
    let rows = view.routing_exceptions.iter().map(|x| {
        let what = if x.shipped_from.is_empty() {
            "split: no ship_from location covers it".to_string()
        } else {
            format!("shipped from {}", escape(&x.shipped_from))
        };
        format!(
            "<tr><td>{}</td><td>{}/{}/{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{what}</td></tr>",
            event_time(x.at_ms),
            escape(&x.channel),
            escape(&x.order_id),
            escape(&x.line_id),
            escape(&x.sku),
            x.quantity,
            escape(&x.advised)
        )
    });
    let none = ("no-routing-exceptions", "No routing exception in the last 7 days.");
    rows_or_none(none, head, rows.collect())
}

fn attention(view: &OperationsView) -> String {
    let mut html = String::from(
        "<div class=\"scroll\"><table id=\"attention-table\"><thead><tr><th>channel</th><th>owner</th>\
         <th class=\"num\" title=\"open conflicts accountable\">open</th><th class=\"num\" title=\"alerts raised, accountable\">alerts</th>\
         <th class=\"num\">critical</th><th class=\"num\" title=\"pages to it\">pages</th><th class=\"num\">attention</th>\
         <th class=\"num\">contribution</th><th>decision</th></tr></thead>\n<tbody>\n",
    );
    for a in &view.attention {
        let contribution = match a.contribution {
            Some(value) => format!(
                "<td class=\"num {}\" data-field=\"contribution\" data-value=\"{}\">{}</td>",
                sign_class(value),
                exact(value),
                money(value)
            ),
            None => "<td class=\"num\" data-field=\"contribution\" data-value=\"\">-</td>".to_string(),
        };
        let decision = a
            .decision
            .as_ref()
            .map(|d| format!("<span class=\"badge {d}\">{d}</span>", d = escape(d)))
            .unwrap_or_else(|| "-".to_string());
        let _ = writeln!(
            html,
            "<tr data-channel=\"{party}\"><td><b>{party}</b></td><td>{owner}</td>\
             <td class=\"num\" data-field=\"open\">{}</td><td class=\"num\" data-field=\"alerts\">{}</td>\
             <td class=\"num\" data-field=\"critical\">{}</td><td class=\"num\" data-field=\"pages\">{}</td>\
             <td class=\"num\" data-field=\"attention\">{}</td>{contribution}<td>{decision}</td></tr>",
            a.open,
            a.alerts,
            a.critical,
            a.pages,
            a.attention,
            party = escape(&a.party),
            owner = escape(&a.owner),
        );
    }
    html.push_str("</tbody></table></div>\n");
    html.push_str(&attention_chart(view));
    html
}

/// Per party, its attention (alerts + pages) on the left and its contribution on the right
/// of a shared zero line: a channel with a long left bar and a short or red right one
/// consumes more than it brings.
fn attention_chart(view: &OperationsView) -> String {
    let (label_w, width, row_h) = (110.0, 760.0, 30.0);
    let (mid, half) = (label_w + (width - label_w) / 2.0, (width - label_w) / 2.0 - 70.0);
    let most = view.attention.iter().map(|a| a.attention).max().unwrap_or(0).max(1) as f64;
    let reach = view
        .attention
        .iter()
        .filter_map(|a| a.contribution)
        .map(|c| float(c).abs())
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let height = row_h * view.attention.len() as f64 + 26.0;
    let mut svg = format!(
        "<div class=\"legend\"><span><i style=\"background:{ATTENTION}\"></i>alerts + pages, last 7 days</span>\
         <span><i style=\"background:#2f855a\"></i>contribution</span></div>\n\
         <svg role=\"img\" aria-label=\"attention beside contribution\" viewBox=\"0 0 {width} {height}\" width=\"100%\">\n"
    );
    for (i, a) in view.attention.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let ty = y + row_h / 2.0 + 1.0;
        let w = a.attention as f64 / most * half;
        let _ = write!(
            svg,
            "<g class=\"attention\" data-channel=\"{party}\" data-attention=\"{n}\" data-contribution=\"{c}\">\
             <text x=\"0\" y=\"{ty:.1}\">{party}</text>\
             <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"3\" fill=\"{ATTENTION}\"><title>{party}: {n} alerts and pages</title></rect>\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{n}</text>",
            party = escape(&a.party),
            n = a.attention,
            c = a.contribution.map(exact).unwrap_or_default(),
            x = mid - 4.0 - w,
            h = row_h - 10.0,
            tx = mid - 10.0 - w,
        );
        if let Some(value) = a.contribution {
            let bar = float(value).abs() / reach * half;
            let color = if value < Decimal::ZERO { "#c53030" } else { "#2f855a" };
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" rx=\"3\" fill=\"{color}\"><title>{party}: {m}</title></rect>\
                 <text x=\"{tx:.1}\" y=\"{ty:.1}\">{m}</text>",
                x = mid + 4.0,
                h = row_h - 10.0,
                party = escape(&a.party),
                m = money(value),
                tx = mid + 10.0 + bar,
            );
        }
        svg.push_str("</g>\n");
    }
    let _ = write!(
        svg,
        "<line x1=\"{mid:.1}\" y1=\"0\" x2=\"{mid:.1}\" y2=\"{:.1}\" stroke=\"#718096\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">attention</text><text x=\"{:.1}\" y=\"{:.1}\">contribution</text>\n</svg>\n",
        height - 20.0,
        mid - 8.0,
        height - 6.0,
        mid + 8.0,
        height - 6.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations_view::tests::view;

    #[test]
    fn the_advice_sections_show_a_row_each_or_say_there_is_none() {
        let suggestion = crate::operations::Suggestion {
            sku: "SKU-<1>".into(),
            pool: "shared".into(),
            action: "REORDER".into(),
            units: 48,
            location: "wh-nj".into(),
            from_location: "wh-ca".into(),
            atp: 3,
            velocity: "2".into(),
            cover_days: "1.5".into(),
            reason_event_id: "e1".into(),
            decided_at_ms: 1_794_448_800_000,
        };
        let exception = crate::operations::RoutingException {
            channel: "shopify".into(),
            order_id: "o1".into(),
            line_id: "1".into(),
            sku: "SKU-1".into(),
            quantity: 2,
            advised: "wh-ca".into(),
            split: false,
            shipped_from: "wh-nj".into(),
            at_ms: 1_794_448_800_000,
            reason_event_id: "e2".into(),
        };
        let mut view = view();
        view.to_order = vec![suggestion.clone()];
        view.to_move = vec![crate::operations::Suggestion { cover_days: String::new(), ..suggestion }];
        view.routing_exceptions = vec![
            exception.clone(),
            crate::operations::RoutingException { shipped_from: String::new(), ..exception },
        ];
        assert_eq!(
            to_order(&view),
            "<div class=\"scroll\"><table id=\"to-order-table\"><thead><tr><th>sku</th><th class=\"num\">units</th>\
             <th>into</th><th class=\"num\">atp</th><th class=\"num\">per day</th><th class=\"num\">cover</th><th>since (UTC)</th></tr></thead>\n<tbody>\n\
             <tr data-sku=\"SKU-&lt;1&gt;\" data-units=\"48\"><td>SKU-&lt;1&gt;</td><td class=\"num\">48</td><td>wh-nj</td><td class=\"num\">3</td><td class=\"num\">2</td><td class=\"num\">1.5&nbsp;d</td><td>2026-11-12 02:00</td></tr>\n\
             </tbody></table></div>\n"
        );
        let moved = to_move(&view);
        assert!(moved.starts_with("<div class=\"scroll\"><table id=\"to-move-table\">"), "{moved}");
        assert!(moved.contains("<td>wh-ca</td><td>wh-nj</td><td class=\"num\">3</td><td class=\"num\">2</td><td class=\"num\">&middot;</td>"), "{moved}");
        assert!(moved.ends_with("</tr>\n</tbody></table></div>\n"), "{moved}");
        let routing = routing_exceptions(&view);
        assert!(routing.contains("<tr><td>2026-11-12 02:00</td><td>shopify/o1/1</td><td>SKU-1</td><td class=\"num\">2</td><td>wh-ca</td><td>shipped from wh-nj</td></tr>\n"), "{routing}");
        assert!(
            routing.contains("<td>split: no ship_from location covers it</td></tr>\n</tbody>"),
            "{routing}"
        );
        view.to_order.clear();
        view.to_move.clear();
        view.routing_exceptions.clear();
        assert_eq!(to_order(&view), "<p id=\"no-to-order\">Nothing to order.</p>\n");
        assert_eq!(to_move(&view), "<p id=\"no-to-move\">Nothing to move into FBA.</p>\n");
        assert_eq!(
            routing_exceptions(&view),
            "<p id=\"no-routing-exceptions\">No routing exception in the last 7 days.</p>\n"
        );
    }

    #[test]
    fn the_page_is_self_contained_and_carries_the_view() {
        let page = render_operations_page(&view(), false);
        assert!(page.starts_with("<!DOCTYPE html>"));
        for external in ["http://", "https://", "<script", "<link", "src=", "http-equiv"] {
            assert!(!page.contains(external), "the page refers to {external}");
        }
        for expected in [
            "<span id=\"now\" data-now-ms=\"1794448800000\">2026-11-12 02:00</span>",
            "<tbody data-kind=\"OVERSELL\"><tr class=\"group\"><th colspan=\"7\">OVERSELL &middot; 2</th></tr>",
            "data-alert-id=\"oversell/SKU-4/pool=shared/o2\" data-kind=\"OVERSELL\" data-sku=\"SKU-4\" data-accountable=\"shopify\" data-age-ms=\"180000000\"",
            "<td class=\"num\" title=\"raised 2026-11-10 00:00 UTC\">2d 2h</td>",
            "Maya Chen to stop shopify selling past its allocation of SKU-4",
            "eu-market vs bargains",
            "<tr data-rule=\"STOCK_DROP\" data-target=\"global\" data-count=\"1\">",
            "<td class=\"num\" data-channel=\"wholesale\" data-available=\"0\">0</td>",
            "<td class=\"num\" data-channel=\"eu-market\" data-available=\"\">&middot;</td>",
            "data-field=\"contribution\" data-value=\"1200.5\">1,200.50</td>",
            "<g class=\"attention\" data-channel=\"amazon\" data-attention=\"4\" data-contribution=\"-300\">",
            "Attention beside contribution (2026-W46, USD)",
        ] {
            assert!(page.contains(expected), "the page lacks {expected}");
        }
        let kinds: Vec<usize> =
            ["PRICE_BELOW_FLOOR", "OVERSELL", "MAP_VIOLATION", "LOW_COVER", "COMPETITOR_UNDERCUT"]
                .iter()
                .map(|k| page.find(&format!("<tbody data-kind=\"{k}\">")).expect("a group per kind"))
                .collect();
        assert!(kinds.is_sorted(), "groups in the view's order");
    }

    #[test]
    fn a_served_page_links_back_and_refreshes() {
        let page = render_operations_page(&view(), true);
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
        assert!(page.contains("<a href=\"/\">Weekly contribution</a>"));
    }
}

//! The weekly report as one self-contained HTML page (inline CSS and SVG, no script, no
//! external resource), written by `omnifold-reporter page` and served by `serve`.
//!
//! Read from top to bottom it answers: how much did each channel contribute, does its
//! revenue pay for its operating cost, what should its owner do, what went wrong (alerts),
//! and where is it heading (eight weeks). Charts carry their figures as `data-` attributes
//! and text labels, so the page can be checked mechanically as well as read.

use std::fmt::Write as _;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::view::{WeekView, money, percent};

/// Channel colours of the trend, in row order.
const PALETTE: [&str; 8] =
    ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16", "#4a5568"];
const POSITIVE: &str = "#2f855a";
const NEGATIVE: &str = "#c53030";
const REVENUE: &str = "#3182ce";
const COST: &str = "#dd6b20";

/// The whole page.
pub fn render_page(view: &WeekView) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let title = format!("Channel contribution, {}", view.week);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        escape(&title)
    );
    header(&mut out, view);
    cards(&mut out, view);
    section(
        &mut out,
        "contribution",
        &format!("Contribution by channel ({})", escape(&view.currency)),
        &contribution_chart(view),
    );
    section(&mut out, "shares", "Revenue share vs operating-cost share", &share_chart(view));
    section(&mut out, "decisions", "Decisions and next actions", &decisions(view));
    section(&mut out, "figures", "Figures", &figures_table(view));
    section(&mut out, "alerts", "Alerts raised, by kind", &alerts_table(view));
    section(&mut out, "trend", "Contribution trend, last 8 weeks", &trend_chart(view));
    let _ = write!(
        out,
        "<footer>Exact figures from <code>omnifold.snapshots.v1</code>, last revision of each channel; \
         amounts are rounded to the cent for display only.</footer>\n</main>\n</body>\n</html>\n"
    );
    out
}

pub(crate) const STYLE: &str = "
body{margin:0;background:#f7f8fa;color:#1a202c;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:18px;margin:0 0 12px}
.sub{color:#4a5568;margin:0 0 20px}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:16px 20px;margin:0 0 18px}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:0 0 18px}
.card{flex:1 1 200px;background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px 16px}
.card .label{color:#4a5568;font-size:13px}.card .value{font-size:22px;font-weight:600;white-space:nowrap}
#card-decisions .value{font-size:17px;line-height:30px}
.neg{color:#c53030}.pos{color:#2f855a}
table{border-collapse:collapse;width:100%;font-size:13px}
.scroll{overflow-x:auto}
small{color:#718096}
th,td{padding:5px 6px;border-bottom:1px solid #edf2f7;text-align:left;white-space:nowrap}
th{color:#4a5568;font-weight:600;background:#f7fafc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:4px;padding:1px 8px;font-size:12px;font-weight:700;letter-spacing:.02em}
.KEEP{background:#c6f6d5;color:#22543d}.FIX{background:#feebc8;color:#7b341e}.RETIRE_REVIEW{background:#fed7d7;color:#822727}
ul.actions{list-style:none;margin:0;padding:0}ul.actions li{padding:6px 0;border-bottom:1px solid #edf2f7}
ul.actions .channel{display:inline-block;min-width:120px;font-weight:600}
.legend span{display:inline-block;margin-right:16px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
svg text{font:12px system-ui,sans-serif;fill:#2d3748}
footer{color:#718096;font-size:12px;margin-top:8px}
";

fn header(out: &mut String, view: &WeekView) {
    let _ = write!(
        out,
        "<header><h1>Channel contribution <span id=\"week\">{}</span></h1>\n\
         <p class=\"sub\">Monday {} to Sunday {} &middot; amounts in {} &middot; {} channels</p></header>\n",
        escape(&view.week),
        escape(&view.monday),
        escape(&view.sunday),
        escape(&view.currency),
        view.rows.len()
    );
}

fn cards(out: &mut String, view: &WeekView) {
    let count = |decision: &str| view.rows.iter().filter(|r| r.decision == decision).count();
    let alerts: i64 = view.rows.iter().flat_map(|r| r.alerts.iter().map(|(_, n)| n)).sum();
    let total = view.total_contribution();
    let cards = [
        ("net-revenue", "Net revenue", money(view.total_net_revenue()), ""),
        ("contribution", "Contribution", money(total), sign_class(total)),
        (
            "decisions",
            "Decisions",
            format!(
                "{} keep &middot; {} fix &middot; {} review",
                count("KEEP"),
                count("FIX"),
                count("RETIRE_REVIEW")
            ),
            "",
        ),
        ("alerts", "Alerts raised", alerts.to_string(), ""),
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

pub(crate) fn section(out: &mut String, id: &str, title: &str, body: &str) {
    let _ = write!(out, "<section id=\"{id}\"><h2>{title}</h2>\n{body}</section>\n");
}

pub(crate) fn sign_class(value: Decimal) -> &'static str {
    if value < Decimal::ZERO { "neg" } else { "pos" }
}

pub(crate) fn float(value: Decimal) -> f64 {
    // display geometry only: the figures themselves stay exact in text and data attributes
    value.to_f64().unwrap_or(0.0)
}

pub(crate) fn exact(value: Decimal) -> String {
    omnifold_domain::report::decimal_text(value)
}

/// Horizontal bars from a zero line: green right, red left, each labelled with its amount.
fn contribution_chart(view: &WeekView) -> String {
    let (label_w, width, row_h) = (120.0, 760.0, 34.0);
    let values: Vec<f64> = view.rows.iter().map(|r| float(r.contribution)).collect();
    let low = values.iter().copied().fold(0.0_f64, f64::min);
    let high = values.iter().copied().fold(0.0_f64, f64::max);
    let span = if high - low > 0.0 { high - low } else { 1.0 };
    // room for the labels on both sides of the bars
    let (left, right) = (label_w + 80.0, width - 90.0);
    let x = |v: f64| left + (v - low) / span * (right - left);
    let height = row_h * view.rows.len() as f64 + 10.0;
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"contribution by channel\" viewBox=\"0 0 {width} {height}\" width=\"100%\">\n"
    );
    for (i, (row, value)) in view.rows.iter().zip(&values).enumerate() {
        let y = i as f64 * row_h + 5.0;
        let (x0, x1) = (x(0.0), x(*value));
        let (bar_x, bar_w) = (x0.min(x1), (x1 - x0).abs().max(1.0));
        let color = if row.contribution < Decimal::ZERO { NEGATIVE } else { POSITIVE };
        let (label_x, anchor) = if row.contribution < Decimal::ZERO {
            (bar_x - 6.0, "end")
        } else {
            (bar_x + bar_w + 6.0, "start")
        };
        let _ = writeln!(
            svg,
            "<g class=\"bar\" data-channel=\"{channel}\" data-contribution=\"{exact}\">\
             <text x=\"0\" y=\"{ty:.1}\">{channel}</text>\
             <rect x=\"{bar_x:.1}\" y=\"{y:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\" rx=\"3\" fill=\"{color}\"><title>{channel}: {amount}</title></rect>\
             <text class=\"value\" x=\"{label_x:.1}\" y=\"{ty:.1}\" text-anchor=\"{anchor}\">{amount}</text></g>",
            channel = escape(&row.channel),
            exact = exact(row.contribution),
            ty = y + row_h / 2.0 + 1.0,
            h = row_h - 12.0,
            amount = money(row.contribution),
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{z:.1}\" y1=\"0\" x2=\"{z:.1}\" y2=\"{height}\" stroke=\"#718096\" stroke-width=\"1\"/>\n</svg>\n",
        z = x(0.0)
    );
    svg
}

/// Two bars per channel on a 0-100% scale: its share of net revenue, its share of
/// operating cost. A channel whose cost bar outgrows its revenue bar is paid for by others.
fn share_chart(view: &WeekView) -> String {
    let (label_w, width, group_h) = (120.0, 760.0, 44.0);
    let (left, right) = (label_w + 10.0, width - 70.0);
    let x = |share: f64| left + share.clamp(0.0, 1.0) * (right - left);
    let height = group_h * view.rows.len() as f64 + 8.0;
    let mut svg = format!(
        "<div class=\"legend\"><span><i style=\"background:{REVENUE}\"></i>share of net revenue</span>\
         <span><i style=\"background:{COST}\"></i>share of operating cost</span></div>\n\
         <svg role=\"img\" aria-label=\"revenue share vs operating-cost share\" viewBox=\"0 0 {width} {height}\" width=\"100%\">\n"
    );
    for (i, row) in view.rows.iter().enumerate() {
        let y = i as f64 * group_h + 4.0;
        let _ = write!(
            svg,
            "<g class=\"shares\" data-channel=\"{}\" data-revenue-share=\"{}\" data-operating-cost-share=\"{}\">\
             <text x=\"0\" y=\"{:.1}\">{}</text>",
            escape(&row.channel),
            row.revenue_share.map(exact).unwrap_or_default(),
            row.operating_cost_share.map(exact).unwrap_or_default(),
            y + 22.0,
            escape(&row.channel),
        );
        for (k, (share, color, what)) in
            [(row.revenue_share, REVENUE, "revenue"), (row.operating_cost_share, COST, "operating cost")]
                .into_iter()
                .enumerate()
        {
            let bar_y = y + k as f64 * 17.0 + 2.0;
            let end = x(share.map_or(0.0, float));
            let label = percent(share);
            let _ = write!(
                svg,
                "<rect x=\"{left:.1}\" y=\"{bar_y:.1}\" width=\"{:.1}\" height=\"14\" rx=\"2\" fill=\"{color}\"><title>{} share of {what}: {label}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{label}</text>",
                (end - left).max(1.0),
                escape(&row.channel),
                end + 5.0,
                bar_y + 11.5,
            );
        }
        svg.push_str("</g>\n");
    }
    svg.push_str("</svg>\n");
    svg
}

fn decisions(view: &WeekView) -> String {
    let mut html = String::from("<ul class=\"actions\">\n");
    for row in &view.rows {
        let revision = if row.revision > 1 {
            format!(" <small>(restated, revision {})</small>", row.revision)
        } else {
            String::new()
        };
        let _ = writeln!(
            html,
            "<li data-channel=\"{channel}\"><span class=\"channel\">{channel}</span> \
             <span class=\"badge {decision}\">{decision}</span> <span class=\"next-action\">{action}</span>{revision}</li>",
            channel = escape(&row.channel),
            decision = escape(&row.decision),
            action = escape(&row.next_action),
        );
    }
    html.push_str("</ul>\n");
    html
}

fn figures_table(view: &WeekView) -> String {
    let mut html = String::from(
        "<div class=\"scroll\"><table id=\"figures-table\"><thead><tr><th>channel</th><th>owner</th>\
         <th class=\"num\" title=\"gross revenue\">gross rev.</th><th class=\"num\" title=\"net revenue\">net rev.</th>\
         <th class=\"num\" title=\"contribution before operating cost\">before op.</th>\
         <th class=\"num\" title=\"operating cost\">op. cost</th><th class=\"num\">contribution</th>\
         <th class=\"num\">margin</th><th class=\"num\" title=\"share of net revenue\">rev. share</th>\
         <th class=\"num\" title=\"share of operating cost\">cost share</th><th class=\"num\">orders</th>\
         <th class=\"num\">units</th><th>decision</th></tr></thead>\n<tbody>\n",
    );
    for row in &view.rows {
        let money_cell = |field: &str, value: Decimal| {
            format!(
                "<td class=\"num {}\" data-field=\"{field}\" data-value=\"{}\">{}</td>",
                if field == "contribution" { sign_class(value) } else { "" },
                exact(value),
                money(value)
            )
        };
        let share_cell = |field: &str, value: Option<Decimal>| {
            format!(
                "<td class=\"num\" data-field=\"{field}\" data-value=\"{}\">{}</td>",
                value.map(exact).unwrap_or_default(),
                percent(value)
            )
        };
        let _ = writeln!(
            html,
            "<tr data-channel=\"{channel}\"><td data-field=\"channel\"><b>{channel}</b><br><small>{name}</small></td><td data-field=\"owner\">{owner}</td>\
             {}{}{}{}{}{}{}{}<td class=\"num\" data-field=\"orders_shipped\">{}</td>\
             <td class=\"num\" data-field=\"units_shipped\">{}</td>\
             <td data-field=\"decision\"><span class=\"badge {decision}\">{decision}</span></td></tr>",
            money_cell("gross_revenue", row.gross_revenue),
            money_cell("net_revenue", row.net_revenue),
            money_cell("contribution_before_operating", row.contribution_before_operating),
            money_cell("operating_cost", row.operating_cost),
            money_cell("contribution", row.contribution),
            share_cell("contribution_margin", row.contribution_margin),
            share_cell("revenue_share", row.revenue_share),
            share_cell("operating_cost_share", row.operating_cost_share),
            row.orders_shipped,
            row.units_shipped,
            channel = escape(&row.channel),
            name = escape(&row.channel_name),
            owner = escape(&row.owner),
            decision = escape(&row.decision),
        );
    }
    let total = view.total_contribution();
    let _ = writeln!(
        html,
        "</tbody><tfoot><tr><th>all channels</th><th></th><th></th>\
         <th class=\"num\" data-field=\"total_net_revenue\">{}</th><th></th><th></th>\
         <th class=\"num {}\" data-field=\"total_contribution\">{}</th><th colspan=\"6\"></th></tr></tfoot></table></div>",
        money(view.total_net_revenue()),
        sign_class(total),
        money(total)
    );
    html
}

fn alerts_table(view: &WeekView) -> String {
    let kinds = view.alert_kinds();
    if kinds.is_empty() {
        return "<p id=\"no-alerts\">No alert was raised on any channel this week.</p>\n".to_string();
    }
    let mut html = String::from("<table id=\"alerts-table\"><thead><tr><th>kind</th>");
    for row in &view.rows {
        let _ = write!(html, "<th class=\"num\">{}</th>", escape(&row.channel));
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    for kind in &kinds {
        let _ = write!(html, "<tr data-kind=\"{}\"><td>{}</td>", escape(kind), escape(kind));
        for row in &view.rows {
            let count = row.alerts.iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| *n);
            let shown = if count == 0 { "&middot;".to_string() } else { count.to_string() };
            let _ = write!(
                html,
                "<td class=\"num\" data-channel=\"{}\" data-count=\"{count}\">{shown}</td>",
                escape(&row.channel)
            );
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody></table>\n");
    html
}

/// One line per channel over the published weeks of the window, with a zero line.
fn trend_chart(view: &WeekView) -> String {
    let (width, height, left, right, top, bottom) = (760.0, 260.0, 80.0, 700.0, 16.0, 226.0);
    let weeks = &view.trend;
    let all: Vec<f64> = weeks.iter().flat_map(|(_, values)| values.values().map(|v| float(*v))).collect();
    let low = all.iter().copied().fold(0.0_f64, f64::min);
    let high = all.iter().copied().fold(0.0_f64, f64::max);
    let span = if high - low > 0.0 { high - low } else { 1.0 };
    let y = |v: f64| bottom - (v - low) / span * (bottom - top);
    let step = if weeks.len() > 1 { (right - left) / (weeks.len() - 1) as f64 } else { 0.0 };
    let x = |i: usize| if weeks.len() > 1 { left + i as f64 * step } else { (left + right) / 2.0 };
    let mut svg = String::from("<div class=\"legend\">");
    for (row, color) in view.rows.iter().zip(PALETTE.iter().cycle()) {
        let _ = write!(svg, "<span><i style=\"background:{color}\"></i>{}</span>", escape(&row.channel));
    }
    let _ = write!(
        svg,
        "</div>\n<svg role=\"img\" aria-label=\"contribution trend\" viewBox=\"0 0 {width} {height}\" width=\"100%\">\n\
         <line x1=\"{left}\" y1=\"{z:.1}\" x2=\"{right}\" y2=\"{z:.1}\" stroke=\"#a0aec0\" stroke-dasharray=\"4 3\"/>\
         <text x=\"{lx}\" y=\"{zt:.1}\" text-anchor=\"end\">0</text>\n\
         <text x=\"{lx}\" y=\"{ht:.1}\" text-anchor=\"end\">{hi}</text><text x=\"{lx}\" y=\"{lt:.1}\" text-anchor=\"end\">{lo}</text>\n",
        z = y(0.0),
        zt = y(0.0) + 4.0,
        lx = left - 8.0,
        ht = y(high) + 4.0,
        lt = y(low) + 4.0,
        hi = if high > 0.0 { short_money(high) } else { String::new() },
        lo = if low < 0.0 { short_money(low) } else { String::new() },
    );
    for (i, (week, _)) in weeks.iter().enumerate() {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(i),
            height - 12.0,
            escape(week)
        );
    }
    svg.push('\n');
    for (row, color) in view.rows.iter().zip(PALETTE.iter().cycle()) {
        let points: Vec<(usize, &String, Decimal)> = weeks
            .iter()
            .enumerate()
            .filter_map(|(i, (week, values))| values.get(&row.channel).map(|v| (i, week, *v)))
            .collect();
        let path: Vec<String> =
            points.iter().map(|(i, _, v)| format!("{:.1},{:.1}", x(*i), y(float(*v)))).collect();
        let _ = write!(
            svg,
            "<g class=\"trend\" data-channel=\"{}\"><polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
            escape(&row.channel),
            path.join(" ")
        );
        for (i, week, value) in &points {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\" data-week=\"{}\" data-contribution=\"{}\"><title>{} {}: {}</title></circle>",
                x(*i),
                y(float(*value)),
                escape(week),
                exact(*value),
                escape(&row.channel),
                escape(week),
                money(*value)
            );
        }
        svg.push_str("</g>\n");
    }
    svg.push_str("</svg>\n");
    svg
}

/// An axis label such as `12.3k` or `-850`.
fn short_money(value: f64) -> String {
    if value.abs() >= 1000.0 { format!("{:.1}k", value / 1000.0) } else { format!("{value:.0}") }
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use omnifold_proto::{AlertCount, ContributionSnapshot, Decision};

    use super::*;

    fn view() -> WeekView {
        let snapshot = |week: &str, channel: &str, contribution: &str| ContributionSnapshot {
            week: week.into(),
            channel: channel.into(),
            channel_name: format!("{channel} <store>"),
            owner: "Ann & Bob".into(),
            revision: 1,
            currency: "USD".into(),
            net_revenue: "100".into(),
            contribution: contribution.into(),
            revenue_share: Some("0.5".into()),
            operating_cost_share: Some("0.25".into()),
            decision: Decision::Keep as i32,
            next_action: format!("Ann & Bob to keep {channel} as it is."),
            alerts_raised: vec![AlertCount { kind: "OVERSELL".into(), count: 2 }],
            ..ContributionSnapshot::default()
        };
        let snapshots: BTreeMap<String, ContributionSnapshot> = [
            snapshot("2026-W46", "a", "10"),
            snapshot("2026-W47", "a", "164.5"),
            snapshot("2026-W47", "b", "-40"),
        ]
        .into_iter()
        .map(|s| (format!("{}/{}", s.week, s.channel), s))
        .collect();
        WeekView::build(&snapshots, Some("2026-W47")).unwrap()
    }

    #[test]
    fn the_page_is_self_contained_and_carries_the_figures() {
        let page = render_page(&view());
        assert!(page.starts_with("<!DOCTYPE html>"));
        for external in ["http://", "https://", "<script", "<link", "src="] {
            assert!(!page.contains(external), "the page refers to {external}");
        }
        assert!(page.contains("data-channel=\"a\" data-contribution=\"164.5\""), "{page}");
        assert!(page.contains(">164.50</text>"));
        assert!(page.contains("data-channel=\"b\" data-contribution=\"-40\""));
        assert!(page.contains("data-field=\"contribution\" data-value=\"-40\">-40.00</td>"));
        assert!(page.contains("<small>a &lt;store&gt;</small>"), "names are escaped");
        assert!(page.contains("Ann &amp; Bob to keep a as it is."));
        assert!(
            page.contains("data-week=\"2026-W46\" data-contribution=\"10\""),
            "the trend has the week before"
        );
        assert!(page.contains("data-kind=\"OVERSELL\""));
    }
}

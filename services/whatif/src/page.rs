//! The answer as one self-contained HTML page (inline CSS and SVG, no script, no external
//! resource), in the style of the reporter's weekly page: a chart per section, then the
//! exact figures. Charts carry their figures in `data-` attributes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rust_decimal::prelude::ToPrimitive;

use crate::answer::{Answer, ScenarioAnswer};
use crate::table::{amount_cell, cents};

/// Scenario colours, in column order (the baseline first, in grey).
const PALETTE: [&str; 8] =
    ["#718096", "#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16"];

const STYLE: &str = "
body{margin:0;background:#f7f8fa;color:#1a202c;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:18px;margin:0 0 12px}
.sub{color:#4a5568;margin:0 0 20px}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:16px 20px;margin:0 0 18px}
.neg{color:#c53030}.pos{color:#2f855a}
table{border-collapse:collapse;width:100%;font-size:13px;margin-top:12px}
.scroll{overflow-x:auto}
th,td{padding:5px 6px;border-bottom:1px solid #edf2f7;text-align:left;white-space:nowrap}
th{color:#4a5568;font-weight:600;background:#f7fafc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:4px;padding:1px 8px;font-size:12px;font-weight:700;letter-spacing:.02em}
.KEEP{background:#c6f6d5;color:#22543d}.FIX{background:#feebc8;color:#7b341e}.RETIRE_REVIEW{background:#fed7d7;color:#822727}.RETIRED{background:#e2e8f0;color:#2d3748}
.legend span{display:inline-block;margin-right:16px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.note{background:#fffbea;border:1px solid #f6e05e;border-radius:8px;padding:10px 14px;margin:0 0 18px}
svg text{font:12px system-ui,sans-serif;fill:#2d3748}
footer{color:#718096;font-size:12px;margin-top:8px}
";

/// The whole page.
pub fn render_page(answer: &Answer) -> String {
    let scenarios = &answer.scenarios;
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>What if: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        escape(&scenarios.iter().skip(1).map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "))
    );
    let h = &answer.history;
    let _ = write!(
        out,
        "<h1>What if</h1>\n<p class=\"sub\">{} events over {} SKUs, from {}, replayed under {} scenarios.</p>\n\
         <p class=\"note\" id=\"demand\">{}</p>\n",
        h.events,
        h.skus,
        escape(&h.source),
        scenarios.len(),
        escape(&answer.demand_held_fixed)
    );
    out.push_str(&legend(scenarios));
    let mut list = String::from("<table><tr><th>scenario</th><th>changes</th><th>assumed</th></tr>\n");
    for s in scenarios {
        let changes = if s.changes.is_empty() { "the current contract".into() } else { s.changes.join("; ") };
        let _ = writeln!(
            list,
            "<tr><td>{}</td><td>{}</td><td style=\"white-space:normal\">{}</td></tr>",
            escape(&s.name),
            escape(&changes),
            escape(&s.assumptions.join(" "))
        );
    }
    list.push_str("</table>");
    section(&mut out, "scenarios", "Scenarios", &list);

    // availability
    let groups: Vec<String> = scenarios[0].availability.channels.iter().map(|c| c.channel.clone()).collect();
    let values: Vec<Vec<f64>> = scenarios
        .iter()
        .map(|s| s.availability.channels.iter().map(|c| c.final_available.value as f64).collect())
        .collect();
    let mut body = bars("availability", "final sellable units by channel", &groups, scenarios, &values);
    body.push_str(&figures(
        scenarios,
        &[
            ("availability records", &|s| {
                count(s.availability.decisions.value, s.availability.decisions.delta)
            }),
            ("decisions changed", &|s| s.availability.decisions_changed.to_string()),
            ("units shifted", &|s| s.availability.units_shifted.to_string()),
            ("scarcity SKU-hours", &|s| {
                format!(
                    "{:.1} ({:+.1})",
                    s.availability.scarcity_hours.value, s.availability.scarcity_hours.delta
                )
            }),
        ],
    ));
    for s in scenarios.iter().skip(1).filter(|s| !s.availability.most_affected_skus.is_empty()) {
        let _ = write!(body, "<p><b>Most affected SKUs, {}:</b> ", escape(&s.name));
        let names: Vec<String> = s
            .availability
            .most_affected_skus
            .iter()
            .map(|k| {
                format!(
                    "{} ({} decisions, {:+} units)",
                    escape(&k.sku),
                    k.decisions_changed,
                    k.final_available_delta
                )
            })
            .collect();
        let _ = write!(body, "{}</p>", names.join(", "));
    }
    section(&mut out, "availability", "Availability", &body);

    // stock conflicts
    let kinds = ["OVERSELL", "NEGATIVE_STOCK", "ALLOCATION_BREACH", "oversold units"];
    let values: Vec<Vec<f64>> = scenarios
        .iter()
        .map(|s| {
            let c = &s.stock_conflicts;
            vec![c.oversell.value, c.negative_stock.value, c.allocation_breach.value, c.oversold_units.value]
                .into_iter()
                .map(|v| v as f64)
                .collect()
        })
        .collect();
    let groups: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    let mut body = bars("stock", "stock conflicts raised", &groups, scenarios, &values);
    body.push_str(&figures(
        scenarios,
        &[
            ("oversold units avoided", &|s| s.stock_conflicts.oversold_units_avoided.to_string()),
            ("oversold units caused", &|s| s.stock_conflicts.oversold_units_caused.to_string()),
        ],
    ));
    section(&mut out, "stock", "Stock conflicts", &body);

    // pricing and pages
    let mut keys: Vec<String> = scenarios[0].pricing_conflicts.keys().cloned().collect();
    let mut pages: Vec<String> = scenarios.iter().flat_map(|s| s.pages_by_rule.keys().cloned()).collect();
    pages.sort();
    pages.dedup();
    keys.extend(pages.iter().map(|p| format!("page {p}")));
    let values: Vec<Vec<f64>> = scenarios
        .iter()
        .map(|s| {
            keys.iter()
                .map(|k| match k.strip_prefix("page ") {
                    Some(rule) => s.pages_by_rule.get(rule).map_or(0, |c| c.value) as f64,
                    None => s.pricing_conflicts.get(k).map_or(0, |c| c.value) as f64,
                })
                .collect()
        })
        .collect();
    let body = bars("pricing", "pricing conflicts and pages by kind and rule", &keys, scenarios, &values);
    section(&mut out, "pricing", "Pricing conflicts and pages", &body);

    // contribution by channel
    let groups: Vec<String> = scenarios[0].channels.iter().map(|c| c.channel.clone()).collect();
    let values: Vec<Vec<f64>> = scenarios
        .iter()
        .map(|s| s.channels.iter().map(|c| c.contribution.value().to_f64().unwrap_or(0.0)).collect())
        .collect();
    let mut body = bars(
        "contribution",
        &format!("contribution over the history ({})", answer.currency),
        &groups,
        scenarios,
        &values,
    );
    body.push_str(&figures(scenarios, &[("total contribution", &|s| amount_cell(&s.total_contribution))]));
    section(&mut out, "contribution", "Contribution by channel", &body);

    // weekly
    let mut body = weekly_chart(answer);
    body.push_str(&weekly_table(answer));
    section(
        &mut out,
        "weeks",
        &format!("Weekly figures and decisions ({})", escape(&answer.currency)),
        &body,
    );
    out.push_str(
        "<footer>Replayed with the coordinator's fold and the reporter's report math in memory; amounts are \
         rounded to the cent for display only (the JSON answer is exact).</footer>\n</main>\n</body>\n</html>\n",
    );
    out
}

fn section(out: &mut String, id: &str, title: &str, body: &str) {
    let _ = write!(out, "<section id=\"{id}\">\n<h2>{}</h2>\n{body}\n</section>\n", escape(title));
}

fn legend(scenarios: &[ScenarioAnswer]) -> String {
    let mut out = String::from("<p class=\"legend\">");
    for (i, s) in scenarios.iter().enumerate() {
        let _ = write!(
            out,
            "<span><i style=\"background:{}\"></i>{}</span>",
            PALETTE[i % PALETTE.len()],
            escape(&s.name)
        );
    }
    out.push_str("</p>\n");
    out
}

fn count(value: i64, delta: i64) -> String {
    if delta == 0 { value.to_string() } else { format!("{value} ({delta:+})") }
}

type Figure<'a> = (&'a str, &'a dyn Fn(&ScenarioAnswer) -> String);

fn figures(scenarios: &[ScenarioAnswer], rows: &[Figure<'_>]) -> String {
    let mut out = String::from("<div class=\"scroll\"><table><tr><th></th>");
    for s in scenarios {
        let _ = write!(out, "<th class=\"num\">{}</th>", escape(&s.name));
    }
    out.push_str("</tr>\n");
    for (label, value) in rows {
        let _ = write!(out, "<tr><td>{}</td>", escape(label));
        for s in scenarios {
            let _ = write!(out, "<td class=\"num\">{}</td>", escape(&value(s)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></div>\n");
    out
}

/// Grouped bars: one group per label, one bar per scenario; negative values go below the
/// axis.
fn bars(
    id: &str,
    title: &str,
    groups: &[String],
    scenarios: &[ScenarioAnswer],
    values: &[Vec<f64>],
) -> String {
    let n = scenarios.len().max(1) as f64;
    let (bar, gap, plot) = (18.0_f64, 24.0_f64, 200.0_f64);
    // group labels are slanted down and left of their group: room for the longest
    let longest = groups.iter().map(|g| g.chars().count()).max().unwrap_or(0) as f64;
    let (pad, height) = ((longest * 5.0).max(50.0), plot + 20.0 + longest * 4.5);
    let group_width = bar * n + gap;
    let width = pad + group_width * groups.len() as f64 + 10.0;
    let max = values.iter().flatten().fold(0.0_f64, |m, v| m.max(*v));
    let min = values.iter().flatten().fold(0.0_f64, |m, v| m.min(*v));
    let span = (max - min).max(1.0);
    let y = |v: f64| 20.0 + (max - v) / span * (plot - 40.0);
    let mut out = format!(
        "<div class=\"scroll\"><svg id=\"chart-{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" role=\"img\" aria-label=\"{}\">\n",
        escape(title)
    );
    let zero = y(0.0);
    let _ = writeln!(
        out,
        "<line x1=\"{pad}\" y1=\"{zero:.1}\" x2=\"{:.1}\" y2=\"{zero:.1}\" stroke=\"#a0aec0\"/>",
        width - 10.0
    );
    let _ = writeln!(
        out,
        "<text x=\"4\" y=\"{:.1}\">{}</text><text x=\"4\" y=\"{:.1}\">{}</text>",
        y(max) + 4.0,
        short(max),
        y(min) + 4.0,
        short(min)
    );
    for (g, group) in groups.iter().enumerate() {
        let x0 = pad + g as f64 * group_width;
        for (s, scenario) in scenarios.iter().enumerate() {
            let value = values.get(s).and_then(|v| v.get(g)).copied().unwrap_or(0.0);
            let (top, bottom) = if value >= 0.0 { (y(value), zero) } else { (zero, y(value)) };
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" data-group=\"{}\" data-scenario=\"{}\" data-value=\"{value}\"><title>{}: {} {}</title></rect>",
                x0 + s as f64 * bar,
                bar - 2.0,
                (bottom - top).max(0.5),
                PALETTE[s % PALETTE.len()],
                escape(group),
                escape(&scenario.name),
                escape(&scenario.name),
                escape(group),
                value
            );
        }
        let (lx, ly) = (x0 + bar * n / 2.0, plot - 4.0);
        let _ = writeln!(
            out,
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"end\" transform=\"rotate(-40 {lx:.1} {ly:.1})\">{}</text>",
            escape(group)
        );
    }
    out.push_str("</svg></div>\n");
    out
}

/// Total contribution per week, one line per scenario.
fn weekly_chart(answer: &Answer) -> String {
    let scenarios = &answer.scenarios;
    let mut per: Vec<BTreeMap<String, f64>> = Vec::new();
    for s in scenarios {
        let mut weeks: BTreeMap<String, f64> = BTreeMap::new();
        for row in &s.weeks {
            *weeks.entry(row.week.clone()).or_default() += row.contribution.value().to_f64().unwrap_or(0.0);
        }
        per.push(weeks);
    }
    let labels: Vec<String> = per.first().map(|w| w.keys().cloned().collect()).unwrap_or_default();
    if labels.is_empty() {
        return "<p>No closed week.</p>".into();
    }
    let (width, height, pad) = (760.0_f64, 240.0_f64, 60.0_f64);
    let all = per.iter().flat_map(|w| w.values().copied());
    let (min, max) = all.fold((0.0_f64, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let span = (max - min).max(1.0);
    let x = |i: usize| {
        pad + if labels.len() > 1 { i as f64 / (labels.len() - 1) as f64 * (width - pad - 20.0) } else { 0.0 }
    };
    let y = |v: f64| 20.0 + (max - v) / span * (height - 60.0);
    let mut out = format!(
        "<div class=\"scroll\"><svg id=\"chart-weeks\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"total contribution per week\">\n"
    );
    let _ = writeln!(
        out,
        "<line x1=\"{pad}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#a0aec0\"/>",
        y(0.0),
        width - 20.0,
        y(0.0)
    );
    let _ = writeln!(
        out,
        "<text x=\"4\" y=\"{:.1}\">{}</text><text x=\"4\" y=\"{:.1}\">{}</text>",
        y(max) + 4.0,
        short(max),
        y(min) + 4.0,
        short(min)
    );
    for (i, label) in labels.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x(i),
            height - 22.0,
            escape(label)
        );
    }
    for (s, weeks) in per.iter().enumerate() {
        let colour = PALETTE[s % PALETTE.len()];
        let points: Vec<String> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{:.1},{:.1}", x(i), y(weeks.get(l).copied().unwrap_or(0.0))))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
        for (i, label) in labels.iter().enumerate() {
            let value = weeks.get(label).copied().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\" data-week=\"{}\" data-scenario=\"{}\" data-value=\"{value:.2}\"/>",
                x(i),
                y(value),
                escape(label),
                escape(&scenarios[s].name)
            );
        }
    }
    out.push_str("</svg></div>\n");
    out
}

fn weekly_table(answer: &Answer) -> String {
    let scenarios = &answer.scenarios;
    let mut out = String::from("<div class=\"scroll\"><table><tr><th>week</th><th>channel</th>");
    for s in scenarios {
        let _ = write!(
            out,
            "<th class=\"num\">{} net revenue</th><th class=\"num\">contribution</th><th>decision</th>",
            escape(&s.name)
        );
    }
    out.push_str("</tr>\n");
    for row in &scenarios[0].weeks {
        let _ = write!(out, "<tr><td>{}</td><td>{}</td>", escape(&row.week), escape(&row.channel));
        for s in scenarios {
            match s.weeks.iter().find(|w| w.week == row.week && w.channel == row.channel) {
                Some(w) => {
                    let class = if w.contribution.value().is_sign_negative() { "neg" } else { "pos" };
                    let _ = write!(
                        out,
                        "<td class=\"num\">{}</td><td class=\"num {class}\" data-exact=\"{}\">{}</td><td><span class=\"badge {}\">{}</span></td>",
                        cents(w.net_revenue.value()),
                        escape(&w.contribution.value),
                        escape(&amount_cell(&w.contribution)),
                        escape(&w.decision),
                        escape(&w.decision)
                    );
                }
                None => out.push_str("<td></td><td></td><td></td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></div>\n");
    out
}

fn short(value: f64) -> String {
    if value.abs() >= 1_000_000.0 {
        format!("{:.1}M", value / 1_000_000.0)
    } else if value.abs() >= 1_000.0 {
        format!("{:.1}k", value / 1_000.0)
    } else {
        format!("{value:.0}")
    }
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

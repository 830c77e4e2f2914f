//! The operations tooling under deploy/: the Prometheus scrape config and alerting rules
//! (checked and unit-tested with promtool), the Grafana dashboard (its shape, and every metric
//! it and the rules name is one a service emits), the systemd units (`systemd-analyze
//! verify`), and a real Prometheus scraping a running coordinator and evaluating the rules.
//!
//! promtool, prometheus and systemd-analyze are found on `PATH`; a test whose tool is
//! missing prints SKIPPED and passes (tests/run.sh installs Debian's `prometheus` package).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use omnifold_coordinator::CoordinatorOptions;
use omnifold_testkit::Broker;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An executable `name` on `PATH`, if any.
fn find_binary(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

fn shown(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

// ---------------------------------------------------------------------------------------
// Metric names: what the services emit, and what a PromQL expression reads.

/// Every metric name the services expose: the string literals of `counter!("…"`,
/// `gauge!("…"` and `histogram!("…"` in `services/**/*.rs`. The exporter
/// (metrics-exporter-prometheus, built in `telemetry::serve_metrics` without unit suffixes
/// or buckets) adds nothing to counter and gauge names, and renders a histogram as a
/// summary: the name with a `quantile` label, `_sum` and `_count`.
fn emitted_metrics() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&repo().join("services"), &mut files);
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (macro_name, histogram) in [("counter!(", false), ("gauge!(", false), ("histogram!(", true)] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = text[at + macro_name.len()..].trim_start();
                let Some(literal) = rest.strip_prefix('"') else { continue };
                let name = &literal[..literal.find('"').expect("a closed string literal")];
                names.insert(name.to_string());
                if histogram {
                    names.insert(format!("{name}_sum"));
                    names.insert(format!("{name}_count"));
                }
            }
        }
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const OTHER_WORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// aggregations, keywords or label names (inside `{…}`, `by (…)`, `on (…)`…), nor inside a
/// string, a range `[…]` or a Grafana variable (`$name`, `${name}`).
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '{', '}');
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']');
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(&chars, i, '{', '}');
            }
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if call {
                    i = skip_group(&chars, next, '(', ')');
                }
            } else if !(call || AGGREGATIONS.contains(&word.as_str()) || OTHER_WORDS.contains(&word.as_str()))
            {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The index after the string starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The index after the group opening at `start`, strings inside it skipped.
fn skip_group(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced {open}{close} in {}", chars.iter().collect::<String>())
}

#[test]
fn metric_names_are_told_from_functions_keywords_and_labels() {
    let expr = r#"sum by (job, topic) (rate(omnifold_deadletters_total{topic=~"a|b"}[$__rate_interval])) * 60
        > 1 unless on (job) max(omnifold_broker_connected offset 15m) or vector(0)
        and time() - max by (job) (x:recorded) > 7 * 86400 + 2e3 and up{job="${job}"} == bool 0
        and topk(3, omnifold_pushback_lag_ms{quantile="0.99"}) and sum(a) without (b)"#;
    assert_eq!(
        metric_names(expr),
        [
            "omnifold_deadletters_total",
            "omnifold_broker_connected",
            "x:recorded",
            "up",
            "omnifold_pushback_lag_ms",
            "a"
        ]
    );
}

/// The `expr` of every rule in a rules file (single-line, or a `|` block).
fn rule_exprs(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut exprs = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else { continue };
        let indent = line.len() - line.trim_start().len();
        let rest = rest.trim();
        if rest == "|" || rest == ">" {
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            exprs.push(block.join("\n"));
        } else {
            exprs.push(rest.to_string());
        }
    }
    exprs
}

/// The series names of a promtool test file's `input_series`.
fn input_series_names(tests: &str) -> BTreeSet<String> {
    tests
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("- series:"))
        .map(|series| {
            let series = series.trim().trim_matches('\'').trim_matches('"');
            series[..series.find('{').unwrap_or(series.len())].to_string()
        })
        .collect()
}

/// Series Prometheus itself writes for every target.
const PROMETHEUS_SERIES: &[&str] = &["up"];

#[test]
fn the_rules_and_the_dashboard_read_only_metrics_the_services_emit() {
    let emitted = emitted_metrics();
    for name in [
        "omnifold_events_consumed_total",
        "omnifold_outbox_pending_records",
        "omnifold_reporter_last_closed_week_end_seconds",
        "omnifold_escalation_attempts_total",
        "omnifold_pushback_lag_ms_count",
    ] {
        assert!(emitted.contains(name), "the scan of services/ finds {name}: {emitted:?}");
    }
    let known = |name: &str| emitted.contains(name) || PROMETHEUS_SERIES.contains(&name);

    let rules = read("deploy/prometheus/omnifold.rules.yml");
    let exprs = rule_exprs(&rules);
    assert_eq!(exprs.len(), rules.matches("- alert:").count(), "one expr per alert");
    let mut alerted = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr} reads no metric");
        for name in names {
            assert!(known(&name), "omnifold.rules.yml reads {name}, which no service emits:\n{expr}");
            alerted.insert(name);
        }
    }
    for name in input_series_names(&read("deploy/prometheus/omnifold.rules.test.yml")) {
        assert!(known(&name), "omnifold.rules.test.yml feeds {name}, which no service emits");
    }

    let dashboard = dashboard();
    let mut shown = BTreeSet::new();
    for (title, expr) in dashboard_exprs(&dashboard) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "panel {title:?}: {expr} reads no metric");
        for name in names {
            assert!(emitted.contains(&name), "panel {title:?} reads {name}, which no service emits:\n{expr}");
            shown.insert(name);
        }
    }
    for name in alerted.iter().filter(|name| !PROMETHEUS_SERIES.contains(&name.as_str())) {
        assert!(shown.contains(name), "the rules alert on {name}; the dashboard should show it");
    }
    // every metric a scraped service serves is on the dashboard; these two are the ndjson
    // command's, a one-shot run without --metrics
    let unserved = ["omnifold_connector_lines_refused_total", "omnifold_connector_deadletters_total"];
    let missing: Vec<&String> = emitted
        .iter()
        .filter(|name| !unserved.contains(&name.as_str()))
        .filter(|name| !name.ends_with("_sum") && !name.ends_with("_count"))
        .filter(|name| !shown.contains(*name))
        .collect();
    assert!(missing.is_empty(), "metrics no dashboard panel shows: {missing:?}");
}

// ---------------------------------------------------------------------------------------
// Prometheus: config and rules.

#[test]
fn promtool_checks_the_config_and_the_rules_and_runs_their_tests() {
    let Some(promtool) = find_binary("promtool") else {
        println!("SKIPPED the promtool checks: promtool is not installed (apt-get install -y prometheus)");
        return;
    };
    let dir = repo().join("deploy/prometheus");
    for args in [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "omnifold.rules.yml"],
        ["test", "rules", "omnifold.rules.test.yml"],
    ] {
        let output = Command::new(&promtool).args(args).current_dir(&dir).output().expect("promtool runs");
        assert!(output.status.success(), "promtool {} failed:\n{}", args.join(" "), shown(&output));
    }
}

/// Each alert's tests: whether one expects it firing, and whether one expects it quiet.
fn tested_alerts(tests: &str) -> BTreeMap<String, (bool, bool)> {
    let mut tested: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_string());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts follows an alertname");
            let entry = tested.entry(name).or_default();
            if expected.trim() == "[]" {
                entry.1 = true;
            } else {
                entry.0 = true;
            }
        }
    }
    tested
}

#[test]
fn every_alert_has_a_test_that_fires_it_and_one_that_keeps_it_quiet() {
    let rules = read("deploy/prometheus/omnifold.rules.yml");
    let alerts: Vec<String> = rules
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("- alert:"))
        .map(|name| name.trim().to_string())
        .collect();
    for wanted in [
        "OmnifoldConsumerLagGrowing",
        "OmnifoldOutboxNotDraining",
        "OmnifoldDeadLetters",
        "OmnifoldEscalationsNotDelivered",
        "OmnifoldBrokerDisconnected",
        "OmnifoldReportWeekNotClosed",
    ] {
        assert!(alerts.iter().any(|a| a == wanted), "omnifold.rules.yml has {wanted}");
    }
    assert_eq!(rules.matches("severity:").count(), alerts.len(), "every alert has a severity");
    assert_eq!(rules.matches("summary:").count(), alerts.len(), "every alert has a summary");
    let tested = tested_alerts(&read("deploy/prometheus/omnifold.rules.test.yml"));
    for alert in &alerts {
        let (fires, quiet) = tested.get(alert).copied().unwrap_or_default();
        assert!(fires, "no promtool test expects {alert} firing");
        assert!(quiet, "no promtool test expects {alert} quiet");
    }
    let unknown: Vec<&String> = tested.keys().filter(|name| !alerts.contains(name)).collect();
    assert!(unknown.is_empty(), "tests of alerts the rules do not have: {unknown:?}");
}

/// The scrape targets of prometheus.yml, by job.
fn scrape_targets() -> BTreeMap<String, BTreeSet<String>> {
    let mut targets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut job = None;
    let config = read("deploy/prometheus/prometheus.yml");
    let scrape_configs = &config[config.find("\nscrape_configs:").expect("scrape_configs")..];
    for line in scrape_configs.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- job_name:") {
            job = Some(name.trim().to_string());
        } else if let Some(list) = line.strip_prefix("- targets:") {
            let job = job.clone().expect("targets belong to a job");
            let list = list.trim().trim_start_matches('[').trim_end_matches(']');
            for target in list.split(',') {
                targets.entry(job.clone()).or_default().insert(target.trim().trim_matches('"').to_string());
            }
        }
    }
    targets
}

// ---------------------------------------------------------------------------------------
// Grafana.

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/grafana/omnifold.json")).expect("the dashboard is JSON")
}

/// (panel title, expr) of every target of every panel, rows' collapsed panels included.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            exprs.push((title, target["expr"].as_str().unwrap_or_default().to_string()));
        }
    }
    exprs
}

#[test]
fn the_grafana_dashboard_has_the_shape_grafana_imports() {
    let dashboard = dashboard();
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()), "a title");
    let uid = dashboard["uid"].as_str().expect("a uid");
    assert!(
        !uid.is_empty()
            && uid.len() <= 40
            && uid.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)),
        "uid {uid:?}"
    );
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "a schemaVersion of Grafana 9 or later"
    );
    let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus data source variable"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() > 10, "panels");
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [u64; 4])> = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title").to_string();
        assert!(ids.insert(panel["id"].as_u64().expect("a numeric id")), "panel id of {title:?} is unique");
        let grid = &panel["gridPos"];
        let [x, y, w, h] =
            ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap_or_else(|| panic!("{title}: gridPos.{k}")));
        assert!(w > 0 && h > 0 && x + w <= 24, "{title:?} fits the 24 columns: {grid}");
        for (other, [ox, oy, ow, oh]) in &boxes {
            let apart = x + w <= *ox || *ox + ow <= x || y + h <= *oy || *oy + oh <= y;
            assert!(apart, "{title:?} overlaps {other:?}");
        }
        boxes.push((title.clone(), [x, y, w, h]));
        let kind = panel["type"].as_str().expect("a panel type");
        if kind == "row" {
            continue;
        }
        assert!(["timeseries", "stat"].contains(&kind), "{title:?}: panel type {kind}");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title:?} reads the chosen data source");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title:?} has targets");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert!(target["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{title:?}: an expr");
            assert!(refs.insert(target["refId"].as_str().expect("a refId")), "{title:?}: refIds unique");
        }
    }
}

// ---------------------------------------------------------------------------------------
// systemd.

const UNITS: &[&str] = &[
    "omnifold-coordinator.service",
    "omnifold-reporter.service",
    "omnifold-oncall.service",
    "omnifold-connector@.service",
];
/// The instances of the connector template that prometheus.yml scrapes.
const CONNECTORS: &[&str] = &["shopify", "amazon", "amazon-poll", "woocommerce", "drop-dir", "pushback"];

fn unit_settings(text: &str, key: &str) -> Vec<String> {
    text.lines().filter_map(|line| line.strip_prefix(&format!("{key}="))).map(str::to_string).collect()
}

#[test]
fn the_systemd_units_run_every_service_as_prometheus_scrapes_it() {
    let mut metrics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for unit in UNITS {
        let text = read(&format!("deploy/systemd/{unit}"));
        let exec = unit_settings(&text, "ExecStart");
        assert_eq!(exec.len(), 1, "{unit}: one ExecStart");
        assert!(exec[0].starts_with("/usr/local/bin/omnifold-"), "{unit}: {}", exec[0]);
        assert!(exec[0].contains("--metrics ${OMNIFOLD_METRICS_ADDR}"), "{unit} serves its metrics");
        assert_eq!(unit_settings(&text, "Restart"), ["on-failure"], "{unit}");
        assert!(!unit_settings(&text, "StateDirectory").is_empty(), "{unit}: a state directory");
        let env_files = unit_settings(&text, "EnvironmentFile");
        assert!(env_files.iter().any(|f| f == "/etc/omnifold/omnifold.env"), "{unit}: the settings");
        assert!(
            env_files.iter().any(|f| f.trim_start_matches('-') == "/etc/omnifold/secrets.env"),
            "{unit}: secrets"
        );
        let state = unit_settings(&text, "StateDirectory").join(" ");
        if unit.starts_with("omnifold-coordinator") || unit.starts_with("omnifold-reporter") {
            assert!(exec[0].contains("--instance-id %H-"), "{unit}: a stable static member id");
            assert!(exec[0].contains(&format!("--store /var/lib/{state}")), "{unit}: the store in {state}");
        }
        let job = match *unit {
            "omnifold-coordinator.service" => "omnifold-coordinator",
            "omnifold-reporter.service" => "omnifold-reporter",
            "omnifold-oncall.service" => "omnifold-oncall",
            _ => "omnifold-connector",
        };
        let addrs: Vec<String> = if unit.contains('@') {
            CONNECTORS
                .iter()
                .map(|name| read(&format!("deploy/systemd/etc/connector-{name}.env")))
                .flat_map(|env| unit_settings(&env, "OMNIFOLD_METRICS_ADDR"))
                .collect()
        } else {
            unit_settings(&text, "Environment")
                .iter()
                .filter_map(|setting| setting.strip_prefix("OMNIFOLD_METRICS_ADDR=").map(str::to_string))
                .collect()
        };
        assert!(!addrs.is_empty(), "{unit}: its metrics address");
        metrics.entry(job.to_string()).or_default().extend(addrs);
    }
    assert_eq!(metrics, scrape_targets(), "prometheus.yml scrapes the addresses the units serve");
}

#[test]
fn systemd_analyze_verifies_the_units() {
    let Some(analyze) = find_binary("systemd-analyze") else {
        println!("SKIPPED systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    // `verify` fails on an ExecStart binary that is not installed, and the omnifold binaries
    // are not (they would be in /usr/local/bin): verify copies whose ExecStart runs /bin/true
    // with the same arguments.
    let dir = tempfile::tempdir().unwrap();
    for unit in UNITS {
        let text = read(&format!("deploy/systemd/{unit}"));
        let copy: String = text
            .lines()
            .map(|line| match line.strip_prefix("ExecStart=/usr/local/bin/") {
                Some(command) => {
                    format!("ExecStart=/bin/true {}\n", &command[command.find(' ').unwrap_or(0)..].trim())
                }
                None => format!("{line}\n"),
            })
            .collect();
        std::fs::write(dir.path().join(unit), copy).unwrap();
    }
    let mut paths: Vec<PathBuf> =
        UNITS.iter().filter(|unit| !unit.contains('@')).map(|unit| dir.path().join(unit)).collect();
    paths.extend(CONNECTORS.iter().map(|name| dir.path().join(format!("omnifold-connector@{name}.service"))));
    let output = Command::new(&analyze)
        .args(["verify", "--man=no", "--recursive-errors=no"])
        .args(&paths)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("systemd-analyze runs");
    let text = shown(&output);
    assert!(output.status.success(), "systemd-analyze verify failed:\n{text}");
    let units: Vec<&str> = UNITS.iter().map(|u| u.trim_end_matches(".service")).collect();
    let about_ours: Vec<&str> = text.lines().filter(|line| units.iter().any(|u| line.contains(u))).collect();
    assert!(about_ours.is_empty(), "systemd-analyze verify complains:\n{}", about_ours.join("\n"));
}

// ---------------------------------------------------------------------------------------
// A real Prometheus scraping a running coordinator.

fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A GET of Prometheus's HTTP API; `None` until it answers with status "success".
async fn api(client: &reqwest::Client, base: &str, path: &str) -> Option<serde_json::Value> {
    let response = client.get(format!("{base}{path}")).send().await.ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    (body["status"] == "success").then(|| body["data"].clone())
}

/// The value of an instant query's only series, once there is exactly one.
async fn query_one(client: &reqwest::Client, base: &str, query: &str) -> Option<f64> {
    let data = api(client, base, &format!("/api/v1/query?query={}", percent_encoded(query))).await?;
    let result = data["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

/// Polls `probe` every 250 ms until it gives a value `accept` takes; panics after `timeout`.
async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    log: &Path,
    mut probe: impl FnMut() -> F,
    accept: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(value) = probe().await {
            if accept(&value) {
                return value;
            }
            last = Some(value);
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("timed out waiting for {what} (last: {last:?}); prometheus log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn stock_counts(count: usize) -> String {
    const T0: i64 = 1_794_182_400_000;
    (0..count)
        .map(|n| {
            format!(
                r#"{{"event_id":"count-{n}","occurred_at_ms":{},"type":"StockCounted","sku":"SKU-{n}","location_id":"wh-nj","on_hand":{}}}"#,
                T0 + n as i64 * 60_000,
                100 + n
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A port found free can be taken by a parallel test before the exporter binds it, so a bind
/// that finds it in use tries another; the recorder is installed only after a bind succeeds.
fn serve_metrics_on_a_free_port() -> std::net::SocketAddr {
    let mut last_error = String::new();
    for _ in 0..10 {
        let addr = free_local_addr();
        match omnifold_runtime::telemetry::serve_metrics(addr) {
            Ok(()) => return addr,
            Err(e) if e.contains("in use") => last_error = e,
            Err(e) => panic!("metrics served: {e}"),
        }
    }
    panic!("metrics served: {last_error}")
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_a_running_coordinator_and_evaluates_the_rules() {
    let Some(prometheus) = find_binary("prometheus") else {
        println!(
            "SKIPPED the Prometheus scrape: prometheus is not installed (apt-get install -y prometheus)"
        );
        return;
    };
    // the coordinator in this process serves its metrics as `run --metrics ADDR` does
    let metrics = serve_metrics_on_a_free_port();
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let store = tempfile::tempdir().unwrap();
    let coordinator = spawn_coordinator(CoordinatorOptions {
        exit_when_caught_up: false,
        ..coordinator_options(&broker, store.path())
    });
    const EVENTS: usize = 5;
    let report = publish_ndjson(&broker, &stock_counts(EVENTS)).await;
    assert_eq!(report.published, EVENTS, "{report:?}");

    let dir = tempfile::tempdir().unwrap();
    let rules = repo().join("deploy/prometheus/omnifold.rules.yml").canonicalize().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules:?}\n\
         scrape_configs:\n  - job_name: omnifold-coordinator\n    static_configs:\n      - targets: [\"{metrics}\"]\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let web = free_local_addr();
    let log = dir.path().join("prometheus.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("prometheus starts");
    let _prometheus = Killed(child);
    let (client, base) = (reqwest::Client::new(), format!("http://{web}"));
    let within = Duration::from_secs(90);

    let consumed = eventually(
        "every event consumed, as scraped",
        within,
        &log,
        || query_one(&client, &base, r#"omnifold_events_consumed_total{job="omnifold-coordinator"}"#),
        |value| *value >= EVENTS as f64,
    )
    .await;
    assert_eq!(consumed, EVENTS as f64);
    let connected = query_one(&client, &base, "omnifold_broker_connected").await;
    assert_eq!(connected, Some(1.0), "the coordinator reaches the broker");
    eventually(
        "the outbox empty, as scraped",
        within,
        &log,
        || query_one(&client, &base, "omnifold_outbox_pending_records"),
        |pending| *pending == 0.0,
    )
    .await;

    // the rules load and evaluate against the real series, and a healthy coordinator
    // raises none of them
    let alerts: BTreeSet<String> = read("deploy/prometheus/omnifold.rules.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|a| a.trim().to_string())
        .collect();
    let evaluated = eventually(
        "every rule evaluated",
        within,
        &log,
        || async {
            let data = api(&client, &base, "/api/v1/rules").await?;
            let rules: Vec<(String, String)> = data["groups"]
                .as_array()?
                .iter()
                .flat_map(|group| group["rules"].as_array().into_iter().flatten())
                .map(|rule| {
                    (
                        rule["name"].as_str().unwrap_or_default().into(),
                        rule["health"].as_str().unwrap_or_default().into(),
                    )
                })
                .collect();
            Some(rules)
        },
        |rules| rules.len() == alerts.len() && rules.iter().all(|(_, health)| health == "ok"),
    )
    .await;
    let names: BTreeSet<String> = evaluated.into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, alerts);
    let active = api(&client, &base, "/api/v1/alerts").await.expect("alerts");
    assert_eq!(active["alerts"].as_array().map(Vec::len), Some(0), "no alert is pending or firing: {active}");

    coordinator.stop().await;
}

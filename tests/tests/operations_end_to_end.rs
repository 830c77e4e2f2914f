//! The operations readback and the channel handover against a real broker: a small week of
//! events on the example contract (deploy/local/contract.toml) goes through the coordinator
//! and the reporter; then `omnifold-reporter operations`, `handover amazon` and `serve`
//! (the package's `e2e-reporter`, same command line) read the alerts, escalations,
//! availability, ledger and event topics into their store. What they show is checked
//! against what the topics hold, the served page against records arriving while it runs,
//! and both pages in headless Chromium at 1280 px.
//!
//! The week (2026-W46; T0 is Monday 2026-11-09 00:00 UTC):
//! - amazon lists SKU-0001 at 45.00 under its MAP of 49.00 (MAP_VIOLATION, paged to amazon)
//!   and 14.00 below shopify's 59.00 (CHANNEL_PRICE_SPREAD); both are amazon's;
//! - SKU-0004 is scarce (30 on hand, threshold 40); 20 units are written off (STOCK_DROP,
//!   paged to operations), then wholesale places 10 past its number of 0: ALLOCATION_BREACH,
//!   OVERSELL of the shared pool (paged to wholesale) and LOW_COVER, all wholesale's;
//! - SKU-0005 is scarce; shopify places 8 past its number (ALLOCATION_BREACH, LOW_COVER);
//!   a receipt of 200 two days in resolves the LOW_COVER and ends the scarcity;
//! - shipments on shopify, amazon and eu-market give the ledger and the week's figures; an
//!   event in W47 closes W46.
//!
//! Event ids follow the connectors' forms where a connector would have sent the event
//! (`amazon:myi:…`, `amazon:order:…`, `shopify:order:…`, `b2b:order:…`), so the handover can
//! tell its sources.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::chromium::{artifacts_dir, find_chromium, layout, rendered_dom, screenshot};
use common::{contract_path, kafka, read_to_end};
use omnifold_proto::{Alert, AlertKind, AlertState, ContributionSnapshot, LedgerEntry, LedgerKind, Severity};
use omnifold_reporter::handover::HandoverView;
use omnifold_reporter::handover_page::{render_handover_markdown, render_handover_page};
use omnifold_reporter::operations_feed::{HANDOVER_FEEDS, OperationsFeed};
use omnifold_reporter::operations_table::render_operations_table;
use omnifold_reporter::operations_view::OperationsView;
use omnifold_runtime::load_contract;
use omnifold_testkit::Broker;
use prost::Message as _;
use rust_decimal::Decimal;

/// 2026-11-09T00:00:00Z, the Monday starting 2026-W46.
const T0: i64 = 1_794_182_400_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const REPORTER: &str = env!("CARGO_BIN_EXE_e2e-reporter");

fn money(amount: &str, currency: &str) -> String {
    format!(r#"{{"amount":"{amount}","currency":"{currency}"}}"#)
}

/// One event in the contract's JSON form.
fn event(id: &str, channel: &str, at: i64, body: &str) -> String {
    let channel = if channel.is_empty() { String::new() } else { format!(r#""channel":"{channel}","#) };
    format!(r#"{{"event_id":"{id}",{channel}"occurred_at_ms":{at},{body}}}"#)
}

fn count(sku: &str, location: &str, on_hand: i64) -> String {
    format!(r#""type":"StockCounted","sku":"{sku}","location_id":"{location}","on_hand":{on_hand}"#)
}

fn placed(order: &str, sku: &str, quantity: i64, price: &str, extra: &str) -> String {
    format!(
        r#""type":"OrderLinePlaced","order_id":"{order}","line_id":"1","sku":"{sku}","quantity":{quantity},"unit_price":{}{extra}"#,
        money(price, "USD")
    )
}

fn shipped(order: &str, sku: &str, quantity: i64, location: &str, cost: &str) -> String {
    format!(
        r#""type":"OrderLineShipped","order_id":"{order}","line_id":"1","sku":"{sku}","quantity":{quantity},"location_id":"{location}","fulfillment_cost":{}"#,
        money(cost, "USD")
    )
}

fn week() -> String {
    let cost = |sku: &str| format!(r#""type":"CostSet","sku":"{sku}","unit_cost":{}"#, money("10", "USD"));
    let price = |sku: &str, amount: &str| {
        format!(r#""type":"PriceSet","sku":"{sku}","price":{}"#, money(amount, "USD"))
    };
    let adjusted = |sku: &str, delta: i64, reason: &str| {
        format!(
            r#""type":"StockAdjusted","sku":"{sku}","location_id":"wh-nj","delta":{delta},"reason":"{reason}""#
        )
    };
    let eu_placed = format!(
        r#""type":"OrderLinePlaced","order_id":"EU-1","line_id":"1","sku":"SKU-0001","quantity":1,"unit_price":{}"#,
        money("50", "EUR")
    );
    let lines = [
        event(
            "ev-c1",
            "",
            T0,
            &format!(r#""type":"CostSet","sku":"SKU-0001","unit_cost":{}"#, money("20", "USD")),
        ),
        event("ev-c4", "", T0, &cost("SKU-0004")),
        event("ev-c5", "", T0, &cost("SKU-0005")),
        event("ev-s1", "", T0, &count("SKU-0001", "wh-nj", 200)),
        event("amazon:myi:r1:line:1", "", T0, &count("SKU-0001", "fba-us", 40)),
        event("ev-s4", "", T0, &count("SKU-0004", "wh-nj", 30)),
        event("ev-s5", "", T0, &count("SKU-0005", "wh-nj", 10)),
        event("shopify:webhook:w1:variant:v1:price", "shopify", T0 + HOUR, &price("SKU-0001", "59.00")),
        event("ev-p2", "amazon", T0 + HOUR, &price("SKU-0001", "45.00")),
        event(
            "shopify:order:1001:line:1:placed",
            "shopify",
            T0 + 2 * HOUR,
            &placed("SHO-1001", "SKU-0001", 2, "59", ""),
        ),
        event(
            "amazon:order:111-1:item:1:placed",
            "amazon",
            T0 + 2 * HOUR,
            &placed(
                "111-1",
                "SKU-0001",
                3,
                "45",
                &format!(r#","channel_fee":{},"location_id":"fba-us""#, money("20.25", "USD")),
            ),
        ),
        event("ev-e1", "eu-market", T0 + 3 * HOUR, &eu_placed),
        event(
            "shopify:order:1002:line:1:placed",
            "shopify",
            T0 + 3 * HOUR,
            &placed("SHO-1002", "SKU-0004", 3, "30", ""),
        ),
        event(
            "shopify:order:1003:line:1:placed",
            "shopify",
            T0 + 4 * HOUR,
            &placed("SHO-1003", "SKU-0005", 8, "30", ""),
        ),
        event("ev-d4", "", T0 + 5 * HOUR, &adjusted("SKU-0004", -20, "damage")),
        event(
            "b2b:order:PO-77:line:1:placed",
            "wholesale",
            T0 + 6 * HOUR,
            &placed("PO-77", "SKU-0004", 10, "18", ""),
        ),
        event(
            "shopify:fulfillment:5001:line:1:shipped",
            "shopify",
            T0 + DAY,
            &shipped("SHO-1001", "SKU-0001", 2, "wh-nj", "5"),
        ),
        event(
            "amazon:order:111-1:item:1:shipped:1",
            "amazon",
            T0 + DAY,
            &shipped("111-1", "SKU-0001", 3, "fba-us", "9"),
        ),
        event("ev-e2", "eu-market", T0 + DAY, &shipped("EU-1", "SKU-0001", 1, "wh-nj", "4")),
        event("ev-r5", "", T0 + 2 * DAY, &adjusted("SKU-0005", 200, "receipt")),
        // 2026-W47: closes W46 for the reporter
        event("ev-close", "", T0 + 7 * DAY + 2 * HOUR, &cost("SKU-0009")),
    ];
    lines.join("\n") + "\n"
}

/// Runs `e2e-reporter <args>` to its end; returns its standard output.
async fn reporter(args: &[&str]) -> String {
    let mut command = tokio::process::Command::new(REPORTER);
    command.args(args).env("RUST_LOG", "warn").kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("the reporter finished in time")
        .expect("the reporter ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "e2e-reporter {args:?} failed: {stderr}");
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// The coordinator, then the reporter, each until caught up.
async fn fold_the_week(broker: &Broker) {
    common::create_topics(broker).await;
    let report = common::publish_ndjson(broker, &week()).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let coordinator = tempfile::tempdir().unwrap();
    common::run_until_caught_up(broker, coordinator.path()).await;
    let store = tempfile::tempdir().unwrap();
    let mut run = common::service_command(REPORTER, broker, store.path(), 500);
    run.arg("--exit-when-caught-up");
    let status = tokio::task::spawn_blocking(move || run.status()).await.unwrap().expect("the reporter runs");
    assert!(status.success(), "the reporter failed");
}

/// The open conflicts the alerts topic implies: raised, not resolved, not one-shot.
fn open_alert_ids(alerts: &[Alert]) -> BTreeSet<String> {
    let mut open = BTreeSet::new();
    for alert in alerts {
        match AlertState::try_from(alert.state) {
            Ok(AlertState::Raised) if alert.kind != AlertKind::AllocationBreach as i32 => {
                open.insert(alert.alert_id.clone());
            }
            Ok(AlertState::Resolved) => {
                open.remove(&alert.alert_id);
            }
            _ => {}
        }
    }
    open
}

fn latest_snapshots(records: &[omnifold_testkit::Record]) -> BTreeMap<String, ContributionSnapshot> {
    let mut latest: BTreeMap<String, ContributionSnapshot> = BTreeMap::new();
    for record in records {
        let snapshot = ContributionSnapshot::decode(record.value.as_deref().unwrap_or_default()).unwrap();
        let key = format!("{}/{}", snapshot.week, snapshot.channel);
        if latest.get(&key).is_none_or(|s| snapshot.revision >= s.revision) {
            latest.insert(key, snapshot);
        }
    }
    latest
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap_or_default()
}

/// What the topics hold, read independently of the reporter.
struct Published {
    alerts: Vec<Alert>,
    pages: Vec<omnifold_proto::Escalation>,
    snapshots: BTreeMap<String, ContributionSnapshot>,
    ledger: Vec<LedgerEntry>,
}

async fn published(broker: &Broker) -> Published {
    let topics = common::topics();
    let ledger = read_to_end(broker, &topics.ledger).await;
    Published {
        alerts: common::alerts(&read_to_end(broker, &topics.alerts).await),
        pages: common::escalations(&read_to_end(broker, &topics.escalations).await),
        snapshots: latest_snapshots(&read_to_end(broker, &topics.snapshots).await),
        ledger: ledger
            .iter()
            .map(|r| LedgerEntry::decode(r.value.as_deref().unwrap_or_default()).unwrap())
            .collect(),
    }
}

/// The feed over a store a finished command left behind.
async fn feed_over(broker: &Broker, store: &Path) -> OperationsFeed {
    let (options, store) = (kafka(broker), store.to_path_buf());
    let rules = load_contract(&contract_path()).unwrap();
    tokio::task::spawn_blocking(move || OperationsFeed::open(options, common::topics(), rules, &store))
        .await
        .unwrap()
        .expect("the operations store opens")
}

fn check_operations_view(view: &OperationsView, published: &Published) {
    assert_eq!(view.now_ms, T0 + 2 * DAY, "the latest event time of alerts, pages and availability");
    let shown: BTreeSet<String> =
        view.conflicts.iter().flat_map(|g| &g.rows).map(|r| r.alert_id.clone()).collect();
    assert_eq!(shown, open_alert_ids(&published.alerts), "open = raised - resolved - one-shot");
    let rows: Vec<_> = view.conflicts.iter().flat_map(|g| &g.rows).collect();
    let map = rows.iter().find(|r| r.kind == "MAP_VIOLATION").expect("amazon's MAP violation is open");
    assert_eq!(
        (map.sku.as_str(), map.subject.as_str(), map.accountable.as_str(), map.owner.as_str(), map.age_ms),
        ("SKU-0001", "channel amazon", "amazon", "Luis Ortega", 2 * DAY - HOUR)
    );
    assert_eq!(map.action, "Luis Ortega to bring amazon's price of SKU-0001 back up to MAP");
    let oversell =
        rows.iter().find(|r| r.kind == "OVERSELL").expect("the shared pool of SKU-0004 is oversold");
    assert_eq!(
        (
            oversell.sku.as_str(),
            oversell.subject.as_str(),
            oversell.accountable.as_str(),
            oversell.owner.as_str()
        ),
        ("SKU-0004", "pool shared", "wholesale", "Dev Patel")
    );
    assert_eq!(oversell.action, "Dev Patel to stop wholesale selling past its allocation of SKU-0004");
    assert!(!rows.iter().any(|r| r.sku == "SKU-0005"), "SKU-0005's LOW_COVER was resolved");
    assert!(
        published.alerts.iter().any(|a| a.sku == "SKU-0005" && a.state == AlertState::Resolved as i32),
        "the topic holds the resolution"
    );
    let severities: Vec<&str> = rows.iter().map(|r| r.severity.as_str()).collect();
    assert!(severities.windows(2).all(|w| rank(w[0]) >= rank(w[1])), "most severe first: {severities:?}");

    let mut by_rule: BTreeMap<(String, String), usize> = BTreeMap::new();
    for page in &published.pages {
        let rule = omnifold_proto::EscalationRule::try_from(page.rule).unwrap().name().to_string();
        *by_rule.entry((rule, page.channel.clone())).or_default() += 1;
    }
    let shown: BTreeMap<(String, String), usize> =
        view.page_groups.iter().map(|g| ((g.rule.clone(), g.target.clone()), g.count)).collect();
    assert_eq!(shown, by_rule, "every page of the week, by rule and target");
    for expected in [("CRITICAL_ALERT", "amazon"), ("CRITICAL_ALERT", "wholesale"), ("STOCK_DROP", "global")]
    {
        assert!(shown.contains_key(&(expected.0.to_string(), expected.1.to_string())), "{expected:?} paged");
    }
    let drop = view.page_groups.iter().find(|g| g.rule == "STOCK_DROP").unwrap();
    assert_eq!((drop.owner.as_str(), drop.on_call.as_str()), ("Priya Raman", "pd-operations"));

    let scarce: Vec<&str> = view.scarcity.iter().map(|s| s.sku.as_str()).collect();
    assert_eq!(scarce, ["SKU-0004"], "SKU-0005 left scarcity with its receipt");

    let w46 =
        |channel: &str| published.snapshots.get(&format!("2026-W46/{channel}")).map(|s| dec(&s.contribution));
    for attention in &view.attention {
        let raised: Vec<&Alert> = published
            .alerts
            .iter()
            .filter(|a| a.state == AlertState::Raised as i32 && a.accountable == attention.party)
            .collect();
        let target = if attention.party == "operations" { "global" } else { attention.party.as_str() };
        let pages = published.pages.iter().filter(|p| p.channel == target).count();
        assert_eq!(attention.alerts, raised.len(), "{}", attention.party);
        assert_eq!(
            attention.critical,
            raised.iter().filter(|a| a.severity == Severity::Critical as i32).count()
        );
        assert_eq!(
            (attention.pages, attention.attention),
            (pages, raised.len() + pages),
            "{}",
            attention.party
        );
        assert_eq!(
            attention.contribution,
            w46(&attention.party),
            "{}: the week's contribution",
            attention.party
        );
    }
    let wholesale = view.attention.iter().find(|a| a.party == "wholesale").unwrap();
    assert_eq!((wholesale.open, wholesale.alerts, wholesale.pages), (2, 3, 1), "breach, oversell, low cover");
    assert_eq!(view.week.as_deref(), Some("2026-W46"));
}

fn rank(severity: &str) -> u8 {
    omnifold_reporter::operations_view::severity_rank(severity)
}

fn check_handover(view: &HandoverView, published: &Published) {
    let rule = |label: &str| view.rules.iter().find(|r| r.label == label).map(|r| r.value.clone()).unwrap();
    assert_eq!(rule("pool"), "sells from the shared pool (wh-nj, 3pl-rotterdam); its own pool: fba-us");
    assert_eq!(rule("owner"), "Luis Ortega");
    let weeks: Vec<&str> = view.weeks.iter().map(|w| w.week.as_str()).collect();
    assert_eq!(weeks, ["2026-W46"], "the one closed week");
    let snapshot = &published.snapshots["2026-W46/amazon"];
    assert_eq!(view.weeks[0].row.contribution, dec(&snapshot.contribution));
    assert_eq!(view.weeks[0].row.next_action, snapshot.next_action);
    let open: BTreeSet<&str> = view.conflicts.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(
        open,
        BTreeSet::from(["CHANNEL_PRICE_SPREAD", "LOW_COVER", "MAP_VIOLATION", "OVERSELL"]),
        "amazon's own, and the shared pool's it sells from"
    );
    let pages: Vec<&str> = view.pages.iter().map(|p| p.rule.as_str()).collect();
    assert_eq!(pages, ["CRITICAL_ALERT"]);
    // SKU-0001 on amazon from the ledger: 3 x 45 - 20.25 fee - 3 x 20 COGS - 9 fulfillment
    let from_ledger: Decimal = published
        .ledger
        .iter()
        .filter(|e| e.channel == "amazon" && e.sku == "SKU-0001" && e.kind == LedgerKind::Shipment as i32)
        .map(|e| {
            dec(&e.gross_revenue)
                - dec(&e.discount)
                - dec(&e.channel_fee)
                - dec(&e.cogs)
                - dec(&e.fulfillment_cost)
        })
        .sum();
    assert_eq!(from_ledger, Decimal::new(4575, 2));
    let top = &view.top_contribution[0];
    assert_eq!((top.sku.as_str(), top.contribution, top.units), ("SKU-0001", from_ledger, 3));
    let conflicts: Vec<(&str, usize, usize)> =
        view.top_conflicts.iter().map(|s| (s.sku.as_str(), s.alerts, s.accountable)).collect();
    // SKU-0005's resolved LOW_COVER named every shared seller, amazon among them
    assert_eq!(conflicts, [("SKU-0001", 2, 2), ("SKU-0004", 2, 0), ("SKU-0005", 1, 0)]);
    let sources: BTreeMap<(&str, &str), u64> =
        view.sources.iter().map(|s| ((s.connector.as_str(), s.adapter.as_str()), s.events)).collect();
    assert_eq!(
        sources,
        BTreeMap::from([
            (("amazon", "FBA inventory reports (watched directory)"), 1),
            (("amazon", "order change notifications"), 1),
            (("amazon", "order items (POST /amazon/order-items)"), 1),
            (("ndjson", "contract JSON lines"), 1),
        ])
    );
    let shared: u64 = view.shared_sources.iter().map(|s| s.events).sum();
    assert_eq!(shared, 9, "costs and the stock events at wh-nj, by the generic connector");
}

/// The served operations page once `done` holds for it.
async fn served_until(addr: std::net::SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("http://{addr}/operations")).send().await
            && response.status().is_success()
        {
            let page = response.text().await.unwrap();
            if done(&page) {
                return page;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the served page never showed {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn publish_alert(broker: &Broker, alert: &Alert) {
    broker
        .produce(&common::topics().alerts, alert.sku.as_bytes(), &alert.encode_to_vec())
        .await
        .expect("alert sent");
}

/// `serve --contract` shows the operations page and follows the alerts as they arrive.
async fn check_serve(broker: &Broker) {
    let store = tempfile::tempdir().unwrap();
    let addr = common::free_local_addr();
    let contract = contract_path();
    let mut child = common::Killed(
        std::process::Command::new(REPORTER)
            .args(["serve", "--bootstrap", &broker.bootstrap(), "--listen", &addr.to_string(), "--store"])
            .arg(store.path())
            .arg("--contract")
            .arg(&contract)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    let page = served_until(addr, "amazon's MAP violation", |p| p.contains("map_violation/SKU-0001")).await;
    assert!(page.contains("<a href=\"/\">Weekly contribution</a>"));
    let late = Alert {
        alert_id: "negative_stock/SKU-0042/location=3pl-rotterdam/late-1".into(),
        kind: AlertKind::NegativeStock as i32,
        state: AlertState::Raised as i32,
        severity: Severity::Critical as i32,
        sku: "SKU-0042".into(),
        location: "3pl-rotterdam".into(),
        pool: "shared".into(),
        accountable: "operations".into(),
        summary: "on-hand at 3pl-rotterdam is -2, below zero".into(),
        occurred_at_ms: T0 + 2 * DAY + 3 * HOUR,
        ..Alert::default()
    };
    publish_alert(broker, &late).await;
    let page = served_until(addr, "the alert raised while serving", |p| p.contains(&late.alert_id)).await;
    assert!(page.contains("Priya Raman to recount SKU-0042 at 3pl-rotterdam and correct the record"));
    let now = format!("data-now-ms=\"{}\"", T0 + 2 * DAY + 3 * HOUR);
    assert!(page.contains(&now), "now moved to the new alert's time");
    let text = reqwest::get(format!("http://{addr}/operations.txt")).await.unwrap().text().await.unwrap();
    assert!(text.starts_with("operations at 2026-11-11 03:00 UTC"), "{text}");
    let resolved = Alert {
        state: AlertState::Resolved as i32,
        occurred_at_ms: T0 + 2 * DAY + 4 * HOUR,
        resolved_by_event_id: "late-2".into(),
        ..late.clone()
    };
    publish_alert(broker, &resolved).await;
    served_until(addr, "the resolution", |p| !p.contains(&late.alert_id)).await;
    let weekly = reqwest::get(format!("http://{addr}/")).await.unwrap().text().await.unwrap();
    assert!(weekly.contains("<span id=\"week\">2026-W46</span>"), "the weekly page is served beside it");
    child.kill().expect("serve stops");
    let _ = child.wait();
}

/// Both pages in a real browser: the figures rendered, nothing wider than 1280 px, and a
/// screenshot each in the test artifacts.
async fn check_in_chromium(pages: &[(&Path, &[String])]) {
    let Some(binary) = find_chromium() else {
        println!("SKIPPED the browser check: chromium is not installed (apt-get install -y chromium)");
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    for (file, expected) in pages {
        let dom = rendered_dom(&binary, profile.path(), file).await;
        std::fs::write(file.with_extension("dom.html"), &dom).unwrap();
        for text in *expected {
            assert!(dom.contains(text.as_str()), "{} as rendered lacks {text}", file.display());
        }
        let laid = layout(&binary, profile.path(), file, 1280).await;
        assert_eq!(laid.inner_width, 1280, "{laid:?}");
        assert!(laid.scroll_width <= laid.inner_width, "{} overflows: {laid:?}", file.display());
        assert!(
            laid.overflowing.is_empty(),
            "{} has elements wider than their box: {laid:?}",
            file.display()
        );
        let png = file.with_extension("png");
        let size = screenshot(&binary, profile.path(), file, &png, (1280, 2400)).await;
        assert!(size > 20_000, "screenshot {} is {size} bytes", png.display());
        println!("screenshot: {}", png.display());
    }
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a utf-8 path")
}

#[tokio::test(flavor = "multi_thread")]
async fn operations_and_handover_in_a_terminal_over_http_and_in_a_browser() {
    let broker = Broker::start().await.expect("broker starts");
    fold_the_week(&broker).await;
    let published = published(&broker).await;
    let (bootstrap, contract) = (broker.bootstrap(), contract_path());
    let store = tempfile::tempdir().unwrap();
    let artifacts = artifacts_dir();
    let operations_html: PathBuf = artifacts.join("operations.html");
    let common_args =
        ["--bootstrap", &bootstrap, "--contract", path_arg(&contract), "--store", path_arg(store.path())];

    // `operations`: the table in the terminal, and the page written
    let mut args = vec!["operations"];
    args.extend(common_args);
    args.extend(["--out", path_arg(&operations_html)]);
    let table = reporter(&args).await;
    println!("{table}");
    let feed = feed_over(&broker, store.path()).await;
    let view = {
        let feed = feed.clone();
        tokio::task::spawn_blocking(move || feed.operations_view()).await.unwrap().unwrap()
    };
    assert!(table.starts_with(&render_operations_table(&view)), "the command prints the view");
    assert!(table.starts_with("operations at 2026-11-11 00:00 UTC (latest event time seen): 4 open conflicts (2 critical), 3 pages"), "{table}");
    let map_line = table.lines().find(|l| l.starts_with("MAP_VIOLATION")).expect("a MAP_VIOLATION line");
    for cell in ["SKU-0001", "channel amazon", "1d 23h", "Luis Ortega", "back up to MAP"] {
        assert!(map_line.contains(cell), "{cell} missing from {map_line:?}");
    }
    check_operations_view(&view, &published);
    drop(feed);

    // `handover amazon`: the page and the Markdown
    let handover_html = artifacts.join("handover-amazon.html");
    let handover_md = artifacts.join("handover-amazon.md");
    let mut args = vec!["handover", "amazon"];
    args.extend(common_args);
    args.extend(["--out", path_arg(&handover_html), "--markdown", path_arg(&handover_md)]);
    let said = reporter(&args).await;
    assert!(said.starts_with("wrote "), "{said}");
    let feed = feed_over(&broker, store.path()).await;
    let handover = {
        let feed = feed.clone();
        tokio::task::spawn_blocking(move || {
            feed.catch_up(&HANDOVER_FEEDS).expect("nothing more to read");
            feed.handover_view("amazon")
        })
        .await
        .unwrap()
        .unwrap()
    };
    drop(feed);
    assert_eq!(std::fs::read_to_string(&handover_html).unwrap(), render_handover_page(&handover));
    assert_eq!(std::fs::read_to_string(&handover_md).unwrap(), render_handover_markdown(&handover));
    check_handover(&handover, &published);
    let markdown = std::fs::read_to_string(&handover_md).unwrap();
    assert!(markdown.contains("| SKU-0001 | 45.75 |"), "{markdown}");

    check_serve(&broker).await;

    let w46 = &published.snapshots["2026-W46/amazon"];
    let operations_expected = [
        r#"data-kind="MAP_VIOLATION" data-sku="SKU-0001" data-accountable="amazon""#.to_string(),
        "Dev Patel to stop wholesale selling past its allocation of SKU-0004".to_string(),
        r#"<tr data-rule="STOCK_DROP" data-target="global" data-count="1">"#.to_string(),
        r#"<tr data-sku="SKU-0004">"#.to_string(),
        format!(r#"data-field="contribution" data-value="{}">"#, w46.contribution),
    ];
    let handover_expected = [
        r#"<dd data-rule="pool">sells from the shared pool (wh-nj, 3pl-rotterdam); its own pool: fba-us</dd>"#.to_string(),
        format!(r#"<tr data-week="2026-W46"><td>2026-W46</td><td class="num" data-field="net_revenue" data-value="{}">"#, w46.net_revenue),
        r#"data-field="contribution" data-value="45.75">45.75</td>"#.to_string(),
        r#"<tr data-connector="amazon" data-adapter="FBA inventory reports (watched directory)" data-events="1">"#.to_string(),
    ];
    check_in_chromium(&[
        (operations_html.as_path(), &operations_expected[..]),
        (handover_html.as_path(), &handover_expected[..]),
    ])
    .await;
}

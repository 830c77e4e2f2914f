//! A price war published through the generic connector into a real broker: the coordinator
//! raises exactly the alerts and pages of tests/scenarios/price_war.json, and its HTTP
//! endpoint (and the `price` command on top of it) names the event behind every number.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use omnifold_coordinator::CoordinatorOptions;
use omnifold_proto::{Alert, AlertState};
use omnifold_testkit::Broker;
use serde_json::Value;

fn scenario() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/price_war.json");
    let text = std::fs::read_to_string(&path).expect("the scenario file reads");
    serde_json::from_str(&text).expect("the scenario is json")
}

/// The scenario's events as NDJSON, one line each.
fn ndjson(scenario: &Value) -> String {
    let steps = scenario["steps"].as_array().expect("steps");
    steps.iter().map(|step| step["event"].to_string()).collect::<Vec<_>>().join("\n")
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().expect("a list").iter().map(|v| v.as_str().expect("a string").to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_price_war_raises_the_expected_alerts_and_pages_and_explains_its_prices() {
    let scenario = scenario();
    let expect = &scenario["expect"];
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let report = publish_ndjson(&broker, &ndjson(&scenario)).await;
    assert_eq!(report.published, scenario["steps"].as_array().unwrap().len(), "{report:?}");
    assert!(report.refused.is_empty(), "{report:?}");

    let store = tempfile::tempdir().unwrap();
    run_until_caught_up(&broker, store.path()).await;
    let topics = topics();
    let want_alerts = strings(&expect["alerts"]);
    let records: Vec<String> =
        alerts(&read(&broker, &topics.alerts, want_alerts.len()).await).iter().map(alert_record).collect();
    assert_eq!(records, want_alerts);
    let want_pages = strings(&expect["escalations"]);
    let pages = escalations(&read(&broker, &topics.escalations, want_pages.len()).await);
    let ids: Vec<String> = pages.iter().map(|e| e.escalation_id.clone()).collect();
    assert_eq!(ids, want_pages);
    assert_eq!(pages[0].channel, "shopify");
    assert_eq!(pages[0].owner, "Maya Chen");
    assert_eq!(pages[2].channel, "amazon");
    assert_eq!(pages[2].on_call, "pd-marketplaces");

    // the same store, now served over http while the coordinator runs; the store releases the
    // previous run's file lock from a background thread, a few milliseconds after it returned
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = free_local_addr();
    let options = CoordinatorOptions {
        http: Some(addr),
        exit_when_caught_up: false,
        ..coordinator_options(&broker, store.path())
    };
    let coordinator = spawn_coordinator(options);
    let sku = scenario["sku"].as_str().unwrap();
    let (status, body) = get_when_up(&format!("http://{addr}/v1/prices/{sku}")).await;
    assert_eq!(status, 200, "{body}");
    check_prices(&body, &expect["prices"]);

    let (status, body) = get_when_up(&format!("http://{addr}/v1/prices/SKU-NEVER-SEEN")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "unknown sku SKU-NEVER-SEEN");

    let table = price_command(sku, &addr.to_string()).await;
    check_table(&table);
    coordinator.stop().await;

    let again = alerts(&read(&broker, &topics.alerts, want_alerts.len()).await);
    assert_eq!(again.len(), want_alerts.len(), "the second run published nothing new");
}

/// A RESOLVED COMPETITOR_UNDERCUT names its competitor, channel and owner as its RAISED record
/// did, and quotes the prices that ended it (CONTRACT.md section 5).
#[tokio::test(flavor = "multi_thread")]
async fn a_resolved_undercut_names_its_competitor_and_the_prices_that_ended_it() {
    let scenario = scenario();
    let broker = Broker::start().await.expect("broker starts");
    create_topics(&broker).await;
    let report = publish_ndjson(&broker, &ndjson(&scenario)).await;
    assert!(report.refused.is_empty(), "{report:?}");
    let store = tempfile::tempdir().unwrap();
    run_until_caught_up(&broker, store.path()).await;
    let want = scenario["expect"]["alerts"].as_array().expect("alerts").len();
    let alerts = alerts(&read(&broker, &topics().alerts, want).await);
    // shopify's ends at pw-07 (55.00 >= 57.00 x 0.95 x 0.95), amazon's at pw-08 (57.00 >= 47.00 x 0.95)
    for (channel, competitor_price, effective_price) in
        [("shopify", "55.00", "54.15"), ("amazon", "57.00", "47.00")]
    {
        let prefix = format!("competitor_undercut/SKU-0001/channel={channel}/competitor=rival/");
        let raised = undercut(&alerts, &prefix, AlertState::Raised);
        let resolved = undercut(&alerts, &prefix, AlertState::Resolved);
        let subject = |a: &Alert| (a.channels.clone(), a.location.clone(), a.pool.clone(), a.owner.clone());
        assert_eq!(subject(resolved), subject(raised), "{prefix}");
        assert_eq!(detail_pairs(raised)[0], ("competitor", "rival"), "{prefix}");
        let want = [
            ("competitor", "rival"),
            ("competitor_price", competitor_price),
            ("effective_price", effective_price),
            ("competitor_undercut_threshold", "0.05"),
            ("currency", "USD"),
        ];
        assert_eq!(detail_pairs(resolved), want, "{prefix}");
    }
}

fn undercut<'a>(alerts: &'a [Alert], prefix: &str, state: AlertState) -> &'a Alert {
    alerts
        .iter()
        .find(|a| a.alert_id.starts_with(prefix) && a.state == state as i32)
        .unwrap_or_else(|| panic!("no {} {prefix}...", state.name()))
}

fn detail_pairs(alert: &Alert) -> Vec<(&str, &str)> {
    alert.details.iter().map(|d| (d.key.as_str(), d.value.as_str())).collect()
}

/// GETs `url`, retrying while the server is not listening yet.
async fn get_when_up(url: &str) -> (u16, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match reqwest::get(url).await {
            Ok(response) => {
                let status = response.status().as_u16();
                return (status, response.json().await.expect("a json answer"));
            }
            Err(error) if std::time::Instant::now() < deadline && error.is_connect() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("GET {url} failed: {error}"),
        }
    }
}

/// Every number of the answer against the scenario, with the event that set it.
fn check_prices(body: &Value, want: &Value) {
    assert_eq!(body["at_ms"], want["at_ms"], "explained at the SKU's clock");
    assert_eq!(body["reporting_currency"], "USD");
    assert_eq!(body["unit_cost"]["event_id"], want["unit_cost_event_id"]);
    let channels = body["channels"].as_array().expect("channels");
    let order: Vec<&str> = channels.iter().map(|c| c["channel"].as_str().unwrap()).collect();
    assert_eq!(order, ["shopify", "amazon", "eu-market", "wholesale"], "(priority, id) order");
    for channel in channels {
        let id = channel["channel"].as_str().unwrap();
        let want = &want["channels"][id];
        let got = serde_json::json!({
            "listed": channel["listed"]["amount"],
            "listed_event_id": channel["listed"]["event_id"],
            "promotion_event_ids": channel["promotions"].as_array().unwrap().iter().map(|p| p["event_id"].clone()).collect::<Vec<_>>(),
            "effective": channel["effective"]["amount"],
            "floor": channel["floor"]["amount"],
            "floor_cost_event_id": channel["floor"]["cost_event_id"],
            "map": channel["map"]["amount"],
            "below_floor": channel["below_floor"],
            "below_map": channel["below_map"],
            "competitor_event_ids": channel["competitors"].as_array().unwrap().iter().map(|c| c["event_id"].clone()).collect::<Vec<_>>(),
        });
        assert_eq!(&got, want, "channel {id}: {channel:#}");
    }
}

/// `omnifold-coordinator price SKU --http ADDR`, the real binary.
async fn price_command(sku: &str, addr: &str) -> String {
    let binary = env!("CARGO_BIN_EXE_e2e-coordinator");
    let (sku, addr) = (sku.to_string(), addr.to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary).args(["price", &sku, "--http", &addr]).output()
    })
    .await
    .unwrap()
    .expect("the price command runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "price failed: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    stdout
}

fn check_table(table: &str) {
    let row = |channel: &str| {
        table
            .lines()
            .find(|l| l.starts_with(channel))
            .unwrap_or_else(|| panic!("no {channel} row in\n{table}"))
    };
    assert!(table.contains("unit cost: 42.00 USD [pw-01]"), "{table}");
    let shopify = row("shopify");
    for part in
        ["57.00 USD [pw-07]", "weekend 5% off [pw-04]", "54.15 USD", "54.48 USD [cost pw-01]", "BELOW_FLOOR"]
    {
        assert!(shopify.contains(part), "{part:?} missing in\n{table}");
    }
    let amazon = row("amazon");
    for part in
        ["47.00 USD [pw-08]", "56.00 USD [cost pw-01]", "49.00 USD [contract]", "BELOW_FLOOR BELOW_MAP"]
    {
        assert!(amazon.contains(part), "{part:?} missing in\n{table}");
    }
    assert!(row("eu-market").contains("55.00 EUR (59.40 USD) [pw-09]"), "{table}");
    assert!(table.contains("57.00 USD [pw-05]") && table.contains("55.00 USD [pw-06]"), "{table}");
    // aligned: the listed column starts at the same offset on every channel row
    let header = table.lines().find(|l| l.starts_with("channel ")).expect("a header");
    let column = header.find("listed").unwrap();
    for channel in ["shopify", "amazon", "eu-market", "wholesale"] {
        let line = row(channel);
        assert_ne!(line.as_bytes()[column], b' ', "{line:?}");
        assert_eq!(line.as_bytes()[column - 1], b' ', "{line:?}");
    }
}

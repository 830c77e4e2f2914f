//! Data-driven scenarios of the fold: each file in `tests/scenarios/` is a list of events in
//! the contract's JSON form, each with every record it must publish (and nothing else).
//! They are the worked examples of CONTRACT.md sections 4 to 6.
//!
//! A step's `expect` is exact: availability changes, alert records and escalations not
//! listed must not appear. `at` is the event time as `<days>d<HH>:<MM>` after the scenario
//! epoch, filled in as `occurred_at_ms` unless the event sets it.
//!
//! Every RESOLVED record is also checked against its RAISED record: the same subject
//! (channels, location, pool, subject details such as the competitor), severity and owner,
//! and observed numbers of its own.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use omnifold_domain::{Contract, Fold, Outcome, Output, PartitionState, Rules};
use omnifold_proto::json::event_from_json;
use omnifold_proto::{Alert, AlertState, AllocationMode, AllocationRule, EscalationRule, Severity};
use serde::Deserialize;
use serde_json::Value;
use support::{parse_at, patched_contract};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    contract_patch: Value,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    at: String,
    #[serde(default)]
    note: String,
    event: Value,
    #[serde(default)]
    expect: Expect,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    availability: BTreeMap<String, i64>,
    mode: Option<String>,
    rule: Option<String>,
    #[serde(default)]
    alerts: Vec<String>,
    #[serde(default)]
    alert_fields: BTreeMap<String, AlertFields>,
    #[serde(default)]
    escalations: Vec<String>,
    /// Replenishment records (section 10), as [`replenishment_line`] writes them.
    #[serde(default)]
    replenishment: Vec<String>,
    /// Routing records (section 10), as [`routing_line`] writes them.
    #[serde(default)]
    routing: Vec<String>,
    /// The contribution ledger entries, checked when given, as
    /// `<entry_id> <channel> <sku> <order>:<line> <field>=<value>...` with the entry's non-zero
    /// amounts and counts in proto field order.
    ledger: Option<Vec<String>>,
    rejected: Option<String>,
    #[serde(default)]
    duplicate: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertFields {
    channels: Option<Vec<String>>,
    location: Option<String>,
    pool: Option<String>,
    owner: Option<String>,
    accountable: Option<String>,
    severity: Option<String>,
    #[serde(default)]
    details: BTreeMap<String, String>,
}

fn contract(patch: &Value) -> Contract {
    patched_contract(include_str!("scenarios/contract.toml"), patch)
}

fn run(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let scenario: Scenario =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: bad scenario: {e}"));
    let fold = Fold::new(Rules::new(contract(&scenario.contract_patch)));
    let mut state = PartitionState::default();
    let mut raised = BTreeMap::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        let mut event = step.event.clone();
        if event.get("occurred_at_ms").is_none() {
            event["occurred_at_ms"] = Value::from(parse_at(&step.at));
        }
        let event = event_from_json(&event.to_string()).unwrap_or_else(|e| panic!("{name} step {i}: {e}"));
        let before = state.clone();
        let outcome = fold.apply(&mut state, &event);
        let context = format!("{name} step {i} ({}, {}){}", step.at, event.event_id, note(&step.note));
        check(&context, &step.expect, outcome, &before, &state, &mut raised);
    }
}

fn note(note: &str) -> String {
    if note.is_empty() { String::new() } else { format!(": {note}") }
}

/// RAISED records by alert id, for their RESOLVED records to be checked against.
type Raised = BTreeMap<String, Alert>;

fn check(
    context: &str,
    expect: &Expect,
    outcome: Outcome,
    before: &PartitionState,
    after: &PartitionState,
    raised: &mut Raised,
) {
    match outcome {
        Outcome::Rejected(reason) => {
            let want = expect.rejected.as_deref().unwrap_or_else(|| panic!("{context}: rejected: {reason}"));
            assert!(reason.to_string().contains(want), "{context}: rejected with {reason:?}, want {want:?}");
            assert_eq!(before, after, "{context}: a rejected event changed state");
        }
        Outcome::Duplicate => {
            assert!(expect.duplicate, "{context}: ignored as a duplicate");
            assert_eq!(before, after, "{context}: a duplicate changed state");
        }
        Outcome::Applied { outputs, .. } => {
            assert!(expect.rejected.is_none(), "{context}: accepted, want rejected {:?}", expect.rejected);
            assert!(!expect.duplicate, "{context}: accepted, want duplicate");
            check_outputs(context, expect, &outputs, raised);
        }
    }
}

fn check_outputs(context: &str, expect: &Expect, outputs: &[Output], raised: &mut Raised) {
    let mut availability = BTreeMap::new();
    let mut alerts = Vec::new();
    let mut escalations = Vec::new();
    let mut ledger = Vec::new();
    let mut replenishment = Vec::new();
    let mut routing = Vec::new();
    for output in outputs {
        match output {
            Output::Replenishment(r) => replenishment.push(replenishment_line(&r.to_message())),
            Output::Routing(r) => routing.push(routing_line(&r.to_message())),
            Output::Ledger(entry) => ledger.push(ledger_line(&entry.to_message())),
            Output::Availability(a) => {
                let mode = AllocationMode::try_from(a.mode).unwrap().name();
                let rule = AllocationRule::try_from(a.rule).unwrap().name();
                if let Some(want) = &expect.mode {
                    assert_eq!(mode, want, "{context}: mode of {}", a.channel);
                }
                if let Some(want) = &expect.rule {
                    assert_eq!(rule, want, "{context}: rule of {}", a.channel);
                }
                assert!(
                    availability.insert(a.channel.to_string(), a.available).is_none(),
                    "{context}: twice"
                );
            }
            Output::Alert(alert) => {
                let state = AlertState::try_from(alert.state).unwrap().name();
                alerts.push(format!("{state} {}", alert.alert_id));
                check_lifecycle(context, alert, raised);
                if let Some(fields) = expect.alert_fields.get(&alert.alert_id) {
                    check_alert_fields(context, alert, fields);
                }
            }
            Output::Escalation(e) => {
                let rule = EscalationRule::try_from(e.rule).unwrap().name();
                escalations.push(format!(
                    "{rule} {} -> {} ({}, {})",
                    e.escalation_id, e.channel, e.owner, e.on_call
                ));
            }
        }
    }
    assert_eq!(availability, expect.availability, "{context}: availability changes");
    assert_eq!(alerts, expect.alerts, "{context}: alert records");
    assert_eq!(escalations, expect.escalations, "{context}: escalations");
    assert_eq!(replenishment, expect.replenishment, "{context}: replenishment records");
    assert_eq!(routing, expect.routing, "{context}: routing records");
    if let Some(want) = &expect.ledger {
        assert_eq!(&ledger, want, "{context}: ledger entries");
    }
}

/// `<pool> <ACTION> <units> [<from>->]<location>: <the numbers behind it>`.
fn replenishment_line(r: &omnifold_proto::Replenishment) -> String {
    let action = omnifold_proto::ReplenishmentAction::try_from(r.action).unwrap();
    let action = action.as_str_name().trim_start_matches("REPLENISHMENT_ACTION_");
    let route = if r.from_location.is_empty() {
        r.location.clone()
    } else {
        format!("{}->{}", r.from_location, r.location)
    };
    let mut line = format!(
        "{} {action} {} {route}: atp={} u28={} velocity={} cover={} needed={}",
        r.pool, r.units, r.atp, r.units_placed_28d, r.velocity, r.cover_days, r.needed
    );
    if r.pool == "shared" {
        line.push_str(&format!(
            " inbound={} lead={} review={} target={} point={} pack={}",
            r.open_inbound,
            r.lead_time_days,
            r.review_period_days,
            r.target_cover_days,
            r.reorder_point,
            r.case_pack
        ));
    } else {
        line.push_str(&format!(
            " target={} shared_atp={} shared_target={} spare={} min={}",
            r.fba_target_cover_days, r.shared_atp, r.shared_target, r.shared_spare, r.min_transfer_units
        ));
    }
    line
}

/// `<channel>/<order>/<line> <STATE> <location>[ split] ...`.
fn routing_line(r: &omnifold_proto::RoutingDecision) -> String {
    let state = omnifold_proto::RoutingState::try_from(r.state).unwrap();
    let state = state.as_str_name().trim_start_matches("ROUTING_STATE_");
    let split = if r.split { " split" } else { "" };
    let mut line = format!(
        "{}/{}/{} {state} {}{split} qty={}",
        r.channel, r.order_id, r.line_id, r.location, r.quantity
    );
    if !r.shipped_from.is_empty() {
        line.push_str(&format!(" shipped_from={}", r.shipped_from));
    }
    let candidates: Vec<String> = r
        .candidates
        .iter()
        .map(|c| format!("{}:{}-{}={}", c.location, c.on_hand, c.reserved, c.free))
        .collect();
    if !candidates.is_empty() {
        line.push_str(&format!(" candidates={}", candidates.join(",")));
    }
    line
}

fn ledger_line(e: &omnifold_proto::LedgerEntry) -> String {
    let amounts = [
        ("gross_revenue", &e.gross_revenue),
        ("discount", &e.discount),
        ("channel_fee", &e.channel_fee),
        ("cogs", &e.cogs),
        ("fulfillment_cost", &e.fulfillment_cost),
        ("refund", &e.refund),
        ("restocked_cogs", &e.restocked_cogs),
        ("unit_cost", &e.unit_cost),
        ("operating_cost", &e.operating_cost),
    ];
    let mut line =
        format!("{} {} {} {}:{} units={}", e.entry_id, e.channel, e.sku, e.order_id, e.line_id, e.units);
    for (name, value) in amounts {
        if !value.is_empty() && value != "0" {
            line.push_str(&format!(" {name}={value}"));
        }
    }
    if e.restocked_units != 0 {
        line.push_str(&format!(" restocked_units={}", e.restocked_units));
    }
    if e.period_end_ms != 0 {
        line.push_str(&format!(" period=[{}, {}) {}", e.period_start_ms, e.period_end_ms, e.cost_category));
    }
    line
}

/// A RESOLVED record names what its RAISED record named: the subject fields, severity,
/// accountable, owner and the details that lead both (a competitor); then the numbers observed now.
fn check_lifecycle(context: &str, alert: &Alert, raised: &mut Raised) {
    let id = &alert.alert_id;
    if alert.state == AlertState::Raised as i32 {
        raised.insert(id.clone(), alert.clone());
        return;
    }
    let first = raised.get(id).unwrap_or_else(|| panic!("{context}: {id} resolved but never raised"));
    let subject = |a: &Alert| {
        (
            a.channels.clone(),
            a.location.clone(),
            a.pool.clone(),
            a.severity,
            a.owner.clone(),
            a.accountable.clone(),
        )
    };
    assert_eq!(subject(alert), subject(first), "{context}: subject of resolved {id}");
    if let Some(competitor) = first.details.iter().find(|d| d.key == "competitor") {
        assert_eq!(alert.details.first(), Some(competitor), "{context}: competitor of resolved {id}");
    }
    assert!(!alert.details.is_empty(), "{context}: resolved {id} has no details");
}

fn check_alert_fields(context: &str, alert: &Alert, fields: &AlertFields) {
    if let Some(channels) = &fields.channels {
        assert_eq!(&alert.channels, channels, "{context}: channels of {}", alert.alert_id);
    }
    if let Some(location) = &fields.location {
        assert_eq!(&alert.location, location, "{context}: location of {}", alert.alert_id);
    }
    if let Some(pool) = &fields.pool {
        assert_eq!(&alert.pool, pool, "{context}: pool of {}", alert.alert_id);
    }
    if let Some(owner) = &fields.owner {
        assert_eq!(&alert.owner, owner, "{context}: owner of {}", alert.alert_id);
    }
    if let Some(accountable) = &fields.accountable {
        assert_eq!(&alert.accountable, accountable, "{context}: accountable of {}", alert.alert_id);
    }
    if let Some(severity) = &fields.severity {
        assert_eq!(Severity::try_from(alert.severity).unwrap().name(), severity, "{context}: severity");
    }
    for (key, want) in &fields.details {
        let got = alert.details.iter().find(|d| &d.key == key).map(|d| d.value.as_str());
        assert_eq!(got, Some(want.as_str()), "{context}: detail {key} of {}", alert.alert_id);
    }
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { run(stringify!($name)); })*

        #[test]
        fn every_scenario_file_is_listed() {
            let listed = [$(stringify!($name)),*];
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
                    assert!(listed.contains(&stem.as_str()), "scenario {stem} is not listed in scenarios!");
                }
            }
        }
    };
}

scenarios!(
    stock_normal_mode,
    stock_scarcity_priority,
    stock_scarcity_proportional,
    stock_oversell_and_negative,
    stock_low_cover,
    stock_escalations,
    stock_accountability,
    ledger_entries,
    events_duplicates_and_invalid,
    pricing_floor_and_promotions,
    pricing_map,
    pricing_multi_currency_floor,
    pricing_promotion_collision,
    pricing_promotion_combined_discount,
    pricing_competitor_undercut,
    pricing_price_war,
    pricing_invalid_events,
    replenishment_reorder_case_pack,
    replenishment_fba_transfer,
    routing_ship_from,
);

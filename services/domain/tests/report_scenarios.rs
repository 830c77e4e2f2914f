//! Data-driven scenarios of the weekly contribution report (CONTRACT.md section 7): each file
//! in `tests/report_scenarios/` is a list of events and alerts in the contract's JSON form,
//! with the snapshot revisions each one must emit (and nothing else), and the final figures
//! of chosen snapshots, worked by hand in the file's notes.
//!
//! `at` is the event time as `<days>d<HH>:<MM>` after Monday 2026-11-09 00:00 UTC (the start
//! of 2026-W46); string `period_start_ms` / `period_end_ms` take the same form. In `emits`,
//! `2026-W46/* r1` stands for every contract channel in (priority, id) order.
//!
//! Events go through the coordinator's fold ([`omnifold_domain::ledger::written_for`]): the
//! report folds the contribution ledger it writes, as the reporter does, so a refused event
//! is refused by the one acceptor. The alerts the fold raises are not counted here: a
//! scenario's alert steps stand for the alerts topic, so that its counts are worked by hand.
//!
//! Every scenario is run twice more: split over three events partitions and two alerts
//! partitions with records merged in a scrambled order and the merge state stored and
//! restored halfway (the last revision of every key must not change), and recomputed from
//! scratch from the final merged state (what was emitted must equal it).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::str::FromStr;

use omnifold_domain::ledger::written_for;
use omnifold_domain::report::figures::ChannelWeek;
use omnifold_domain::report::merge::{CellInputs, SourceMark};
use omnifold_domain::report::{
    AlertLedger, Applied, Cell, Merger, PartialRecord, PartitionLedger, Snapshot, Source, Week, compute_week,
};
use omnifold_domain::{Contract, Fold, Outcome, PartitionState, Rules};
use omnifold_proto::json::event_from_json;
use omnifold_proto::{Alert, AlertKind, AlertState, Event, Severity};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;
use support::{parse_at, patched_contract};

/// 2026-11-09T00:00:00Z, the Monday starting 2026-W46.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    contract_patch: Value,
    steps: Vec<Step>,
    /// The last revision of each listed key, field by field (unlisted fields are not checked).
    #[serde(default)]
    snapshots: BTreeMap<String, Value>,
    /// When present: exactly the weeks that must have been reported.
    weeks: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    at: String,
    #[serde(default)]
    note: String,
    event: Option<Value>,
    alert: Option<AlertSpec>,
    #[serde(default)]
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertSpec {
    alert_id: String,
    kind: String,
    severity: String,
    #[serde(default = "raised")]
    state: String,
    sku: String,
    channels: Vec<String>,
    /// A channel id or `operations`; absent for an alert written before contract v1.1.
    #[serde(default)]
    accountable: String,
}

fn raised() -> String {
    "RAISED".to_string()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// Exactly the revisions this step emits, as `<key> r<revision>`.
    #[serde(default)]
    emits: Vec<String>,
    rejected: Option<String>,
    #[serde(default)]
    duplicate: bool,
}

enum Input {
    Event(Event),
    Alert(Alert),
}

fn contract(patch: &Value) -> Contract {
    patched_contract(include_str!("report_scenarios/contract.toml"), patch)
}

fn load(name: &str) -> (Scenario, Rules, Vec<Input>) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/report_scenarios").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let scenario: Scenario =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: bad scenario: {e}"));
    let rules = Rules::new(contract(&scenario.contract_patch));
    let inputs = scenario.steps.iter().enumerate().map(|(i, step)| input(name, i, step)).collect();
    (scenario, rules, inputs)
}

fn input(name: &str, i: usize, step: &Step) -> Input {
    match (&step.event, &step.alert) {
        (Some(event), None) => {
            let mut event = event.clone();
            if event.get("occurred_at_ms").is_none() {
                event["occurred_at_ms"] = Value::from(parse_at(&step.at));
            }
            for field in ["period_start_ms", "period_end_ms"] {
                if let Some(Value::String(at)) = event.get(field) {
                    event[field] = Value::from(parse_at(&at.clone()));
                }
            }
            Input::Event(
                event_from_json(&event.to_string()).unwrap_or_else(|e| panic!("{name} step {i}: {e}")),
            )
        }
        (None, Some(spec)) => Input::Alert(Alert {
            alert_id: spec.alert_id.clone(),
            kind: AlertKind::from_str_name(&format!("ALERT_KIND_{}", spec.kind)).expect("alert kind") as i32,
            state: AlertState::from_str_name(&format!("ALERT_STATE_{}", spec.state)).expect("alert state")
                as i32,
            severity: Severity::from_str_name(&format!("SEVERITY_{}", spec.severity)).expect("severity")
                as i32,
            sku: spec.sku.clone(),
            channels: spec.channels.clone(),
            accountable: spec.accountable.clone(),
            occurred_at_ms: parse_at(&step.at),
            ..Alert::default()
        }),
        _ => panic!("{name} step {i}: want exactly one of event and alert"),
    }
}

fn run(name: &str) {
    let (scenario, rules, inputs) = load(name);
    let reference = run_in_steps(name, &scenario, &rules, &inputs);
    check_snapshots(name, &scenario, &reference);
    check_recomputed(name, &rules, &reference);
    let split = run_split(&rules, &inputs);
    assert_eq!(
        figures(&split),
        figures(&reference),
        "{name}: split over partitions, the last revisions differ"
    );
}

/// The coordinator's fold of one events partition, and the report's fold of the ledger
/// partition it writes.
struct Coordinated {
    fold: Fold,
    state: PartitionState,
    ledger: PartitionLedger,
    partition: i32,
    offset: i64,
}

impl Coordinated {
    fn new(rules: &Rules, partition: i32) -> Self {
        let (fold, state, ledger) =
            (Fold::new(rules.clone()), PartitionState::default(), PartitionLedger::default());
        Coordinated { fold, state, ledger, partition, offset: 0 }
    }

    /// Folds the event, then its ledger entries; returns the fold's outcome and the cells
    /// that changed.
    fn apply(&mut self, rules: &Rules, event: &Event) -> (Outcome, BTreeSet<Cell>) {
        let position = (self.partition, self.offset);
        self.offset += 1;
        let (outcome, entries) = written_for(&self.fold, &mut self.state, event, position);
        let mut changed = BTreeSet::new();
        for entry in &entries {
            match self.ledger.apply(rules, entry).expect("the coordinator's entries read") {
                Applied::Folded { cells } => changed.extend(cells),
                Applied::Duplicate => panic!("entry {} folded twice", entry.entry_id),
            }
        }
        (outcome, changed)
    }
}

/// One events partition and one alerts partition; a record after every input.
fn run_in_steps(name: &str, scenario: &Scenario, rules: &Rules, inputs: &[Input]) -> Merger {
    let (mut events, mut alerts, mut merger) =
        (Coordinated::new(rules, 0), AlertLedger::default(), Merger::default());
    let mut orders = HashSet::new();
    for (i, (step, input)) in scenario.steps.iter().zip(inputs).enumerate() {
        let offset = i as i64 + 1;
        let context = format!("{name} step {i} ({}){}", step.at, note(&step.note));
        let record = match input {
            Input::Event(event) => match events.apply(rules, event) {
                (Outcome::Applied { .. }, cells) => {
                    assert!(step.expect.rejected.is_none(), "{context}: accepted, want rejected");
                    assert!(!step.expect.duplicate, "{context}: accepted, want a duplicate");
                    Some(events.ledger.record(0, offset, &cells))
                }
                (Outcome::Duplicate, _) => {
                    assert!(step.expect.duplicate, "{context}: ignored as a duplicate");
                    None
                }
                (Outcome::Rejected(reason), _) => {
                    let want = step
                        .expect
                        .rejected
                        .as_deref()
                        .unwrap_or_else(|| panic!("{context}: rejected: {reason}"));
                    assert!(
                        reason.to_string().contains(want),
                        "{context}: rejected with {reason:?}, want {want:?}"
                    );
                    None
                }
            },
            Input::Alert(alert) => {
                let cells = alerts.apply(rules, alert);
                Some(alerts.record(0, offset, &cells))
            }
        };
        let emitted = record.map(|record| merger.apply(rules, &record, &mut orders)).unwrap_or_default();
        let got: Vec<String> = emitted.iter().map(|s| format!("{} r{}", s.key(), s.revision)).collect();
        assert_eq!(got, expand(rules, &step.expect.emits), "{context}: emitted");
    }
    merger
}

fn note(note: &str) -> String {
    if note.is_empty() { String::new() } else { format!(": {note}") }
}

/// `2026-W46/* r1` -> one entry per contract channel.
fn expand(rules: &Rules, emits: &[String]) -> Vec<String> {
    let mut expanded = Vec::new();
    for emit in emits {
        match emit.split_once("/* ") {
            Some((week, revision)) => {
                expanded.extend(rules.channels_in_order().map(|c| format!("{week}/{} {revision}", c.id)));
            }
            None => expanded.push(emit.clone()),
        }
    }
    expanded
}

/// Three events partitions by key, two alerts partitions; each source sends a record every
/// 1, 2 or 3 inputs; the records reach the merger scrambled, and the merger is stored and
/// restored halfway.
fn run_split(rules: &Rules, inputs: &[Input]) -> Merger {
    let mut events: Vec<Coordinated> = (0..3).map(|p| Coordinated::new(rules, p)).collect();
    let mut alerts: Vec<AlertLedger> = vec![AlertLedger::default(); 2];
    let mut pending: BTreeMap<(bool, usize), (i64, BTreeSet<Cell>)> = BTreeMap::new();
    let mut records: Vec<PartialRecord> = Vec::new();
    for input in inputs {
        let (key, changed) = match input {
            Input::Event(event) => {
                let p = hash(event.partition_key()) % 3;
                ((true, p), events[p].apply(rules, event).1)
            }
            Input::Alert(alert) => {
                let p = hash(&alert.sku) % 2;
                ((false, p), alerts[p].apply(rules, alert))
            }
        };
        let entry = pending.entry(key).or_default();
        entry.0 += 1;
        entry.1.extend(changed);
        if entry.0 % (key.1 as i64 + 1) == 0 {
            records.push(record_of(&mut events, &alerts, key, entry.0, &std::mem::take(&mut entry.1)));
        }
    }
    for (key, (offset, changed)) in &pending {
        records.push(record_of(&mut events, &alerts, *key, *offset + 1, changed));
    }
    scramble(&mut records);
    let mut merger = Merger::default();
    let mut orders = HashSet::new();
    let half = records.len() / 2;
    for (i, record) in records.iter().enumerate() {
        if i == half {
            merger = store_and_restore(&merger);
        }
        merger.apply(rules, record, &mut orders);
    }
    merger
}

fn record_of(
    events: &mut [Coordinated],
    alerts: &[AlertLedger],
    (is_events, p): (bool, usize),
    offset: i64,
    changed: &BTreeSet<Cell>,
) -> PartialRecord {
    if is_events {
        events[p].ledger.record(p as i32, offset, changed)
    } else {
        alerts[p].record(p as i32, offset, changed)
    }
}

fn hash(key: &str) -> usize {
    key.bytes().fold(7usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)))
}

/// A fixed permutation that moves records far from their place, across sources and within one.
fn scramble(records: &mut [PartialRecord]) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in (1..records.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        records.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

/// The merge state through its stored form, as the service keeps it.
fn store_and_restore(merger: &Merger) -> Merger {
    fn through<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
        postcard::from_bytes(&postcard::to_allocvec(value).expect("serializes")).expect("deserializes")
    }
    let sources: BTreeMap<Source, SourceMark> =
        merger.sources.iter().map(|(k, v)| (*k, through(v))).collect();
    let cells: BTreeMap<Cell, CellInputs> =
        merger.cells.iter().map(|(k, v)| (through(k), through(v))).collect();
    let emitted: BTreeMap<Cell, Snapshot> =
        merger.emitted.iter().map(|(k, v)| (k.clone(), through(v))).collect();
    Merger::restore(sources, cells, emitted, merger.orders.clone())
}

fn figures(merger: &Merger) -> BTreeMap<Cell, ChannelWeek> {
    merger.emitted.iter().map(|(cell, snapshot)| (cell.clone(), snapshot.figures.clone())).collect()
}

/// Every reported week recomputed from scratch from the final merged partials.
fn check_recomputed(name: &str, rules: &Rules, merger: &Merger) {
    let Some((first, last)) = merger.closed_weeks(rules) else {
        assert!(merger.emitted.is_empty(), "{name}: emitted without a closed week");
        return;
    };
    let mut streaks = BTreeMap::new();
    let mut week = first;
    let mut expected = BTreeMap::new();
    while week <= last {
        for figures in compute_week(rules, week, &merger.merged(week), &streaks) {
            expected.insert(Cell::new(week, &figures.channel), figures);
        }
        streaks = expected
            .range(Cell::new(week, "")..)
            .map(|(c, f)| (c.channel.clone(), f.negative_weeks))
            .collect();
        week = week.next();
    }
    assert_eq!(
        figures(merger),
        expected,
        "{name}: the last revisions are not the figures of the final state"
    );
}

fn check_snapshots(name: &str, scenario: &Scenario, merger: &Merger) {
    if let Some(weeks) = &scenario.weeks {
        let got: BTreeSet<String> = merger.emitted.keys().map(|cell| cell.week.label()).collect();
        let want: BTreeSet<String> = weeks.iter().cloned().collect();
        assert_eq!(got, want, "{name}: reported weeks");
    }
    for (key, want) in &scenario.snapshots {
        let (week, channel) = key.split_once('/').expect("key like 2026-W46/shop");
        let cell = Cell::new(Week::from_str(week).expect("week label"), channel);
        let snapshot = merger.emitted.get(&cell).unwrap_or_else(|| panic!("{name}: {key} was never emitted"));
        let Value::Object(fields) = want else { panic!("{name}: {key}: want an object") };
        for (field, value) in fields {
            if field == "why" {
                continue;
            }
            check_field(&format!("{name}: {key}.{field}"), snapshot, field, value);
        }
    }
}

fn check_field(context: &str, snapshot: &Snapshot, field: &str, want: &Value) {
    let f = &snapshot.figures;
    let decimal = |got: Decimal| check_decimal(context, Some(got), want);
    match field {
        "revision" => assert_eq!(Value::from(snapshot.revision), *want, "{context}"),
        "changed_fields" => {
            assert_eq!(serde_json::to_value(&snapshot.changed_fields).unwrap(), *want, "{context}")
        }
        "gross_revenue" => decimal(f.gross_revenue),
        "discounts" => decimal(f.discounts),
        "net_revenue" => decimal(f.net_revenue),
        "cogs" => decimal(f.cogs),
        "restocked_cogs" => decimal(f.restocked_cogs),
        "channel_fees" => decimal(f.channel_fees),
        "fulfillment_costs" => decimal(f.fulfillment_costs),
        "refunds" => decimal(f.refunds),
        "contribution_before_operating" => decimal(f.contribution_before_operating),
        "operating_cost" => decimal(f.operating_cost),
        "contribution" => decimal(f.contribution),
        "contribution_margin" => check_decimal(context, f.contribution_margin, want),
        "revenue_share" => check_decimal(context, f.revenue_share, want),
        "operating_cost_share" => check_decimal(context, f.operating_cost_share, want),
        "orders_shipped" => assert_eq!(Value::from(f.orders_shipped), *want, "{context}"),
        "units_shipped" => assert_eq!(Value::from(f.units_shipped), *want, "{context}"),
        "critical_alerts" => assert_eq!(Value::from(f.critical_alerts), *want, "{context}"),
        "negative_weeks" => assert_eq!(Value::from(f.negative_weeks), *want, "{context}"),
        "alerts_raised" => assert_eq!(serde_json::to_value(&f.alerts_raised).unwrap(), *want, "{context}"),
        "owner" => assert_eq!(Value::from(f.owner.as_str()), *want, "{context}"),
        "decision" => assert_eq!(Value::from(f.decision.name()), *want, "{context}"),
        "next_action" => assert_eq!(Value::from(f.next_action.as_str()), *want, "{context}"),
        other => panic!("{context}: unknown field {other}"),
    }
}

/// Numerically: "1.50" equals 1.5. `null` wants the figure absent.
fn check_decimal(context: &str, got: Option<Decimal>, want: &Value) {
    let want = match want {
        Value::Null => None,
        Value::String(text) => {
            Some(Decimal::from_str(text).unwrap_or_else(|_| panic!("{context}: bad decimal {text}")))
        }
        other => panic!("{context}: want a decimal string or null, not {other}"),
    };
    assert_eq!(got, want, "{context}");
}

#[test]
fn three_weeks_four_channels() {
    run("three_weeks_four_channels");
}

#[test]
fn prorata_cogs_and_returns() {
    run("prorata_cogs_and_returns");
}

#[test]
fn refused_events_count_nowhere() {
    run("refused_events_count_nowhere");
}

#[test]
fn alerts_by_week_and_channel() {
    run("alerts_by_week_and_channel");
}

#[test]
fn accountable_critical_alerts() {
    run("accountable_critical_alerts");
}

#[test]
fn closing_weeks() {
    run("closing_weeks");
}

#[test]
fn retire_review_boundaries() {
    run("retire_review_boundaries");
}

/// Every scenario file has a test above.
#[test]
fn every_scenario_file_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/report_scenarios");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    files.sort();
    let named = [
        "accountable_critical_alerts",
        "alerts_by_week_and_channel",
        "closing_weeks",
        "prorata_cogs_and_returns",
        "refused_events_count_nowhere",
        "retire_review_boundaries",
        "three_weeks_four_channels",
    ];
    assert_eq!(files, named);
}

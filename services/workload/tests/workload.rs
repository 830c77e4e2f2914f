//! The workload generator against the example contract: deterministic, valid (every event is
//! accepted by the coordinator's fold), and the bundled sample shows what it is meant to show.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use omnifold_domain::{Fold, Outcome, Output, PartitionState, Rules};
use omnifold_proto::json::event_to_json;
use omnifold_proto::{
    Alert, AlertKind, AlertState, AllocationMode, Body, ChannelAvailability, Escalation, EscalationRule,
    Event, LedgerEntry,
};
use omnifold_workload::{SAMPLE_START_MS, WorkloadOptions, generate, type_counts, write_ndjson};

const CONTRACT: &str = include_str!("../../../deploy/local/contract.toml");
const SAMPLE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/local/sample-events.ndjson");

fn rules() -> Rules {
    omnifold_runtime::contract_file::parse_contract(CONTRACT).expect("the example contract is valid")
}

fn ndjson(events: &[Event]) -> String {
    events.iter().map(|e| event_to_json(e) + "\n").collect()
}

/// Everything the fold published while applying a workload in order into one partition.
#[derive(Default)]
struct Folded {
    rejected: BTreeMap<String, usize>,
    first_rejections: Vec<String>,
    duplicates: usize,
    availability: Vec<(String, ChannelAvailability)>,
    alerts: Vec<(String, Alert)>,
    escalations: Vec<(String, Escalation)>,
    ledger: Vec<LedgerEntry>,
    replenishment: Vec<omnifold_proto::Replenishment>,
    routing: Vec<omnifold_proto::RoutingDecision>,
}

fn fold(rules: &Rules, events: &[Event]) -> Folded {
    let fold = Fold::new(rules.clone());
    let mut state = PartitionState::default();
    let mut folded = Folded::default();
    for event in events {
        match fold.apply(&mut state, event) {
            Outcome::Applied { outputs, .. } => {
                for output in outputs {
                    let id = event.event_id.clone();
                    match output {
                        Output::Availability(a) => folded.availability.push((id, a.to_message())),
                        Output::Alert(a) => folded.alerts.push((id, a)),
                        Output::Escalation(e) => folded.escalations.push((id, e)),
                        Output::Ledger(entry) => folded.ledger.push(entry.to_message()),
                        Output::Replenishment(r) => folded.replenishment.push(r.to_message()),
                        Output::Routing(r) => folded.routing.push(r.to_message()),
                    }
                }
            }
            Outcome::Duplicate => folded.duplicates += 1,
            Outcome::Rejected(rejection) => {
                let text = rejection.to_string();
                let reason = text.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
                *folded.rejected.entry(reason).or_default() += 1;
                if folded.first_rejections.len() < 10 {
                    folded.first_rejections.push(format!("{}: {text}", event_to_json(event)));
                }
            }
        }
    }
    folded
}

fn sample() -> &'static (Vec<Event>, Folded) {
    static SAMPLE: OnceLock<(Vec<Event>, Folded)> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let rules = rules();
        let events = generate(&rules, &WorkloadOptions::sample());
        let folded = fold(&rules, &events);
        (events, folded)
    })
}

fn assert_accepted(name: &str, folded: &Folded) {
    assert!(
        folded.rejected.is_empty() && folded.duplicates == 0,
        "{name}: rejected per reason {:#?}, duplicates {}; first rejections:\n{}",
        folded.rejected,
        folded.duplicates,
        folded.first_rejections.join("\n")
    );
}

/// Time order, unique ids, and money in the right currencies: prices and order lines in the
/// channel's currency, costs in the reporting currency.
fn assert_well_formed(name: &str, rules: &Rules, events: &[Event]) {
    let mut ids = HashSet::new();
    let mut last = 0;
    for event in events {
        assert!(ids.insert(event.event_id.as_str()), "{name}: duplicate id {}", event.event_id);
        assert!(event.occurred_at_ms >= last, "{name}: {} goes back in time", event.event_id);
        last = event.occurred_at_ms;
        let currency = rules.channel(&event.channel).map(|c| c.currency.as_str());
        let money = match event.body.as_ref().expect("a body") {
            Body::PriceSet(b) => b.price.as_ref(),
            Body::OrderLinePlaced(b) => b.unit_price.as_ref(),
            Body::OrderLineReturned(b) => b.refund.as_ref(),
            Body::CompetitorPriceObserved(b) => b.price.as_ref(),
            Body::ChannelCostRecorded(b) => b.amount.as_ref(),
            _ => None,
        };
        if let Some(money) = money {
            assert_eq!(Some(money.currency.as_str()), currency, "{name}: {}", event_to_json(event));
        }
        if let Some(Body::CostSet(b)) = &event.body {
            assert_eq!(b.unit_cost.as_ref().unwrap().currency, rules.contract.reporting_currency);
        }
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let rules = rules();
    let sample = WorkloadOptions::sample();
    assert_eq!(ndjson(&generate(&rules, &sample)), ndjson(&generate(&rules, &sample)));
    let reseeded = WorkloadOptions { seed: 8, ..WorkloadOptions::sample() };
    assert_ne!(ndjson(&generate(&rules, &sample)), ndjson(&generate(&rules, &reseeded)));

    let bench = WorkloadOptions::bench(300, 20_000);
    let once = generate(&rules, &bench);
    assert_eq!(once.len(), 20_000);
    assert_eq!(ndjson(&once), ndjson(&generate(&rules, &bench)));
    let other = generate(&rules, &WorkloadOptions { seed: 2, ..bench.clone() });
    assert_ne!(ndjson(&once), ndjson(&other));

    // Streaming writes exactly what `generate` returns.
    let mut written = Vec::new();
    let count = write_ndjson(&rules, &bench, &mut written).unwrap();
    assert_eq!(count, 20_000);
    assert_eq!(String::from_utf8(written).unwrap(), ndjson(&once));
}

#[test]
fn every_sample_event_is_accepted_by_the_fold() {
    let (events, folded) = sample();
    assert_well_formed("sample", &rules(), events);
    assert_accepted("sample", folded);
}

#[test]
fn every_bench_event_is_accepted_by_the_fold() {
    let rules = rules();
    let events = generate(&rules, &WorkloadOptions::bench(500, 50_000));
    assert_eq!(events.len(), 50_000);
    assert_well_formed("bench", &rules, &events);
    assert_accepted("bench", &fold(&rules, &events));
}

#[test]
fn sample_is_sized_and_placed_as_documented() {
    let (events, _) = sample();
    assert!((15_000..=30_000).contains(&events.len()), "{} events", events.len());
    assert_eq!(events[0].occurred_at_ms, SAMPLE_START_MS);
    let end = SAMPLE_START_MS + 14 * 24 * 3_600_000;
    assert!(events.iter().all(|e| e.occurred_at_ms < end));
    let counts = type_counts(events);
    for kind in [
        "OrderLinePlaced",
        "OrderLineShipped",
        "OrderLineCancelled",
        "OrderLineReturned",
        "StockAdjusted",
        "StockCounted",
        "PriceSet",
        "CostSet",
        "PromotionScheduled",
        "PromotionCancelled",
        "CompetitorPriceObserved",
        "ChannelCostRecorded",
    ] {
        assert!(counts.get(kind).copied().unwrap_or(0) > 0, "no {kind} in {counts:?}");
    }
    let placed = counts["OrderLinePlaced"] as f64;
    let cancelled = counts["OrderLineCancelled"] as f64 / placed;
    let returned = counts["OrderLineReturned"] as f64 / placed;
    assert!((0.03..0.08).contains(&cancelled), "cancelled {cancelled}");
    assert!((0.02..0.045).contains(&returned), "returned {returned}");
}

fn raised(folded: &Folded, kind: AlertKind) -> Vec<&(String, Alert)> {
    folded
        .alerts
        .iter()
        .filter(|(_, a)| a.kind == kind as i32 && a.state == AlertState::Raised as i32)
        .collect()
}

fn escalated(folded: &Folded, rule: EscalationRule) -> Vec<&(String, Escalation)> {
    folded.escalations.iter().filter(|(_, e)| e.rule == rule as i32).collect()
}

#[test]
fn sample_shows_scarcity_low_cover_oversell_stock_drop_and_spike() {
    let (_, folded) = sample();
    let squeezed: Vec<String> = (1..=10).map(|r| format!("SKU-{r:04}")).collect();
    let scarcity: Vec<_> =
        folded.availability.iter().filter(|(_, a)| a.mode == AllocationMode::Scarcity as i32).collect();
    assert!(!scarcity.is_empty(), "no SCARCITY availability");
    assert!(scarcity.iter().all(|(_, a)| squeezed.contains(&a.sku)), "scarcity outside the squeeze");

    let low_cover = raised(folded, AlertKind::LowCover);
    assert!(low_cover.iter().any(|(_, a)| squeezed.contains(&a.sku)), "no LOW_COVER on a squeezed SKU");
    let oversell = raised(folded, AlertKind::Oversell);
    assert!(oversell.iter().filter(|(_, a)| squeezed.contains(&a.sku)).count() >= 3, "too few OVERSELL");

    let drops = escalated(folded, EscalationRule::StockDrop);
    assert!(
        drops.iter().any(|(_, e)| e.escalation_id.starts_with("stock_drop/SKU-0023/wh-nj/")),
        "no STOCK_DROP of SKU-0023 at wh-nj: {drops:?}"
    );
    let spikes = escalated(folded, EscalationRule::OrderSpike);
    assert!(
        spikes.iter().any(|(_, e)| e.escalation_id.starts_with("order_spike/shopify/SKU-0014/")),
        "no ORDER_SPIKE of shopify/SKU-0014"
    );
    // Nothing ever goes below zero on hand: shipments take only stock that is there.
    assert!(raised(folded, AlertKind::NegativeStock).is_empty());
}

/// The pricing conflicts are in the events; the alerts they raise belong to the price rules.
/// The example contract's [replenishment], [transfers] and ship_from show in the sample:
/// reorders, a transfer into FBA, routing advice with a split and a shipment from elsewhere.
#[test]
fn sample_shows_reorders_transfers_and_routing() {
    use omnifold_proto::{ReplenishmentAction, RoutingState};
    let (_, folded) = sample();
    let actions = |action: ReplenishmentAction| {
        folded.replenishment.iter().filter(|r| r.action == action as i32).count()
    };
    let (reorders, transfers) =
        (actions(ReplenishmentAction::Reorder), actions(ReplenishmentAction::Transfer));
    let advised = folded.routing.iter().filter(|r| r.state == RoutingState::Advised as i32).count();
    let splits = folded.routing.iter().filter(|r| r.split).count();
    let elsewhere =
        folded.routing.iter().filter(|r| r.state == RoutingState::ShippedElsewhere as i32).count();
    eprintln!(
        "reorders {reorders}, transfers {transfers}, advised {advised}, splits {splits}, elsewhere {elsewhere}"
    );
    assert!(reorders > 0, "no reorder suggestion in the sample");
    assert!(transfers > 0, "no fba transfer suggestion in the sample");
    assert!(
        advised > 0 && splits > 0 && elsewhere > 0,
        "routing: {advised} advised, {splits} splits, {elsewhere} elsewhere"
    );
}

#[test]
fn sample_contains_the_pricing_conflicts() {
    let (events, _) = sample();
    let map_breach = events.iter().any(|e| {
        e.channel == "amazon"
            && matches!(&e.body, Some(Body::PriceSet(p)) if p.sku == "SKU-0001"
                && p.price.as_ref().unwrap().amount.parse::<f64>().unwrap() < 49.0)
    });
    assert!(map_breach, "no amazon PriceSet of SKU-0001 below its MAP of 49.00");

    let promotions: Vec<(&str, i64, i64)> = events
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::PromotionScheduled(p)) if p.sku == "SKU-0002" => {
                Some((e.channel.as_str(), p.starts_at_ms, p.ends_at_ms))
            }
            _ => None,
        })
        .collect();
    let shopify = promotions.iter().find(|p| p.0 == "shopify").expect("a shopify promotion of SKU-0002");
    let eu = promotions.iter().find(|p| p.0 == "eu-market").expect("an eu-market promotion of SKU-0002");
    assert!(shopify.1 < eu.2 && eu.1 < shopify.2, "the promotions do not overlap");

    let undercuts = events
        .iter()
        .filter(|e| matches!(&e.body, Some(Body::CompetitorPriceObserved(c)) if c.competitor == "BargainHub"))
        .count();
    assert!(undercuts >= 3);
}

#[test]
fn committed_sample_file_matches_the_generator() {
    let (events, _) = sample();
    let committed = std::fs::read_to_string(SAMPLE_FILE)
        .expect("deploy/local/sample-events.ndjson exists (omnifold-workload sample --out ...)");
    let generated = ndjson(events);
    assert!(
        committed == generated,
        "deploy/local/sample-events.ndjson drifted from the generator; regenerate it with \
         `cargo run --release -p omnifold-workload -- sample --out deploy/local/sample-events.ndjson`"
    );
}

#[test]
fn bench_mix_is_near_the_target_shares() {
    let rules = rules();
    let events = generate(&rules, &WorkloadOptions::bench(1_000, 200_000));
    let counts = type_counts(&events);
    let share = |kinds: &[&str]| {
        100.0 * kinds.iter().map(|k| counts.get(k).copied().unwrap_or(0)).sum::<usize>() as f64
            / events.len() as f64
    };
    let targets: [(&[&str], f64); 7] = [
        (&["OrderLinePlaced"], 55.0),
        (&["OrderLineShipped"], 20.0),
        (&["OrderLineCancelled"], 5.0),
        (&["OrderLineReturned"], 3.0),
        (&["StockCounted", "StockAdjusted"], 10.0),
        (&["PriceSet"], 5.0),
        (&["PromotionScheduled", "PromotionCancelled"], 2.0),
    ];
    for (kinds, target) in targets {
        let got = share(kinds);
        assert!((got - target).abs() <= 2.0, "{kinds:?}: {got:.1}% against {target}% ({counts:?})");
    }
}

/// `cargo test -p omnifold-workload --test workload -- --ignored --nocapture` prints the
/// sample's mix and the events behind its notable conditions.
#[test]
#[ignore]
fn report_sample() {
    let (events, folded) = sample();
    println!("{} events", events.len());
    for (kind, count) in type_counts(events) {
        println!("  {kind:26} {count:6} {:5.1}%", 100.0 * count as f64 / events.len() as f64);
    }
    let day = |id: &str| {
        let e = events.iter().find(|e| e.event_id == id).unwrap();
        (e.occurred_at_ms - SAMPLE_START_MS) as f64 / 86_400_000.0
    };
    let mut alerts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, a) in &folded.alerts {
        let key = format!(
            "{} {}",
            AlertKind::try_from(a.kind).unwrap().name(),
            AlertState::try_from(a.state).unwrap().name()
        );
        alerts.entry(key).or_default().push(format!(
            "{id} {} {} (day {:.2})",
            a.sku,
            a.channels.join(","),
            day(id)
        ));
    }
    for (key, list) in alerts {
        println!("{key}: {}", list.len());
        for line in list.iter().take(12) {
            println!("    {line}");
        }
    }
    let mut escalations: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, e) in &folded.escalations {
        let key = EscalationRule::try_from(e.rule).unwrap().name().to_string();
        escalations.entry(key).or_default().push(format!("{id} {} (day {:.2})", e.escalation_id, day(id)));
    }
    for (key, list) in escalations {
        println!("{key}: {}", list.len());
        for line in list.iter().filter(|l| !l.contains("/wholesale/")).take(12) {
            println!("    {line}");
        }
    }
    let mut scarcity: BTreeMap<&str, (&str, usize)> = BTreeMap::new();
    for (id, a) in &folded.availability {
        if a.mode == AllocationMode::Scarcity as i32 {
            scarcity.entry(a.sku.as_str()).or_insert((id.as_str(), 0)).1 += 1;
        }
    }
    println!("SCARCITY (sku: first event, records): {scarcity:?}");
}

/// The weekly figures of the sample, folded from the coordinator's contribution ledger and
/// alerts, equal field for field the figures the reporter computed from the events with its
/// own copy of the stock model before the ledger replaced it (`golden/sample-snapshots.json`,
/// written by that reporter at commit 52863d4): one acceptor changed no figure.
#[test]
fn the_report_from_the_ledger_equals_the_figures_of_the_reporters_own_valuation() {
    use omnifold_domain::ledger::written_for;
    use omnifold_domain::report::{AlertLedger, Applied, Merger, PartitionLedger};
    use std::collections::BTreeSet;
    let (events, folded) = sample();
    let rules = rules();
    let (fold, mut state, mut ledger) =
        (Fold::new(rules.clone()), PartitionState::default(), PartitionLedger::default());
    let mut cells = BTreeSet::new();
    for (offset, event) in events.iter().enumerate() {
        for entry in written_for(&fold, &mut state, event, (0, offset as i64)).1 {
            if let Applied::Folded { cells: changed } = ledger.apply(&rules, &entry).expect("entries read") {
                cells.extend(changed);
            }
        }
    }
    let mut alerts = AlertLedger::default();
    let mut alert_cells = BTreeSet::new();
    for (_, alert) in &folded.alerts {
        alert_cells.extend(alerts.apply(&rules, alert));
    }
    let records = [ledger.record(0, 1, &cells), alerts.record(0, 1, &alert_cells)];
    let mut merger = Merger::default();
    merger.apply_all(&rules, &records, &[], &mut HashSet::new());
    let got: BTreeMap<String, serde_json::Value> = merger
        .emitted
        .iter()
        .map(|(cell, s)| (cell.key(), exact(serde_json::to_value(&s.figures).expect("figures serialize"))))
        .collect();
    let want: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(include_str!("golden/sample-snapshots.json")).expect("the golden file reads");
    let want: BTreeMap<String, serde_json::Value> = want.into_iter().map(|(k, v)| (k, exact(v))).collect();
    assert_eq!(got.len(), want.len(), "reported cells");
    assert!(got.len() >= 4, "a week of every channel is reported: {:?}", got.keys());
    for (key, figures) in &want {
        assert_eq!(got.get(key), Some(figures), "{key}");
    }
}

/// Decimals compared by value: "282.420" and "282.4200" are one amount (the snapshots write
/// both as 282.42).
fn exact(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => match text.parse::<rust_decimal::Decimal>() {
            Ok(decimal) => Value::String(decimal.normalize().to_string()),
            Err(_) => Value::String(text),
        },
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, exact(v))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().map(exact).collect()),
        other => other,
    }
}

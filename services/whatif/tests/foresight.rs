//! Knowing the history ahead (ids that occur once, lines no later event names) changes no
//! answer: every benchmark scenario, replayed with the history's foresight and with none,
//! gives the same decisions, alerts, pages and weekly figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use omnifold_runtime::load_contract;
use omnifold_whatif::bench::alternatives;
use omnifold_whatif::{Channels, Counter, Foresight, History, Override, Run, Scenario, replay};
use omnifold_workload::WorkloadOptions;

fn contract() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/contract.toml")
}

/// A generated history with some events delivered twice, later on.
fn history() -> History {
    let rules = load_contract(&contract()).expect("the local contract loads");
    let mut events = omnifold_workload::generate(&rules, &WorkloadOptions::bench_over(40, 20_000, 60));
    let redelivered: Vec<_> = events.iter().step_by(97).cloned().collect();
    for (n, event) in redelivered.into_iter().enumerate() {
        let at = (n * 211 + 500).min(events.len());
        events.insert(at, event);
    }
    History::from_events(events, 3)
}

/// What an answer reads of a run, in a comparable form.
fn outcome(run: &Run) -> String {
    let scarcity: BTreeMap<_, _> = run.scarcity_ms.iter().collect();
    format!(
        "{} {} {} {} {} {:?} {:?} {scarcity:?} {:?} {:?} {} {:?} {:?} {:?} {:?} {} {} {:?}",
        run.applied,
        run.duplicates,
        run.rejected,
        run.dropped,
        run.synthetic,
        run.decisions,
        run.final_availability,
        run.alerts,
        run.alerts_by_accountable,
        run.oversold_units,
        run.pages,
        run.alert_records,
        run.escalation_ids,
        run.units,
        run.shifted_units,
        run.unshifted_units,
        run.snapshots,
    )
}

#[test]
fn every_scenario_answers_the_same_with_the_historys_foresight_and_without() {
    let history = history();
    let rules = load_contract(&contract()).expect("the local contract loads");
    let mut scenarios = vec![Scenario::baseline(rules)];
    // retired halfway too: the retirement then cancels the lines still open, which must be held
    let (start, end) = (history.start_ms().expect("events"), history.last_ms().expect("events"));
    let halfway = (start + end) / 2;
    let mut named = alternatives();
    let o = |text: String| Override::parse(&text).expect("an override parses");
    named.push(("retire-halfway", vec![o(format!("retire wholesale@{halfway}"))]));
    named.push((
        "shift-halfway",
        vec![o(format!("retire wholesale@{halfway}")), o("shift wholesale=shopify:0.3".into())],
    ));
    for (name, overrides) in named {
        scenarios
            .push(Scenario::build(name, &contract(), &overrides, history.start_ms()).expect("a scenario"));
    }
    let (skus, channels) = (history.sku_index(), Channels::of(&scenarios));
    let foresight = Foresight::of(&history);
    let blind = Foresight::default();
    for scenario in &scenarios {
        let seen = replay(&history, &foresight, &skus, &channels, scenario, &Counter::default());
        let plain = replay(&history, &blind, &skus, &channels, scenario, &Counter::default());
        assert!(plain.duplicates > 0, "the history redelivers events");
        assert!(plain.applied > 10_000, "{}: {} applied", scenario.name, plain.applied);
        // not assert_eq: the two outcomes are some hundred kilobytes of text each
        assert!(outcome(&seen) == outcome(&plain), "scenario {}: the answers differ", scenario.name);
    }
}

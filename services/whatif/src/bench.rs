//! `omnifold-what-if bench`: the replay rate over a generated history with three
//! alternatives beside the baseline (retire wholesale and shift 30% of it to shopify; amazon's
//! max_share at 0.4; scarcity by priority), side by side on the cores available.
//!
//! ```text
//! cargo run --release -p omnifold-whatif --bin omnifold-what-if -- bench --events 1000000
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use omnifold_runtime::load_contract;
use omnifold_workload::WorkloadOptions;
use serde::Serialize;

use crate::scenario::{Override, Scenario, ScenarioError};
use crate::{History, run_all};

/// The three alternatives of the benchmark.
pub fn alternatives() -> Vec<(&'static str, Vec<Override>)> {
    let o = |text: &str| Override::parse(text).expect("a benchmark override parses");
    vec![
        ("retire-wholesale", vec![o("retire wholesale"), o("shift wholesale=shopify:0.3")]),
        ("amazon-0.4", vec![o("set channels.amazon.max_share=0.4")]),
        ("priority", vec![o("set allocation.scarcity_mode=priority")]),
    ]
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub events: usize,
    pub skus: usize,
    pub days: u32,
    pub scenarios: usize,
    pub threads_available: usize,
    pub generate_s: f64,
    pub replay_s: f64,
    /// History events replayed per second, every scenario done.
    pub history_events_per_s: f64,
    /// Events folded per second over every scenario.
    pub folded_events_per_s: f64,
    /// The replay time scaled linearly to 10M events.
    pub projected_10m_s: f64,
}

/// `alternatives`: how many of [`alternatives`] run beside the baseline (3 for the benchmark; 0
/// gives the replay's rate on one core).
pub fn run(
    contract: &Path,
    (events, skus, days, partitions): (usize, usize, u32, i32),
    alternatives: usize,
) -> Result<BenchReport, ScenarioError> {
    let rules = load_contract(contract)
        .map_err(|e| ScenarioError::Override { scenario: "baseline".into(), message: e.to_string() })?;
    let started = Instant::now();
    let generated = omnifold_workload::generate(&rules, &WorkloadOptions::bench_over(skus, events, days));
    let history = History::from_events(generated, partitions);
    let generate_s = started.elapsed().as_secs_f64();
    eprintln!("generated {} events over {skus} skus and {days} days in {generate_s:.1} s", history.len());
    let mut scenarios = vec![Scenario::baseline(rules)];
    for (name, overrides) in self::alternatives().into_iter().take(alternatives) {
        scenarios.push(Scenario::build(name, contract, &overrides, history.start_ms())?);
    }
    let started = Instant::now();
    let runs = run_all(&history, &scenarios, Some(Duration::from_secs(5)));
    let replay_s = started.elapsed().as_secs_f64();
    for run in &runs {
        eprintln!(
            "{}: {} applied, {} decisions, {} snapshots",
            run.name,
            run.applied,
            run.decisions.len(),
            run.snapshots.len()
        );
    }
    Ok(BenchReport {
        events: history.len(),
        skus,
        days,
        scenarios: scenarios.len(),
        threads_available: std::thread::available_parallelism().map_or(1, |n| n.get()),
        generate_s,
        replay_s,
        history_events_per_s: history.len() as f64 / replay_s,
        folded_events_per_s: (history.len() * scenarios.len()) as f64 / replay_s,
        projected_10m_s: replay_s * 10_000_000.0 / history.len().max(1) as f64,
    })
}

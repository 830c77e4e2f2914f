//! omnifold what-if: replays real history under the current contract and under alternatives,
//! and says what would have been different.
//!
//! The history is the events topic read from its start (nothing committed, nothing written)
//! or an NDJSON file of events ([`history`]). Each scenario ([`scenario`]) is replayed by the
//! coordinator's own fold and the reporter's own report math, in memory ([`replay`]); the
//! scenarios run side by side, one thread each ([`run_all`]). The answer ([`answer`]) puts
//! each beside the baseline, as a terminal table ([`table`]), JSON
//! (`schemas/what-if.schema.json`) and a self-contained HTML page ([`page`]).

pub mod answer;
pub mod bench;
pub mod foresight;
pub mod history;
pub mod page;
pub mod replay;
pub mod scenario;
pub mod table;

use std::io::Write as _;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use omnifold_proto::Event;

pub use answer::{Answer, answer};
pub use foresight::Foresight;
pub use history::History;
pub use replay::{Channels, Counter, Run, replay, replay_decoded};
pub use scenario::{Override, Scenario, ScenarioError};

/// Decoded chunks a scenario's queue holds ahead of its replay.
const DECODED_AHEAD: usize = 4;

/// The schema of the JSON answer, published in `schemas/`.
pub const ANSWER_SCHEMA: &str = include_str!("../../../schemas/what-if.schema.json");

/// Replays every scenario over the history, side by side (one thread each), reporting
/// progress (events per second over every scenario, and the time left) on stderr every
/// `progress` when given. Runs come back in the order of `scenarios`.
pub fn run_all(history: &History, scenarios: &[Scenario], progress: Option<Duration>) -> Vec<Run> {
    // two passes over the whole history, side by side
    let (skus, foresight) = std::thread::scope(|scope| {
        let foresight = scope.spawn(|| Foresight::of(history));
        (history.sku_index(), foresight.join().expect("the foresight pass panicked"))
    });
    let channels = Channels::of(scenarios);
    let counters: Vec<Counter> = scenarios.iter().map(|_| Counter::default()).collect();
    let total = (history.len() * scenarios.len()) as u64;
    let started = Instant::now();
    std::thread::scope(|scope| {
        // decoded once for every scenario, a few chunks ahead of the slowest
        let (queues, decoded): (Vec<_>, Vec<_>) =
            scenarios.iter().map(|_| sync_channel::<Arc<Vec<Event>>>(DECODED_AHEAD)).unzip();
        scope.spawn(move || {
            for chunk in history.chunks(replay::CHUNK_EVENTS) {
                for queue in &queues {
                    // a replay that panicked hung up; the others go on, and the panic is joined
                    let _ = queue.send(chunk.clone());
                }
            }
        });
        let handles: Vec<_> = scenarios
            .iter()
            .zip(&counters)
            .zip(decoded)
            .map(|((scenario, counter), chunks)| {
                let (foresight, skus, channels) = (&foresight, &skus, &channels);
                scope.spawn(move || {
                    replay_decoded(history, chunks, foresight, skus, channels, scenario, counter)
                })
            })
            .collect();
        if let Some(every) = progress {
            let mut next = every;
            while !handles.iter().all(|h| h.is_finished()) {
                std::thread::sleep(Duration::from_millis(50));
                if started.elapsed() < next {
                    continue;
                }
                next += every;
                let done: u64 = counters.iter().map(Counter::get).sum();
                let seconds = started.elapsed().as_secs_f64();
                let rate = done as f64 / seconds.max(1e-9);
                let left = total.saturating_sub(done) as f64 / rate.max(1.0);
                let _ = writeln!(
                    std::io::stderr(),
                    "what-if: {done}/{total} events folded over {} scenarios, {rate:.0} events/s, about {left:.0} s left",
                    scenarios.len()
                );
            }
        }
        handles.into_iter().map(|h| h.join().expect("a replay thread panicked")).collect()
    })
}

//! Micro benchmarks of the pure parts of the coordinator's hot path, in events per second:
//!
//! - `decode/event_mix`: `omnifold.v1.Event` protobuf decoding (prost) of the benchmark mix;
//! - `fold/apply`: the pure fold (`Fold::apply`) of the same events into an empty state, one
//!   core, no I/O.
//!
//! The events are `WorkloadOptions::bench(1_000, 100_000)`: 100 events per SKU, the ratio of the
//! end-to-end benchmark's default (10,000 SKUs, 1,000,000 events).
//!
//!     cargo bench -p omnifold-bench --bench fold

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use omnifold_bench::{bench_events, example_rules, fold_all};
use omnifold_domain::Fold;
use omnifold_proto::Event;
use prost::Message;

const SKUS: usize = 1_000;
const EVENTS: usize = 100_000;

fn decode_and_fold(c: &mut Criterion) {
    let rules = example_rules();
    let events = bench_events(&rules, SKUS, EVENTS);
    let encoded: Vec<Vec<u8>> = events.iter().map(Message::encode_to_vec).collect();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(20).measurement_time(Duration::from_secs(8)).sampling_mode(SamplingMode::Flat);
    group.bench_function("event_mix", |b| {
        b.iter(|| {
            for bytes in &encoded {
                black_box(Event::decode(black_box(bytes.as_slice())).expect("decodes"));
            }
        })
    });
    group.finish();

    let fold = Fold::new(rules);
    let mut group = c.benchmark_group("fold");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(10).measurement_time(Duration::from_secs(20)).sampling_mode(SamplingMode::Flat);
    // The state is dropped outside the measurement.
    group.bench_function("apply", |b| b.iter_with_large_drop(|| fold_all(&fold, black_box(&events))));
    group.finish();
}

criterion_group!(benches, decode_and_fold);
omnifold_bench::criterion_main_on_services_allocator!(benches);

//! Micro benchmark of the fold plus the store commit, in events per second, at 100, 1,000 and
//! 10,000 events per batch.
//!
//! Each batch does what the coordinator's fold loop does after decoding (`omnifold_bench::Pipeline`,
//! through the coordinator's state engine): apply every event on its input partition (6
//! partitions, murmur2 of the key), `push_output` of every encoded output, then the engine's
//! write of what changed and of the accepted ids, `put_offset` of each partition and
//! `Store::commit`, which applies the batch and fsyncs it. Each iteration starts from an empty store in a fresh temporary directory (not
//! timed) and runs the whole workload, `WorkloadOptions::bench(1_000, 100_000)`.
//!
//!     cargo bench -p omnifold-bench --bench commit

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use omnifold_bench::{Pipeline, bench_events, example_rules};
use omnifold_runtime::Store;

const SKUS: usize = 1_000;
const EVENTS: usize = 100_000;
const PARTITIONS: i32 = 6;

fn fold_and_commit(c: &mut Criterion) {
    let rules = example_rules();
    let events = bench_events(&rules, SKUS, EVENTS);
    let scratch = std::env::temp_dir();

    let mut group = c.benchmark_group("fold_commit");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for batch in [100, 1_000, 10_000] {
        // About ten whole runs of the workload: smaller batches mean more fsyncs.
        let seconds = match batch {
            100 => 150,
            1_000 => 70,
            _ => 60,
        };
        group.measurement_time(Duration::from_secs(seconds));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            b.iter_custom(|iterations| {
                let mut measured = Duration::ZERO;
                for _ in 0..iterations {
                    let dir = tempfile::Builder::new()
                        .prefix("omnifold-bench-commit-")
                        .tempdir_in(&scratch)
                        .unwrap();
                    let store = Store::open(dir.path()).expect("store opens");
                    let mut pipeline = Pipeline::new(rules.clone(), store, PARTITIONS);
                    let started = Instant::now();
                    for chunk in events.chunks(batch) {
                        black_box(pipeline.run_batch(chunk).expect("batch commits"));
                    }
                    measured += started.elapsed();
                    drop(pipeline);
                }
                measured
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fold_and_commit);
omnifold_bench::criterion_main_on_services_allocator!(benches);

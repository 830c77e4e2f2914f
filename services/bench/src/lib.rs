//! omnifold's benchmarks: what the criterion micro benchmarks (`benches/`) and the end-to-end
//! benchmark (`omnifold-bench`, `src/main.rs`) share.
//!
//! - [`Pipeline`] does per batch what the coordinator's fold loop does once the events are
//!   decoded, through the coordinator's own state engine (fold over cached states, then one
//!   store commit of what changed, the accepted ids, the offsets and the encoded outputs),
//!   without Kafka, so the fold and the commit can be timed alone.
//! - [`procfs`] reads peak memory and CPU time of a process, and the machine's description.
//! - [`stats`] gives percentiles.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use omnifold_coordinator::engine::{Engine, EngineOptions, EngineStats, stored_kind};
use omnifold_coordinator::persister::{PersistError, Persister};
use omnifold_coordinator::{Position, output_records};
use omnifold_domain::{Fold, Outcome, PartitionState, Rules};
use omnifold_proto::Event;
use omnifold_runtime::deadletter::{Source, dead_letter};
use omnifold_runtime::partitioner::partition_for;
use omnifold_runtime::{OutboxRecord, Store, Topics};
use omnifold_workload::WorkloadOptions;
use prost::Message as _;

pub mod catchup;
pub mod child;
pub mod e2e;
pub mod heap;
pub mod history;
pub mod kafka;
pub mod procfs;
pub mod report;
pub mod scaleout;
pub mod stats;

/// The `main` of a criterion benchmark (in place of `criterion_main!`) that runs on the
/// services' allocator, set up as `omnifold_runtime::allocator` says: the fold allocates many
/// small values, and the system allocator would measure a fold no service runs.
#[macro_export]
macro_rules! criterion_main_on_services_allocator {
    ($group:path) => {
        #[global_allocator]
        static ALLOCATOR: omnifold_runtime::allocator::Allocator = omnifold_runtime::allocator::Allocator;

        fn main() {
            omnifold_runtime::allocator::purge_whole_huge_pages();
            $group();
            criterion::Criterion::default().configure_from_args().final_summary();
        }
    };
}

/// The example contract the workloads are generated for (`deploy/local/contract.toml`).
pub fn contract_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/contract.toml")
}

/// The rules of the example contract, loaded and validated as every service does.
pub fn example_rules() -> Rules {
    omnifold_runtime::load_contract(&contract_path()).expect("the example contract loads")
}

/// The benchmark workload (`WorkloadOptions::bench`) of `events` events over `skus` SKUs.
pub fn bench_events(rules: &Rules, skus: usize, events: usize) -> Vec<Event> {
    omnifold_workload::generate(rules, &WorkloadOptions::bench(skus, events))
}

/// The input partition of an event on an events topic of `partitions` partitions, as the
/// connector's producer (murmur2 of the record key) puts it.
pub fn input_partition(event: &Event, partitions: i32) -> i32 {
    partition_for(event.partition_key().as_bytes(), partitions)
}

/// What one [`Pipeline::run_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub events: usize,
    pub outputs: usize,
    pub dirty_skus: usize,
    pub rejected: usize,
}

/// What the batches of a [`Pipeline`] handed the store, by what it holds
/// ([`omnifold_coordinator::engine::stored_kind`], and the outbox's records): keys written or
/// removed and their bytes (key and value; a removal counts its key). It says where the
/// store's work goes: each byte goes through the journal and a memtable, and what is kept
/// through every compaction after.
///
/// Counted inside the timed batch, some 5,000 keys and records a batch, so a count is a
/// pointer compare among the dozen kinds, not a string compare or a hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteVolume(Vec<(&'static str, Volume)>);

/// Keys written of one kind, and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Volume {
    pub keys: u64,
    pub bytes: u64,
}

impl WriteVolume {
    fn add(&mut self, kind: &'static str, bytes: usize) {
        // the kinds are literals: the same one is mostly the same pointer, and equal text else
        let at = self.0.iter().position(|(seen, _)| std::ptr::eq(*seen, kind));
        let at = at.or_else(|| self.0.iter().position(|(seen, _)| *seen == kind)).unwrap_or_else(|| {
            self.0.push((kind, Volume::default()));
            self.0.len() - 1
        });
        let written = &mut self.0[at].1;
        written.keys += 1;
        written.bytes += bytes as u64;
    }

    /// Each kind with what was written of it, largest first.
    pub fn largest_first(&self) -> Vec<(&'static str, Volume)> {
        let mut kinds = self.0.clone();
        kinds.sort_by_key(|(kind, written)| (std::cmp::Reverse(written.bytes), *kind));
        kinds
    }
}

/// The outbox records' share of a [`WriteVolume`]: the records are stored a batch to one key,
/// each with its topic, key, value and headers.
pub const OUTBOX_RECORDS: &str = "outbox records";

/// The coordinator's per-batch work on decoded events: apply each through the state engine,
/// then commit what changed, the accepted ids, the next offset of each partition and the
/// encoded outputs in one durable store batch, as `FoldLoop` in
/// `services/coordinator/src/service.rs` does, minus the consumer, the metrics and the group
/// offset commit. As there, each batch is written and fsynced by the persister's thread while
/// the next one folds; [`Pipeline::finish`] waits for the last.
pub struct Pipeline {
    engine: Engine,
    store: Store,
    topics: Topics,
    partitions: i32,
    offsets: HashMap<i32, i64>,
    /// Sequence numbers of the outbox records fsynced and not yet taken by
    /// [`Pipeline::take_committed`]: what the coordinator hands its sender in memory.
    committed: Arc<Mutex<Vec<u64>>>,
    persister: Option<Persister>,
    volume: WriteVolume,
}

impl Pipeline {
    pub fn new(rules: Rules, store: Store, partitions: i32) -> Self {
        Self::with_engine(rules, store, partitions, EngineOptions::default())
    }

    pub fn with_engine(rules: Rules, store: Store, partitions: i32, options: EngineOptions) -> Self {
        Pipeline {
            engine: Engine::new(Fold::new(rules), store.clone(), options),
            store,
            topics: Topics::new("omnifold."),
            partitions,
            offsets: HashMap::new(),
            committed: Arc::default(),
            persister: None,
            volume: WriteVolume::default(),
        }
    }

    /// The outbox records fsynced since the last call, as the coordinator hands them to its
    /// sender (in memory, without reading the store back).
    pub fn take_committed(&mut self) -> Vec<u64> {
        std::mem::take(&mut *self.committed.lock().expect("committed lock"))
    }

    /// Waits until every batch is written and fsynced.
    pub fn finish(&mut self) -> Result<(), PersistError> {
        self.persister.take().map_or(Ok(()), |mut persister| persister.finish())
    }

    fn persister(&mut self) -> &mut Persister {
        let committed = self.committed.clone();
        self.persister.get_or_insert_with(|| {
            let hand = move |records: omnifold_runtime::Handed| {
                committed.lock().expect("committed lock").extend(records.into_iter().map(|(seq, _)| seq));
            };
            Persister::spawn(self.store.clone(), Box::new(hand))
        })
    }

    /// What the batches so far handed the store.
    pub fn write_volume(&self) -> &WriteVolume {
        &self.volume
    }

    /// The engine's cache and what it did.
    pub fn engine_stats(&self) -> EngineStats {
        self.engine.stats()
    }

    /// Folds `events` and commits them as one batch.
    pub fn run_batch(&mut self, events: &[Event]) -> Result<BatchStats, PersistError> {
        let mut commit = self.store.begin()?;
        let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let mut rejected = 0;
        for event in events {
            let partition = input_partition(event, self.partitions);
            let offset = self.offsets.entry(partition).or_insert(0);
            next_offsets.insert(partition, *offset + 1);
            let source = Source { topic: &self.topics.events, partition, offset: *offset };
            *offset += 1;
            match self.engine.apply(partition, event)? {
                Outcome::Applied { outputs, .. } => {
                    let position = Position { partition, offset: *offset - 1 };
                    for output in outputs {
                        for record in output_records(&self.topics, output, position) {
                            self.volume.add(OUTBOX_RECORDS, record_bytes(&record));
                            commit.hand_output(record);
                        }
                    }
                }
                Outcome::Duplicate => {}
                Outcome::Rejected(rejection) => {
                    rejected += 1;
                    let reason = format!("event {:?}: {rejection}", event.event_id);
                    let key = event.partition_key().as_bytes();
                    let record =
                        dead_letter(&self.topics.deadletter, key, &event.encode_to_vec(), &reason, source);
                    self.volume.add(OUTBOX_RECORDS, record_bytes(&record));
                    commit.hand_output(record);
                }
            }
        }
        self.persister().settle()?;
        self.engine.trim();
        let dirty_skus = self.engine.write(&mut commit);
        for (partition, next) in &next_offsets {
            commit.put_offset(*partition, *next);
        }
        for partition in next_offsets.keys() {
            for (key, value) in commit.partition_writes(*partition) {
                self.volume.add(stored_kind(key), key.len() + value.map_or(0, |value| value.len()));
            }
        }
        let outputs = commit.outputs();
        let handed = commit.take_outputs();
        self.persister().submit(commit, handed)?;
        Ok(BatchStats { events: events.len(), outputs, dirty_skus, rejected })
    }
}

fn record_bytes(record: &OutboxRecord) -> usize {
    let headers: usize = record.headers.iter().map(|(name, value)| name.len() + value.len()).sum();
    record.topic.len() + record.key.len() + record.value.len() + headers
}

/// Folds `events` into one fresh partition state, one at a time; returns how many outputs
/// they caused. The pure fold alone: no decoding, no encoding, no store.
pub fn fold_all(fold: &Fold, events: &[Event]) -> (PartitionState, usize) {
    let mut state = PartitionState::default();
    let mut outputs = 0;
    for event in events {
        if let Outcome::Applied { outputs: out, .. } = fold.apply(&mut state, event) {
            outputs += out.len();
        }
    }
    (state, outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipeline_commits_what_the_fold_accepts() {
        let rules = example_rules();
        let events = bench_events(&rules, 20, 2_000);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut pipeline = Pipeline::new(rules.clone(), store.clone(), 6);
        let mut total = BatchStats::default();
        for batch in events.chunks(300) {
            let stats = pipeline.run_batch(batch).unwrap();
            total.events += stats.events;
            total.outputs += stats.outputs;
            total.rejected += stats.rejected;
        }
        pipeline.finish().unwrap();
        assert_eq!(total.events, 2_000);
        assert_eq!(total.rejected, 0, "the bench workload is valid against the example contract");
        assert_eq!(store.pending_count(), total.outputs, "every output is in the outbox");
        let consumed: i64 = store.offsets().unwrap().values().sum();
        assert_eq!(consumed, 2_000, "the offsets cover every event");

        // the pure fold's outputs, as outbox records (a ledger entry is two: protobuf and json)
        let (fold, mut state, mut records) = (Fold::new(rules), PartitionState::default(), 0);
        for event in &events {
            if let Outcome::Applied { outputs, .. } = fold.apply(&mut state, event) {
                let topics = Topics::new("omnifold.");
                records += outputs
                    .into_iter()
                    .map(|o| output_records(&topics, o, Position { partition: 0, offset: 0 }).len())
                    .sum::<usize>();
            }
        }
        assert_eq!(records, total.outputs, "batching changes nothing");

        let volume: BTreeMap<_, _> = pipeline.write_volume().largest_first().into_iter().collect();
        assert_eq!(volume["accepted event ids"].keys, 2_000, "an id per event accepted");
        assert_eq!(volume[OUTBOX_RECORDS].keys as usize, total.outputs, "every record handed");
        assert!(volume[OUTBOX_RECORDS].bytes > 20 * volume[OUTBOX_RECORDS].keys, "a topic, a key, a value");
        for kind in ["sku states", "order lines", "demand segments", "input offsets"] {
            assert!(volume.get(kind).is_some_and(|v| v.keys > 0 && v.bytes >= v.keys), "{kind}: {volume:?}");
        }
        assert!(!volume.contains_key("other"), "every key the engine writes is named: {volume:?}");
    }
}

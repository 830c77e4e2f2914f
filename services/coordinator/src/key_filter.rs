//! Which keys the store may hold: a Bloom filter over every accepted event id and every keyed
//! record (order line, promotion id) of the partitions this coordinator folds, so that the
//! point reads for a key never written (a new event's id, a new line) skip the store.
//!
//! Those reads are most of the engine's: each event's id is checked, and most events name a
//! line or a promotion that does not exist yet. In the store each of them probes the memtables
//! and one table per level of the LSM tree, so its cost grows with the store; the filter's is
//! a hash and a few bits, whatever the history. A "may hold" answer still reads the store,
//! so a false positive costs one read and never changes an outcome.
//!
//! The filter's size is set by configuration
//! ([`crate::engine::EngineOptions::key_filter_bytes`]), not by the history: past its design
//! load its false positives grow, and so do the reads, but nothing else.
//!
//! Architecture invariant: the filter answers "never written" for a partition only while it
//! covers every key of it the store holds. Every key the engine writes goes in before its
//! commit is handed to the store. What was there before (a store opened again, a restore from
//! the changelog) is read by a scan on a thread of its own, started at the partition's first
//! event; until it ends, and again whenever the store's partition keys were written around the
//! engine ([`Store::rewrites`]), every check reads the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use fastbloom::AtomicBloomFilter;
use omnifold_runtime::{Store, StoreError};
use rustc_hash::FxHashMap as HashMap;

/// Bits set per key. With the default 16 MiB, false positives stay under 1% up to about 12
/// million keys and near 2% at 16 million (a year of a busy 1,000-SKU catalogue: 10M ids and
/// some 6M lines), as with seven hashes a key, for fewer probes; at 8 MiB they reach 14% there,
/// where seven would give 23%.
const HASHES: u32 = 4;
/// A fixed seed: the filter lives only in memory, and a fixed one keeps runs comparable.
const SEED: u64 = 0x6b65_7973_6565_6e21;

/// foldhash's quality variant: each event checks its id and often a line, and inserts both,
/// so the hash is on every event's path; with fastbloom's default (SipHash 1-3) the filter
/// took twice its time now.
type Hashes = foldhash::quality::FixedState;
type Bloom = AtomicBloomFilter<Hashes>;

/// What a key is, so that an id and a record key with the same bytes are told apart.
#[derive(Hash, Clone, Copy)]
enum Kind {
    Id,
    Record,
}

/// The filter and how far it covers each partition.
pub struct KeyFilter {
    bloom: Option<Arc<Bloom>>,
    store: Store,
    partitions: HashMap<i32, Coverage>,
}

/// How much of a partition's stored keys the filter holds.
struct Coverage {
    /// [`Store::rewrites`] when the scan started: a later rewrite makes the scan stale.
    rewrites: u64,
    scan: Scan,
}

/// A scan of a partition's stored keys into the filter, on its own thread.
struct Scan {
    done: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scan {
    fn start(store: Store, bloom: Arc<Bloom>, partition: i32) -> Scan {
        let (done, cancel) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (finished, cancelled) = (done.clone(), cancel.clone());
        let thread = std::thread::Builder::new()
            .name("omnifold-key-scan".into())
            .spawn(move || match scan_partition(&store, &bloom, partition, &cancelled) {
                Ok(true) => {
                    finished.store(true, Ordering::Release);
                    tracing::debug!(partition, "the key filter covers the partition");
                }
                Ok(false) => {}
                // the partition's checks keep reading the store
                Err(error) => tracing::warn!(partition, %error, "cannot scan the partition's keys"),
            })
            .expect("a thread starts");
        Scan { done, cancel, thread: Some(thread) }
    }

    fn stop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Scan {
    /// The scan holds the store open: it ends before the engine does.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Puts every id and record key the store holds of `partition` in the filter; false when
/// cancelled first.
fn scan_partition(
    store: &Store,
    bloom: &Bloom,
    partition: i32,
    cancel: &AtomicBool,
) -> Result<bool, StoreError> {
    for (kind, prefix) in [(Kind::Id, &b"e/"[..]), (Kind::Record, &b"k/"[..])] {
        for (n, key) in store.partition_keys(partition, prefix).enumerate() {
            if n % 4_096 == 0 && cancel.load(Ordering::Relaxed) {
                return Ok(false);
            }
            bloom.insert(&(kind, partition, &key?[..]));
        }
    }
    Ok(true)
}

impl KeyFilter {
    /// A filter of `bytes` (none at 0: every check reads the store).
    pub fn new(store: Store, bytes: usize) -> KeyFilter {
        let bloom = (bytes > 0).then(|| {
            let bits = AtomicBloomFilter::with_num_bits(bytes * 8).hasher(Hashes::with_seed(SEED));
            Arc::new(bits.hashes(HASHES))
        });
        KeyFilter { bloom, store, partitions: HashMap::default() }
    }

    /// Whether the store may hold the event id as accepted by `partition`.
    pub fn may_hold_id(&mut self, partition: i32, event_id: &str) -> bool {
        self.may_hold(Kind::Id, partition, event_id.as_bytes())
    }

    /// Whether the store may hold the keyed record of `partition`.
    pub fn may_hold_record(&mut self, partition: i32, key: &[u8]) -> bool {
        self.may_hold(Kind::Record, partition, key)
    }

    /// Notes an id the engine is about to write.
    pub fn insert_id(&self, partition: i32, event_id: &(impl AsRef<[u8]> + ?Sized)) {
        if let Some(bloom) = &self.bloom {
            bloom.insert(&(Kind::Id, partition, event_id.as_ref()));
        }
    }

    /// Notes a record key the engine is about to write.
    pub fn insert_record(&self, partition: i32, key: &[u8]) {
        if let Some(bloom) = &self.bloom {
            bloom.insert(&(Kind::Record, partition, key));
        }
    }

    /// Stops covering a partition this instance gave up; a next owner here scans it again.
    pub fn forget_partition(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Whether the filter holds every stored key of the partition (starting its scan when
    /// there is none, or the last is stale).
    pub fn covers(&mut self, partition: i32) -> bool {
        let Some(bloom) = &self.bloom else { return false };
        let rewrites = self.store.rewrites();
        if let Some(coverage) = self.partitions.get(&partition)
            && coverage.rewrites == rewrites
        {
            return coverage.scan.done.load(Ordering::Acquire);
        }
        // the store's keys of some partition were written around the engine: scanned again
        let scan = Scan::start(self.store.clone(), bloom.clone(), partition);
        self.partitions.insert(partition, Coverage { rewrites, scan });
        false
    }

    fn may_hold(&mut self, kind: Kind, partition: i32, key: &[u8]) -> bool {
        if !self.covers(partition) {
            return true;
        }
        self.bloom.as_ref().is_none_or(|bloom| bloom.contains(&(kind, partition, key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn covered(filter: &mut KeyFilter, partition: i32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !filter.covers(partition) {
            assert!(Instant::now() < deadline, "the scan of partition {partition} ended");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A fresh store, with the directory that must outlive it.
    fn open_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn stored_ids(store: &Store, partition: i32, ids: &[&str]) {
        let mut commit = store.begin().unwrap();
        for id in ids {
            commit.put_seen(partition, id);
        }
        store.commit(commit).unwrap();
    }

    #[test]
    fn a_partition_is_checked_in_the_store_until_its_scan_covers_what_was_stored() {
        let (_dir, store) = open_store();
        let stored: Vec<String> = (0..20_000).map(|n| format!("before-{n}")).collect();
        stored_ids(&store, 3, &stored.iter().map(String::as_str).collect::<Vec<_>>());
        let mut filter = KeyFilter::new(store.clone(), 1 << 20);
        // not scanned yet: everything may be there
        assert!(filter.may_hold_id(3, "never-written"));
        covered(&mut filter, 3);
        assert!(stored.iter().all(|id| filter.may_hold_id(3, id)), "no stored id is missed");
        let unknown = (0..10_000).filter(|n| filter.may_hold_id(3, &format!("new-{n}"))).count();
        assert!(unknown < 100, "{unknown} of 10,000 new ids were maybes");
        // another partition's ids, and records with an id's bytes, are other keys
        covered(&mut filter, 4);
        assert!(!filter.may_hold_id(4, "before-1"));
        assert!(!filter.may_hold_record(3, b"before-1"));
    }

    #[test]
    fn keys_the_engine_writes_are_held_at_once() {
        let (_dir, store) = open_store();
        let mut filter = KeyFilter::new(store.clone(), 1 << 16);
        covered(&mut filter, 0);
        filter.insert_id(0, "e-1");
        filter.insert_record(0, b"line-1");
        assert!(filter.may_hold_id(0, "e-1"));
        assert!(filter.may_hold_record(0, b"line-1"));
    }

    /// A restore from the changelog writes a partition's ids around the engine: until a new
    /// scan, the filter does not answer for that partition.
    #[test]
    fn keys_restored_around_the_engine_are_read_from_the_store_until_scanned() {
        let (_dir, store) = open_store();
        let mut filter = KeyFilter::new(store.clone(), 1 << 20);
        covered(&mut filter, 2);
        assert!(!filter.may_hold_id(2, "restored"));
        let key = [&b"e/"[..], &2i32.to_be_bytes(), b"restored"].concat();
        store.restore_entries(2, vec![(key, Some(Vec::new()))]).unwrap();
        assert!(filter.may_hold_id(2, "restored"), "stale coverage is not trusted");
        covered(&mut filter, 2);
        assert!(filter.may_hold_id(2, "restored"), "the new scan found it");
        assert!(!filter.may_hold_id(2, "other"));
    }

    /// The hash spreads ids that differ in a digit or two (as generated ids do) over the bits
    /// as a random one would: at a load where theory gives 8% false positives (64 KiB, 100,000
    /// keys, four hashes), the filter gives no more than a quarter above that.
    #[test]
    fn false_positives_near_design_load_are_as_the_theory_says() {
        let (_dir, store) = open_store();
        let mut filter = KeyFilter::new(store, 64 << 10);
        covered(&mut filter, 1);
        for n in 0..100_000 {
            filter.insert_id(1, &format!("ev-{n:08}"));
        }
        let maybes = (100_000..200_000).filter(|n| filter.may_hold_id(1, &format!("ev-{n:08}"))).count();
        let bits = f64::from(64u32 << 13);
        let theory = (1.0 - (-f64::from(HASHES) * 100_000.0 / bits).exp()).powi(HASHES as i32);
        let rate = maybes as f64 / 100_000.0;
        assert!(rate < theory * 1.25, "{rate:.4} false positives against {theory:.4} in theory");
    }

    #[test]
    fn without_a_filter_every_key_may_be_stored() {
        let (_dir, store) = open_store();
        let mut filter = KeyFilter::new(store, 0);
        assert!(!filter.covers(0));
        assert!(filter.may_hold_id(0, "anything"));
    }
}

//! The `kept` keyspace written in generations: accepted ids and keyed records go into the
//! newest generation, a range of keys of its own, and a new one starts every
//! [`GENERATION_KEYS`] keys.
//!
//! Why: those keys are written once or a few times and kept for good, spread over the whole
//! key range (every SKU's lines, every partition's ids). In one range, each merge of level 0
//! into level 1 rewrote the level-1 tables holding the whole history, and each table pushed
//! further down rewrote its share of a level that grows with the history: the store's
//! workers spent five times more CPU per event at the end of a year's log than at its start
//! (`omnifold-bench history`). With generations, new keys only ever overlap the newest
//! generation's tables; older ones sink down by moves that rewrite nothing, so the merge
//! work per event is set by the generation's size, not by the history.
//!
//! The first generation is the keys as stores written before generations hold them (`e/...`,
//! `k/...`); each later one is `~`, its number (4 bytes BE), then the key. They sort after
//! every first-generation key and in their order, so each generation is one contiguous range.
//!
//! Reads look for a key newest generation first (a key written again lives in a newer
//! generation than its first value); scans merge the generations, the newest value of a key
//! winning. Both are rare on the hot path: the coordinator's key filter spares the reads of
//! keys never written, and recent lines are read from memory. A removal removes the key from
//! every generation.
//!
//! Architecture invariant: the generation a batch writes into, and the count of keys written
//! into it, are claimed and stored in the same atomic batch as the keys, under one lock held
//! until the batch is written. So after a crash the stored generation is never behind a key
//! written, and a reader (which takes no lock) never misses a generation.

use std::ops::Bound;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use fjall::Keyspace;
use itertools::Itertools;

use crate::store::{Bytes, StoreError};

/// Keys written into a generation before the next one starts: some 1.1 million events of a
/// coordinator (an id and most of a line each), 60-90 MB of keys and values. Small enough that
/// a generation's merges stay cheap; large enough that a year of a busy catalogue makes about
/// ten generations: a read of a key that the key filter cannot rule out probes one range per
/// generation.
pub const GENERATION_KEYS: u64 = 2 << 20;

/// The first byte of a key of every generation but the first: after `e/` and `k/`.
const MARK: u8 = b'~';

/// Where the generations stand, stored with every batch that writes kept keys.
const STANDING: &[u8] = b"m/kept-generation";

/// The newest generation and how many keys were written into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub newest: u32,
    pub keys: u64,
}

/// The generations of one store: the standing, behind the lock a batch holds while it claims
/// its generation and is written.
pub struct Generations {
    standing: Mutex<Standing>,
    /// The newest generation, read without the lock: a read on the fold loop must not wait for
    /// a batch being written. Raised when a batch claims a new generation, before that batch
    /// is written, so a reader may look into one still empty, never miss one.
    newest: AtomicU32,
    keys_per_generation: AtomicU64,
}

impl Generations {
    /// Reads the standing a store holds; a store written before generations has none, and
    /// everything it holds is the first generation.
    pub fn open(tree: &Keyspace) -> Result<Generations, StoreError> {
        let standing = match tree.get(STANDING)? {
            Some(value) => decode_standing(&value)?,
            None => Standing { newest: 0, keys: 0 },
        };
        Ok(Generations {
            standing: Mutex::new(standing),
            newest: AtomicU32::new(standing.newest),
            keys_per_generation: AtomicU64::new(GENERATION_KEYS),
        })
    }

    /// The newest generation now.
    pub fn newest(&self) -> u32 {
        self.newest.load(Ordering::Acquire)
    }

    /// Sets how many keys a generation takes before the next starts (tests and benchmarks
    /// use a small one to make many).
    pub fn set_keys_per_generation(&self, keys: u64) {
        self.keys_per_generation.store(keys.max(1), Ordering::Relaxed);
    }

    /// Claims the generation for a batch that writes `keys` kept keys: the newest, or a new
    /// one when the newest is full. Hold the returned claim until the batch is written.
    pub fn claim(&self, keys: u64) -> Claim<'_> {
        let mut standing = self.lock();
        let full = self.keys_per_generation.load(Ordering::Relaxed);
        if keys > 0 && standing.keys >= full {
            standing.newest += 1;
            standing.keys = 0;
            self.newest.store(standing.newest, Ordering::Release);
            tracing::debug!(generation = standing.newest, "kept keys start a new generation");
        }
        standing.keys += keys;
        Claim { standing }
    }

    fn lock(&self) -> MutexGuard<'_, Standing> {
        self.standing.lock().expect("generations lock")
    }
}

/// A batch's generation, claimed until the batch is written.
pub struct Claim<'a> {
    standing: MutexGuard<'a, Standing>,
}

impl Claim<'_> {
    pub fn newest(&self) -> u32 {
        self.standing.newest
    }

    /// The standing to store with the batch: its key and value.
    pub fn stored(&self) -> (&'static [u8], Bytes) {
        let mut value = self.standing.newest.to_be_bytes().to_vec();
        value.extend_from_slice(&self.standing.keys.to_be_bytes());
        (STANDING, Bytes::from(value))
    }
}

fn decode_standing(value: &[u8]) -> Result<Standing, StoreError> {
    let truncated = || StoreError::Truncated { what: "kept generation", len: value.len(), want: 12 };
    let (newest, keys) = value.split_first_chunk::<4>().ok_or_else(truncated)?;
    let keys = keys.first_chunk::<8>().ok_or_else(truncated)?;
    Ok(Standing { newest: u32::from_be_bytes(*newest), keys: u64::from_be_bytes(*keys) })
}

/// A key as a generation stores it: the first's is the key itself, not a copy.
pub fn generation_key(generation: u32, key: &Bytes) -> Bytes {
    match generation {
        0 => key.clone(),
        _ => later_generation_key(generation, key),
    }
}

/// A key as a generation after the first stores it, built in the buffer the store keeps.
fn later_generation_key(generation: u32, key: &[u8]) -> Bytes {
    let mut stored = byteview::ByteView::builder(5 + key.len());
    stored[0] = MARK;
    stored[1..5].copy_from_slice(&generation.to_be_bytes());
    stored[5..].copy_from_slice(key);
    Bytes::from(stored.freeze())
}

/// [`generation_key`] of a borrowed key.
fn generation_key_of(generation: u32, key: &[u8]) -> Bytes {
    match generation {
        0 => Bytes::from(key),
        _ => later_generation_key(generation, key),
    }
}

/// A stored key less its generation's prefix.
pub fn unprefixed(stored: &[u8]) -> &[u8] {
    match stored.split_first() {
        Some((&MARK, rest)) if rest.len() >= 4 => &rest[4..],
        _ => stored,
    }
}

/// The generation a stored key is in, and the key itself.
pub fn split_key(stored: &Bytes) -> (u32, Bytes) {
    match stored.split_first() {
        Some((&MARK, rest)) if rest.len() >= 4 => {
            let generation = u32::from_be_bytes(rest[..4].try_into().expect("four bytes"));
            (generation, Bytes::from(&stored[5..]))
        }
        _ => (0, stored.clone()),
    }
}

/// The newest value of a key among the generations up to `newest`.
pub fn get(kept: &Keyspace, newest: u32, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
    for generation in (0..=newest).rev() {
        if let Some(value) = kept.get(generation_key_of(generation, key))? {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// The keys under `prefix` from `lower` on, in key order, each with its newest value, merged
/// from the generations up to `newest`.
pub fn scan<'a>(
    kept: &'a Keyspace,
    newest: u32,
    prefix: &[u8],
    lower: Bound<&[u8]>,
) -> impl Iterator<Item = Result<(Bytes, Bytes), StoreError>> + use<'a> {
    let ranges = (0..=newest).rev().map(|generation| {
        let lower = match lower {
            Bound::Included(key) | Bound::Excluded(key) if key < prefix => Bound::Included(prefix),
            Bound::Unbounded => Bound::Included(prefix),
            bound => bound,
        };
        let prefix = generation_key_of(generation, prefix);
        let lower = lower.map(|key| generation_key_of(generation, key).to_vec());
        kept.range::<Vec<u8>, _>((lower, Bound::Unbounded))
            .map(|guard| guard.into_inner().map_err(StoreError::from))
            .take_while(move |entry| entry.as_ref().map_or(true, |(key, _)| key.starts_with(&prefix)))
            .map(|entry| entry.map(|(key, value)| (split_key(&key), value)))
    });
    // newest generation first among equal keys, so that the dedup keeps its value; an error
    // goes first, to be seen at once
    ranges
        .kmerge_by(|a, b| match (a, b) {
            (Err(_), _) => true,
            (_, Err(_)) => false,
            (Ok(((ga, ka), _)), Ok(((gb, kb), _))) => {
                (ka, std::cmp::Reverse(ga)) < (kb, std::cmp::Reverse(gb))
            }
        })
        .dedup_by(|a, b| matches!((a, b), (Ok(((_, ka), _)), Ok(((_, kb), _))) if ka == kb))
        .map(|entry| entry.map(|((_, key), value)| (key, value)))
}

/// Every stored key under `prefix`, in every generation up to `newest`: what removing the
/// prefix's keys removes.
pub fn stored_keys<'a>(
    kept: &'a Keyspace,
    newest: u32,
    prefix: &[u8],
) -> impl Iterator<Item = Result<Bytes, StoreError>> + use<'a> {
    let prefix = prefix.to_vec();
    (0..=newest).flat_map(move |generation| {
        kept.prefix(generation_key_of(generation, &prefix)).map(|guard| guard.key().map_err(StoreError::from))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_generation_is_the_key_itself_and_later_ones_sort_after_it_in_order() {
        let key = b"k/\0\0\0\x01SKU";
        assert_eq!(&generation_key(0, &Bytes::from(&key[..]))[..], key);
        let (second, third) = (generation_key_of(1, key), generation_key_of(2, key));
        assert!(generation_key_of(0, b"k/\xff\xff\xff\xff\xff") < second && second < third);
        assert_eq!(second, generation_key(1, &Bytes::from(&key[..])));
        assert_eq!(split_key(&third), (2, Bytes::from(&key[..])));
        assert_eq!(unprefixed(&third), key);
        assert_eq!(unprefixed(key), key);
        assert_eq!(split_key(&generation_key_of(0, key)), (0, Bytes::from(&key[..])));
    }

    #[test]
    fn a_full_generation_starts_a_new_one_at_the_next_batch_that_writes_kept_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let tree = db.keyspace("store", fjall::KeyspaceCreateOptions::default).unwrap();
        let generations = Generations::open(&tree).unwrap();
        generations.set_keys_per_generation(10);
        assert_eq!(generations.claim(6).newest(), 0);
        assert_eq!(generations.claim(6).newest(), 0);
        assert_eq!(generations.claim(0).newest(), 0, "a batch without kept keys starts none");
        let claim = generations.claim(3);
        assert_eq!(claim.newest(), 1);
        let (key, value) = claim.stored();
        drop(claim);
        tree.insert(key, value).unwrap();
        let reopened = Generations::open(&tree).unwrap();
        assert_eq!(*reopened.lock(), Standing { newest: 1, keys: 3 });
    }

    mod through_the_store {
        use std::collections::{BTreeMap, BTreeSet};

        use proptest::prelude::*;

        use crate::store::Store;

        /// One step of a history written to a store whose generations are a few keys each.
        #[derive(Debug, Clone)]
        enum Step {
            Put {
                partition: i32,
                key: u8,
                value: u8,
            },
            Remove {
                partition: i32,
                key: u8,
            },
            Accept {
                partition: i32,
                id: u8,
            },
            /// Ends the batch under way.
            Commit,
            Reopen,
            Drop {
                partition: i32,
            },
        }

        fn step() -> impl Strategy<Value = Step> {
            let partition = 0..2i32;
            prop_oneof![
                6 => (partition.clone(), 0..12u8, any::<u8>())
                    .prop_map(|(partition, key, value)| Step::Put { partition, key, value }),
                2 => (partition.clone(), 0..12u8).prop_map(|(partition, key)| Step::Remove { partition, key }),
                4 => (partition.clone(), 0..30u8).prop_map(|(partition, id)| Step::Accept { partition, id }),
                3 => Just(Step::Commit),
                1 => Just(Step::Reopen),
                1 => partition.prop_map(|partition| Step::Drop { partition }),
            ]
        }

        /// What the store should hold: records and accepted ids by partition.
        #[derive(Default)]
        struct Model {
            records: BTreeMap<(i32, Vec<u8>), Vec<u8>>,
            seen: BTreeSet<(i32, String)>,
        }

        fn record_key(key: u8) -> Vec<u8> {
            format!("sku/{key:02}").into_bytes()
        }

        fn open(dir: &std::path::Path) -> Store {
            let store = Store::open(dir).unwrap();
            store.set_keys_per_generation(3);
            store
        }

        /// Runs the steps, then checks every read the store offers against the model.
        fn check(steps: Vec<Step>) -> Result<(), TestCaseError> {
            let dir = tempfile::tempdir().unwrap();
            let mut store = open(dir.path());
            let mut commit = store.begin().unwrap();
            let mut model = Model::default();
            for step in steps.into_iter().chain([Step::Commit]) {
                match step {
                    Step::Put { partition, key, value } => {
                        commit.put_record(partition, &record_key(key), vec![value]);
                        model.records.insert((partition, record_key(key)), vec![value]);
                    }
                    Step::Remove { partition, key } => {
                        commit.remove_record(partition, &record_key(key));
                        model.records.remove(&(partition, record_key(key)));
                    }
                    Step::Accept { partition, id } => {
                        commit.put_seen(partition, &format!("ev-{id}"));
                        model.seen.insert((partition, format!("ev-{id}")));
                    }
                    Step::Commit => {
                        store.commit(std::mem::replace(&mut commit, store.begin().unwrap())).unwrap();
                    }
                    Step::Reopen => {
                        store.commit(commit).unwrap();
                        drop(store);
                        store = open(dir.path());
                        commit = store.begin().unwrap();
                    }
                    Step::Drop { partition } => {
                        store.commit(std::mem::replace(&mut commit, store.begin().unwrap())).unwrap();
                        store.drop_partition(partition).unwrap();
                        model.records.retain(|(p, _), _| *p != partition);
                        model.seen.retain(|(p, _)| *p != partition);
                    }
                }
            }
            for partition in 0..2 {
                let want: Vec<(Vec<u8>, Vec<u8>)> = model
                    .records
                    .iter()
                    .filter(|((p, _), _)| *p == partition)
                    .map(|((_, key), value)| (key.clone(), value.clone()))
                    .collect();
                let got: Vec<(Vec<u8>, Vec<u8>)> = store
                    .records(partition, b"")
                    .unwrap()
                    .into_iter()
                    .map(|(key, value)| (key, value.to_vec()))
                    .collect();
                prop_assert_eq!(&got, &want, "records of partition {}", partition);
                for key in 0..12 {
                    let want = model.records.get(&(partition, record_key(key)));
                    let got = store.record(partition, &record_key(key)).unwrap().map(|v| v.to_vec());
                    prop_assert_eq!(got.as_ref(), want, "record {} of partition {}", key, partition);
                }
                let want_seen: BTreeSet<String> =
                    model.seen.iter().filter(|(p, _)| *p == partition).map(|(_, id)| id.clone()).collect();
                let got_seen: BTreeSet<String> = store.seen_ids(partition).unwrap().into_iter().collect();
                prop_assert_eq!(&got_seen, &want_seen);
                for id in 0..30 {
                    let id = format!("ev-{id}");
                    prop_assert_eq!(store.is_seen(partition, &id).unwrap(), want_seen.contains(&id));
                }
                let held = |prefix: &[u8]| -> BTreeSet<Vec<u8>> {
                    store.partition_keys(partition, prefix).map(Result::unwrap).collect()
                };
                let want_keys: BTreeSet<Vec<u8>> = want.iter().map(|(key, _)| key.clone()).collect();
                prop_assert_eq!(held(b"k/"), want_keys, "the keys a filter is filled with");
                let want_ids: BTreeSet<Vec<u8>> =
                    want_seen.iter().map(|id| id.clone().into_bytes()).collect();
                prop_assert_eq!(held(b"e/"), want_ids);
                check_entries(&store, partition, &want, &want_seen)?;
            }
            Ok(())
        }

        /// The changelog's view: each kept key once, in key order, from any cursor on.
        fn check_entries(
            store: &Store,
            partition: i32,
            records: &[(Vec<u8>, Vec<u8>)],
            seen: &BTreeSet<String>,
        ) -> Result<(), TestCaseError> {
            let kept = |key: &[u8]| key.starts_with(b"e/") || key.starts_with(b"k/");
            let entries: Vec<(Vec<u8>, Vec<u8>)> = store
                .partition_entries_after(partition, None)
                .map(|entry| entry.map(|(key, value)| (key.to_vec(), value.to_vec())).unwrap())
                .filter(|(key, _)| kept(key))
                .collect();
            prop_assert_eq!(entries.len(), records.len() + seen.len());
            let keys: Vec<&Vec<u8>> = entries.iter().map(|(key, _)| key).collect();
            prop_assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "in key order, each once");
            for (key, value) in records {
                let stored = entries.iter().find(|(k, _)| k.ends_with(key) && k.starts_with(b"k/"));
                prop_assert_eq!(stored.map(|(_, v)| v), Some(value));
            }
            if let Some((middle, _)) = entries.get(entries.len() / 2) {
                let after: Vec<Vec<u8>> = store
                    .partition_entries_after(partition, Some(middle))
                    .map(|entry| entry.unwrap().0.to_vec())
                    .filter(|key| kept(key))
                    .collect();
                let want: Vec<Vec<u8>> =
                    entries.iter().map(|(key, _)| key.clone()).filter(|key| key > middle).collect();
                prop_assert_eq!(after, want);
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

            /// Written across generations of three keys, removed, reopened and dropped, the
            /// store reads as one map: the newest value of each key, removed keys gone.
            #[test]
            fn generations_read_as_one_map(steps in proptest::collection::vec(step(), 1..60)) {
                check(steps)?;
            }
        }

        #[test]
        fn many_generations_are_made_and_a_key_written_again_reads_its_newest_value() {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path());
            for round in 0..10u8 {
                let mut commit = store.begin().unwrap();
                commit.put_record(0, b"sku/line", vec![round]);
                commit.put_seen(0, &format!("ev-{round}"));
                commit.put_seen(0, &format!("again-{round}"));
                store.commit(commit).unwrap();
            }
            assert!(store.kept_generation() >= 5, "generation {}", store.kept_generation());
            assert_eq!(store.record(0, b"sku/line").unwrap().unwrap().to_vec(), vec![9]);
            drop(store);
            let store = open(dir.path());
            assert!(store.kept_generation() >= 5, "the newest generation is stored");
            assert!(store.is_seen(0, "ev-0").unwrap() && store.is_seen(0, "again-9").unwrap());
            assert_eq!(store.records(0, b"").unwrap().len(), 1);
        }
    }
}

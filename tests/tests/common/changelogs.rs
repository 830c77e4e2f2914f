//! The changelog as a reader sees it: each partition's latest value per key, and what it says
//! of itself, compared with the stores that folded the partitions.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use omnifold_coordinator::engine::STATE_FORMAT;
use omnifold_runtime::Store;
use omnifold_runtime::changelog::{self, Tally, Verdict};
use omnifold_testkit::{Broker, Record};

use super::{header, read_to_end, topics};

/// A partition's state: store key to value.
pub type KeyValues = BTreeMap<Vec<u8>, Vec<u8>>;

/// Each changelog partition's state as read, and its tally.
pub type Changelogs = BTreeMap<i32, (KeyValues, Tally)>;

/// Each events partition's state as its changelog holds it: the latest value of each key,
/// removed keys left out; and what the changelog says of itself (`changelog::Tally`).
pub fn changelog_states(mut records: Vec<Record>) -> Changelogs {
    records.sort_by_key(|record| (record.partition, record.offset));
    let mut states: BTreeMap<i32, (KeyValues, Tally)> = BTreeMap::new();
    for record in records {
        let (state, tally) =
            states.entry(record.partition).or_insert_with(|| (KeyValues::new(), Tally::new(STATE_FORMAT)));
        let key = record.key.clone().unwrap_or_default();
        let marks = changelog::Marks::read(|name| header(&record, name));
        if !tally.note(record.partition, &key, record.value.as_deref(), marks) {
            continue;
        }
        for (key, value) in changelog::entries(record.partition, &key, record.value.as_deref()).unwrap() {
            match value {
                Some(value) => state.insert(key, value),
                None => state.remove(&key),
            };
        }
    }
    states
}

/// Waits until the changelog of every partition is whole and at the partition's end (it is
/// sent once a second), and returns it.
pub async fn changelogs_at_the_end(
    broker: &Broker,
    counts: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, (KeyValues, Tally)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = changelog_states(read_to_end(broker, &topics().changelog).await);
        let at_end = |partition: &i32, count: &i64| {
            states.get(partition).map(|(_, tally)| tally.verdict(count - 1, 0))
                == Some(Verdict::Restore { next_offset: *count })
        };
        if counts.iter().all(|(p, c)| at_end(p, c)) {
            return states;
        }
        let behind: Vec<_> = counts
            .iter()
            .filter(|(p, c)| !at_end(p, c))
            .map(|(p, _)| (p, states.get(p).map(|s| &s.1)))
            .collect();
        assert!(Instant::now() < deadline, "changelogs not whole at the end: {behind:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Each partition's changelog holds exactly the state of the store that folded the partition
/// to its end.
pub fn assert_changelogs_equal_the_owners(
    states: BTreeMap<i32, (KeyValues, Tally)>,
    counts: &BTreeMap<i32, i64>,
    stores: &[&Path],
) {
    let stores: Vec<Store> = stores.iter().map(|path| Store::open(path).expect("store opens")).collect();
    for (partition, count) in counts {
        let (state, _) = &states[partition];
        let owners: Vec<&Store> =
            stores.iter().filter(|store| store.offsets().unwrap().get(partition) == Some(count)).collect();
        assert!(!owners.is_empty(), "partition {partition}: no store folded it to its end");
        for owner in owners {
            let stored: KeyValues = owner
                .partition_entries_after(*partition, None)
                .map(|entry| entry.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(
                stored.len(),
                state.len(),
                "partition {partition}: keys in the store and the changelog"
            );
            assert!(stored == *state, "partition {partition}: the changelog holds the owner's state");
        }
    }
}

//! The sled store behind every stateful service.
//!
//! Architecture invariant: a service's projection, the input offsets it consumed and the
//! outputs those inputs caused are written in ONE atomic sled batch ([`Commit`]), flushed
//! before any output is sent. A crash therefore leaves either all of a batch or none of it.
//!
//! Everything lives in one sled tree under key prefixes, because a sled batch is atomic
//! within one tree:
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `m/` | `writer` | this store's writer id (stamped on every record it sends) |
//! | `m/` | `seq` | the next outbox sequence number |
//! | `o/` | input partition (4 bytes BE) | next offset to consume (8 bytes BE) |
//! | `s/` | input partition (4 bytes BE) + state key | service state (postcard) |
//! | `e/` | input partition (4 bytes BE) + event id | nothing: the event was accepted |
//! | `k/` | input partition (4 bytes BE) + record key | a keyed record of the service's state (raw bytes) |
//! | `x/` | sequence (8 bytes BE) | [`OutboxRecord`] (postcard), not yet confirmed sent |
//! | `t/` | topic + 0 + partition (4 bytes BE) | offset of the last record this store delivered there |
//!
//! State, records, seen ids and offsets are kept per input partition, so one partition can be
//! dropped ([`Store::drop_partition`]) and rebuilt by replaying its log. Keyed records are
//! what a state holds apart because it grows with history (order lines, say): they are read
//! one at a time or by key prefix, and a commit writes only those that changed.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt {what} in the store: {source}")]
    Decode { what: &'static str, source: postcard::Error },
}

/// One record waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    writer: String,
}

const WRITER: &[u8] = b"m/writer";
const SEQ: &[u8] = b"m/seq";

impl Store {
    /// Opens (or creates) the store. Blocks: call it from a blocking thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = open_db(path)?;
        let writer = match db.get(WRITER)? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => {
                let id = new_writer_id();
                db.insert(WRITER, id.as_bytes())?;
                db.flush()?;
                id
            }
        };
        Ok(Store { db, writer })
    }

    /// The id stamped on every record this store sends; unique per store.
    pub fn writer_id(&self) -> &str {
        &self.writer
    }

    /// The next offset to consume of each input partition this store has seen.
    pub fn offsets(&self) -> Result<BTreeMap<i32, i64>, StoreError> {
        let mut offsets = BTreeMap::new();
        for entry in self.db.scan_prefix(b"o/") {
            let (key, value) = entry?;
            offsets.insert(be_i32(&key[2..6]), be_i64(&value));
        }
        Ok(offsets)
    }

    /// Every state entry of an input partition, by state key.
    pub fn partition_state<T: DeserializeOwned>(
        &self,
        partition: i32,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let prefix = partition_key(b"s/", partition, b"");
        let mut entries = Vec::new();
        for entry in self.db.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let state_key = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let state = postcard::from_bytes(&value)
                .map_err(|source| StoreError::Decode { what: "state", source })?;
            entries.push((state_key, state));
        }
        Ok(entries)
    }

    /// One state entry of an input partition, `None` when it was never written.
    pub fn state<T: DeserializeOwned>(&self, partition: i32, key: &str) -> Result<Option<T>, StoreError> {
        let Some(value) = self.db.get(partition_key(b"s/", partition, key.as_bytes()))? else {
            return Ok(None);
        };
        let state =
            postcard::from_bytes(&value).map_err(|source| StoreError::Decode { what: "state", source })?;
        Ok(Some(state))
    }

    /// Whether an input partition accepted the event id: one point read, nothing loaded.
    pub fn is_seen(&self, partition: i32, event_id: &str) -> Result<bool, StoreError> {
        Ok(self.db.contains_key(partition_key(b"e/", partition, event_id.as_bytes()))?)
    }

    /// One keyed record of an input partition.
    pub fn record(&self, partition: i32, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.db.get(partition_key(b"k/", partition, key))?)
    }

    /// The keyed records of an input partition whose key starts with `prefix`, in key order,
    /// with their keys less the prefix.
    pub fn records(&self, partition: i32, prefix: &[u8]) -> Result<Vec<(Vec<u8>, sled::IVec)>, StoreError> {
        let full = partition_key(b"k/", partition, prefix);
        let mut records = Vec::new();
        for entry in self.db.scan_prefix(&full) {
            let (key, value) = entry?;
            records.push((key[full.len()..].to_vec(), value));
        }
        Ok(records)
    }

    /// The ids of the events an input partition accepted. Loads them all: for small stores
    /// (the bridge's, the reporter's); the coordinator asks [`Store::is_seen`] instead.
    pub fn seen_ids(&self, partition: i32) -> Result<HashSet<String>, StoreError> {
        let prefix = partition_key(b"e/", partition, b"");
        let mut seen = HashSet::new();
        for entry in self.db.scan_prefix(&prefix) {
            let (key, _) = entry?;
            seen.insert(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
        }
        Ok(seen)
    }

    /// Starts a batch; nothing is written until [`Store::commit`].
    pub fn begin(&self) -> Result<Commit, StoreError> {
        let next_seq = self.db.get(SEQ)?.map_or(0, |v| be_u64(&v));
        Ok(Commit { batch: sled::Batch::default(), next_seq, outputs: 0, bytes: 0 })
    }

    /// Writes the batch atomically and makes it durable before returning.
    pub fn commit(&self, mut commit: Commit) -> Result<(), StoreError> {
        commit.batch.insert(SEQ, &commit.next_seq.to_be_bytes());
        self.db.apply_batch(commit.batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Up to `limit` outbox records, oldest first.
    pub fn pending(&self, limit: usize) -> Result<Vec<(u64, OutboxRecord)>, StoreError> {
        self.db
            .scan_prefix(b"x/")
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                let record = postcard::from_bytes(&value)
                    .map_err(|source| StoreError::Decode { what: "outbox record", source })?;
                Ok((be_u64(&key[2..10]), record))
            })
            .collect()
    }

    /// How many outbox records wait to be sent.
    pub fn pending_count(&self) -> usize {
        self.db.scan_prefix(b"x/").count()
    }

    /// Forgets sent outbox records and remembers where they landed. Not flushed: losing
    /// this write only makes recovery scan a little more.
    pub fn confirm_sent(&self, seqs: &[u64], tails: &BTreeMap<(String, i32), i64>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for seq in seqs {
            batch.remove(outbox_key(*seq));
        }
        for ((topic, partition), offset) in tails {
            batch.insert(tail_key(topic, *partition), &offset.to_be_bytes());
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// The offset of the last record this store delivered to a topic partition.
    pub fn tail(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        Ok(self.db.get(tail_key(topic, partition))?.map(|v| be_i64(&v)))
    }

    /// Drops an input partition's state, seen ids and offset, so it is rebuilt from its log.
    pub fn drop_partition(&self, partition: i32) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for prefix in [b"s/", b"e/", b"k/"] {
            for key in self.db.scan_prefix(partition_key(prefix, partition, b"")).keys() {
                batch.remove(key?);
            }
        }
        batch.remove(partition_key(b"o/", partition, b""));
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// How many entries the store holds and their key and value bytes: its live state.
    pub fn live_size(&self) -> Result<(u64, u64), StoreError> {
        let mut entries = 0;
        let mut bytes = 0;
        for entry in self.db.iter() {
            let (key, value) = entry?;
            entries += 1;
            bytes += (key.len() + value.len()) as u64;
        }
        Ok((entries, bytes))
    }

    /// Makes every write durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// One atomic batch of state, seen ids, offsets and outputs.
pub struct Commit {
    batch: sled::Batch,
    next_seq: u64,
    outputs: usize,
    /// Key and value bytes put so far, to show what a commit writes.
    bytes: usize,
}

impl Commit {
    pub fn put_state<T: Serialize>(&mut self, partition: i32, key: &str, state: &T) {
        let value = postcard::to_allocvec(state).expect("state serializes");
        self.put(partition_key(b"s/", partition, key.as_bytes()), value);
    }

    pub fn put_record(&mut self, partition: i32, key: &[u8], value: Vec<u8>) {
        self.put(partition_key(b"k/", partition, key), value);
    }

    pub fn remove_record(&mut self, partition: i32, key: &[u8]) {
        self.batch.remove(partition_key(b"k/", partition, key));
    }

    pub fn put_seen(&mut self, partition: i32, event_id: &str) {
        self.put(partition_key(b"e/", partition, event_id.as_bytes()), Vec::new());
    }

    /// Records that the input partition is consumed up to (not including) `next_offset`.
    pub fn put_offset(&mut self, partition: i32, next_offset: i64) {
        self.batch.insert(partition_key(b"o/", partition, b""), &next_offset.to_be_bytes());
    }

    pub fn push_output(&mut self, record: &OutboxRecord) {
        let value = postcard::to_allocvec(record).expect("outbox record serializes");
        self.put(outbox_key(self.next_seq), value);
        self.next_seq += 1;
        self.outputs += 1;
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.batch.insert(key, value);
    }

    /// The key and value bytes this batch writes so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many outputs this batch adds to the outbox.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
}

/// sled releases its file lock from a background thread a few milliseconds after the last
/// handle is dropped, so a store reopened in the same process (a restarted service, a test)
/// can find it briefly locked. A lock held longer is another process's: an error.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// sled's own page cache. Kept small: a service holds its hot state itself (the coordinator's
/// state engine has its own budget), so sled's cache mostly serves point reads of cold keys.
const SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).cache_capacity(SLED_CACHE_BYTES).open() {
            Err(error)
                if error.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return Ok(opened?),
        }
    }
}

fn new_writer_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("w{:x}{:x}", nanos, std::process::id())
}

fn partition_key(prefix: &[u8], partition: i32, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 4 + rest.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(rest);
    key
}

fn outbox_key(seq: u64) -> Vec<u8> {
    let mut key = b"x/".to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn tail_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut key = b"t/".to_vec();
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn be_i32(bytes: &[u8]) -> i32 {
    i32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"))
}

fn be_i64(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
}

fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> OutboxRecord {
        OutboxRecord { topic: "t".into(), key: vec![n], value: vec![n, n], headers: vec![] }
    }

    #[test]
    fn a_commit_writes_state_offsets_and_outbox_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut commit = store.begin().unwrap();
        commit.put_state(3, "SKU-1", &42u32);
        commit.put_seen(3, "ev-1");
        commit.put_offset(3, 10);
        commit.push_output(&record(1));
        commit.push_output(&record(2));
        store.commit(commit).unwrap();

        let writer = store.writer_id().to_string();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.writer_id(), writer, "the writer id survives a reopen");
        assert_eq!(store.offsets().unwrap(), BTreeMap::from([(3, 10)]));
        assert_eq!(store.partition_state::<u32>(3).unwrap(), vec![("SKU-1".to_string(), 42)]);
        assert!(store.seen_ids(3).unwrap().contains("ev-1"));
        assert!(store.is_seen(3, "ev-1").unwrap() && !store.is_seen(2, "ev-1").unwrap());
        let pending = store.pending(10).unwrap();
        assert_eq!(pending, vec![(0, record(1)), (1, record(2))]);

        let mut commit = store.begin().unwrap();
        commit.push_output(&record(3));
        store.commit(commit).unwrap();
        assert_eq!(store.pending(10).unwrap().last().unwrap().0, 2, "sequence numbers keep rising");
    }

    #[test]
    fn confirmed_records_leave_the_outbox_and_tails_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut commit = store.begin().unwrap();
        commit.push_output(&record(1));
        commit.push_output(&record(2));
        store.commit(commit).unwrap();
        store.confirm_sent(&[0], &BTreeMap::from([(("t".to_string(), 2), 77)])).unwrap();
        assert_eq!(store.pending(10).unwrap(), vec![(1, record(2))]);
        assert_eq!(store.tail("t", 2).unwrap(), Some(77));
        assert_eq!(store.tail("t", 1).unwrap(), None);
    }

    #[test]
    fn keyed_records_are_read_alone_or_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut commit = store.begin().unwrap();
        commit.put_record(1, b"sku-a/l1", vec![1]);
        commit.put_record(1, b"sku-a/l2", vec![2]);
        commit.put_record(1, b"sku-b/l1", vec![3]);
        commit.put_record(2, b"sku-a/l3", vec![4]);
        store.commit(commit).unwrap();
        assert_eq!(store.record(1, b"sku-a/l2").unwrap().as_deref(), Some(&[2u8][..]));
        let a: Vec<(Vec<u8>, Vec<u8>)> =
            store.records(1, b"sku-a/").unwrap().into_iter().map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(a, vec![(b"l1".to_vec(), vec![1]), (b"l2".to_vec(), vec![2])]);
        let mut commit = store.begin().unwrap();
        commit.remove_record(1, b"sku-a/l1");
        store.commit(commit).unwrap();
        assert_eq!(store.record(1, b"sku-a/l1").unwrap(), None);
        store.drop_partition(1).unwrap();
        assert!(store.records(1, b"").unwrap().is_empty(), "dropped with its partition");
        assert_eq!(store.records(2, b"").unwrap().len(), 1);
    }

    #[test]
    fn a_partition_can_be_dropped_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut commit = store.begin().unwrap();
        for partition in [0, 1] {
            commit.put_state(partition, "SKU", &1u8);
            commit.put_seen(partition, "ev");
            commit.put_offset(partition, 5);
        }
        store.commit(commit).unwrap();
        store.drop_partition(0).unwrap();
        assert_eq!(store.offsets().unwrap(), BTreeMap::from([(1, 5)]));
        assert!(store.partition_state::<u8>(0).unwrap().is_empty());
        assert!(store.seen_ids(0).unwrap().is_empty());
        assert_eq!(store.partition_state::<u8>(1).unwrap().len(), 1);
    }
}

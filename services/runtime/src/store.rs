//! The store behind every stateful service: one fjall database per store.
//!
//! Architecture invariant: a service's projection, the input offsets it consumed and the
//! outputs those inputs caused are written in ONE atomic batch ([`Commit`]), made durable
//! (the journal fsynced) before any output is sent. A crash therefore leaves either all of a
//! batch or none of it.
//!
//! Everything lives under key prefixes, in two keyspaces (LSM trees) of one database:
//!
//! | keyspace | prefix | key | value |
//! |---|---|---|---|
//! | `store` | `m/` | `writer` | this store's writer id (stamped on every record it sends) |
//! | `store` | `m/` | `seq` | the next outbox sequence number |
//! | `store` | `o/` | input partition (4 bytes BE) | next offset to consume (8 bytes BE) |
//! | `store` | `s/` | input partition (4 bytes BE) + state key | service state (postcard) |
//! | `store` | `m/` | `kept-generation` | the newest generation of `kept` (4 bytes BE) and the keys written into it (8 bytes BE) |
//! | `kept` | `e/` | input partition (4 bytes BE) + event id | nothing: the event was accepted |
//! | `kept` | `k/` | input partition (4 bytes BE) + record key | a keyed record of the service's state (raw bytes) |
//! | `kept` | `~` + generation (4 bytes BE) | an `e/` or `k/` key as above | as above, in a generation after the first ([`crate::generations`]) |
//! | `store` | `r/` | input partition (4 bytes BE) + record key | a rewritten record: a part of the service's state kept under its own key because it changes less often than the rest, and rewritten whole when it does (raw bytes) |
//! | `store` | `x/` | first sequence of a batch (8 bytes BE) | the batch's outbox records not yet confirmed sent, with their sequence numbers (postcard) |
//! | `store` | `t/` | topic + 0 + partition (4 bytes BE) | offset of the last record this store delivered there |
//! | `store` | `l/` | input partition (4 bytes BE) | nothing: the changelog holds this store's whole state of the partition, but for the keys under `c/` |
//! | `store` | `c/` | input partition (4 bytes BE) + next offset of a batch (8 bytes BE) | the keys of the partition that batch wrote, not yet sent to the changelog |
//! | `store` | `d/` | input partition (4 bytes BE) | the last key a changelog dump under way has sent |
//!
//! The keys of `kept` (ids and keyed records: order lines, promotions) are written once or a
//! few times and kept: they are the bulk of a long history, written in generations so that
//! their merges do not grow with it ([`crate::generations`]). The others are written
//! again and again (a SKU's state at every batch that changes it, the outbox written and
//! removed). In one tree, the overwritten keys filled most of each memtable, so its flushed
//! tables held little history each, and every merge of them into level 1 rewrote the whole
//! history there: a fjall worker took most of a core late in a long run. Kept apart, the
//! history's tables are the size of what the journal allows between flushes, and the state's
//! merges never touch it. One [`WriteBatch`] spans both keyspaces, so a commit stays atomic.
//!
//! State, records, seen ids and offsets are kept per input partition, so one partition can be
//! dropped ([`Store::drop_partition`]) and rebuilt by replaying its log. Keyed records are
//! what a state holds apart because it grows with history (order lines, say): they are read
//! one at a time or by key prefix, and a commit writes only those that changed.
//!
//! A batch's outbox records are stored together under one key, not one key each: a
//! coordinator's batch of 1,000 events causes some 1,500 records, and a key per record (put,
//! then removed once sent) was about a fifth of the cost of a commit. A batch partly confirmed
//! is written again with the records still to send, so a restart never sends a record whose
//! delivery was confirmed (its tail may already be past it).
//!
//! Why an LSM tree: a coordinator writes several small keys per event (its id, its line, its
//! outputs and their removal once sent). A log-structured merge tree appends them to a
//! journal and a memtable, and its tables carry bloom filters, so the point reads for ids
//! never seen (most of them) rarely touch a table. sled (a B-tree with copy-on-write pages)
//! cost about 50 µs per event here, and its directory grew to 33x the live data.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use fjall::config::PartitioningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch as WriteBatch, PersistMode};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::generations::{self, Claim, Generations, generation_key};

/// The bytes of a stored value.
pub type Bytes = fjall::Slice;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store error: {0}")]
    Engine(#[from] fjall::Error),
    #[error("corrupt {what} in the store: {source}")]
    Decode { what: &'static str, source: postcard::Error },
    #[error("changelog key {key:?} is not a key of input partition {partition}")]
    ForeignKey { partition: i32, key: String },
    #[error("corrupt {what} in the store: {len} bytes where {want} were expected")]
    Truncated { what: &'static str, len: usize, want: usize },
    #[error("a batch handed to another thread to write was not written: {0}")]
    Deferred(String),
    #[error(
        "the store holds {name} state in format {}, this version reads format {want}: delete the \
         store directory and it is rebuilt from the events topic",
        found.map_or("unmarked (written before stop 35)".to_string(), |f| f.to_string())
    )]
    Format { name: String, found: Option<u32>, want: u32 },
}

/// One record waiting in the outbox.
///
/// Its key, value and header values are written as byte strings: serde's own form of a
/// `Vec<u8>` is a sequence, which the store's encoding wrote and read a byte at a time (a few
/// percent of a coordinator's CPU). Both forms are the same bytes in that encoding (a length,
/// then the bytes), so outboxes written before read the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub topic: crate::topics::TopicName,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    #[serde(with = "header_bytes")]
    pub headers: Vec<(HeaderName, Vec<u8>)>,
    /// The partition to write to; `None` for the one Kafka's default partitioner picks from
    /// the key. Set where a topic mirrors an input partition for partition (the ledger).
    #[serde(default)]
    pub partition: Option<i32>,
}

/// A header's name: omnifold's own are constants, so a record names them without a copy.
pub type HeaderName = std::borrow::Cow<'static, str>;

/// Headers as (name, byte string) pairs, for the reason [`OutboxRecord`] gives.
mod header_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    use super::HeaderName;

    pub fn serialize<S: Serializer>(
        headers: &[(HeaderName, Vec<u8>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(headers.iter().map(|(name, value)| (name, Bytes::new(value))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(HeaderName, Vec<u8>)>, D::Error> {
        let headers = Vec::<(String, ByteBuf)>::deserialize(deserializer)?;
        Ok(headers.into_iter().map(|(name, value)| (HeaderName::Owned(name), value.into_vec())).collect())
    }
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Database,
    /// State, offsets, outbox and changelog marks: keys written again and again.
    tree: Keyspace,
    /// Accepted ids and keyed records ([`KEPT_PREFIXES`]): keys written once or a few times and
    /// kept, the bulk of a long history; in generations ([`crate::generations`]).
    kept: Keyspace,
    generations: Arc<Generations>,
    writer: String,
    /// No outbox record is below this sequence: sent ones leave tombstones that a scan from
    /// the start of `x/` would step over again and again until they are compacted away.
    first_pending: Arc<AtomicU64>,
    /// Every outbox record below this sequence is fsynced; [`Store::pending`] reads no further,
    /// so nothing is sent that an OS crash could still take back (see [`Store::write`]).
    durable_seq: Arc<AtomicU64>,
    /// The sequence numbers still to confirm of every outbox batch written or read since
    /// open, by the batch's key sequence: which key a confirmed record lives under. Bounded by
    /// the outbox backlog.
    unconfirmed: Arc<Mutex<BTreeMap<u64, Unconfirmed>>>,
    /// The outbox sequence the next batch starts at: that of the last batch written or handed
    /// over to be written ([`Store::defer`]), which the stored one may not show yet.
    next_seq: Arc<AtomicU64>,
    deferrals: Arc<Deferrals>,
    /// Writes of partition keys made around a [`Commit`] (a restore, a dropped partition);
    /// see [`Store::rewrites`].
    rewrites: Arc<AtomicU64>,
    /// The records of the last outbox piece closed, for the next commit's to start with that
    /// room: a piece grown by doubling (a batch pushes a thousand records or more) copied each
    /// record twice on average, and the copies were a twentieth of the fold loop's time.
    piece_room: Arc<AtomicUsize>,
}

/// Batches handed to another thread to write ([`Store::defer`]) and whether they all are.
#[derive(Debug, Default)]
struct Deferrals {
    count: Mutex<DeferralCount>,
    written: Condvar,
}

#[derive(Debug, Default)]
struct DeferralCount {
    handed: u64,
    written: u64,
    failed: Option<String>,
}

/// A batch handed over to be written on another thread ([`Store::write_deferred`]). Until
/// it is, reads may not show it: [`Store::settle`] waits for it. Dropped unwritten, it fails
/// every later settle, so that nothing goes on as if it had been written.
pub struct Deferred {
    commit: Option<Commit>,
    deferrals: Arc<Deferrals>,
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if self.commit.is_some() {
            self.deferrals.written(Err("it was dropped unwritten".to_string()));
        }
    }
}

impl Deferrals {
    fn written(&self, result: Result<(), String>) {
        let mut count = self.count.lock().expect("deferrals lock");
        count.written += 1;
        if let Err(error) = result {
            count.failed.get_or_insert(error);
        }
        self.written.notify_all();
    }
}

/// What of one stored outbox batch is still to confirm.
#[derive(Debug, Default)]
struct Unconfirmed {
    seqs: BTreeSet<u64>,
    /// The batch was written again (partly confirmed): its key has had more than one value,
    /// so it is removed with a full tombstone, not a weak one.
    rewritten: bool,
}

const WRITER: &[u8] = b"m/writer";
/// What a store holds per input partition, and what a changelog carries of it: state, seen
/// ids, keyed records and the offset.
pub const PARTITION_PREFIXES: [&[u8]; 5] = [b"s/", b"r/", b"e/", b"k/", b"o/"];
/// The prefixes kept in their own keyspace: accepted ids and keyed records (see the module
/// documentation).
const KEPT_PREFIXES: [&[u8]; 2] = [b"e/", b"k/"];
/// Outbox records sealed under one key at most: a commit that pushes many (a partition's whole
/// state for its changelog) is stored in pieces, not in one value of some hundred megabytes.
const SEAL_EVERY: usize = 10_000;
const SEQ: &[u8] = b"m/seq";
/// The format a service stores its state in, per service: `m/format/<name>`.
const FORMAT_PREFIX: &[u8] = b"m/format/";

impl Store {
    /// Opens (or creates) the store. Blocks: call it from a blocking thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = open_db(path)?;
        let tree = db.keyspace("store", keyspace_options)?;
        let kept = db.keyspace("kept", || keyspace_options().max_memtable_size(KEPT_MEMTABLE_BYTES))?;
        move_kept_keys(&db, &tree, &kept)?;
        let writer = match tree.get(WRITER)? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => {
                let id = new_writer_id();
                tree.insert(WRITER, id.as_bytes())?;
                db.persist(PersistMode::SyncAll)?;
                id
            }
        };
        // what was written before this open is on disk now (the journal was replayed)
        let durable = tree.get(SEQ)?.map(|v| be_u64(&v, 0, "outbox sequence")).transpose()?.unwrap_or(0);
        let generations = Arc::new(Generations::open(&tree)?);
        Ok(Store {
            db,
            tree,
            kept,
            generations,
            writer,
            first_pending: Arc::new(AtomicU64::new(0)),
            durable_seq: Arc::new(AtomicU64::new(durable)),
            unconfirmed: Arc::default(),
            next_seq: Arc::new(AtomicU64::new(durable)),
            deferrals: Arc::default(),
            rewrites: Arc::default(),
            piece_room: Arc::default(),
        })
    }

    /// Checks that the store holds `name`'s state in `format`, the one this version writes:
    /// a store without offsets takes it, and one that holds state in another format (or in one
    /// from before formats were marked) is refused, since its values would not decode, or
    /// worse, decode as something else. Blocks: call it from a blocking thread.
    pub fn claim_format(&self, name: &str, format: u32) -> Result<(), StoreError> {
        let key = [FORMAT_PREFIX, name.as_bytes()].concat();
        let found = self.tree.get(&key)?.map(|v| be_u32(&v, "state format")).transpose()?;
        match found {
            Some(found) if found == format => Ok(()),
            None if self.offsets()?.is_empty() => {
                self.tree.insert(&key, format.to_be_bytes())?;
                Ok(self.db.persist(PersistMode::SyncAll)?)
            }
            found => Err(StoreError::Format { name: name.to_string(), found, want: format }),
        }
    }

    /// The id stamped on every record this store sends; unique per store.
    pub fn writer_id(&self) -> &str {
        &self.writer
    }

    /// The entries under a key prefix, in key order.
    fn scan<'a>(
        &'a self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Bytes, Bytes), StoreError>> + use<'a> {
        debug_assert!(!is_kept_key(prefix), "kept keys are scanned by generation");
        self.tree.prefix(prefix).map(|guard| guard.into_inner().map_err(StoreError::from))
    }

    /// The next offset to consume of each input partition this store has seen.
    pub fn offsets(&self) -> Result<BTreeMap<i32, i64>, StoreError> {
        let mut offsets = BTreeMap::new();
        for entry in self.scan(b"o/") {
            let (key, value) = entry?;
            offsets.insert(be_i32(&key, 2, "offset key")?, be_i64(&value, 0, "offset")?);
        }
        Ok(offsets)
    }

    /// The next offset to consume of one input partition, if this store has folded any of it.
    pub fn offset(&self, partition: i32) -> Result<Option<i64>, StoreError> {
        let value = self.entry(&partition_key(b"o/", partition, b""))?;
        value.map(|value| be_i64(&value, 0, "offset")).transpose()
    }

    /// Every state entry of an input partition, by state key.
    pub fn partition_state<T: DeserializeOwned>(
        &self,
        partition: i32,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let prefix = partition_key(b"s/", partition, b"");
        let mut entries = Vec::new();
        for entry in self.scan(&prefix) {
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
        let Some(value) = self.tree.get(partition_key(b"s/", partition, key.as_bytes()))? else {
            return Ok(None);
        };
        let state =
            postcard::from_bytes(&value).map_err(|source| StoreError::Decode { what: "state", source })?;
        Ok(Some(state))
    }

    /// Whether an input partition accepted the event id: one point read, nothing loaded.
    pub fn is_seen(&self, partition: i32, event_id: &str) -> Result<bool, StoreError> {
        self.is_seen_key(&seen_key(partition, event_id))
    }

    /// Whether the store holds an accepted event id, by its key ([`seen_key`]).
    pub fn is_seen_key(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.kept_entry(key)?.is_some())
    }

    /// A kept key's newest value, from the newest generation that holds it.
    fn kept_entry(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        generations::get(&self.kept, self.generations.newest(), key)
    }

    /// The kept keys under `prefix` from `lower` on, in key order, with their newest values.
    fn scan_kept<'a>(
        &'a self,
        prefix: &[u8],
        lower: Bound<&[u8]>,
    ) -> impl Iterator<Item = Result<(Bytes, Bytes), StoreError>> + use<'a> {
        generations::scan(&self.kept, self.generations.newest(), prefix, lower)
    }

    /// Sets how many kept keys a generation takes before the next one starts
    /// ([`generations::GENERATION_KEYS`] unless set): tests and benchmarks make many with a
    /// small number.
    pub fn set_keys_per_generation(&self, keys: u64) {
        self.generations.set_keys_per_generation(keys);
    }

    /// The newest generation of kept keys.
    pub fn kept_generation(&self) -> u32 {
        self.generations.newest()
    }

    /// The keys under `prefix` (`e/`, `k/`, ...) of an input partition, less the prefix and
    /// the partition: in key order within each generation of kept keys, so a kept key written
    /// again in a later generation comes once for each (what a filter of the keys held needs,
    /// without merging generations).
    pub fn partition_keys(
        &self,
        partition: i32,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<Vec<u8>, StoreError>> + use<'_> {
        let full = partition_key(prefix, partition, b"");
        let skip = full.len();
        let keys: Box<dyn Iterator<Item = Result<Bytes, StoreError>>> = match is_kept_key(prefix) {
            true => Box::new(generations::stored_keys(&self.kept, self.generations.newest(), &full)),
            false => Box::new(self.tree.prefix(full).map(|guard| guard.key().map_err(StoreError::from))),
        };
        keys.map(move |key| {
            let key = key?;
            Ok(generations::unprefixed(&key)[skip..].to_vec())
        })
    }

    /// How many times partition keys were written other than through a [`Commit`]: a cache of
    /// what the store holds that was filled before a change of this number may lack keys.
    pub fn rewrites(&self) -> u64 {
        self.rewrites.load(Ordering::Acquire)
    }

    fn rewriting(&self) {
        self.rewrites.fetch_add(1, Ordering::AcqRel);
    }

    /// One keyed record of an input partition.
    pub fn record(&self, partition: i32, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        self.kept_entry(&partition_key(b"k/", partition, key))
    }

    /// A rewritten record of an input partition ([`Commit::put_rewritten`]).
    pub fn rewritten(&self, partition: i32, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.tree.get(partition_key(b"r/", partition, key))?)
    }

    /// The keyed records of an input partition whose key starts with `prefix`, in key order,
    /// with their keys less the prefix.
    pub fn records(&self, partition: i32, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Bytes)>, StoreError> {
        let full = partition_key(b"k/", partition, prefix);
        less_prefix(full.len(), self.scan_kept(&full, Bound::Unbounded))
    }

    /// The rewritten records of an input partition whose key starts with `prefix`
    /// ([`Commit::put_rewritten`]), in key order, with their keys less the prefix.
    pub fn rewritten_records(
        &self,
        partition: i32,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Bytes)>, StoreError> {
        let full = partition_key(b"r/", partition, prefix);
        less_prefix(full.len(), self.scan(&full))
    }

    /// The ids of the events an input partition accepted. Loads them all: for small stores
    /// (the on-call sink's, the reporter's); the coordinator asks [`Store::is_seen`] instead.
    pub fn seen_ids(&self, partition: i32) -> Result<HashSet<String>, StoreError> {
        let prefix = partition_key(b"e/", partition, b"");
        let mut seen = HashSet::new();
        for entry in self.scan_kept(&prefix, Bound::Unbounded) {
            let (key, _) = entry?;
            seen.insert(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
        }
        Ok(seen)
    }

    /// Starts a batch; nothing is written until [`Store::commit`].
    pub fn begin(&self) -> Result<Commit, StoreError> {
        let next_seq = self.next_seq.load(Ordering::Acquire);
        Ok(Commit {
            writes: BTreeMap::new(),
            seen: Vec::new(),
            empty: Bytes::from(&b""[..]),
            next_seq,
            outputs: 0,
            outbox: Vec::with_capacity(self.piece_room.load(Ordering::Relaxed)),
            piece_room: self.piece_room.clone(),
            unsealed: Vec::new(),
            handing: false,
            handed: Handed::default(),
            sealed: Vec::new(),
            bytes: 0,
        })
    }

    /// Writes the batch atomically and makes it durable before returning.
    pub fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let written = self.write(commit)?;
        self.persist(written)
    }

    /// Writes the batch atomically, visible to reads at once and safe from a crash of this
    /// process (handed to the OS), but not yet fsynced: an OS crash or power loss may still
    /// take it back, together with every batch written after it, never alone. Call
    /// [`Store::persist`] before anything this batch caused leaves the process; one persist
    /// covers every batch written before it (a group commit).
    pub fn write(&self, mut commit: Commit) -> Result<Written, StoreError> {
        commit.seal_outbox();
        commit.writes.insert(Bytes::from(SEQ), Some(Bytes::from(&commit.next_seq.to_be_bytes()[..])));
        let batch = Batch { writes: commit.writes, seen: commit.seen, ..Batch::default() };
        self.write_batch(batch, Some(PersistMode::Buffer))?;
        self.next_seq.fetch_max(commit.next_seq, Ordering::AcqRel);
        // indexed once written: a failed write leaves no batch to confirm
        let mut unconfirmed = self.unconfirmed.lock().expect("outbox index lock");
        for (key, seqs) in commit.sealed {
            unconfirmed.insert(key, Unconfirmed { seqs: seqs.into_iter().collect(), rewritten: false });
        }
        Ok(Written { next_seq: commit.next_seq })
    }

    /// Hands a batch over to be written on another thread ([`Store::write_deferred`]), so that
    /// the caller goes on with the next one meanwhile. The next [`Store::begin`] follows on
    /// from it; reads may not show it until [`Store::settle`] returns.
    pub fn defer(&self, commit: Commit) -> Deferred {
        self.next_seq.fetch_max(commit.next_seq, Ordering::AcqRel);
        self.deferrals.count.lock().expect("deferrals lock").handed += 1;
        Deferred { commit: Some(commit), deferrals: self.deferrals.clone() }
    }

    /// Writes a deferred batch, as [`Store::write`] does.
    pub fn write_deferred(&self, mut deferred: Deferred) -> Result<Written, StoreError> {
        let commit = deferred.commit.take().expect("a deferred batch is written once");
        let written = self.write(commit);
        self.deferrals.written(written.as_ref().map(|_| ()).map_err(ToString::to_string));
        written
    }

    /// Waits until every deferred batch is written, so that reads show them all; fails if one
    /// was not.
    pub fn settle(&self) -> Result<(), StoreError> {
        let mut count = self.deferrals.count.lock().expect("deferrals lock");
        while count.written < count.handed && count.failed.is_none() {
            count = self.deferrals.written.wait(count).expect("deferrals lock");
        }
        match &count.failed {
            Some(error) => Err(StoreError::Deferred(error.clone())),
            None => Ok(()),
        }
    }

    /// Fsyncs every batch written so far, `written` among them.
    pub fn persist(&self, written: Written) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll)?;
        self.durable_seq.fetch_max(written.next_seq, Ordering::Relaxed);
        Ok(())
    }

    /// One atomic batch; a key written twice keeps its last write.
    fn apply(
        &self,
        writes: BTreeMap<Bytes, Option<Bytes>>,
        durability: Option<PersistMode>,
    ) -> Result<(), StoreError> {
        self.write_batch(Batch { writes, ..Batch::default() }, durability)
    }

    /// One atomic batch.
    ///
    /// Kept keys go into the newest generation, claimed for the batch and stored with it; a
    /// kept key removed is removed from every generation.
    fn write_batch(&self, batch: Batch, durability: Option<PersistMode>) -> Result<(), StoreError> {
        let Batch { writes, seen, kept_removed } = batch;
        let kept_puts = writes.iter().filter(|(key, value)| value.is_some() && is_kept_key(key)).count();
        let kept_keys = (seen.len() + kept_puts) as u64;
        // a batch of no kept keys (the outbox sender's) claims nothing, so it never waits for one
        // being written
        let claim = (kept_keys > 0).then(|| self.generations.claim(kept_keys));
        let generation = claim.as_ref().map_or_else(|| self.generations.newest(), Claim::newest);
        // sized up front: grown by doubling, a large batch's buffer was copied and its fresh
        // pages faulted in several times over
        let room = writes.len() + seen.len() + kept_removed.len() + 1;
        let mut batch = WriteBatch::with_capacity(self.db.clone(), room).durability(durability);
        for key in kept_removed {
            batch.remove(&self.kept, key);
        }
        for key in seen {
            batch.insert(&self.kept, generation_key(generation, &key), Bytes::from(&b""[..]));
        }
        for (key, value) in writes {
            match (is_kept_key(&key), value) {
                (true, Some(value)) => batch.insert(&self.kept, generation_key(generation, &key), value),
                (true, None) => {
                    for older in 0..=generation {
                        batch.remove(&self.kept, generation_key(older, &key));
                    }
                }
                (false, Some(value)) => batch.insert(&self.tree, key, value),
                (false, None) => batch.remove(&self.tree, key),
            }
        }
        if let Some(claim) = &claim {
            let (key, value) = claim.stored();
            batch.insert(&self.tree, key, value);
        }
        batch.commit()?;
        drop(claim);
        Ok(())
    }

    /// Up to `limit` outbox records, oldest first, of batches already fsynced.
    pub fn pending(&self, limit: usize) -> Result<Vec<(u64, OutboxRecord)>, StoreError> {
        let (first, durable) =
            (self.first_pending.load(Ordering::Relaxed), self.durable_seq.load(Ordering::Relaxed));
        if durable <= first || limit == 0 {
            return Ok(Vec::new());
        }
        let mut records = Vec::new();
        let mut first_batch = None;
        for guard in self.tree.range(outbox_key(first)..outbox_key(durable)) {
            let (key, value) = guard.into_inner()?;
            let batch_key = be_u64(&key, 2, "outbox key")?;
            let batch: Vec<(u64, OutboxRecord)> = postcard::from_bytes(&value)
                .map_err(|source| StoreError::Decode { what: "outbox batch", source })?;
            first_batch.get_or_insert(batch_key);
            self.unconfirmed.lock().expect("outbox index lock").entry(batch_key).or_insert_with(|| {
                // read back after a restart, or written again: either way as stored now
                Unconfirmed { seqs: batch.iter().map(|(seq, _)| *seq).collect(), rewritten: true }
            });
            let room = limit - records.len();
            records.extend(batch.into_iter().take(room));
            if records.len() >= limit {
                break;
            }
        }
        if let Some(first) = first_batch {
            self.first_pending.fetch_max(first, Ordering::Relaxed);
        }
        Ok(records)
    }

    /// How many outbox records wait to be sent.
    pub fn pending_count(&self) -> usize {
        let from = outbox_key(self.first_pending.load(Ordering::Relaxed));
        self.tree
            .range(from..outbox_key(u64::MAX))
            .filter_map(|guard| guard.value().ok())
            .map(|value| postcard::take_from_bytes::<usize>(&value).map_or(0, |(len, _)| len))
            .sum()
    }

    /// Forgets sent outbox records and remembers where they landed. Not fsynced: losing
    /// this write only makes recovery scan a little more (a batch confirmed whole is
    /// removed; one confirmed in part is written again with the rest).
    pub fn confirm_sent(&self, seqs: &[u64], tails: &BTreeMap<(String, i32), i64>) -> Result<(), StoreError> {
        let mut batch = WriteBatch::with_capacity(self.db.clone(), tails.len() + 1);
        self.forget_outbox(&mut batch, seqs, &BTreeMap::new())?;
        for ((topic, partition), offset) in tails {
            batch.insert(&self.tree, tail_key(topic, *partition), offset.to_be_bytes());
        }
        batch.commit()?;
        Ok(())
    }

    /// Forgets the pending records `dropped` unsent and stores `rewritten` in place of the
    /// records of the same sequence numbers, in one batch, fsynced: what is sent after it
    /// is the rewritten record, and a crash, even of the OS, never brings a dropped one back
    /// to land after it.
    pub fn supersede(
        &self,
        dropped: &[u64],
        rewritten: &BTreeMap<u64, OutboxRecord>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::with_capacity(self.db.clone(), dropped.len() + rewritten.len())
            .durability(Some(PersistMode::SyncAll));
        self.forget_outbox(&mut batch, dropped, rewritten)?;
        batch.commit()?;
        Ok(())
    }

    /// Adds to `batch` the removal of the outbox records `seqs` and the rewriting of the
    /// records in `rewritten`, each in the stored outbox batch that holds it.
    fn forget_outbox(
        &self,
        batch: &mut WriteBatch,
        seqs: &[u64],
        rewritten: &BTreeMap<u64, OutboxRecord>,
    ) -> Result<(), StoreError> {
        let mut unconfirmed = self.unconfirmed.lock().expect("outbox index lock");
        let mut touched = BTreeSet::new();
        for seq in seqs {
            if let Some((key, left)) = unconfirmed.range_mut(..=*seq).next_back()
                && left.seqs.remove(seq)
            {
                touched.insert(*key);
            }
        }
        for seq in rewritten.keys() {
            if let Some((key, left)) = unconfirmed.range(..=*seq).next_back()
                && left.seqs.contains(seq)
            {
                touched.insert(*key);
            }
        }
        for key in touched {
            let left = unconfirmed.get_mut(&key).expect("touched batches are indexed");
            if left.seqs.is_empty() {
                // written once, removed once: a weak tombstone vanishes with the value it meets
                if left.rewritten {
                    batch.remove(&self.tree, outbox_key(key));
                } else {
                    batch.remove_weak(&self.tree, outbox_key(key));
                }
                unconfirmed.remove(&key);
            } else if let Some(value) = self.tree.get(outbox_key(key))? {
                let mut stored: Vec<(u64, OutboxRecord)> = postcard::from_bytes(&value)
                    .map_err(|source| StoreError::Decode { what: "outbox batch", source })?;
                stored.retain(|(seq, _)| left.seqs.contains(seq));
                for (seq, record) in &mut stored {
                    if let Some(new) = rewritten.get(seq) {
                        *record = new.clone();
                    }
                }
                let value = postcard::to_allocvec(&stored).expect("outbox records serialize");
                batch.insert(&self.tree, outbox_key(key), value);
                left.rewritten = true;
            }
        }
        Ok(())
    }

    /// The offset of the last record this store delivered to a topic partition.
    pub fn tail(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        self.tree.get(tail_key(topic, partition))?.map(|v| be_i64(&v, 0, "delivered tail")).transpose()
    }

    /// Drops an input partition's state, records, seen ids and offset, so it is rebuilt from
    /// its log.
    pub fn drop_partition(&self, partition: i32) -> Result<(), StoreError> {
        let mut writes = BTreeMap::new();
        for prefix in [b"s/", b"r/"] {
            for entry in self.scan(&partition_key(prefix, partition, b"")) {
                writes.insert(entry?.0, None);
            }
        }
        writes.insert(partition_key(b"o/", partition, b""), None);
        self.forget_changelog_writes(partition, &mut writes)?;
        // ids and records as each generation stores them, in the same atomic batch
        let newest = self.generations.newest();
        let mut kept_removed = Vec::new();
        for prefix in KEPT_PREFIXES {
            let prefix = partition_key(prefix, partition, b"");
            for key in generations::stored_keys(&self.kept, newest, &prefix) {
                kept_removed.push(key?);
            }
        }
        self.rewriting();
        self.write_batch(Batch { writes, kept_removed, ..Batch::default() }, Some(PersistMode::SyncAll))
    }

    /// Forgets that the changelog holds the partition's state, and the keys waiting for it: a
    /// partition this instance gives up may be written to the changelog by another meanwhile.
    pub fn forget_changelog(&self, partition: i32) -> Result<(), StoreError> {
        let mut writes = BTreeMap::new();
        self.forget_changelog_writes(partition, &mut writes)?;
        self.apply(writes, Some(PersistMode::SyncAll))
    }

    fn forget_changelog_writes(
        &self,
        partition: i32,
        writes: &mut BTreeMap<Bytes, Option<Bytes>>,
    ) -> Result<(), StoreError> {
        writes.insert(partition_key(b"l/", partition, b""), None);
        writes.insert(partition_key(b"d/", partition, b""), None);
        for entry in self.scan(&partition_key(b"c/", partition, b"")) {
            writes.insert(entry?.0, None);
        }
        Ok(())
    }

    /// Per input partition, the keys written since its changelog was last sent, each batch's
    /// packed under its `c/` key.
    pub fn changelog_pending(&self) -> Result<BTreeMap<i32, Vec<(Bytes, Bytes)>>, StoreError> {
        let mut pending: BTreeMap<i32, Vec<(Bytes, Bytes)>> = BTreeMap::new();
        for entry in self.scan(b"c/") {
            let (key, value) = entry?;
            pending.entry(be_i32(&key, 2, "changelog keys")?).or_default().push((key, value));
        }
        Ok(pending)
    }

    /// One stored value by its full key.
    pub fn entry(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        match is_kept_key(key) {
            true => self.kept_entry(key),
            false => Ok(self.tree.get(key)?),
        }
    }

    /// An input partition's entries in key order from just after `after` (from its first for
    /// `None`): a changelog dump reads them a part at a time.
    pub fn partition_entries_after(
        &self,
        partition: i32,
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(Bytes, Bytes), StoreError>> + '_ {
        let mut prefixes = PARTITION_PREFIXES;
        prefixes.sort_unstable();
        let after = after.map(<[u8]>::to_vec);
        prefixes.into_iter().flat_map(move |prefix| {
            let start = partition_key(prefix, partition, b"");
            let lower = match &after {
                Some(after) if after[..] >= start[..] => Bound::Excluded(after.clone()),
                _ => Bound::Included(start.to_vec()),
            };
            let entries: Box<dyn Iterator<Item = _>> = match is_kept_key(prefix) {
                true => Box::new(self.scan_kept(&start, lower.as_ref().map(Vec::as_slice))),
                false => Box::new(
                    self.tree
                        .range::<Vec<u8>, _>((lower, Bound::Unbounded))
                        .map(|guard| guard.into_inner().map_err(StoreError::from))
                        .take_while(move |entry| {
                            entry.as_ref().is_ok_and(|(key, _)| key.starts_with(&start))
                        }),
                ),
            };
            entries
        })
    }

    /// Where the partition's changelog dump stands: the last key sent, if one is under way.
    pub fn dump_cursor(&self, partition: i32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(partition_key(b"d/", partition, b""))?.map(|key| key.to_vec()))
    }

    /// Whether the changelog holds this store's whole state of the input partition.
    pub fn is_changelogged(&self, partition: i32) -> Result<bool, StoreError> {
        Ok(self.tree.contains_key(partition_key(b"l/", partition, b""))?)
    }

    /// Forgets every partition's changelog flag and waiting keys: a store written without a
    /// changelog sends its whole state of a partition once it writes one again.
    pub fn forget_changelogs(&self) -> Result<(), StoreError> {
        let mut writes = BTreeMap::new();
        for prefix in [b"l/", b"c/", b"d/"] {
            for entry in self.scan(prefix) {
                writes.insert(entry?.0, None);
            }
        }
        self.apply(writes, Some(PersistMode::SyncAll))
    }

    /// Writes entries of an input partition read back from its changelog (a `None` value
    /// removes the key); not synced, and without the offset, which [`Store::finish_restore`]
    /// writes last. A key of another partition or of no partition is refused.
    pub fn restore_entries(
        &self,
        partition: i32,
        entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        let mut writes = BTreeMap::new();
        let offset_key = partition_key(b"o/", partition, b"");
        for (key, value) in entries {
            if !is_partition_key(&key, partition) {
                return Err(StoreError::ForeignKey {
                    partition,
                    key: String::from_utf8_lossy(&key).into_owned(),
                });
            }
            if key[..] != offset_key[..] {
                writes.insert(Bytes::from(key), value.map(Bytes::from));
            }
        }
        // before and after: a reader comparing the number around its own reads sees a change
        self.rewriting();
        let applied = self.apply(writes, Some(PersistMode::Buffer));
        self.rewriting();
        applied
    }

    /// Ends a restore from the changelog: the partition's offset and its changelog flag (the
    /// state is the changelog's), synced with every entry restored before.
    pub fn finish_restore(&self, partition: i32, next_offset: i64) -> Result<(), StoreError> {
        let mut writes = BTreeMap::new();
        writes
            .insert(partition_key(b"o/", partition, b""), Some(Bytes::from(&next_offset.to_be_bytes()[..])));
        writes.insert(partition_key(b"l/", partition, b""), Some(Bytes::from(&b""[..])));
        self.apply(writes, Some(PersistMode::SyncAll))
    }

    /// How many entries the store holds and their key and value bytes: its live state.
    pub fn live_size(&self) -> Result<(u64, u64), StoreError> {
        let mut entries = 0;
        let mut bytes = 0;
        for guard in self.tree.iter().chain(self.kept.iter()) {
            let (key, value) = guard.into_inner()?;
            entries += 1;
            bytes += (key.len() + value.len()) as u64;
        }
        Ok((entries, bytes))
    }

    /// Writes both keyspaces' memtables out to tables, for a clean stop: the next open then
    /// has no journal to replay (after a crash it replays up to the journal's 64 MiB cap,
    /// `kept`'s memtable being flushed only at that cap). Blocks until the tables are written.
    pub fn close(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll)?;
        for keyspace in [&self.tree, &self.kept] {
            keyspace.rotate_memtable_and_wait()?;
        }
        Ok(())
    }

    /// Makes every write durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.disk_space()?)
    }
}

/// A batch [`Store::write`] wrote and no [`Store::persist`] has fsynced yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a written batch is not durable until persisted"]
pub struct Written {
    next_seq: u64,
}

/// A commit's outbox records to hand to the sender, in sequence order: the pieces they were
/// sealed in, kept apart. Joined into one list, each piece of up to 10,000 records was moved
/// again into a list grown by doubling, and the fresh memory of each growth faulted in, some
/// 5% of a coordinator's fold loop.
///
/// A piece is shared with its commit, which serializes it into the outbox when it is written
/// ([`Store::write`], on the persister's thread in the coordinator, not the fold loop's). A
/// commit is written before its records are handed over, so by then the hand-over holds each
/// piece alone and takes its records without a copy.
#[derive(Debug, Default, PartialEq)]
pub struct Handed {
    pieces: Vec<Piece>,
}

/// Up to [`SEAL_EVERY`] outbox records of a commit, with their sequence numbers, stored under
/// the first one's.
type Piece = Arc<Vec<(u64, OutboxRecord)>>;

impl Handed {
    pub fn len(&self) -> usize {
        self.pieces.iter().map(|piece| piece.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.iter().all(|piece| piece.is_empty())
    }

    /// The sequence numbers, in order.
    pub fn seqs(&self) -> Vec<u64> {
        self.pieces.iter().flat_map(|piece| piece.iter()).map(|(seq, _)| *seq).collect()
    }
}

impl From<Vec<(u64, OutboxRecord)>> for Handed {
    fn from(records: Vec<(u64, OutboxRecord)>) -> Self {
        Handed { pieces: vec![Arc::new(records)] }
    }
}

impl IntoIterator for Handed {
    type Item = (u64, OutboxRecord);
    type IntoIter = std::iter::FlatMap<
        std::vec::IntoIter<Piece>,
        Vec<(u64, OutboxRecord)>,
        fn(Piece) -> Vec<(u64, OutboxRecord)>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        // a piece whose commit is still unwritten (not so in the services) is copied
        self.pieces
            .into_iter()
            .flat_map(|piece| Arc::try_unwrap(piece).unwrap_or_else(|shared| (*shared).clone()))
    }
}

/// One atomic batch of state, seen ids, offsets and outputs.
pub struct Commit {
    /// Key to value, `None` to remove; the last write of a key wins. Keys and values are the
    /// store's own shared slices, made once: the store takes them as they are, and the
    /// changelog keeps them until its next sending without copying them.
    writes: BTreeMap<Bytes, Option<Bytes>>,
    /// Accepted event ids' keys ([`seen_key`]), apart from `writes`: about half of what a
    /// batch of the fold loop writes, each written once and never changed, so they need no
    /// ordered insert (3-4% of the fold loop's samples end to end).
    seen: Vec<Bytes>,
    /// The value of every seen id.
    empty: Bytes,
    next_seq: u64,
    outputs: usize,
    /// Outbox records pushed since the last piece was closed, with their sequence numbers.
    outbox: Vec<(u64, OutboxRecord)>,
    /// [`Store::piece_room`], shared.
    piece_room: Arc<AtomicUsize>,
    /// Closed pieces, serialized into the outbox when the batch is written
    /// ([`Commit::seal_outbox`]).
    unsealed: Vec<Piece>,
    /// Whether the records are also handed to a sender in memory ([`Commit::hand_output`]).
    handing: bool,
    /// The closed pieces to hand over ([`Commit::take_outputs`]).
    handed: Handed,
    /// The sequence numbers of each sealed group, by its key, for the store's index.
    sealed: Vec<(u64, Vec<u64>)>,
    /// Key and value bytes put so far, to show what a commit writes.
    bytes: usize,
}

impl Commit {
    pub fn put_state<T: Serialize>(&mut self, partition: i32, key: &str, state: &T) {
        self.put(partition_key(b"s/", partition, key.as_bytes()), stored(state));
    }

    /// A keyed record's bytes: [`stored`] serializes a value into them without a copy.
    pub fn put_record(&mut self, partition: i32, key: &[u8], value: impl Into<Bytes>) {
        self.put(partition_key(b"k/", partition, key), value);
    }

    pub fn remove_record(&mut self, partition: i32, key: &[u8]) {
        self.writes.insert(partition_key(b"k/", partition, key), None);
    }

    /// Writes a part of a state kept under its own key, rewritten whole when it changes (a
    /// SKU's price book, say). It lives with the states, not with the keyed records: those
    /// are the history, written once or a few times each, and overwritten keys among them
    /// leave their merges rewriting dead versions.
    pub fn put_rewritten(&mut self, partition: i32, key: &[u8], value: impl Into<Bytes>) {
        self.put(partition_key(b"r/", partition, key), value);
    }

    pub fn remove_rewritten(&mut self, partition: i32, key: &[u8]) {
        self.writes.insert(partition_key(b"r/", partition, key), None);
    }

    pub fn put_seen(&mut self, partition: i32, event_id: &str) {
        self.put_seen_key(seen_key(partition, event_id));
    }

    /// Records an accepted event id by its key, as [`seen_key`] built it. An id is put once
    /// per batch (a second put of it would write the same empty value again).
    pub fn put_seen_key(&mut self, key: Bytes) {
        debug_assert!(seen_key_parts(&key).is_some(), "a seen id's key");
        self.bytes += key.len();
        self.seen.push(key);
    }

    /// Records that the input partition is consumed up to (not including) `next_offset`.
    pub fn put_offset(&mut self, partition: i32, next_offset: i64) {
        self.put(partition_key(b"o/", partition, b""), next_offset.to_be_bytes().to_vec());
    }

    /// Notes that the changelog holds the whole state of an input partition once this batch
    /// is sent.
    pub fn set_changelogged(&mut self, partition: i32) {
        self.put(partition_key(b"l/", partition, b""), Vec::new());
    }

    /// Whether this batch notes that the changelog holds the input partition's whole state.
    pub fn sets_changelogged(&self, partition: i32) -> bool {
        self.write_of(&partition_key(b"l/", partition, b"")).is_some_and(|value| value.is_some())
    }

    /// Notes the keys of an input partition this batch wrote, packed, for the changelog's
    /// next sending; `next_offset` (the batch's) tells the batches apart.
    pub fn put_changelog_keys(&mut self, partition: i32, next_offset: i64, packed: Vec<u8>) {
        self.put(partition_key(b"c/", partition, &next_offset.to_be_bytes()), packed);
    }

    /// Notes how far the partition's changelog dump got (`Some`: the last key sent), or that it
    /// is over (`None`).
    pub fn put_dump_cursor(&mut self, partition: i32, last: Option<&[u8]>) {
        let key = partition_key(b"d/", partition, b"");
        match last {
            Some(last) => self.put(key, last.to_vec()),
            None => {
                self.writes.insert(key, None);
            }
        }
    }

    /// Removes noted keys once they are sent to the changelog ([`Store::changelog_pending`]).
    pub fn remove_changelog_keys(&mut self, key: &[u8]) {
        if key.starts_with(b"c/") {
            self.writes.insert(Bytes::from(key), None);
        }
    }

    /// What this batch writes under a full key: `Some(None)` for a removal, `None` if nothing.
    pub fn write_of(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        // only a seen id's key is looked for among the listed ids, which a batch of the fold
        // loop has thousands of; the changelog asks for its flag key at every sending
        if seen_key_parts(key).is_some() && self.seen.iter().any(|seen| **seen == *key) {
            return Some(Some(&[]));
        }
        self.writes.get(key).map(Option::as_deref)
    }

    /// This batch's writes of an input partition's state, seen ids, records and offset, under
    /// their full keys; `None` removes the key. A key or value cloned is shared, not copied.
    pub fn partition_writes(&self, partition: i32) -> impl Iterator<Item = (&Bytes, Option<&Bytes>)> {
        let written = PARTITION_PREFIXES.into_iter().flat_map(move |prefix| {
            let start = partition_key(prefix, partition, b"");
            self.writes
                .range(start.clone()..)
                .take_while(move |(key, _)| key.starts_with(&start))
                .map(|(key, value)| (key, value.as_ref()))
        });
        let seen =
            self.seen.iter().filter(move |key| seen_key_parts(key).is_some_and(|(p, _)| p == partition));
        written.chain(seen.map(|key| (key, Some(&self.empty))))
    }

    pub fn push_output(&mut self, record: &OutboxRecord) {
        self.outbox.push((self.next_seq, record.clone()));
        self.next_seq += 1;
        self.outputs += 1;
        self.close_piece_if_full();
    }

    /// Like [`Commit::push_output`], and keeps the record for [`Commit::take_outputs`].
    pub fn hand_output(&mut self, record: OutboxRecord) {
        self.handing = true;
        self.outbox.push((self.next_seq, record));
        self.next_seq += 1;
        self.outputs += 1;
        self.close_piece_if_full();
    }

    fn close_piece_if_full(&mut self) {
        if self.outbox.len() >= SEAL_EVERY {
            self.close_piece();
        }
    }

    /// The records given to [`Commit::hand_output`], with their sequence numbers, to hand to
    /// the sender once this batch is committed.
    pub fn take_outputs(&mut self) -> Handed {
        self.close_piece();
        std::mem::take(&mut self.handed)
    }

    /// Ends the piece the records pushed since the last one form.
    fn close_piece(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        self.piece_room.store(self.outbox.len(), Ordering::Relaxed);
        let piece = Arc::new(std::mem::take(&mut self.outbox));
        if self.handing {
            self.handed.pieces.push(piece.clone());
        }
        self.unsealed.push(piece);
    }

    /// Puts each piece of records under one key, its first one's sequence.
    fn seal_outbox(&mut self) {
        self.close_piece();
        for piece in std::mem::take(&mut self.unsealed) {
            let Some(&(first, _)) = piece.first() else { continue };
            self.put(Bytes::from(outbox_key(first)), stored_in_place(&*piece));
            self.sealed.push((first, piece.iter().map(|(seq, _)| *seq).collect()));
        }
    }

    fn put(&mut self, key: Bytes, value: impl Into<Bytes>) {
        let value = value.into();
        self.bytes += key.len() + value.len();
        self.writes.insert(key, Some(value));
    }

    /// The key and value bytes this batch writes so far; its outbox records count once it is
    /// written (they are serialized then).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many outputs this batch adds to the outbox.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
}

/// A value serialized (postcard) for the store: in a scratch buffer of this thread, then
/// copied into a buffer of its exact size, the one the store keeps. Measuring the size first
/// instead walked each value twice (a fifth of the time the fold loop spent storing states);
/// a copy of a few kilobytes costs far less. A value larger than the scratch buffer (an outbox
/// piece) is measured and written in place ([`stored_in_place`]).
pub fn stored<T: Serialize + ?Sized>(value: &T) -> Bytes {
    let copied = SCRATCH.with_borrow_mut(|scratch| {
        postcard::to_slice(value, scratch).ok().map(|bytes| Bytes::from(byteview::ByteView::new(bytes)))
    });
    copied.unwrap_or_else(|| stored_in_place(value))
}

/// The room of [`stored`]'s scratch buffer: more than a SKU's core, a segment or an order line
/// takes, per thread that stores.
const SCRATCH_BYTES: usize = 64 << 10;

thread_local! {
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// A value serialized straight into the buffer the store keeps, its size measured first: for
/// values of any size. Serialized into a vector first, each value was allocated twice and
/// copied once; for an outbox piece of some megabytes each allocation also faulted its memory
/// in fresh (two thirds of the persister's time spent serializing pieces).
pub fn stored_in_place<T: Serialize + ?Sized>(value: &T) -> Bytes {
    let len = postcard::experimental::serialized_size(value).expect("a stored value serializes");
    let mut stored = byteview::ByteView::with_size(len);
    let mut buffer = stored.get_mut().expect("a new byte view has one owner");
    let written = postcard::to_slice(value, &mut buffer).expect("a stored value serializes").len();
    debug_assert_eq!(written, len, "postcard writes the size it measured");
    drop(buffer);
    Bytes::from(stored)
}

/// The database's lock is released when its last handle (background workers included) is
/// dropped, so a store reopened in the same process (a restarted service, a test) can find it
/// briefly locked. A lock held longer is another process's: an error.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The journal is replayed on open; capped at fjall's minimum so that memtables are flushed
/// to tables early and a restart replays at most this much.
const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// The block cache. Kept small: a service holds its hot state itself (the coordinator's state
/// engine has its own budget), so the cache mostly serves point reads of cold keys. With the
/// memtables it is the store's share of a coordinator's memory beyond its state cache budget:
/// 32 MiB and memtables of 32 and 16 MiB (each up to twice, while one is flushed) keep a 256
/// MiB budget within 400 MB over 100,000 SKUs. At 48 MiB that peak was 388-418 MB over three
/// runs, at 32 MiB 378-393, and the year ran no slower (`services/bench/HISTORY.md`, stop
/// 41).
const CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The journal is not compressed: fjall would compress every value above 4 KiB (a batch's
/// outbox record) on the committing thread, the fold loop's. Entries carry their compression,
/// so a journal written compressed still replays.
fn open_db(path: &Path) -> Result<Database, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match Database::builder(path)
            .worker_threads(worker_threads())
            .cache_size(CACHE_BYTES)
            .max_journaling_size(JOURNAL_BYTES)
            .journal_compression(fjall::CompressionType::None)
            .open()
        {
            Err(fjall::Error::Locked) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return Ok(opened?),
        }
    }
}

/// fjall's background workers: one per core up to four (its default), but at least three.
///
/// Worker 0 only flushes while others exist: it hands each compaction request back to the
/// queue and takes it again at once, spinning, until another worker is free. With two
/// workers (two cores) that spin lasted as long as every compaction, a tenth of a
/// coordinator's CPU; with a third, an idle compactor takes the request. One worker has no
/// spin but can deadlock under a heavy write load in fjall 3.1.13 (its rotation sends a
/// blocking `Flush` into the bounded queue only it reads, fjall-rs/fjall#323).
fn worker_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.clamp(3, 4)
}

/// The active memtable's size before it is sealed and flushed (fjall's default is 64 MiB).
/// A sealed one is held until its flush ends, so up to about twice this is in memory next to
/// the block cache. 16 MiB cost the coordinator about 17% more CPU in compactions; 32 MiB
/// about what 64 did. fjall keeps the size a keyspace was created with: a store created
/// before this keeps 64 MiB.
const MEMTABLE_BYTES: u64 = 32 * 1024 * 1024;

/// The kept keyspace's memtable: its keys (ids, lines) are written once or a few times, so a
/// larger memtable absorbs few overwrites, and half the size takes some 40 MB off the peak of
/// the catalogue benchmark (100,000 SKUs, a 256 MiB state budget) for no measurable CPU:
/// `omnifold-bench history --skip-pure --events 2000000`, back to back, 356 and 379 MB of
/// growth against 404 and 418, at 85,000 and 91,000 events/s against 73,000 and 113,000. A
/// store created before this keeps 32 MiB.
const KEPT_MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

/// Tables in level 0 before they are merged into level 1 (fjall's default is 4). Ids and lines
/// are keys written once and spread over the whole key range, so every merge of level 0
/// rewrites most of level 1; merging twice as much at a time halves that. The reads it costs
/// (one more table per level-0 table to probe) are mostly spared by the coordinator's key
/// filter. `omnifold-bench history --events 3000000 --skus 1000`, back to back: 49,569 and
/// 51,760 events/s with 4, 52,558 and 55,194 with 8 (55,882 with 16).
const L0_TABLES: u8 = 8;

/// The size a compaction cuts its output tables at (fjall's default is 64 MiB). Level 1 holds
/// `L0_TABLES` tables' worth, so with 64 MiB tables it took 512 MiB: a year's history (some
/// 600 MB of ids and lines) sat in that one level, and every merge of level 0 into it
/// rewrote the tables holding lines, which are spread over the whole key range. The merges
/// grew with the store, and a fjall worker took most of a core late in the year. With
/// 16 MiB tables level 1 is 128 MiB and the history goes on into level 2 a table at a time.
/// `omnifold-bench history --skip-pure --events 10000000 --skus 1000 --days 365`, both builds
/// at once, each on a core of its own, then swapped: 52,771 and 59,883 events/s against
/// 48,437 and 52,942, the last tenth 56,000 and 54,000 against 47,000 and 48,000, the store
/// 375 MB against 927 MB. 8 MiB did no better (60,980 and 60,332 against 62,370 and
/// 60,313), nor 4 tables in level 0 with 16 MiB. fjall keeps the sizes a keyspace was
/// created with: a store created before this keeps 64 MiB tables.
const TABLE_BYTES: u64 = 16 * 1024 * 1024;

/// Filter and index blocks partitioned on every level: a point read of a key never seen (an
/// event id, a new line) then loads one small filter partition through the block cache,
/// instead of a table's whole filter. With fjall's default (whole blocks above level 3) a
/// store of some millions of ids spent most of its time re-reading and checksumming filter
/// blocks that the cache could not hold.
fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(MEMTABLE_BYTES)
        .compaction_strategy(Arc::new(
            fjall::compaction::Leveled::default()
                .with_l0_threshold(L0_TABLES)
                .with_table_target_size(TABLE_BYTES),
        ))
        .filter_block_partitioning_policy(PartitioningPolicy::all(true))
        .index_block_partitioning_policy(PartitioningPolicy::all(true))
}

/// Whether a key (or a key prefix) lives in the kept keyspace.
fn is_kept_key(key: &[u8]) -> bool {
    KEPT_PREFIXES.iter().any(|prefix| key.starts_with(prefix))
}

/// Scanned entries with their keys less the prefix scanned (`prefix_len` bytes).
fn less_prefix(
    prefix_len: usize,
    entries: impl Iterator<Item = Result<(Bytes, Bytes), StoreError>>,
) -> Result<Vec<(Vec<u8>, Bytes)>, StoreError> {
    entries.map(|entry| entry.map(|(key, value)| (key[prefix_len..].to_vec(), value))).collect()
}

/// What one atomic batch writes.
#[derive(Default)]
struct Batch {
    /// By key: the value to put, or `None` to remove it.
    writes: BTreeMap<Bytes, Option<Bytes>>,
    /// Accepted ids' keys, each put with an empty value.
    seen: Vec<Bytes>,
    /// Kept keys to remove as a generation stores them ([`generations::stored_keys`]).
    kept_removed: Vec<Bytes>,
}

/// Keys moved per atomic batch by [`move_kept_keys`].
const MOVE_CHUNK: usize = 50_000;

/// A store written before ids and records had a keyspace of their own holds them in the main
/// one: they move over on open, a chunk per atomic batch. Each key is in exactly one of the
/// two at any time, so a crash midway leaves a store the next open finishes moving.
fn move_kept_keys(db: &Database, tree: &Keyspace, kept: &Keyspace) -> Result<(), StoreError> {
    let mut moved = 0usize;
    for prefix in KEPT_PREFIXES {
        let mut batch = WriteBatch::with_capacity(db.clone(), MOVE_CHUNK);
        // one iterator over a snapshot: scanning again after each chunk would step over the
        // tombstones of every key moved before
        for guard in tree.prefix(prefix) {
            let (key, value) = guard.into_inner()?;
            batch.insert(kept, key.clone(), value);
            batch.remove(tree, key);
            moved += 1;
            if moved.is_multiple_of(MOVE_CHUNK) {
                std::mem::replace(&mut batch, WriteBatch::with_capacity(db.clone(), MOVE_CHUNK)).commit()?;
            }
        }
        batch.commit()?;
    }
    if moved > 0 {
        db.persist(PersistMode::SyncAll)?;
        tracing::info!(keys = moved, "moved ids and records to their own keyspace");
    }
    Ok(())
}

fn new_writer_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("w{:x}{:x}", nanos, std::process::id())
}

/// An accepted event id's key in the store: `e/`, the input partition, the id. Built once per
/// event by a caller that checks it, remembers it and writes it ([`Commit::put_seen_key`]);
/// inline up to 14 bytes of id.
pub fn seen_key(partition: i32, event_id: &str) -> Bytes {
    partition_key(b"e/", partition, event_id.as_bytes())
}

/// The input partition and the event id of a [`seen_key`].
pub fn seen_key_parts(key: &[u8]) -> Option<(i32, &[u8])> {
    let rest = key.strip_prefix(b"e/")?;
    let (partition, id) = rest.split_first_chunk::<4>()?;
    Some((i32::from_be_bytes(*partition), id))
}

/// Built as the store's own key type: one of up to 20 bytes (a SKU's state, an offset) is
/// held inline, and a longer one is the very buffer the store keeps, not a copy of it.
fn partition_key(prefix: &[u8], partition: i32, rest: &[u8]) -> Bytes {
    let mut key = byteview::ByteView::builder(prefix.len() + 4 + rest.len());
    let (head, tail) = key.split_at_mut(prefix.len());
    head.copy_from_slice(prefix);
    tail[..4].copy_from_slice(&partition.to_be_bytes());
    tail[4..].copy_from_slice(rest);
    Bytes::from(key.freeze())
}

/// Whether `key` is one of `partition`'s state, seen id, record or offset keys.
fn is_partition_key(key: &[u8], partition: i32) -> bool {
    PARTITION_PREFIXES.iter().any(|prefix| key.starts_with(prefix))
        && key.get(2..6) == Some(&partition.to_be_bytes()[..])
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

/// `N` bytes of `bytes` from `at`; a short key or value is corruption, not a panic.
fn fixed<const N: usize>(bytes: &[u8], at: usize, what: &'static str) -> Result<[u8; N], StoreError> {
    bytes.get(at..at + N).and_then(|slice| slice.try_into().ok()).ok_or(StoreError::Truncated {
        what,
        len: bytes.len(),
        want: at + N,
    })
}

fn be_i32(bytes: &[u8], at: usize, what: &'static str) -> Result<i32, StoreError> {
    Ok(i32::from_be_bytes(fixed(bytes, at, what)?))
}

fn be_i64(bytes: &[u8], at: usize, what: &'static str) -> Result<i64, StoreError> {
    Ok(i64::from_be_bytes(fixed(bytes, at, what)?))
}

fn be_u64(bytes: &[u8], at: usize, what: &'static str) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(fixed(bytes, at, what)?))
}

fn be_u32(bytes: &[u8], what: &'static str) -> Result<u32, StoreError> {
    Ok(u32::from_be_bytes(fixed(bytes, 0, what)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty store takes the format it is opened for; a store holding state in another
    /// format, or in none marked, is refused with an error that says what to do.
    #[test]
    fn a_store_is_read_only_in_the_format_it_was_written_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.claim_format("coordinator", 2).unwrap();
        let mut commit = store.begin().unwrap();
        commit.put_offset(0, 7);
        store.commit(commit).unwrap();
        store.claim_format("coordinator", 2).unwrap();
        let refused = store.claim_format("coordinator", 3).unwrap_err();
        assert!(matches!(refused, StoreError::Format { found: Some(2), want: 3, .. }), "{refused}");
        assert!(refused.to_string().contains("delete the store directory"), "{refused}");
        let unmarked = store.claim_format("reporter", 1).unwrap_err();
        assert!(matches!(unmarked, StoreError::Format { found: None, .. }), "{unmarked}");
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        reopened.claim_format("coordinator", 2).unwrap();
    }

    fn record(n: u8) -> OutboxRecord {
        OutboxRecord { topic: "t".into(), key: vec![n], value: vec![n, n], headers: vec![], partition: None }
    }

    /// The outbox record as it was stored before its bytes were written as byte strings.
    #[derive(Serialize)]
    struct StoredBefore {
        topic: String,
        key: Vec<u8>,
        value: Vec<u8>,
        headers: Vec<(String, Vec<u8>)>,
        partition: Option<i32>,
    }

    #[test]
    fn a_piece_is_stored_as_postcard_writes_it() {
        let big = OutboxRecord {
            topic: "t".repeat(300).into(),
            key: vec![1; 70_000],
            value: vec![2; 200_000],
            headers: vec![("h".repeat(200).into(), vec![3; 20_000]); 3],
            partition: Some(i32::MAX),
        };
        // larger than the scratch buffer, and within it
        for records in
            [vec![(u64::MAX, record(1)), (u64::MAX, big), (u64::MAX, record(2))], vec![(7, record(3))]]
        {
            let bytes = postcard::to_allocvec(&records).unwrap();
            assert_eq!(&*stored(&records), bytes.as_slice());
            assert_eq!(&*stored_in_place(&records), bytes.as_slice());
        }
    }

    #[test]
    fn seen_ids_listed_apart_are_written_found_and_told_by_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut commit = store.begin().unwrap();
        let long = "an-event-id-longer-than-the-inline-twenty-bytes";
        for (partition, id) in [(1, "ev-1"), (2, "ev-1"), (1, long)] {
            commit.put_seen_key(seen_key(partition, id));
        }
        commit.put_state(1, "SKU-1", &7u32);
        assert_eq!(seen_key_parts(&seen_key(1, long)), Some((1, long.as_bytes())));
        assert_eq!(commit.write_of(&seen_key(1, long)), Some(Some(&b""[..])));
        assert_eq!(commit.write_of(&seen_key(3, "ev-1")), None);
        let ids: Vec<_> = commit
            .partition_writes(1)
            .filter_map(|(key, value)| Some((seen_key_parts(key)?.1.to_vec(), value?.to_vec())))
            .collect();
        assert_eq!(ids, [(b"ev-1".to_vec(), Vec::new()), (long.as_bytes().to_vec(), Vec::new())]);
        store.commit(commit).unwrap();
        assert!(store.is_seen(1, "ev-1").unwrap() && store.is_seen(2, "ev-1").unwrap());
        assert!(store.is_seen_key(&seen_key(1, long)).unwrap() && !store.is_seen(2, long).unwrap());
        assert_eq!(store.state::<u32>(1, "SKU-1").unwrap(), Some(7));
    }

    #[test]
    fn outbox_records_stored_before_read_the_same_and_are_written_the_same() {
        let before = StoredBefore {
            topic: "omnifold.availability.v1".into(),
            key: b"web/SKU-1".to_vec(),
            value: (0..=255).collect(),
            headers: vec![("h".into(), vec![1, 2])],
            partition: Some(3),
        };
        let bytes = postcard::to_allocvec(&vec![(7u64, &before)]).unwrap();
        let read: Vec<(u64, OutboxRecord)> = postcard::from_bytes(&bytes).unwrap();
        let record = &read[0].1;
        assert_eq!(
            (record.key.as_slice(), record.value.as_slice()),
            (before.key.as_slice(), before.value.as_slice())
        );
        let headers: Vec<(String, Vec<u8>)> =
            record.headers.iter().map(|(name, value)| (name.to_string(), value.clone())).collect();
        assert_eq!((headers, record.partition), (before.headers, before.partition));
        assert_eq!(*record.topic, *before.topic);
        assert_eq!(postcard::to_allocvec(&read).unwrap(), bytes);
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
    fn a_partition_restored_from_its_writes_equals_the_original_and_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let original = Store::open(&dir.path().join("a")).unwrap();
        let mut written = Vec::new();
        for (n, removed) in [(1u32, false), (2, true)] {
            let mut commit = original.begin().unwrap();
            commit.put_state(5, "SKU-1", &n);
            commit.put_rewritten(5, b"SKU-1/prices", vec![n as u8; 3]);
            commit.put_record(5, b"line/a", vec![n as u8]);
            if removed {
                commit.remove_record(5, b"line/a");
            }
            commit.put_seen(5, &format!("ev-{n}"));
            commit.put_seen(6, "other partition");
            commit.put_offset(5, n as i64 * 10);
            written.extend(commit.partition_writes(5).map(|(k, v)| (k.to_vec(), v.map(|v| v.to_vec()))));
            assert!(commit.partition_writes(5).all(|(key, _)| key[2..6] == 5i32.to_be_bytes()));
            original.commit(commit).unwrap();
        }

        let copy = Store::open(&dir.path().join("b")).unwrap();
        copy.restore_entries(5, written).unwrap();
        assert!(copy.offsets().unwrap().is_empty(), "the offset is written last");
        copy.finish_restore(5, 20).unwrap();
        let entries = |store: &Store| -> Vec<(Bytes, Bytes)> {
            store.partition_entries_after(5, None).collect::<Result<_, _>>().unwrap()
        };
        assert_eq!(entries(&copy), entries(&original));
        assert!(copy.is_changelogged(5).unwrap() && !copy.is_changelogged(6).unwrap());
        copy.drop_partition(5).unwrap();
        assert!(!copy.is_changelogged(5).unwrap() && entries(&copy).is_empty());

        let foreign = vec![(partition_key(b"s/", 6, b"x").to_vec(), Some(vec![1]))];
        assert!(matches!(copy.restore_entries(5, foreign), Err(StoreError::ForeignKey { partition: 5, .. })));
    }

    #[test]
    fn a_written_batch_is_readable_at_once_and_its_outputs_wait_for_the_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut first = store.begin().unwrap();
        first.put_offset(0, 5);
        first.push_output(&record(1));
        let first = store.write(first).unwrap();
        let mut second = store.begin().unwrap();
        second.push_output(&record(2));
        let second = store.write(second).unwrap();
        assert_eq!(store.offsets().unwrap(), BTreeMap::from([(0, 5)]), "state is read before the fsync");
        assert_eq!(store.pending(10).unwrap(), vec![], "no output leaves before its batch is fsynced");
        store.persist(first).unwrap();
        assert_eq!(store.pending(10).unwrap(), vec![(0, record(1))]);
        store.persist(second).unwrap();
        assert_eq!(store.pending(10).unwrap(), vec![(0, record(1)), (1, record(2))]);

        // what a reopen finds on disk is durable
        let mut third = store.begin().unwrap();
        third.push_output(&record(3));
        let _ = store.write(third).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.pending(10).unwrap().len(), 3);
    }

    #[test]
    fn a_deferred_batch_numbers_the_next_one_on_and_settle_waits_for_its_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut first = store.begin().unwrap();
        first.put_offset(0, 5);
        first.push_output(&record(1));
        let deferred = store.defer(first);
        let mut second = store.begin().unwrap();
        second.hand_output(record(2));
        assert_eq!(second.take_outputs().seqs()[0], 1, "the next batch follows on from the deferred one");
        assert_eq!(store.offsets().unwrap(), BTreeMap::new(), "not written yet");

        let writer = store.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            writer.write_deferred(deferred).unwrap()
        });
        store.settle().unwrap();
        assert_eq!(store.offsets().unwrap(), BTreeMap::from([(0, 5)]), "settled: the batch is written");
        store.persist(handle.join().unwrap()).unwrap();
        assert_eq!(store.pending(10).unwrap(), vec![(0, record(1))]);
    }

    #[test]
    fn a_deferred_batch_dropped_unwritten_fails_every_later_settle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        drop(store.defer(store.begin().unwrap()));
        assert!(matches!(store.settle(), Err(StoreError::Deferred(_))));
        assert!(matches!(store.settle(), Err(StoreError::Deferred(_))), "and stays failed");
    }

    #[test]
    fn a_short_key_or_value_is_a_decode_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.tree.insert(b"o/\x00\x00\x00\x01", b"short".as_slice()).unwrap();
        let error = store.offsets().expect_err("a 5-byte offset is corrupt");
        assert_eq!(error.to_string(), "corrupt offset in the store: 5 bytes where 8 were expected");
        store.tree.insert(b"o/\x01", 7i64.to_be_bytes().as_slice()).unwrap();
        store.tree.remove(b"o/\x00\x00\x00\x01".as_slice()).unwrap();
        assert!(matches!(
            store.offsets(),
            Err(StoreError::Truncated { what: "offset key", len: 3, want: 6 })
        ));
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
    fn a_batch_confirmed_in_part_keeps_only_the_rest_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut commit = store.begin().unwrap();
        for n in 0..5 {
            commit.hand_output(record(n));
        }
        let handed = commit.take_outputs();
        assert_eq!(handed.seqs(), vec![0, 1, 2, 3, 4]);
        store.commit(commit).unwrap();
        assert_eq!(store.tree.range(outbox_key(0)..outbox_key(u64::MAX)).count(), 1, "one key per batch");
        assert_eq!(store.pending_count(), 5);
        store.confirm_sent(&[1, 3], &BTreeMap::new()).unwrap();
        assert_eq!(store.pending(10).unwrap(), vec![(0, record(0)), (2, record(2)), (4, record(4))]);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let pending = store.pending(2).unwrap();
        assert_eq!(pending, vec![(0, record(0)), (2, record(2))], "a limit can end inside a batch");
        assert_eq!(store.pending_count(), 3);
        store.confirm_sent(&[0, 2, 4], &BTreeMap::new()).unwrap();
        assert_eq!(store.pending(10).unwrap(), vec![]);
        assert_eq!(store.pending_count(), 0);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.pending(10).unwrap(), vec![], "a batch confirmed whole stays gone");
    }

    #[test]
    fn superseded_records_are_dropped_and_rewritten_ones_replaced_across_batches_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for batch in [0..3, 3..6] {
            let mut commit = store.begin().unwrap();
            for n in batch {
                commit.push_output(&record(n));
            }
            store.commit(commit).unwrap();
        }
        // the last record of the first batch merged into the last of the second
        store.supersede(&[2], &BTreeMap::from([(5, record(9))])).unwrap();
        let want = vec![(0, record(0)), (1, record(1)), (3, record(3)), (4, record(4)), (5, record(9))];
        assert_eq!(store.pending(10).unwrap(), want);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.pending(10).unwrap(), want, "superseding is stored, not only indexed");
        assert_eq!(store.pending_count(), 5);
        store.confirm_sent(&[0, 1, 3, 4, 5], &BTreeMap::new()).unwrap();
        assert_eq!(store.pending(10).unwrap(), vec![]);
    }

    #[test]
    fn a_commit_of_many_records_hands_them_over_in_order_in_its_sealed_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut commit = store.begin().unwrap();
        let count = SEAL_EVERY as u64 * 2 + 3;
        for n in 0..count {
            commit.hand_output(record(n as u8));
        }
        let handed = commit.take_outputs();
        assert_eq!(handed.pieces.len(), 3, "sealed every {SEAL_EVERY} records, then the rest");
        assert_eq!((handed.len(), handed.seqs()), (count as usize, (0..count).collect()));
        assert_eq!(commit.write_of(&outbox_key(0)), None, "serialized when written, not when taken");
        store.commit(commit).unwrap();
        assert_eq!(store.tree.range(outbox_key(0)..outbox_key(u64::MAX)).count(), 3, "one key per piece");
        assert!(handed.pieces.iter().all(|piece| Arc::strong_count(piece) == 1), "written: held alone");
        assert_eq!(handed.into_iter().map(|(_, record)| record).next_back(), Some(record((count - 1) as u8)));
    }

    #[test]
    fn a_commit_starts_with_room_for_as_many_records_as_the_last_piece() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.begin().unwrap().outbox.capacity(), 0);
        let mut commit = store.begin().unwrap();
        for n in 0..1_500 {
            commit.hand_output(record(n as u8));
        }
        commit.take_outputs();
        store.commit(commit).unwrap();
        let mut next = store.begin().unwrap();
        assert!(next.outbox.capacity() >= 1_500, "room for {}", next.outbox.capacity());
        next.push_output(&record(0));
        store.commit(next).unwrap();
        assert!(store.begin().unwrap().outbox.capacity() < 1_500, "the last piece sets it, small or large");
    }

    #[test]
    fn records_pushed_after_a_take_form_a_batch_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut commit = store.begin().unwrap();
        commit.hand_output(record(1));
        let first = commit.take_outputs();
        commit.hand_output(record(2));
        let second = commit.take_outputs();
        store.commit(commit).unwrap();
        assert_eq!((first, second), (vec![(0, record(1))].into(), vec![(1, record(2))].into()));
        store.confirm_sent(&[0], &BTreeMap::new()).unwrap();
        assert_eq!(store.pending(10).unwrap(), vec![(1, record(2))]);
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
            commit.put_rewritten(partition, b"SKU/prices", vec![2]);
            commit.put_seen(partition, "ev");
            commit.put_offset(partition, 5);
        }
        store.commit(commit).unwrap();
        // a rewritten record lives with the states, not with the history
        assert!(store.tree.contains_key(partition_key(b"r/", 0, b"SKU/prices")).unwrap());
        assert!(!store.kept.contains_key(partition_key(b"r/", 0, b"SKU/prices")).unwrap());
        store.drop_partition(0).unwrap();
        assert_eq!(store.rewritten(0, b"SKU/prices").unwrap(), None);
        assert_eq!(store.rewritten(1, b"SKU/prices").unwrap().as_deref(), Some(&[2u8][..]));
        assert_eq!(store.offsets().unwrap(), BTreeMap::from([(1, 5)]));
        assert!(store.partition_state::<u8>(0).unwrap().is_empty());
        assert!(store.seen_ids(0).unwrap().is_empty());
        assert_eq!(store.partition_state::<u8>(1).unwrap().len(), 1);
    }

    #[test]
    fn ids_and_records_are_kept_apart_from_the_state_in_one_atomic_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut commit = store.begin().unwrap();
        commit.put_state(3, "SKU", &1u8);
        commit.put_seen(3, "ev-1");
        commit.put_record(3, b"SKU/l1", vec![7]);
        commit.put_offset(3, 9);
        store.commit(commit).unwrap();
        let (id, record) = (partition_key(b"e/", 3, b"ev-1"), partition_key(b"k/", 3, b"SKU/l1"));
        for key in [&id, &record] {
            assert!(store.kept.contains_key(key).unwrap() && !store.tree.contains_key(key).unwrap());
        }
        assert!(store.tree.contains_key(partition_key(b"s/", 3, b"SKU")).unwrap());
        assert!(!store.kept.contains_key(partition_key(b"s/", 3, b"SKU")).unwrap());
        let entries: Vec<Vec<u8>> =
            store.partition_entries_after(3, None).map(|entry| entry.unwrap().0.to_vec()).collect();
        assert_eq!(entries.len(), 4, "a partition's entries are read from both keyspaces");
        assert_eq!(
            store.live_size().unwrap().0,
            4 + 3,
            "and the writer id, outbox sequence and kept generation"
        );
    }

    #[test]
    fn a_store_written_in_one_keyspace_moves_its_ids_and_records_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut commit = store.begin().unwrap();
            commit.put_state(0, "SKU", &1u8);
            store.commit(commit).unwrap();
            // as a store written before the split holds them, one id already moved (an open
            // that crashed midway)
            store.tree.insert(partition_key(b"e/", 0, b"ev-1"), b"").unwrap();
            store.tree.insert(partition_key(b"e/", 0, b"ev-2"), b"").unwrap();
            store.kept.insert(partition_key(b"e/", 0, b"ev-3"), b"").unwrap();
            store.tree.insert(partition_key(b"k/", 0, b"SKU/l1"), [5u8].as_slice()).unwrap();
            // more than one batch of them, so that the move commits a full batch and the rest
            for n in 0..MOVE_CHUNK {
                store.tree.insert(partition_key(b"e/", 1, format!("old-{n}").as_bytes()), b"").unwrap();
            }
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        for id in ["ev-1", "ev-2", "ev-3"] {
            assert!(store.is_seen(0, id).unwrap(), "{id}");
        }
        assert_eq!(store.seen_ids(1).unwrap().len(), MOVE_CHUNK);
        assert!(store.is_seen(1, &format!("old-{}", MOVE_CHUNK - 1)).unwrap());
        assert_eq!(store.record(0, b"SKU/l1").unwrap().as_deref(), Some(&[5u8][..]));
        assert_eq!(store.tree.prefix(b"e/").count() + store.tree.prefix(b"k/").count(), 0);
        assert_eq!(store.state::<u8>(0, "SKU").unwrap(), Some(1));
    }

    #[test]
    fn a_closed_store_reopens_without_a_journal_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let write = |store: &Store| {
            let mut commit = store.begin().unwrap();
            for n in 0..2_000u32 {
                commit.put_seen(0, &format!("ev-{n}"));
                commit.put_state(0, &format!("SKU-{n}"), &vec![7u8; 500]);
            }
            store.commit(commit).unwrap();
        };
        let store = Store::open(dir.path()).unwrap();
        write(&store);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.db.write_buffer_size() > 1_000_000, "an unclosed store replays its writes");
        write(&store);
        store.close().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.db.write_buffer_size(), 0, "nothing replayed into the memtables");
        assert!(store.is_seen(0, "ev-1999").unwrap());
        assert_eq!(store.state::<Vec<u8>>(0, "SKU-0").unwrap(), Some(vec![7u8; 500]));
    }
}

//! The state engine: the pure fold over a bounded cache of SKU states backed by the store.
//!
//! Kafka Streams calls this a keyed state store with a caching layer. Each SKU's state is
//! stored as parts ([`SkuState`] explains which): its core under the state key, its price
//! book and its open alerts as rewritten records (written whole when they change), and under
//! keyed records its order lines, its promotion ids and its placements by hour. The engine
//!
//! - loads a SKU on its first event since it was evicted: the core, the price book, the open
//!   alerts and the stored segments;
//! - provides, before each event, the one record the event names ([`Fold::record_key`]): an
//!   order line written lately from the [`RecentLines`] it keeps as it writes them, any other
//!   from the store;
//! - checks event ids against a set of recent ids, then the store ([`Store::is_seen`]): ids
//!   are never all loaded;
//! - skips both store reads for a key the [`KeyFilter`] knows was never written (most ids
//!   and most lines named are new);
//! - writes, per batch, only what changed: the dirty cores, their price books and open alerts
//!   if those changed, the changed records and segments, and the accepted ids, into the
//!   caller's [`Commit`];
//! - once that commit is in the store, unloads the written records and evicts the least
//!   recently used SKUs until the cache fits its budget ([`Engine::trim`]).
//!
//! Until [`Engine::trim`], the engine keeps in memory everything of the last written batch
//! that it would otherwise read back: the batch's SKUs stay cached, their records loaded and
//! their ids among the recent ones. So the next batch may fold while the last one is still
//! being written on another thread (`persister.rs`): nothing it reads from the store is
//! something that batch wrote.
//!
//! Architecture invariant: evicting and reloading a SKU changes no output. The cache holds
//! exactly what the store holds plus what the open batch changed, and the fold prunes by
//! the SKU's own clock, never by what happens to be loaded (guarded by
//! `services/domain/tests/properties.rs` and this module's tests).

use std::collections::VecDeque;

use compact_str::CompactString;
use omnifold_domain::demand::Point;
use omnifold_domain::fact::LineKey;
use omnifold_domain::pricing::{PriceBook, PromotionKey};
use omnifold_domain::stock::Line;
use omnifold_domain::{Fold, Outcome, RecordKey, SkuState};
use omnifold_proto::Event;
use omnifold_runtime::store::{self, Bytes, stored};
use omnifold_runtime::{Commit, Store, StoreError};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::key_filter::KeyFilter;
use crate::recent_lines::RecentLines;

/// How much the engine may hold in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineOptions {
    /// The budget of the SKU state cache, in bytes (an estimate of what the states hold).
    #[serde(default = "default_cache_bytes")]
    pub state_cache_bytes: usize,
    /// Accepted event ids remembered in memory, so that redeliveries need no store read.
    #[serde(default = "default_recent_ids")]
    pub recent_ids: usize,
    /// The size in bytes of the filter of stored ids and records ([`crate::key_filter`]),
    /// which spares the store read for a key never written; 0 reads the store every time.
    #[serde(default = "default_key_filter_bytes")]
    pub key_filter_bytes: usize,
    /// Order lines last written kept in memory as stored ([`crate::recent_lines`]), so that
    /// the shipment or cancellation that follows a placement reads no store.
    #[serde(default = "default_recent_lines")]
    pub recent_lines: usize,
}

fn default_cache_bytes() -> usize {
    256 * 1024 * 1024
}

/// The last ten thousand events' ids (a fraction of a second while catching up, minutes at a
/// steady pace); an older duplicate costs one store read (the key filter has its id). Tenfold
/// this, the set's table outgrew the caches, and keeping it (a lookup, an insert and a removal
/// per event) took 7% of the fold loop's time in `omnifold-bench history`, against 5% here.
fn default_recent_ids() -> usize {
    10_000
}

/// Part of the process's memory next to the state cache. 16 MiB holds about 16 million keys
/// (a year of a busy 1,000-SKU catalogue) at 2% false positives; with it the catalogue
/// benchmark (100,000 SKUs, 256 MiB cache) grew by 333 MB at its peak, within the 400 MB aimed
/// at.
fn default_key_filter_bytes() -> usize {
    16 * 1024 * 1024
}

/// Some 6-11 MB (a line's key and stored value, about 200 bytes, for up to 50,000). In a year of
/// the benchmark mix (`omnifold-bench history`, 10,000,000 events over 1,000 SKUs) the order
/// lines read back fell from 2,722,989 store reads to 509,942: a shipment comes 4 to 48 hours
/// after its placement, a few thousand lines later; the reads left are mostly returns, days
/// later.
fn default_recent_lines() -> usize {
    50_000
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            state_cache_bytes: default_cache_bytes(),
            recent_ids: default_recent_ids(),
            key_filter_bytes: default_key_filter_bytes(),
            recent_lines: default_recent_lines(),
        }
    }
}

/// A cached SKU state: its estimated size, and the tick of its last use.
///
/// The state is boxed: the cache's table keeps the room of the most entries it ever held,
/// and a state inline would make each empty slot cost its full size.
struct Entry {
    state: Box<SkuState>,
    bytes: usize,
    used: u64,
    /// Changed since the last [`Engine::write`] (listed in [`Engine::dirty`]).
    dirty: bool,
}

/// A SKU of an input partition; the SKU inline up to 24 bytes, since one is built per event.
type SkuId = (i32, CompactString);

/// The fold over cached, stored state.
pub struct Engine {
    fold: Fold,
    store: Store,
    options: EngineOptions,
    cache: HashMap<SkuId, Entry>,
    cached_bytes: usize,
    recent: RecentIds,
    keys: KeyFilter,
    lines: RecentLines,
    /// SKUs changed since the last [`Engine::write`], each once, in the order they first
    /// changed: flagged on their cache entry, so an event's SKU is listed without a search.
    dirty: Vec<SkuId>,
    /// SKUs the last [`Engine::write`] wrote, whose records stay loaded until [`Engine::trim`].
    written: Vec<SkuId>,
    /// The keys of the ids accepted since the last write ([`store::seen_key`]), shared with
    /// the recent-id set: each event's is built once, checked, remembered and written as is.
    accepted: Vec<Bytes>,
    tick: u64,
    stats: EngineStats,
}

/// What the engine's cache did since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Estimated bytes of the SKU states held now.
    pub cached_bytes: usize,
    pub cached_skus: usize,
    /// SKU states read from the store (a first event, or one after an eviction).
    pub loads: u64,
    pub evictions: u64,
    /// Keyed records (order lines, promotions) read from the store for the event naming them.
    pub record_reads: u64,
    /// Event ids looked up in the store: neither among the recent ones nor ruled out by the
    /// key filter (a redelivery, or one of the filter's false positives).
    pub id_reads: u64,
    /// Order lines an event named that were found among those written lately, not read.
    pub recent_line_hits: u64,
}

impl Engine {
    pub fn new(fold: Fold, store: Store, options: EngineOptions) -> Self {
        Engine {
            fold,
            options,
            cache: HashMap::default(),
            cached_bytes: 0,
            recent: RecentIds::default(),
            keys: KeyFilter::new(store.clone(), options.key_filter_bytes),
            lines: RecentLines::new(options.recent_lines),
            dirty: Vec::new(),
            written: Vec::new(),
            accepted: Vec::new(),
            tick: 0,
            stats: EngineStats::default(),
            store,
        }
    }

    /// Applies one event of an input partition.
    pub fn apply(&mut self, partition: i32, event: &Event) -> Result<Outcome, StoreError> {
        let seen = store::seen_key(partition, &event.event_id);
        if self.recent.contains(&seen)
            || (self.keys.may_hold_id(partition, &event.event_id) && self.stored_id(&seen)?)
        {
            return Ok(Outcome::Duplicate);
        }
        let fact = match self.fold.check(event) {
            Ok(fact) => fact,
            Err(rejection) => return Ok(Outcome::Rejected(rejection)),
        };
        let Some(sku) = fact.sku() else {
            return Ok(match self.fold.apply_channel_fact(event, &fact) {
                Ok(outputs) => {
                    self.accept(seen);
                    Outcome::Applied { sku: None, outputs }
                }
                Err(rejection) => Outcome::Rejected(rejection),
            });
        };
        self.tick += 1;
        let id = (partition, CompactString::from(sku));
        let entry = match self.cache.get_mut(&id) {
            Some(entry) => entry,
            None => {
                self.stats.loads += 1;
                let state = load(&self.store, partition, sku)?;
                self.cache.entry(id.clone()).or_insert(Entry {
                    state: Box::new(state),
                    bytes: 0,
                    used: 0,
                    dirty: false,
                })
            }
        };
        entry.used = self.tick;
        if let Some(record) = Fold::record_key(event, &fact)
            && !entry.state.holds(&record)
        {
            let (keys, lines, stats) = (&mut self.keys, &self.lines, &mut self.stats);
            provide(&self.store, keys, lines, stats, (partition, sku), &record, &mut entry.state)?;
        }
        let result = self.fold.apply_fact(&mut entry.state, event, &fact);
        let bytes = entry.state.approx_bytes();
        self.cached_bytes = self.cached_bytes + bytes - entry.bytes;
        entry.bytes = bytes;
        match result {
            Ok(outputs) => {
                let sku = id.1.clone();
                if !std::mem::replace(&mut entry.dirty, true) {
                    self.dirty.push(id);
                }
                self.accept(seen);
                Ok(Outcome::Applied { sku: Some(sku), outputs })
            }
            Err(rejection) => Ok(Outcome::Rejected(rejection)),
        }
    }

    /// Whether the store holds an accepted id the filter could not rule out.
    fn stored_id(&mut self, seen: &[u8]) -> Result<bool, StoreError> {
        self.stats.id_reads += 1;
        self.store.is_seen_key(seen)
    }

    fn accept(&mut self, seen: Bytes) {
        self.recent.insert(seen.clone());
        self.accepted.push(seen);
    }

    /// Puts what changed since the last write into `commit`: the changed SKUs' cores, records
    /// and segments, and the accepted ids. Returns how many SKUs were written. What it wrote
    /// stays in memory until [`Engine::trim`].
    pub fn write(&mut self, commit: &mut Commit) -> usize {
        assert!(self.written.is_empty(), "write before the last written batch was trimmed");
        let dirty = std::mem::take(&mut self.dirty);
        for (partition, sku) in &dirty {
            let entry = self.cache.get_mut(&(*partition, sku.clone())).expect("a dirty sku is cached");
            entry.dirty = false;
            write_sku(commit, &self.keys, &mut self.lines, (*partition, sku), &mut entry.state);
        }
        for seen in self.accepted.drain(..) {
            let (partition, event_id) = store::seen_key_parts(&seen).expect("built by seen_key");
            self.keys.insert_id(partition, event_id);
            commit.put_seen_key(seen);
        }
        let count = dirty.len();
        self.written = dirty;
        count
    }

    /// Once the last written batch is in the store (the events folded since need not be):
    /// unloads the records it wrote, forgets the oldest recent ids and evicts the least
    /// recently used SKUs until the cache is within three quarters of its budget. What the
    /// open batch changed stays: its records, its ids and its SKUs.
    pub fn trim(&mut self) {
        for id in std::mem::take(&mut self.written) {
            let Some(entry) = self.cache.get_mut(&id) else { continue };
            entry.state.unload_records();
            let bytes = entry.state.approx_bytes();
            self.cached_bytes = self.cached_bytes + bytes - entry.bytes;
            entry.bytes = bytes;
        }
        self.recent.trim(self.options.recent_ids.max(self.accepted.len()));
        if self.cached_bytes <= self.options.state_cache_bytes {
            return;
        }
        let target = self.options.state_cache_bytes / 4 * 3;
        let mut by_age: Vec<(u64, SkuId)> = self
            .cache
            .iter()
            .filter(|(_, entry)| !entry.dirty)
            .map(|(id, entry)| (entry.used, id.clone()))
            .collect();
        by_age.sort_unstable();
        let mut evicted = 0u64;
        for (_, id) in by_age {
            if self.cached_bytes <= target {
                break;
            }
            let entry = self.cache.remove(&id).expect("listed from the cache");
            self.cached_bytes -= entry.bytes;
            evicted += 1;
        }
        // the table keeps the room of the most SKUs it ever held; states estimated small at
        // first (new SKUs) can make that many more than it holds at steady state
        if self.cache.capacity() > 2 * self.cache.len() {
            self.cache.shrink_to_fit();
        }
        self.stats.evictions += evicted;
        metrics::counter!("omnifold_state_evictions_total").increment(evicted);
        metrics::gauge!("omnifold_state_cache_bytes").set(self.cached_bytes as f64);
    }

    /// Drops what the open batch changed, as if it had never been applied: its SKUs are evicted
    /// (the store holds them as of the last commit) and its accepted ids forgotten. For a batch
    /// that must not commit (a partition of it was revoked mid-batch).
    pub fn discard(&mut self) {
        for id in std::mem::take(&mut self.dirty) {
            if let Some(entry) = self.cache.remove(&id) {
                self.cached_bytes -= entry.bytes;
            }
        }
        self.recent.remove_all(self.accepted.drain(..));
    }

    /// Drops the cached state of a partition this instance no longer owns; everything of it
    /// is committed, so a later owner of it here loads it from the store.
    pub fn forget_partition(&mut self, partition: i32) {
        let before = self.cache.len();
        let bytes: usize = self.cache.iter().filter(|(id, _)| id.0 == partition).map(|(_, e)| e.bytes).sum();
        self.cache.retain(|id, _| id.0 != partition);
        self.cached_bytes -= bytes;
        self.recent.forget_partition(partition);
        self.keys.forget_partition(partition);
        self.lines.forget_partition(partition);
        tracing::debug!(partition, skus = before - self.cache.len(), "forgot a partition's cached state");
    }

    /// The cache now and what it did so far.
    pub fn stats(&self) -> EngineStats {
        EngineStats { cached_bytes: self.cached_bytes, cached_skus: self.cache.len(), ..self.stats }
    }
}

/// How this version stores SKU states ([`Store::claim_format`]); raised with every change of
/// it. 2: the price book and the open alerts apart from the core (stop 35). 3: segments of
/// placements are rewritten records (`r/`), not kept ones (stop 49).
pub const STATE_FORMAT: u32 = 3;

/// Loads a SKU's core, price book, open alerts and stored segments; a SKU never written
/// starts empty.
fn load(store: &Store, partition: i32, sku: &str) -> Result<SkuState, StoreError> {
    metrics::counter!("omnifold_state_loads_total").increment(1);
    let Some(mut state) = load_core_with_prices(store, partition, sku)? else {
        return Ok(SkuState::default());
    };
    if let Some(value) = store.rewritten(partition, &record_prefix(sku, ALERTS))? {
        state.alerts = decode(&value, "open alerts")?;
    }
    for (_, value) in store.rewritten_records(partition, &record_prefix(sku, SEGMENT))? {
        state.restore_segment(decode::<Vec<Point>>(&value, "segment of placements")?);
    }
    Ok(state)
}

/// A SKU's core and its prices, without its alerts, records and placements: what a price
/// explanation reads. `None` for a SKU never written.
pub fn load_core_with_prices(
    store: &Store,
    partition: i32,
    sku: &str,
) -> Result<Option<SkuState>, StoreError> {
    let Some(mut state) = store.state::<SkuState>(partition, sku)? else {
        return Ok(None);
    };
    if let Some(value) = store.rewritten(partition, &record_prefix(sku, PRICES))? {
        state.prices = decode(&value, "price book")?;
    }
    Ok(Some(state))
}

/// Provides the record an event names, when the store has it: a line written lately from
/// memory, any other after the key filter.
fn provide(
    store: &Store,
    keys: &mut KeyFilter,
    lines: &RecentLines,
    stats: &mut EngineStats,
    (partition, sku): (i32, &str),
    record: &RecordKey,
    state: &mut SkuState,
) -> Result<(), StoreError> {
    let mut stored = |key: &[u8]| match keys.may_hold_record(partition, key) {
        true => {
            stats.record_reads += 1;
            store.record(partition, key)
        }
        false => Ok(None),
    };
    match record {
        RecordKey::Line(line) => {
            let key = (partition, line_key(sku, line));
            let value = match lines.get(&key) {
                Some(value) => {
                    stats.recent_line_hits += 1;
                    Some(value.clone())
                }
                None => stored(&key.1)?,
            };
            if let Some(value) = value {
                state.provide_line(line.clone(), decode::<Line>(&value, "order line")?);
            }
        }
        RecordKey::Promotion(promotion) => {
            if stored(&promotion_key(sku, promotion))?.is_some() {
                state.provide_promotion(promotion.clone());
            }
        }
    }
    Ok(())
}

fn write_sku(
    commit: &mut Commit,
    keys: &KeyFilter,
    lines: &mut RecentLines,
    (partition, sku): (i32, &str),
    state: &mut SkuState,
) {
    let changes = state.take_changes();
    commit.put_state(partition, sku, state);
    if changes.prices {
        put_prices(commit, partition, sku, &state.prices);
    }
    if changes.alerts {
        let key = record_prefix(sku, ALERTS);
        match state.alerts.is_empty() {
            true => commit.remove_rewritten(partition, &key),
            false => commit.put_rewritten(partition, &key, stored(&state.alerts)),
        }
    }
    for key in &changes.lines {
        let Some(line) = state.line(key) else { continue };
        let key = line_key(sku, key);
        keys.insert_record(partition, &key);
        let value = stored(line);
        commit.put_record(partition, &key, value.clone());
        lines.insert((partition, key), value);
    }
    for key in &changes.promotions {
        let key = promotion_key(sku, key);
        keys.insert_record(partition, &key);
        commit.put_record(partition, &key, Vec::new());
    }
    for (segment, points) in &changes.segments {
        let key = segment_key(sku, *segment);
        if points.is_empty() {
            commit.remove_rewritten(partition, &key);
        } else {
            commit.put_rewritten(partition, &key, stored(points));
        }
    }
}

pub(crate) fn put_prices(commit: &mut Commit, partition: i32, sku: &str, prices: &PriceBook) {
    commit.put_rewritten(partition, &record_prefix(sku, PRICES), stored(prices));
}

// Record keys: the SKU (length-prefixed, so no SKU is a prefix of another's keys), a kind
// byte, then the record's own key.
const LINE: u8 = b'l';
const PROMOTION: u8 = b'p';
/// The parts of a SKU stored apart from its core, rewritten records: they are overwritten
/// like the core, so they live with the states, not with the history. A segment of
/// placements is rewritten at every batch that places into it and removed once past the
/// horizon: among the kept history's generations it would be written into each in turn and
/// removed from them all.
const SEGMENT: u8 = b'h';
const PRICES: u8 = b'b';
const ALERTS: u8 = b'a';

/// A record's key as the engine builds it, before the store prefixes it with its partition:
/// held inline up to 64 bytes (a SKU and a line's channel, order and line ids, in most
/// catalogues), since several are built per event and each is copied into the store's key.
pub(crate) type StoreKey = SmallVec<[u8; 64]>;

fn record_prefix(sku: &str, kind: u8) -> StoreKey {
    let len = u16::try_from(sku.len()).expect("a sku is shorter than 64 KiB");
    let mut key = StoreKey::new();
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(sku.as_bytes());
    key.push(kind);
    key
}

/// Whether a store key (`k/` + input partition + record key) is an order line's. Lines are
/// what the changelog packs many to a record: they accumulate with history and each is
/// written a few times (placed, shipped, returned), never removed.
pub fn is_line_record(store_key: &[u8]) -> bool {
    record_kind(store_key, b"k/") == Some(LINE)
}

/// The kind byte of a record's store key (`prefix` + input partition + record key).
fn record_kind(store_key: &[u8], prefix: &[u8]) -> Option<u8> {
    let record = store_key.strip_prefix(prefix)?.get(4..)?;
    let (len, rest) = record.split_first_chunk::<2>()?;
    rest.get(usize::from(u16::from_be_bytes(*len))).copied()
}

/// What a key the engine writes to the store holds, in words: for reports that say where
/// the store's writes go (`omnifold-bench history`).
pub fn stored_kind(store_key: &[u8]) -> &'static str {
    let kind = |prefix| record_kind(store_key, prefix);
    match store_key.get(..2).unwrap_or_default() {
        b"e/" => "accepted event ids",
        b"s/" => "sku states",
        b"o/" => "input offsets",
        b"k/" => match kind(b"k/") {
            Some(LINE) => "order lines",
            Some(PROMOTION) => "promotions",
            _ => "other keyed records",
        },
        b"r/" => match kind(b"r/") {
            Some(SEGMENT) => "demand segments",
            Some(PRICES) => "price books",
            Some(ALERTS) => "alert states",
            _ => "other rewritten records",
        },
        _ => "other",
    }
}

fn line_key(sku: &str, line: &LineKey) -> StoreKey {
    encode_after(record_prefix(sku, LINE), line)
}

fn promotion_key(sku: &str, promotion: &PromotionKey) -> StoreKey {
    encode_after(record_prefix(sku, PROMOTION), promotion)
}

fn segment_key(sku: &str, segment: i64) -> StoreKey {
    let mut key = record_prefix(sku, SEGMENT);
    key.extend_from_slice(&segment.to_be_bytes());
    key
}

/// `value` serialized onto the end of `prefix`.
fn encode_after<T: Serialize>(prefix: StoreKey, value: &T) -> StoreKey {
    postcard::to_extend(value, prefix).expect("state serializes")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|source| StoreError::Decode { what, source })
}

/// Accepted ids remembered in memory by their store keys ([`store::seen_key`]), oldest first
/// out. Ids accepted since the last commit are only here (the store has them once the batch
/// commits), so it is trimmed after a commit, never during a batch.
#[derive(Default)]
struct RecentIds {
    ids: HashSet<Bytes>,
    order: VecDeque<Bytes>,
}

impl RecentIds {
    fn contains(&self, seen: &[u8]) -> bool {
        self.ids.contains(seen)
    }

    fn insert(&mut self, seen: Bytes) {
        if self.ids.insert(seen.clone()) {
            self.order.push_back(seen);
        }
    }

    /// Forgets ids, from the order too: an id accepted again later is then trimmed by its
    /// new place in the order, not by the old one.
    fn remove_all(&mut self, removed: impl Iterator<Item = Bytes>) {
        let gone: HashSet<Bytes> = removed.collect();
        if !gone.is_empty() {
            for seen in &gone {
                self.ids.remove(seen);
            }
            self.order.retain(|seen| !gone.contains(seen));
        }
    }

    fn forget_partition(&mut self, partition: i32) {
        let other = |seen: &Bytes| store::seen_key_parts(seen).is_none_or(|(p, _)| p != partition);
        self.ids.retain(other);
        self.order.retain(other);
    }

    fn trim(&mut self, keep: usize) {
        while self.order.len() > keep {
            let oldest = self.order.pop_front().expect("longer than keep");
            self.ids.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnifold_domain::{Output, PartitionState};
    use omnifold_workload::WorkloadOptions;

    fn rules() -> omnifold_domain::Rules {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/contract.toml");
        omnifold_runtime::load_contract(&path).expect("the example contract loads")
    }

    /// Runs `events` through an engine on one partition in batches, restarting the engine
    /// (a new process on the same store) every `restart_every` batches.
    fn run_engine(
        events: &[Event],
        options: EngineOptions,
        restart_every: usize,
    ) -> (Vec<(&'static str, Vec<Output>)>, usize, u64) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rules = rules();
        let mut engine = Engine::new(Fold::new(rules.clone()), store.clone(), options);
        let mut outputs = Vec::new();
        let mut peak = 0;
        let mut evictions = 0;
        for (n, batch) in events.chunks(250).enumerate() {
            let mut commit = store.begin().unwrap();
            for event in batch {
                outputs.push(seen(engine.apply(0, event).unwrap()));
            }
            engine.write(&mut commit);
            store.commit(commit).unwrap();
            engine.trim();
            peak = peak.max(engine.stats().cached_bytes);
            if (n + 1) % restart_every == 0 {
                evictions += engine.stats().evictions;
                engine = Engine::new(Fold::new(rules.clone()), store.clone(), options);
            }
        }
        (outputs, peak, evictions + engine.stats().evictions)
    }

    fn pure(events: &[Event]) -> Vec<(&'static str, Vec<Output>)> {
        let fold = Fold::new(rules());
        let mut state = PartitionState::default();
        events.iter().map(|event| seen(fold.apply(&mut state, event))).collect()
    }

    /// What an outcome shows: its outputs, and a duplicate told from a rejection.
    fn seen(outcome: Outcome) -> (&'static str, Vec<Output>) {
        match outcome {
            Outcome::Applied { outputs, .. } => ("applied", outputs),
            Outcome::Duplicate => ("duplicate", Vec::new()),
            Outcome::Rejected(_) => ("rejected", Vec::new()),
        }
    }

    /// Folds the events through the engine in batches, each committed before the next.
    fn fold_in_batches(
        engine: &mut Engine,
        store: &Store,
        events: &[Event],
        batch: usize,
    ) -> Vec<(&'static str, Vec<Output>)> {
        let mut outputs = Vec::new();
        for batch in events.chunks(batch) {
            let mut commit = store.begin().unwrap();
            outputs.extend(batch.iter().map(|event| seen(engine.apply(0, event).unwrap())));
            engine.write(&mut commit);
            store.commit(commit).unwrap();
            engine.trim();
        }
        outputs
    }

    #[test]
    fn a_small_cache_and_restarts_give_the_outputs_of_the_pure_fold() {
        let mut events = omnifold_workload::generate(&rules(), &WorkloadOptions::bench(40, 6_000));
        // redeliveries of accepted ids, some long after, must still be duplicates
        let again: Vec<Event> = events.iter().step_by(97).cloned().collect();
        events.extend(again);
        let budget = 48 * 1024;
        let (outputs, peak, evictions) = run_engine(
            &events,
            EngineOptions { state_cache_bytes: budget, recent_ids: 100, ..EngineOptions::default() },
            3,
        );
        assert!(evictions > 100, "the budget is far below the working set: {evictions} evictions");
        assert_eq!(outputs, pure(&events));
        assert!(peak <= budget, "the cache stayed within its budget after commits: {peak}");
    }

    /// Lines written lately are read from memory, whatever the bound, with the outputs of the
    /// pure fold: without them, the same shipments read the store.
    #[test]
    fn lines_written_lately_are_found_without_a_store_read() {
        let events = omnifold_workload::generate(&rules(), &WorkloadOptions::bench(40, 6_000));
        let fold = |recent_lines: usize| {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let options = EngineOptions { recent_lines, ..EngineOptions::default() };
            let mut engine = Engine::new(Fold::new(rules()), store.clone(), options);
            let outputs = fold_in_batches(&mut engine, &store, &events, 250);
            (outputs, engine.stats())
        };
        let pure = pure(&events);
        let (none, without) = fold(0);
        let (few, rotating) = fold(64);
        let (all, with) = fold(EngineOptions::default().recent_lines);
        assert!(none == pure && few == pure && all == pure);
        assert_eq!(without.recent_line_hits, 0);
        assert!(without.record_reads > 100, "{without:?}");
        assert_eq!(with.record_reads + with.recent_line_hits, without.record_reads, "{with:?}");
        assert!(with.record_reads * 10 < without.record_reads, "{with:?} against {without:?}");
        assert!(rotating.recent_line_hits > 0 && rotating.record_reads > with.record_reads, "{rotating:?}");
    }

    /// Event ids are read from the store, and counted, only where memory cannot answer: a
    /// redelivery past the recent ids is read; a new id, which the key filter rules out once
    /// it covers the partition, is not.
    #[test]
    fn ids_are_read_from_the_store_only_where_memory_cannot_answer() {
        let events = omnifold_workload::generate(&rules(), &WorkloadOptions::bench(40, 2_000));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let options = EngineOptions { recent_ids: 100, ..EngineOptions::default() };
        let mut engine = Engine::new(Fold::new(rules()), store.clone(), options);
        let first = fold_in_batches(&mut engine, &store, &events, 250);
        let new_id_reads = engine.stats().id_reads;
        // until the filter's scan of the (empty) store ends, its checks read the store
        assert!(new_id_reads <= 250, "{new_id_reads} reads of new ids");

        let again = fold_in_batches(&mut engine, &store, &events[..500], 250);
        let accepted = first[..500].iter().filter(|(seen, _)| *seen == "applied").count();
        let duplicates = again.iter().filter(|(seen, _)| *seen == "duplicate").count();
        assert!(accepted > 400 && duplicates == accepted, "{accepted} accepted, {duplicates} duplicates");
        assert_eq!(engine.stats().id_reads - new_id_reads, accepted as u64, "one read per redelivery");
    }

    /// As the coordinator runs it: each batch is written only after the next one folded (the
    /// persister's thread lags a batch behind), so the fold reads a store without it.
    #[test]
    fn folding_while_the_last_batch_is_unwritten_gives_the_outputs_of_the_pure_fold() {
        let mut events = omnifold_workload::generate(&rules(), &WorkloadOptions::bench(200, 8_000));
        // redeliveries of the batch in flight (5,350 to 5,400 while 5,400 on folds), and of
        // long before
        let soon: Vec<Event> = events[5_350..5_400].iter().step_by(3).cloned().collect();
        events.splice(5_400..5_400, soon);
        let late: Vec<Event> = events.iter().step_by(97).cloned().collect();
        events.extend(late);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // fewer recent ids than a batch accepts: the batch in flight's are kept all the same
        let options =
            EngineOptions { state_cache_bytes: 48 * 1024, recent_ids: 10, ..EngineOptions::default() };
        let mut engine = Engine::new(Fold::new(rules()), store.clone(), options);
        let (mut outputs, mut in_flight) = (Vec::new(), None);
        for batch in events.chunks(50) {
            let mut commit = store.begin().unwrap();
            for event in batch {
                outputs.push(seen(engine.apply(0, event).unwrap()));
            }
            if let Some(deferred) = in_flight.take() {
                let _written = store.write_deferred(deferred).unwrap();
            }
            engine.trim();
            engine.write(&mut commit);
            in_flight = Some(store.defer(commit));
        }
        let evictions = engine.stats().evictions;
        assert!(evictions > 100, "the budget is far below the working set: {evictions} evictions");
        assert_eq!(outputs, pure(&events));
    }

    /// Ids, lines and promotions spread over many generations of the store, states evicted and
    /// reloaded, no line held in memory: every read finds the newest value wherever it lives.
    #[test]
    fn a_history_over_many_generations_gives_the_outputs_of_the_pure_fold() {
        let mut events = omnifold_workload::generate(&rules(), &WorkloadOptions::bench(100, 8_000));
        let again: Vec<Event> = events.iter().step_by(61).cloned().collect();
        events.extend(again);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.set_keys_per_generation(400);
        let options = EngineOptions {
            state_cache_bytes: 48 * 1024,
            recent_ids: 10,
            recent_lines: 0,
            ..EngineOptions::default()
        };
        let mut engine = Engine::new(Fold::new(rules()), store.clone(), options);
        let outputs = fold_in_batches(&mut engine, &store, &events, 100);
        assert!(store.kept_generation() > 10, "generation {}", store.kept_generation());
        let stats = engine.stats();
        assert!(stats.record_reads > 100 && stats.evictions > 100, "{stats:?}");
        assert_eq!(outputs, pure(&events));
    }

    #[test]
    fn line_records_are_told_from_the_other_records_and_stored_keys() {
        let line = LineKey { channel: "shopify".into(), order_id: "o-1".into(), line_id: "1".into() };
        let in_store = |record: StoreKey| [&b"k/"[..], &7i32.to_be_bytes(), &record[..]].concat();
        assert!(is_line_record(&in_store(line_key("sku-l", &line))));
        assert!(!is_line_record(&in_store(segment_key("sku-l", 12))));
        assert!(!is_line_record(&in_store(promotion_key("sku-l", &("shopify".into(), "p".into())))));
        // a SKU whose name holds the kind byte is read by its length, not by a search
        assert!(!is_line_record(&in_store(segment_key("l", 3))));
        assert!(!is_line_record(b"s/\0\0\0\x07sku-l"));
        assert!(!is_line_record(b"k/\0\0"));
    }

    #[test]
    fn stored_kinds_are_told_by_prefix_and_kind_byte() {
        let in_store = |prefix: &[u8], record: StoreKey| [prefix, &1i32.to_be_bytes(), &record[..]].concat();
        let line = LineKey { channel: "shopify".into(), order_id: "o-1".into(), line_id: "1".into() };
        // a SKU whose name holds another kind byte is read by its length
        assert_eq!(stored_kind(&in_store(b"k/", line_key("sku-h", &line))), "order lines");
        assert_eq!(stored_kind(&in_store(b"r/", segment_key("sku-l", 12))), "demand segments");
        assert_eq!(
            stored_kind(&in_store(b"k/", promotion_key("s", &("shopify".into(), "p".into())))),
            "promotions"
        );
        assert_eq!(stored_kind(&in_store(b"r/", record_prefix("sku-l", PRICES))), "price books");
        assert_eq!(stored_kind(&in_store(b"r/", record_prefix("sku-l", ALERTS))), "alert states");
        assert_eq!(stored_kind(b"e/\0\0\0\x01evt-1"), "accepted event ids");
        assert_eq!(stored_kind(b"s/\0\0\0\x01sku-l"), "sku states");
        assert_eq!(stored_kind(b"k/\0\0"), "other keyed records");
        assert_eq!(stored_kind(b"x"), "other");
    }

    /// Most events change neither the price book nor the open alerts, so neither is written
    /// with every core: prices when a price event or a promotion let go changed them, alerts
    /// when one was raised or resolved.
    #[test]
    fn prices_and_alerts_are_written_when_they_change() {
        use omnifold_proto::event::Body;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let events = omnifold_workload::generate(&rules(), &WorkloadOptions::bench(20, 6_000));
        let written = |commit: &Commit, sku: &str, kind: u8| {
            let stored = [&b"r/"[..], &0i32.to_be_bytes(), &record_prefix(sku, kind)[..]].concat();
            commit.write_of(&stored).is_some()
        };
        let mut engine = Engine::new(Fold::new(rules()), store.clone(), EngineOptions::default());
        let (mut cores, mut prices, mut alerts) = (0, 0, 0);
        let (mut price_events, mut promotions, mut alert_events) = (0, 0, 0);
        for event in &events {
            let mut commit = store.begin().unwrap();
            let Outcome::Applied { sku: Some(sku), outputs } = engine.apply(0, event).unwrap() else {
                continue;
            };
            engine.write(&mut commit);
            let prices_event = matches!(
                event.body,
                Some(
                    Body::PriceSet(_)
                        | Body::CostSet(_)
                        | Body::PromotionScheduled(_)
                        | Body::PromotionCancelled(_)
                        | Body::CompetitorPriceObserved(_)
                )
            );
            let alerted = outputs.iter().any(|output| matches!(output, Output::Alert(_)));
            let (wrote_prices, wrote_alerts) =
                (written(&commit, &sku, PRICES), written(&commit, &sku, ALERTS));
            assert!(!prices_event || wrote_prices, "a price event rewrites the prices");
            assert!(alerted || !wrote_alerts, "alerts rewritten with none raised or resolved");
            cores += 1;
            (prices, alerts) = (prices + usize::from(wrote_prices), alerts + usize::from(wrote_alerts));
            (price_events, alert_events) =
                (price_events + usize::from(prices_event), alert_events + usize::from(alerted));
            promotions += usize::from(matches!(event.body, Some(Body::PromotionScheduled(_))));
            store.commit(commit).unwrap();
            engine.trim();
        }
        // beyond the price events, only a promotion let go (once each) rewrites the prices
        assert!(
            price_events > 0 && prices <= price_events + promotions,
            "{prices} writes, {price_events} events"
        );
        assert!(prices < cores / 5, "{prices} of {cores} commits wrote the prices");
        assert!(alerts > 0 && alerts <= alert_events, "{alerts} writes, {alert_events} alerted");
        assert!(alerts < cores / 5, "{alerts} of {cores} commits wrote the alerts");
    }

    #[test]
    fn a_commit_writes_what_the_batch_changed_not_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let events = omnifold_workload::generate(&rules(), &WorkloadOptions::bench(1, 4_000));
        let mut engine = Engine::new(Fold::new(rules()), store.clone(), EngineOptions::default());
        let mut written = Vec::new();
        for batch in events.chunks(10) {
            let mut commit = store.begin().unwrap();
            for event in batch {
                engine.apply(0, event).unwrap();
            }
            engine.write(&mut commit);
            written.push(commit.bytes());
            store.commit(commit).unwrap();
            engine.trim();
        }
        let (first, last) = (&written[20..120], &written[written.len() - 100..]);
        let mean = |w: &[usize]| w.iter().sum::<usize>() / w.len();
        // one SKU, 4,000 events: the last batches write no more than the early ones, give or
        // take the mix (the whole state re-serialized would grow with every line placed)
        assert!(
            mean(last) < 2 * mean(first),
            "early {} bytes, late {} bytes per commit",
            mean(first),
            mean(last)
        );
    }
}

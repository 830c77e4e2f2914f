//! A store's changelog: every write of an input partition's state, seen ids, records and
//! offset, sent through the outbox to partition p of a compacted topic, so that another
//! instance can restore the partition by reading the changelog instead of re-folding its whole
//! event log (Kafka Streams' changelog topics, without transactions).
//!
//! Each record's key is the store key, its value the stored value (a tombstone for a removed
//! key), and [`THROUGH_HEADER`] says the offset the state stood at when it was sent. A
//! sending's offset record (`o/` + partition) is its last record on the partition, since the
//! outbox sends in order through an idempotent producer. A reader can therefore tell a
//! changelog that stops inside a sending (its writer was killed mid-send): some record's
//! `through` is past the last offset record ([`Verdict::Incomplete`]). Compaction never makes a
//! complete changelog look incomplete, since it keeps each key's latest record. A whole state
//! sent in parts opens with a tombstone for the offset key, so until its last part a reader
//! finds no offset ([`Verdict::Empty`]).
//!
//! Every record also carries [`FORMAT_HEADER`], the state format its writer stores in (the
//! coordinator's `engine::STATE_FORMAT`). A restore takes only records of its own format: a
//! changelog whose last offset record is of another format (or written before records carried
//! one) stands for no state this version can read ([`Verdict::OtherFormat`]), so the partition
//! is re-folded and its state sent whole; the older records left on the compacted topic, under
//! keys the new format never writes again, are skipped by every later restore.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::KafkaOptions;
use crate::store::{OutboxRecord, Store, StoreError};

/// The offset the batch that wrote a changelog record brought its partition to (the next
/// offset to fold), as decimal text.
pub const THROUGH_HEADER: &str = "omnifold-changelog-through";
/// Marks an outbox record to be sent with no value: a Kafka tombstone.
pub const TOMBSTONE_HEADER: &str = "omnifold-tombstone";
/// The state format of the store that wrote a changelog record, as decimal text.
pub const FORMAT_HEADER: &str = "omnifold-changelog-format";

/// The store's prefix of seen ids, and the changelog's of packed ones.
const SEEN_PREFIX: &[u8] = b"e/";
const PACKED_IDS_PREFIX: &[u8] = b"E/";
/// Seen ids per packed changelog record.
const IDS_PER_RECORD: usize = 10_000;
/// The changelog's prefix of packed entries (keys [`Batch::packs`] selects), and how many bytes
/// of them one record holds at most.
const PACKED_ENTRIES_PREFIX: &[u8] = b"P/";
const PACK_BYTES: usize = 256 * 1024;
/// Chunks read and not yet written to the store while restoring.
const WRITES_IN_FLIGHT: usize = 4;
/// Entries written to the store at a time while restoring.
const RESTORE_CHUNK: usize = 20_000;
/// A restore logs its progress every this many records.
const LOG_EVERY: u64 = 500_000;
/// How long a restore may take to read a changelog partition to its end.
const READ_DEADLINE: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("kafka client error reading the changelog: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("corrupt packed ids in changelog partition {partition}, key {key:?}")]
    Corrupt { partition: i32, key: String },
    #[error("changelog partitions {partitions:?} were not read to their end within {seconds} s")]
    Unfinished { partitions: Vec<i32>, seconds: u64 },
}

/// Where a batch's changelog records go, and the offset its state stands at.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub topic: &'a crate::topics::TopicName,
    pub partition: i32,
    pub next_offset: i64,
    /// The writing store's id: a packed record's key is unique per writer and batch.
    pub writer: &'a str,
    /// The state format the writer stores in ([`FORMAT_HEADER`]).
    pub format: u32,
    /// Which store keys are sent packed, many to a record, rather than one record each: keys
    /// that accumulate with history and are written a few times each (order lines). Packs are
    /// never compacted away, so every version of such a key sent stays in the changelog; a
    /// reader applies them in order, so the last one stands. For a key rewritten all the time
    /// (a SKU's core) that would grow the changelog with every sending, so those go one each.
    pub packs: fn(&[u8]) -> bool,
}

/// Whether a store write is an accepted event id's (an `e/` key put, not removed): written once
/// and never changed, so a writer need not keep a last value of it, and the changelog packs it.
pub fn is_seen_id(key: &[u8], value: Option<&[u8]>) -> bool {
    value.is_some() && key.starts_with(SEEN_PREFIX)
}

/// The changelog records of one batch's writes of a partition. The seen ids, written once and
/// never changed, are packed [`IDS_PER_RECORD`] to a record, and the keys [`Batch::packs`]
/// selects up to [`PACK_BYTES`] to a record; the offset record goes last.
pub fn records<'a>(
    batch: &Batch<'_>,
    writes: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Vec<OutboxRecord> {
    let offset_key = offset_key(batch.partition);
    let mut records = Vec::new();
    let mut ids = Vec::new();
    let mut packed = Vec::new();
    for (key, value) in writes {
        match (key.strip_prefix(SEEN_PREFIX), value) {
            _ if key == offset_key.as_slice() => {}
            (Some(id), Some(_)) => ids.push(&id[4..]),
            _ if (batch.packs)(key) => packed.push((key, value)),
            _ => records.push(record(batch, key, value)),
        }
    }
    records.extend(id_records(batch, b'b', &ids));
    records.extend(entry_records(batch, b'b', &packed));
    records.push(record(batch, &offset_key, Some(&batch.next_offset.to_be_bytes())));
    records
}

/// A part of this store's whole state of a partition, less its offset: at most `limit` of its
/// entries in key order from just after `after`. Sent, a part per sending, when the state was
/// built without the changelog (a replay restore, a store that ran without one), so that a
/// large state is never held in one commit. Returns the records and, when entries remain, the
/// last key of the part.
pub fn dump_part(
    store: &Store,
    batch: &Batch<'_>,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<OutboxRecord>, Option<Vec<u8>>), StoreError> {
    let offset_key = offset_key(batch.partition);
    let mut records = Vec::new();
    if after.is_none() {
        // until the last part's offset record, a reader finds no offset: no state to restore
        // (the changelog may hold another writer's later records, which the parts override)
        records.push(record(batch, &offset_key, None));
    }
    let mut ids = Vec::new();
    let mut packed = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    let mut more = false;
    for (taken, entry) in store.partition_entries_after(batch.partition, after).enumerate() {
        if taken == limit {
            more = true;
            break;
        }
        let (key, value) = entry?;
        match key.strip_prefix(SEEN_PREFIX) {
            _ if *key == *offset_key => {}
            Some(id) => ids.push(id[4..].to_vec()),
            None if (batch.packs)(&key) => packed.push((key.clone(), value)),
            None => records.push(record(batch, &key, Some(&value))),
        }
        last = Some(key.to_vec());
    }
    let ids: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
    records.extend(id_records(batch, b'd', &ids));
    let packed: Vec<(&[u8], Option<&[u8]>)> = packed.iter().map(|(k, v)| (&k[..], Some(&v[..]))).collect();
    records.extend(entry_records(batch, b'd', &packed));
    Ok((records, last.filter(|_| more)))
}

/// Seen ids packed into records keyed `E/` + partition + next offset + kind (`b` a batch's,
/// `d` a dump's) + writer id + `/` + the pack's first id: no two packs of any writer share a
/// key (an id is accepted once, and a dump's parts hold different ids), so compaction keeps
/// every one.
fn id_records(batch: &Batch<'_>, kind: u8, ids: &[&[u8]]) -> Vec<OutboxRecord> {
    ids.chunks(IDS_PER_RECORD)
        .map(|ids| {
            let key = pack_key(PACKED_IDS_PREFIX, batch, kind, ids[0]);
            record(batch, &key, Some(&pack(ids.iter().copied())))
        })
        .collect()
}

/// A pack's key: its prefix, then partition + next offset + kind + writer id + `/` + `first`.
fn pack_key(prefix: &[u8], batch: &Batch<'_>, kind: u8, first: &[u8]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&batch.partition.to_be_bytes());
    key.extend_from_slice(&batch.next_offset.to_be_bytes());
    key.push(kind);
    key.extend_from_slice(batch.writer.as_bytes());
    key.push(b'/');
    key.extend_from_slice(first);
    key
}

/// Store entries packed into records keyed like [`id_records`]' packs, under `P/` and with the
/// pack's first key in place of its first id: no two packs of any writer share a key, so
/// compaction keeps every one. A pack holds each entry's key, then its value after a byte 1,
/// or a byte 0 alone for a removed key.
fn entry_records(batch: &Batch<'_>, kind: u8, entries: &[(&[u8], Option<&[u8]>)]) -> Vec<OutboxRecord> {
    let mut records = Vec::new();
    let mut rest = entries;
    while let Some(((first, _), _)) = rest.split_first() {
        let mut bytes = 0;
        let taken = rest
            .iter()
            .take_while(|(key, value)| {
                let fits = bytes < PACK_BYTES;
                bytes += 10 + key.len() + value.map_or(0, <[u8]>::len);
                fits
            })
            .count();
        let (pack, tail) = rest.split_at(taken);
        let key = pack_key(PACKED_ENTRIES_PREFIX, batch, kind, first);
        let values: Vec<Vec<u8>> = pack.iter().map(|(_, value)| tagged(*value)).collect();
        let items = pack.iter().zip(&values).flat_map(|((key, _), value)| [*key, value.as_slice()]);
        records.push(record(batch, &key, Some(&self::pack(items))));
        rest = tail;
    }
    records
}

fn tagged(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        None => vec![0],
        Some(value) => [&[1][..], value].concat(),
    }
}

/// The store entries a changelog record stands for: itself, or the seen ids or entries it
/// packs.
pub fn entries(partition: i32, key: &[u8], value: Option<&[u8]>) -> Result<Vec<Entry>, ChangelogError> {
    let corrupt = || ChangelogError::Corrupt { partition, key: String::from_utf8_lossy(key).into_owned() };
    if key.starts_with(PACKED_ENTRIES_PREFIX) {
        return unpack_entries(value).ok_or_else(corrupt);
    }
    if !key.starts_with(PACKED_IDS_PREFIX) {
        return Ok(vec![(key.to_vec(), value.map(<[u8]>::to_vec))]);
    }
    let ids = value.and_then(unpack).ok_or_else(corrupt)?;
    Ok(ids
        .into_iter()
        .map(|id| {
            let mut seen = SEEN_PREFIX.to_vec();
            seen.extend_from_slice(&partition.to_be_bytes());
            seen.extend_from_slice(id);
            (seen, Some(Vec::new()))
        })
        .collect())
}

/// The entries [`entry_records`] packed; `None` when they do not parse.
fn unpack_entries(value: Option<&[u8]>) -> Option<Vec<Entry>> {
    let items = unpack(value?)?;
    if items.len() % 2 != 0 {
        return None;
    }
    items
        .chunks(2)
        .map(|pair| match pair[1].split_first()? {
            (0, []) => Some((pair[0].to_vec(), None)),
            (1, value) => Some((pair[0].to_vec(), Some(value.to_vec()))),
            _ => None,
        })
        .collect()
}

/// Byte strings, each after its length (4 bytes BE).
pub fn pack<'a>(items: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut packed = Vec::new();
    for item in items {
        packed.extend_from_slice(&(item.len() as u32).to_be_bytes());
        packed.extend_from_slice(item);
    }
    packed
}

/// The byte strings [`pack`] packed; `None` when they do not parse.
pub fn unpack(mut packed: &[u8]) -> Option<Vec<&[u8]>> {
    let mut items = Vec::new();
    while !packed.is_empty() {
        let (len, tail) = packed.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        items.push(tail.get(..len)?);
        packed = &tail[len..];
    }
    Some(items)
}

/// A store key and its value, `None` for a removed key.
pub type Entry = (Vec<u8>, Option<Vec<u8>>);

fn record(batch: &Batch<'_>, key: &[u8], value: Option<&[u8]>) -> OutboxRecord {
    let mut headers = vec![
        (THROUGH_HEADER.into(), batch.next_offset.to_string().into_bytes()),
        (FORMAT_HEADER.into(), batch.format.to_string().into_bytes()),
    ];
    if value.is_none() {
        headers.push((TOMBSTONE_HEADER.into(), Vec::new()));
    }
    OutboxRecord {
        topic: batch.topic.clone(),
        key: key.to_vec(),
        value: value.unwrap_or_default().to_vec(),
        headers,
        partition: Some(batch.partition),
    }
}

/// The store key of a partition's offset, which closes each batch on the changelog.
fn offset_key(partition: i32) -> Vec<u8> {
    let mut key = b"o/".to_vec();
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// The `through` of a changelog record's headers, if it has one.
pub fn through_of(headers: &[(crate::store::HeaderName, Vec<u8>)]) -> Option<i64> {
    number_in(headers, THROUGH_HEADER)
}

/// The state format of a changelog record's headers; `None` for a record written before
/// records carried one.
pub fn format_of(headers: &[(crate::store::HeaderName, Vec<u8>)]) -> Option<u32> {
    number_in(headers, FORMAT_HEADER)
}

fn number_in<T: std::str::FromStr>(headers: &[(crate::store::HeaderName, Vec<u8>)], name: &str) -> Option<T> {
    let (_, value) = headers.iter().find(|(key, _)| key == name)?;
    parse(value)
}

fn parse<T: std::str::FromStr>(text: &[u8]) -> Option<T> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// What a changelog record says of itself: the offset its batch brought the partition to and
/// the state format of its writer, each `None` when the record does not carry it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    pub through: Option<i64>,
    pub format: Option<u32>,
}

impl Marks {
    pub fn of(headers: &[(crate::store::HeaderName, Vec<u8>)]) -> Marks {
        Marks { through: through_of(headers), format: format_of(headers) }
    }

    /// The marks of a record read back, from its header values by name (`header` gives a
    /// header's value, `None` where the record has none); a value that does not read is none.
    pub fn read<'a>(header: impl Fn(&str) -> Option<&'a [u8]>) -> Marks {
        Marks {
            through: header(THROUGH_HEADER).and_then(parse),
            format: header(FORMAT_HEADER).and_then(parse),
        }
    }
}

/// What a changelog partition read from its start says, record by record, to a reader of
/// state format `format`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The reader's state format: records of another are skipped.
    pub format: u32,
    /// The value of the last offset record: the state the changelog describes stands there.
    pub next_offset: Option<i64>,
    /// The highest `through` of any record of the reader's format.
    pub max_through: i64,
    pub records: u64,
    /// Records of another state format, or of none, that were skipped.
    pub skipped: u64,
    /// The format of the last offset record when it is not the reader's (`Some(None)`: a
    /// record that carries none): the changelog describes a state this reader cannot take.
    pub other_format: Option<Option<u32>>,
}

/// Whether a changelog can stand in for re-folding a partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It describes the partition's state at `next_offset`: restore from it.
    Restore { next_offset: i64 },
    /// It describes no state: nothing was written to it, or a whole state is being sent.
    Empty,
    /// Its writer stopped inside a batch: some records are past the last offset record.
    Incomplete { next_offset: i64, max_through: i64 },
    /// It is ahead of the last progress marker: its batch's outputs may not all be on their
    /// topics, and only a re-fold from before it can send what is missing.
    AheadOfMarker { next_offset: i64, published_through: i64 },
    /// This instance's own state is at least as far.
    NotNewer { next_offset: i64, own_next: i64 },
    /// Its last offset record was written in another state format (`found`, `None` for a
    /// record that carries none): its records mean other things to this version.
    OtherFormat { found: Option<u32>, expected: u32 },
}

impl Tally {
    /// A tally for a reader of state format `format`.
    pub fn new(format: u32) -> Tally {
        Tally { format, ..Tally::default() }
    }

    /// Notes a record; returns whether it is of the reader's format, so that its entries
    /// count.
    pub fn note(&mut self, partition: i32, key: &[u8], value: Option<&[u8]>, marks: Marks) -> bool {
        self.records += 1;
        let offset_record = key.len() == 6 && key.starts_with(b"o/") && key[2..] == partition.to_be_bytes();
        if marks.format != Some(self.format) {
            self.skipped += 1;
            if offset_record {
                self.next_offset = None;
                self.other_format = Some(marks.format);
            }
            return false;
        }
        if let Some(through) = marks.through {
            self.max_through = self.max_through.max(through);
        }
        if offset_record {
            // a tombstone opens a dump of the whole state: nothing to restore until it ends
            self.next_offset = value.and_then(|v| <[u8; 8]>::try_from(v).ok()).map(i64::from_be_bytes);
            self.other_format = None;
        }
        true
    }

    /// The verdict, given the offset through which the partition's outputs are published (its
    /// last marker's) and the next offset of this instance's own state of it (0 for none).
    pub fn verdict(&self, published_through: i64, own_next: i64) -> Verdict {
        if let Some(found) = self.other_format {
            return Verdict::OtherFormat { found, expected: self.format };
        }
        let Some(next_offset) = self.next_offset else { return Verdict::Empty };
        if self.max_through > next_offset {
            Verdict::Incomplete { next_offset, max_through: self.max_through }
        } else if next_offset - 1 > published_through {
            Verdict::AheadOfMarker { next_offset, published_through }
        } else if next_offset <= own_next {
            Verdict::NotNewer { next_offset, own_next }
        } else {
            Verdict::Restore { next_offset }
        }
    }
}

/// A partition to restore from its changelog: the offset through which its outputs are
/// published (its last marker's) and the next offset of this store's own state of it (0 for
/// none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub partition: i32,
    pub published_through: i64,
    pub own_next: i64,
}

/// Restores each wanted partition from its changelog where that can stand in for re-folding
/// the log (see [`Verdict`]), replacing this store's state of it; one reader for all of them.
/// Where the verdict is another, the store's state of the partition is as it was, or dropped
/// when it had none worth keeping (`own_next` 0).
pub fn restore(
    store: &Store,
    kafka: &KafkaOptions,
    changelog: Source<'_>,
    wanted: &[Wanted],
) -> Result<BTreeMap<i32, Verdict>, ChangelogError> {
    let started = Instant::now();
    let mut verdicts = BTreeMap::new();
    // an instance's own state is dropped only for a changelog that is newer and whole
    let owned: Vec<Wanted> = wanted.iter().filter(|w| w.own_next > 0).copied().collect();
    if !owned.is_empty() {
        let tallies = read(kafka, changelog, &partitions(&owned), |_, _, _| Ok(()))?;
        for w in &owned {
            let verdict = tally(&tallies, w.partition, changelog).verdict(w.published_through, w.own_next);
            if !matches!(verdict, Verdict::Restore { .. }) {
                warn_of_other_format(w.partition, verdict);
                verdicts.insert(w.partition, verdict);
            }
        }
    }
    let restoring: Vec<Wanted> =
        wanted.iter().filter(|w| !verdicts.contains_key(&w.partition)).copied().collect();
    if restoring.is_empty() {
        return Ok(verdicts);
    }
    for w in &restoring {
        store.drop_partition(w.partition)?;
    }
    let tallies = read_into(store, kafka, changelog, &partitions(&restoring))?;
    for w in &restoring {
        let tally = tally(&tallies, w.partition, changelog);
        let verdict = tally.verdict(w.published_through, w.own_next);
        match verdict {
            Verdict::Restore { next_offset } => store.finish_restore(w.partition, next_offset)?,
            _ => store.drop_partition(w.partition)?,
        }
        warn_of_other_format(w.partition, verdict);
        metrics::counter!("omnifold_changelog_records_restored_total")
            .increment(tally.records - tally.skipped);
        tracing::info!(
            partition = w.partition,
            records = tally.records,
            skipped = tally.skipped,
            ?verdict,
            "read the changelog"
        );
        verdicts.insert(w.partition, verdict);
    }
    tracing::info!(
        partitions = restoring.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "restored from the changelog"
    );
    Ok(verdicts)
}

/// A changelog another state format wrote last is worth a warning: every restore of it
/// re-folds the partition until a state of this format is sent whole.
fn warn_of_other_format(partition: i32, verdict: Verdict) {
    if let Verdict::OtherFormat { found, expected } = verdict {
        tracing::warn!(
            partition,
            ?found,
            expected,
            "the changelog was written in another state format, re-folding the partition"
        );
    }
}

/// A changelog topic and the state format its reader stores in.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub format: u32,
}

/// A partition's tally, empty for a partition that had no record.
fn tally(tallies: &BTreeMap<i32, Tally>, partition: i32, changelog: Source<'_>) -> Tally {
    tallies.get(&partition).cloned().unwrap_or_else(|| Tally::new(changelog.format))
}

/// Reads changelog partitions into the store: a writer thread applies full chunks while the
/// reader goes on, since the broker's answers, not this process, bound a restore.
fn read_into(
    store: &Store,
    kafka: &KafkaOptions,
    changelog: Source<'_>,
    partitions: &[i32],
) -> Result<BTreeMap<i32, Tally>, ChangelogError> {
    let (chunks, written) = std::sync::mpsc::sync_channel::<(i32, Vec<Entry>)>(WRITES_IN_FLIGHT);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<(), StoreError> {
            for (partition, chunk) in written {
                store.restore_entries(partition, chunk)?;
            }
            Ok(())
        });
        let mut open: BTreeMap<i32, Vec<Entry>> = BTreeMap::new();
        let read = read(kafka, changelog, partitions, |partition, key, value| {
            let chunk = open.entry(partition).or_default();
            chunk.extend(entries(partition, key, value)?);
            if chunk.len() >= RESTORE_CHUNK {
                // a send fails only when the writer stopped on an error, which join reports
                let _ = chunks.send((partition, std::mem::take(chunk)));
            }
            Ok(())
        });
        for chunk in open {
            let _ = chunks.send(chunk);
        }
        drop(chunks);
        let written = writer.join().expect("the restore's writer thread does not panic");
        let tallies = read?;
        written?;
        Ok(tallies)
    })
}

fn partitions(wanted: &[Wanted]) -> Vec<i32> {
    wanted.iter().map(|w| w.partition).collect()
}

/// Reads changelog partitions from their start to their end (the end-of-partition events: the
/// test broker answers high watermarks short), handing each entry of the reader's format to
/// `each` with its partition, and tallies each partition.
fn read(
    kafka: &KafkaOptions,
    changelog: Source<'_>,
    partitions: &[i32],
    mut each: impl FnMut(i32, &[u8], Option<&[u8]>) -> Result<(), ChangelogError>,
) -> Result<BTreeMap<i32, Tally>, ChangelogError> {
    let consumer: BaseConsumer<Quiet> = kafka
        .assigning_config("omnifold-coordinator-restore")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "104857600")
        .set("max.partition.fetch.bytes", "52428800")
        .set("queued.max.messages.kbytes", "262144")
        .create_with_context(Quiet)?;
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment.add_partition_offset(changelog.topic, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut open: BTreeSet<i32> = partitions.iter().copied().collect();
    let mut tallies: BTreeMap<i32, Tally> = BTreeMap::new();
    let mut records = 0u64;
    let deadline = Instant::now() + READ_DEADLINE;
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(ChangelogError::Unfinished {
                partitions: open.into_iter().collect(),
                seconds: READ_DEADLINE.as_secs(),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let partition = message.partition();
                let header = |name: &str| message.headers()?.iter().find(|h| h.key == name)?.value;
                let marks = Marks::read(header);
                let key = message.key().unwrap_or_default();
                let tally = tallies.entry(partition).or_insert_with(|| Tally::new(changelog.format));
                if tally.note(partition, key, message.payload(), marks) {
                    each(partition, key, message.payload())?;
                }
                records += 1;
                if records.is_multiple_of(LOG_EVERY) {
                    tracing::info!(records, partitions_left = open.len(), "restoring from the changelog");
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            Some(Err(error)) => tracing::debug!(%error, "reading the changelog"),
            None => {}
        }
    }
    Ok(tallies)
}

/// The restore reader's context: the partition's end is what it waits for, not an error.
struct Quiet;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "reading the changelog");
    }
}

impl ConsumerContext for Quiet {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state format of the tests' writers and readers.
    const FORMAT: u32 = 3;

    fn tally_of(records: &[OutboxRecord], partition: i32) -> Tally {
        taken(records, partition).0
    }

    /// The tally of a reader of [`FORMAT`], and the keys of the records it takes.
    fn taken(records: &[OutboxRecord], partition: i32) -> (Tally, Vec<Vec<u8>>) {
        let mut tally = Tally::new(FORMAT);
        let mut keys = Vec::new();
        for record in records {
            let value =
                (!record.headers.iter().any(|(k, _)| k == TOMBSTONE_HEADER)).then_some(&record.value[..]);
            if tally.note(partition, &record.key, value, Marks::of(&record.headers)) {
                keys.push(record.key.clone());
            }
        }
        (tally, keys)
    }

    /// Keyed records under `k/<partition>L` are packed.
    fn lines(key: &[u8]) -> bool {
        key.starts_with(b"k/") && key.get(6) == Some(&b'L')
    }

    static CHANGELOG: std::sync::LazyLock<crate::topics::TopicName> =
        std::sync::LazyLock::new(|| "cl".into());

    fn at(partition: i32, next_offset: i64) -> Batch<'static> {
        Batch { topic: &CHANGELOG, partition, next_offset, writer: "w1", format: FORMAT, packs: lines }
    }

    fn batch(partition: i32, next: i64, keys: &[&[u8]]) -> Vec<OutboxRecord> {
        let writes: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            keys.iter().map(|k| (k.to_vec(), Some(b"v".to_vec()))).collect();
        records(&at(partition, next), writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())))
    }

    #[test]
    fn a_batch_packs_its_ids_ends_with_its_offset_and_sends_removals_as_tombstones() {
        let writes: Vec<(&[u8], Option<&[u8]>)> = vec![
            (b"e/\0\0\0\x02ev-1", Some(b"")),
            (b"e/\0\0\0\x02ev-2", Some(b"")),
            (b"k/\0\0\0\x02a", Some(b"1")),
            (b"k/\0\0\0\x02b", None),
            (b"o/\0\0\0\x02", Some(b"x")),
        ];
        let records = records(&at(2, 40), writes.into_iter());
        assert_eq!(records.len(), 4, "two records, one packing both ids, the offset");
        assert_eq!(records[1].headers.iter().filter(|(k, _)| k == TOMBSTONE_HEADER).count(), 1);
        let ids = entries(2, &records[2].key, Some(&records[2].value)).unwrap();
        assert_eq!(
            ids,
            vec![(b"e/\0\0\0\x02ev-1".to_vec(), Some(vec![])), (b"e/\0\0\0\x02ev-2".to_vec(), Some(vec![]))]
        );
        let last = records.last().unwrap();
        assert_eq!(last.key, b"o/\0\0\0\x02");
        assert_eq!(last.value, 40i64.to_be_bytes());
        assert!(records.iter().all(|r| through_of(&r.headers) == Some(40) && r.partition == Some(2)));
        assert!(records.iter().all(|r| format_of(&r.headers) == Some(FORMAT)), "each names its format");
        assert_eq!(
            entries(2, &records[0].key, Some(b"1")).unwrap(),
            vec![(records[0].key.clone(), Some(b"1".to_vec()))]
        );
    }

    #[test]
    fn selected_keys_are_packed_with_their_removals_and_unpack_in_order() {
        let writes: Vec<(&[u8], Option<&[u8]>)> = vec![
            (b"k/\0\0\0\x02La", Some(b"1")),
            (b"k/\0\0\0\x02Lb", None),
            (b"k/\0\0\0\x02Lc", Some(b"")),
            (b"k/\0\0\0\x02h", Some(b"2")),
        ];
        let records = records(&at(2, 40), writes.clone().into_iter());
        assert_eq!(records.len(), 3, "the unpacked record, one pack of three lines, the offset");
        assert_eq!(records[0].key, b"k/\0\0\0\x02h");
        assert!(records[1].key.starts_with(b"P/\0\0\0\x02"));
        assert_eq!(through_of(&records[1].headers), Some(40));
        let unpacked = entries(2, &records[1].key, Some(&records[1].value)).unwrap();
        let want: Vec<Entry> = writes[..3].iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
        assert_eq!(unpacked, want);
    }

    #[test]
    fn packs_are_bounded_in_bytes_and_keyed_apart() {
        let keys: Vec<Vec<u8>> =
            (0..3_000u32).map(|n| [&b"k/\0\0\0\x01L"[..], &n.to_be_bytes()].concat()).collect();
        let value = vec![7u8; 200];
        let writes = keys.iter().map(|k| (k.as_slice(), Some(value.as_slice())));
        let records = records(&at(1, 9), writes);
        let packs = &records[..records.len() - 1];
        assert!(packs.len() > 1, "600 KB of entries in more than one pack");
        assert!(packs.iter().all(|r| r.value.len() < PACK_BYTES + 300));
        let distinct: BTreeSet<&Vec<u8>> = packs.iter().map(|r| &r.key).collect();
        assert_eq!(distinct.len(), packs.len());
        let unpacked: Vec<Vec<u8>> = packs
            .iter()
            .flat_map(|r| entries(1, &r.key, Some(&r.value)).unwrap())
            .map(|(key, _)| key)
            .collect();
        assert_eq!(unpacked, keys);
    }

    #[test]
    fn packed_entries_that_do_not_parse_are_an_error_naming_the_key() {
        let key = b"P/\0\0\0\x01rest";
        let odd = pack([&b"k/\0\0\0\x01La"[..]].into_iter());
        let bad_tag = pack([&b"k/\0\0\0\x01La"[..], &[2, 1][..]].into_iter());
        for value in [Some(&odd[..]), Some(&bad_tag[..]), None] {
            assert!(matches!(entries(1, key, value), Err(ChangelogError::Corrupt { partition: 1, .. })));
        }
    }

    #[test]
    fn packed_ids_that_do_not_parse_are_an_error_naming_the_key() {
        let key = b"E/\0\0\0\x01rest";
        assert!(matches!(
            entries(1, key, Some(&[0, 0, 0, 9, b'x'])),
            Err(ChangelogError::Corrupt { partition: 1, .. })
        ));
    }

    #[test]
    fn whole_batches_restore_and_a_cut_batch_does_not() {
        let mut log = batch(1, 10, &[b"s/\0\0\0\x01x", b"e/\0\0\0\x01id"]);
        log.extend(batch(1, 20, &[b"s/\0\0\0\x01x"]));
        assert_eq!(tally_of(&log, 1).verdict(19, 0), Verdict::Restore { next_offset: 20 });
        // the writer was killed after the first record of its next batch
        let next = batch(1, 30, &[b"s/\0\0\0\x01y", b"s/\0\0\0\x01z"]);
        log.push(next[0].clone());
        assert_eq!(
            tally_of(&log, 1).verdict(19, 0),
            Verdict::Incomplete { next_offset: 20, max_through: 30 }
        );
    }

    #[test]
    fn a_changelog_past_the_marker_or_behind_the_own_state_is_not_used() {
        let log = batch(0, 50, &[b"s/\0\0\0\0x"]);
        let tally = tally_of(&log, 0);
        assert_eq!(tally.verdict(40, 0), Verdict::AheadOfMarker { next_offset: 50, published_through: 40 });
        assert_eq!(tally.verdict(49, 50), Verdict::NotNewer { next_offset: 50, own_next: 50 });
        assert_eq!(tally.verdict(49, 30), Verdict::Restore { next_offset: 50 });
        assert_eq!(Tally::new(FORMAT).verdict(49, 0), Verdict::Empty);
    }

    #[test]
    fn a_dump_under_way_has_no_state_to_restore_until_its_offset_record() {
        let mut log = batch(1, 100, &[b"s/\0\0\0\x01x"]);
        let tombstone = Batch {
            topic: &CHANGELOG,
            partition: 1,
            next_offset: 60,
            writer: "w2",
            format: FORMAT,
            packs: lines,
        };
        log.push(record(&tombstone, b"o/\0\0\0\x01", None));
        log.extend(batch(1, 60, &[b"s/\0\0\0\x01x"]).into_iter().filter(|r| !r.key.starts_with(b"o/")));
        assert_eq!(
            tally_of(&log, 1).verdict(99, 0),
            Verdict::Empty,
            "the older writer's offset no longer counts"
        );
        log.push(batch(1, 60, &[])[0].clone());
        assert_eq!(
            tally_of(&log, 1).verdict(99, 0),
            Verdict::Incomplete { next_offset: 60, max_through: 100 },
            "the older writer's later records are past the dump's offset"
        );
    }

    #[test]
    fn an_offset_record_of_another_partition_does_not_count() {
        let log = batch(3, 50, &[b"s/\0\0\0\x03x"]);
        assert_eq!(tally_of(&log, 4).next_offset, None);
    }

    #[test]
    fn a_changelog_of_another_format_is_skipped_until_a_whole_state_of_ours_is_sent() {
        let older = Batch { format: 2, ..at(1, 100) };
        let stale: &[u8] = b"k/\0\0\0\x01h-stale";
        let writes = [(stale, Some(&b"v"[..])), (&b"s/\0\0\0\x01x"[..], Some(&b"v"[..]))];
        let mut log = records(&older, writes.into_iter());
        let (tally, keys) = taken(&log, 1);
        assert_eq!(tally.verdict(99, 0), Verdict::OtherFormat { found: Some(2), expected: FORMAT });
        assert_eq!((tally.skipped, keys), (3, Vec::<Vec<u8>>::new()), "no record of it is taken");

        let mut unmarked = log.clone();
        unmarked.iter_mut().for_each(|r| r.headers.retain(|(k, _)| k != FORMAT_HEADER));
        let found = tally_of(&unmarked, 1).verdict(99, 0);
        assert_eq!(found, Verdict::OtherFormat { found: None, expected: FORMAT }, "written before marks");

        // a state of ours sent whole after a re-fold that stands behind the older writer's
        let dump = at(1, 60);
        log.push(record(&dump, b"o/\0\0\0\x01", None));
        assert_eq!(tally_of(&log, 1).verdict(99, 0), Verdict::Empty, "a dump under way");
        log.extend(batch(1, 60, &[b"s/\0\0\0\x01x"]));
        let (tally, keys) = taken(&log, 1);
        assert_eq!(tally.verdict(99, 0), Verdict::Restore { next_offset: 60 });
        assert!(!keys.iter().any(|key| key == stale), "the older format's keys stay out: {keys:?}");
        assert_eq!(tally.max_through, 60, "the older writer's offsets do not make it look cut");
    }
}

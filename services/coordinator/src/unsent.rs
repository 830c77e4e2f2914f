//! The values the fold loop's batches wrote since each partition's changelog was last sent,
//! kept in memory so that a sending takes them from here instead of reading the store.
//!
//! A batch notes the keys it wrote in the store (`c/` keys), so that a crash between two
//! sendings loses none of them; the next sending sends each noted key once, with its value
//! then. Reading those values back from the store, one point read per key, was about a tenth
//! of the fold loop's time end to end. The values are the last each key was written with by a
//! committed batch of this process, so they are what the store holds, as long as nothing else
//! writes the partition's keys: a restore from the changelog or a dropped partition follows
//! a revocation, which forgets the partition here ([`Unsent::forget`]).
//!
//! Unpacking the noted keys again to look each one up here was, in turn, about a tenth of the
//! fold loop's time: [`Kept::batches`] tells which batches' keys are all here, and a sending
//! moves the values out instead ([`Unsent::take`]).
//!
//! Bounded: past [`BUDGET_BYTES`] a batch's values are not kept, and its keys are read from
//! the store when sent, as are the keys noted before a restart.

use omnifold_runtime::changelog;
use omnifold_runtime::store::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};

/// Bytes of keys and values held at most. At 30,000 events/s a one-second changelog
/// interval writes some 30 MB of keys and values; a longer interval or a faster fold falls
/// back to store reads for what does not fit.
pub const BUDGET_BYTES: usize = 48 * 1024 * 1024;

/// What is kept of an input partition's batches since its changelog was last sent.
#[derive(Debug, Default, PartialEq)]
pub struct Kept {
    /// Each key's last written value (`None`: removed), key and value shared with the batch
    /// that wrote them: keeping them copies nothing (copying every value of every batch was
    /// about 2% of the coordinator's CPU). Hashed with Fx, as the fold's tables are: std's
    /// SipHash was an eighth of keeping a batch's writes.
    pub values: FxHashMap<Bytes, Option<Bytes>>,
    /// The accepted event ids written ([`changelog::is_seen_id`]), in the order written. Each
    /// is written once and never changed, so it has no last value to keep: listing them spares
    /// hashing about half of what a batch writes, and sorting them for the sending.
    pub ids: Vec<Bytes>,
    /// The batches, by the offset each brought the partition to, whose writes are all in
    /// `values` (or were written again by a later batch): a sending need not read their noted
    /// keys back. A key a later batch wrote without it being kept was dropped from `values`,
    /// and that batch's noted keys are read back.
    pub batches: FxHashSet<i64>,
}

/// Per input partition, what its batches wrote since its changelog was last sent.
#[derive(Default)]
pub struct Unsent {
    partitions: FxHashMap<i32, Kept>,
    bytes: usize,
}

impl Unsent {
    /// Keeps a committed batch's writes of a partition (the batch that brought it to
    /// `next_offset`), if they fit; all or none of them, so that a key never keeps a value
    /// older than the store's.
    pub fn keep<'a>(
        &mut self,
        partition: i32,
        next_offset: i64,
        writes: impl Iterator<Item = (&'a Bytes, Option<&'a Bytes>)>,
    ) {
        let writes: Vec<_> = writes.collect();
        let size: usize = writes.iter().map(|(key, value)| key.len() + value.map_or(0, |v| v.len())).sum();
        let kept = self.partitions.entry(partition).or_default();
        if self.bytes + size > BUDGET_BYTES {
            // an older value kept of a key this batch writes would be stale: forget it
            for (key, _) in &writes {
                if let Some(old) = kept.values.remove(&key[..]) {
                    self.bytes -= key.len() + old.map_or(0, |v| v.len());
                }
            }
            return;
        }
        for (key, value) in writes {
            self.bytes += key.len() + value.map_or(0, |v| v.len());
            if changelog::is_seen_id(key, value.map(|v| &v[..])) {
                kept.ids.push(key.clone());
            } else if let Some(old) = kept.values.insert(key.clone(), value.cloned()) {
                self.bytes -= key.len() + old.map_or(0, |v| v.len());
            }
        }
        kept.batches.insert(next_offset);
    }

    /// Takes what is kept of a partition, for its sending: the values move out, not copied.
    pub fn take(&mut self, partition: i32) -> Kept {
        let kept = self.partitions.remove(&partition).unwrap_or_default();
        let values: usize =
            kept.values.iter().map(|(key, value)| key.len() + value.as_ref().map_or(0, |v| v.len())).sum();
        self.bytes -= values + kept.ids.iter().map(|id| id.len()).sum::<usize>();
        kept
    }

    /// Forgets a partition's values: sent, or the partition is no longer this instance's.
    pub fn forget(&mut self, partition: i32) {
        self.take(partition);
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(pairs: &[(&'static [u8], Option<&'static [u8]>)]) -> Vec<(Bytes, Option<Bytes>)> {
        pairs.iter().map(|(key, value)| (Bytes::from(*key), value.map(Bytes::from))).collect()
    }

    fn each(writes: &[(Bytes, Option<Bytes>)]) -> impl Iterator<Item = (&Bytes, Option<&Bytes>)> {
        writes.iter().map(|(key, value)| (key, value.as_ref()))
    }

    fn value<'a>(kept: &'a Kept, key: &[u8]) -> Option<Option<&'a [u8]>> {
        kept.values.get(key).map(Option::as_deref)
    }

    #[test]
    fn the_last_write_of_a_key_and_the_batches_kept_whole_are_taken_per_partition() {
        let mut unsent = Unsent::default();
        unsent.keep(1, 10, each(&writes(&[(b"s/a", Some(b"one")), (b"e/x", Some(b""))])));
        unsent.keep(1, 12, each(&writes(&[(b"s/a", Some(b"two")), (b"k/l", None)])));
        unsent.keep(2, 7, each(&writes(&[(b"s/a", Some(b"other"))])));
        // keys and values: s/a two (the one replaced), e/x, k/l removed, and partition 2's
        assert_eq!(unsent.bytes(), 6 + 3 + 3 + 8);
        let one = unsent.take(1);
        assert_eq!(value(&one, b"s/a"), Some(Some(&b"two"[..])));
        assert_eq!(value(&one, b"e/x"), None);
        assert_eq!(one.ids, [Bytes::from(&b"e/x"[..])]);
        assert_eq!(value(&one, b"k/l"), Some(None));
        assert_eq!(value(&one, b"s/b"), None);
        assert_eq!(one.batches, FxHashSet::from_iter([10, 12]));
        assert_eq!(unsent.bytes(), 8);
        assert_eq!(unsent.take(1), Kept::default());
        unsent.forget(2);
        assert_eq!(unsent.bytes(), 0);
        assert_eq!(unsent.take(2), Kept::default());
    }

    #[test]
    fn a_batch_past_the_budget_is_not_kept_and_drops_the_older_values_of_its_keys() {
        let mut unsent = Unsent::default();
        unsent.keep(0, 5, each(&writes(&[(b"s/a", Some(b"old")), (b"s/b", Some(b"b"))])));
        let big: &'static [u8] = Box::leak(vec![0u8; BUDGET_BYTES].into_boxed_slice());
        unsent.keep(0, 6, each(&writes(&[(b"s/a", Some(b"new")), (b"s/big", Some(big))])));
        // the store has "new": the kept "old" must not be used, and batch 6 is read back
        let kept = unsent.take(0);
        assert_eq!(value(&kept, b"s/a"), None);
        assert_eq!(value(&kept, b"s/big"), None);
        assert_eq!(value(&kept, b"s/b"), Some(Some(&b"b"[..])));
        assert_eq!(kept.batches, FxHashSet::from_iter([5]));
        assert_eq!(unsent.bytes(), 0);
    }
}

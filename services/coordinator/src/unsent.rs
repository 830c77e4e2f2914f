//! The values the fold loop's batches wrote since each partition's changelog was last sent,
//! kept in memory so that a sending reads them here instead of from the store.
//!
//! A batch notes the keys it wrote in the store (`c/` keys), so that a crash between two
//! sendings loses none of them; the next sending sends each noted key once, with its value
//! then. Reading those values back from the store, one point read per key, was about a tenth
//! of the fold loop's time end to end. The values are the last each key was written with by a
//! committed batch of this process, so they are what the store holds, as long as nothing else
//! writes the partition's keys: a restore from the changelog or a dropped partition follows
//! a revocation, which forgets the partition here ([`Unsent::forget`]).
//!
//! Bounded: past [`BUDGET_BYTES`] a batch's values are not kept, and its keys are read from
//! the store when sent, as are the keys noted before a restart.

use std::collections::HashMap;

/// Bytes of keys and values held at most. At 30,000 events/s a one-second changelog
/// interval writes some 30 MB of keys and values; a longer interval or a faster fold falls
/// back to store reads for what does not fit.
pub const BUDGET_BYTES: usize = 48 * 1024 * 1024;

/// Per input partition, each key's last written value (`None`: removed).
#[derive(Default)]
pub struct Unsent {
    partitions: HashMap<i32, HashMap<Vec<u8>, Option<Vec<u8>>>>,
    bytes: usize,
}

impl Unsent {
    /// Keeps a committed batch's writes of a partition, if they fit; all or none of them, so
    /// that a key never keeps a value older than the store's.
    pub fn keep<'a>(&mut self, partition: i32, writes: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>) {
        let writes: Vec<_> = writes.collect();
        let size: usize = writes.iter().map(|(key, value)| key.len() + value.map_or(0, <[u8]>::len)).sum();
        let values = self.partitions.entry(partition).or_default();
        if self.bytes + size > BUDGET_BYTES {
            // an older value kept of a key this batch writes would be stale: forget it
            for (key, _) in &writes {
                if let Some(old) = values.remove(*key) {
                    self.bytes -= key.len() + old.map_or(0, |v| v.len());
                }
            }
            return;
        }
        for (key, value) in writes {
            self.bytes += key.len() + value.map_or(0, <[u8]>::len);
            if let Some(old) = values.insert(key.to_vec(), value.map(<[u8]>::to_vec)) {
                self.bytes -= key.len() + old.map_or(0, |v| v.len());
            }
        }
    }

    /// The value kept of a key: `None` when none is kept (read the store), `Some(None)` when
    /// the key was removed.
    pub fn value(&self, partition: i32, key: &[u8]) -> Option<Option<&[u8]>> {
        self.partitions.get(&partition)?.get(key).map(Option::as_deref)
    }

    /// Forgets a partition's values: sent, or the partition is no longer this instance's.
    pub fn forget(&mut self, partition: i32) {
        if let Some(values) = self.partitions.remove(&partition) {
            self.bytes -= values
                .iter()
                .map(|(key, value)| key.len() + value.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(
        pairs: &[(&'static [u8], Option<&'static [u8]>)],
    ) -> impl Iterator<Item = (&'static [u8], Option<&'static [u8]>)> {
        pairs.iter().copied()
    }

    #[test]
    fn the_last_write_of_a_key_is_kept_per_partition_until_forgotten() {
        let mut unsent = Unsent::default();
        unsent.keep(1, writes(&[(b"s/a", Some(b"one")), (b"e/x", Some(b""))]));
        unsent.keep(1, writes(&[(b"s/a", Some(b"two")), (b"k/l", None)]));
        unsent.keep(2, writes(&[(b"s/a", Some(b"other"))]));
        assert_eq!(unsent.value(1, b"s/a"), Some(Some(&b"two"[..])));
        assert_eq!(unsent.value(1, b"e/x"), Some(Some(&b""[..])));
        assert_eq!(unsent.value(1, b"k/l"), Some(None));
        assert_eq!(unsent.value(1, b"s/b"), None);
        assert_eq!(unsent.value(2, b"s/a"), Some(Some(&b"other"[..])));
        // keys and values: s/a two (the one replaced), e/x, k/l removed, and partition 2's
        assert_eq!(unsent.bytes(), 6 + 3 + 3 + 8);
        unsent.forget(1);
        assert_eq!(unsent.value(1, b"s/a"), None);
        assert_eq!(unsent.bytes(), 8);
        unsent.forget(2);
        assert_eq!(unsent.bytes(), 0);
    }

    #[test]
    fn a_batch_past_the_budget_is_not_kept_and_drops_the_older_values_of_its_keys() {
        let mut unsent = Unsent::default();
        unsent.keep(0, writes(&[(b"s/a", Some(b"old"))]));
        let big: &'static [u8] = Box::leak(vec![0u8; BUDGET_BYTES].into_boxed_slice());
        unsent.keep(0, writes(&[(b"s/a", Some(b"new")), (b"s/big", Some(big))]));
        // the store has "new": the kept "old" must not be used
        assert_eq!(unsent.value(0, b"s/a"), None);
        assert_eq!(unsent.value(0, b"s/big"), None);
        assert_eq!(unsent.bytes(), 0);
    }
}

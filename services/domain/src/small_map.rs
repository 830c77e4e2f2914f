//! The map a SKU's state keeps per channel, location, pool or open alert.
//!
//! Those maps hold a handful of entries each (bounded by the contract), and a SKU's state
//! has about a dozen of them. A `BTreeMap` allocates a node of eleven slots for its first
//! entry, so over 100,000 SKUs they were most of the state cache: about 6 KB a SKU for less
//! than 600 bytes of stored state, and a 256 MiB budget held a quarter of the catalogue. A
//! sorted vector holds what it holds and iterates in the same key order. `LiteMap` (ICU4X) is
//! that map; serialized in a binary format it is the same map as a `BTreeMap`'s, so stores
//! written before read the same.
//!
//! A lookup in a map that small scans it: keys are channel, location and pool names, mostly of
//! different lengths, so comparing for equality rejects most of them on their length, where a
//! binary search compares their bytes at every step. Lookups by name were about a fifth of
//! the fold's time, most of it `memcmp`. Names of the same length (`wholesale`, `eu-market`)
//! still went through a call to `memcmp` each; a scan compares them a word at a time, inline
//! ([`ScanEq`]), which took the rest of that fifth down to a few percent.

use std::borrow::Borrow;
use std::ops::{Deref, DerefMut};

use litemap::LiteMap;
use serde::{Deserialize, Serialize};

/// Entries up to which a lookup scans rather than searches.
const SCAN_UP_TO: usize = 16;

/// A map kept as a sorted vector: few entries, read far more often than changed. Everything
/// but its lookups is `LiteMap`'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    transparent,
    bound(
        serialize = "K: Serialize, V: Serialize",
        deserialize = "K: Ord + Deserialize<'de>, V: Deserialize<'de>"
    )
)]
pub struct SmallMap<K, V>(LiteMap<K, V>);

impl<K, V> SmallMap<K, V> {
    pub fn new() -> Self {
        SmallMap(LiteMap::new())
    }
}

/// Equality as a scan compares keys: byte strings a word at a time, inline.
pub trait ScanEq {
    fn scan_eq(&self, other: &Self) -> bool;
}

impl ScanEq for str {
    #[inline]
    fn scan_eq(&self, other: &str) -> bool {
        bytes_eq(self.as_bytes(), other.as_bytes())
    }
}

impl ScanEq for String {
    #[inline]
    fn scan_eq(&self, other: &String) -> bool {
        bytes_eq(self.as_bytes(), other.as_bytes())
    }
}

impl ScanEq for (String, String) {
    #[inline]
    fn scan_eq(&self, other: &Self) -> bool {
        self.0.scan_eq(&other.0) && self.1.scan_eq(&other.1)
    }
}

impl ScanEq for crate::stock::Pool {
    fn scan_eq(&self, other: &Self) -> bool {
        self == other
    }
}

/// `a == b` for short byte strings without a call: two overlapping words cover 8 to 16 bytes,
/// longer ones are compared a word at a time before that.
#[inline]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    let word = |bytes: &[u8], at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let mut at = 0;
    while at + 8 < n {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    word(a, n - 8) == word(b, n - 8)
}

impl<K: Ord, V> SmallMap<K, V> {
    pub fn get<Q: Ord + ScanEq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        let index = self.index_of(key)?;
        self.0.get_indexed(index).map(|(_, value)| value)
    }

    pub fn get_mut<Q: Ord + ScanEq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        // found in place: an index would cost a second walk to reach its value mutably
        if self.0.len() <= SCAN_UP_TO {
            self.0.iter_mut().find(|(k, _)| (*k).borrow().scan_eq(key)).map(|(_, value)| value)
        } else {
            self.0.get_mut(key)
        }
    }

    /// The value under `key`, inserted as its default first if absent: the key is copied only
    /// then, where `entry` takes an owned key at every call.
    pub fn get_or_default_mut<Q>(&mut self, key: &Q) -> &mut V
    where
        K: Borrow<Q>,
        Q: Ord + ScanEq + ToOwned<Owned = K> + ?Sized,
        V: Default,
    {
        if !self.contains_key(key) {
            self.0.insert(key.to_owned(), V::default());
        }
        self.get_mut(key).expect("present or just inserted")
    }

    pub fn contains_key<Q: Ord + ScanEq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.index_of(key).is_some()
    }

    fn index_of<Q: Ord + ScanEq + ?Sized>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
    {
        if self.0.len() <= SCAN_UP_TO {
            self.0.keys().position(|k| k.borrow().scan_eq(key))
        } else {
            self.0.find_index(key).ok()
        }
    }
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::new()
    }
}

impl<K, V> Deref for SmallMap<K, V> {
    type Target = LiteMap<K, V>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<K, V> DerefMut for SmallMap<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SmallMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        SmallMap(LiteMap::from_iter(entries))
    }
}

impl<K, V> IntoIterator for SmallMap<K, V> {
    type Item = (K, V);
    type IntoIter = <LiteMap<K, V> as IntoIterator>::IntoIter;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a SmallMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = <&'a LiteMap<K, V> as IntoIterator>::IntoIter;

    fn into_iter(self) -> Self::IntoIter {
        (&self.0).into_iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_stored_btree_map_reads_back_as_the_same_small_map_and_bytes() {
        let stored: BTreeMap<String, i64> =
            [("web".to_string(), 3), ("amazon".to_string(), -1), ("shopify".to_string(), 7)].into();
        let bytes = postcard::to_allocvec(&stored).unwrap();
        let read: SmallMap<String, i64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(read.iter().collect::<Vec<_>>(), stored.iter().collect::<Vec<_>>(), "key order kept");
        assert_eq!(postcard::to_allocvec(&read).unwrap(), bytes, "written as it was");
    }

    #[test]
    fn a_value_is_made_by_its_default_once_and_found_after() {
        for len in [0, SCAN_UP_TO + 1] {
            let mut map: SmallMap<String, i64> = SmallMap::new();
            for n in 0..len {
                map.insert(format!("k{n:02}"), 1);
            }
            *map.get_or_default_mut("web") += 2;
            *map.get_or_default_mut("web") += 3;
            assert_eq!((map.get("web"), map.len()), (Some(&5), len + 1), "{len} keys before");
            // keys stay in order whatever the size, so a search finds them
            assert!(map.keys().is_sorted());
        }
    }

    #[test]
    fn lookups_find_what_a_search_finds_below_and_above_the_scan_size() {
        for len in 0..=2 * SCAN_UP_TO + 1 {
            // names of one length and of many, as channels and alert keys are
            let keys: Vec<String> =
                (0..len).map(|n| if n % 2 == 0 { format!("k{n:03}") } else { "x".repeat(n) }).collect();
            let mut map: SmallMap<String, usize> = keys.iter().cloned().zip(0..).collect();
            let searched: LiteMap<String, usize> = keys.iter().cloned().zip(0..).collect();
            for probe in keys.iter().map(String::as_str).chain(["", "k", "k999", "xx_"]) {
                assert_eq!(map.get(probe), searched.get(probe), "{probe} in {len}");
                assert_eq!(map.contains_key(probe), searched.contains_key(probe), "{probe} in {len}");
                assert_eq!(map.get_mut(probe).copied(), searched.get(probe).copied(), "{probe} in {len}");
            }
            if let Some(key) = keys.last() {
                *map.get_mut(key.as_str()).unwrap() += 100;
                assert_eq!(map.get(key.as_str()), Some(&(len - 1 + 100)));
            }
        }
    }

    #[test]
    fn words_compare_as_bytes_do_at_every_length() {
        let base: Vec<u8> = (0..40u8).map(|n| b'a' + n % 26).collect();
        for len in 0..base.len() {
            let a = &base[..len];
            assert!(bytes_eq(a, a), "{len}");
            assert!(!bytes_eq(a, &base[..len + 1]), "{len} against one more");
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 0x20;
                assert!(!bytes_eq(a, &b), "{len} bytes differing at {at}");
            }
        }
        let key = ("amazon".to_string(), "promo-1".to_string());
        assert!(key.scan_eq(&key.clone()));
        assert!(!key.scan_eq(&("amazon".to_string(), "promo-2".to_string())));
    }

    #[test]
    fn entries_come_in_key_order_whatever_order_they_were_put_in() {
        let mut map = SmallMap::new();
        for (key, value) in [("b", 2), ("c", 3), ("a", 1)] {
            map.insert(key.to_string(), value);
        }
        assert_eq!(map.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(map.get("b"), Some(&2));
    }
}

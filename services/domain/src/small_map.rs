//! The map a SKU's state keeps per channel, location, pool or open alert.
//!
//! Those maps hold a handful of entries each (bounded by the contract), and a SKU's state
//! has about a dozen of them. A `BTreeMap` allocates a node of eleven slots for its first
//! entry, so over 100,000 SKUs they were most of the state cache: about 6 KB a SKU for less
//! than 600 bytes of stored state, and a 256 MiB budget held a quarter of the catalogue. A
//! sorted vector holds what it holds, iterates in the same key order and finds a key by
//! binary search. `LiteMap` (ICU4X) is that map; serialized in a binary format it is the
//! same map as a `BTreeMap`'s, so stores written before read the same.

/// A map kept as a sorted vector: few entries, read far more often than changed.
pub type SmallMap<K, V> = litemap::LiteMap<K, V>;

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
    fn entries_come_in_key_order_whatever_order_they_were_put_in() {
        let mut map = SmallMap::new();
        for (key, value) in [("b", 2), ("c", 3), ("a", 1)] {
            map.insert(key.to_string(), value);
        }
        assert_eq!(map.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(map.get("b"), Some(&2));
    }
}

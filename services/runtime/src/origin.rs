//! Where an output came from, and how far its writer had delivered: what lets a new owner of
//! an input partition tell which outputs its predecessor already published.
//!
//! - [`ORIGIN_HEADER`] on every output of a fold: the input partition and offset of the event
//!   that caused it and the record's index among that event's records. The fold is
//!   deterministic, so any instance that folds the same event writes the same origins.
//! - [`BARRIER_HEADER`] on an outbox record (a progress marker) makes the sender deliver
//!   everything before it first, then it, and only then what follows; the sender stamps it
//!   with [`TAILS_HEADER`]: the offset of the last record it had delivered to every partition
//!   it may write (or a point at or below the partition's end, where it had delivered
//!   nothing). Whatever it delivers after the barrier lands above those offsets.

use std::fmt;
use std::str::FromStr;

pub const ORIGIN_HEADER: &str = "omnifold-origin";
pub const BARRIER_HEADER: &str = "omnifold-barrier";
pub const TAILS_HEADER: &str = "omnifold-tails";

/// The origin of an output record: `<partition>/<offset>/<index>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub partition: i32,
    pub offset: i64,
    pub index: u32,
}

impl Origin {
    /// The header value, its [`fmt::Display`] form as bytes, written without the formatting
    /// machinery: every output record of a fold carries one.
    pub fn header_value(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(32);
        value.extend_from_slice(itoa::Buffer::new().format(self.partition).as_bytes());
        value.push(b'/');
        value.extend_from_slice(itoa::Buffer::new().format(self.offset).as_bytes());
        value.push(b'/');
        value.extend_from_slice(itoa::Buffer::new().format(self.index).as_bytes());
        value
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.partition, self.offset, self.index)
    }
}

impl FromStr for Origin {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split('/');
        let mut next = |what: &str| parts.next().ok_or_else(|| format!("origin {text:?} has no {what}"));
        let (partition, offset, index) = (next("partition")?, next("offset")?, next("index")?);
        let bad = |what: &str| format!("origin {text:?}: bad {what}");
        Ok(Origin {
            partition: partition.parse().map_err(|_| bad("partition"))?,
            offset: offset.parse().map_err(|_| bad("offset"))?,
            index: index.parse().map_err(|_| bad("index"))?,
        })
    }
}

/// The last delivered offset per (topic, partition), as the tails header writes it: one
/// `<topic> <partition> <offset>` line each.
pub fn encode_tails<'a>(tails: impl IntoIterator<Item = (&'a (String, i32), &'a i64)>) -> Vec<u8> {
    let mut text = String::new();
    for ((topic, partition), offset) in tails {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    text.into_bytes()
}

/// The tails of a [`TAILS_HEADER`]; lines that do not read are skipped.
pub fn decode_tails(bytes: &[u8]) -> Vec<(String, i32, i64)> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let topic = fields.next()?.to_string();
            Some((topic, fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_header_value_is_the_display_form() {
        for origin in [
            Origin { partition: 0, offset: 0, index: 0 },
            Origin { partition: 11, offset: 9_876_543_210, index: 3 },
            Origin { partition: -1, offset: -1, index: u32::MAX },
        ] {
            assert_eq!(origin.header_value(), origin.to_string().into_bytes());
        }
    }

    #[test]
    fn origins_and_tails_read_back() {
        let origin = Origin { partition: 3, offset: 1_234, index: 2 };
        assert_eq!(origin.to_string().parse::<Origin>(), Ok(origin));
        assert!("3/x/1".parse::<Origin>().is_err());
        let tails = BTreeMap::from([(("a.v1".to_string(), 0), 7), (("b.v1".to_string(), 5), -1)]);
        assert_eq!(
            decode_tails(&encode_tails(&tails)),
            [("a.v1".to_string(), 0, 7), ("b.v1".to_string(), 5, -1)]
        );
    }
}

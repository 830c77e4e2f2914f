//! Dead letters (CONTRACT.md section 1): the original key and bytes, with the reason and the
//! source position in headers. They go out through the outbox like every other output.

use crate::store::OutboxRecord;

pub const ERROR_HEADER: &str = "omnifold-error";
pub const SOURCE_HEADER: &str = "omnifold-source";

/// Where a refused record came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// The dead-letter record of a refused input.
pub fn dead_letter(topic: &str, key: &[u8], value: &[u8], reason: &str, source: Source<'_>) -> OutboxRecord {
    metrics::counter!("omnifold_deadletters_total", "topic" => source.topic.to_string()).increment(1);
    OutboxRecord {
        topic: topic.into(),
        key: key.to_vec(),
        value: value.to_vec(),
        headers: vec![
            (ERROR_HEADER.into(), reason.as_bytes().to_vec()),
            (
                SOURCE_HEADER.into(),
                format!("{}/{}/{}", source.topic, source.partition, source.offset).into_bytes(),
            ),
        ],
        partition: None,
    }
}

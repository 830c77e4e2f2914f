//! Reading the snapshots back from `omnifold.snapshots.v1`: the last revision of every key.
//! The merge stage uses it on assignment; `show`, `page` and `serve` read the report from it,
//! so they need no access to a reporter's store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use omnifold_proto::ContributionSnapshot;
use omnifold_runtime::{KafkaError, KafkaOptions};
use prost::Message as _;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);
/// A whole read gives up after this long.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The last revision of every key, by key (`<iso-week>/<channel>`). Blocking.
pub fn latest_snapshots(
    kafka: &KafkaOptions,
    topic: &str,
) -> Result<BTreeMap<String, ContributionSnapshot>, KafkaError> {
    let mut latest: BTreeMap<String, ContributionSnapshot> = BTreeMap::new();
    read_to_end(kafka, topic, |value| {
        let Ok(snapshot) = ContributionSnapshot::decode(value) else {
            tracing::warn!(topic, "skipped an undecodable snapshot");
            return;
        };
        let key = format!("{}/{}", snapshot.week, snapshot.channel);
        // a key lives in one partition, in order: later records win, and so does a higher revision
        if latest.get(&key).is_none_or(|known| snapshot.revision >= known.revision) {
            latest.insert(key, snapshot);
        }
    })?;
    Ok(latest)
}

/// The last published revision of every key. Blocking.
pub fn published_revisions(kafka: &KafkaOptions, topic: &str) -> Result<HashMap<String, u32>, KafkaError> {
    Ok(latest_snapshots(kafka, topic)?.into_iter().map(|(key, s)| (key, s.revision)).collect())
}

/// Calls `each` with every record value of `topic`, up to the end of each partition as the
/// fetch responses report it (partition EOF). `ListOffsets` is not used: nisshi 0.7.0 answers
/// it short of the end (see `consumer.rs`).
fn read_to_end(kafka: &KafkaOptions, topic: &str, mut each: impl FnMut(&[u8])) -> Result<(), KafkaError> {
    let consumer: BaseConsumer<QuietEof> = kafka
        .client_config()
        .set("group.id", "omnifold-reporter-readback")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(QuietEof)?;
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(KafkaError::MissingTopic(topic.to_string()));
    }
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut open: BTreeSet<i32> = partitions.into_iter().collect();
    let deadline = Instant::now() + READ_TIMEOUT;
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(KafkaError::Client(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => each(message.payload().unwrap_or_default()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            Some(Err(error)) => return Err(error.into()),
            None => {}
        }
    }
    Ok(())
}

/// A client context that does not log the end of a partition as an error: here it is the
/// expected way a read ends.
struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::KafkaError::{Global, PartitionEOF};
        use rdkafka::types::RDKafkaErrorCode;
        if !matches!(error, PartitionEOF(_) | Global(RDKafkaErrorCode::PartitionEOF)) {
            tracing::error!(%error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for QuietEof {}

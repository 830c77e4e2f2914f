//! `omnifold-coordinator status`: which member of the coordinators' group owns which events
//! partition, how far behind each partition is, and how far its last owner published. Read
//! from the group's metadata, the group's committed offsets (written for lag monitoring) and
//! the ledger's last progress markers; nothing is asked of the running instances.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use omnifold_runtime::{KafkaOptions, Topics};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use crate::group::last_markers;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One events partition as the group sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    pub partition: i32,
    /// The owning member's client id (`omnifold-coordinator/<instance id>`), if any.
    pub owner: Option<String>,
    pub committed: Option<i64>,
    pub high: i64,
    /// The offset the ledger's last progress marker says was folded and published.
    pub published_through: Option<i64>,
}

/// The group's members and every events partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// Each member's client id (`omnifold-coordinator/<instance id>`) and its partitions.
    pub members: Vec<(String, Vec<i32>)>,
    pub partitions: Vec<PartitionStatus>,
}

/// The status of the group and of every events partition.
pub fn status(kafka: &KafkaOptions, topics: &Topics, group: &str) -> Result<GroupStatus, KafkaError> {
    let consumer: BaseConsumer = kafka.assigning_config(group).create()?;
    let members = members(&consumer, group, &topics.events)?;
    let owners: BTreeMap<i32, String> = members
        .iter()
        .flat_map(|(member, partitions)| partitions.iter().map(move |p| (*p, member.clone())))
        .collect();
    let metadata = consumer.fetch_metadata(Some(&topics.events), TIMEOUT)?;
    let partitions: Vec<i32> =
        metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    let mut list = TopicPartitionList::new();
    for partition in &partitions {
        list.add_partition(&topics.events, *partition);
    }
    let committed = consumer.committed_offsets(list, TIMEOUT)?;
    let markers = last_markers(kafka, &topics.ledger, &partitions)?;
    let mut statuses = Vec::new();
    for partition in partitions {
        let (_, high) = consumer.fetch_watermarks(&topics.events, partition, TIMEOUT)?;
        let committed = committed
            .find_partition(&topics.events, partition)
            .and_then(|element| element.offset().to_raw())
            .filter(|offset| *offset >= 0);
        let published_through = markers.get(&partition).map(|m| m.through);
        let owner = owners.get(&partition).cloned();
        statuses.push(PartitionStatus { partition, owner, committed, high, published_through });
    }
    Ok(GroupStatus { members, partitions: statuses })
}

/// The group's members by client id, each with the partitions of `topic` it owns (empty
/// where the broker does not describe assignments).
fn members(consumer: &BaseConsumer, group: &str, topic: &str) -> Result<Vec<(String, Vec<i32>)>, KafkaError> {
    let list = consumer.fetch_group_list(Some(group), TIMEOUT)?;
    let mut members = Vec::new();
    for member in list.groups().iter().filter(|g| g.name() == group).flat_map(|g| g.members()) {
        let partitions = member
            .assignment()
            .map(assigned_partitions)
            .unwrap_or_default()
            .into_iter()
            .filter(|(assigned_topic, _)| assigned_topic == topic)
            .map(|(_, partition)| partition)
            .collect();
        members.push((member.client_id().to_string(), partitions));
    }
    members.sort();
    Ok(members)
}

/// The (topic, partition) pairs of a consumer protocol assignment: version (int16), then
/// topics (int32 count; each a string with an int16 length and int32 partitions).
fn assigned_partitions(bytes: &[u8]) -> Vec<(String, i32)> {
    let mut reader = Reader { bytes, at: 0 };
    let mut assigned = Vec::new();
    let parse = |reader: &mut Reader<'_>, assigned: &mut Vec<(String, i32)>| -> Option<()> {
        reader.take(2)?;
        for _ in 0..reader.i32()? {
            let length = usize::try_from(reader.i16()?).ok()?;
            let topic = String::from_utf8_lossy(reader.take(length)?).into_owned();
            for _ in 0..reader.i32()? {
                assigned.push((topic.clone(), reader.i32()?));
            }
        }
        Some(())
    };
    let _ = parse(&mut reader, &mut assigned);
    assigned
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

/// The status as a table.
pub fn render(status: &GroupStatus) -> String {
    let mut out = String::new();
    for (member, partitions) in &status.members {
        let _ = writeln!(out, "member {member}: partitions {partitions:?}");
    }
    out.push_str("partition  owner                                  committed       high        lag  published through\n");
    for s in &status.partitions {
        let show = |value: Option<i64>| value.map_or("-".to_string(), |v| v.to_string());
        let lag = s.committed.map_or("-".to_string(), |c| (s.high - c).max(0).to_string());
        let _ = writeln!(
            out,
            "{:>9}  {:<36}  {:>9}  {:>9}  {:>9}  {:>17}",
            s.partition,
            s.owner.as_deref().unwrap_or("(unowned)"),
            show(s.committed),
            s.high,
            lag,
            show(s.published_through)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_consumer_protocol_assignment() {
        let mut bytes = vec![0, 1, 0, 0, 0, 1];
        bytes.extend_from_slice(&(4i16).to_be_bytes());
        bytes.extend_from_slice(b"ev.1");
        bytes.extend_from_slice(&2i32.to_be_bytes());
        bytes.extend_from_slice(&0i32.to_be_bytes());
        bytes.extend_from_slice(&5i32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(assigned_partitions(&bytes), [("ev.1".to_string(), 0), ("ev.1".to_string(), 5)]);
        assert!(assigned_partitions(&[0, 1, 0]).is_empty(), "a short assignment reads as nothing");
    }
}

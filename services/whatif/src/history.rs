//! The history to replay: the events topic read from its start, or an NDJSON file of events.
//!
//! The topic is read with a plain consumer that is assigned every partition by hand from the
//! beginning, never commits (`enable.auto.commit=false`, nothing stored) and stops at each
//! partition's end (librdkafka's end-of-partition event, never a watermark: nisshi answers
//! those short). It writes nothing anywhere. Each event keeps its partition, because the
//! coordinator remembers accepted ids per events partition (CONTRACT.md section 2.6).

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use omnifold_proto::Event;
use omnifold_proto::json::event_from_json;
use omnifold_runtime::KafkaOptions;
use omnifold_runtime::partitioner::partition_for;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap as HashMap;

/// Events in the order they are folded, each with its events partition.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every event, protobuf-encoded back to back: a fifth of the memory the decoded events
    /// took; each replay decodes one event at a time, at a small fraction of the fold's cost.
    encoded: Vec<u8>,
    /// Where each event ends in `encoded`.
    ends: Vec<usize>,
    /// Each event's `occurred_at_ms`, for the scans that read nothing else.
    times: Vec<i64>,
    pub partitions: Vec<i32>,
    pub partition_count: i32,
    /// Records or lines that are not events: the coordinator dead-letters them, so they
    /// change nothing; counted here, with the first reason.
    pub unreadable: usize,
    pub first_unreadable: Option<String>,
    /// Where it came from, for the answer.
    pub source: String,
}

/// A history that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} does not exist on the broker")]
    NoTopic(String),
    #[error("gave up reading {topic} after {seconds} s: partitions {missing:?} never reported their end")]
    Timeout { topic: String, seconds: u64, missing: Vec<i32> },
}

impl History {
    /// Events from an NDJSON file in the contract's JSON form (CONTRACT.md section 2.4: what
    /// `omnifold-connector ndjson` reads and `omnifold-workload` writes), partitioned by key
    /// as the connector would publish them to a topic of `partitions` partitions.
    pub fn from_ndjson(path: &Path, partitions: i32) -> Result<History, HistoryError> {
        Self::from_ndjson_files(&[path.to_path_buf()], partitions)
    }

    /// Several NDJSON files, one after the other.
    pub fn from_ndjson_files(paths: &[std::path::PathBuf], partitions: i32) -> Result<History, HistoryError> {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let mut history = History {
            partition_count: partitions,
            source: format!("file {}", names.join(" + ")),
            ..History::default()
        };
        for path in paths {
            history.read_ndjson(path)?;
        }
        Ok(history)
    }

    fn read_ndjson(&mut self, path: &Path) -> Result<(), HistoryError> {
        let read_error = |source| HistoryError::Read { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let history = self;
        for (n, line) in std::io::BufReader::with_capacity(1 << 20, file).lines().enumerate() {
            let line = line.map_err(read_error)?;
            if line.trim().is_empty() {
                continue;
            }
            match event_from_json(&line) {
                Ok(event) => history.push(event, None),
                Err(error) => history.unreadable(format!("{}:{}: {error}", path.display(), n + 1)),
            }
        }
        Ok(())
    }

    /// Events held in memory (tests, the benchmark), partitioned by key.
    pub fn from_events(events: Vec<Event>, partitions: i32) -> History {
        let mut history =
            History { partition_count: partitions, source: "events in memory".into(), ..History::default() };
        history.ends.reserve(events.len());
        for event in events {
            history.push(event, None);
        }
        history
    }

    /// Every record of `topic` from the start of each partition to its end.
    pub fn from_topic(kafka: &KafkaOptions, topic: &str, timeout: Duration) -> Result<History, HistoryError> {
        // librdkafka refuses a manual assign without a group id; nothing is ever committed
        let consumer: BaseConsumer = kafka
            .assigning_config("omnifold-what-if")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
            .filter(|n| *n > 0)
            .ok_or_else(|| HistoryError::NoTopic(topic.to_string()))?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..count {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let mut history = History {
            partition_count: count,
            source: format!("topic {topic} ({count} partitions)"),
            ..History::default()
        };
        let mut open: BTreeSet<i32> = (0..count).collect();
        let started = Instant::now();
        while !open.is_empty() {
            if started.elapsed() > timeout {
                let missing = open.into_iter().collect();
                return Err(HistoryError::Timeout {
                    topic: topic.into(),
                    seconds: timeout.as_secs(),
                    missing,
                });
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    open.remove(&partition);
                }
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(message)) => {
                    let (partition, offset) = (message.partition(), message.offset());
                    let payload = message.payload().unwrap_or_default();
                    match Event::decode(payload) {
                        Ok(event) => history.push_encoded(payload, event.occurred_at_ms, partition),
                        Err(error) => history.unreadable(format!("{topic}/{partition}/{offset}: {error}")),
                    }
                }
            }
        }
        Ok(history)
    }

    pub(crate) fn push(&mut self, event: Event, partition: Option<i32>) {
        let partition = partition
            .unwrap_or_else(|| partition_for(event.partition_key().as_bytes(), self.partition_count));
        event.encode(&mut self.encoded).expect("a vec takes any length");
        self.ends.push(self.encoded.len());
        self.times.push(event.occurred_at_ms);
        self.partitions.push(partition);
    }

    fn push_encoded(&mut self, payload: &[u8], occurred_at_ms: i64, partition: i32) {
        self.encoded.extend_from_slice(payload);
        self.ends.push(self.encoded.len());
        self.times.push(occurred_at_ms);
        self.partitions.push(partition);
    }

    /// The event at `index`.
    pub fn event(&self, index: usize) -> Event {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        Event::decode(&self.encoded[start..self.ends[index]]).expect("held as encoded by push")
    }

    /// Every event in order, decoded one at a time.
    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        (0..self.len()).map(|index| self.event(index))
    }

    /// Every event in order, decoded `size` at a time, to be shared by the threads that
    /// replay them.
    pub fn chunks(&self, size: usize) -> impl Iterator<Item = Arc<Vec<Event>>> + '_ {
        (0..self.len()).step_by(size.max(1)).map(move |start| {
            let end = (start + size).min(self.len());
            Arc::new((start..end).map(|index| self.event(index)).collect())
        })
    }

    /// The latest event time, if any.
    pub fn last_ms(&self) -> Option<i64> {
        self.times.iter().copied().max()
    }

    /// Whether some event happened at or after `at_ms`.
    pub fn reaches(&self, at_ms: i64) -> bool {
        self.times.iter().any(|t| *t >= at_ms)
    }

    fn unreadable(&mut self, reason: String) {
        self.unreadable += 1;
        self.first_unreadable.get_or_insert(reason);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The earliest event time, if any.
    pub fn start_ms(&self) -> Option<i64> {
        self.times.iter().copied().filter(|t| *t > 0).min()
    }

    /// Every SKU named, in order of first appearance, and its index: decisions are
    /// compared by index across scenarios.
    pub fn sku_index(&self) -> SkuIndex {
        let mut index = SkuIndex::default();
        for event in self.events() {
            if let Some(sku) = event.body.as_ref().and_then(|b| b.sku()) {
                index.intern(sku);
            }
        }
        index
    }
}

/// SKU names by index.
#[derive(Debug, Clone, Default)]
pub struct SkuIndex {
    pub names: Vec<String>,
    pub ids: HashMap<String, u32>,
}

impl SkuIndex {
    pub fn intern(&mut self, sku: &str) -> u32 {
        if let Some(id) = self.ids.get(sku) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(sku.to_string());
        self.ids.insert(sku.to_string(), id);
        id
    }

    pub fn get(&self, sku: &str) -> Option<u32> {
        self.ids.get(sku).copied()
    }
}

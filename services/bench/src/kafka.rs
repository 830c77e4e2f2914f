//! The benchmark's own Kafka clients: the loading producer (the connector's settings), the
//! baseline consumers, and the reader that timestamps outputs as they arrive.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use omnifold_proto::{Alert, ChannelAvailability, Event};
use omnifold_runtime::KafkaOptions;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// One event as a record of the events topic.
pub struct Encoded {
    pub key: String,
    pub value: Vec<u8>,
    pub event_id: String,
}

impl Encoded {
    pub fn of(event: &Event) -> Encoded {
        Encoded {
            key: event.partition_key().to_string(),
            value: event.encode_to_vec(),
            event_id: event.event_id.clone(),
        }
    }
}

/// Microseconds since the Unix epoch by the wall clock.
pub fn wall_clock_us() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}

/// The producer of the connector's publish path (`omnifold_connector::publish::Publisher`):
/// idempotent, `acks=all`, `linger.ms=5`, Java's murmur2 partitioner.
pub fn producer(kafka: &KafkaOptions) -> Result<FutureProducer> {
    Ok(kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "60000")
        .create()?)
}

/// What producing a set of records did.
pub struct Produced {
    pub seconds: f64,
    /// The offset after the last record delivered to each partition.
    pub ends: BTreeMap<i32, i64>,
    /// Wall clock (µs) just before each record was handed to the producer, in input order.
    pub send_us: Vec<i64>,
}

/// Deliveries allowed in flight before the oldest is awaited (as the connector's publisher).
const MAX_IN_FLIGHT: usize = 50_000;

/// Produces `records` to `topic` and waits until every one is acknowledged. With `rate`,
/// record i is sent at `i / rate` seconds after the start (an open-loop fixed offered rate);
/// without, as fast as the producer takes them.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: &[Encoded],
    rate: Option<f64>,
    timeout: Duration,
) -> Result<Produced> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut in_flight: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut ends = BTreeMap::new();
    let mut send_us = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() + Duration::from_micros(200) {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        loop {
            if Instant::now() > deadline {
                bail!("producing to {topic} took longer than {timeout:?}");
            }
            let sent_at = wall_clock_us();
            let future = FutureRecord::to(topic).key(&record.key).payload(&record.value);
            match producer.send_result(future) {
                Ok(delivery) => {
                    send_us.push(sent_at);
                    in_flight.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if !await_oldest(&mut in_flight, &mut ends).await? {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Err((error, _)) => return Err(anyhow!("produce to {topic}: {error}")),
            }
        }
        while in_flight.len() > MAX_IN_FLIGHT {
            await_oldest(&mut in_flight, &mut ends).await?;
        }
    }
    while await_oldest(&mut in_flight, &mut ends).await? {
        if Instant::now() > deadline {
            bail!("deliveries to {topic} took longer than {timeout:?}");
        }
    }
    Ok(Produced { seconds: started.elapsed().as_secs_f64(), ends, send_us })
}

/// Awaits the oldest delivery; false when none is in flight.
async fn await_oldest(
    in_flight: &mut VecDeque<DeliveryFuture>,
    ends: &mut BTreeMap<i32, i64>,
) -> Result<bool> {
    let Some(delivery) = in_flight.pop_front() else { return Ok(false) };
    match delivery.await {
        Ok(Ok(delivery)) => {
            let end = ends.entry(delivery.partition).or_insert(0);
            *end = (*end).max(delivery.offset + 1);
            Ok(true)
        }
        Ok(Err((error, _))) => Err(anyhow!("delivery failed: {error}")),
        Err(_) => Err(anyhow!("delivery cancelled")),
    }
}

/// A baseline reader's result.
pub struct Drained {
    pub records: usize,
    pub bytes: usize,
    pub seconds: f64,
    pub decode_errors: usize,
}

/// Reads every partition of `topic` from its beginning with the coordinator's consumer
/// settings (`KafkaOptions::assigning_consumer`, one `poll` per record) until `total` records
/// were read, discarding them, or decoding each as an `omnifold.v1.Event` with `decode`.
pub fn drain(
    kafka: &KafkaOptions,
    topic: &str,
    partitions: i32,
    total: usize,
    decode: bool,
    timeout: Duration,
) -> Result<Drained> {
    let consumer = kafka.assigning_consumer("omnifold-bench-baseline")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    let started = Instant::now();
    consumer.assign(&assignment)?;
    let (mut records, mut bytes, mut decode_errors) = (0, 0, 0);
    while records < total {
        if started.elapsed() > timeout {
            bail!("read {records} of {total} records of {topic} in {timeout:?}");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                records += 1;
                let payload = message.payload().unwrap_or_default();
                bytes += payload.len();
                if decode {
                    match Event::decode(payload) {
                        Ok(event) => drop(std::hint::black_box(event)),
                        Err(_) => decode_errors += 1,
                    }
                }
            }
            Some(Err(error)) => bail!("consume {topic}: {error}"),
            None => {}
        }
    }
    Ok(Drained { records, bytes, seconds: started.elapsed().as_secs_f64(), decode_errors })
}

/// Waits until the group's committed offsets reach `ends` on `topic`; false on timeout.
pub fn wait_committed(
    kafka: &KafkaOptions,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<bool> {
    let consumer: BaseConsumer = kafka.client_config().set("group.id", group).create()?;
    let mut wanted = TopicPartitionList::new();
    for partition in ends.keys() {
        wanted.add_partition(topic, *partition);
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(committed) = consumer.committed_offsets(wanted.clone(), Duration::from_secs(5)) {
            let reached = ends.iter().all(|(partition, end)| {
                matches!(committed.find_partition(topic, *partition).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *end)
            });
            if reached {
                return Ok(true);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(false)
}

/// One sample of the coordinator's progress through the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Seconds since sampling started.
    pub at_s: f64,
    /// The sum of the group's committed offsets.
    pub committed: i64,
    /// The coordinator's resident set then (`VmRSS`), when its process is known.
    pub rss_kb: Option<u64>,
}

/// Samples the sum of a group's committed offsets on `topic` every 100 ms until `stop` is set,
/// and the resident set of process `watched` with each. The coordinator commits its group
/// offsets after every batch (for lag monitoring), so this is its progress through the log.
pub fn sample_committed(
    kafka: &KafkaOptions,
    (group, topic, partitions): (&str, &str, i32),
    watched: Option<u32>,
    stop: &AtomicBool,
) -> Result<Vec<Progress>> {
    let consumer: BaseConsumer = kafka.client_config().set("group.id", group).create()?;
    let mut wanted = TopicPartitionList::new();
    for partition in 0..partitions {
        wanted.add_partition(topic, partition);
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(committed) = consumer.committed_offsets(wanted.clone(), Duration::from_secs(5)) {
            let committed = committed
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .sum();
            let rss_kb = watched.and_then(|pid| crate::procfs::status_kb(Some(pid), "VmRSS"));
            samples.push(Progress { at_s: started.elapsed().as_secs_f64(), committed, rss_kb });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(samples)
}

/// The index of the first sample at or past each tenth of `total` events, after the first
/// sample's; `None` when the samples never reach the end.
fn tenth_ends(samples: &[Progress], total: usize) -> Option<Vec<usize>> {
    let tenth = total as f64 / 10.0;
    (1..=10).map(|k| samples.iter().position(|s| s.committed as f64 >= tenth * k as f64)).collect()
}

/// The rate over each tenth of `total` events from progress samples: the time of the first
/// sample at or past each tenth, differenced. Empty when the samples never reach the end.
pub fn tenths(samples: &[Progress], total: usize) -> Vec<f64> {
    let tenth = total as f64 / 10.0;
    let Some(ends) = tenth_ends(samples, total) else { return Vec::new() };
    let mut times = vec![samples.first().map_or(0.0, |s| s.at_s)];
    times.extend(ends.iter().map(|end| samples[*end].at_s));
    times.windows(2).map(|w| tenth / (w[1] - w[0]).max(1e-3)).collect()
}

/// The largest resident set sampled while each tenth of `total` events was folded, in MB
/// (from the sample that ended the tenth before to the one that ended this one). Empty when the
/// samples never reach the end or hold no resident set.
pub fn tenths_peak_rss_mb(samples: &[Progress], total: usize) -> Vec<f64> {
    let Some(ends) = tenth_ends(samples, total) else { return Vec::new() };
    let mut start = 0;
    let mut peaks = Vec::new();
    for end in ends {
        let peak = samples[start..=end.max(start)].iter().filter_map(|s| s.rss_kb).max();
        let Some(peak) = peak else { return Vec::new() };
        peaks.push(peak as f64 / 1024.0);
        start = end;
    }
    peaks
}

/// Records in `topics` by their partitions' watermarks (a lower bound on nisshi, whose high
/// watermark is the base offset of a partition's last batch).
pub fn record_count(kafka: &KafkaOptions, topics: &[&str]) -> Result<u64> {
    let consumer: BaseConsumer = kafka.client_config().create()?;
    let mut total = 0;
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
            total += (high - low).max(0) as u64;
        }
    }
    Ok(total)
}

/// An alert or availability record as it reached the reader.
pub struct Seen<T> {
    pub record: T,
    /// The record's timestamp (CreateTime: when the coordinator's outbox handed it to its
    /// producer), ms.
    pub timestamp_ms: Option<i64>,
    /// Wall clock when the reader got it, µs.
    pub received_us: i64,
}

#[derive(Default)]
pub struct Observed {
    pub alerts: Vec<Seen<Alert>>,
    pub availability: Vec<Seen<ChannelAvailability>>,
}

/// Reads the alerts and availability topics from their beginning on a thread until `stop`,
/// timestamping each record on arrival; `last_us` holds the wall clock of the latest one.
pub struct Reader {
    stop: Arc<AtomicBool>,
    pub last_us: Arc<AtomicI64>,
    thread: std::thread::JoinHandle<Result<Observed>>,
}

impl Reader {
    pub fn start(kafka: &KafkaOptions, alerts: &str, availability: &str, limit: Duration) -> Result<Reader> {
        let consumer = kafka.assigning_consumer("omnifold-bench-reader")?;
        let counts = kafka.partition_counts(&[alerts, availability])?;
        let mut assignment = TopicPartitionList::new();
        for topic in [alerts, availability] {
            for partition in 0..counts[topic] {
                assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
            }
        }
        consumer.assign(&assignment)?;
        let stop = Arc::new(AtomicBool::new(false));
        let last_us = Arc::new(AtomicI64::new(wall_clock_us()));
        let (alerts, flag, last) = (alerts.to_string(), stop.clone(), last_us.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            let mut observed = Observed::default();
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Some(message) = consumer.poll(Duration::from_millis(20)) else { continue };
                let message = message.context("read outputs")?;
                let received_us = wall_clock_us();
                last.store(received_us, Ordering::Relaxed);
                let timestamp_ms = message.timestamp().to_millis();
                let payload = message.payload().unwrap_or_default();
                if message.topic() == alerts {
                    let record = Alert::decode(payload).context("alert decodes")?;
                    observed.alerts.push(Seen { record, timestamp_ms, received_us });
                } else {
                    let record = ChannelAvailability::decode(payload).context("availability decodes")?;
                    observed.availability.push(Seen { record, timestamp_ms, received_us });
                }
            }
            Ok(observed)
        });
        Ok(Reader { stop, last_us, thread })
    }

    /// Waits until nothing arrived for `quiet` (at most `timeout`).
    pub fn wait_quiet(&self, quiet: Duration, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let idle_us = wall_clock_us() - self.last_us.load(Ordering::Relaxed);
            if idle_us >= quiet.as_micros() as i64 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn finish(self) -> Result<Observed> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow!("the output reader panicked"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1,000 events: 100 per second for 5 s, then 50 per second; the resident set grows by
    /// 1 MB a second.
    fn progress() -> Vec<Progress> {
        (0..=150)
            .map(|i| {
                let at_s = i as f64 * 0.1;
                let done =
                    if at_s <= 5.0 { (at_s * 100.0) as i64 } else { 500 + ((at_s - 5.0) * 50.0) as i64 };
                let rss_kb = Some(102_400 + (at_s * 1024.0) as u64);
                Progress { at_s, committed: done.min(1_000), rss_kb }
            })
            .collect()
    }

    #[test]
    fn tenths_are_rates_between_the_samples_that_pass_each_tenth() {
        let samples = progress();
        let rates = tenths(&samples, 1_000);
        assert_eq!(rates.len(), 10);
        assert!((rates[0] - 100.0).abs() < 5.0, "{rates:?}");
        assert!((rates[9] - 50.0).abs() < 5.0, "{rates:?}");
        assert!(tenths(&samples[..50], 1_000).is_empty(), "never reached the end");
    }

    #[test]
    fn a_tenths_peak_resident_set_is_the_largest_sampled_while_it_was_folded() {
        let samples = progress();
        let peaks = tenths_peak_rss_mb(&samples, 1_000);
        assert_eq!(peaks.len(), 10);
        // the first tenth ends at 1 s (101 MB), the last at 15 s (115 MB)
        assert!((peaks[0] - 101.0).abs() < 0.1, "{peaks:?}");
        assert!((peaks[9] - 115.0).abs() < 0.1, "{peaks:?}");
        assert!(peaks.windows(2).all(|w| w[0] < w[1]), "a growing set peaks at each tenth's end");
        let unwatched: Vec<Progress> = samples.iter().map(|s| Progress { rss_kb: None, ..*s }).collect();
        assert!(tenths_peak_rss_mb(&unwatched, 1_000).is_empty(), "no process, no figure");
        assert!(tenths_peak_rss_mb(&samples[..50], 1_000).is_empty(), "never reached the end");
    }
}

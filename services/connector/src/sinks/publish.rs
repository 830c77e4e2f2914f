//! The one publish path every adapter shares.

use std::collections::VecDeque;
use std::pin::Pin;

use omnifold_domain::Rules;
use omnifold_domain::fact::{Rejection, check};
use omnifold_proto::Event;
use omnifold_runtime::deadletter::{ERROR_HEADER, SOURCE_HEADER};
use omnifold_runtime::{KafkaOptions, Topics};
use prost::Message as _;
use rdkafka::message::{Header, OwnedHeaders, ToBytes};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

/// Deliveries allowed in flight before the publisher waits for the oldest.
const MAX_IN_FLIGHT: usize = 50_000;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Kafka(#[from] omnifold_runtime::KafkaError),
    #[error("delivery failed: {0}")]
    Delivery(#[from] rdkafka::error::KafkaError),
    #[error("cannot read input: {0}")]
    Read(#[from] std::io::Error),
    #[error("delivery was cancelled")]
    Cancelled,
}

/// Checks events and sends them to the events topic, keyed per the contract; sends the
/// inputs an adapter cannot turn into events to the dead-letter topic.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    deadletter: String,
    rules: Option<Rules>,
    in_flight: VecDeque<Ack>,
}

impl Publisher {
    /// With `rules`, events are checked against the contract before they are sent; without,
    /// only their envelope is, and the coordinator dead-letters what breaks the contract.
    pub fn new(kafka: &KafkaOptions, topics: &Topics, rules: Option<Rules>) -> Result<Self, PublishError> {
        let producer = kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // Java's default partitioner, so a key lands where any Kafka client would put it.
            .set("partitioner", "murmur2_random")
            .create()
            .map_err(omnifold_runtime::KafkaError::from)?;
        Ok(Publisher {
            producer,
            topic: topics.events.to_string(),
            deadletter: topics.deadletter.to_string(),
            rules,
            in_flight: VecDeque::new(),
        })
    }

    /// Checks one event; a refused event is not sent.
    pub fn check(&self, event: &Event) -> Result<(), Rejection> {
        check_event(self.rules.as_ref(), event)
    }

    /// Checks and queues one event for delivery; [`Publisher::flush`] waits for it.
    pub async fn publish(&mut self, event: &Event) -> Result<(), PublishOutcome> {
        let ack = self.send(event)?;
        self.track(ack).await.map_err(PublishOutcome::Failed)
    }

    /// Checks and queues one event, and hands back its acknowledgement instead of keeping it
    /// for [`Publisher::flush`]: whoever awaits it waits for this event only.
    pub fn send(&self, event: &Event) -> Result<Ack, PublishOutcome> {
        self.check(event).map_err(PublishOutcome::Refused)?;
        let value = event.encode_to_vec();
        let record = FutureRecord::to(&self.topic).key(event.partition_key()).payload(&value);
        let delivery = send(&self.producer, record).map_err(PublishOutcome::Failed)?;
        metrics::counter!("omnifold_connector_events_published_total").increment(1);
        Ok(Ack(Pending::Delivery(delivery)))
    }

    /// Queues a dead letter (CONTRACT.md section 1): the input's bytes unchanged, the reason
    /// and where the input came from in headers. [`Publisher::flush`] waits for it too, so a
    /// run that reports success has its dead letters on the broker.
    pub async fn dead_letter(&mut self, letter: DeadLetter<'_>) -> Result<(), PublishError> {
        let headers = OwnedHeaders::new()
            .insert(Header { key: ERROR_HEADER, value: Some(letter.reason) })
            .insert(Header { key: SOURCE_HEADER, value: Some(letter.source) });
        let record = FutureRecord::to(&self.deadletter).payload(letter.value).headers(headers);
        // no key is a null key, which an empty one would not be
        let delivery = match letter.key {
            Some(key) => send(&self.producer, record.key(key))?,
            None => send(&self.producer, record)?,
        };
        self.track(Ack(Pending::Delivery(delivery))).await
    }

    /// Keeps a delivery to wait for, and waits for the oldest while too many are in flight,
    /// so that a long input does not grow the queue without bound.
    async fn track(&mut self, ack: Ack) -> Result<(), PublishError> {
        self.in_flight.push_back(ack);
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.await_oldest().await?;
        }
        Ok(())
    }

    /// Waits until every queued event is acknowledged by the broker.
    pub async fn flush(&mut self) -> Result<(), PublishError> {
        while !self.in_flight.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }

    async fn await_oldest(&mut self) -> Result<(), PublishError> {
        match self.in_flight.pop_front() {
            Some(ack) => ack.wait().await,
            None => Ok(()),
        }
    }
}

/// The broker's acknowledgement of one queued event. Dropping it does not withdraw the
/// event: the client still delivers it.
pub struct Ack(Pending);

enum Pending {
    Done,
    Delivery(DeliveryFuture),
    Other(Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>),
}

impl Ack {
    /// An event already where it goes (a [`MemorySink`]'s).
    pub fn done() -> Self {
        Ack(Pending::Done)
    }

    /// An acknowledgement that `outcome` gives, for sinks of other kinds (and tests).
    pub fn later(outcome: impl Future<Output = Result<(), PublishError>> + Send + 'static) -> Self {
        Ack(Pending::Other(Box::pin(outcome)))
    }

    /// Waits until the broker acknowledged the event, or the client gave it up.
    pub async fn wait(self) -> Result<(), PublishError> {
        match self.0 {
            Pending::Done => Ok(()),
            Pending::Delivery(delivery) => match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(PublishError::Delivery(error)),
                Err(_) => Err(PublishError::Cancelled),
            },
            Pending::Other(outcome) => outcome.await,
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0 {
            Pending::Done => "done",
            Pending::Delivery(_) | Pending::Other(_) => "pending",
        };
        write!(f, "Ack({state})")
    }
}

fn send<K, P>(
    producer: &FutureProducer,
    record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, PublishError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    producer.send_result(record).map_err(|(error, _)| PublishError::Delivery(error))
}

/// An input no event came from, as it goes to the dead-letter topic.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// The partition key when the input got as far as an event; most inputs have none.
    pub key: Option<&'a str>,
    /// The input's bytes, unchanged.
    pub value: &'a [u8],
    /// Why no event was published, for the `omnifold-error` header.
    pub reason: &'a str,
    /// Where the input came from, for the `omnifold-source` header, e.g. `file:/a/b.ndjson:17`.
    pub source: &'a str,
}

/// Why one event was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishOutcome {
    #[error("{0}")]
    Refused(Rejection),
    #[error(transparent)]
    Failed(PublishError),
}

/// The check every publish path applies: the contract's rules when known, else the envelope.
pub fn check_event(rules: Option<&Rules>, event: &Event) -> Result<(), Rejection> {
    match rules {
        Some(rules) => check(rules, event).map(drop),
        None => check_envelope(event),
    }
}

/// Where adapters send events: the [`Publisher`] in production; [`MemorySink`] in tests and
/// dry runs, which applies the same check.
pub trait Sink: Send {
    /// Checks and queues one event; [`Sink::flush`] waits for it.
    fn publish(&mut self, event: &Event) -> impl Future<Output = Result<(), PublishOutcome>> + Send;
    /// Waits until every event queued by [`Sink::publish`] is acknowledged.
    fn flush(&mut self) -> impl Future<Output = Result<(), PublishError>> + Send;
    /// Checks and queues one event without waiting, handing back its acknowledgement: the
    /// receivers wait for their own delivery's events only, and not under a shared lock.
    fn send(&mut self, event: &Event) -> Result<Ack, PublishOutcome>;
}

impl Sink for Publisher {
    fn publish(&mut self, event: &Event) -> impl Future<Output = Result<(), PublishOutcome>> + Send {
        Publisher::publish(self, event)
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), PublishError>> + Send {
        Publisher::flush(self)
    }

    fn send(&mut self, event: &Event) -> Result<Ack, PublishOutcome> {
        Publisher::send(self, event)
    }
}

/// Keeps published events in memory, after the same check as the [`Publisher`].
#[derive(Debug, Default)]
pub struct MemorySink {
    pub events: Vec<Event>,
    pub rules: Option<Rules>,
    /// Flushes so far.
    pub flushes: usize,
}

impl Sink for MemorySink {
    async fn publish(&mut self, event: &Event) -> Result<(), PublishOutcome> {
        self.send(event).map(drop)
    }

    fn send(&mut self, event: &Event) -> Result<Ack, PublishOutcome> {
        check_event(self.rules.as_ref(), event).map_err(PublishOutcome::Refused)?;
        self.events.push(event.clone());
        Ok(Ack::done())
    }

    async fn flush(&mut self) -> Result<(), PublishError> {
        self.flushes += 1;
        Ok(())
    }
}

/// Without a contract: the envelope, and a key to partition by.
fn check_envelope(event: &Event) -> Result<(), Rejection> {
    omnifold_domain::fact::check_envelope(event)?;
    if event.partition_key().is_empty() {
        return Err(Rejection::MissingField("sku"));
    }
    Ok(())
}

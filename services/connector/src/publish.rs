//! The one publish path every adapter shares.

use std::collections::VecDeque;

use omnifold_domain::Rules;
use omnifold_domain::fact::{Rejection, check};
use omnifold_proto::Event;
use omnifold_runtime::{KafkaOptions, Topics};
use prost::Message as _;
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

/// Checks events and sends them to the events topic, keyed per the contract.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    rules: Option<Rules>,
    in_flight: VecDeque<DeliveryFuture>,
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
        Ok(Publisher { producer, topic: topics.events.clone(), rules, in_flight: VecDeque::new() })
    }

    /// Checks one event; a refused event is not sent.
    pub fn check(&self, event: &Event) -> Result<(), Rejection> {
        check_event(self.rules.as_ref(), event)
    }

    /// Checks and queues one event for delivery.
    pub async fn publish(&mut self, event: &Event) -> Result<(), PublishOutcome> {
        self.check(event).map_err(PublishOutcome::Refused)?;
        let value = event.encode_to_vec();
        let record = FutureRecord::to(&self.topic).key(event.partition_key()).payload(&value);
        let delivery =
            self.producer.send_result(record).map_err(|(e, _)| PublishOutcome::Failed(e.into()))?;
        self.in_flight.push_back(delivery);
        metrics::counter!("omnifold_connector_events_published_total").increment(1);
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.await_oldest().await.map_err(PublishOutcome::Failed)?;
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
        let Some(delivery) = self.in_flight.pop_front() else { return Ok(()) };
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => Err(PublishError::Delivery(error)),
            Err(_) => Err(PublishError::Cancelled),
        }
    }
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
    fn publish(&mut self, event: &Event) -> impl Future<Output = Result<(), PublishOutcome>> + Send;
    fn flush(&mut self) -> impl Future<Output = Result<(), PublishError>> + Send;
}

impl Sink for Publisher {
    fn publish(&mut self, event: &Event) -> impl Future<Output = Result<(), PublishOutcome>> + Send {
        Publisher::publish(self, event)
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), PublishError>> + Send {
        Publisher::flush(self)
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
        check_event(self.rules.as_ref(), event).map_err(PublishOutcome::Refused)?;
        self.events.push(event.clone());
        Ok(())
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

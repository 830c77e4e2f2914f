//! The outbox producer's context: it counts a sending's deliveries in the producer's own
//! delivery callback.
//!
//! A `FutureProducer` gives every record a future: a one-shot channel, a box and a wake per
//! record, then an await each, some 4% of a coordinator's CPU. The outbox sends its records
//! in waves and only needs to know when a whole wave is delivered, whether a record of it
//! failed, and the last offset each partition took; [`Waves`] keeps just that.
//!
//! Each record carries its wave's number as its delivery opaque. A wave abandoned on an error
//! (its producer is then purged and replaced) can still report deliveries late; they carry
//! an older number and are ignored.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::ProducerContext;
use rdkafka::{ClientContext, Statistics, config::RDKafkaLogLevel};
use tokio::sync::Notify;

use crate::health::{BrokerHealth, HealthContext};

/// Reports the broker's health, as every client does, and counts deliveries.
pub struct DeliveryContext {
    health: HealthContext,
    waves: Arc<Waves>,
}

impl DeliveryContext {
    pub fn new(health: Arc<BrokerHealth>) -> Self {
        DeliveryContext { health: HealthContext::new(health), waves: Arc::new(Waves::default()) }
    }

    pub fn waves(&self) -> &Arc<Waves> {
        &self.waves
    }
}

impl ClientContext for DeliveryContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = false;

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.health.on_log(level, facility, message);
    }

    fn stats(&self, statistics: Statistics) {
        self.health.on_stats(&statistics);
    }

    fn error(&self, error: ClientError, reason: &str) {
        self.health.on_error(&error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, wave: usize) {
        match result {
            Ok(message) => {
                self.waves.delivered(wave, Ok((message.topic(), message.partition(), message.offset())))
            }
            Err((error, message)) => self.waves.delivered(wave, Err((message.topic(), error.clone()))),
        }
    }
}

/// A failed delivery: the topic and the producer's error.
pub type Failure = (String, ClientError);

/// The last offset a wave delivered to each (topic, partition).
pub type Tails = BTreeMap<(String, i32), i64>;

/// The waves of records in flight: for each, how many were sent, how many came back, and what
/// they did.
#[derive(Default)]
pub struct Waves {
    open: Mutex<Open>,
    changed: Notify,
}

#[derive(Default)]
struct Open {
    last: usize,
    /// Oldest first; a handful at most (the sender keeps a few in flight).
    waves: Vec<Wave>,
}

#[derive(Default)]
struct Wave {
    number: usize,
    expected: usize,
    delivered: usize,
    failure: Option<Failure>,
    /// The last offset delivered to each partition, by topic (a handful of topics and
    /// partitions: looked up by the borrowed topic, not a key made per record).
    tails: HashMap<String, Vec<(i32, i64)>>,
}

impl Waves {
    /// Starts a wave of `expected` records; returns the number its records carry.
    pub fn begin(&self, expected: usize) -> usize {
        let mut open = self.open.lock().expect("waves lock");
        open.last = open.last.wrapping_add(1);
        let number = open.last;
        open.waves.push(Wave { number, expected, ..Wave::default() });
        number
    }

    fn delivered(&self, number: usize, result: Result<(&str, i32, i64), (&str, ClientError)>) {
        let mut open = self.open.lock().expect("waves lock");
        let Some(wave) = open.waves.iter_mut().find(|wave| wave.number == number) else {
            return;
        };
        wave.delivered += 1;
        match result {
            Ok((topic, partition, offset)) => wave.note_tail(topic, partition, offset),
            Err((topic, error)) => {
                wave.failure.get_or_insert_with(|| (topic.to_string(), error));
            }
        }
        if wave.delivered >= wave.expected || wave.failure.is_some() {
            self.changed.notify_one();
        }
    }

    /// Waits until every record of wave `number` is delivered, and returns the last offset
    /// each partition took; or returns the first failure as soon as one is reported. Waves
    /// are finished in the order they began: finishing one forgets any older one left
    /// unfinished (abandoned on an error), whose late reports are then ignored.
    pub async fn finish(&self, number: usize) -> Result<Tails, Failure> {
        loop {
            let changed = self.changed.notified();
            if let Some(outcome) = self.outcome(number) {
                return outcome;
            }
            changed.await;
        }
    }

    fn outcome(&self, number: usize) -> Option<Result<Tails, Failure>> {
        let mut open = self.open.lock().expect("waves lock");
        let index = open.waves.iter().position(|wave| wave.number == number).expect("a wave begun");
        let wave = &mut open.waves[index];
        if wave.failure.is_none() && wave.delivered < wave.expected {
            return None;
        }
        let wave = open.waves.drain(..=index).next_back().expect("the wave itself");
        if let Some(failure) = wave.failure {
            return Some(Err(failure));
        }
        let tails = wave
            .tails
            .into_iter()
            .flat_map(|(topic, partitions)| {
                partitions.into_iter().map(move |(partition, tail)| ((topic.clone(), partition), tail))
            })
            .collect();
        Some(Ok(tails))
    }
}

impl Wave {
    fn note_tail(&mut self, topic: &str, partition: i32, offset: i64) {
        let partitions = match self.tails.get_mut(topic) {
            Some(partitions) => partitions,
            None => self.tails.entry(topic.to_string()).or_default(),
        };
        match partitions.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, tail)) => *tail = (*tail).max(offset),
            None => partitions.push((partition, offset)),
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode;

    use super::*;

    fn failed() -> ClientError {
        ClientError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
    }

    #[tokio::test]
    async fn a_wave_finishes_once_every_record_is_back_with_each_partitions_last_offset() {
        let waves = Waves::default();
        let number = waves.begin(4);
        waves.delivered(number, Ok(("a", 0, 7)));
        waves.delivered(number, Ok(("a", 0, 5)));
        assert!(waves.outcome(number).is_none(), "two of four back");
        waves.delivered(number, Ok(("a", 1, 3)));
        waves.delivered(number, Ok(("b", 0, 9)));
        let tails = waves.finish(number).await.unwrap();
        let expected: BTreeMap<(String, i32), i64> =
            [(("a".into(), 0), 7), (("a".into(), 1), 3), (("b".into(), 0), 9)].into();
        assert_eq!(tails, expected);
    }

    #[test]
    fn a_failed_record_fails_its_wave_at_once() {
        let waves = Waves::default();
        let number = waves.begin(3);
        waves.delivered(number, Err(("a", failed())));
        // two records are still out: a wave that waited for them would have no outcome yet
        let (topic, error) = waves.outcome(number).expect("an outcome at once").unwrap_err();
        assert_eq!((topic.as_str(), error), ("a", failed()));
    }

    #[tokio::test]
    async fn late_reports_of_an_abandoned_wave_are_ignored() {
        let waves = Waves::default();
        let abandoned = waves.begin(2);
        let number = waves.begin(1);
        waves.delivered(abandoned, Err(("a", failed())));
        waves.delivered(abandoned, Ok(("a", 0, 100)));
        assert!(waves.outcome(number).is_none(), "nothing of the new wave is back");
        waves.delivered(number, Ok(("a", 0, 4)));
        assert_eq!(waves.finish(number).await.unwrap(), [(("a".into(), 0), 4)].into());
    }

    #[tokio::test]
    async fn waves_in_flight_are_counted_apart_whichever_comes_back_first() {
        let waves = Waves::default();
        let first = waves.begin(2);
        let second = waves.begin(1);
        waves.delivered(second, Ok(("a", 0, 9)));
        waves.delivered(first, Ok(("a", 0, 7)));
        assert!(waves.outcome(first).is_none(), "one of the first wave's two is back");
        waves.delivered(first, Ok(("a", 1, 8)));
        assert_eq!(waves.finish(first).await.unwrap(), [(("a".into(), 0), 7), (("a".into(), 1), 8)].into());
        assert_eq!(waves.finish(second).await.unwrap(), [(("a".into(), 0), 9)].into());
    }

    #[tokio::test]
    async fn finishing_a_wave_forgets_the_older_ones_left_unfinished() {
        let waves = Waves::default();
        let abandoned = waves.begin(2);
        let number = waves.begin(1);
        waves.delivered(number, Ok(("a", 0, 4)));
        assert_eq!(waves.finish(number).await.unwrap(), [(("a".into(), 0), 4)].into());
        waves.delivered(abandoned, Ok(("a", 0, 3)));
        assert!(waves.open.lock().unwrap().waves.is_empty(), "nothing kept of the abandoned wave");
    }

    #[tokio::test]
    async fn a_waiting_sender_wakes_when_the_last_record_comes_back() {
        let waves = Arc::new(Waves::default());
        let number = waves.begin(2);
        let waiting = tokio::spawn({
            let waves = waves.clone();
            async move { waves.finish(number).await }
        });
        tokio::task::yield_now().await;
        waves.delivered(number, Ok(("a", 0, 1)));
        waves.delivered(number, Ok(("a", 0, 2)));
        let tails = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(tails.unwrap(), [(("a".into(), 0), 2)].into());
    }
}

//! The reporter service: the partials stage and the merge stage on one blocking thread,
//! and the outbox sender on the async side.
//!
//! The report loop alternates the two stages (each with its own group consumer): a batch of
//! inputs folded and committed, then the partial records waiting on the partials topic
//! merged and committed one by one. Polling, folding and every fsync happen on that thread;
//! the async side only awaits deliveries, after each commit.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use omnifold_domain::Rules;
use omnifold_runtime::health::until_reachable;
use omnifold_runtime::{BrokerHealth, OutboxLoop, OutboxSender, OutboxSignals, Store, load_contract};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::consumer::{ConsumerSpec, Positions, StoredPositions, subscribed};
use crate::ingest::Ingest;
use crate::merge::Merge;
use crate::options::{ReporterError, ReporterOptions};
use crate::topics::ReportTopics;

/// Outbox records waiting beyond which the report loop pauses for the sender.
const MAX_PENDING_OUTPUTS: usize = 200_000;

/// A reporter built from its options, ready to run.
pub struct Reporter {
    options: ReporterOptions,
    rules: Rules,
    topics: ReportTopics,
}

impl Reporter {
    /// Loads and validates the contract; connects to nothing yet.
    pub fn new(options: ReporterOptions) -> Result<Self, ReporterError> {
        let rules = load_contract(&options.contract)?;
        let topics = ReportTopics::new(&options.topics.prefix);
        Ok(Reporter { options, rules, topics })
    }

    /// Runs until `shutdown` resolves (or, with `exit_when_caught_up`, until caught up).
    /// A broker outage is waited out, as in the coordinator (runtime `health`).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ReporterError> {
        tokio::pin!(shutdown);
        let health = BrokerHealth::new(self.options.broker_outage_max);
        let partitions = tokio::select! {
            partitions = until_reachable(&health, || self.prepare_topics()) => partitions?,
            _ = &mut shutdown => return Ok(()),
        };
        if partitions[&*self.topics.partials] != 1 {
            let count = partitions[&*self.topics.partials];
            return Err(ReporterError::PartialsPartitions {
                topic: self.topics.partials.to_string(),
                partitions: count,
            });
        }
        // the ledger mirrors the event log partition for partition (the coordinator checks it)
        let events_partitions = partitions[&*self.topics.contract.ledger];
        let store = open_store(self.options.store.clone()).await?;
        let mut sender = OutboxSender::new(store.clone(), &self.options.kafka, partitions, health.clone())?;
        tokio::select! {
            started = sender.start() => { started?; }
            _ = &mut shutdown => return Ok(()),
        }

        let outbox = OutboxLoop::spawn(sender);
        let stop = Arc::new(AtomicBool::new(false));
        let report_loop = ReportLoop {
            options: self.options.clone(),
            rules: self.rules,
            topics: self.topics,
            events_partitions,
            store,
            stop: stop.clone(),
            outbox: outbox.signals(),
            health,
        };
        let worker = tokio::task::spawn_blocking(move || report_loop.run());
        // The sender keeps running while the loop stops: a revoked merge stage waits for its
        // outbox to drain before the next owner reads back what was published.
        outbox.supervise(worker, &stop, shutdown.as_mut()).await
    }

    /// Creates missing topics, checks the ledger and the partials topic keep what they hold, and returns the partition count of every topic the reporter reads or writes.
    async fn prepare_topics(&self) -> Result<HashMap<String, i32>, omnifold_runtime::KafkaError> {
        let kafka = &self.options.kafka;
        kafka.ensure_topics(&self.topics.contract.specs(&self.options.topics)).await?;
        let retention_ms = self.options.topics.log_retention_ms;
        kafka.check_event_log(&self.topics.contract.ledger, retention_ms).await?;
        self.topics.ensure_partials(kafka, retention_ms).await?;
        kafka.check_event_log(&self.topics.partials, retention_ms).await?;
        let contract = &self.topics.contract;
        kafka
            .fetch_partition_counts(&[
                &contract.ledger,
                &contract.alerts,
                &contract.snapshots,
                &contract.snapshots_json,
                &contract.deadletter,
                &self.topics.partials,
            ])
            .await
    }
}

async fn open_store(path: PathBuf) -> Result<Store, ReporterError> {
    Ok(tokio::task::spawn_blocking(move || Store::open(&path)).await??)
}

struct ReportLoop {
    options: ReporterOptions,
    rules: Rules,
    topics: ReportTopics,
    events_partitions: i32,
    store: Store,
    stop: Arc<AtomicBool>,
    outbox: Arc<OutboxSignals>,
    health: Arc<BrokerHealth>,
}

impl ReportLoop {
    fn run(self) -> Result<(), ReporterError> {
        let (ingest_positions, merge_positions) = (Positions::default(), Positions::default());
        let inputs = [&*self.topics.contract.ledger, &*self.topics.contract.alerts];
        let ingest_consumer =
            self.consumer(&self.options.group_id, &inputs, ingest_positions.clone(), false)?;
        let merge_group = format!("{}-merge", self.options.group_id);
        let merge_consumer =
            self.consumer(&merge_group, &[&*self.topics.partials], merge_positions.clone(), true)?;
        let mut ingest =
            Ingest::new(self.rules.clone(), self.topics.clone(), self.store.clone(), ingest_positions);
        ingest.batch_max_events = self.options.batch_max_events;
        ingest.batch_max_ms = self.options.batch_max_ms;
        let kafka = self.options.kafka.clone();
        let mut merge = Merge::new(
            self.rules.clone(),
            self.topics.clone(),
            self.store.clone(),
            kafka,
            merge_positions,
            self.events_partitions,
        );
        tracing::info!(group = self.options.group_id, "reporter running");
        let mut caught_up_at: Option<(u64, u64)> = None;
        while !self.stop.load(Ordering::Relaxed) {
            self.health.check()?;
            self.wait_for_sender();
            let folded = ingest.step(&ingest_consumer)?;
            self.committed();
            let merged = merge.step(&merge_consumer)?;
            self.committed();
            let idle = folded == 0 && merged == 0;
            if idle
                && self.options.exit_when_caught_up
                && self.caught_up(&ingest, &merge, &ingest_consumer, &merge_consumer)?
            {
                // watermarks come with statistics: only trust "caught up" once it survived two
                // fresh reports of both consumers
                let reports = (ingest_consumer.context().reports(), merge_consumer.context().reports());
                let first = *caught_up_at.get_or_insert(reports);
                if reports.0 >= first.0 + 2 && reports.1 >= first.1 + 2 {
                    tracing::info!("caught up");
                    break;
                }
            } else {
                caught_up_at = None;
            }
        }
        // Leave the groups while the sender still runs (see Reporter::run).
        drop(merge_consumer);
        drop(ingest_consumer);
        Ok(())
    }

    fn consumer(
        &self,
        group_id: &str,
        subscribe: &[&str],
        positions: Positions,
        drain_on_revoke: bool,
    ) -> Result<BaseConsumer<StoredPositions>, ReporterError> {
        let spec = ConsumerSpec {
            kafka: &self.options.kafka,
            group_id,
            topics: &self.topics,
            subscribe,
            store: &self.store,
            positions,
            drain_on_revoke,
            stopping: self.stop.clone(),
            health: self.health.clone(),
            instance_id: self.options.group_instance_id.clone(),
            session_timeout_ms: self.options.session_timeout_ms,
        };
        Ok(subscribed(spec)?)
    }

    /// Wakes the sender when the outbox holds anything.
    fn committed(&self) {
        self.outbox.pending_now(self.store.pending_count());
    }

    fn wait_for_sender(&self) {
        while self.outbox.pending() > MAX_PENDING_OUTPUTS && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every input and the partials topic read to their ends, and every output sent.
    fn caught_up(
        &self,
        ingest: &Ingest,
        merge: &Merge,
        ingest_consumer: &BaseConsumer<StoredPositions>,
        merge_consumer: &BaseConsumer<StoredPositions>,
    ) -> Result<bool, ReporterError> {
        if self.store.pending_count() > 0 {
            return Ok(false);
        }
        Ok(ingest.caught_up(ingest_consumer)? == Some(true) && merge.caught_up(merge_consumer)? == Some(true))
    }
}

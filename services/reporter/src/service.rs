//! The reporter service: the partials stage and the merge stage on one blocking thread,
//! and the outbox sender on the async side.
//!
//! The report loop alternates the two stages (each with its own group consumer): a batch of
//! inputs folded and committed, then the partial records waiting on the partials topic
//! merged and committed one by one. Polling, folding and every fsync happen on that thread;
//! the async side only awaits deliveries, after each commit.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use omnifold_domain::Rules;
use omnifold_runtime::{OutboxSender, Store, load_contract};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::Notify;

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

/// What the report loop and the async side share.
#[derive(Default)]
struct Shared {
    stop: Arc<AtomicBool>,
    pending: AtomicUsize,
    committed: Notify,
}

impl Reporter {
    /// Loads and validates the contract; connects to nothing yet.
    pub fn new(options: ReporterOptions) -> Result<Self, ReporterError> {
        let rules = load_contract(&options.contract)?;
        let topics = ReportTopics::new(&options.topics.prefix);
        Ok(Reporter { options, rules, topics })
    }

    /// Runs until `shutdown` resolves (or, with `exit_when_caught_up`, until caught up).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ReporterError> {
        let kafka = &self.options.kafka;
        kafka.ensure_topics(&self.topics.contract.specs(&self.options.topics)).await?;
        self.topics.ensure_partials(kafka).await?;
        let contract = &self.topics.contract;
        let names = [&contract.events, &contract.alerts, &contract.snapshots, &contract.snapshots_json];
        let mut names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        names.extend([contract.deadletter.as_str(), self.topics.partials.as_str()]);
        let partitions = kafka.partition_counts(&names)?;
        if partitions[&self.topics.partials] != 1 {
            let count = partitions[&self.topics.partials];
            return Err(ReporterError::PartialsPartitions {
                topic: self.topics.partials.clone(),
                partitions: count,
            });
        }
        let store = open_store(self.options.store.clone()).await?;
        let sender = OutboxSender::new(store.clone(), kafka.idempotent_producer()?, partitions);
        sender.recover(kafka).await?;
        sender.send_pending().await?;

        let shared = Arc::new(Shared::default());
        let report_loop = ReportLoop {
            options: self.options.clone(),
            rules: self.rules,
            topics: self.topics,
            store,
            shared: shared.clone(),
        };
        let mut worker = tokio::task::spawn_blocking(move || report_loop.run());
        tokio::pin!(shutdown);
        let mut stopping = false;
        // The sender keeps running while the loop stops: a revoked merge stage waits for its
        // outbox to drain before the next owner reads back what was published.
        let result = loop {
            tokio::select! {
                _ = shared.committed.notified() => {
                    let sent = sender.send_pending().await?;
                    shared.pending.fetch_sub(sent.min(shared.pending.load(Ordering::Relaxed)), Ordering::Relaxed);
                }
                _ = &mut shutdown, if !stopping => {
                    stopping = true;
                    shared.stop.store(true, Ordering::Relaxed);
                }
                finished = &mut worker => break finished?,
            }
        };
        sender.send_pending().await?;
        result
    }
}

async fn open_store(path: PathBuf) -> Result<Store, ReporterError> {
    Ok(tokio::task::spawn_blocking(move || Store::open(&path)).await??)
}

struct ReportLoop {
    options: ReporterOptions,
    rules: Rules,
    topics: ReportTopics,
    store: Store,
    shared: Arc<Shared>,
}

impl ReportLoop {
    fn run(self) -> Result<(), ReporterError> {
        let (ingest_positions, merge_positions) = (Positions::default(), Positions::default());
        let inputs = [self.topics.contract.events.as_str(), self.topics.contract.alerts.as_str()];
        let ingest_consumer =
            self.consumer(&self.options.group_id, &inputs, ingest_positions.clone(), false)?;
        let merge_group = format!("{}-merge", self.options.group_id);
        let merge_consumer =
            self.consumer(&merge_group, &[self.topics.partials.as_str()], merge_positions.clone(), true)?;
        let mut ingest =
            Ingest::new(self.rules.clone(), self.topics.clone(), self.store.clone(), ingest_positions);
        ingest.batch_max_events = self.options.batch_max_events;
        ingest.batch_max_ms = self.options.batch_max_ms;
        let kafka = self.options.kafka.clone();
        let mut merge =
            Merge::new(self.rules.clone(), self.topics.clone(), self.store.clone(), kafka, merge_positions);
        tracing::info!(group = self.options.group_id, "reporter running");
        let mut caught_up_at: Option<(u64, u64)> = None;
        while !self.shared.stop.load(Ordering::Relaxed) {
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
            stopping: self.shared.stop.clone(),
        };
        Ok(subscribed(spec)?)
    }

    /// Wakes the sender when the outbox holds anything.
    fn committed(&self) {
        let pending = self.store.pending_count();
        if pending > 0 {
            self.shared.pending.store(pending, Ordering::Relaxed);
            self.shared.committed.notify_one();
        }
    }

    fn wait_for_sender(&self) {
        while self.shared.pending.load(Ordering::Relaxed) > MAX_PENDING_OUTPUTS
            && !self.shared.stop.load(Ordering::Relaxed)
        {
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

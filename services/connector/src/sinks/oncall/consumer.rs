//! The consumer loop: every escalations partition read from the sink's own store positions,
//! each page delivered, then its escalation id and the partition's next offset committed in
//! one flushed batch; a page the endpoint refuses is dead-lettered in that batch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use omnifold_proto::Escalation;
use omnifold_runtime::deadletter::{Source, dead_letter};
use omnifold_runtime::topics::TopicSpec;
use omnifold_runtime::{BrokerHealth, Commit, OutboxSender, Store, StoreError};
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::delivery::{Delivery, Refusal};
use super::pagerduty::pagerduty_event;
use super::{Oncall, OncallError};

/// Escalation ids already delivered, per partition.
type Delivered = HashMap<i32, HashSet<String>>;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Stop,
}

/// A started sink: its store, dead-letter sender, consumer and delivered ids.
pub(super) struct Running<'a> {
    oncall: &'a Oncall,
    store: Store,
    sender: OutboxSender,
    pub(super) consumer: StreamConsumer,
    delivered: Delivered,
}

/// Creates the topics it needs, opens the store, sends what its outbox still holds and
/// assigns every escalations partition at the stored offsets.
pub(super) async fn start(oncall: &Oncall) -> Result<Running<'_>, OncallError> {
    let (kafka, topics) = (&oncall.options.kafka, &oncall.topics);
    let wanted = [&*topics.escalations, &*topics.deadletter];
    let specs: Vec<TopicSpec> = topics
        .specs(&oncall.options.topics)
        .into_iter()
        .filter(|s| wanted.contains(&s.name.as_str()))
        .collect();
    kafka.ensure_topics(&specs).await?;
    let partitions = partition_counts(oncall).await?;
    let store = open_store(oncall.options.store.clone()).await?;
    let health = BrokerHealth::new(None);
    let mut sender = OutboxSender::new(store.clone(), kafka, partitions.clone(), health)?;
    sender.start().await?;
    let count = partitions[&*topics.escalations];
    let (offsets, delivered) = load_positions(store.clone(), count).await?;
    let consumer = consumer(oncall, count, &offsets)?;
    let known: usize = delivered.values().map(HashSet::len).sum();
    let endpoint = oncall.endpoint.shown();
    tracing::info!(partitions = count, delivered = known, endpoint, "on-call sink started");
    Ok(Running { oncall, store, sender, consumer, delivered })
}

/// The partition counts of the escalations and dead-letter topics; a metadata request
/// blocks, so it runs on a blocking thread.
async fn partition_counts(oncall: &Oncall) -> Result<HashMap<String, i32>, OncallError> {
    let kafka = oncall.options.kafka.clone();
    let names = [oncall.topics.escalations.clone(), oncall.topics.deadletter.clone()];
    let counts = move || kafka.partition_counts(&[&names[0], &names[1]]);
    Ok(tokio::task::spawn_blocking(counts).await??)
}

/// A consumer assigned every escalations partition at the offsets in the store.
fn consumer(
    oncall: &Oncall,
    partitions: i32,
    stored: &BTreeMap<i32, i64>,
) -> Result<StreamConsumer, OncallError> {
    let consumer: StreamConsumer = oncall
        .options
        .kafka
        .client_config()
        .set("group.id", &oncall.options.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let offset = stored.get(&partition).map_or(Offset::Beginning, |o| Offset::Offset(*o));
        assignment.add_partition_offset(&oncall.topics.escalations, partition, offset)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

async fn open_store(path: PathBuf) -> Result<Store, OncallError> {
    Ok(tokio::task::spawn_blocking(move || Store::open(&path)).await??)
}

/// The stored next offsets and the delivered escalation ids of every partition.
async fn load_positions(
    store: Store,
    partitions: i32,
) -> Result<(BTreeMap<i32, i64>, Delivered), OncallError> {
    let load = move || -> Result<_, StoreError> {
        let delivered = (0..partitions)
            .map(|p| Ok((p, store.seen_ids(p)?)))
            .collect::<Result<Delivered, StoreError>>()?;
        Ok((store.offsets()?, delivered))
    };
    Ok(tokio::task::spawn_blocking(load).await??)
}

impl Running<'_> {
    /// Pages one escalation record, or stops if `shutdown` comes first: a page being retried
    /// then is left for the next run.
    pub(super) async fn handle(
        &mut self,
        message: OwnedMessage,
        shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Flow, OncallError> {
        let (partition, offset) = (message.partition(), message.offset());
        let escalation = match Escalation::decode(message.payload().unwrap_or_default()) {
            Ok(escalation) => escalation,
            Err(error) => {
                self.refuse(&message, format!("undecodable escalation: {error}"), None).await?;
                return Ok(Flow::Continue);
            }
        };
        let id = escalation.escalation_id.clone();
        if self.delivered.get(&partition).is_some_and(|ids| ids.contains(&id)) {
            // the same escalation published twice (a replayed coordinator): page once
            tracing::info!(escalation_id = id, partition, offset, "already delivered, skipped");
            self.commit(partition, offset, |_| {}).await?;
            return Ok(Flow::Continue);
        }
        let endpoint = &self.oncall.endpoint;
        let event = pagerduty_event(&escalation, endpoint.routing_key());
        let delivery = tokio::select! {
            _ = shutdown => return Ok(Flow::Stop),
            delivery = endpoint.deliver(&event) => delivery,
        };
        match delivery {
            Delivery::Delivered { attempts } => self.delivered_page(partition, offset, id, attempts).await?,
            Delivery::Refused(refusal) => {
                let reason =
                    format!("endpoint refused escalation {id} with {}: {}", refusal.status, refusal.body);
                self.refuse(&message, reason, Some((id, refusal))).await?;
            }
        }
        Ok(Flow::Continue)
    }

    async fn delivered_page(
        &mut self,
        partition: i32,
        offset: i64,
        id: String,
        attempts: u32,
    ) -> Result<(), OncallError> {
        let seen = id.clone();
        self.commit(partition, offset, move |commit| commit.put_seen(partition, &seen)).await?;
        metrics::counter!("omnifold_escalations_delivered_total").increment(1);
        tracing::info!(escalation_id = id, partition, offset, attempts, "escalation delivered");
        self.delivered.entry(partition).or_default().insert(id);
        Ok(())
    }

    /// Dead-letters the record (and keeps the endpoint's refusal), then moves past it.
    async fn refuse(
        &mut self,
        message: &OwnedMessage,
        reason: String,
        refusal: Option<(String, Refusal)>,
    ) -> Result<(), OncallError> {
        let (partition, offset) = (message.partition(), message.offset());
        tracing::error!(partition, offset, reason, "escalation not deliverable, dead-lettered");
        metrics::counter!("omnifold_escalations_refused_total").increment(1);
        let topics = &self.oncall.topics;
        let source = Source { topic: &topics.escalations, partition, offset };
        let (key, value) = (message.key().unwrap_or_default(), message.payload().unwrap_or_default());
        let record = dead_letter(&topics.deadletter, key, value, &reason, source);
        self.commit(partition, offset, move |commit| {
            commit.push_output(&record);
            if let Some((id, refusal)) = refusal {
                commit.put_state(partition, &format!("refused/{id}"), &refusal);
            }
        })
        .await?;
        self.sender.send_pending().await?;
        Ok(())
    }

    /// Commits `edit` with the partition's next offset in one flushed batch.
    async fn commit(
        &self,
        partition: i32,
        offset: i64,
        edit: impl FnOnce(&mut Commit) + Send + 'static,
    ) -> Result<(), OncallError> {
        let store = self.store.clone();
        let write = move || -> Result<(), StoreError> {
            let mut commit = store.begin()?;
            edit(&mut commit);
            commit.put_offset(partition, offset + 1);
            store.commit(commit)
        };
        tokio::task::spawn_blocking(write).await??;
        self.commit_group_offset(partition, offset + 1);
        Ok(())
    }

    /// Group commits exist for lag monitoring only, so a failure is logged, not fatal.
    fn commit_group_offset(&self, partition: i32, next: i64) {
        let mut offsets = TopicPartitionList::new();
        let _ =
            offsets.add_partition_offset(&self.oncall.topics.escalations, partition, Offset::Offset(next));
        if let Err(error) = self.consumer.commit(&offsets, CommitMode::Async) {
            tracing::debug!(%error, "group offset commit failed");
        }
    }
}

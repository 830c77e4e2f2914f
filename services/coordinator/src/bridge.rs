//! The on-call bridge (CONTRACT.md section 6, 'Delivery'): consumes `omnifold.escalations.v1`
//! and triggers each escalation at an HTTP endpoint in the PagerDuty Events API v2 shape.
//!
//! Never losing nor repeating a page across restarts: the bridge keeps its own store
//! (the runtime's [`Store`], never the coordinator's). After each delivery it commits, in one
//! flushed batch, the escalation id (`put_seen`) and the next offset of its partition, and on
//! start it is assigned every partition at the stored offsets, as the coordinator is. An HTTP
//! endpoint cannot take part in that batch, so one window is left: a crash after the endpoint
//! accepted a page and before the commit. That page is sent again after the restart with the
//! same `dedup_key` (the escalation id), which PagerDuty folds into the alert it already has.
//!
//! Connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff
//! ([`Backoff`]), without a limit: a page must not be lost because the endpoint is down for a
//! while. Each attempt is bounded by a timeout. Any other answer (a 4xx: malformed event, bad
//! routing key) will not get better by retrying, so the escalation is recorded in the store
//! (`refused/<escalation id>`), dead-lettered with the endpoint's answer, and skipped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use omnifold_proto::{Escalation, EscalationRule, Severity};
use omnifold_runtime::deadletter::{Source, dead_letter};
use omnifold_runtime::topics::TopicSpec;
use omnifold_runtime::{
    Commit, KafkaError, KafkaOptions, OutboxError, OutboxSender, Store, StoreError, TopicOptions, Topics,
    wall_clock_ms,
};
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// The environment variable read for the routing key when no file is given.
pub const ROUTING_KEY_ENV: &str = "OMNIFOLD_PAGERDUTY_ROUTING_KEY";
/// PagerDuty's Events API v2.
pub const PAGERDUTY_ENDPOINT: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty's limits on a dedup key and a summary.
const MAX_DEDUP_KEY: usize = 255;
const MAX_SUMMARY: usize = 1024;
/// How much of a refusing endpoint's answer is kept.
const MAX_REFUSAL_BODY: usize = 512;

/// Everything the bridge is configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeOptions {
    pub kafka: KafkaOptions,
    #[serde(default)]
    pub topics: TopicOptions,
    /// The consumer group under which offsets are committed for lag monitoring only.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Where events are POSTed, e.g. [`PAGERDUTY_ENDPOINT`].
    pub endpoint: String,
    /// The bridge's own store directory.
    pub store: PathBuf,
    /// A file holding the routing key; without it the key is read from [`ROUTING_KEY_ENV`].
    #[serde(default)]
    pub routing_key_file: Option<PathBuf>,
    #[serde(default)]
    pub delivery: DeliveryOptions,
}

fn default_group() -> String {
    "omnifold-bridge".to_string()
}

/// Timeouts and the retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryOptions {
    /// Bound on one attempt: connecting, sending and reading the answer.
    pub attempt_timeout_ms: u64,
    /// The wait after the first failed attempt; it doubles after each further failure,
    pub initial_backoff_ms: u64,
    /// up to this.
    pub max_backoff_ms: u64,
    /// The longest `Retry-After` of a 429 that is honoured.
    pub max_retry_after_ms: u64,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            attempt_timeout_ms: 10_000,
            initial_backoff_ms: 500,
            max_backoff_ms: 60_000,
            max_retry_after_ms: 300_000,
        }
    }
}

impl DeliveryOptions {
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: Duration::from_millis(self.initial_backoff_ms),
            max: Duration::from_millis(self.max_backoff_ms),
        }
    }

    /// The wait after `failures` failed attempts in a row: the backoff, or longer when the
    /// endpoint asked for it with `Retry-After`.
    pub fn wait(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.backoff().delay(failures);
        let asked =
            retry_after.map_or(Duration::ZERO, |r| r.min(Duration::from_millis(self.max_retry_after_ms)));
        backoff.max(asked)
    }
}

/// Exponential backoff: `initial x 2^(failures - 1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `failures`-th failed attempt in a row (counted from 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("no pagerduty routing key: set {ROUTING_KEY_ENV} or pass a routing key file")]
    NoRoutingKey,
    #[error("cannot read the routing key file {path}: {source}")]
    RoutingKeyFile { path: PathBuf, source: std::io::Error },
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot build the http client: {0}")]
    HttpClient(reqwest::Error),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("bridge task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The PagerDuty routing key. It is a secret: its `Debug` is redacted and it is never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoutingKey(String);

impl RoutingKey {
    pub fn new(key: impl Into<String>) -> Self {
        RoutingKey(key.into())
    }

    /// From the file when one is given, else from [`ROUTING_KEY_ENV`]; surrounding whitespace
    /// (a file's final newline) is not part of the key.
    pub fn resolve(file: Option<&Path>) -> Result<RoutingKey, BridgeError> {
        let key = match file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| BridgeError::RoutingKeyFile { path: path.to_path_buf(), source })?,
            None => std::env::var(ROUTING_KEY_ENV).unwrap_or_default(),
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(BridgeError::NoRoutingKey);
        }
        Ok(RoutingKey(key.to_string()))
    }

    /// Removes the key from text that may echo it (an endpoint's error answer).
    fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "<routing key>")
    }
}

impl std::fmt::Debug for RoutingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoutingKey(<redacted>)")
    }
}

/// A PagerDuty Events API v2 event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagerDutyEvent {
    pub routing_key: RoutingKey,
    pub event_action: String,
    pub dedup_key: String,
    pub payload: PagerDutyPayload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagerDutyPayload {
    pub summary: String,
    pub source: String,
    pub severity: String,
    pub component: String,
    pub custom_details: CustomDetails,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomDetails {
    pub owner: String,
    pub on_call: String,
    pub rule: String,
    pub cause: Vec<String>,
    pub occurred_at_ms: i64,
    /// In full, for when the dedup key had to be shortened.
    pub escalation_id: String,
}

/// The trigger event of an escalation.
pub fn pagerduty_event(escalation: &Escalation, routing_key: &RoutingKey) -> PagerDutyEvent {
    let rule = EscalationRule::try_from(escalation.rule).unwrap_or_default().name();
    PagerDutyEvent {
        routing_key: routing_key.clone(),
        event_action: "trigger".to_string(),
        dedup_key: dedup_key(&escalation.escalation_id),
        payload: PagerDutyPayload {
            summary: truncate(&escalation.summary, MAX_SUMMARY),
            source: "omnifold".to_string(),
            severity: pagerduty_severity(escalation.severity).to_string(),
            component: escalation.channel.clone(),
            custom_details: CustomDetails {
                owner: escalation.owner.clone(),
                on_call: escalation.on_call.clone(),
                rule: rule.to_string(),
                cause: escalation.cause.clone(),
                occurred_at_ms: escalation.occurred_at_ms,
                escalation_id: escalation.escalation_id.clone(),
            },
        },
    }
}

/// An unknown severity pages as critical: better a loud page than a muted one.
fn pagerduty_severity(severity: i32) -> &'static str {
    match Severity::try_from(severity).unwrap_or_default() {
        Severity::Warning => "warning",
        Severity::Info => "info",
        Severity::Critical | Severity::Unspecified => "critical",
    }
}

/// The escalation id, or for one longer than PagerDuty takes, its head and a hash of the
/// whole: still derived only from the id, so a re-sent page gets the same key.
pub fn dedup_key(escalation_id: &str) -> String {
    if escalation_id.len() <= MAX_DEDUP_KEY {
        return escalation_id.to_string();
    }
    let hash = format!("~{:016x}", fnv1a(escalation_id.as_bytes()));
    format!("{}{hash}", truncate(escalation_id, MAX_DEDUP_KEY - hash.len()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// What an endpoint's answer means for a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry,
    Refused,
}

impl Verdict {
    pub fn of(status: StatusCode) -> Verdict {
        let transient = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error();
        if status.is_success() {
            Verdict::Delivered
        } else if transient {
            Verdict::Retry
        } else {
            Verdict::Refused
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Retry => "retry",
            Verdict::Refused => "refused",
        }
    }
}

/// A `Retry-After` in seconds; the HTTP-date form is left to the backoff.
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// One attempt's result.
#[derive(Debug)]
enum Attempt {
    Delivered,
    Retry { reason: String, retry_after: Option<Duration> },
    Refused(Refusal),
}

/// An endpoint's refusal of a page, kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub status: u16,
    pub body: String,
    pub at_ms: i64,
}

/// How a page ended.
#[derive(Debug)]
pub enum Delivery {
    Delivered { attempts: u32 },
    Refused(Refusal),
}

/// A bridge built from its options, ready to run.
pub struct Bridge {
    options: BridgeOptions,
    topics: Topics,
    endpoint: reqwest::Url,
    routing_key: RoutingKey,
    client: reqwest::Client,
}

impl Bridge {
    /// Reads the routing key and checks the endpoint; connects to nothing yet.
    pub fn new(options: BridgeOptions) -> Result<Bridge, BridgeError> {
        let routing_key = RoutingKey::resolve(options.routing_key_file.as_deref())?;
        Bridge::with_routing_key(options, routing_key)
    }

    /// As [`Bridge::new`], with the key at hand.
    pub fn with_routing_key(options: BridgeOptions, routing_key: RoutingKey) -> Result<Bridge, BridgeError> {
        let endpoint = parse_endpoint(&options.endpoint)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(options.delivery.attempt_timeout_ms))
            // a redirected POST would lose its body; a moved endpoint is a configuration error
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("omnifold-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BridgeError::HttpClient)?;
        let topics = Topics::new(&options.topics.prefix);
        Ok(Bridge { options, topics, endpoint, routing_key, client })
    }

    /// Delivers escalations until `shutdown` resolves. A page being retried at that moment
    /// is left for the next run.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), BridgeError> {
        let mut running = self.start().await?;
        tokio::pin!(shutdown);
        loop {
            let message = tokio::select! {
                _ = &mut shutdown => break,
                message = running.consumer.recv() => message?.detach(),
            };
            if running.handle(message, shutdown.as_mut()).await? == Flow::Stop {
                break;
            }
        }
        tracing::info!("bridge stopped");
        Ok(())
    }

    async fn start(&self) -> Result<Running<'_>, BridgeError> {
        let kafka = &self.options.kafka;
        let wanted = [&self.topics.escalations, &self.topics.deadletter];
        let specs: Vec<TopicSpec> = self
            .topics
            .specs(&self.options.topics)
            .into_iter()
            .filter(|s| wanted.contains(&&s.name))
            .collect();
        kafka.ensure_topics(&specs).await?;
        let partitions = self.partition_counts().await?;
        let store = open_store(self.options.store.clone()).await?;
        let health = omnifold_runtime::BrokerHealth::new(None);
        let mut sender = OutboxSender::new(store.clone(), kafka, partitions.clone(), health)?;
        sender.start().await?;
        let count = partitions[&self.topics.escalations];
        let (offsets, delivered) = load_positions(store.clone(), count).await?;
        let consumer = self.consumer(count, &offsets)?;
        let known: usize = delivered.values().map(HashSet::len).sum();
        let endpoint = shown(&self.endpoint);
        tracing::info!(partitions = count, delivered = known, endpoint, "bridge started");
        Ok(Running { bridge: self, store, sender, consumer, delivered })
    }

    /// The partition counts of the escalations and dead-letter topics; a metadata request
    /// blocks, so it runs on a blocking thread.
    async fn partition_counts(&self) -> Result<HashMap<String, i32>, BridgeError> {
        let kafka = self.options.kafka.clone();
        let names = [self.topics.escalations.clone(), self.topics.deadletter.clone()];
        let counts = move || kafka.partition_counts(&[&names[0], &names[1]]);
        Ok(tokio::task::spawn_blocking(counts).await??)
    }

    /// A consumer assigned every escalations partition at the offsets in the store.
    fn consumer(&self, partitions: i32, stored: &BTreeMap<i32, i64>) -> Result<StreamConsumer, BridgeError> {
        let consumer: StreamConsumer = self
            .options
            .kafka
            .client_config()
            .set("group.id", &self.options.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            let offset = stored.get(&partition).map_or(Offset::Beginning, |o| Offset::Offset(*o));
            assignment.add_partition_offset(&self.topics.escalations, partition, offset)?;
        }
        consumer.assign(&assignment)?;
        Ok(consumer)
    }

    /// Attempts until the endpoint takes the page or refuses it for good.
    pub async fn deliver(&self, event: &PagerDutyEvent) -> Delivery {
        let escalation_id = &event.payload.custom_details.escalation_id;
        let mut failures = 0u32;
        loop {
            match self.attempt(event).await {
                Attempt::Delivered => return Delivery::Delivered { attempts: failures + 1 },
                Attempt::Refused(refusal) => return Delivery::Refused(refusal),
                Attempt::Retry { reason, retry_after } => {
                    failures += 1;
                    let wait = self.options.delivery.wait(failures, retry_after);
                    let wait_ms = wait.as_millis() as u64;
                    tracing::warn!(
                        escalation_id,
                        attempt = failures,
                        reason,
                        wait_ms,
                        "delivery failed, will retry"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(&self, event: &PagerDutyEvent) -> Attempt {
        let attempt = match self.client.post(self.endpoint.clone()).json(event).send().await {
            Err(error) => Attempt::Retry { reason: error_chain(&error.without_url()), retry_after: None },
            Ok(response) => self.judge(response).await,
        };
        let verdict = match attempt {
            Attempt::Delivered => Verdict::Delivered,
            Attempt::Retry { .. } => Verdict::Retry,
            Attempt::Refused(_) => Verdict::Refused,
        };
        metrics::counter!("omnifold_escalation_attempts_total", "outcome" => verdict.label()).increment(1);
        attempt
    }

    async fn judge(&self, response: reqwest::Response) -> Attempt {
        let status = response.status();
        match Verdict::of(status) {
            Verdict::Delivered => Attempt::Delivered,
            Verdict::Retry => {
                let header =
                    response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok());
                Attempt::Retry {
                    reason: format!("endpoint answered {status}"),
                    retry_after: retry_after(header),
                }
            }
            Verdict::Refused => {
                let body = response.text().await.unwrap_or_default();
                let body = truncate(&self.routing_key.redact(&body), MAX_REFUSAL_BODY);
                Attempt::Refused(Refusal { status: status.as_u16(), body, at_ms: wall_clock_ms() })
            }
        }
    }
}

fn parse_endpoint(endpoint: &str) -> Result<reqwest::Url, BridgeError> {
    let invalid = |reason: String| BridgeError::Endpoint { endpoint: endpoint.to_string(), reason };
    let url = reqwest::Url::parse(endpoint).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https".to_string()));
    }
    Ok(url)
}

/// The endpoint as logged: without credentials or query, where a secret could hide.
fn shown(endpoint: &reqwest::Url) -> String {
    let mut url = endpoint.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.to_string()
}

/// An error and its sources on one line: reqwest's own message alone says little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn open_store(path: PathBuf) -> Result<Store, BridgeError> {
    Ok(tokio::task::spawn_blocking(move || Store::open(&path)).await??)
}

type Delivered = HashMap<i32, HashSet<String>>;

/// The stored next offsets and the delivered escalation ids of every partition.
async fn load_positions(
    store: Store,
    partitions: i32,
) -> Result<(BTreeMap<i32, i64>, Delivered), BridgeError> {
    let load = move || -> Result<_, StoreError> {
        let delivered = (0..partitions)
            .map(|p| Ok((p, store.seen_ids(p)?)))
            .collect::<Result<Delivered, StoreError>>()?;
        Ok((store.offsets()?, delivered))
    };
    Ok(tokio::task::spawn_blocking(load).await??)
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// A started bridge: its store, dead-letter sender, consumer and delivered ids.
struct Running<'a> {
    bridge: &'a Bridge,
    store: Store,
    sender: OutboxSender,
    consumer: StreamConsumer,
    delivered: Delivered,
}

impl Running<'_> {
    async fn handle(
        &mut self,
        message: OwnedMessage,
        shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Flow, BridgeError> {
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
        let event = pagerduty_event(&escalation, &self.bridge.routing_key);
        let delivery = tokio::select! {
            _ = shutdown => return Ok(Flow::Stop),
            delivery = self.bridge.deliver(&event) => delivery,
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
    ) -> Result<(), BridgeError> {
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
    ) -> Result<(), BridgeError> {
        let (partition, offset) = (message.partition(), message.offset());
        tracing::error!(partition, offset, reason, "escalation not deliverable, dead-lettered");
        metrics::counter!("omnifold_escalations_refused_total").increment(1);
        let topics = &self.bridge.topics;
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
    ) -> Result<(), BridgeError> {
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
            offsets.add_partition_offset(&self.bridge.topics.escalations, partition, Offset::Offset(next));
        if let Err(error) = self.consumer.commit(&offsets, CommitMode::Async) {
            tracing::debug!(%error, "group offset commit failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn escalation() -> Escalation {
        Escalation {
            escalation_id: "critical_alert/map_violation/SKU-0001/channel=amazon/pw-08".into(),
            severity: Severity::Critical as i32,
            channel: "amazon".into(),
            owner: "Luis Ortega".into(),
            on_call: "pd-marketplaces".into(),
            summary: "amazon sells SKU-0001 at 47.00 USD, below its minimum advertised price of 49.00 USD"
                .into(),
            cause: vec!["map_violation/SKU-0001/channel=amazon/pw-08".into()],
            rule: EscalationRule::CriticalAlert as i32,
            occurred_at_ms: 1_794_182_880_000,
        }
    }

    #[test]
    fn an_escalation_maps_to_a_pagerduty_trigger() {
        let event = pagerduty_event(&escalation(), &RoutingKey::new("R0UT1NG"));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "routing_key": "R0UT1NG",
                "event_action": "trigger",
                "dedup_key": "critical_alert/map_violation/SKU-0001/channel=amazon/pw-08",
                "payload": {
                    "summary": "amazon sells SKU-0001 at 47.00 USD, below its minimum advertised price of 49.00 USD",
                    "source": "omnifold",
                    "severity": "critical",
                    "component": "amazon",
                    "custom_details": {
                        "owner": "Luis Ortega",
                        "on_call": "pd-marketplaces",
                        "rule": "CRITICAL_ALERT",
                        "cause": ["map_violation/SKU-0001/channel=amazon/pw-08"],
                        "occurred_at_ms": 1_794_182_880_000i64,
                        "escalation_id": "critical_alert/map_violation/SKU-0001/channel=amazon/pw-08"
                    }
                }
            })
        );
    }

    #[test]
    fn severities_map_to_pagerduty_ones() {
        let severity = |s: Severity| pagerduty_severity(s as i32);
        assert_eq!(severity(Severity::Critical), "critical");
        assert_eq!(severity(Severity::Warning), "warning");
        assert_eq!(severity(Severity::Info), "info");
        assert_eq!(severity(Severity::Unspecified), "critical");
        assert_eq!(pagerduty_severity(99), "critical");
    }

    #[test]
    fn the_routing_key_never_shows_in_debug_output() {
        let event = pagerduty_event(&escalation(), &RoutingKey::new("R0UT1NG"));
        let debug = format!("{event:?}");
        assert!(!debug.contains("R0UT1NG"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn the_routing_key_comes_from_a_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "abc123\n").unwrap();
        assert_eq!(RoutingKey::resolve(Some(&path)).unwrap(), RoutingKey::new("abc123"));
        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(RoutingKey::resolve(Some(&path)), Err(BridgeError::NoRoutingKey)));
        let missing = dir.path().join("missing");
        assert!(matches!(RoutingKey::resolve(Some(&missing)), Err(BridgeError::RoutingKeyFile { .. })));
    }

    #[test]
    fn long_ids_get_a_stable_dedup_key_within_pagerduty_limits() {
        let short = "order_spike/shopify/SKU-1/e3";
        assert_eq!(dedup_key(short), short);
        let long = format!("price_jump/shopify/SKU-1/{}", "x".repeat(300));
        let key = dedup_key(&long);
        assert_eq!(key.len(), MAX_DEDUP_KEY);
        assert_eq!(key, dedup_key(&long), "derived from the id only");
        assert!(key.starts_with("price_jump/shopify/SKU-1/xxx"));
        let other = format!("{long}y");
        assert_ne!(dedup_key(&other), key);
    }

    #[test]
    fn logged_endpoints_carry_no_credentials() {
        let url = reqwest::Url::parse("https://user:secret@events.example.com/v2/enqueue?token=abc").unwrap();
        assert_eq!(shown(&url), "https://events.example.com/v2/enqueue");
    }

    #[test]
    fn summaries_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn the_backoff_doubles_from_the_initial_wait_up_to_the_cap() {
        let backoff = DeliveryOptions::default().backoff();
        let schedule: Vec<u64> = (1..=9).map(|n| backoff.delay(n).as_millis() as u64).collect();
        assert_eq!(schedule, [500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]);
        assert_eq!(backoff.delay(0), Duration::from_millis(500));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(60), "no overflow");
    }

    #[test]
    fn retry_after_lengthens_a_wait_up_to_its_cap() {
        let options = DeliveryOptions::default();
        assert_eq!(options.wait(1, None), Duration::from_millis(500));
        assert_eq!(options.wait(1, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(options.wait(8, Some(Duration::from_secs(3))), Duration::from_secs(60), "never shorter");
        assert_eq!(options.wait(1, Some(Duration::from_secs(3_600))), Duration::from_secs(300));
        assert_eq!(retry_after(Some(" 2 ")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2026 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn statuses_decide_between_delivered_retry_and_refused() {
        let verdict = |code: u16| Verdict::of(StatusCode::from_u16(code).unwrap());
        assert_eq!(verdict(202), Verdict::Delivered);
        assert_eq!(verdict(200), Verdict::Delivered);
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(verdict(code), Verdict::Retry, "{code}");
        }
        for code in [301, 400, 401, 403, 404, 413, 422] {
            assert_eq!(verdict(code), Verdict::Refused, "{code}");
        }
    }

    /// A local endpoint answering from a script, then 202.
    async fn scripted_endpoint(script: Vec<(u16, Option<&'static str>)>) -> (String, Arc<Mutex<Vec<u16>>>) {
        use axum::http::{HeaderMap, HeaderValue};
        let answers = Arc::new(Mutex::new(script.into_iter().rev().collect::<Vec<_>>()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = {
            let seen = seen.clone();
            move || async move {
                let (status, retry) = answers.lock().unwrap().pop().unwrap_or((202, None));
                seen.lock().unwrap().push(status);
                let mut headers = HeaderMap::new();
                if let Some(retry) = retry {
                    headers.insert("retry-after", HeaderValue::from_static(retry));
                }
                (StatusCode::from_u16(status).unwrap(), headers, "{\"routing_key\":\"R0UT1NG\"}")
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/v2/enqueue", axum::routing::post(handler));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/v2/enqueue"), seen)
    }

    fn bridge(endpoint: String) -> Bridge {
        let options = BridgeOptions {
            kafka: KafkaOptions::default(),
            topics: TopicOptions::default(),
            group_id: default_group(),
            endpoint,
            store: PathBuf::from("unused"),
            routing_key_file: None,
            delivery: DeliveryOptions {
                initial_backoff_ms: 10,
                max_backoff_ms: 40,
                ..DeliveryOptions::default()
            },
        };
        Bridge::with_routing_key(options, RoutingKey::new("R0UT1NG")).unwrap()
    }

    #[tokio::test]
    async fn retries_transient_answers_until_delivered() {
        let (endpoint, seen) = scripted_endpoint(vec![(503, None), (503, None), (429, Some("1"))]).await;
        let bridge = bridge(endpoint);
        let started = std::time::Instant::now();
        let delivery = bridge.deliver(&pagerduty_event(&escalation(), &bridge.routing_key)).await;
        assert!(matches!(delivery, Delivery::Delivered { attempts: 4 }), "{delivery:?}");
        assert_eq!(*seen.lock().unwrap(), [503, 503, 429, 202]);
        assert!(
            started.elapsed() >= Duration::from_millis(1_030),
            "10 + 20 ms of backoff, then Retry-After 1 s"
        );
    }

    #[tokio::test]
    async fn a_client_error_is_refused_at_once_without_echoing_the_key() {
        let (endpoint, seen) = scripted_endpoint(vec![(400, None)]).await;
        let bridge = bridge(endpoint);
        match bridge.deliver(&pagerduty_event(&escalation(), &bridge.routing_key)).await {
            Delivery::Refused(refusal) => {
                assert_eq!(refusal.status, 400);
                assert_eq!(refusal.body, "{\"routing_key\":\"<routing key>\"}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(*seen.lock().unwrap(), [400]);
    }

    #[tokio::test]
    async fn connection_errors_are_retried() {
        // a port nobody listens on: bind, note it, close it
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let bridge = bridge(format!("http://{addr}/v2/enqueue"));
        let event = pagerduty_event(&escalation(), &bridge.routing_key);
        let result = tokio::time::timeout(Duration::from_millis(300), bridge.deliver(&event)).await;
        assert!(result.is_err(), "still retrying: {result:?}");
    }
}

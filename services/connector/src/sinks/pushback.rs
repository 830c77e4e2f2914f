//! The availability push-back sink: consumes `omnifold.availability.v1` and sets each
//! channel's number through the channel's API: Shopify's GraphQL Admin API
//! `inventorySetQuantities` with compare-and-swap ([`graphql`]; the legacy REST
//! `inventory_levels/set` with `api = "rest"`) and Amazon Listings Items `patchListingsItem`
//! of `fulfillment_availability`.
//!
//! Order: for one (channel, sku) only the newest record waiting is ever sent, and a record
//! is never sent after a newer one was. Newer means a later offset in the key's partition
//! (the coordinator's processing order; `decided_at_ms` is event time and can go backwards
//! with a late event), or a later `decided_at_ms` if the key moved partition. The last sent
//! (partition, offset, decided_at_ms) per key is kept in sled, so a restart, which reads the
//! compacted topic from the beginning, re-sends nothing older. A newer record with the number
//! the channel already has is recorded without a request.
//!
//! The quantity last set per Shopify (item, location) is kept in the same store
//! (`set/shopify:<item>:<location>`): it is the `changeFromQuantity` of the next GraphQL set,
//! so that a change made on Shopify's side meanwhile is seen, counted
//! (`omnifold_pushback_conflicts_total`) and logged, never overwritten silently.
//!
//! Failures: 429 (and GraphQL `THROTTLED`) pauses the channel for Retry-After (the bucket's
//! refill time); 5xx and transport errors retry the key
//! with exponential backoff (a newer number replaces the waiting one); other 4xx drop the
//! number (counted as a rejection). `omnifold_pushback_lag_ms` records decision-to-push lag
//! (wall clock at the successful push minus `decided_at_ms`).
//!
//! Caught up (`exit_when_caught_up`) means every partition has reported its end
//! (`enable.partition.eof`) and nothing waits to be pushed: the high watermark is not the end
//! on nisshi, which answers it short (ARCHITECTURE.md, "The broker").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use omnifold_proto::ChannelAvailability;
use omnifold_runtime::{BrokerHealth, HealthContext, KafkaError, KafkaOptions, Topics, wall_clock_ms};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{ConfigError, ConnectorConfig, PushbackOptions, Secret, ShopifyApi};
use crate::deliver::{count_ignored, count_rejection};

pub mod graphql;

const ADAPTER: &str = "pushback";
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Why push-back could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PushbackError {
    #[error("the connector config has no [pushback]")]
    NotConfigured,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(reqwest::Error),
    #[error("cannot open push-back state {path}: {error}")]
    OpenState { path: PathBuf, error: sled::Error },
    #[error("push-back state: {0}")]
    State(#[from] sled::Error),
    #[error("cannot encode push-back state: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("consume {topic}: {error}")]
    Consume { topic: String, error: rdkafka::error::KafkaError },
    #[error("the metadata lookup was cancelled")]
    Cancelled,
}

impl From<rdkafka::error::KafkaError> for PushbackError {
    fn from(error: rdkafka::error::KafkaError) -> Self {
        PushbackError::Kafka(error.into())
    }
}

/// Where a record sits, to tell newer from older.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub partition: i32,
    pub offset: i64,
    pub decided_at_ms: i64,
}

impl Stamp {
    /// Whether `self` comes after `other` for the same key.
    pub fn is_newer_than(&self, other: &Stamp) -> bool {
        if self.partition == other.partition {
            self.offset > other.offset
        } else {
            self.decided_at_ms > other.decided_at_ms
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pushed {
    stamp: Stamp,
    available: i64,
}

/// One channel API.
#[derive(Debug, Clone)]
pub enum Target {
    Shopify {
        /// `{base}/admin/api/{version}/graphql.json`, or with the REST API
        /// `{base}/admin/api/{version}/inventory_levels/set.json`
        url: String,
        api: ShopifyApi,
        location_id: u64,
        token: Secret,
        /// SKU -> inventory item id.
        items: HashMap<String, u64>,
    },
    Amazon {
        base_url: String,
        seller_id: String,
        marketplace_ids: Vec<String>,
        token: Secret,
        product_type: String,
        fulfillment_channel_code: String,
        /// SKU -> seller SKU where they differ.
        seller_skus: HashMap<String, String>,
    },
}

impl Target {
    /// The targets of `[pushback]`, by channel id, with their secrets loaded.
    pub fn from_config(config: &ConnectorConfig) -> Result<BTreeMap<String, Target>, PushbackError> {
        let mut targets = BTreeMap::new();
        let Some(pushback) = &config.pushback else { return Ok(targets) };
        if let Some(s) = &pushback.shopify {
            let items = config
                .shopify
                .as_ref()
                .map(|shopify| {
                    shopify
                        .inventory_items
                        .iter()
                        .filter_map(|(item, sku)| Some((sku.clone(), item.parse().ok()?)))
                        .collect()
                })
                .unwrap_or_default();
            let endpoint = match s.api {
                ShopifyApi::Graphql => "graphql.json",
                ShopifyApi::Rest => "inventory_levels/set.json",
            };
            targets.insert(
                s.channel.clone(),
                Target::Shopify {
                    url: format!(
                        "{}/admin/api/{}/{endpoint}",
                        s.base_url.trim_end_matches('/'),
                        s.api_version
                    ),
                    api: s.api,
                    location_id: s.location_id.parse().map_err(|_| {
                        ConfigError::Invalid("pushback.shopify.location_id is not numeric".into())
                    })?,
                    token: s.access_token.load()?,
                    items,
                },
            );
        }
        if let Some(a) = &pushback.amazon {
            let seller_skus = config
                .amazon
                .as_ref()
                .map(|amazon| amazon.skus.iter().map(|(seller, sku)| (sku.clone(), seller.clone())).collect())
                .unwrap_or_default();
            targets.insert(
                a.channel.clone(),
                Target::Amazon {
                    base_url: a.base_url.trim_end_matches('/').to_string(),
                    seller_id: a.seller_id.clone(),
                    marketplace_ids: a.marketplace_ids.clone(),
                    token: a.access_token.load()?,
                    product_type: a.product_type.clone(),
                    fulfillment_channel_code: a.fulfillment_channel_code.clone(),
                    seller_skus,
                },
            );
        }
        Ok(targets)
    }

    /// What a number for `sku` sets, in the channel's own ids, where push-back remembers the
    /// quantity it set (the next compare-and-swap's expected value): Shopify's (item,
    /// location). None for targets without compare-and-swap.
    pub fn level_key(&self, sku: &str) -> Option<String> {
        match self {
            Target::Shopify { api: ShopifyApi::Graphql, location_id, items, .. } => {
                items.get(sku).map(|item| format!("set/shopify:{item}:{location_id}"))
            }
            _ => None,
        }
    }
}

/// One number for one SKU, from one availability record.
#[derive(Debug, Clone)]
pub struct PushRequest<'a> {
    pub sku: &'a str,
    pub available: i64,
    /// The quantity push-back set last where this number goes ([`Target::level_key`]).
    pub last_set: Option<i64>,
    /// Names the availability record, e.g. Shopify's `referenceDocumentUri`.
    pub reference: String,
}

impl<'a> PushRequest<'a> {
    /// A number with nothing known of what was set before, named `reference`.
    pub fn new(sku: &'a str, available: i64, reference: impl Into<String>) -> Self {
        PushRequest { sku, available, last_set: None, reference: reference.into() }
    }
}

/// `gid://omnifold/ChannelAvailability/<channel>:<sku>:<partition>:<offset>`, the record's
/// place in the availability topic (path-encoded).
pub fn reference(channel: &str, sku: &str, stamp: &Stamp) -> String {
    format!(
        "gid://omnifold/ChannelAvailability/{}:{}:{}:{}",
        encode_path(channel),
        encode_path(sku),
        stamp.partition,
        stamp.offset
    )
}

/// What a push came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    Done,
    /// The channel had `found`, not the `expected` quantity push-back set last: someone
    /// changed it meanwhile. The number was then set from `found` (or `found` was it already).
    DoneAfterConflict {
        expected: i64,
        found: i64,
    },
    /// The channel's quantity changed again between the read and the second set: try later.
    StillConflicting {
        expected: i64,
        found: i64,
    },
    /// 429: wait this long before the channel's next request.
    RateLimited(Duration),
    /// 5xx or no answer: try again later.
    Retry(String),
    /// Any other answer, or nothing to address the item by: the number is dropped.
    Refused(&'static str, String),
}

/// Sends one number to one channel.
pub async fn push(client: &reqwest::Client, target: &Target, push: &PushRequest<'_>) -> PushResult {
    let (sku, available) = (push.sku, push.available);
    let request = match target {
        Target::Shopify { url, api, location_id, token, items } => {
            let Some(item) = items.get(sku) else {
                return PushResult::Refused(
                    "unmapped_sku",
                    format!("SKU {sku} is not in [shopify.inventory_items]"),
                );
            };
            let Ok(token) = token.expose_str() else {
                return PushResult::Refused("bad_secret", "token is not UTF-8".into());
            };
            if *api == ShopifyApi::Graphql {
                let request = graphql::SetAvailable {
                    url,
                    token,
                    item_id: *item,
                    location_id: *location_id,
                    quantity: available,
                    last_set: push.last_set,
                    reference: &push.reference,
                };
                return graphql::set_available(client, &request).await;
            }
            let body = serde_json::json!({
                "location_id": location_id,
                "inventory_item_id": item,
                "available": available,
            });
            client.post(url).header("X-Shopify-Access-Token", token).json(&body)
        }
        Target::Amazon {
            base_url,
            seller_id,
            marketplace_ids,
            token,
            product_type,
            fulfillment_channel_code,
            seller_skus,
        } => {
            let seller_sku = seller_skus.get(sku).map_or(sku, String::as_str);
            let Ok(token) = token.expose_str() else {
                return PushResult::Refused("bad_secret", "token is not UTF-8".into());
            };
            let url = format!(
                "{base_url}/listings/2021-08-01/items/{}/{}?marketplaceIds={}",
                encode_path(seller_id),
                encode_path(seller_sku),
                marketplace_ids.iter().map(|m| encode_path(m)).collect::<Vec<_>>().join(",")
            );
            let body = serde_json::json!({
                "productType": product_type,
                "patches": [{
                    "op": "replace",
                    "path": "/attributes/fulfillment_availability",
                    "value": [{ "fulfillment_channel_code": fulfillment_channel_code, "quantity": available }],
                }],
            });
            client.patch(url).header("x-amz-access-token", token).json(&body)
        }
    };
    match request.send().await {
        Err(error) => PushResult::Retry(format!("request failed: {error}")),
        Ok(response) => match status_result(&response) {
            None => PushResult::Done,
            Some(PushResult::Refused(reason, why)) => {
                let text = response.text().await.unwrap_or_default();
                let text: String = text.chars().take(300).collect();
                PushResult::Refused(reason, format!("{why}: {text}"))
            }
            Some(result) => result,
        },
    }
}

/// What an answer's status comes to: None for success; 429 waits for Retry-After, 5xx
/// retries, any other status refuses.
fn status_result(response: &reqwest::Response) -> Option<PushResult> {
    let status = response.status();
    if status.is_success() {
        None
    } else if status.as_u16() == 429 {
        let wait = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(Duration::from_secs(1), |s| Duration::from_millis((s * 1000.0) as u64));
        Some(PushResult::RateLimited(wait))
    } else if status.is_server_error() {
        Some(PushResult::Retry(format!("status {status}")))
    } else {
        Some(PushResult::Refused("push_refused", format!("status {status}")))
    }
}

/// Percent-encodes a path segment (RFC 3986 unreserved characters stay).
pub fn encode_path(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Pending {
    sku: String,
    channel: String,
    available: i64,
    stamp: Stamp,
    attempts: u32,
    not_before: Instant,
}

/// Counts of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushStats {
    pub records: usize,
    pub pushed: usize,
    pub superseded: usize,
    /// Newer records whose number equals the last one sent: recorded, not sent again.
    pub unchanged: usize,
    pub stale: usize,
    pub retries: usize,
    pub rate_limited: usize,
    pub refused: usize,
    /// Compare-and-swap conflicts: the channel's quantity was not the one set last.
    pub conflicts: usize,
}

/// The push-back sink.
pub struct Pushback {
    kafka: KafkaOptions,
    topic: String,
    options: PushbackOptions,
    targets: BTreeMap<String, Target>,
    client: reqwest::Client,
    store: sled::Db,
}

impl Pushback {
    /// The sink of `[pushback]`; the targets also read `[shopify]` and `[amazon]`'s id maps.
    pub fn new(
        kafka: &KafkaOptions,
        topics: &Topics,
        config: &ConnectorConfig,
    ) -> Result<Self, PushbackError> {
        let options = config.pushback.clone().ok_or(PushbackError::NotConfigured)?;
        let targets = Target::from_config(config)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(options.request_timeout_ms))
            .build()
            .map_err(PushbackError::HttpClient)?;
        let store = crate::sled_dir::open(&options.state)
            .map_err(|error| PushbackError::OpenState { path: options.state.clone(), error })?;
        Ok(Pushback {
            kafka: kafka.clone(),
            topic: topics.availability.to_string(),
            options,
            targets,
            client,
            store,
        })
    }

    /// The last number pushed to `channel` for `sku`.
    pub fn last_pushed(&self, channel: &str, sku: &str) -> Option<i64> {
        self.load(&format!("{channel}/{sku}")).map(|p| p.available)
    }

    fn load(&self, key: &str) -> Option<Pushed> {
        let bytes = self.store.get(key.as_bytes()).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// The quantity push-back set last where `channel`'s number for `sku` goes, if that
    /// channel compares (Shopify GraphQL).
    pub fn last_set(&self, channel: &str, sku: &str) -> Option<i64> {
        let key = self.targets.get(channel)?.level_key(sku)?;
        let bytes = self.store.get(key.as_bytes()).ok()??;
        Some(i64::from_be_bytes(bytes.as_ref().try_into().ok()?))
    }

    /// Runs until `shutdown`, or with `exit_when_caught_up` until every partition was read to
    /// its end and nothing waits to be pushed.
    pub async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
        exit_when_caught_up: bool,
    ) -> Result<PushStats, PushbackError> {
        let (consumer, mut unread) = self.consumer().await?;
        let mut stats = PushStats::default();
        let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
        let mut paused: HashMap<String, Instant> = HashMap::new();
        tokio::pin!(shutdown);
        loop {
            self.push_due(&mut pending, &mut paused, &mut stats).await?;
            if exit_when_caught_up && unread.is_empty() && pending.is_empty() {
                return Ok(stats);
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(stats),
                _ = tokio::time::sleep_until(next_due(&pending, &paused)) => {}
                message = consumer.recv() => match message {
                    Ok(message) => {
                        self.take(message.partition(), message.offset(), message.payload(), &mut pending, &mut stats)
                    }
                    Err(rdkafka::error::KafkaError::PartitionEOF(partition)) => {
                        unread.remove(&partition);
                    }
                    Err(error) => return Err(PushbackError::Consume { topic: self.topic.clone(), error }),
                }
            }
        }
    }

    /// A consumer of every partition from the beginning that reports each partition's end,
    /// and the partitions, none of which has reported it yet.
    async fn consumer(&self) -> Result<(StreamConsumer<HealthContext>, BTreeSet<i32>), PushbackError> {
        let partitions = self.partitions().await?;
        let mut assignment = TopicPartitionList::new();
        for partition in &partitions {
            assignment.add_partition_offset(&self.topic, *partition, Offset::Beginning)?;
        }
        let consumer: StreamConsumer<HealthContext> = self
            .kafka
            .assigning_config(&self.options.group_id)
            .set("fetch.wait.max.ms", "50")
            .set("enable.partition.eof", "true")
            .create_with_context(HealthContext::new(BrokerHealth::new(None)))?;
        consumer.assign(&assignment)?;
        Ok((consumer, partitions))
    }

    /// The topic's partitions, from a metadata request on the blocking pool.
    async fn partitions(&self) -> Result<BTreeSet<i32>, PushbackError> {
        let config = self.kafka.client_config();
        let topic = self.topic.clone();
        let lookup = tokio::task::spawn_blocking(move || -> Result<BTreeSet<i32>, PushbackError> {
            let probe: BaseConsumer = config.create()?;
            let metadata = probe.fetch_metadata(Some(&topic), METADATA_TIMEOUT)?;
            let partitions: BTreeSet<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if partitions.is_empty() {
                return Err(KafkaError::MissingTopic(topic).into());
            }
            Ok(partitions)
        });
        lookup.await.map_err(|_| PushbackError::Cancelled)?
    }

    /// Counts one record and queues its number unless a newer one was sent or waits.
    fn take(
        &self,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
        pending: &mut BTreeMap<String, Pending>,
        stats: &mut PushStats,
    ) {
        stats.records += 1;
        let Some(record) = payload.and_then(|p| ChannelAvailability::decode(p).ok()) else {
            count_rejection(ADAPTER, "undecodable");
            tracing::warn!(partition, offset, "availability record does not decode; skipped");
            return;
        };
        if !self.targets.contains_key(&record.channel) {
            count_ignored(ADAPTER, "channel_not_pushed");
            return;
        }
        let key = format!("{}/{}", record.channel, record.sku);
        let stamp = Stamp { partition, offset, decided_at_ms: record.decided_at_ms };
        if let Some(last) = self.load(&key)
            && !stamp.is_newer_than(&last.stamp)
        {
            stats.stale += 1;
            return;
        }
        let now = Instant::now();
        let (attempts, not_before) = match pending.get(&key) {
            Some(waiting) if !stamp.is_newer_than(&waiting.stamp) => {
                stats.stale += 1;
                return;
            }
            Some(waiting) => {
                stats.superseded += 1;
                (waiting.attempts, waiting.not_before.max(now))
            }
            None => (0, now),
        };
        pending.insert(
            key,
            Pending {
                sku: record.sku,
                channel: record.channel,
                available: record.available,
                stamp,
                attempts,
                not_before,
            },
        );
    }

    async fn push_due(
        &self,
        pending: &mut BTreeMap<String, Pending>,
        paused: &mut HashMap<String, Instant>,
        stats: &mut PushStats,
    ) -> Result<(), PushbackError> {
        loop {
            let now = Instant::now();
            let due = pending
                .iter()
                .find(|(_, p)| {
                    p.not_before <= now && paused.get(&p.channel).is_none_or(|until| *until <= now)
                })
                .map(|(k, _)| k.clone());
            let Some(key) = due else { return Ok(()) };
            let item = pending.remove(&key).expect("the key was just found");
            if self.load(&key).is_some_and(|last| last.available == item.available) {
                let pushed = Pushed { stamp: item.stamp, available: item.available };
                self.store.insert(key.as_bytes(), serde_json::to_vec(&pushed)?)?;
                stats.unchanged += 1;
                continue;
            }
            let target = &self.targets[&item.channel];
            let request = PushRequest {
                sku: &item.sku,
                available: item.available,
                last_set: self.last_set(&item.channel, &item.sku),
                reference: reference(&item.channel, &item.sku, &item.stamp),
            };
            let result = push(&self.client, target, &request).await;
            if let PushResult::DoneAfterConflict { expected, found }
            | PushResult::StillConflicting { expected, found } = result
            {
                stats.conflicts += 1;
                metrics::counter!("omnifold_pushback_conflicts_total", "channel" => item.channel.clone())
                    .increment(1);
                tracing::warn!(
                    key,
                    expected,
                    found,
                    available = item.available,
                    "the channel's quantity changed since push-back set it; setting ours from it"
                );
            }
            match result {
                PushResult::Done | PushResult::DoneAfterConflict { .. } => {
                    let pushed = Pushed { stamp: item.stamp, available: item.available };
                    self.store.insert(key.as_bytes(), serde_json::to_vec(&pushed)?)?;
                    if let Some(level) = target.level_key(&item.sku) {
                        self.store.insert(level.as_bytes(), &item.available.to_be_bytes())?;
                    }
                    self.store.flush_async().await?;
                    let lag = (wall_clock_ms() - item.stamp.decided_at_ms).max(0);
                    metrics::histogram!("omnifold_pushback_lag_ms", "channel" => item.channel.clone())
                        .record(lag as f64);
                    metrics::counter!("omnifold_pushback_pushes_total", "channel" => item.channel.clone())
                        .increment(1);
                    tracing::debug!(key, available = item.available, lag_ms = lag, "pushed");
                    stats.pushed += 1;
                }
                PushResult::RateLimited(wait) => {
                    stats.rate_limited += 1;
                    let wait = wait.min(Duration::from_millis(self.options.max_backoff_ms));
                    tracing::info!(channel = item.channel, ?wait, "429 from the channel; pausing it");
                    paused.insert(item.channel.clone(), now + wait);
                    pending.insert(key, item);
                }
                PushResult::Retry(_) | PushResult::StillConflicting { .. } => {
                    let why = match result {
                        PushResult::Retry(why) => why,
                        _ => "the channel's quantity changed again while it was set".to_string(),
                    };
                    stats.retries += 1;
                    let exponent = item.attempts.min(16);
                    let backoff = self
                        .options
                        .initial_backoff_ms
                        .saturating_mul(1 << exponent)
                        .min(self.options.max_backoff_ms);
                    tracing::warn!(
                        key,
                        attempt = item.attempts + 1,
                        backoff_ms = backoff,
                        "push failed, will retry: {why}"
                    );
                    let retry = Pending {
                        attempts: item.attempts + 1,
                        not_before: now + Duration::from_millis(backoff),
                        ..item
                    };
                    pending.insert(key, retry);
                }
                PushResult::Refused(reason, why) => {
                    stats.refused += 1;
                    count_rejection(ADAPTER, reason);
                    tracing::error!(
                        key,
                        available = item.available,
                        reason,
                        "channel refused the number: {why}"
                    );
                }
            }
        }
    }
}

/// When the next waiting number may be pushed: its own backoff and its channel's pause both
/// over. An hour away when nothing waits, so that only a record or shutdown wakes the loop.
fn next_due(pending: &BTreeMap<String, Pending>, paused: &HashMap<String, Instant>) -> Instant {
    pending
        .values()
        .map(|p| p.not_before.max(paused.get(&p.channel).copied().unwrap_or(p.not_before)))
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
}

//! The availability push-back sink: consumes `omnifold.availability.v1` and sets each
//! channel's number through the channel's API: Shopify `inventory_levels/set` and Amazon
//! Listings Items `patchListingsItem` of `fulfillment_availability`.
//!
//! Order: for one (channel, sku) only the newest record waiting is ever sent, and a record
//! is never sent after a newer one was. Newer means a later offset in the key's partition
//! (the coordinator's processing order; `decided_at_ms` is event time and can go backwards
//! with a late event), or a later `decided_at_ms` if the key moved partition. The last sent
//! (partition, offset, decided_at_ms) per key is kept in sled, so a restart, which reads the
//! compacted topic from the beginning, re-sends nothing older. A newer record with the number
//! the channel already has is recorded without a request.
//!
//! Failures: 429 pauses the channel for Retry-After; 5xx and transport errors retry the key
//! with exponential backoff (a newer number replaces the waiting one); other 4xx drop the
//! number (counted as a rejection). `omnifold_pushback_lag_ms` records decision-to-push lag
//! (wall clock at the successful push minus `decided_at_ms`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use omnifold_proto::ChannelAvailability;
use omnifold_runtime::{KafkaOptions, Topics, wall_clock_ms};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{ConnectorConfig, PushbackOptions, Secret};
use crate::deliver::{count_ignored, count_rejection};

const ADAPTER: &str = "pushback";

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
        /// `{base}/admin/api/{version}/inventory_levels/set.json`
        url: String,
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
    pub fn from_config(config: &ConnectorConfig) -> anyhow::Result<BTreeMap<String, Target>> {
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
            targets.insert(
                s.channel.clone(),
                Target::Shopify {
                    url: format!(
                        "{}/admin/api/{}/inventory_levels/set.json",
                        s.base_url.trim_end_matches('/'),
                        s.api_version
                    ),
                    location_id: s
                        .location_id
                        .parse()
                        .map_err(|_| anyhow::anyhow!("pushback.shopify.location_id is not numeric"))?,
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
}

/// What a push came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    Done,
    /// 429: wait this long before the channel's next request.
    RateLimited(Duration),
    /// 5xx or no answer: try again later.
    Retry(String),
    /// Any other answer, or nothing to address the item by: the number is dropped.
    Refused(&'static str, String),
}

/// Sends one number to one channel.
pub async fn push(client: &reqwest::Client, target: &Target, sku: &str, available: i64) -> PushResult {
    let request = match target {
        Target::Shopify { url, location_id, token, items } => {
            let Some(item) = items.get(sku) else {
                return PushResult::Refused(
                    "unmapped_sku",
                    format!("SKU {sku} is not in [shopify.inventory_items]"),
                );
            };
            let Ok(token) = token.expose_str() else {
                return PushResult::Refused("bad_secret", "token is not UTF-8".into());
            };
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
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                PushResult::Done
            } else if status.as_u16() == 429 {
                let wait = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map_or(Duration::from_secs(1), |s| Duration::from_millis((s * 1000.0) as u64));
                PushResult::RateLimited(wait)
            } else if status.is_server_error() {
                PushResult::Retry(format!("status {status}"))
            } else {
                let text = response.text().await.unwrap_or_default();
                let text: String = text.chars().take(300).collect();
                PushResult::Refused("push_refused", format!("status {status}: {text}"))
            }
        }
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
    pub fn new(kafka: &KafkaOptions, topics: &Topics, config: &ConnectorConfig) -> anyhow::Result<Self> {
        let options = config
            .pushback
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the connector config has no [pushback]"))?;
        let targets = Target::from_config(config)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(options.request_timeout_ms))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
        let store = sled::open(&options.state)
            .map_err(|e| anyhow::anyhow!("cannot open push-back state {}: {e}", options.state.display()))?;
        Ok(Pushback {
            kafka: kafka.clone(),
            topic: topics.availability.clone(),
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

    /// Runs until `shutdown`, or with `exit_when_caught_up` until every record that was in the
    /// topic at start is consumed and nothing waits to be pushed.
    pub async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
        exit_when_caught_up: bool,
    ) -> anyhow::Result<PushStats> {
        let (consumer, mut remaining) = self.consumer().await?;
        let mut stats = PushStats::default();
        let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
        let mut paused: HashMap<String, Instant> = HashMap::new();
        tokio::pin!(shutdown);
        loop {
            self.push_due(&mut pending, &mut paused, &mut stats).await?;
            if exit_when_caught_up && remaining.is_empty() && pending.is_empty() {
                return Ok(stats);
            }
            let next_due = pending
                .values()
                .map(|p| p.not_before.max(paused.get(&p.channel).copied().unwrap_or(p.not_before)))
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = &mut shutdown => return Ok(stats),
                _ = tokio::time::sleep_until(next_due) => {}
                message = consumer.recv() => {
                    let message = message.map_err(|e| anyhow::anyhow!("consume {}: {e}", self.topic))?;
                    let (partition, offset) = (message.partition(), message.offset());
                    if let Some(high) = remaining.get(&partition)
                        && offset + 1 >= *high
                    {
                        remaining.remove(&partition);
                    }
                    stats.records += 1;
                    self.take(partition, offset, message.payload(), &mut pending, &mut stats);
                }
            }
        }
    }

    /// A consumer of every partition from the beginning, and the end offset of each
    /// non-empty partition at start.
    async fn consumer(&self) -> anyhow::Result<(StreamConsumer, HashMap<i32, i64>)> {
        let config = self.kafka.client_config();
        let topic = self.topic.clone();
        let group = self.options.group_id.clone();
        let (list, remaining) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let probe: BaseConsumer = config.create()?;
            let metadata = probe.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let found = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
                .ok_or_else(|| anyhow::anyhow!("topic {topic} does not exist"))?;
            let mut list = TopicPartitionList::new();
            let mut remaining = HashMap::new();
            for partition in found.partitions() {
                list.add_partition_offset(&topic, partition.id(), Offset::Beginning)?;
                let (low, high) = probe.fetch_watermarks(&topic, partition.id(), Duration::from_secs(10))?;
                if high > low {
                    remaining.insert(partition.id(), high);
                }
            }
            let _ = group;
            Ok((list, remaining))
        })
        .await??;
        let consumer: StreamConsumer = self
            .kafka
            .client_config()
            .set("group.id", &self.options.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        consumer.assign(&list)?;
        Ok((consumer, remaining))
    }

    fn take(
        &self,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
        pending: &mut BTreeMap<String, Pending>,
        stats: &mut PushStats,
    ) {
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
    ) -> anyhow::Result<()> {
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
            match push(&self.client, target, &item.sku, item.available).await {
                PushResult::Done => {
                    let pushed = Pushed { stamp: item.stamp, available: item.available };
                    self.store.insert(key.as_bytes(), serde_json::to_vec(&pushed)?)?;
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
                PushResult::Retry(why) => {
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

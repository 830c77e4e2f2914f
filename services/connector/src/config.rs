//! The connector configuration: a TOML file of its own (`deploy/local/connectors.toml`),
//! beside the coordination contract, which it does not change. Per adapter: the contract
//! channel it reports for, how channel ids (locations, ASINs, variants, inventory items)
//! map to contract ids, and where its secrets are (an environment variable or a file,
//! never the value itself; secrets are never logged).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use omnifold_domain::Rules;
use serde::Deserialize;

/// The whole connector configuration; every section is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    pub shopify: Option<ShopifyOptions>,
    pub amazon: Option<AmazonOptions>,
    pub woocommerce: Option<WooOptions>,
    pub drop_dir: Option<DropDirOptions>,
    pub pushback: Option<PushbackOptions>,
}

/// Where a secret is: `{ env = "NAME" }` or `{ file = "path" }`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.env, &self.file) {
            (Some(env), _) => write!(f, "SecretRef(env {env})"),
            (None, Some(file)) => write!(f, "SecretRef(file {})", file.display()),
            (None, None) => write!(f, "SecretRef(none)"),
        }
    }
}

/// A secret's bytes. Its `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as text, for headers.
    pub fn expose_str(&self) -> Result<&str, ConfigError> {
        std::str::from_utf8(&self.0)
            .map_err(|_| ConfigError::Invalid("a secret used in a header is not UTF-8".into()))
    }
}

impl SecretRef {
    /// Reads the secret: the environment variable, else the file (one trailing newline
    /// removed). The error names where it looked, never the value.
    pub fn load(&self) -> Result<Secret, ConfigError> {
        let value = match (&self.env, &self.file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid("a secret has both `env` and `file`".into()));
            }
            (Some(name), None) => std::env::var(name)
                .map_err(|_| ConfigError::Invalid(format!("secret environment variable {name} is not set")))?
                .into_bytes(),
            (None, Some(path)) => std::fs::read(path).map_err(|e| {
                ConfigError::Invalid(format!("cannot read secret file {}: {e}", path.display()))
            })?,
            (None, None) => return Err(ConfigError::Invalid("a secret needs `env` or `file`".into())),
        };
        let mut value = value;
        while value.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            value.pop();
        }
        if value.is_empty() {
            return Err(ConfigError::Invalid(format!("secret {self:?} is empty")));
        }
        Ok(Secret(value))
    }
}

/// Shopify webhooks (`omnifold-connector shopify`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifyOptions {
    /// The contract channel these webhooks report for.
    pub channel: String,
    #[serde(default = "listen_shopify")]
    pub listen: SocketAddr,
    /// The app's client secret, which signs every webhook (X-Shopify-Hmac-Sha256).
    pub secret: SecretRef,
    /// The shop's currency: variant prices in products/update carry none.
    pub currency: String,
    #[serde(default = "body_limit")]
    pub max_body_bytes: usize,
    /// How long a delivery waits for the broker to acknowledge its events before it is
    /// answered 503; keep it well inside the channel's own timeout.
    #[serde(default = "publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Shopify location id -> contract location id.
    #[serde(default)]
    pub locations: BTreeMap<String, String>,
    /// Variant id -> SKU, for variants whose SKU is empty.
    #[serde(default)]
    pub variants: BTreeMap<String, String>,
    /// Inventory item id -> SKU (inventory_levels/update carries no SKU).
    #[serde(default)]
    pub inventory_items: BTreeMap<String, String>,
    /// Contract location of fulfillments that name no location_id; without it they are refused.
    #[serde(default)]
    pub default_ship_location: Option<String>,
    /// sled directory keeping the newest inventory level applied per (item, location), so that
    /// it outlives a restart; in memory only when unset.
    #[serde(default)]
    pub state: Option<PathBuf>,
}

/// Amazon SP-API notifications and Orders API responses (`omnifold-connector amazon`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmazonOptions {
    pub channel: String,
    #[serde(default = "listen_amazon")]
    pub listen: SocketAddr,
    /// When set, the HTTP endpoint requires `Authorization: Bearer <token>` (SQS relays
    /// carry no signature of their own).
    #[serde(default)]
    pub token: Option<SecretRef>,
    #[serde(default = "body_limit")]
    pub max_body_bytes: usize,
    /// How long a delivery waits for the broker to acknowledge its events before it is
    /// answered 503; keep it well inside the channel's own timeout.
    #[serde(default = "publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Marketplace of Orders API responses that do not say (our own `MarketplaceId` field).
    pub default_marketplace: String,
    /// `AFN` (FBA) or `MFN`, for Orders API responses that do not say.
    #[serde(default = "afn")]
    pub default_fulfillment_channel: String,
    /// Marketplace id -> the contract's FBA location for it.
    #[serde(default)]
    pub fba_locations: BTreeMap<String, String>,
    /// Contract location MFN (merchant-fulfilled) orders ship from.
    #[serde(default)]
    pub mfn_location: Option<String>,
    /// When set, LISTINGS_ITEM_MFN_QUANTITY_CHANGE counts stock at this location. Unset by
    /// default: the MFN quantity is what push-back wrote, so counting it would echo.
    #[serde(default)]
    pub mfn_quantity_location: Option<String>,
    /// ASIN -> SKU (offer and pricing notifications carry no seller SKU).
    #[serde(default)]
    pub asins: BTreeMap<String, String>,
    /// Seller SKU -> SKU where they differ (identity otherwise).
    #[serde(default)]
    pub skus: BTreeMap<String, String>,
    /// sled directory keeping the newest FBA and MFN level applied per SKU and marketplace, so
    /// that it outlives a restart; in memory only when unset.
    #[serde(default)]
    pub state: Option<PathBuf>,
    /// Polling the Orders API (`omnifold-connector amazon-poll`), `[amazon.sp_api]`.
    #[serde(default)]
    pub sp_api: Option<SpApiOptions>,
}

/// The SP-API Orders API pull client: an LWA refresh token exchanged for access tokens,
/// getOrders by `LastUpdatedAfter` and getOrderItems, published through `[amazon]`'s mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpApiOptions {
    /// The regional endpoint, e.g. `https://sellingpartnerapi-na.amazon.com`. No default.
    pub endpoint: String,
    /// The LWA token endpoint, `https://api.amazon.com/auth/o2/token` in production. No
    /// default.
    pub token_url: String,
    /// The LWA app's client id (not a secret).
    pub client_id: String,
    pub client_secret: SecretRef,
    /// The seller's LWA refresh token (`Atzr|...`).
    pub refresh_token: SecretRef,
    /// `MarketplaceIds` of getOrders.
    pub marketplace_ids: Vec<String>,
    /// sled directory with the checkpoint (the end of the last window polled completely) and
    /// the event ids published per order.
    pub state: PathBuf,
    /// Where the first window starts (RFC 3339) when the state has no checkpoint yet.
    #[serde(default)]
    pub start_after: Option<String>,
    /// How long to wait between polls once caught up.
    #[serde(default = "spapi_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// The longest window one getOrders query covers (a backfill moves in steps of it).
    #[serde(default = "spapi_max_window_ms")]
    pub max_window_ms: u64,
    /// A window ends this long before now: Amazon wants `LastUpdatedBefore` at least two
    /// minutes in the past.
    #[serde(default = "spapi_settle_ms")]
    pub settle_ms: u64,
    /// Each window starts this long before the checkpoint, to read again what the index may
    /// have shown late; orders already published publish nothing again.
    #[serde(default)]
    pub overlap_ms: u64,
    #[serde(default = "request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Retries of one request answered 429, 503 or not at all, with exponential backoff.
    #[serde(default = "spapi_max_retries")]
    pub max_retries: u32,
    #[serde(default = "spapi_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "max_backoff_ms")]
    pub max_backoff_ms: u64,
}

/// WooCommerce order webhooks (`omnifold-connector woocommerce`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WooOptions {
    pub channel: String,
    #[serde(default = "listen_woo")]
    pub listen: SocketAddr,
    /// The webhook's secret (X-WC-Webhook-Signature).
    pub secret: SecretRef,
    #[serde(default = "body_limit")]
    pub max_body_bytes: usize,
    /// How long a delivery waits for the broker to acknowledge its events before it is
    /// answered 503; keep it well inside the channel's own timeout.
    #[serde(default = "publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Product or variation id -> SKU, for lines without a SKU.
    #[serde(default)]
    pub products: BTreeMap<String, String>,
    /// Contract location completed orders ship from; without it completion is not a shipment.
    #[serde(default)]
    pub ship_location: Option<String>,
}

/// Wholesale / B2B files dropped into a directory (`omnifold-connector drop-dir`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropDirOptions {
    pub channel: String,
    pub dir: PathBuf,
    /// Names and hashes of processed files; default `<dir>/.omnifold-processed`.
    #[serde(default)]
    pub state: Option<PathBuf>,
    #[serde(default = "poll_ms")]
    pub poll_ms: u64,
    /// Currency of CSV rows without one and of X12 orders without a CUR segment.
    pub currency: String,
    /// X12 PO1 product id qualifiers to take the SKU from, in order of preference; by default
    /// SK (SKU), VP (vendor part), BP (buyer part), VN (vendor's item number).
    #[serde(default = "qualifiers")]
    pub product_id_qualifiers: Vec<String>,
    /// Buyer or vendor part number -> SKU where they differ.
    #[serde(default)]
    pub parts: BTreeMap<String, String>,
    /// Location names used in CSV files -> contract location (identity otherwise).
    #[serde(default)]
    pub locations: BTreeMap<String, String>,
}

/// The availability push-back sink (`omnifold-connector pushback`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushbackOptions {
    #[serde(default = "pushback_group")]
    pub group_id: String,
    /// sled directory remembering the last number pushed per (channel, sku).
    pub state: PathBuf,
    #[serde(default = "initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "max_backoff_ms")]
    pub max_backoff_ms: u64,
    #[serde(default = "request_timeout_ms")]
    pub request_timeout_ms: u64,
    pub shopify: Option<ShopifyPushOptions>,
    pub amazon: Option<AmazonPushOptions>,
}

/// Shopify: the GraphQL Admin API's `inventorySetQuantities` (by default) or the REST
/// `inventory_levels/set`; SKUs map to inventory items through `[shopify.inventory_items]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifyPushOptions {
    pub channel: String,
    /// e.g. `https://your-shop.myshopify.com`.
    pub base_url: String,
    /// The Shopify location whose `available` the channel's number sets. Its own
    /// inventory_levels/update webhooks are echoes and are ignored.
    pub location_id: String,
    pub access_token: SecretRef,
    /// The Admin API version in the path, `/admin/api/<version>/graphql.json`.
    #[serde(default = "shopify_api_version")]
    pub api_version: String,
    /// `graphql` (default) or `rest`, the legacy REST Admin API.
    #[serde(default)]
    pub api: ShopifyApi,
}

/// Which Shopify Admin API push-back uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShopifyApi {
    /// `inventorySetQuantities` with compare-and-swap (`changeFromQuantity`).
    #[default]
    Graphql,
    /// `inventory_levels/set.json`, which sets the number whatever Shopify has.
    Rest,
}

impl std::str::FromStr for ShopifyApi {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "graphql" => Ok(ShopifyApi::Graphql),
            "rest" => Ok(ShopifyApi::Rest),
            other => Err(format!("{other:?} is neither graphql nor rest")),
        }
    }
}

/// Amazon Listings Items `patchListingsItem` of `fulfillment_availability`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmazonPushOptions {
    pub channel: String,
    /// e.g. `https://sellingpartnerapi-na.amazon.com`.
    pub base_url: String,
    pub seller_id: String,
    pub marketplace_ids: Vec<String>,
    /// An LWA access token (`x-amz-access-token`).
    pub access_token: SecretRef,
    #[serde(default = "product_type")]
    pub product_type: String,
    #[serde(default = "fulfillment_channel_code")]
    pub fulfillment_channel_code: String,
}

fn listen_shopify() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}
fn listen_amazon() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8082))
}
fn listen_woo() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8083))
}
fn body_limit() -> usize {
    1024 * 1024
}
fn publish_timeout_ms() -> u64 {
    crate::http::PUBLISH_TIMEOUT_MS
}
fn afn() -> String {
    "AFN".into()
}
fn poll_ms() -> u64 {
    2000
}
fn qualifiers() -> Vec<String> {
    ["SK", "VP", "BP", "VN"].map(String::from).to_vec()
}
fn pushback_group() -> String {
    "omnifold-pushback".into()
}
fn initial_backoff_ms() -> u64 {
    200
}
fn max_backoff_ms() -> u64 {
    30_000
}
fn request_timeout_ms() -> u64 {
    10_000
}
fn spapi_poll_interval_ms() -> u64 {
    60_000
}
fn spapi_max_window_ms() -> u64 {
    86_400_000
}
fn spapi_settle_ms() -> u64 {
    120_000
}
fn spapi_max_retries() -> u32 {
    6
}
fn spapi_initial_backoff_ms() -> u64 {
    1000
}
fn shopify_api_version() -> String {
    "2026-10".into()
}
fn product_type() -> String {
    "PRODUCT".into()
}
fn fulfillment_channel_code() -> String {
    "DEFAULT".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read connector config {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("connector config {path} is invalid: {error}")]
    Parse { path: PathBuf, error: String },
    #[error("{0}")]
    Invalid(String),
}

impl ConnectorConfig {
    /// Reads and parses the file (not yet checked against the contract: see [`Self::problems`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        Self::parse(&text).map_err(|error| match error {
            ConfigError::Parse { error, .. } => ConfigError::Parse { path: path.to_path_buf(), error },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: ConnectorConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::new(), error: e.to_string() })?;
        let problems = config.shape_problems();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems.join("; ")));
        }
        Ok(config)
    }

    /// Problems that need no contract: secrets named twice, one-to-one maps, codes.
    fn shape_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut secret = |path: &str, secret: &SecretRef| {
            if secret.env.is_some() == secret.file.is_some() {
                problems.push(format!("{path}: a secret needs exactly one of `env` or `file`"));
            }
        };
        if let Some(s) = &self.shopify {
            secret("shopify.secret", &s.secret);
        }
        if let Some(w) = &self.woocommerce {
            secret("woocommerce.secret", &w.secret);
        }
        if let Some(t) = self.amazon.as_ref().and_then(|a| a.token.as_ref()) {
            secret("amazon.token", t);
        }
        if let Some(sp) = self.amazon.as_ref().and_then(|a| a.sp_api.as_ref()) {
            secret("amazon.sp_api.client_secret", &sp.client_secret);
            secret("amazon.sp_api.refresh_token", &sp.refresh_token);
        }
        if let Some(p) = &self.pushback {
            if let Some(s) = &p.shopify {
                secret("pushback.shopify.access_token", &s.access_token);
            }
            if let Some(a) = &p.amazon {
                secret("pushback.amazon.access_token", &a.access_token);
            }
        }
        for (section, timeout) in self.publish_timeouts() {
            if timeout == 0 {
                problems.push(format!("{section}.publish_timeout_ms: must be above 0"));
            }
        }
        if let Some(sp) = self.amazon.as_ref().and_then(|a| a.sp_api.as_ref()) {
            problems.extend(sp.problems());
        }
        if let Some(a) = &self.amazon
            && !matches!(a.default_fulfillment_channel.as_str(), "AFN" | "MFN")
        {
            problems.push(format!(
                "amazon.default_fulfillment_channel: {:?} is neither AFN nor MFN",
                a.default_fulfillment_channel
            ));
        }
        if let Some(p) = &self.pushback {
            if let Some(s) = &p.shopify {
                match &self.shopify {
                    None => {
                        problems.push("pushback.shopify needs [shopify.inventory_items] to find items".into())
                    }
                    Some(shopify) => {
                        if let Some(sku) = duplicate_value(&shopify.inventory_items) {
                            problems.push(format!("shopify.inventory_items: SKU {sku} is mapped twice"));
                        }
                        for item in shopify.inventory_items.keys() {
                            if item.parse::<u64>().is_err() {
                                problems
                                    .push(format!("shopify.inventory_items: {item:?} is not a numeric id"));
                            }
                        }
                    }
                }
                if s.location_id.parse::<u64>().is_err() {
                    problems.push(format!(
                        "pushback.shopify.location_id: {:?} is not a numeric id",
                        s.location_id
                    ));
                }
            }
            if p.amazon.is_some()
                && let Some(amazon) = &self.amazon
                && let Some(sku) = duplicate_value(&amazon.skus)
            {
                problems.push(format!("amazon.skus: SKU {sku} is mapped twice"));
            }
        }
        problems
    }

    /// Each receiver's `publish_timeout_ms`, by section.
    fn publish_timeouts(&self) -> Vec<(&'static str, u64)> {
        let shopify = self.shopify.as_ref().map(|s| ("shopify", s.publish_timeout_ms));
        let amazon = self.amazon.as_ref().map(|a| ("amazon", a.publish_timeout_ms));
        let woo = self.woocommerce.as_ref().map(|w| ("woocommerce", w.publish_timeout_ms));
        [shopify, amazon, woo].into_iter().flatten().collect()
    }

    /// What in the file the contract does not know: channels and locations. Empty when sound.
    pub fn problems(&self, rules: &Rules) -> Vec<String> {
        let mut problems = Vec::new();
        let mut channel = |path: &str, id: &str| {
            if rules.channel(id).is_none() {
                problems.push(format!("{path}: unknown channel {id}"));
            }
        };
        if let Some(s) = &self.shopify {
            channel("shopify.channel", &s.channel);
        }
        if let Some(a) = &self.amazon {
            channel("amazon.channel", &a.channel);
        }
        if let Some(w) = &self.woocommerce {
            channel("woocommerce.channel", &w.channel);
        }
        if let Some(d) = &self.drop_dir {
            channel("drop_dir.channel", &d.channel);
        }
        if let Some(p) = &self.pushback {
            if let Some(s) = &p.shopify {
                channel("pushback.shopify.channel", &s.channel);
            }
            if let Some(a) = &p.amazon {
                channel("pushback.amazon.channel", &a.channel);
            }
        }
        let mut location = |path: String, id: &str| {
            if rules.location(id).is_none() {
                problems.push(format!("{path}: unknown location {id}"));
            }
        };
        if let Some(s) = &self.shopify {
            for (from, to) in &s.locations {
                location(format!("shopify.locations.{from}"), to);
            }
            if let Some(l) = &s.default_ship_location {
                location("shopify.default_ship_location".into(), l);
            }
        }
        if let Some(a) = &self.amazon {
            for (from, to) in &a.fba_locations {
                location(format!("amazon.fba_locations.{from}"), to);
            }
            for (path, l) in
                [("mfn_location", &a.mfn_location), ("mfn_quantity_location", &a.mfn_quantity_location)]
            {
                if let Some(l) = l {
                    location(format!("amazon.{path}"), l);
                }
            }
        }
        if let Some(w) = &self.woocommerce
            && let Some(l) = &w.ship_location
        {
            location("woocommerce.ship_location".into(), l);
        }
        if let Some(d) = &self.drop_dir {
            for (from, to) in &d.locations {
                location(format!("drop_dir.locations.{from}"), to);
            }
        }
        problems
    }

    /// The Shopify location whose inventory updates are push-back echoes, if push-back sets one.
    pub fn shopify_echo_location(&self) -> Option<&str> {
        self.pushback.as_ref().and_then(|p| p.shopify.as_ref()).map(|s| s.location_id.as_str())
    }
}

impl SpApiOptions {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (field, url) in [("endpoint", &self.endpoint), ("token_url", &self.token_url)] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!("amazon.sp_api.{field}: {url:?} is not an http(s) URL"));
            }
        }
        if self.marketplace_ids.is_empty() {
            problems.push("amazon.sp_api.marketplace_ids: name at least one marketplace".into());
        }
        if self.client_id.trim().is_empty() {
            problems.push("amazon.sp_api.client_id: is empty".into());
        }
        if let Some(start) = &self.start_after
            && crate::timefmt::parse_ms(start).is_none()
        {
            problems.push(format!("amazon.sp_api.start_after: {start:?} is not an RFC 3339 date-time"));
        }
        if self.max_window_ms == 0 {
            problems.push("amazon.sp_api.max_window_ms: must be above 0".into());
        }
        problems
    }
}

fn duplicate_value(map: &BTreeMap<String, String>) -> Option<&str> {
    let mut seen = std::collections::BTreeSet::new();
    map.values().find(|v| !seen.insert(v.as_str())).map(String::as_str)
}

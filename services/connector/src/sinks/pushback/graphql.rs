//! Shopify's GraphQL Admin API: `inventorySetQuantities` with compare-and-swap.
//!
//! The request (API versions 2026-04 and later, checked against shopify.dev):
//!
//! ```graphql
//! mutation SetAvailable($input: InventorySetQuantitiesInput!) {
//!   inventorySetQuantities(input: $input) @idempotent(key: "<key>") {
//!     inventoryAdjustmentGroup { id }
//!     userErrors { code field message }
//!   }
//! }
//! ```
//!
//! with `input = { name: "available", reason: "correction", referenceDocumentUri, quantities:
//! [{ inventoryItemId, locationId, quantity, changeFromQuantity }] }`. Since 2026-04
//! `changeFromQuantity` replaces `compareQuantity` and `ignoreCompareQuantity` (both removed)
//! and must be given (null opts out, which we never do), and the `@idempotent` directive is
//! required. A stale `changeFromQuantity` is answered with the user error
//! `CHANGE_FROM_QUANTITY_STALE` (`COMPARE_QUANTITY_STALE` before 2026-04; both are taken).
//!
//! `changeFromQuantity` is the quantity push-back itself set last for the (item, location),
//! kept in the sink's sled store; when it has none (the first push) it reads Shopify's
//! current quantity first. When Shopify answers stale, someone else changed the number since
//! (a sale, a manual edit): the sink reads the current quantity, counts the conflict
//! (`omnifold_pushback_conflicts_total`, a warning naming both numbers) and sets its number
//! once more from the fresh one. The coordinator's number stands because Shopify's own change
//! reaches the coordinator as an event (an order, an inventory update) and comes back as a
//! newer number; the conflict is never silent. A second stale answer in a row is retried
//! later with backoff, reading again.
//!
//! Throttling: Shopify answers a throttled request with HTTP 200 and an error whose
//! `extensions.code` is `THROTTLED`; the wait is what the request costs beyond the bucket's
//! `currentlyAvailable` divided by its `restoreRate` (`extensions.cost.throttleStatus`).
//! Other GraphQL errors refuse the number (`graphql_error`), `INTERNAL_SERVER_ERROR` retries.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::PushResult;

/// The mutation; `{key}` is the idempotency key.
const SET_AVAILABLE: &str = "mutation SetAvailable($input: InventorySetQuantitiesInput!) { \
inventorySetQuantities(input: $input) @idempotent(key: \"{key}\") { \
inventoryAdjustmentGroup { id } userErrors { code field message } } }";

/// Shopify's current `available` at a location.
pub const READ_AVAILABLE: &str = "query Available($item: ID!, $location: ID!) { \
inventoryItem(id: $item) { inventoryLevel(locationId: $location) { \
quantities(names: [\"available\"]) { name quantity } } } }";

/// The user error codes of a stale `changeFromQuantity` (2026-04 on) or `compareQuantity`.
const STALE: [&str; 2] = ["CHANGE_FROM_QUANTITY_STALE", "COMPARE_QUANTITY_STALE"];

/// One number to set at one Shopify location.
#[derive(Debug, Clone)]
pub struct SetAvailable<'a> {
    /// `{base}/admin/api/{version}/graphql.json`
    pub url: &'a str,
    pub token: &'a str,
    pub item_id: u64,
    pub location_id: u64,
    pub quantity: i64,
    /// The quantity push-back set last at this (item, location), if it knows it.
    pub last_set: Option<i64>,
    /// `referenceDocumentUri`: the availability record this number comes from.
    pub reference: &'a str,
}

impl SetAvailable<'_> {
    fn item_gid(&self) -> String {
        format!("gid://shopify/InventoryItem/{}", self.item_id)
    }

    fn location_gid(&self) -> String {
        format!("gid://shopify/Location/{}", self.location_id)
    }

    /// The mutation's body, comparing against `from`.
    pub fn mutation(&self, from: i64) -> Value {
        let key = idempotency_key(self.reference, self.item_id, self.location_id, self.quantity, from);
        json!({
            "query": SET_AVAILABLE.replace("{key}", &key),
            "variables": { "input": {
                "name": "available",
                "reason": "correction",
                "referenceDocumentUri": self.reference,
                "quantities": [{
                    "inventoryItemId": self.item_gid(),
                    "locationId": self.location_gid(),
                    "quantity": self.quantity,
                    "changeFromQuantity": from,
                }],
            }},
        })
    }

    fn read(&self) -> Value {
        json!({
            "query": READ_AVAILABLE,
            "variables": { "item": self.item_gid(), "location": self.location_gid() },
        })
    }
}

/// A UUID-shaped key that is the same for the same request (a retry after a timeout is then
/// applied once) and new for a new number or a new `changeFromQuantity`.
pub fn idempotency_key(reference: &str, item: u64, location: u64, quantity: i64, from: i64) -> String {
    let digest = Sha256::digest(format!("{reference}|{item}|{location}|{quantity}|{from}"));
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Sets the number with compare-and-swap; see the module documentation.
pub async fn set_available(client: &reqwest::Client, request: &SetAvailable<'_>) -> PushResult {
    let from = match request.last_set {
        Some(from) => from,
        None => match read_available(client, request).await {
            Ok(current) => current,
            Err(result) => return result,
        },
    };
    if from == request.quantity && request.last_set.is_none() {
        // Shopify already has the number
        return PushResult::Done;
    }
    match mutate(client, request, from).await {
        Mutation::Set => return PushResult::Done,
        Mutation::Stale => {}
        Mutation::Failed(result) => return result,
    }
    let found = match read_available(client, request).await {
        Ok(current) => current,
        Err(result) => return result,
    };
    let expected = from;
    if found == request.quantity {
        return PushResult::DoneAfterConflict { expected, found };
    }
    match mutate(client, request, found).await {
        Mutation::Set => PushResult::DoneAfterConflict { expected, found },
        Mutation::Stale => PushResult::StillConflicting { expected, found },
        Mutation::Failed(result) => result,
    }
}

enum Mutation {
    Set,
    Stale,
    Failed(PushResult),
}

async fn mutate(client: &reqwest::Client, request: &SetAvailable<'_>, from: i64) -> Mutation {
    let data = match post(client, request, &request.mutation(from)).await {
        Ok(data) => data,
        Err(result) => return Mutation::Failed(result),
    };
    let errors = &data["inventorySetQuantities"]["userErrors"];
    let Some(errors) = errors.as_array() else {
        return Mutation::Failed(PushResult::Refused(
            "graphql_error",
            "the answer has no inventorySetQuantities.userErrors".into(),
        ));
    };
    if errors.is_empty() {
        return Mutation::Set;
    }
    let code = |e: &Value| e["code"].as_str().unwrap_or("").to_string();
    if errors.iter().any(|e| STALE.contains(&code(e).as_str())) {
        return Mutation::Stale;
    }
    let messages: Vec<String> =
        errors.iter().map(|e| format!("{}: {}", code(e), e["message"].as_str().unwrap_or(""))).collect();
    Mutation::Failed(PushResult::Refused("push_refused", messages.join("; ")))
}

async fn read_available(client: &reqwest::Client, request: &SetAvailable<'_>) -> Result<i64, PushResult> {
    let data = post(client, request, &request.read()).await?;
    let level = &data["inventoryItem"]["inventoryLevel"];
    if level.is_null() {
        return Err(PushResult::Refused(
            "not_stocked",
            format!("inventory item {} is not stocked at location {}", request.item_id, request.location_id),
        ));
    }
    let quantities = level["quantities"].as_array().map(Vec::as_slice).unwrap_or_default();
    quantities
        .iter()
        .find(|q| q["name"] == "available")
        .and_then(|q| q["quantity"].as_i64())
        .ok_or_else(|| PushResult::Refused("graphql_error", "the answer has no available quantity".into()))
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    data: Value,
    #[serde(default)]
    errors: Vec<GraphqlError>,
    #[serde(default)]
    extensions: Value,
}

#[derive(Deserialize)]
struct GraphqlError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    extensions: Value,
}

/// Posts one GraphQL request; its `data`, or what the answer comes to.
async fn post(
    client: &reqwest::Client,
    request: &SetAvailable<'_>,
    body: &Value,
) -> Result<Value, PushResult> {
    let response = client
        .post(request.url)
        .header("X-Shopify-Access-Token", request.token)
        .json(body)
        .send()
        .await
        .map_err(|error| PushResult::Retry(format!("request failed: {error}")))?;
    if let Some(result) = super::status_result(&response) {
        let text: String = response.text().await.unwrap_or_default().chars().take(300).collect();
        return Err(match result {
            PushResult::Refused(reason, why) => PushResult::Refused(reason, format!("{why}: {text}")),
            other => other,
        });
    }
    let answer: Answer = response
        .json()
        .await
        .map_err(|error| PushResult::Retry(format!("the answer is not GraphQL JSON: {error}")))?;
    if answer.errors.is_empty() {
        return Ok(answer.data);
    }
    let code = |e: &GraphqlError| e.extensions["code"].as_str().unwrap_or("").to_string();
    if answer.errors.iter().any(|e| code(e) == "THROTTLED") {
        return Err(PushResult::RateLimited(throttle_wait(&answer.extensions)));
    }
    let messages: Vec<String> = answer.errors.iter().map(|e| format!("{} {}", code(e), e.message)).collect();
    if answer.errors.iter().any(|e| code(e) == "INTERNAL_SERVER_ERROR") {
        return Err(PushResult::Retry(messages.join("; ")));
    }
    Err(PushResult::Refused("graphql_error", messages.join("; ")))
}

/// How long until the bucket holds what the request costs: `(requestedQueryCost -
/// currentlyAvailable) / restoreRate` seconds, at least one; a second when the answer does
/// not say.
pub fn throttle_wait(extensions: &Value) -> Duration {
    let cost = &extensions["cost"];
    let status = &cost["throttleStatus"];
    let (Some(requested), Some(available), Some(rate)) = (
        cost["requestedQueryCost"].as_f64(),
        status["currentlyAvailable"].as_f64(),
        status["restoreRate"].as_f64(),
    ) else {
        return Duration::from_secs(1);
    };
    if !(rate.is_finite() && rate > 0.0) {
        return Duration::from_secs(1);
    }
    let seconds = ((requested - available) / rate).clamp(1.0, 3600.0);
    Duration::from_millis((seconds * 1000.0).ceil() as u64)
}

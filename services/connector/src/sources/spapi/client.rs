//! SP-API requests: the LWA token, each operation's token bucket, and retries.
//!
//! A request waits for its operation's bucket ([`limiter`](super::limiter)), carries the
//! access token in `x-amz-access-token`, and lets the answer's `x-amzn-RateLimit-Limit` set
//! the bucket's rate. 429 (counted in `omnifold_spapi_throttled_total{operation}`), 5xx and no
//! answer are retried with exponential backoff (`initial_backoff_ms` doubling up to
//! `max_backoff_ms`), at most `max_retries` times. 401 and 403 drop the token and are tried
//! once more with a new one (an expired or revoked token); a second refusal is an error.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::SpApiError;
use super::limiter::{Bucket, Plan};
use super::lwa::{Credentials, TokenCache};

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Retry {
    /// The wait before retry number `attempt` (1, 2, ...).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// What the client did, for the logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub requests: u64,
    pub throttled: u64,
    pub server_errors: u64,
    pub unauthorized: u64,
    pub token_exchanges: u64,
}

/// An SP-API client for one seller and region.
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    credentials: Credentials,
    tokens: TokenCache,
    buckets: HashMap<&'static str, Bucket>,
    plans: HashMap<&'static str, Plan>,
    retry: Retry,
    stats: ClientStats,
}

enum Attempt {
    Done(Value),
    /// Worth another try after a backoff.
    Again(String),
    Unauthorized(String),
}

impl Client {
    pub fn new(
        endpoint: &str,
        credentials: Credentials,
        plans: HashMap<&'static str, Plan>,
        retry: Retry,
        timeout: Duration,
    ) -> Result<Self, SpApiError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(|e| SpApiError::Http { operation: "client", error: e.to_string() })?;
        Ok(Client {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            credentials,
            tokens: TokenCache::default(),
            buckets: HashMap::new(),
            plans,
            retry,
            stats: ClientStats::default(),
        })
    }

    pub fn stats(&self) -> ClientStats {
        ClientStats { token_exchanges: self.tokens.exchanges, ..self.stats.clone() }
    }

    /// GETs `path_and_query` as `operation`; the answer's JSON.
    pub async fn get(&mut self, operation: &'static str, path_and_query: &str) -> Result<Value, SpApiError> {
        let url = format!("{}{path_and_query}", self.endpoint);
        let mut attempts = 0;
        let mut refreshed = false;
        loop {
            let wait = self.bucket(operation).take(Instant::now());
            if !wait.is_zero() {
                tracing::debug!(operation, wait_ms = wait.as_millis() as u64, "waiting for the rate limit");
                tokio::time::sleep(wait).await;
            }
            let token = self.tokens.get(&self.http, &self.credentials).await?;
            self.stats.requests += 1;
            match self.attempt(operation, &url, &token).await? {
                Attempt::Done(value) => return Ok(value),
                Attempt::Unauthorized(why) if !refreshed => {
                    self.stats.unauthorized += 1;
                    tracing::info!(
                        operation,
                        "the access token was refused; exchanging for a new one: {why}"
                    );
                    self.tokens.drop_token();
                    refreshed = true;
                }
                Attempt::Unauthorized(why) => {
                    return Err(SpApiError::Status { operation, status: 403, body: why });
                }
                Attempt::Again(why) => {
                    attempts += 1;
                    if attempts > self.retry.max_retries {
                        return Err(SpApiError::GaveUp { operation, attempts, last: why });
                    }
                    let backoff = self.retry.backoff(attempts);
                    tracing::warn!(
                        operation,
                        attempt = attempts,
                        backoff_ms = backoff.as_millis() as u64,
                        "{why}; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    fn bucket(&mut self, operation: &'static str) -> &mut Bucket {
        let plan = self.plans.get(operation).copied().unwrap_or(Plan { rate: 1.0, burst: 1.0 });
        self.buckets.entry(operation).or_insert_with(|| Bucket::new(plan, Instant::now()))
    }

    async fn attempt(
        &mut self,
        operation: &'static str,
        url: &str,
        token: &crate::config::Secret,
    ) -> Result<Attempt, SpApiError> {
        let token =
            token.expose_str().map_err(|_| SpApiError::Auth("the access token is not UTF-8".into()))?;
        let sent = self
            .http
            .get(url)
            .header("x-amz-access-token", token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Ok(Attempt::Again(format!("no answer: {error}"))),
        };
        if let Some(limit) = response.headers().get("x-amzn-RateLimit-Limit").and_then(|v| v.to_str().ok()) {
            self.bucket(operation).observe(limit, Instant::now());
        }
        let status = response.status();
        if status.is_success() {
            return response
                .json()
                .await
                .map(Attempt::Done)
                .map_err(|e| SpApiError::Json { operation, error: e.to_string() });
        }
        let body: String = response.text().await.unwrap_or_default().chars().take(300).collect();
        match status.as_u16() {
            401 | 403 => Ok(Attempt::Unauthorized(format!("status {status}: {body}"))),
            429 => {
                self.stats.throttled += 1;
                metrics::counter!("omnifold_spapi_throttled_total", "operation" => operation).increment(1);
                self.bucket(operation).throttled(Instant::now());
                Ok(Attempt::Again(format!("throttled (429): {body}")))
            }
            500..=599 => {
                self.stats.server_errors += 1;
                Ok(Attempt::Again(format!("status {status}: {body}")))
            }
            other => Err(SpApiError::Status { operation, status: other, body }),
        }
    }
}

//! Delivering one page: each attempt bounded by a timeout, transient failures retried with
//! exponential backoff (and `Retry-After`) without a limit, any other answer a refusal.

use std::time::Duration;

use omnifold_runtime::wall_clock_ms;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::OncallError;
use super::pagerduty::{PagerDutyEvent, RoutingKey, truncate};

/// How much of a refusing endpoint's answer is kept.
const MAX_REFUSAL_BODY: usize = 512;

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

/// The on-call endpoint: where pages are POSTed, with the routing key they carry.
pub struct Endpoint {
    url: reqwest::Url,
    routing_key: RoutingKey,
    client: reqwest::Client,
    options: DeliveryOptions,
}

impl Endpoint {
    /// Checks the endpoint and builds the HTTP client; connects to nothing yet.
    pub fn new(
        endpoint: &str,
        routing_key: RoutingKey,
        options: DeliveryOptions,
    ) -> Result<Endpoint, OncallError> {
        let url = parse_endpoint(endpoint)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(options.attempt_timeout_ms))
            // a redirected POST would lose its body; a moved endpoint is a configuration error
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("omnifold-oncall/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(OncallError::HttpClient)?;
        Ok(Endpoint { url, routing_key, client, options })
    }

    pub fn routing_key(&self) -> &RoutingKey {
        &self.routing_key
    }

    /// The endpoint as logged: without credentials or query, where a secret could hide.
    pub fn shown(&self) -> String {
        shown(&self.url)
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
                    let wait = self.options.wait(failures, retry_after);
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
        let attempt = match self.client.post(self.url.clone()).json(event).send().await {
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

fn parse_endpoint(endpoint: &str) -> Result<reqwest::Url, OncallError> {
    let invalid = |reason: String| OncallError::Endpoint { endpoint: endpoint.to_string(), reason };
    let url = reqwest::Url::parse(endpoint).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https".to_string()));
    }
    Ok(url)
}

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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::super::pagerduty::pagerduty_event;
    use super::super::pagerduty::tests::escalation;
    use super::*;

    #[test]
    fn logged_endpoints_carry_no_credentials() {
        let url = reqwest::Url::parse("https://user:secret@events.example.com/v2/enqueue?token=abc").unwrap();
        assert_eq!(shown(&url), "https://events.example.com/v2/enqueue");
    }

    #[test]
    fn endpoints_must_be_http_urls() {
        let options = DeliveryOptions::default();
        for endpoint in ["ftp://events.example.com/v2/enqueue", "events.example.com"] {
            let built = Endpoint::new(endpoint, RoutingKey::new("R0UT1NG"), options);
            assert!(matches!(built, Err(OncallError::Endpoint { .. })), "{endpoint}");
        }
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

    fn endpoint(url: String) -> Endpoint {
        let options =
            DeliveryOptions { initial_backoff_ms: 10, max_backoff_ms: 40, ..DeliveryOptions::default() };
        Endpoint::new(&url, RoutingKey::new("R0UT1NG"), options).unwrap()
    }

    #[tokio::test]
    async fn retries_transient_answers_until_delivered() {
        let (url, seen) = scripted_endpoint(vec![(503, None), (503, None), (429, Some("1"))]).await;
        let endpoint = endpoint(url);
        let started = std::time::Instant::now();
        let delivery = endpoint.deliver(&pagerduty_event(&escalation(), endpoint.routing_key())).await;
        assert!(matches!(delivery, Delivery::Delivered { attempts: 4 }), "{delivery:?}");
        assert_eq!(*seen.lock().unwrap(), [503, 503, 429, 202]);
        assert!(
            started.elapsed() >= Duration::from_millis(1_030),
            "10 + 20 ms of backoff, then Retry-After 1 s"
        );
    }

    #[tokio::test]
    async fn a_client_error_is_refused_at_once_without_echoing_the_key() {
        let (url, seen) = scripted_endpoint(vec![(400, None)]).await;
        let endpoint = endpoint(url);
        match endpoint.deliver(&pagerduty_event(&escalation(), endpoint.routing_key())).await {
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
        let endpoint = endpoint(format!("http://{addr}/v2/enqueue"));
        let event = pagerduty_event(&escalation(), endpoint.routing_key());
        let result = tokio::time::timeout(Duration::from_millis(300), endpoint.deliver(&event)).await;
        assert!(result.is_err(), "still retrying: {result:?}");
    }
}

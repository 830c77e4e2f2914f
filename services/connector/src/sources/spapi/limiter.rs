//! One token bucket per SP-API operation, at the rate Amazon says it applied.
//!
//! Each operation has a usage plan: a rate (requests per second) and a burst. The defaults
//! are the documented ones (getOrders 0.0167/s with a burst of 20, getOrderItems 0.5/s with
//! 30); a seller can have higher ones, and every answer may carry the rate applied in
//! `x-amzn-RateLimit-Limit`, which the bucket then follows. A 429 empties the bucket, so the
//! retry (after the caller's exponential backoff) also waits for a token.
//!
//! Time is passed in, so that the arithmetic is tested without a clock.

use std::time::{Duration, Instant};

/// An operation's usage plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Requests per second.
    pub rate: f64,
    pub burst: f64,
}

/// getOrders' default usage plan.
pub const GET_ORDERS: Plan = Plan { rate: 0.0167, burst: 20.0 };
/// getOrderItems' default usage plan.
pub const GET_ORDER_ITEMS: Plan = Plan { rate: 0.5, burst: 30.0 };

/// A token bucket; see the module documentation.
#[derive(Debug, Clone)]
pub struct Bucket {
    plan: Plan,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(plan: Plan, now: Instant) -> Self {
        Bucket { plan, tokens: plan.burst, at: now }
    }

    pub fn rate(&self) -> f64 {
        self.plan.rate
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.plan.rate).min(self.plan.burst);
        self.at = self.at.max(now);
    }

    /// Takes a token for a request at `now`: how long the request must wait for it (zero
    /// when the bucket has one). The token is the caller's once the wait is over.
    pub fn take(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.plan.rate)
        }
    }

    /// Follows an `x-amzn-RateLimit-Limit` value: the rate Amazon applied. Values that are
    /// not a positive number are ignored.
    pub fn observe(&mut self, header: &str, now: Instant) {
        let Ok(rate) = header.trim().parse::<f64>() else { return };
        if rate.is_finite() && rate > 0.0 {
            self.refill(now);
            self.plan.rate = rate;
        }
    }

    /// A 429: no token is left at `now`.
    pub fn throttled(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = self.tokens.min(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_is_free_then_requests_are_spaced_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(Plan { rate: 0.5, burst: 2.0 }, t0);
        assert_eq!(bucket.take(t0), Duration::ZERO);
        assert_eq!(bucket.take(t0), Duration::ZERO);
        assert_eq!(bucket.take(t0), Duration::from_secs(2), "one token every 2 s at 0.5/s");
        // the waiting request took the token that comes at t0 + 2 s
        assert_eq!(bucket.take(t0 + Duration::from_secs(2)), Duration::from_secs(2));
    }

    #[test]
    fn follows_the_rate_limit_header() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(Plan { rate: 0.5, burst: 1.0 }, t0);
        assert_eq!(bucket.take(t0), Duration::ZERO);
        bucket.observe("4.0", t0);
        assert_eq!(bucket.rate(), 4.0);
        assert_eq!(bucket.take(t0), Duration::from_millis(250));
        bucket.observe("none", t0);
        bucket.observe("-1", t0);
        assert_eq!(bucket.rate(), 4.0, "nonsense is ignored");
    }

    #[test]
    fn a_429_empties_the_bucket() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(Plan { rate: 1.0, burst: 5.0 }, t0);
        bucket.throttled(t0);
        assert_eq!(bucket.take(t0), Duration::from_secs(1));
    }
}

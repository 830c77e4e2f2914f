//! How long the fold loop gathers one batch.
//!
//! A batch's outputs leave only after its commit, so while the feed leaves the loop waiting
//! for records, batches close after `batch_max_ms` and an event's outputs leave within about
//! that. While the loop is behind (a rebuild, a restart after an outage, a burst beyond its
//! rate), every event waits for the backlog anyway; then batches grow, up to
//! [`CATCH_UP_FACTOR`] times `batch_max_ms` (and `batch_max_events` always), because a larger
//! batch writes each dirty SKU's core, the offsets and the commit's fsync once for more
//! events: fold + commit over 1,000 SKUs ran 36,408 events/s in batches of 700 events (20 ms
//! at that rate) and 46,281 in batches of 5,000 (`omnifold-bench history --batch`).
//!
//! Behind means the loop's polls waited for less than a tenth of the batch's time: the
//! records were already there. One batch that waited more brings the budget back at once.

use std::time::Duration;

/// The longest batch while behind, in multiples of `batch_max_ms`.
pub const CATCH_UP_FACTOR: u32 = 10;

/// A batch that waited for records less than this share of its time was behind the feed.
const BEHIND_WAITING_SHARE: u32 = 10;

/// The time budget of the next batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    base: Duration,
    current: Duration,
}

impl Pacing {
    pub fn new(batch_max_ms: u64) -> Self {
        let base = Duration::from_millis(batch_max_ms);
        Pacing { base, current: base }
    }

    /// How long the next batch may gather events.
    pub fn budget(&self) -> Duration {
        self.current
    }

    /// Learns from a batch that took `took`, of which its polls spent `waited` waiting.
    pub fn after_batch(&mut self, waited: Duration, took: Duration) {
        let behind = waited * BEHIND_WAITING_SHARE < took;
        let next = if behind { (self.current * 2).min(self.base * CATCH_UP_FACTOR) } else { self.base };
        if next != self.current {
            tracing::debug!(budget_ms = next.as_millis() as u64, behind, "batch budget changed");
        }
        self.current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_loop_that_waits_for_records_keeps_short_batches() {
        let mut pacing = Pacing::new(20);
        for _ in 0..5 {
            pacing.after_batch(8 * MS, 20 * MS);
        }
        assert_eq!(pacing.budget(), 20 * MS);
    }

    #[test]
    fn a_loop_behind_the_feed_doubles_its_batches_up_to_the_bound() {
        let mut pacing = Pacing::new(20);
        let budgets: Vec<Duration> = (0..6)
            .map(|_| {
                let took = pacing.budget();
                pacing.after_batch(took / 50, took);
                pacing.budget()
            })
            .collect();
        assert_eq!(budgets, [40 * MS, 80 * MS, 160 * MS, 200 * MS, 200 * MS, 200 * MS]);
    }

    #[test]
    fn one_batch_that_waited_brings_the_budget_back() {
        let mut pacing = Pacing::new(20);
        pacing.after_batch(MS, 20 * MS);
        pacing.after_batch(MS, 40 * MS);
        assert_eq!(pacing.budget(), 80 * MS);
        // a tenth of its time waiting or more: caught up with the feed
        pacing.after_batch(8 * MS, 80 * MS);
        assert_eq!(pacing.budget(), 20 * MS);
    }
}

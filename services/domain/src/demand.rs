//! Units placed per channel and the trailing-window sums the rules read, (now - 28 d, now]
//! and (now - 1 h, now], kept incrementally so that a query costs the same whatever the
//! SKU's history.
//!
//! Each window keeps a cursor and the exact sum over (cursor - width, cursor]. A query at a
//! later `now` moves the cursor, adding the placements it passes at the leading edge and
//! subtracting those it passes at the trailing edge: each placement is added and subtracted
//! once per window in its life. A query at an earlier `now` (a late event) leaves the cursor
//! and corrects the sum by the placements between the two edges. Placements are kept per
//! millisecond, so the windows are exact at every boundary.
//!
//! Placements are kept for [`KEEP_MS`] past the SKU's latest event, which makes the sums
//! exact for events up to one window (28 days) late. For persistence they are grouped by
//! hour ([`Demand::segment`]); a commit writes the hours that changed, so a busy SKU rewrites
//! an hour of its placements per commit, not a day.

use std::collections::{BTreeSet, VecDeque};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::small_map::SmallMap;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// The trailing window of the allocation, cover and spike rules: (now - 28 d, now].
pub const WINDOW_MS: i64 = 28 * DAY_MS;
/// Placements are kept for two windows past the SKU's latest event, so that an event up to
/// 28 days late still sees its whole window (see ARCHITECTURE.md, "What is let go").
pub const KEEP_MS: i64 = 2 * WINDOW_MS;

/// Units one channel placed at one millisecond, as stored in a segment's record (the channel
/// inline: a segment is rebuilt point by point at each write of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    pub channel: CompactString,
    pub at_ms: i64,
    pub units: i64,
}

/// The trailing placements of one SKU.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Demand {
    series: SmallMap<String, Series>,
    /// Segments whose placements changed since the last write.
    #[serde(skip)]
    changed_segments: BTreeSet<i64>,
    /// No placement held is at or before this (`None`: unknown), so that [`Demand::prune`]
    /// at most events looks at no series. A memo, not part of the identity.
    #[serde(skip)]
    held_after: Option<i64>,
}

impl PartialEq for Demand {
    fn eq(&self, other: &Self) -> bool {
        self.series == other.series
    }
}

impl Eq for Demand {}

/// One channel's placements: kept per millisecond (not serialized with the SKU, stored by
/// segment), and its two windows (serialized with the SKU).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Series {
    #[serde(skip)]
    points: Points,
    month: Window,
    hour: Window,
}

/// The exact sum of placements in (cursor - width, cursor]; no cursor before the first query.
///
/// It also remembers the first placement past each edge and where it stands (not stored:
/// unknown after a load), so that a move that no placement crosses costs no lookup, and one
/// that does sums from there; it searches only after a late placement went in before it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Window {
    cursor: Option<i64>,
    sum: i64,
    /// The first placement after the cursor; `None`: unknown.
    #[serde(skip)]
    next_in: Option<Next>,
    /// The first placement after cursor - width, the next to leave the window.
    #[serde(skip)]
    next_out: Option<Next>,
}

/// The first placement after an edge: its time ([`NONE_AFTER`]: none), and where it stood in
/// its series when last seen, so that an edge moving past it starts summing there instead of
/// searching for it ([`Points::index_of`]).
#[derive(Debug, Clone, Copy)]
struct Next {
    at: i64,
    /// Counted from the first placement the series ever held ([`Points::popped`]), so that
    /// placements leaving from the front do not move it; one placed before it does, which
    /// [`Points::index_of`] notices.
    position: u64,
}

/// Windows are equal when they sum the same span the same way, whatever they remember.
impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        (self.cursor, self.sum) == (other.cursor, other.sum)
    }
}

impl Eq for Window {}

/// No placement after an edge.
const NONE_AFTER: i64 = i64::MAX;

/// One series' units placed per millisecond, in time order.
///
/// A sorted deque rather than a tree: placements mostly arrive in time order and leave from
/// the front, a window reads them as a run, and a tree's first node (eleven slots) was most of
/// a quiet SKU's placements in memory.
#[derive(Debug, Clone, Default)]
struct Points {
    placed: VecDeque<(i64, i64)>,
    /// Placements taken from the front so far: what turns a [`Next::position`] into an index.
    popped: u64,
}

/// Placements are equal when they hold the same, whatever left before.
impl PartialEq for Points {
    fn eq(&self, other: &Self) -> bool {
        self.placed == other.placed
    }
}

impl Eq for Points {}

impl Points {
    /// The index of the first placement after `at`.
    fn index_after(&self, at: i64) -> usize {
        // most questions are about the latest time (a window's leading edge, a placement
        // arriving in order), after which nothing is placed yet
        match self.placed.back() {
            Some((last, _)) if *last > at => self.placed.partition_point(|(placed, _)| *placed <= at),
            _ => self.placed.len(),
        }
    }

    /// [`Points::index_after`] for a time a few placements from the end at most, as the end
    /// of the hour a commit writes is: placements of the rest of the batch may follow it. A
    /// few steps back find it in the cache lines the last placement shares, where a binary
    /// search reads a line per step.
    fn index_after_near_end(&self, at: i64) -> usize {
        const STEPS_BACK: usize = 8;
        let len = self.placed.len();
        let after = self.placed.iter().rev().take(STEPS_BACK).take_while(|(placed, _)| *placed > at).count();
        if after < STEPS_BACK.min(len) {
            return len - after;
        }
        self.placed.partition_point(|(placed, _)| *placed <= at)
    }

    /// The placements after `after`, in time order.
    fn after(&self, after: i64) -> impl Iterator<Item = &(i64, i64)> {
        self.placed.range(self.index_after(after)..)
    }

    /// The placements in [start, end).
    fn within(&self, start: i64, end: i64) -> impl Iterator<Item = &(i64, i64)> {
        // a span before the first placement is empty: the hour a prune let go, which a commit
        // writes (as deleted) for every series of the SKU
        if self.first().is_none_or(|first| first >= end) {
            return self.placed.range(0..0);
        }
        let to = self.index_after_near_end(end.saturating_sub(1));
        // walked back from its end, a span costs what reading it does, where a search for its
        // start cost a binary search of the series (a commit reads the latest hour, at its end)
        let len = self.placed.range(..to).rev().take_while(|(at, _)| *at >= start).count();
        self.placed.range(to - len..to)
    }

    /// Adds units placed at `at_ms`; returns the placement's position ([`Next::position`]).
    fn add(&mut self, at_ms: i64, units: i64) -> u64 {
        let index = self.index_after(at_ms);
        let index = match index.checked_sub(1).map(|last| (last, &mut self.placed[last])) {
            Some((last, (placed, held))) if *placed == at_ms => {
                *held += units;
                last
            }
            _ => {
                self.placed.insert(index, (at_ms, units));
                index
            }
        };
        self.popped + index as u64
    }

    fn first(&self) -> Option<i64> {
        self.placed.front().map(|(at, _)| *at)
    }

    fn pop_first(&mut self) -> Option<i64> {
        let first = self.placed.pop_front()?;
        self.popped += 1;
        Some(first.0)
    }

    /// The placement at `index` as the next after an edge.
    fn next_at(&self, index: usize) -> Next {
        let at = self.placed.get(index).map_or(NONE_AFTER, |(at, _)| *at);
        Next { at, position: self.popped + index as u64 }
    }

    /// The index of `next`, the first placement after `edge`: where it was last seen if it
    /// is still there (one placement per millisecond, so its time tells it), else searched.
    fn index_of(&self, next: Next, edge: i64) -> usize {
        let seen = usize::try_from(next.position.wrapping_sub(self.popped)).unwrap_or(usize::MAX);
        let still_there = self.placed.get(seen).is_some_and(|(at, _)| *at == next.at)
            && seen.checked_sub(1).is_none_or(|before| self.placed[before].0 <= edge);
        if still_there { seen } else { self.index_after(edge) }
    }

    fn times(&self) -> impl Iterator<Item = i64> + '_ {
        self.placed.iter().map(|(at, _)| *at)
    }

    fn len(&self) -> usize {
        self.placed.len()
    }
}

/// Moves an edge from `from` to `to` (not before it): the units it passes, and the first
/// placement after its new place. `next` is the first placement after `from`, if known.
fn cross(points: &Points, next: Option<Next>, from: i64, to: i64) -> (i64, Next) {
    let next = next.unwrap_or_else(|| points.next_at(points.index_after(from)));
    if next.at > to {
        return (0, next);
    }
    let start = points.index_of(next, from);
    let mut sum = 0;
    let mut passed = 0;
    for (at, units) in points.placed.range(start..) {
        if *at > to {
            break;
        }
        sum += units;
        passed += 1;
    }
    (sum, points.next_at(start + passed))
}

/// Which trailing window a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// (now - 28 d, now]
    Month,
    /// (now - 1 h, now]
    Hour,
}

impl Span {
    fn width(self) -> i64 {
        match self {
            Span::Month => WINDOW_MS,
            Span::Hour => HOUR_MS,
        }
    }
}

/// Marks a pool's series among the channels' (no channel id starts with it).
const POOL_MARK: char = '#';

/// The series a pool's placements are kept under (see [`crate::Rules::pool_series`]).
pub(crate) fn pool_series(pool: &str) -> String {
    format!("{POOL_MARK}{pool}")
}

/// The span of placements stored under one key.
pub const SEGMENT_MS: i64 = HOUR_MS;

/// The segment a placement is stored under.
pub fn segment_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(SEGMENT_MS)
}

fn range_sum(points: &Points, from_excluded: i64, to_included: i64) -> i64 {
    if to_included <= from_excluded {
        return 0;
    }
    points.after(from_excluded).take_while(|(at, _)| *at <= to_included).map(|(_, units)| units).sum()
}

impl Window {
    fn units(&mut self, points: &Points, now: i64, width: i64) -> i64 {
        let Some(cursor) = self.cursor else {
            self.sum = range_sum(points, now.saturating_sub(width), now);
            self.cursor = Some(now);
            return self.sum;
        };
        if now >= cursor {
            let (entered, next_in) = cross(points, self.next_in, cursor, now);
            let (from, to) = (cursor.saturating_sub(width), now.saturating_sub(width));
            let (left, next_out) = cross(points, self.next_out, from, to);
            self.sum += entered - left;
            (self.next_in, self.next_out) = (Some(next_in), Some(next_out));
            self.cursor = Some(now);
            return self.sum;
        }
        self.sum - range_sum(points, now, cursor)
            + range_sum(points, now.saturating_sub(width), cursor.saturating_sub(width))
    }

    /// Counts units placed at `at_ms`, now at `position` in the series: a placement ahead of
    /// the cursor is the next to enter if it comes before the one known (most placements
    /// arrive in order, so that one is none), and its position spares the search for it.
    fn add(&mut self, at_ms: i64, units: i64, width: i64, position: u64) {
        let Some(cursor) = self.cursor else { return };
        let earliest = |next: &mut Option<Next>| {
            if let Some(next) = next
                && at_ms < next.at
            {
                *next = Next { at: at_ms, position };
            }
        };
        if at_ms <= cursor.saturating_sub(width) {
            return;
        }
        // after the trailing edge: possibly the next to leave, whether inside or ahead
        earliest(&mut self.next_out);
        if at_ms > cursor {
            earliest(&mut self.next_in);
        } else {
            self.sum += units;
        }
    }

    /// Forgets the placements it remembered, for placements added without [`Window::add`].
    fn forget_edges(&mut self) {
        (self.next_in, self.next_out) = (None, None);
    }
}

impl Series {
    /// Moves each window whose trailing edge is before `horizon` to `latest`.
    fn pass(&mut self, horizon: i64, latest: i64) {
        for span in [Span::Month, Span::Hour] {
            let window = match span {
                Span::Month => &self.month,
                Span::Hour => &self.hour,
            };
            if window.cursor.is_some_and(|cursor| cursor.saturating_sub(span.width()) < horizon) {
                self.units(latest, span);
            }
        }
    }

    fn units(&mut self, now: i64, span: Span) -> i64 {
        let window = match span {
            Span::Month => &mut self.month,
            Span::Hour => &mut self.hour,
        };
        window.units(&self.points, now, span.width())
    }
}

impl Demand {
    /// Records units placed by `channel` at `at_ms`.
    pub fn place(&mut self, channel: &str, at_ms: i64, units: i64) {
        let series = self.series.get_or_default_mut(channel);
        let position = series.points.add(at_ms, units);
        series.month.add(at_ms, units, WINDOW_MS, position);
        series.hour.add(at_ms, units, HOUR_MS, position);
        self.changed_segments.insert(segment_of(at_ms));
        self.held_after = self.held_after.map(|after| after.min(at_ms.saturating_sub(1)));
    }

    /// Units `channel` placed in the span ending at `now`.
    pub fn units(&mut self, channel: &str, now: i64, span: Span) -> i64 {
        self.series.get_mut(channel).map_or(0, |series| series.units(now, span))
    }

    /// Units every channel placed in the span ending at `now`.
    pub fn total(&mut self, now: i64, span: Span) -> i64 {
        self.series
            .iter_mut()
            .filter(|(name, _)| !name.starts_with(POOL_MARK))
            .map(|(_, series)| series.units(now, span))
            .sum()
    }

    /// Records units placed on a line reserving in the pool named `pool` (velocity per pool,
    /// CONTRACT.md section 10). Kept as one more series, so its windows and persistence are
    /// the channels' own.
    /// `series` is the pool's, from [`crate::Rules::pool_series`].
    pub fn place_in_pool(&mut self, series: &str, at_ms: i64, units: i64) {
        self.place(series, at_ms, units);
    }

    /// Units placed on lines reserving in the pool whose series is `series`, in the span
    /// ending at `now`.
    pub fn pool_units(&mut self, series: &str, now: i64, span: Span) -> i64 {
        self.units(series, now, span)
    }

    /// Forgets the placements no window can reach any more: those at or before
    /// `latest - KEEP_MS`. A window whose trailing edge is before that horizon is moved to
    /// `latest` first, so that it never has to subtract a placement let go; a window queried
    /// in the last 28 days is already past it, and a SKU with nothing to let go pays nothing.
    pub fn prune(&mut self, latest: i64) {
        let horizon = latest.saturating_sub(KEEP_MS);
        if self.held_after.is_some_and(|after| after >= horizon) {
            return;
        }
        let oldest = self.series.values().filter_map(|series| series.points.first()).min();
        if oldest.is_none_or(|oldest| oldest > horizon) {
            self.held_after = Some(oldest.map_or(i64::MAX, |oldest| oldest - 1));
            return;
        }
        // the oldest placement left, found in the same pass, so the next events skip it
        let mut left = i64::MAX;
        for (_, series) in self.series.iter_mut() {
            let Some(oldest) = series.points.first() else { continue };
            if oldest > horizon {
                left = left.min(oldest);
                continue;
            }
            series.pass(horizon, latest);
            while let Some(first) = series.points.first() {
                if first > horizon {
                    left = left.min(first);
                    break;
                }
                self.changed_segments.insert(segment_of(first));
                series.points.pop_first();
            }
        }
        self.held_after = Some(if left == i64::MAX { i64::MAX } else { left - 1 });
    }

    /// Every placement of one segment, in (channel, time) order; empty once it is let go.
    pub fn segment(&self, segment: i64) -> Vec<Point> {
        let (start, end) = (segment * SEGMENT_MS, (segment + 1) * SEGMENT_MS);
        let mut points = Vec::new();
        for (channel, series) in &self.series {
            for (at_ms, units) in series.points.within(start, end) {
                points.push(Point { channel: channel.as_str().into(), at_ms: *at_ms, units: *units });
            }
        }
        points
    }

    /// The segments changed since the last call, to be written (see [`Demand::segment`]).
    pub fn take_changed_segments(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.changed_segments).into_iter().collect()
    }

    pub fn forget_changes(&mut self) {
        self.changed_segments.clear();
    }

    /// Marks every held segment changed, so that a state held whole can be stored in parts.
    pub fn mark_all_changed(&mut self) {
        for series in self.series.values() {
            self.changed_segments.extend(series.points.times().map(segment_of));
        }
    }

    /// Restores a stored segment's placements into a state loaded without them. Placements past
    /// the horizon of `latest` are skipped, as [`Demand::prune`] would have let them go.
    pub fn restore_segment(&mut self, points: Vec<Point>, latest: i64) {
        let horizon = latest.saturating_sub(KEEP_MS);
        self.held_after = None;
        for point in points.into_iter().filter(|p| p.at_ms > horizon) {
            let series = self.series.get_or_default_mut(point.channel.as_str());
            series.points.add(point.at_ms, point.units);
            series.month.forget_edges();
            series.hour.forget_edges();
        }
    }

    /// How many placements are held, for the size of the state in memory.
    pub fn held(&self) -> usize {
        self.series.values().map(|s| s.points.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A point's channel became a `CompactString` (stop 41); segments stored while it was a
    /// `String` read the same, and are written the same.
    #[test]
    fn a_segment_stored_with_string_channels_reads_and_writes_the_same() {
        #[derive(Serialize)]
        struct StoredBefore {
            channel: String,
            at_ms: i64,
            units: i64,
        }
        let before =
            vec![StoredBefore { channel: "amazon-marketplace".into(), at_ms: 1_700_000_000_000, units: 3 }];
        let bytes = postcard::to_allocvec(&before).unwrap();
        let read: Vec<Point> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            read,
            vec![Point { channel: "amazon-marketplace".into(), at_ms: 1_700_000_000_000, units: 3 }]
        );
        assert_eq!(postcard::to_allocvec(&read).unwrap(), bytes);
    }

    fn brute(points: &[(u8, i64, i64)], channel: Option<u8>, now: i64, span: Span) -> i64 {
        points
            .iter()
            .filter(|(c, at, _)| channel.is_none_or(|ch| ch == *c) && *at > now - span.width() && *at <= now)
            .map(|(_, _, units)| units)
            .sum()
    }

    #[test]
    fn placements_stay_in_time_order_one_entry_a_millisecond() {
        let mut points = Points::default();
        for (at, units) in [(10, 1), (30, 2), (20, 4), (30, 8), (5, 16)] {
            points.add(at, units);
        }
        assert_eq!(points.placed, [(5, 16), (10, 1), (20, 4), (30, 10)], "a late one goes in its place");
        assert_eq!(points.within(10, 30).copied().collect::<Vec<_>>(), [(10, 1), (20, 4)], "[start, end)");
        assert_eq!(points.within(0, 11).copied().collect::<Vec<_>>(), [(5, 16), (10, 1)]);
        assert_eq!(points.within(25, 40).copied().collect::<Vec<_>>(), [(30, 10)], "the latest span");
        assert_eq!(points.within(6, 10).count() + points.within(31, 40).count(), 0, "empty spans");
        assert_eq!(points.after(20).copied().collect::<Vec<_>>(), [(30, 10)]);
        assert_eq!(range_sum(&points, 5, 20), 5, "(after, through]");
        assert_eq!(points.pop_first(), Some(5));
        assert_eq!(points.within(0, 10).count(), 0, "a span before the first placement left");
        assert_eq!(points.within(0, 11).copied().collect::<Vec<_>>(), [(10, 1)], "one ending just past it");
    }

    #[test]
    fn the_first_placement_after_a_time_is_found_near_the_end_and_far_from_it() {
        for len in 0..24_i64 {
            let mut points = Points::default();
            for at in 0..len {
                points.add(at * 10, 1);
            }
            for at in -5..len * 10 + 5 {
                let expected = points.placed.iter().filter(|(placed, _)| *placed <= at).count();
                assert_eq!(points.index_after(at), expected, "{len} placements, after {at}");
                assert_eq!(
                    points.index_after_near_end(at),
                    expected,
                    "{len} placements, after {at}, near the end"
                );
            }
        }
    }

    #[test]
    fn windows_are_exact_at_millisecond_boundaries() {
        let mut demand = Demand::default();
        demand.place("a", 1_000, 5);
        assert_eq!(demand.units("a", 1_000, Span::Hour), 5, "now is inside");
        assert_eq!(demand.units("a", 1_000 + HOUR_MS - 1, Span::Hour), 5);
        assert_eq!(demand.units("a", 1_000 + HOUR_MS, Span::Hour), 0, "now - 1 h is outside");
        assert_eq!(demand.units("a", 999, Span::Hour), 0, "a late query before the placement");
        assert_eq!(demand.units("a", 1_000 + WINDOW_MS - 1, Span::Month), 5);
        assert_eq!(demand.units("a", 1_000 + WINDOW_MS, Span::Month), 0);
        demand.place("a", 1_000 + 2, 3);
        assert_eq!(demand.units("a", 1_001 + WINDOW_MS, Span::Month), 3, "a late placement counts");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Place { channel: u8, back_ms: i64, units: i64 },
        Query { channel: Option<u8>, back_ms: i64, hour: bool },
        Advance { ms: i64 },
        Reload,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Events at most 28 days late: the kept horizon the windows are exact within.
        let back = prop_oneof![0..10i64, 0..2 * HOUR_MS, 0..WINDOW_MS + 1];
        prop_oneof![
            (0..3u8, back.clone(), 1..50i64).prop_map(|(channel, back_ms, units)| Op::Place {
                channel,
                back_ms,
                units
            }),
            (prop::option::of(0..3u8), back, any::<bool>()).prop_map(|(channel, back_ms, hour)| Op::Query {
                channel,
                back_ms,
                hour
            }),
            prop_oneof![0..5i64, 0..HOUR_MS, 0..3 * WINDOW_MS].prop_map(|ms| Op::Advance { ms }),
            Just(Op::Reload),
        ]
    }

    fn reload(demand: &mut Demand, latest: i64) -> Demand {
        let core: Demand = serde_json::from_str(&serde_json::to_string(&*demand).unwrap()).unwrap();
        let mut restored = core;
        let segments: BTreeSet<i64> =
            demand.series.values().flat_map(|s| s.points.times().map(segment_of)).collect();
        for segment in segments {
            restored.restore_segment(demand.segment(segment), latest);
        }
        restored
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// The incremental windows equal a brute-force sum over every placement ever made,
        /// for queries and placements up to 28 days late, across prunes and reloads.
        #[test]
        fn incremental_windows_equal_brute_force(ops in prop::collection::vec(op(), 1..200)) {
            let mut demand = Demand::default();
            let mut all: Vec<(u8, i64, i64)> = Vec::new();
            let mut latest = 10 * WINDOW_MS;
            for op in ops {
                match op {
                    Op::Place { channel, back_ms, units } => {
                        let at = latest - back_ms;
                        demand.place(&channel.to_string(), at, units);
                        all.push((channel, at, units));
                    }
                    Op::Query { channel, back_ms, hour } => {
                        let now = latest - back_ms;
                        let span = if hour { Span::Hour } else { Span::Month };
                        let got = match channel {
                            Some(c) => demand.units(&c.to_string(), now, span),
                            None => demand.total(now, span),
                        };
                        prop_assert_eq!(got, brute(&all, channel, now, span));
                    }
                    Op::Advance { ms } => {
                        latest += ms;
                        demand.prune(latest);
                        let horizon = latest - KEEP_MS;
                        let oldest = demand.series.values().filter_map(|s| s.points.first()).min();
                        prop_assert!(oldest.is_none_or(|at| at > horizon), "a placement past the horizon is held");
                    }
                    Op::Reload => demand = reload(&mut demand, latest),
                }
            }
        }
    }
}

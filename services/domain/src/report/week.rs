//! Reporting weeks (CONTRACT.md section 7): ISO weeks, Monday to Monday, in the contract's
//! fixed offset from UTC (`reporting.week_offset_minutes`, no DST), labelled by ISO year like
//! `2026-W47`.
//!
//! A [`Week`] is a plain index (weeks since the Monday before 1970-01-01 in the offset), so
//! weeks order, add and subtract as integers; the label is computed from it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::calendar::{civil_from_days, days_from_civil};
use crate::contract::Reporting;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
pub const WEEK_MS: i64 = 7 * DAY_MS;

/// 1970-01-01 was a Thursday, so the Monday starting week 0 is local day -3.
const MONDAY_OFFSET_DAYS: i64 = 3;

/// One reporting week, as an index; week 0 starts on Monday 1969-12-29 (in the offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Week(pub i64);

/// The reporting calendar: where weeks start in UTC milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    offset_ms: i64,
}

impl Calendar {
    /// A calendar whose weeks start on Monday 00:00 at UTC + `offset_minutes`.
    pub fn new(offset_minutes: i64) -> Self {
        Calendar { offset_ms: offset_minutes * MINUTE_MS }
    }

    pub fn of(reporting: &Reporting) -> Self {
        Calendar::new(reporting.week_offset_minutes)
    }

    /// The week holding the instant `at_ms` (UTC milliseconds).
    pub fn week_of(&self, at_ms: i64) -> Week {
        let local_day = at_ms.saturating_add(self.offset_ms).div_euclid(DAY_MS);
        Week((local_day + MONDAY_OFFSET_DAYS).div_euclid(7))
    }

    /// The first instant of the week, in UTC milliseconds.
    pub fn start_ms(&self, week: Week) -> i64 {
        (week.0 * 7 - MONDAY_OFFSET_DAYS) * DAY_MS - self.offset_ms
    }

    /// The first instant after the week: weeks are half-open, [start, end).
    pub fn end_ms(&self, week: Week) -> i64 {
        self.start_ms(week.next())
    }
}

impl Week {
    pub fn next(self) -> Week {
        Week(self.0 + 1)
    }

    pub fn previous(self) -> Week {
        Week(self.0 - 1)
    }

    /// The ISO year and week number.
    pub fn iso(self) -> (i64, u32) {
        // An ISO week belongs to the year of its Thursday.
        let thursday = self.0 * 7;
        let (year, _, _) = civil_from_days(thursday);
        let ordinal = thursday - days_from_civil(year, 1, 1);
        (year, (ordinal / 7 + 1) as u32)
    }

    /// The contract's label, e.g. `2026-W47`.
    pub fn label(self) -> String {
        self.to_string()
    }

    /// The Monday that starts the week, as `YYYY-MM-DD` (local to the offset).
    pub fn monday(self) -> String {
        let (y, m, d) = civil_from_days(self.0 * 7 - MONDAY_OFFSET_DAYS);
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// The Sunday that ends the week, as `YYYY-MM-DD` (local to the offset).
    pub fn sunday(self) -> String {
        let (y, m, d) = civil_from_days(self.0 * 7 - MONDAY_OFFSET_DAYS + 6);
        format!("{y:04}-{m:02}-{d:02}")
    }
}

impl fmt::Display for Week {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, week) = self.iso();
        write!(f, "{year:04}-W{week:02}")
    }
}

/// A week label that is not `YYYY-Www` or names a week its year does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an iso week like 2026-W47")]
pub struct BadWeek(pub String);

impl FromStr for Week {
    type Err = BadWeek;

    fn from_str(text: &str) -> Result<Week, BadWeek> {
        let bad = || BadWeek(text.to_string());
        let (year, week) = text.trim().split_once("-W").ok_or_else(bad)?;
        if year.len() < 4 || week.len() != 2 {
            return Err(bad());
        }
        let year: i64 = year.parse().map_err(|_| bad())?;
        let number: i64 = week.parse().map_err(|_| bad())?;
        // January 4th is always in week 1 of its ISO year.
        let jan4 = days_from_civil(year, 1, 4);
        let week = Week((jan4 + MONDAY_OFFSET_DAYS).div_euclid(7) + number - 1);
        if number < 1 || week.iso() != (year, number as u32) {
            return Err(bad());
        }
        Ok(week)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-09T00:00:00Z, a Monday.
    const MONDAY_MS: i64 = 1_794_182_400_000;

    #[test]
    fn labels_weeks_by_iso_year() {
        let utc = Calendar::new(0);
        assert_eq!(utc.week_of(MONDAY_MS).label(), "2026-W46");
        assert_eq!(utc.week_of(MONDAY_MS - 1).label(), "2026-W45", "sunday 23:59:59.999 is the week before");
        assert_eq!(utc.week_of(MONDAY_MS + WEEK_MS).label(), "2026-W47");
        assert_eq!(utc.start_ms(utc.week_of(MONDAY_MS + 3 * DAY_MS)), MONDAY_MS);
        assert_eq!(utc.end_ms(utc.week_of(MONDAY_MS)), MONDAY_MS + WEEK_MS);
        // 2026 starts on a Thursday: it has a week 53, and 2027-01-01 (a Friday) is in it.
        let new_year_2027 = 1_798_761_600_000;
        assert_eq!(utc.week_of(new_year_2027).label(), "2026-W53");
        // 2024-12-30 (a Monday) starts 2025-W01.
        assert_eq!(utc.week_of(1_735_516_800_000).label(), "2025-W01");
        assert_eq!(utc.week_of(1).label(), "1970-W01");
    }

    #[test]
    fn a_fixed_offset_moves_the_boundary() {
        // UTC+02:00: Monday 00:00 local is Sunday 22:00 UTC.
        let plus_two = Calendar::new(120);
        let sunday_22h = MONDAY_MS - 2 * 3_600_000;
        assert_eq!(plus_two.week_of(sunday_22h).label(), "2026-W46");
        assert_eq!(plus_two.week_of(sunday_22h - 1).label(), "2026-W45");
        assert_eq!(plus_two.start_ms(plus_two.week_of(sunday_22h)), sunday_22h);
        // UTC-05:00: Monday 00:00 UTC is still Sunday locally.
        let minus_five = Calendar::new(-300);
        assert_eq!(minus_five.week_of(MONDAY_MS).label(), "2026-W45");
        assert_eq!(minus_five.start_ms(Week::from_str("2026-W46").unwrap()), MONDAY_MS + 5 * 3_600_000);
    }

    #[test]
    fn parses_labels_back() {
        for label in ["2026-W46", "2026-W53", "2025-W01", "2020-W53", "1970-W01", "2027-W52"] {
            assert_eq!(Week::from_str(label).unwrap().label(), label);
        }
        for bad in ["2025-W53", "2026-W00", "2026-W54", "2026W47", "26-W47", "2026-W7", "x"] {
            assert!(Week::from_str(bad).is_err(), "{bad} parsed");
        }
        let week = Week::from_str("2026-W46").unwrap();
        assert_eq!((week.monday(), week.sunday()), ("2026-11-09".to_string(), "2026-11-15".to_string()));
        assert_eq!(week.next().label(), "2026-W47");
    }
}

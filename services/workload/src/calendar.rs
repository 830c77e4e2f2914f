//! Time arithmetic and the demand curves: no clock, no time zone database, fixed offsets only.

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Relative demand of a consumer channel by local hour (00:00 first): quiet nights, a lunch
/// bump and an evening peak.
const CONSUMER_HOURS: [f64; 24] = [
    0.55, 0.35, 0.22, 0.15, 0.12, 0.15, 0.30, 0.55, 0.80, 0.95, 1.05, 1.15, 1.30, 1.25, 1.15, 1.10, 1.15,
    1.25, 1.45, 1.70, 1.85, 1.75, 1.40, 0.95,
];
/// Relative demand of a consumer channel by local weekday, Monday first: weekends are busier.
const CONSUMER_DAYS: [f64; 7] = [0.97, 0.95, 0.96, 0.98, 1.03, 1.07, 1.04];
/// Business buyers order on weekdays in office hours.
const BUSINESS_HOURS: [f64; 24] = [
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.8, 1.2, 1.3, 1.2, 0.9, 1.1, 1.2, 1.1, 0.9, 0.5, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0,
];
const BUSINESS_DAYS: [f64; 7] = [1.0, 1.05, 1.05, 1.0, 0.9, 0.0, 0.0];

/// Monday = 0. 1970-01-01 was a Thursday.
pub fn weekday(t_ms: i64) -> usize {
    (t_ms.div_euclid(DAY_MS) + 3).rem_euclid(7) as usize
}

pub fn hour_of_day(t_ms: i64) -> usize {
    (t_ms.rem_euclid(DAY_MS) / HOUR_MS) as usize
}

/// Demand multipliers for each hour of a week in local time (Monday 00:00 first), averaging 1.
#[derive(Debug, Clone)]
pub struct Curve {
    week: Vec<f64>,
    utc_offset_ms: i64,
}

impl Curve {
    pub fn new(business: bool, utc_offset_hours: i64) -> Self {
        let (hours, days) =
            if business { (&BUSINESS_HOURS, &BUSINESS_DAYS) } else { (&CONSUMER_HOURS, &CONSUMER_DAYS) };
        let mut week = Vec::with_capacity(168);
        for day in days {
            for hour in hours {
                week.push(day * hour);
            }
        }
        let total: f64 = week.iter().sum();
        for w in &mut week {
            *w = *w * 168.0 / total;
        }
        Curve { week, utc_offset_ms: utc_offset_hours * HOUR_MS }
    }

    /// The multiplier of the hour holding `t_ms`.
    pub fn at(&self, t_ms: i64) -> f64 {
        let local = t_ms + self.utc_offset_ms;
        self.week[weekday(local) * 24 + hour_of_day(local)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_start_is_a_monday_midnight() {
        assert_eq!(weekday(crate::SAMPLE_START_MS), 0);
        assert_eq!(hour_of_day(crate::SAMPLE_START_MS), 0);
        assert_eq!(weekday(crate::SAMPLE_START_MS + 5 * DAY_MS), 5);
    }

    #[test]
    fn curves_average_one() {
        for business in [false, true] {
            let curve = Curve::new(business, -5);
            let total: f64 = (0..168).map(|h| curve.at(crate::SAMPLE_START_MS + h * HOUR_MS)).sum();
            assert!((total - 168.0).abs() < 1e-6, "{total}");
        }
    }
}

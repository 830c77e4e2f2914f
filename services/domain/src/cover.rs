//! The comparison every cover rule makes (LOW_COVER, CONTRACT.md section 5; reorder and
//! transfer, section 10): a stock position against the units placed in the trailing 28 days
//! times a number of days, `units × days - position × 28`.
//!
//! It is worked out on integers, in 10^-s of a unit where s is the days' scale (a contract
//! writes days with a decimal or two): every event of a SKU makes these comparisons for each
//! pool, and their decimal multiplications were some 3% of the pure fold's time. A result too
//! large for an i128 is worked out in decimals, as every rule did before.

use rust_decimal::Decimal;

/// The trailing window every cover rule reads, in days.
pub const WINDOW_DAYS: i64 = 28;

/// `units × days - position × 28`, exactly: `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    mantissa: i128,
    scale: u32,
}

impl Shortfall {
    /// How far `position` falls short of `days` of the demand that placed `units` in the
    /// trailing 28 days, times 28 (negative when it covers more).
    pub fn of(units: i64, days: Decimal, position: i64) -> Shortfall {
        let scale = days.scale();
        // 10^scale fits an i128 for every decimal scale (at most 28)
        let unit = 10i128.pow(scale);
        let demand = i128::from(units).checked_mul(days.mantissa());
        let held = i128::from(position).checked_mul(i128::from(WINDOW_DAYS) * unit);
        match demand.zip(held).and_then(|(demand, held)| demand.checked_sub(held)) {
            Some(mantissa) => Shortfall { mantissa, scale },
            None => {
                let days_held = Decimal::from(position) * Decimal::from(WINDOW_DAYS);
                let shortfall = Decimal::from(units) * days - days_held;
                Shortfall { mantissa: shortfall.mantissa(), scale: shortfall.scale() }
            }
        }
    }

    /// Whether the position covers less than the days asked.
    pub fn is_short(self) -> bool {
        self.mantissa > 0
    }

    /// The whole units that make the shortfall up, ceil(shortfall / 28): on the integer
    /// mantissa, so no rounding of a division lands a quotient just past a whole number back
    /// on it. Zero or less when nothing is short.
    pub fn units(self) -> i64 {
        let denominator = i128::from(WINDOW_DAYS) * 10i128.pow(self.scale);
        let quotient = -(-self.mantissa).div_euclid(denominator);
        i64::try_from(quotient).unwrap_or(if quotient < 0 { i64::MIN } else { i64::MAX })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    /// The shortfall as the rules computed it in decimals.
    fn in_decimals(units: i64, days: Decimal, position: i64) -> Decimal {
        Decimal::from(units) * days - Decimal::from(position) * Decimal::from(WINDOW_DAYS)
    }

    #[test]
    fn whole_units_are_exact_on_both_sides_of_zero() {
        // 56 / 28, 56.5 / 28, 0.001 / 28 ... as shortfalls of units over one day
        assert_eq!(Shortfall::of(56, dec!(1), 0).units(), 2);
        assert_eq!(Shortfall::of(113, dec!(0.5), 0).units(), 3);
        assert_eq!(Shortfall::of(1, dec!(0.001), 0).units(), 1);
        assert_eq!(Shortfall::of(0, dec!(7), 0).units(), 0);
        assert_eq!(Shortfall::of(0, dec!(7), 1).units(), -1);
        assert_eq!(Shortfall::of(1, dec!(0.1), 2).units(), -1);
        // just past 28: a division rounded to 28 digits would land on 1
        let past = Shortfall::of(1, dec!(28.000000000000000000000000001), 0);
        assert_eq!(past.units(), 2);
        assert_eq!((dec!(28.000000000000000000000000001) / dec!(28)).ceil(), dec!(1));
    }

    #[test]
    fn a_position_that_covers_the_days_or_more_is_not_short() {
        // 10 units over 28 days, 7.5 days of cover asked: 75 / 28 units
        assert!(!Shortfall::of(10, dec!(7.5), 3).is_short()); // 75 - 84
        assert!(Shortfall::of(10, dec!(7.5), 2).is_short()); // 75 - 56
        assert!(!Shortfall::of(28, dec!(1), 1).is_short()); // 28 - 28
    }

    #[test]
    fn a_product_past_an_i128_is_worked_out_in_decimals() {
        let days = dec!(1.000000000000000000000000001);
        // 9.2e15 units times a mantissa of 1e27
        let units = i64::MAX / 1_000;
        assert!(i128::from(units).checked_mul(days.mantissa()).is_none());
        let shortfall = Shortfall::of(units, days, 0);
        assert_eq!(shortfall, {
            let d = in_decimals(units, days, 0);
            Shortfall { mantissa: d.mantissa(), scale: d.scale() }
        });
        assert!(shortfall.is_short());
    }

    proptest! {
        #[test]
        fn integers_give_what_decimals_give(
            units in 0i64..10_000_000,
            days_mantissa in 0i64..100_000,
            days_scale in 0u32..5,
            position in -10_000_000i64..10_000_000,
        ) {
            let days = Decimal::new(days_mantissa, days_scale);
            let decimal = in_decimals(units, days, position);
            let shortfall = Shortfall::of(units, days, position);
            prop_assert_eq!(shortfall.is_short(), decimal > Decimal::ZERO);
            prop_assert_eq!(Decimal::from(shortfall.units()), (decimal / Decimal::from(WINDOW_DAYS)).ceil());
        }
    }
}

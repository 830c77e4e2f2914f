//! Exact money for the generated events: integer cents and basis points in, `rust_decimal`
//! inside, two-decimal strings out. Never floats.

use omnifold_proto::Money;
use rust_decimal::{Decimal, RoundingStrategy};

pub fn cents(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// `bps` basis points as a fraction: 2000 -> 0.2.
pub fn bps(bps: i64) -> Decimal {
    Decimal::new(bps, 4)
}

/// Rounded half away from zero to the cent, always with two decimals.
pub fn round_cent(value: Decimal) -> Decimal {
    let mut value = value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    value.rescale(2);
    value
}

/// The nearest price ending in .99, at least 0.99.
pub fn charm(value: Decimal) -> Decimal {
    let whole = value.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero).max(Decimal::ONE);
    round_cent(whole - cents(1))
}

/// A price ending in .99 at or below `value`.
pub fn charm_below(value: Decimal) -> Decimal {
    let whole = value.floor().max(Decimal::ONE);
    round_cent(whole - cents(1))
}

/// A price: charm pricing or plain cents.
pub fn price(value: Decimal, charm_prices: bool) -> Decimal {
    if charm_prices { charm(value) } else { round_cent(value).max(cents(1)) }
}

/// The wire form, e.g. `{"amount": "19.99", "currency": "USD"}`.
pub fn money(value: Decimal, currency: &str) -> Money {
    Money::new(round_cent(value).to_string(), currency)
}

/// A fraction with two decimals, e.g. "0.20".
pub fn fraction_text(value: Decimal) -> String {
    let mut value = value.normalize();
    if value.scale() < 2 {
        value.rescale(2);
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_prices() {
        assert_eq!(charm(Decimal::new(5342, 2)).to_string(), "52.99");
        assert_eq!(charm(Decimal::new(5362, 2)).to_string(), "53.99");
        assert_eq!(charm(Decimal::new(30, 2)).to_string(), "0.99");
        assert_eq!(charm_below(Decimal::new(4704, 2)).to_string(), "46.99");
        assert_eq!(round_cent(Decimal::new(12345, 3)).to_string(), "12.35");
        assert_eq!(money(Decimal::from(3), "EUR"), Money::new("3.00", "EUR"));
        assert_eq!(fraction_text(bps(2000)), "0.20");
        assert_eq!(fraction_text(bps(1250)), "0.125");
    }
}

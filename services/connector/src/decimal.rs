//! Exact decimals out of JSON, whether the channel wrote `"19.99"` or `19.99`: the number's
//! text is read as it is (through `RawValue`), never through `f64`.

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A decimal read from a JSON string or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dec(pub Decimal);

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw.get().trim();
        let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
        parse_decimal(text)
            .map(Dec)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a decimal")))
    }
}

/// Parses `19.99`, `8000`, `1.5e3`; `None` for anything else.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Decimal::from_str(text).ok().or_else(|| Decimal::from_scientific(text).ok())
}

/// Splits a line total into a unit price and what rounding adds: `(unit, extra)` with
/// `unit x quantity - extra = total` exactly. The unit is exact when the division is, else
/// rounded up at the total's scale, and `extra` (>= 0) belongs in the line's discount.
pub fn per_unit(total: Decimal, quantity: i64) -> (Decimal, Decimal) {
    let quantity = Decimal::from(quantity.max(1));
    let unit = (total / quantity).normalize();
    // a quotient that needs more than 12 places is a rounded repeating decimal
    if unit.scale() <= 12 && unit * quantity == total {
        let mut unit = unit;
        if unit.scale() < total.scale() {
            unit.rescale(total.scale());
        }
        return (unit, Decimal::ZERO);
    }
    let unit = unit.round_dp_with_strategy(total.scale().max(2), RoundingStrategy::AwayFromZero);
    (unit, unit * quantity - total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_strings_and_numbers_exactly() {
        let v: Vec<Dec> = serde_json::from_str(r#"["19.99", 8184.23, 8000, 10.0, 0.1]"#).unwrap();
        let s: Vec<String> = v.iter().map(|d| d.0.to_string()).collect();
        assert_eq!(s, ["19.99", "8184.23", "8000", "10.0", "0.1"]);
        assert!(serde_json::from_str::<Dec>(r#""abc""#).is_err());
    }

    #[test]
    fn splits_totals_into_units() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(per_unit(d("17.95"), 2).0.to_string(), "8.975");
        assert_eq!(per_unit(d("6.00"), 2).0.to_string(), "3.00");
        assert_eq!(per_unit(d("10.00"), 3), (d("3.34"), d("0.02")));
        assert_eq!(per_unit(d("25.99"), 1).0.to_string(), "25.99");
        assert_eq!(per_unit(d("100"), 4).0.to_string(), "25");
    }
}

//! Exact money: decimal strings on the wire, `rust_decimal` inside. Never floats.

use std::str::FromStr;

use compact_str::CompactString;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A parsed, non-negative amount in one currency (its code inline: every priced event parses
/// one or more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub value: Decimal,
    pub currency: CompactString,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount {0:?} is not a decimal number")]
    NotDecimal(String),
    #[error("amount {0} is negative")]
    Negative(Decimal),
    #[error("currency is missing")]
    NoCurrency,
    #[error("currency {0} has no fx rate")]
    NoRate(String),
}

impl Amount {
    /// Parses a wire money value; the amount must be a non-negative decimal string.
    pub fn parse(money: &omnifold_proto::Money) -> Result<Amount, MoneyError> {
        let value = parse_decimal(&money.amount)?;
        if value.is_sign_negative() && !value.is_zero() {
            return Err(MoneyError::Negative(value));
        }
        if money.currency.is_empty() {
            return Err(MoneyError::NoCurrency);
        }
        Ok(Amount { value, currency: money.currency.as_str().into() })
    }
}

/// Parses a decimal string such as "19.99" or "0.15", refusing floats' exponent forms.
pub fn parse_decimal(text: &str) -> Result<Decimal, MoneyError> {
    Decimal::from_str(text.trim()).map_err(|_| MoneyError::NotDecimal(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnifold_proto::Money;
    use rust_decimal_macros::dec;

    #[test]
    fn parses_exact_amounts() {
        let amount = Amount::parse(&Money::new("19.99", "USD")).unwrap();
        assert_eq!(amount.value, dec!(19.99));
        assert_eq!(amount.value * dec!(3), dec!(59.97));
    }

    /// An amount's currency became a `CompactString` (stop 41); amounts stored while it was a
    /// `String` (in order lines, price books) read the same, and are written the same.
    #[test]
    fn an_amount_stored_with_a_string_currency_reads_and_writes_the_same() {
        #[derive(Serialize)]
        struct StoredBefore {
            value: Decimal,
            currency: String,
        }
        let bytes =
            postcard::to_allocvec(&StoredBefore { value: dec!(19.99), currency: "EUR".into() }).unwrap();
        let read: Amount = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(read, Amount { value: dec!(19.99), currency: "EUR".into() });
        assert_eq!(postcard::to_allocvec(&read).unwrap(), bytes);
    }

    #[test]
    fn refuses_negative_and_garbage() {
        assert_eq!(Amount::parse(&Money::new("-1", "USD")), Err(MoneyError::Negative(dec!(-1))));
        assert!(matches!(Amount::parse(&Money::new("1,5", "USD")), Err(MoneyError::NotDecimal(_))));
        assert_eq!(Amount::parse(&Money::new("1", "")), Err(MoneyError::NoCurrency));
    }
}

//! Money as an integer number of minor units in one currency.
//!
//! Amounts never pass through floating point. Arithmetic is checked: mixing currencies or
//! overflowing is an error value, never a panic or a silently wrong number.

use crate::currency::Currency;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest amount Stripe accepts on a single charge, in minor units (eight digits).
pub const MAX_CHARGE_AMOUNT: i64 = 99_999_999;

/// An amount of money: integer minor units plus the currency that gives them meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Minor units (cents for USD, yen for JPY, fils for KWD).
    pub amount: i64,
    /// The currency of `amount`.
    pub currency: Currency,
}

/// Why a money operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The two operands are in different currencies.
    #[error("currency mismatch: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    /// The result does not fit in 64 bits.
    #[error("amount overflow")]
    Overflow,
    /// A decimal string could not be read as an amount in the currency.
    #[error("invalid amount `{text}` for {currency}: {reason}")]
    Parse {
        /// The offending text, truncated.
        text: String,
        /// The currency it was read in.
        currency: Currency,
        /// What was wrong.
        reason: &'static str,
    },
}

impl Money {
    /// Builds an amount from minor units.
    pub const fn new(amount: i64, currency: Currency) -> Money {
        Money { amount, currency }
    }

    /// Zero in `currency`.
    pub const fn zero(currency: Currency) -> Money {
        Money { amount: 0, currency }
    }

    /// Adds two amounts of the same currency.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self.amount.checked_add(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, ..self })
    }

    /// Subtracts an amount of the same currency.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self.amount.checked_sub(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, ..self })
    }

    /// Multiplies by an integer factor (quantities, fee tiers).
    pub fn checked_mul(self, factor: i64) -> Result<Money, MoneyError> {
        let amount = self.amount.checked_mul(factor).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, ..self })
    }

    /// Sums amounts that must all be in `currency`.
    pub fn sum<I: IntoIterator<Item = Money>>(currency: Currency, items: I) -> Result<Money, MoneyError> {
        items.into_iter().try_fold(Money::zero(currency), Money::checked_add)
    }

    /// True when the amount is strictly positive.
    pub fn is_positive(self) -> bool {
        self.amount > 0
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(self.currency, other.currency))
        }
    }

    /// Reads a decimal major-unit string ("12.34", "-0.5", "1000") exactly, refusing more
    /// fractional digits than the currency has.
    pub fn parse_decimal(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let err = |reason| MoneyError::Parse {
            text: text.chars().take(32).collect(),
            currency,
            reason,
        };
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, frac) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("expected digits before the decimal point"));
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (digits.contains('.') && frac.is_empty()) {
            return Err(err("expected digits after the decimal point"));
        }
        let exp = usize::from(currency.exponent());
        if frac.len() > exp {
            return Err(err("more decimal places than the currency has"));
        }
        let mut minor: i64 = 0;
        for b in whole
            .bytes()
            .chain(frac.bytes())
            .chain(std::iter::repeat_n(b'0', exp - frac.len()))
        {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or_else(|| err("amount too large"))?;
        }
        Ok(Money {
            amount: if negative { -minor } else { minor },
            currency,
        })
    }

    /// Formats as a decimal major-unit string with exactly the currency's decimal places.
    pub fn to_decimal_string(self) -> String {
        let exp = u32::from(self.currency.exponent());
        let magnitude = self.amount.unsigned_abs();
        let sign = if self.amount < 0 { "-" } else { "" };
        if exp == 0 {
            return format!("{sign}{magnitude}");
        }
        let div = 10_u64.pow(exp);
        format!(
            "{sign}{}.{:0width$}",
            magnitude / div,
            magnitude % div,
            width = exp as usize
        )
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.to_decimal_string(),
            self.currency.code().to_ascii_uppercase()
        )
    }
}

/// The smallest amount a charge may have in `currency` (Stripe's minimums for the major
/// currencies; one minor unit elsewhere).
pub fn minimum_charge_amount(currency: Currency) -> i64 {
    match currency.code() {
        "usd" | "eur" | "cad" | "aud" | "nzd" | "chf" | "sgd" | "jpy" => 50,
        "gbp" => 30,
        "dkk" => 250,
        "nok" | "sek" => 300,
        "hkd" => 400,
        "mxn" => 1000,
        "bhd" | "kwd" | "omr" | "jod" | "tnd" => 500,
        _ => 1,
    }
}

/// Checks a charge amount against the currency's minimum, the eight-digit maximum and the
/// settlement divisor, answering Stripe's error for parameter `param`.
pub fn validate_charge_amount(param: &str, amount: i64, currency: Currency) -> Result<(), crate::ApiError> {
    let min = minimum_charge_amount(currency);
    if amount < min {
        return Err(crate::ApiError::invalid_param(
            param,
            "amount_too_small",
            format!("Amount must be at least {min} {} minor units.", currency.code()),
        ));
    }
    if amount > MAX_CHARGE_AMOUNT {
        return Err(crate::ApiError::invalid_param(
            param,
            "amount_too_large",
            format!("Amount must be no more than {MAX_CHARGE_AMOUNT}."),
        ));
    }
    let div = i64::from(currency.info().settlement_divisor);
    if amount % div != 0 {
        return Err(crate::ApiError::invalid_param(
            param,
            "parameter_invalid_integer",
            format!("Amounts in {} must be a multiple of {div}.", currency.code()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn formats_by_exponent() {
        assert_eq!(Money::new(1234, cur("usd")).to_string(), "12.34 USD");
        assert_eq!(Money::new(1234, cur("jpy")).to_string(), "1234 JPY");
        assert_eq!(Money::new(1234, cur("kwd")).to_string(), "1.234 KWD");
        assert_eq!(Money::new(-5, cur("usd")).to_decimal_string(), "-0.05");
        assert_eq!(
            Money::new(i64::MIN, cur("usd")).to_decimal_string(),
            "-92233720368547758.08"
        );
    }

    #[test]
    fn parses_exactly() {
        assert_eq!(Money::parse_decimal("12.34", cur("usd")).unwrap().amount, 1234);
        assert_eq!(Money::parse_decimal("12.3", cur("usd")).unwrap().amount, 1230);
        assert_eq!(Money::parse_decimal("12", cur("bhd")).unwrap().amount, 12000);
        assert_eq!(Money::parse_decimal("500", cur("jpy")).unwrap().amount, 500);
        assert!(Money::parse_decimal("5.5", cur("jpy")).is_err());
        assert!(Money::parse_decimal("1.234", cur("usd")).is_err());
        assert!(Money::parse_decimal("1.", cur("usd")).is_err());
        assert!(Money::parse_decimal(".5", cur("usd")).is_err());
        assert!(Money::parse_decimal("1e5", cur("usd")).is_err());
        assert!(Money::parse_decimal("99999999999999999999", cur("usd")).is_err());
    }

    #[test]
    fn mixing_currencies_is_an_error() {
        let usd = Money::new(1, cur("usd"));
        let eur = Money::new(1, cur("eur"));
        assert_eq!(
            usd.checked_add(eur),
            Err(MoneyError::CurrencyMismatch(cur("usd"), cur("eur")))
        );
    }

    fn any_currency() -> impl Strategy<Value = Currency> {
        let all: Vec<Currency> = Currency::all().collect();
        proptest::sample::select(all)
    }

    proptest! {
        #[test]
        fn decimal_round_trip(amount in any::<i64>().prop_filter("MIN has no positive twin", |a| *a != i64::MIN), c in any_currency()) {
            let m = Money::new(amount, c);
            prop_assert_eq!(Money::parse_decimal(&m.to_decimal_string(), c).unwrap(), m);
        }

        #[test]
        fn add_then_sub_is_identity(a in -1_000_000_000_000i64..1_000_000_000_000, b in -1_000_000_000_000i64..1_000_000_000_000, c in any_currency()) {
            let x = Money::new(a, c);
            let y = Money::new(b, c);
            prop_assert_eq!(x.checked_add(y).unwrap().checked_sub(y).unwrap(), x);
            prop_assert_eq!(x.checked_add(y).unwrap(), y.checked_add(x).unwrap());
        }

        #[test]
        fn overflow_is_reported_not_wrapped(a in any::<i64>(), b in any::<i64>()) {
            let x = Money::new(a, Currency::USD);
            let y = Money::new(b, Currency::USD);
            match a.checked_add(b) {
                Some(s) => prop_assert_eq!(x.checked_add(y).unwrap().amount, s),
                None => prop_assert_eq!(x.checked_add(y), Err(MoneyError::Overflow)),
            }
        }

        #[test]
        fn sum_matches_integer_sum(items in proptest::collection::vec(-1_000_000i64..1_000_000, 0..50)) {
            let total: i64 = items.iter().sum();
            let m = Money::sum(Currency::USD, items.iter().map(|a| Money::new(*a, Currency::USD))).unwrap();
            prop_assert_eq!(m.amount, total);
        }

        #[test]
        fn parse_never_panics(text in ".{0,40}", c in any_currency()) {
            let _ = Money::parse_decimal(&text, c);
        }
    }
}

//! Exact decimal numbers for rule literals and FX rates: a fixed-point `i128` with 18 decimal
//! places. Rules compare amounts such as `:amount_in_usd: > 500.10` and rates such as
//! `0.0067` exactly; nothing passes through binary floating point.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Decimal places kept.
pub const SCALE: u32 = 18;
const ONE: i128 = 1_000_000_000_000_000_000;
/// Most integer digits a literal may have (keeps every value far from `i128` overflow).
pub const MAX_INT_DIGITS: usize = 20;

/// An exact decimal number (value × 10¹⁸ as an integer).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Decimal(i128);

/// Why a decimal literal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not of the form `[-]digits[.digits]`.
    #[error("not a decimal number")]
    Syntax,
    /// More than 20 integer digits.
    #[error("number too large (at most {MAX_INT_DIGITS} integer digits)")]
    TooLarge,
    /// More than 18 fractional digits.
    #[error("too many decimal places (at most {SCALE})")]
    TooPrecise,
}

impl Decimal {
    /// Zero.
    pub const ZERO: Decimal = Decimal(0);

    /// A whole number.
    pub fn from_int(v: i64) -> Decimal {
        Decimal(i128::from(v) * ONE)
    }

    /// `minor / 10^exp`, e.g. cents to dollars (exact for `exp <= 18`).
    pub fn from_minor(minor: i64, exp: u32) -> Decimal {
        let exp = exp.min(SCALE);
        Decimal(i128::from(minor) * 10_i128.pow(SCALE - exp))
    }

    /// The raw fixed-point value (value × 10¹⁸).
    pub fn raw(self) -> i128 {
        self.0
    }

    /// Parses `[-]digits[.digits]` exactly.
    pub fn parse(text: &str) -> Result<Decimal, DecimalError> {
        let (neg, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecimalError::Syntax);
        }
        if let Some(f) = frac {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DecimalError::Syntax);
            }
        }
        let int = int.trim_start_matches('0');
        if int.len() > MAX_INT_DIGITS {
            return Err(DecimalError::TooLarge);
        }
        let frac = frac.unwrap_or("");
        if frac.len() > SCALE as usize {
            return Err(DecimalError::TooPrecise);
        }
        let mut v: i128 = 0;
        for b in int.bytes() {
            v = v * 10 + i128::from(b - b'0');
        }
        v *= ONE;
        let mut place = ONE / 10;
        for b in frac.bytes() {
            v += i128::from(b - b'0') * place;
            place /= 10;
        }
        Ok(Decimal(if neg { -v } else { v }))
    }

    /// Approximate `f64` (only for model features, never for comparisons).
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / ONE as f64
    }
}

impl fmt::Display for Decimal {
    /// Shortest exact form: no trailing zeros, no `.` for whole numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.0 < 0;
        let abs = self.0.unsigned_abs();
        let one = ONE as u128;
        let int = abs / one;
        let mut frac = abs % one;
        if neg {
            f.write_str("-")?;
        }
        write!(f, "{int}")?;
        if frac != 0 {
            let mut digits = SCALE as usize;
            while frac % 10 == 0 {
                frac /= 10;
                digits -= 1;
            }
            write!(f, ".{frac:0digits$}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TryFrom<String> for Decimal {
    type Error = DecimalError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Decimal::parse(s.trim())
    }
}

impl From<Decimal> for String {
    fn from(d: Decimal) -> String {
        d.to_string()
    }
}

/// `num / den` rounded half away from zero (`den > 0`).
pub fn div_round_half_away(num: i128, den: i128) -> i128 {
    let q = num / den;
    let r = num % den;
    if 2 * r.abs() >= den {
        q + num.signum()
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints_exactly() {
        for (t, p) in [
            ("0", "0"),
            ("1.50", "1.5"),
            ("-0.0067", "-0.0067"),
            ("007", "7"),
            ("500", "500"),
        ] {
            assert_eq!(Decimal::parse(t).unwrap().to_string(), p);
        }
        assert!(Decimal::parse("0.1").unwrap() + Decimal::parse("0.2").unwrap() == Decimal::parse("0.3").unwrap());
        assert_eq!(Decimal::parse("1."), Err(DecimalError::Syntax));
        assert_eq!(Decimal::parse(".5"), Err(DecimalError::Syntax));
        assert_eq!(Decimal::parse("1e5"), Err(DecimalError::Syntax));
        assert_eq!(Decimal::parse("123456789012345678901"), Err(DecimalError::TooLarge));
        assert_eq!(Decimal::parse("0.1234567890123456789"), Err(DecimalError::TooPrecise));
        assert_eq!(Decimal::from_minor(12345, 2).to_string(), "123.45");
    }

    #[test]
    fn rounding_half_away_from_zero() {
        assert_eq!(div_round_half_away(5, 2), 3);
        assert_eq!(div_round_half_away(-5, 2), -3);
        assert_eq!(div_round_half_away(4, 3), 1);
        assert_eq!(div_round_half_away(-4, 3), -1);
        assert_eq!(div_round_half_away(7, 7), 1);
    }

    proptest! {
        #[test]
        fn display_parse_roundtrip(v in -(10_i128.pow(38))..10_i128.pow(38)) {
            let d = Decimal(v);
            prop_assert_eq!(Decimal::parse(&d.to_string()).unwrap(), d);
        }
    }

    impl std::ops::Add for Decimal {
        type Output = Decimal;
        fn add(self, o: Decimal) -> Decimal {
            Decimal(self.0 + o.0)
        }
    }
}

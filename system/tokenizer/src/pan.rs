//! The primary account number, and the validation of card input.
//!
//! [`Pan`] is the only type in the system that can read a card number's digits. It has no
//! `Debug`, `Display`, `Clone` or serialization, is zeroized on drop, and exposes only what may
//! be shown (brand, BIN, last four) plus crate-private access to the digits for encryption,
//! fingerprinting and forwarding to the card network.

use pay_core::card::{luhn_valid, CardBrand};
use pay_core::{ApiError, SecretString, Timestamp};
use zeroize::Zeroizing;

/// A validated card number (digits only).
pub struct Pan(Zeroizing<String>);

impl Pan {
    /// The card network.
    pub fn brand(&self) -> CardBrand {
        CardBrand::detect(&self.0)
    }
    /// First six digits.
    pub fn bin(&self) -> String {
        self.0[..6].to_owned()
    }
    /// Last four digits.
    pub fn last4(&self) -> String {
        self.0[self.0.len() - 4..].to_owned()
    }
    /// Number of digits.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Never true for a validated number (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Issuing country and funding from the built-in BIN table (up to nine leading digits are
    /// consulted in memory; only the result is kept).
    pub fn country_and_funding(&self) -> (Option<String>, String) {
        let (c, f) = pay_core::card::bin_info(&self.0[..9.min(self.0.len())]);
        (c.map(str::to_owned), f.to_owned())
    }
    /// The digits, for encryption and fingerprinting inside this crate only.
    pub(crate) fn digits(&self) -> &str {
        &self.0
    }
    /// Rebuilds a PAN decrypted from the vault (already validated when stored).
    pub(crate) fn from_vault(digits: Zeroizing<String>) -> Pan {
        Pan(digits)
    }
    /// The number as a secret for the card network call.
    pub(crate) fn to_secret(&self) -> SecretString {
        SecretString::new(self.0.as_str().to_owned())
    }
}

/// A card verification code, held only in memory.
pub struct Cvc(pub(crate) SecretString);

/// A card that passed validation.
pub struct ValidCard {
    /// The number.
    pub pan: Pan,
    /// Expiry month, 1–12.
    pub exp_month: u32,
    /// Four-digit expiry year.
    pub exp_year: i32,
    /// The CVC, if given.
    pub cvc: Option<Cvc>,
}

fn card_error(code: &str, param: &str, message: &str) -> ApiError {
    ApiError::card_declined(code, None, message).with_param(param)
}

/// Validates card input at time `now`: Luhn, length and brand by IIN range, expiry not in the
/// past, CVC length by brand. Each failure has its own Stripe code and names its parameter.
pub fn validate(
    number: &SecretString,
    exp_month: u32,
    exp_year: i32,
    cvc: Option<&SecretString>,
    now: Timestamp,
) -> Result<ValidCard, ApiError> {
    let raw = number.expose();
    let mut digits = Zeroizing::new(String::with_capacity(19));
    for c in raw.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' => {}
            _ => {
                return Err(card_error(
                    "invalid_number",
                    "card[number]",
                    "The card number is not a valid credit card number.",
                ))
            }
        }
        if digits.len() > 19 {
            return Err(card_error(
                "invalid_number",
                "card[number]",
                "The card number is not a valid credit card number.",
            ));
        }
    }
    if digits.len() < 12 {
        return Err(card_error(
            "invalid_number",
            "card[number]",
            "The card number is not a valid credit card number.",
        ));
    }
    let brand = CardBrand::detect(&digits);
    if brand != CardBrand::Unknown && !brand.valid_lengths().contains(&digits.len()) {
        return Err(card_error(
            "invalid_number",
            "card[number]",
            "The card number is not a valid credit card number.",
        ));
    }
    if !luhn_valid(&digits) {
        return Err(card_error(
            "incorrect_number",
            "card[number]",
            "Your card number is incorrect.",
        ));
    }
    if !(1..=12).contains(&exp_month) {
        return Err(card_error(
            "invalid_expiry_month",
            "card[exp_month]",
            "Your card's expiration month is invalid.",
        ));
    }
    let exp_year = if (0..100).contains(&exp_year) {
        2000 + exp_year
    } else {
        exp_year
    };
    let (year, month) = now.year_month();
    if exp_year < year || exp_year > year + 50 {
        return Err(card_error(
            "invalid_expiry_year",
            "card[exp_year]",
            "Your card's expiration year is invalid.",
        ));
    }
    if exp_year == year && exp_month < month {
        return Err(card_error(
            "invalid_expiry_month",
            "card[exp_month]",
            "Your card's expiration month is invalid.",
        ));
    }
    let cvc = match cvc {
        None => None,
        Some(c) => {
            let v = c.expose();
            let ok_len = match brand {
                CardBrand::Unknown => (3..=4).contains(&v.len()),
                b => v.len() == b.cvc_len(),
            };
            if !ok_len || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(card_error(
                    "invalid_cvc",
                    "card[cvc]",
                    "Your card's security code is invalid.",
                ));
            }
            Some(Cvc(c.clone()))
        }
    };
    Ok(ValidCard {
        pan: Pan(digits),
        exp_month,
        exp_year,
        cvc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> Timestamp {
        Timestamp::from_secs(1_764_064_800) // 2025-11-25
    }

    fn v(n: &str, m: u32, y: i32, cvc: Option<&str>) -> Result<ValidCard, ApiError> {
        let cvc = cvc.map(|c| SecretString::new(c.to_owned()));
        validate(&SecretString::new(n.to_owned()), m, y, cvc.as_ref(), now())
    }

    fn code(r: Result<ValidCard, ApiError>) -> (String, String) {
        match r {
            Ok(_) => ("ok".into(), String::new()),
            Err(e) => (e.code.unwrap_or_default(), e.param.unwrap_or_default()),
        }
    }

    #[test]
    fn each_failure_has_its_code_and_param() {
        assert_eq!(code(v("4242424242424242", 12, 2030, Some("123"))).0, "ok");
        assert_eq!(code(v("4242 4242 4242 4242", 12, 30, None)).0, "ok");
        assert_eq!(
            code(v("4242424242424241", 12, 2030, None)),
            ("incorrect_number".into(), "card[number]".into())
        );
        assert_eq!(
            code(v("42424242x2424242", 12, 2030, None)),
            ("invalid_number".into(), "card[number]".into())
        );
        assert_eq!(
            code(v("424242424242424", 12, 2030, None)).0,
            "invalid_number",
            "visa has no 15-digit numbers"
        );
        assert_eq!(
            code(v("4242424242424242", 13, 2030, None)),
            ("invalid_expiry_month".into(), "card[exp_month]".into())
        );
        assert_eq!(
            code(v("4242424242424242", 12, 2024, None)),
            ("invalid_expiry_year".into(), "card[exp_year]".into())
        );
        assert_eq!(
            code(v("4242424242424242", 10, 2025, None)),
            ("invalid_expiry_month".into(), "card[exp_month]".into())
        );
        assert_eq!(
            code(v("4242424242424242", 11, 2025, None)).0,
            "ok",
            "the current month is still valid"
        );
        assert_eq!(
            code(v("4242424242424242", 12, 2030, Some("12"))),
            ("invalid_cvc".into(), "card[cvc]".into())
        );
        assert_eq!(
            code(v("378282246310005", 12, 2030, Some("123"))).0,
            "invalid_cvc",
            "amex needs four digits"
        );
        assert_eq!(code(v("378282246310005", 12, 2030, Some("1234"))).0, "ok");
        let e = v("4242424242424241", 12, 2030, None).err().unwrap();
        assert_eq!(e.status, 402);
        assert!(!e.message.contains("4242"));
    }

    #[test]
    fn pan_shows_only_bin_and_last4() {
        let card = v("5555555555554444", 12, 2030, None).ok().unwrap();
        assert_eq!(card.pan.bin(), "555555");
        assert_eq!(card.pan.last4(), "4444");
        assert_eq!(card.pan.brand(), CardBrand::Mastercard);
    }

    proptest! {
        #[test]
        fn validation_never_panics(n in ".{0,40}", m in any::<u32>(), y in any::<i32>(), c in proptest::option::of(".{0,6}")) {
            let _ = v(&n, m, y, c.as_deref());
        }
    }
}

//! What may be known about a card outside the cardholder data environment: its brand, its
//! BIN (first six digits) and its last four. Brand detection by IIN range and the Luhn check
//! live here because the tokenizer and the log redaction layer both need them; the type that
//! holds a whole PAN lives only in the tokenizer crate.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A card network, named as Stripe names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardBrand {
    /// Visa (4).
    Visa,
    /// Mastercard (51–55 and the 2-series 2221–2720).
    Mastercard,
    /// American Express (34, 37).
    Amex,
    /// Discover (6011, 644–649, 65).
    Discover,
    /// JCB (3528–3589).
    Jcb,
    /// Diners Club (300–305, 36, 38, 39).
    Diners,
    /// UnionPay (62, 81).
    Unionpay,
    /// No known network's range.
    Unknown,
}

impl CardBrand {
    /// Detects the network from the leading digits (six or more are enough).
    pub fn detect(digits: &str) -> CardBrand {
        let prefix = |n: usize| -> u32 { digits.get(..n).and_then(|p| p.parse().ok()).unwrap_or(0) };
        if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return CardBrand::Unknown;
        }
        let p1 = prefix(1);
        let p2 = prefix(2);
        let p3 = prefix(3);
        let p4 = prefix(4);
        match () {
            _ if p1 == 4 => CardBrand::Visa,
            _ if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) => CardBrand::Mastercard,
            _ if p2 == 34 || p2 == 37 => CardBrand::Amex,
            _ if p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 => CardBrand::Discover,
            _ if (3528..=3589).contains(&p4) => CardBrand::Jcb,
            _ if (300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39 => CardBrand::Diners,
            _ if p2 == 62 || p2 == 81 => CardBrand::Unionpay,
            _ => CardBrand::Unknown,
        }
    }

    /// PAN lengths the network issues.
    pub fn valid_lengths(self) -> &'static [usize] {
        match self {
            CardBrand::Visa => &[13, 16, 19],
            CardBrand::Mastercard => &[16],
            CardBrand::Amex => &[15],
            CardBrand::Discover | CardBrand::Jcb | CardBrand::Unionpay => &[16, 17, 18, 19],
            CardBrand::Diners => &[14, 15, 16, 17, 18, 19],
            CardBrand::Unknown => &[],
        }
    }

    /// Digits in the card verification code.
    pub fn cvc_len(self) -> usize {
        match self {
            CardBrand::Amex => 4,
            _ => 3,
        }
    }

    /// Stripe's lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            CardBrand::Visa => "visa",
            CardBrand::Mastercard => "mastercard",
            CardBrand::Amex => "amex",
            CardBrand::Discover => "discover",
            CardBrand::Jcb => "jcb",
            CardBrand::Diners => "diners",
            CardBrand::Unionpay => "unionpay",
            CardBrand::Unknown => "unknown",
        }
    }
}

impl fmt::Display for CardBrand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True when `digits` (ASCII digits only) passes the Luhn mod-10 check.
pub fn luhn_valid(digits: &str) -> bool {
    luhn_valid_bytes(digits.as_bytes())
}

/// Luhn over ASCII digit bytes; false on any non-digit or fewer than two digits.
pub fn luhn_valid_bytes(digits: &[u8]) -> bool {
    if digits.len() < 2 {
        return false;
    }
    let mut sum = 0u32;
    for (i, b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// The maximal runs of ASCII digits in `bytes`, as byte ranges: where a scanner looks for card
/// numbers (a PAN is carried as plain digits in JSON, forms and logs).
pub fn digit_runs(bytes: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() && !bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == bytes.len() {
            return None;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        Some(start..i)
    })
}

/// The non-sensitive facts about a stored card that any service may hold and show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardSummary {
    /// Card network.
    pub brand: CardBrand,
    /// First six digits (the bank identification number).
    pub bin: String,
    /// Last four digits.
    pub last4: String,
    /// Expiry month, 1–12.
    pub exp_month: u32,
    /// Four-digit expiry year.
    pub exp_year: i32,
    /// Keyed HMAC of the PAN: equal for the same card, irreversible.
    pub fingerprint: String,
    /// Two-letter issuing country from the BIN table (`"US"`), when known.
    pub country: Option<String>,
    /// `"credit"`, `"debit"`, `"prepaid"` or `"unknown"`.
    pub funding: String,
}

impl CardSummary {
    /// The card as shown to people: BIN, a mask, last four (`424242******4242`).
    pub fn masked(&self, pan_len: usize) -> String {
        let stars = pan_len.saturating_sub(self.bin.len() + self.last4.len()).max(1);
        format!("{}{}{}", self.bin, "*".repeat(stars), self.last4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn digit_runs_are_maximal_and_in_order() {
        let runs: Vec<_> = digit_runs(b"a12-345b6").collect();
        assert_eq!(runs, vec![1..3, 4..7, 8..9]);
        assert_eq!(digit_runs(b"").count(), 0);
        assert_eq!(digit_runs(b"no digits").count(), 0);
        assert_eq!(digit_runs(b"4242").collect::<Vec<_>>(), vec![0..4]);
    }

    #[test]
    fn stripe_test_cards_have_their_brands() {
        let cases = [
            ("4242424242424242", CardBrand::Visa),
            ("4000056655665556", CardBrand::Visa),
            ("5555555555554444", CardBrand::Mastercard),
            ("2223003122003222", CardBrand::Mastercard),
            ("5200828282828210", CardBrand::Mastercard),
            ("378282246310005", CardBrand::Amex),
            ("371449635398431", CardBrand::Amex),
            ("6011111111111117", CardBrand::Discover),
            ("6011000990139424", CardBrand::Discover),
            ("6445644564456445", CardBrand::Discover),
            ("3056930009020004", CardBrand::Diners),
            ("36227206271667", CardBrand::Diners),
            ("3566002020360505", CardBrand::Jcb),
            ("6200000000000005", CardBrand::Unionpay),
            ("6205500000000000004", CardBrand::Unionpay),
        ];
        for (pan, brand) in cases {
            assert_eq!(CardBrand::detect(pan), brand, "brand of a {} card", brand);
            assert!(luhn_valid(pan), "luhn of a {brand} test card");
            assert!(brand.valid_lengths().contains(&pan.len()), "length of a {brand} card");
        }
        assert_eq!(CardBrand::detect("9999999999999995"), CardBrand::Unknown);
        assert_eq!(CardBrand::detect("2720990000000007"), CardBrand::Mastercard);
        assert_eq!(CardBrand::detect("2721000000000000"), CardBrand::Unknown);
        assert_eq!(CardBrand::detect("2220990000000000"), CardBrand::Unknown);
    }

    #[test]
    fn luhn_rejects_single_digit_errors() {
        assert!(luhn_valid("4242424242424242"));
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid("42424242a4242424"));
        assert!(!luhn_valid("0"));
    }

    fn luhn_check_digit(body: &[u8]) -> u8 {
        for d in 0..10u8 {
            let mut v = body.to_vec();
            v.push(b'0' + d);
            if luhn_valid_bytes(&v) {
                return d;
            }
        }
        unreachable!("some check digit always exists")
    }

    proptest! {
        #[test]
        fn exactly_one_check_digit_completes_any_body(body in proptest::collection::vec(b'0'..=b'9', 1..18)) {
            let good = luhn_check_digit(&body);
            for d in 0..10u8 {
                let mut v = body.clone();
                v.push(b'0' + d);
                prop_assert_eq!(luhn_valid_bytes(&v), d == good);
            }
        }

        #[test]
        fn any_single_digit_change_breaks_luhn(body in proptest::collection::vec(b'0'..=b'9', 12..18), pos in 0usize..18, delta in 1u8..10) {
            let mut v = body.clone();
            v.push(b'0' + luhn_check_digit(&body));
            let pos = pos % v.len();
            v[pos] = b'0' + (v[pos] - b'0' + delta) % 10;
            prop_assert!(!luhn_valid_bytes(&v));
        }

        #[test]
        fn detect_never_panics(s in ".{0,30}") {
            let _ = CardBrand::detect(&s);
        }

        #[test]
        fn visa_prefix_is_always_visa(rest in proptest::collection::vec(b'0'..=b'9', 5..18)) {
            let s = format!("4{}", String::from_utf8(rest).unwrap());
            prop_assert_eq!(CardBrand::detect(&s), CardBrand::Visa);
        }
    }
}

/// Issuing country and funding type for a BIN, from a small built-in table covering Stripe's
/// documented test cards (by country and funding) and the major networks' defaults. Unknown
/// BINs give `(None, "unknown")`. The fraud service may use a richer table of its own.
pub fn bin_info(bin: &str) -> (Option<&'static str>, &'static str) {
    // Longest prefix first.
    const TABLE: &[(&str, &str, &str)] = &[
        ("400000760", "BR", "credit"),
        ("400000124", "CA", "credit"),
        ("400000484", "MX", "credit"),
        ("400000056", "BE", "credit"),
        ("400000208", "DK", "credit"),
        ("400000246", "FI", "credit"),
        ("400000250", "FR", "credit"),
        ("400000276", "DE", "credit"),
        ("400000372", "IE", "credit"),
        ("400000380", "IT", "credit"),
        ("400000528", "NL", "credit"),
        ("400000578", "NO", "credit"),
        ("400000724", "ES", "credit"),
        ("400000752", "SE", "credit"),
        ("400000826", "GB", "credit"),
        ("400000036", "AU", "credit"),
        ("400000392", "JP", "credit"),
        ("400000554", "NZ", "credit"),
        ("400000702", "SG", "credit"),
        ("400000344", "HK", "credit"),
        ("400005", "US", "debit"),
        ("520082", "US", "debit"),
        ("510510", "US", "prepaid"),
        ("4", "US", "credit"),
        ("5", "US", "credit"),
        ("2", "US", "credit"),
        ("34", "US", "credit"),
        ("37", "US", "credit"),
        ("6011", "US", "credit"),
        ("65", "US", "credit"),
        ("35", "JP", "credit"),
        ("36", "US", "credit"),
        ("30", "US", "credit"),
        ("62", "CN", "credit"),
    ];
    let mut best: Option<&(&str, &str, &str)> = None;
    for row in TABLE {
        if bin.starts_with(row.0) && best.is_none_or(|b| row.0.len() > b.0.len()) {
            best = Some(row);
        }
    }
    match best {
        Some((_, country, funding)) => (Some(country), funding),
        None => (None, "unknown"),
    }
}

#[cfg(test)]
mod bin_tests {
    use super::*;

    #[test]
    fn test_card_countries_and_funding() {
        assert_eq!(bin_info("424242"), (Some("US"), "credit"));
        assert_eq!(bin_info("400000"), (Some("US"), "credit"));
        assert_eq!(bin_info("4000007600000002"), (Some("BR"), "credit"));
        assert_eq!(bin_info("520082"), (Some("US"), "debit"));
        assert_eq!(bin_info("999999"), (None, "unknown"));
    }
}
